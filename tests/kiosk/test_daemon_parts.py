"""The daemon's parts: config, the encrypted template store, sd_notify/watchdog over a real unix
datagram socket, and ``sigkiosk run`` as systemd starts it (READY=1, watchdog pings, clean stop)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import write_config, writers

from kiosk.config import ConfigError, default_config_data, load_config, parse_config
from kiosk.sdnotify import Notifier, Watchdog, watchdog_interval
from kiosk.templates import StoredTemplate, TemplateError, TemplateStore, atomic_write, decode_template, encode_template
from models.classic import ClassicConfig
from models.paper_reference import PREPARATION_VERSION, PaperReference

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_parses_and_mistakes_are_named(tmp_path: Path) -> None:
    cfg = parse_config(default_config_data(), Path("/etc/sigkiosk"))
    assert cfg.storage.templates_dir == Path("/var/lib/sigkiosk/templates")
    assert cfg.link is not None and cfg.link.kiosk_id == cfg.kiosk_id
    assert cfg.verifier.threshold == ClassicConfig().threshold and cfg.policy.references == 5 and cfg.ui.host == "127.0.0.1"
    cases = [
        (("device", "pen_up_timout_s", 1.0), r"\[device\] unknown key\(s\): pen_up_timout_s"),
        (("ui", "host", "0.0.0.0"), "loopback"),
        (("storage", "template_key", "/var/lib/sigkiosk/templates/k"), "apart"),
        (("policy", "references", 0), "references"),
        (("verifier", "kind", "neural"), "not available"),
        (("link", "kiosk_id", "kiosk-9999"), "must equal"),
        (("sound", "volume", 3), "unknown table"),
    ]
    for (table, key, value), message in cases:
        data = default_config_data()
        data.setdefault(table, {})[key] = value
        with pytest.raises(ConfigError, match=message):
            parse_config(data, tmp_path)
    (tmp_path / "broken.toml").write_text("[kiosk\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(tmp_path / "broken.toml")


def test_template_store_encrypts_binds_and_survives_a_torn_write(tmp_path: Path) -> None:
    genuine, _ = writers()["001"]
    key = tmp_path / "credentials" / "template.key"
    store = TemplateStore(tmp_path / "templates", key, create_key=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    store.put("alice", genuine[:3])
    store.put("bob", genuine[3:5])
    got = store.get("alice")
    assert got is not None and len(got.references) == 3 and got.version == 1
    np.testing.assert_array_equal(got.references[1].x, genuine[1].x)
    assert got.references[0].device == genuine[0].device
    # Add and replace keep history straight; delete removes the file.
    assert store.add_references("alice", genuine[5:6]).version == 2
    assert len(store.get("alice").references) == 4
    # Another customer's file copied over alice's: refused (the AAD binds file and customer).
    a, b = store._path("alice"), store._path("bob")
    a.write_bytes(b.read_bytes())
    with pytest.raises(TemplateError, match="authentication"):
        store.get("alice")
    # A power cut mid-write leaves a temporary file and the previous version, which still reads.
    before = b.read_bytes()
    (b.parent / f".{b.name}.123.dead.tmp").write_bytes(b"half a templ")
    store2 = TemplateStore(tmp_path / "templates", key)
    assert store2.get("bob") is not None and b.read_bytes() == before
    assert not list(b.parent.glob(".*.tmp"))
    # The wrong key reads nothing; a key readable by others is refused.
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    with pytest.raises(TemplateError, match="does not match"):
        TemplateStore(tmp_path / "templates", other)
    other.chmod(0o644)
    with pytest.raises(TemplateError, match="readable by others"):
        TemplateStore(tmp_path / "templates", other)
    with pytest.raises(TemplateError, match="missing"):
        TemplateStore(tmp_path / "templates", tmp_path / "nokey")
    assert store2.delete("bob") and not store2.delete("bob") and store2.count() == 1
    assert stat.S_IMODE((tmp_path / "templates").stat().st_mode) == 0o700
    for f in (tmp_path / "templates").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_template_store_keeps_paper_references_beside_pen_references(tmp_path: Path) -> None:
    """Paper references (prepared ink image + hand features, never the photo) in the same
    encrypted file; pen and paper enrollments each leave the other's references as they were."""
    genuine, _ = writers()["001"]
    rng = np.random.default_rng(3)
    paper = [PaperReference(rng.integers(0, 256, (128, 128), dtype=np.uint8), rng.normal(size=16)) for _ in range(3)]
    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    only_paper = store.put_paper("carol", paper)
    assert only_paper.references == () and len(only_paper.paper) == 3
    got = store.get("carol")
    assert got is not None and got.references == () and [r.version for r in got.paper] == [PREPARATION_VERSION] * 3
    for a, b in zip(got.paper, paper):
        np.testing.assert_array_equal(a.prepared, b.prepared)
        np.testing.assert_array_equal(a.hand, b.hand)
    store.put("carol", genuine[:3])            # enrolled on the pad too: the paper references stay
    got = store.get("carol")
    assert got is not None and len(got.references) == 3 and len(got.paper) == 3 and got.version == 2
    store.put_paper("carol", paper[:1])        # paper replaced: the pen references stay
    got = store.get("carol")
    assert got is not None and len(got.references) == 3 and len(got.paper) == 1 and got.version == 3
    # Encrypted: neither the ink image's bytes nor the array names are in the file.
    blob = store._path("carol").read_bytes()
    assert paper[0].prepared.tobytes()[:64] not in blob and b"q0_m" not in blob
    # A template written before paper references existed (no "paper" in it) reads with none.
    with np.load(io.BytesIO(encode_template(StoredTemplate("dave", tuple(genuine[:2]), 1, 1)))) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["paper"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    old = io.BytesIO()
    np.savez(old, **arrays)
    read = decode_template(old.getvalue())
    assert read.paper == () and len(read.references) == 2
    with pytest.raises(ValueError, match="at least one"):
        store.put_paper("erin", [])


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    p = tmp_path / "f"
    atomic_write(p, b"one")
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f"]


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    s.settimeout(10)
    return s, path


def test_sd_notify_and_watchdog_over_a_real_socket(tmp_path: Path) -> None:
    sock, path = _notify_socket(tmp_path)
    n = Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.ready("idle")
    assert sock.recv(4096) == b"READY=1\nSTATUS=idle"
    # Abstract-namespace addresses (@name) work too.
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(f"\0sigkiosk-test-{os.getpid()}")
    abstract.settimeout(5)
    assert Notifier(environ={"NOTIFY_SOCKET": f"@sigkiosk-test-{os.getpid()}"}).notify(STATUS="x")
    assert abstract.recv(100) == b"STATUS=x"
    assert not Notifier(environ={}).ready()   # outside systemd: a no-op
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    # Pings while the loop beats; none once it stops beating (a hung loop gets killed).
    wd = Watchdog(n, interval=0.05, stale_after=0.3)
    wd.start()
    try:
        for _ in range(6):
            wd.beat()
            assert sock.recv(100) == b"WATCHDOG=1"
        time.sleep(0.45)   # the loop hangs
        pings_then = wd.pings
        time.sleep(0.3)
        assert wd.pings == pings_then and not wd.alive()
        wd.busy(1.0)       # a declared, bounded blocking call keeps it alive
        assert wd.alive()
    finally:
        wd.stop()
        sock.close()
        abstract.close()


def test_sigkiosk_run_under_a_notify_socket(tmp_path: Path) -> None:
    """As systemd runs it: READY=1, watchdog pings, STOPPING=1 and exit 0 on SIGTERM."""
    sock, path = _notify_socket(tmp_path)
    (tmp_path / "input").mkdir()   # no pen plugged in: the daemon still comes up and waits
    cfg = write_config(tmp_path, ui=True)
    cfg.write_text(cfg.read_text().replace("[device]\n", f'[device]\ninput_dir = "{tmp_path / "input"}"\n'))
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    exe = ROOT / ".venv" / "bin" / "sigkiosk"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    proc = subprocess.Popen([*cmd, "run", "--config", str(cfg)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        msgs: list[bytes] = []
        while b"READY=1" not in b"".join(msgs):
            msgs.append(sock.recv(4096))
        env["WATCHDOG_PID"] = str(proc.pid)
        pings = 0
        while pings < 3:
            if sock.recv(4096) == b"WATCHDOG=1":
                pings += 1
        proc.send_signal(signal.SIGTERM)
        while b"STOPPING=1" not in sock.recv(4096):
            pass
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode()
        text = out.decode()
        assert "kiosk ready" in text and "event=ready" in text
        assert (tmp_path / "credentials" / "template.key").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_model_change_hook_swaps_the_verifier_and_rebuilds_templates(tmp_path: Path) -> None:
    """What the model-update agent calls when a new model becomes active."""
    from daemon_helpers import as_replayed, start_daemon

    from models import ClassicVerifier
    from models.classic import ClassicConfig

    genuine, _ = writers()["001"]
    daemon, pen, config = start_daemon(write_config(tmp_path))
    try:
        daemon.store.put("cust-1", as_replayed(genuine[:5]))
        cache = daemon.pen_references
        assert cache is not None
        old = cache.lookup("cust-1").reference_set
        assert cache.lookup("cust-1").reference_set is old            # cached
        seen = []
        daemon.add_model_listener(seen.append)
        new = ClassicVerifier(ClassicConfig(threshold=1.2))
        daemon.set_verifier(new)
        assert seen == [new] and daemon.verifier is new
        assert daemon.status()["model_versions"]["threshold"] == "1.2"
        found = cache.lookup("cust-1")
        assert found.verifier is new                        # one lookup: the set and the model that built it
        rebuilt = found.reference_set
        assert rebuilt is not old and rebuilt.size == 5 and rebuilt.model_versions["threshold"] == "1.2"
    finally:
        daemon.stop()
        pen.close_all()


def test_a_tap_on_the_pad_ends_verification_with_advice_not_an_internal_error(tmp_path: Path) -> None:
    """A tap (touch, a pressure change, lift, at one spot) passes the capture's two-point minimum
    but has nothing to compare: it ended as "internal error: TrajectoryError" and "Sorry,
    something went wrong" (found by a review). Now a typed end that asks for the signature again."""
    import dataclasses

    import numpy as np
    from daemon_helpers import as_replayed, start_daemon, wait_idle, write_config, writers

    from models.trajectory import Trajectory

    daemon, pen, _ = start_daemon(write_config(tmp_path))
    genuine, _forged = writers()["001"]
    tap = dataclasses.replace(genuine[0], x=np.full(2, 40.0), y=np.full(2, 20.0), pressure=np.array([0.3, 0.5]),
                              t=np.array([0.0, 0.005]), pen_down=np.ones(2, bool), gaps=(), stroke_breaks=())
    assert isinstance(tap, Trajectory)
    try:
        daemon.store.put("cust-tap", as_replayed(genuine[:5]))
        events = daemon.bus.subscribe()
        req = daemon.submit("verify", "cust-tap")
        _until_screen(events, "sign")
        pen.sign(tap)
        res = req.wait(60)
        assert res["ok"] is False and res["error"] == "no_signature", res
        wait_idle(daemon)
    finally:
        daemon.stop()
        pen.close_all()


def _enrolled(tmp_path: Path, customer: str) -> tuple[Any, Any, list]:  # type: ignore[type-arg]
    """A bench daemon with ``customer``'s five references stored: (daemon, pen, the writer's genuine)."""
    from daemon_helpers import as_replayed, start_daemon, write_config, writers

    daemon, pen, _ = start_daemon(write_config(tmp_path))
    genuine, _forged = writers()["001"]
    daemon.store.put(customer, as_replayed(genuine[:5]))
    return daemon, pen, genuine


def _until_screen(events: Any, screen: str) -> dict:
    """The next event that shows ``screen``, from a subscription to the daemon's bus."""
    while True:
        ev = events.get(timeout=20)
        if ev.get("type") == "screen" and ev.get("screen") == screen:
            return ev


def _until_capturing(daemon: Any, timeout: float = 20.0) -> None:
    """Until the daemon is capturing a signature (the pen is the customer's)."""
    deadline = time.monotonic() + timeout
    while daemon.state.value != "capture":
        assert time.monotonic() < deadline, "the capture did not begin"
        time.sleep(0.02)


def test_a_request_for_an_idle_kiosk_is_refused_while_it_is_busy_and_never_queued(
        link_pki: Any, mqtt_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a review: the screen's busy check and the queueing were two steps (a double click
    queued a staff action twice; the second ran after the operator's logout, for whoever was at the
    pen), and the central verify command was queued behind a customer signing at the pen (it took
    the next signature written there as its customer's). Both now ask for an idle kiosk, checked
    and queued in one step."""
    import threading

    from daemon_helpers import (
        as_replayed,
        central_sign_key,
        link_table,
        start_daemon,
        wait_idle,
        write_config,
        writers,
    )

    from kiosk.commands import make_verify_command, verify_topic
    from kiosk.errors import KioskBusy

    key, pub = central_sign_key(tmp_path)
    daemon, pen, config = start_daemon(write_config(tmp_path, commands_pub=pub,
                                                    link=link_table(link_pki, mqtt_broker.port, tmp_path)))
    genuine, _ = writers()["001"]
    try:
        daemon.store.put("cust-1", as_replayed(genuine[:5]))
        # Eight presses at once on an idle kiosk: one request.
        won: list[object] = []
        busy: list[object] = []
        start = threading.Barrier(8)

        def press() -> None:
            start.wait()
            try:
                won.append(daemon.submit("verify", "cust-1", when_idle=True))
            except KioskBusy as exc:
                busy.append(exc)

        threads = [threading.Thread(target=press) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(won) == 1 and len(busy) == 7 and daemon.pending == 1
        # While that customer is at the pen, a signed central command for another customer is
        # refused, not queued.
        assert daemon.link is not None
        topic = verify_topic(daemon.link.topics)
        with caplog.at_level("WARNING", logger="kiosk"):
            daemon._on_command(topic, make_verify_command(key, topic, "kiosk-a", "cust-2", "req-busy"))
        assert "the kiosk is busy" in caplog.text and daemon.pending == 1

        def cancel_at_the_pen() -> None:   # once the capture has begun (a cancel before it is not seen)
            _until_capturing(daemon)
            daemon.cancel()

        cancel_at_the_pen()
        assert won[0].wait(20)["ok"] is False   # type: ignore[attr-defined]
        wait_idle(daemon)
        # Idle again: the same command is taken.
        daemon._on_command(topic, make_verify_command(key, topic, "kiosk-a", "cust-1", "req-idle"))
        assert daemon.pending == 1
        cancel_at_the_pen()
        wait_idle(daemon)
    finally:
        daemon.stop()
        pen.close_all()


def test_requests_still_queued_at_stop_end_as_stopping(tmp_path: Path) -> None:
    """Found by a review: requests queued when the daemon stopped were never finished (a waiter
    without a timeout hung; a staff action kept a "started" audit with no end)."""
    from daemon_helpers import as_replayed, start_daemon, write_config, writers

    daemon, pen, _ = start_daemon(write_config(tmp_path))
    genuine, _ = writers()["001"]
    daemon.store.put("cust-1", as_replayed(genuine[:5]))
    first = daemon.submit("verify", "cust-1")
    _until_capturing(daemon)
    queued = [daemon.submit("verify", "cust-1") for _ in range(3)]
    try:
        daemon.stop()
        assert first.wait(5)["ok"] is False
        assert [q.wait(5) for q in queued] == [{"ok": False, "error": "stopping"}] * 3
        assert daemon.pending == 0
    finally:
        pen.close_all()


def test_the_template_key_is_never_seen_half_written(tmp_path: Path) -> None:
    """Found by a review: the key file was created under its final name and only then written, so
    a power cut in between left a 0-byte key that refused every later start, and a second process
    could read it empty. Now it is written whole under another name and linked into place: starts
    racing each other all get the one key, and nothing else is left in the folder."""
    import threading

    from kiosk.templates import load_or_create_key

    key = tmp_path / "credentials" / "template.key"
    got: list[bytes] = []
    go = threading.Barrier(8)

    def start() -> None:
        go.wait()
        got.append(load_or_create_key(key, create=True))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8 and len(set(got)) == 1 and len(got[0]) == 32
    assert [p.name for p in key.parent.iterdir()] == ["template.key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_add_cannot_grow_a_template_without_bound(tmp_path: Path) -> None:
    """Found by a review: each "add" kept every reference and appended five, so a customer's
    template (and every verification of them, each reference compared with the question) grew
    without bound. At most MAX_REFERENCES pen references are kept: beyond, Replace."""
    from daemon_helpers import as_replayed, staff_login, start_daemon, wait_idle, write_config, writers

    from kiosk.flows.enroll import MAX_REFERENCES

    daemon, pen, _ = start_daemon(write_config(tmp_path))
    genuine, _ = writers()["001"]
    try:
        daemon.store.put("cust-full", as_replayed((genuine * 2)[:MAX_REFERENCES - 4]))
        res = daemon.submit("enroll", "cust-full", mode="add", staff=staff_login(daemon)).wait(30)
        assert res["ok"] is False and res["error"] == "too_many_references", res
        assert len(daemon.store.get("cust-full").references) == MAX_REFERENCES - 4   # type: ignore[union-attr]
        wait_idle(daemon)
    finally:
        daemon.stop()
        pen.close_all()


def test_a_signature_without_pressure_against_pressure_references_says_so_on_the_decision(tmp_path: Path) -> None:
    """A pad changed since enrollment (references with pressure, a signature without, here a pen
    that reported one level): the whole daemon compares on what both measure and its decision
    screen tells staff pressure was not compared, with no "Pressure" check."""
    from daemon_helpers import wait_idle

    from models.device_variants import without_pressure
    from models.pen import PRESSURE_NOT_MEASURED

    daemon, pen, genuine = _enrolled(tmp_path, "cust-pad")
    try:
        events = daemon.bus.subscribe()
        req = daemon.submit("verify", "cust-pad")
        _until_screen(events, "sign")
        pen.sign(without_pressure(genuine[6]))
        res = req.wait(60)
        assert res["ok"] is True, res
        ev = _until_screen(events, "decision")
        assert ev["explanations"] == res["explanations"] == [PRESSURE_NOT_MEASURED]
        assert "pressure" not in [a["code"] for a in ev["aspects"]]
        wait_idle(daemon)
    finally:
        daemon.stop()
        pen.close_all()


def test_an_unreadable_template_says_so_and_replace_mends_it(tmp_path: Path) -> None:
    """Found by a review: a template that fails authentication (damaged, or changed on disk) made
    verification say "no signature on file", and Replace, New and Add each end in an internal
    error: only Delete then New mended it, and nothing said so. Now the customer's check and New
    and Add say the stored signatures cannot be read; Replace (confirmed) writes over them."""
    from daemon_helpers import sign_when_asked, staff_login, wait_idle

    daemon, pen, genuine = _enrolled(tmp_path, "cust-rot")
    try:
        path = daemon.store.directory / f"{daemon.store.file_id('cust-rot')}.tpl"
        blob = bytearray(path.read_bytes())
        blob[-20] ^= 0x01                                       # one flipped bit: authentication fails
        path.write_bytes(bytes(blob))
        res = daemon.submit("verify", "cust-rot").wait(30)
        assert res["ok"] is False and res["error"] == "template_unreadable", res
        for mode in ("new", "add"):
            wait_idle(daemon)
            res = daemon.submit("enroll", "cust-rot", mode=mode, staff=staff_login(daemon)).wait(30)
            assert res["ok"] is False and res["error"] == "template_unreadable", (mode, res)
        wait_idle(daemon)
        events = daemon.bus.subscribe()
        req = daemon.submit("enroll", "cust-rot", mode="replace", staff=staff_login(daemon), confirm="cust-rot")
        sign_when_asked(daemon, pen, events, list(genuine[:5]), req.done.is_set)
        res = req.wait(1)
        assert res["ok"] is True and res["references"] == 5, res
        stored = daemon.store.get("cust-rot")
        assert stored is not None and len(stored.references) == 5
    finally:
        daemon.stop()
        pen.close_all()


def test_a_delete_whose_fsync_fails_still_drops_the_built_reference_set(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the file was unlinked, then the directory's fsync failed (EIO on a worn
    card), and the cached reference set was never dropped: the deleted customer kept being
    approved until the daemon restarted."""
    import errno

    from daemon_helpers import sign_when_asked, staff_login, wait_idle

    import kiosk.templates

    daemon, pen, genuine = _enrolled(tmp_path, "cust-gone")
    try:
        events = daemon.bus.subscribe()
        req = daemon.submit("verify", "cust-gone")
        sign_when_asked(daemon, pen, events, [genuine[6]], req.done.is_set)
        assert req.wait(1)["decision"] == "APPROVED"          # the set is built and cached now
        wait_idle(daemon)

        real_fsync = kiosk.templates.fsync_dir

        def failing_fsync(d: Path) -> None:   # the templates' folder only: the worn card's EIO
            if Path(d) == daemon.store.directory:
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(d)

        monkeypatch.setattr(kiosk.templates, "fsync_dir", failing_fsync)
        res = daemon.submit("delete", "cust-gone", staff=staff_login(daemon), confirm="cust-gone").wait(30)
        assert res["ok"] is False and not daemon.store.exists("cust-gone"), res
        monkeypatch.undo()
        wait_idle(daemon)
        res = daemon.submit("verify", "cust-gone").wait(30)
        assert res["ok"] is False and res["error"] == "not_enrolled", res
    finally:
        daemon.stop()
        pen.close_all()

