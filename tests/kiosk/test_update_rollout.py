"""Rollout over two emulated kiosk groups: canary first, the fleet only after the canaries report
success; a failing canary halts the rollout before the fleet is touched. Through the admin CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures_update import BUNDLE_NAME, MODELS, UpdatePki, make_bundle, provision, start_kiosk

from kiosk.bundle import BundleFile
from tools.broker import Mosquitto
from tools.rollout import AdminClient, rollout, target_base

REPO = Path(__file__).resolve().parents[2]


def _admin_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.commands.admin_cmd", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def _conn_args(pki: UpdatePki, port: int) -> list[str]:
    a = pki.admin(port)
    return ["--broker-host", "localhost", "--broker-port", str(port), "--ca", str(a.ca_file), "--cert", str(a.cert_file),
            "--key", str(a.key_file), "--registry", str(pki.registry_file)]


def test_canary_then_fleet_with_two_signatures(update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path) -> None:
    k0, k1, _ = update_pki.admin_keys
    kiosks = {}
    try:
        for kid in ("canary-1", "fleet-1"):
            root = tmp_path / kid
            provision(update_pki, root, make_bundle(update_pki, 1, sign=[k0, k1]), threshold=2)
            kiosks[kid] = start_kiosk(update_pki, update_broker.port, kid, root, threshold=2)
        bundle = tmp_path / "v2.skb"
        out = _admin_cli("bundle", "--name", BUNDLE_NAME, "--version", "2", "--model", str(MODELS / "dense_v2.tflite"),
                         "--group", "canary", "--group", "fleet", "--notes", "retrained", "--key", str(k0), "--out", str(bundle))
        assert out.returncode == 0, out.stderr
        # One signature is not enough for threshold 2: the canary refuses, the fleet never sees it.
        out = _admin_cli("push", str(bundle), "--group", "canary", "--group", "fleet", "--timeout", "20",
                         *_conn_args(update_pki, update_broker.port))
        assert out.returncode == 1 and "HALTED" in out.stdout and "too_few_signatures" in out.stdout, out.stdout + out.stderr
        assert kiosks["fleet-1"].agent.active_model().version == 1
        out = _admin_cli("sign", str(bundle), "--key", str(k1))
        assert out.returncode == 0 and "signatures by" in out.stdout, out.stderr
        out = _admin_cli("push", str(bundle), "--group", "canary", "--group", "fleet", "--timeout", "30",
                         *_conn_args(update_pki, update_broker.port))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "group canary: 1/1 active" in out.stdout and "group fleet: 1/1 active" in out.stdout
        for k in kiosks.values():
            act = k.agent.active_model()
            assert act.version == 2 and k.agent.check_slot(act) is None
        out = _admin_cli("status", "--settle", "1", *_conn_args(update_pki, update_broker.port))
        assert out.returncode == 0, out.stderr
        rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
        assert "sigkiosk-models v2" in rows["canary-1"] and "sigkiosk-models v2" in rows["fleet-1"]
        assert "no report" in rows["solo-1"]
    finally:
        for k in kiosks.values():
            k.close()


def test_failing_canary_halts_the_fleet(update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path) -> None:
    kiosks = {}
    try:
        for kid in ("canary-1", "fleet-1"):
            root = tmp_path / kid
            provision(update_pki, root, make_bundle(update_pki, 1))
            kiosks[kid] = start_kiosk(update_pki, update_broker.port, kid, root)
        bad: BundleFile = make_bundle(update_pki, 2, model="broken", target_groups=["canary", "fleet"])
        result = rollout(update_pki.admin(update_broker.port), update_pki.registry(), bad, ["canary", "fleet"], timeout_s=20)
        assert result.halted and not result.ok
        assert [s.group for s in result.stages] == ["canary"]
        assert result.stages[0].outcomes == {"canary-1": "refused"}
        assert result.reports["canary-1"]["reason"] == "golden_failed"
        assert "canary-1: refused golden_failed" in result.summary()
        # The fleet was never offered anything, and both kiosks still serve version 1.
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            assert admin.current_offer(target_base("sig", group="fleet")) is None
            assert admin.current_offer(target_base("sig", group="canary")) is not None
        # The admin withdraws the bad bundle: offer and chunks leave the broker.
        out = _admin_cli("push", "--clear", "--group", "canary", *_conn_args(update_pki, update_broker.port))
        assert out.returncode == 0 and "model: cleared" in out.stdout, out.stdout + out.stderr
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            assert admin.current_offer(target_base("sig", group="canary")) is None
        assert kiosks["fleet-1"].agent.last_state["state"] == "active"
        assert "offer" not in kiosks["fleet-1"].agent.last_state
        for k in kiosks.values():
            act = k.agent.active_model()
            assert act.version == 1 and k.agent.check_slot(act) is None
    finally:
        for k in kiosks.values():
            k.close()


def test_a_stolen_kiosk_key_cannot_stop_the_admins_pushes(update_pki: UpdatePki, update_broker: Mosquitto,
                                                          tmp_path: Path) -> None:
    """Found by a review: with fleet-1's certificate and signing key, an attacker left two retained,
    validly signed update reports, one under another site (the broker lets a kiosk write any
    site's update topic) with a time that is a string. Every admin session died on them right after
    subscribing (paho re-raised the TypeError of the comparison), so every push failed - still after
    fleet-1 was revoked. Now such reports are read and set aside, and a revoked kiosk's are ignored."""
    import copy
    import time

    import paho.mqtt.client as mqtt
    from fixtures_update import U_SITE
    from paho.mqtt.enums import CallbackAPIVersion

    from kiosk import keys
    from kiosk.bundle import canonical, sign_envelope
    from kiosk.tls import client_tls_context
    from kiosk.update_agent import REPORT_TYPE

    sk = keys.load_signing_key(update_pki.root / "kiosks" / "fleet-1" / keys.KIOSK_SIGN_KEY)
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-1", protocol=mqtt.MQTTv5)
    thief.tls_set_context(client_tls_context(update_pki.ca_dir / "ca.crt", update_pki.certs / "fleet-1.crt",
                                             update_pki.certs / "fleet-1.key"))
    thief.connect("localhost", update_broker.port)
    thief.loop_start()
    report = {"type": REPORT_TYPE, "kiosk": "fleet-1", "site": U_SITE, "group": "fleet", "seq": 1, "state": "active",
              "reason": None, "detail": "", "active": None, "previous": None}
    try:
        for site, t in ((U_SITE, 1), ("zz-elsewhere", "x"), ("zz-other", 2**40)):
            info = thief.publish(f"sig/v1/{site}/fleet-1/update",
                                 canonical(sign_envelope({**report, "time_ms": t}, [sk])), qos=1, retain=True)
            info.wait_for_publish(5)
            assert info.is_published()
    finally:
        thief.disconnect()
        thief.loop_stop()

    root = tmp_path / "canary-1"
    provision(update_pki, root, make_bundle(update_pki, 1))
    canary = start_kiosk(update_pki, update_broker.port, "canary-1", root)
    try:
        v2 = make_bundle(update_pki, 2, model="dense_v2", target_groups=["canary"])
        result = rollout(update_pki.admin(update_broker.port), update_pki.registry(), v2, ["canary"], timeout_s=20)
        assert result.ok, result.summary()
        assert canary.agent.active_model().version == 2
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            time.sleep(0.5)   # the retained reports arrive after the subscription
            # Only the report on the kiosk's own site counts (the other site's, newer by its clock, not).
            assert admin.reports["fleet-1"]["time_ms"] == 1
        revoked = copy.deepcopy(update_pki.registry())
        revoked.revoke("fleet-1", reason="certificate stolen", now_ms=int(time.time() * 1000))
        with AdminClient(update_pki.admin(update_broker.port), revoked) as admin:
            time.sleep(0.5)
            assert "fleet-1" not in admin.reports and admin.client.is_connected()
        v3 = make_bundle(update_pki, 3, target_groups=["canary"])
        assert rollout(update_pki.admin(update_broker.port), revoked, v3, ["canary"], timeout_s=20).ok
    finally:
        canary.close()
