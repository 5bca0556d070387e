"""``[pen] source``: the real daemon, built from its configuration, on each kind of pen.

* ``replay``: recordings on disk played at (3x) real speed through the simulated evdev tablet -
  enrollment and verification with nobody driving the pen, and a verification asked for by
  ``sigkiosk admin verify`` over real mosquitto (TLS, ACL), its decision at the collector;
* ``serial``: the pad emulator on a pseudo-terminal, plugged in only after the request came
  ("No pen connected" on the screen and in the status, then the sign prompt, live ink, decision);
* ``evdev`` with no tablet: "No pen connected", and the request ends instead of waiting forever.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

from daemon_helpers import (
    SPEED,
    as_replayed,
    central_sign_key,
    link_table,
    staff_login,
    wait_idle,
    write_config,
    writers,
)
from fixtures_link import LinkPki, wait_for

from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.pad_emulator import EmulatorOptions, PadEmulator, PtyPair, trajectory_to_samples
from firmware_host.recording import write_recording
from kiosk.config import load_config
from kiosk.daemon import Daemon
from kiosk.templates import TemplateStore
from tools.central.collector import Collector


def _recordings(folder: Path, trajectories: list) -> Path:
    """What `sigkiosk capture synth` writes: NN-*.evrec, played in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = GeneratorOptions(resolution=100, hover_frames=3)
    for i, traj in enumerate(trajectories, start=1):
        stream = trajectory_to_events(traj, opts)
        write_recording(folder / f"{i:02d}-sig.evrec", stream.caps, stream.items, source="test")
    return folder


def _pen_table(**kv: object) -> str:
    return "\n[pen]\n" + "".join(f'{k} = {v!r}\n'.replace("'", '"') for k, v in kv.items())


def _screens(events: "queue.Queue[dict]", seen: list[dict], until: float) -> None:
    while time.monotonic() < until:
        try:
            seen.append(events.get(timeout=0.05))
        except queue.Empty:
            return


def test_replay_source_enrolls_and_verifies_without_anyone_at_the_pen(tmp_path: Path) -> None:
    genuine, forged = writers()["001"]
    rec = _recordings(tmp_path / "replay", [*genuine[:5], genuine[6], forged[0]])
    cfg = write_config(tmp_path, extra=_pen_table(source="replay", recordings=str(rec), speed=SPEED))
    daemon = Daemon(load_config(cfg))   # the pen comes from the configuration, as in `sigkiosk run`
    daemon.start()
    try:
        st = daemon.status()
        assert st["pen"] == {"source": "replay", "connected": True, "device": f"replay of 7 recording(s) in {rec}"}
        req = daemon.submit("enroll", "cust-7", staff=staff_login(daemon))
        assert req.done.wait(60), "enrollment did not finish"
        res = req.wait(1)
        assert res["ok"] and res["references"] == 5 and res["attempts"] == 5, res
        wait_idle(daemon)
        req = daemon.submit("verify", "cust-7")
        assert req.done.wait(30)
        assert req.wait(1)["decision"] == "APPROVED"      # 06: the writer's own signature
        wait_idle(daemon)
        req = daemon.submit("verify", "cust-7")
        assert req.done.wait(30)
        assert req.wait(1)["decision"] == "SUSPICIOUS"    # 07: a skilled forgery of it
    finally:
        daemon.stop()


def test_serial_source_waits_for_the_pad_then_captures_through_it(tmp_path: Path) -> None:
    genuine, _ = writers()["001"]
    port = tmp_path / "ttyPAD"   # a by-id style link: absent until the pad is plugged in
    cfg = write_config(tmp_path, extra=_pen_table(source="serial", port=str(port)))
    config = load_config(cfg)
    # The pad plays at real speed (the emulator paces its samples): references as written.
    TemplateStore(config.storage.templates_dir, config.storage.template_key, create_key=True).put(
        "cust-9", list(genuine[:5]))
    daemon = Daemon(config)
    daemon.start()
    pty = PtyPair.open()
    emu = None
    try:
        assert daemon.status()["pen"] == {"source": "serial", "connected": False, "device": f"serial pad on {port}"}
        events = daemon.bus.subscribe()
        seen: list[dict] = []
        req = daemon.submit("verify", "cust-9")
        wait_for(lambda: (_screens(events, seen, time.monotonic() + 0.2) or True)
                 and any(e.get("screen") == "no_pen" for e in seen), what="the no-pen screen")
        no_pen = next(e for e in seen if e.get("screen") == "no_pen")
        assert no_pen["title"] == "No pen connected"
        assert not any(e.get("screen") == "sign" for e in seen)   # no "Sign now" over a missing pen
        # The pad is plugged in: opened, HELLO, then the sign prompt; the customer signs on it.
        opts = EmulatorOptions(realtime=True)
        hello, samples = trajectory_to_samples(genuine[6], opts)
        emu = PadEmulator(pty.master, hello, opts)
        emu.serve_commands()
        os.symlink(pty.path, port)
        wait_for(lambda: (_screens(events, seen, time.monotonic() + 0.2) or True)
                 and any(e.get("screen") == "sign" for e in seen), what="the sign prompt once the pad is there")
        assert daemon.status()["pen"]["connected"] is True
        player = threading.Thread(target=emu.play, args=(samples,), kwargs={"hello_first": False}, daemon=True)
        player.start()
        assert req.done.wait(30), "no decision from the pad's signature"
        assert req.wait(1)["decision"] == "APPROVED"
        _screens(events, seen, time.monotonic() + 0.3)
        ink = [p for e in seen if e.get("type") == "ink" for p in e["points"]]
        assert any(e.get("type") == "ink_start" for e in seen) and len(ink) > 100   # live ink from the pad
        assert all(0 <= p[0] <= 1 and 0 <= p[1] <= 1 for p in ink)
    finally:
        if emu is not None:
            emu.stop()
        daemon.stop()
        pty.close()


def test_serial_pad_pulled_mid_signature_is_reopened_and_the_customer_signs_again(tmp_path: Path) -> None:
    genuine, _ = writers()["001"]
    port = tmp_path / "ttyPAD"
    cfg = write_config(tmp_path, extra=_pen_table(source="serial", port=str(port)))
    config = load_config(cfg)
    TemplateStore(config.storage.templates_dir, config.storage.template_key, create_key=True).put(
        "cust-9", list(genuine[:5]))
    opts = EmulatorOptions(realtime=True)
    hello, samples = trajectory_to_samples(genuine[6], opts)
    first, second = PtyPair.open(), None
    # The first pad is pulled out mid-signature: it never gets to press OK.
    emus = [PadEmulator(first.master, hello, EmulatorOptions(realtime=True, send_ok=False))]
    emus[0].serve_commands()
    os.symlink(first.path, port)
    daemon = Daemon(config)
    daemon.start()
    try:
        events = daemon.bus.subscribe()
        seen: list[dict] = []
        req = daemon.submit("verify", "cust-9")
        wait_for(lambda: (_screens(events, seen, time.monotonic() + 0.2) or True)
                 and any(e.get("screen") == "sign" for e in seen), what="the sign prompt")
        emus[0].play(samples[: len(samples) // 3], hello_first=False)   # a third of the signature...
        emus[0].stop()
        first.close()                                                   # ...and the cable is pulled
        port.unlink()
        wait_for(lambda: (_screens(events, seen, time.monotonic() + 0.2) or True)
                 and any(e.get("screen") == "no_pen" for e in seen), what="no pen after the unplug")
        assert any(e.get("type") == "notice" and "disconnected" in e.get("message", "") for e in seen)
        assert not req.done.is_set() and daemon.status()["pen"]["connected"] is False
        second = PtyPair.open()                                          # plugged back (another tty)
        emus.append(PadEmulator(second.master, hello, opts))
        emus[1].serve_commands()
        n_sign = sum(e.get("screen") == "sign" for e in seen)
        os.symlink(second.path, port)
        wait_for(lambda: (_screens(events, seen, time.monotonic() + 0.2) or True)
                 and sum(e.get("screen") == "sign" for e in seen) > n_sign, what="the sign prompt again")
        threading.Thread(target=emus[1].play, args=(samples,), kwargs={"hello_first": False}, daemon=True).start()
        assert req.done.wait(30), "no decision after the pad came back"
        res = req.wait(1)
        assert res["decision"] == "APPROVED"   # the whole second signature, not the lost third
    finally:
        for emu in emus:
            emu.stop()
        daemon.stop()
        first.close()
        if second is not None:
            second.close()


def test_no_tablet_is_said_on_screen_and_in_status_and_ends_the_request(tmp_path: Path) -> None:
    empty = tmp_path / "input"
    empty.mkdir()
    cfg = write_config(tmp_path, extra="")
    text = cfg.read_text().replace("customer_timeout_s = 20.0", "customer_timeout_s = 1.5") \
        .replace("[device]\n", f'[device]\ninput_dir = "{empty}"\n')
    cfg.write_text(text)
    daemon = Daemon(load_config(cfg))
    daemon.start()
    try:
        st = daemon.status()
        assert st["pen"]["source"] == "evdev" and st["pen"]["connected"] is False and st["digitizer"] is False
        events = daemon.bus.subscribe()
        t0 = time.monotonic()
        req = daemon.submit("enroll", "cust-1", staff=staff_login(daemon))
        assert req.done.wait(15), "enrollment without a pen must end, not wait forever"
        res = req.wait(1)
        assert not res["ok"] and res["error"] == "no_device" and time.monotonic() - t0 < 10
        seen: list[dict] = []
        _screens(events, seen, time.monotonic() + 0.5)
        screens = [e.get("screen") for e in seen if e.get("type") == "screen"]
        assert "no_pen" in screens and "enroll" not in screens, screens
        assert seen[[e.get("screen") for e in seen].index("error")]["title"] == "No pen connected"
    finally:
        daemon.stop()


def test_admin_verify_command_reaches_a_replay_kiosk_and_the_central_database(
        link_pki: LinkPki, mqtt_broker, tmp_path: Path, caplog, capsys) -> None:
    from kiosk.commands import DOMAIN, verify_topic
    from tools.commands import admin_cmd

    caplog.set_level(logging.INFO)
    genuine, _ = writers()["001"]
    rec = _recordings(tmp_path / "replay", [genuine[6]])
    sign_key, sign_pub = central_sign_key(tmp_path)
    db = str(tmp_path / "central.sqlite")
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db, fresh_session=True))
    collector.start()
    cfg = write_config(tmp_path, link=link_table(link_pki, mqtt_broker.port, tmp_path), commands_pub=sign_pub,
                       extra=_pen_table(source="replay", recordings=str(rec), speed=SPEED))
    config = load_config(cfg)
    TemplateStore(config.storage.templates_dir, config.storage.template_key, create_key=True).put(
        "cust-5", as_replayed(genuine[:5]))
    daemon = Daemon(config)
    daemon.start()
    crt, key = link_pki.cert("admin.ops")
    conn = ["--broker-host", "localhost", "--broker-port", str(mqtt_broker.port),
            "--ca", str(link_pki.ca_dir / "ca.crt"),
            "--cert", str(crt), "--key", str(key), "--registry", str(link_pki.registry_file)]
    try:
        assert collector.wait_ready() and daemon.link.commands_ready.wait(10)
        rc = admin_cmd.main(["verify", "--kiosk", "kiosk-a", "--customer", "cust-5", "--sign-key",
                             str(tmp_path / "central" / "central-sign.key"), "--request-id", "req-walk-1", *conn])
        out = capsys.readouterr().out
        assert rc == 0 and "request req-walk-1" in out, out
        rows = wait_for(lambda: collector.store.query_decisions(kiosk_id="kiosk-a"), timeout=40,
                        what="the decision at the collector")
        assert rows[0].payload["session_id"] == "req-walk-1" and rows[0].decision == "APPROVED"
        assert rows[0].payload["subject"] == "cust-5"
        # A signed "enroll" is refused by name: enrollment needs an operator at the kiosk.
        import base64
        import json

        topic = verify_topic(daemon.link.topics)
        now = int(time.time() * 1000)
        body = json.dumps({"v": 1, "type": "enroll", "kiosk": "kiosk-a", "request_id": "req-e", "customer": "cust-6",
                           "issued_ms": now, "expires_ms": now + 60000}).encode()
        sig = sign_key.sign(DOMAIN + topic.encode() + b"\0" + body)
        from fixtures_link import mqtt_client

        admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
        try:
            admin.publish(topic, json.dumps({"body": base64.b64encode(body).decode(),
                                             "sig": base64.b64encode(sig).decode()}).encode(), qos=1)
            wait_for(lambda: "enrollment cannot be requested by the central server" in caplog.text,
                     what="the remote enroll refused")
        finally:
            admin.disconnect()
            admin.loop_stop()
        assert daemon.current is None and daemon.decisions == 1
        # An unknown kiosk is one clear line, exit 2, nothing sent.
        assert admin_cmd.main(["verify", "--kiosk", "kiosk-zz", "--customer", "cust-5", "--sign-key",
                               str(tmp_path / "central" / "central-sign.key"), *conn]) == 2
        assert "kiosk-zz is not an active kiosk" in capsys.readouterr().err
    finally:
        daemon.stop()
        collector.stop()


def test_no_pen_on_the_customer_screen_and_the_staff_view_in_chromium(tmp_path: Path) -> None:
    """The same, as the kiosk's browser shows it (Debian's Chromium, headless)."""
    from playwright.sync_api import sync_playwright
    from test_ui_screen import CHROMIUM_ARGS, _chromium

    empty = tmp_path / "input"
    empty.mkdir()
    cfg = write_config(tmp_path, ui=True)
    cfg.write_text(cfg.read_text().replace("customer_timeout_s = 20.0", "customer_timeout_s = 4.0")
                   .replace("[device]\n", f'[device]\ninput_dir = "{empty}"\n'))
    daemon = Daemon(load_config(cfg))
    daemon.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(daemon.ui.start_url)
            page.wait_for_selector("#screen-idle:not([hidden])")
            req = daemon.submit("enroll", "cust-1", staff=staff_login(daemon))
            page.wait_for_selector("#screen-message:not([hidden])", timeout=5000)
            assert page.inner_text("#message-title") == "No pen connected"
            assert "connect the signature pen" in page.inner_text("#message-text")
            assert req.done.wait(10) and req.wait(1)["error"] == "no_device"
            page.goto(daemon.ui.url + "staff")
            page.wait_for_selector("#pen-status[data-connected='no']")   # no eval: the page's CSP forbids it
            assert page.inner_text("#pen-status").startswith("No pen connected (evdev pen")
            browser.close()
    finally:
        daemon.stop()


def test_replay_recordings_that_cannot_play_are_one_config_error(tmp_path: Path) -> None:
    import pytest

    from kiosk.config import ConfigError

    rec = tmp_path / "replay"
    rec.mkdir()
    cfg = write_config(tmp_path, extra=_pen_table(source="replay", recordings=str(rec)))
    with pytest.raises(ConfigError, match=r"\[pen\] recordings: .*no recordings .*capture synth"):
        load_config(cfg)   # what `run --check` reports, before any customer
    (rec / "01-sig.evrec").write_text("not a recording\n")
    with pytest.raises(ConfigError, match=r"\[pen\] recordings: .*01-sig.evrec:1: header is not JSON"):
        Daemon(load_config(cfg))   # `sigkiosk run` prints it as one line, not a traceback
