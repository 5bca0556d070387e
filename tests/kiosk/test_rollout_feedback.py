"""What an admin sees while pushing: progress per kiosk, a fast stop when no kiosk of the group is
online (instead of the whole --timeout), and `admin status` telling a kiosk on its shipped models
from one with no model; `broker-config` listening where `--host` says. Real mosquitto (TLS, ACL),
kiosks emulated by their link + update agent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures_update import UpdatePki, make_bundle, start_kiosk

from tools.broker import Mosquitto
from tools.commands import admin_cmd


def _conn(pki: UpdatePki, port: int) -> list[str]:
    a = pki.admin(port)
    return ["--broker-host", "localhost", "--broker-port", str(port), "--ca", str(a.ca_file),
            "--cert", str(a.cert_file),
            "--key", str(a.key_file), "--registry", str(pki.registry_file)]


def test_push_stops_fast_when_no_kiosk_of_the_group_is_online(
        update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "v2.skb"
    make_bundle(update_pki, 2, target_groups=["canary"]).write(bundle)
    t0 = time.monotonic()
    rc = admin_cmd.main(["push", str(bundle), "--group", "canary", "--timeout", "600", "--online-wait", "2",
                         *_conn(update_pki, update_broker.port)])
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == 1 and took < 30, (took, out)   # not the 600 s timeout
    assert "group canary: offer" in out and "pushed to 1 kiosk(s): canary-1" in out
    assert "no kiosk of group canary answered the offer: none is online" in out and "HALTED" in out


def test_push_prints_each_kiosks_steps_and_status_says_shipped(
        update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kiosk = start_kiosk(update_pki, update_broker.port, "canary-1", tmp_path / "canary-1")   # nothing installed
    try:
        assert kiosk.agent.last_state["state"] == "no_model"
        rc = admin_cmd.main(["status", "--settle", "1", *_conn(update_pki, update_broker.port)])
        rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
        assert rc == 0 and "shipped" in rows["canary-1"] and "shipped models" in rows["canary-1"]
        assert "no_model" not in rows["canary-1"] and "no report" in rows["fleet-1"]

        bundle = tmp_path / "v1.skb"
        make_bundle(update_pki, 1, target_groups=["canary"]).write(bundle)
        rc = admin_cmd.main(["push", str(bundle), "--group", "canary", "--timeout", "60",
                             *_conn(update_pki, update_broker.port)])
        out = capsys.readouterr().out
        assert rc == 0, out
        steps = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("canary-1:")]
        assert "canary-1: downloading" in steps and steps[-1] == "canary-1: active", out
        assert steps.index("canary-1: downloading") < steps.index("canary-1: active")
        assert "group canary: 1/1 active" in out
    finally:
        kiosk.close()


def test_broker_config_listens_where_host_says_unless_bind_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import pki

    pki.init_ca(tmp_path / "ca")

    def conf(name: str, *extra: str) -> tuple[str, str]:
        out = tmp_path / name
        assert admin_cmd.main(["broker-config", "--ca-dir", str(tmp_path / "ca"), "--out", str(out),
                               "--port", "18883", *extra]) == 0
        return (out / "mosquitto.conf").read_text(), capsys.readouterr().out

    text, printed = conf("local")
    assert "listener 18883 127.0.0.1" in text and "listens on 127.0.0.1:18883" in printed
    # The kiosks reach the broker by this name: it must listen beyond loopback (the issue: it did not).
    text, printed = conf("named", "--host", "mqtt.bank.example")
    assert "listener 18883 0.0.0.0" in text and "listens on 0.0.0.0:18883" in printed and "--bind" in printed
    text, _ = conf("bound", "--host", "mqtt.bank.example", "--bind", "10.1.2.3")
    assert "listener 18883 10.1.2.3" in text
