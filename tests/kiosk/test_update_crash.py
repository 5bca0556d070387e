"""Crash safety: the update agent's process is SIGKILLed at each step of an install.

After the restart the appliance serves a model that passes its golden vectors (checked here with
the real runtime), and the update completes (the retained offer and chunks come back from the
broker; stored chunks are reused) - or, when the new model turns out bad, it is rolled back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fixtures_link import wait_for
from fixtures_update import BUNDLE_NAME, U_SITE, UpdatePki, link_config_json, make_bundle, provision

from kiosk.bundle import manifest_digest
from kiosk.golden import check_golden
from kiosk.slots import SlotStore
from tools.broker import Mosquitto
from tools.rollout import AdminClient, target_base

REPO = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("update_kiosk_proc.py")
KIOSK = "solo-1"
#: The kiosk says "ready" after at most 30 s of waiting for its subscriptions.
READY_TIMEOUT_S = 60.0
BASE = target_base("sig", site=U_SITE, kiosk=KIOSK)


def _start(pki: UpdatePki, port: int, tmp: Path, root: Path, *crash: str) -> subprocess.Popen[str]:
    (tmp / "link.json").write_text(link_config_json(pki.link_config(KIOSK, port, tmp / "outbox.sqlite")))
    (tmp / "update.json").write_text(json.dumps({"root": str(root), "bundle_name": BUNDLE_NAME,
                                                 "admin_keys": [str(p) for p in pki.admin_pubs()]}))
    proc = subprocess.Popen([sys.executable, str(PROC), str(tmp / "link.json"), str(tmp / "update.json"), *crash],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    proc.early = []  # type: ignore[attr-defined]
    ready = threading.Event()

    def read_until_ready() -> None:
        # A thread, so that a kiosk that never says "ready" fails the test instead of hanging
        # the whole suite on a blocking read; it stops reading at "ready" (later readers go on).
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                ready.set()
                return
            proc.early.append(line)  # type: ignore[attr-defined]

    reader = threading.Thread(target=read_until_ready, daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    if ready.is_set():
        return proc
    proc.kill()
    raise AssertionError(f"kiosk process not ready within {READY_TIMEOUT_S} s (exit {proc.wait()}); "
                         f"it printed: {proc.early}")  # type: ignore[attr-defined]


def _serves_good_model(root: Path) -> int:
    act = SlotStore(root, BUNDLE_NAME).active()
    assert act is not None
    for m in act.manifest.models:
        assert check_golden(act.directory / m.file, act.directory / m.golden).ok
    return act.version


@pytest.mark.parametrize("step, nth, active_after_kill", [
    ("chunk_stored", 2, 1),     # during the transfer (2 of 3 chunks on disk)
    ("staged", 1, 1),           # files written to the staging directory, not yet checked
    ("slot_written", 1, 1),     # spare slot complete, not switched
    ("before_switch", 1, 1),
    ("after_switch", 1, 2),     # switched, not yet re-checked nor reported
])
def test_killed_at_each_step_recovers(update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path, step: str,
                                      nth: int, active_after_kill: int) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    v2 = make_bundle(update_pki, 2, model="dense_v2")
    digest = manifest_digest(v2.envelope)
    proc = _start(update_pki, update_broker.port, tmp_path, root, step, str(nth))
    second = None
    try:
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            admin.push(v2, BASE, chunk_size=1024)
            assert proc.wait(20) == -signal.SIGKILL, "the agent should have died at the step"
            # Dead mid-install: whatever is on disk now must serve a good model.
            assert _serves_good_model(root) == active_after_kill
            since = admin.mark()
            second = _start(update_pki, update_broker.port, tmp_path, root)
            assert admin.wait([KIOSK], digest, 30, since) == {KIOSK: "active"}
            r = admin.reports[KIOSK]
            assert r["active"]["version"] == 2 and r["previous"]["version"] == 1
        assert _serves_good_model(root) == 2
        if step == "chunk_stored":
            # Resumed, not restarted: the two chunks stored before the kill were kept, only the
            # third was stored after the restart.
            lines = second.early + _drain(second)  # type: ignore[attr-defined]
            stored = [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith("step chunk_stored")]
            assert [s["index"] for s in stored] == [2] and stored[0]["have"] == 3, lines
        assert not any((root / "incoming").iterdir())
        assert not list((root / "slots").glob(".*"))
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _drain(proc: subprocess.Popen[str]) -> list[str]:
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return out.splitlines()


def test_new_model_broken_after_switch_is_rolled_back(update_pki: UpdatePki, update_broker: Mosquitto,
                                                      tmp_path: Path) -> None:
    """Killed right after the switch, and the new slot's model is damaged before the restart:
    the agent's start-up check fails and it rolls back to the previous slot by itself."""
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    v2 = make_bundle(update_pki, 2, model="dense_v2")
    proc = _start(update_pki, update_broker.port, tmp_path, root, "after_switch")
    second = None
    try:
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            admin.push(v2, BASE, chunk_size=1024)
            assert proc.wait(20) == -signal.SIGKILL
            act = SlotStore(root, BUNDLE_NAME).active()
            assert act.version == 2
            model = act.directory / "dense_v2.tflite"
            data = bytearray(model.read_bytes())
            data[len(data) // 2] ^= 0xFF   # a bad sector, a bit flip: the file no longer matches
            model.write_bytes(bytes(data))
            since = admin.mark()
            second = _start(update_pki, update_broker.port, tmp_path, root)
            r = wait_for(lambda: next((x for x in admin.history[since:] if x["state"] == "rolled_back"), None),
                         timeout=20, what="a rollback report")
            assert "dense_v2.tflite" in r["detail"] and r["active"]["version"] == 1
        assert _serves_good_model(root) == 1
        store = SlotStore(root, BUNDLE_NAME)
        assert store.previous() is None and store.installed_version() == 2   # v2 is burnt: no reinstall of it
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
