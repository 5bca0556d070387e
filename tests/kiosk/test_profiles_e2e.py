"""Application profiles end to end: the daemon decides one signature under two profiles (APPROVED
under standard, SUSPICIOUS under high-value), chosen by the customer's own request (the default),
an operator's staff login and the central command (``sigkiosk admin verify --profile``) through
real mosquitto with TLS and ACL; every decision reaches the collector's SQLite with its profile
and who asked. Unknown and hostile profile names are refused - by the CLI, by the kiosk's command
check, by the kiosk's profile list - and nothing is captured for them. The staff view's profile
picker is driven in real Chromium."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from daemon_helpers import (
    as_replayed,
    central_sign_key,
    link_table,
    sign_when_asked,
    staff_login,
    start_daemon,
    wait_idle,
    write_config,
    writers,
)
from fixtures_link import LinkPki, mqtt_client, wait_for

from kiosk.commands import DOMAIN, verify_topic
from kiosk.profiles import UnknownProfile
from kiosk.templates import TemplateStore
from tools.central.collector import Collector

STANDARD, HIGH = 1.3, 0.7
PROFILES = f"""
[verifier]
kind = "classic"
threshold = {STANDARD}

[profiles]
default = "standard"

[profiles.standard]
label = "Standard"

[profiles.high-value]
label = "High value"
threshold = {HIGH}
"""


def _signed(sign_key, topic: str, body: dict) -> bytes:  # type: ignore[no-untyped-def,type-arg]
    raw = json.dumps(body).encode()
    sig = sign_key.sign(DOMAIN + topic.encode() + b"\0" + raw)
    return json.dumps({"body": base64.b64encode(raw).decode(), "sig": base64.b64encode(sig).decode()}).encode()


def test_two_profiles_from_the_customer_staff_and_central_command(link_pki: LinkPki, mqtt_broker, tmp_path: Path,
                                                                   caplog, capsys) -> None:
    from tools.commands import admin_cmd

    caplog.set_level(logging.INFO)
    genuine, _ = writers()["001"]
    sign_key, sign_pub = central_sign_key(tmp_path)
    db = tmp_path / "central.sqlite"
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(db), fresh_session=True))
    collector.start()
    cfg = write_config(tmp_path, link=link_table(link_pki, mqtt_broker.port, tmp_path), commands_pub=sign_pub,
                       extra=PROFILES)
    # One signature is signed again under each profile, to compare the profiles on one score: a
    # kiosk that kept its path would call every one after the first a replay (as it should:
    # test_replayed_signature.py), so this one keeps none.
    cfg.write_text(cfg.read_text().replace("create_key = true", "create_key = true\nseen_signatures = 0"))
    daemon, pen, config = start_daemon(cfg)
    TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-7", as_replayed(genuine[:5]))
    crt, key = link_pki.cert("admin.ops")
    conn = ["--broker-host", "localhost", "--broker-port", str(mqtt_broker.port), "--ca", str(link_pki.ca_dir / "ca.crt"),
            "--cert", str(crt), "--key", str(key), "--registry", str(link_pki.registry_file)]
    verify_cli = ["verify", "--kiosk", "kiosk-a", "--customer", "cust-7", "--sign-key",
                  str(tmp_path / "central" / "central-sign.key"), *conn]
    events = daemon.bus.subscribe()
    try:
        assert collector.wait_ready() and daemon.link.commands_ready.wait(10)
        # The customer's own request: the default profile, nobody else asked.
        req = daemon.submit("verify", "cust-7")
        sign_when_asked(daemon, pen, events, [genuine[6]], req.done.is_set)
        own = req.wait(1)
        assert own["decision"] == "APPROVED" and own["profile"] == "standard"
        assert HIGH < own["distance"] < STANDARD, own["distance"]   # the score lies between the two lines

        # The same signature, started by an operator at the staff view under high-value.
        wait_idle(daemon)
        req = daemon.submit("verify", "cust-7", staff=staff_login(daemon), profile="high-value")
        sign_when_asked(daemon, pen, events, [genuine[6]], req.done.is_set)
        staff = req.wait(1)
        assert staff["decision"] == "SUSPICIOUS" and staff["profile"] == "high-value"
        assert HIGH < staff["distance"] < STANDARD and staff["threshold"] == f"{HIGH:.4g}"
        assert daemon.last_decision is not None and daemon.last_decision["operator"] == "alice"

        # The central command, through mosquitto: sigkiosk admin verify --profile high-value.
        wait_idle(daemon)
        before = daemon.decisions
        assert admin_cmd.main([*verify_cli, "--request-id", "req-hv-1", "--profile", "high-value"]) == 0
        assert "under profile high-value" in capsys.readouterr().out
        sign_when_asked(daemon, pen, events, [genuine[6]], lambda: daemon.decisions > before)

        # An unknown profile: refused by the kiosk, by name, and nothing captured.
        wait_idle(daemon)
        assert admin_cmd.main([*verify_cli, "--request-id", "req-gold", "--profile", "gold"]) == 0
        wait_for(lambda: "unknown profile 'gold' (this kiosk has: standard, high-value)" in caplog.text,
                 what="the unknown profile refused at the kiosk")
        refused = [r for r in caplog.records if getattr(r, "event", None) == "command_refused"]
        assert refused[-1].reason == "unknown_profile"   # type: ignore[attr-defined]
        # The same request id again (an admin's retry, or a replay): refused, and the refusal names
        # the request, so the admin can tell which of theirs was not run.
        assert admin_cmd.main([*verify_cli, "--request-id", "req-hv-1", "--profile", "high-value"]) == 0
        wait_for(lambda: any(getattr(r, "event", None) == "command_refused" and getattr(r, "reason", "") == "replay"
                             and getattr(r, "request", None) == "req-hv-1" for r in caplog.records),
                 what="the replayed request refused by its id")
        # Hostile names never leave the admin's machine...
        for bad in ("x'; DROP TABLE decisions;--", "High-Value", "p" * 33, "../etc", "a\x1bb"):
            assert admin_cmd.main([*verify_cli, "--profile", bad]) == 2
            assert "is not a profile name" in capsys.readouterr().err
        # ...and signed by a (stolen) central key, the kiosk's command check refuses them.
        topic = verify_topic(daemon.link.topics)
        now = int(time.time() * 1000)
        base = {"type": "verify", "kiosk": "kiosk-a", "customer": "cust-7", "issued_ms": now, "expires_ms": now + 60000}
        hostile = [{"v": 2, "profile": "x'; DROP TABLE decisions;--"}, {"v": 2, "profile": "p" * 300},
                   {"v": 2, "profile": ["high-value"]}, {"v": 2, "profile": "std\u001b[2J"},
                   {"v": 1, "profile": "high-value"},   # a v1 kiosk would ignore it: refused, not run at standard
                   {"v": 2},                           # v2 without a profile
                   {"v": 1, "admin": "ops; rm -rf"}, {"v": True}]
        admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
        try:
            for i, extra in enumerate(hostile):
                admin.publish(topic, _signed(sign_key, topic, {**base, "request_id": f"req-bad-{i}", **extra}), qos=1)
            wait_for(lambda: sum(getattr(r, "event", None) == "command_refused" and getattr(r, "reason", "") == "malformed"
                                 for r in caplog.records) >= len(hostile), what="every hostile command refused")
        finally:
            admin.disconnect()
            admin.loop_stop()
        assert daemon.current is None and daemon.decisions == before + 1

        assert daemon.link.flush(20)
        rows = wait_for(lambda: (r := collector.store.query_decisions(kiosk_id="kiosk-a")) and len(r) == 3 and r,
                        what="three decisions at the collector")
        got = sorted((r.payload["profile"], r.payload["operator"], r.decision, r.payload["schema"]) for r in rows)
        assert got == [("high-value", "alice", "SUSPICIOUS", 3), ("high-value", "central:ops", "SUSPICIOUS", 3),
                       ("standard", None, "APPROVED", 3)]
        for r in rows:
            assert ("profile_threshold" in r.payload["model_versions"]) == (r.payload["profile"] == "high-value")
        central = next(r for r in rows if r.payload["session_id"] == "req-hv-1")
        assert central.payload["subject"] == "cust-7" and central.payload["reasons"] == ["overall"]
        # The refusal reached the central server too, in the kiosk's log.
        wait_for(lambda: _central_log_has(db, "unknown profile"), what="the refusal in the central logs")
    finally:
        daemon.stop()
        collector.stop()
        pen.close_all()
    assert "cust-7" not in caplog.text   # customer references are never logged


def _central_log_has(db: Path, text: str) -> bool:
    with sqlite3.connect(db) as c:
        return any(text in (m or "") for (m,) in c.execute("SELECT message FROM logs"))


def test_profiles_refused_where_they_mean_nothing(tmp_path: Path) -> None:
    daemon, pen, config = start_daemon(write_config(tmp_path, extra=PROFILES))
    try:
        session = staff_login(daemon)
        with pytest.raises(UnknownProfile, match="unknown profile 'gold'"):
            daemon.submit("verify", "cust-7", profile="gold")
        with pytest.raises(UnknownProfile, match="not a profile name"):
            daemon.submit("verify", "cust-7", profile="x" * 5000)
        with pytest.raises(ValueError, match="a profile goes with a verification"):
            daemon.submit("enroll", "cust-7", staff=session, profile="high-value")
        # Only the central command names an operator without a login; a staff name is not claimed.
        with pytest.raises(ValueError, match="operator"):
            daemon.submit("verify", "cust-7", operator="alice")
        with pytest.raises(ValueError, match="operator"):
            daemon.submit("verify", "cust-7", operator="central:ops", staff=session)
        daemon.staff.logout(session)
        with pytest.raises(ValueError, match="log in again"):
            daemon.submit("verify", "cust-7", staff=session, profile="high-value")
        assert daemon.current is None and daemon._requests.empty()
    finally:
        daemon.stop()
        pen.close_all()


def test_staff_view_picks_a_profile_in_chromium(tmp_path: Path) -> None:
    """An operator logs in at /staff, picks high-value, starts the verification; the customer signs
    on the customer screen (SUSPICIOUS there); the staff view shows the last decision's profile and
    who asked. The staff API refuses unknown and hostile profile names, from the real page."""
    from playwright.sync_api import sync_playwright
    from test_ui_screen import CHROMIUM_ARGS, _chromium

    from kiosk.staff import OperatorStore

    genuine, _ = writers()["001"]
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, extra=PROFILES))
    TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-7", as_replayed(genuine[:5]))
    OperatorStore(config.staff.operators_file).set("alice", "246810")
    events = daemon.bus.subscribe()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(daemon.ui.start_url)
                page.wait_for_function("document.body.dataset.connected === 'yes'")

                def login() -> None:
                    page.goto(daemon.ui.url + "staff")
                    page.wait_for_selector("#staff-login:not([hidden])")
                    page.fill("#operator", "alice")
                    page.fill("#pin", "246810")
                    page.click("#btn-login")
                    page.wait_for_selector("#staff-actions:not([hidden])")

                login()
                options = page.eval_on_selector_all("#s-profile option", "os => os.map(o => [o.value, o.textContent])")
                assert options == [["standard", "Standard (default)"], ["high-value", "High value"]]
                assert page.eval_on_selector("#s-profile", "s => s.value") == "standard"
                assert page.inner_text("#last-decision") == "" and not page.is_visible("#btn-verify-paper")
                # Hostile names, posted from the page itself (its cookies, its origin): refused by name.
                for bad, status, why in (("gold", 400, "unknown profile 'gold'"),
                                         ("x'; DROP TABLE decisions;--", 400, "not a profile name"),
                                         ("p" * 300, 400, "not a profile name"), ("p" * 5000, 413, "too large"),
                                         (7, 400, "profile must be"), (["high-value"], 400, "profile must be")):
                    got = page.evaluate("""([p]) => fetch('/api/staff/verify', {method: 'POST',
                        headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({customer: 'cust-7', profile: p})})
                        .then(r => r.json().then(j => [r.status, j.error]))""", [bad])
                    assert got[0] == status and why in got[1], (str(bad)[:40], got)
                assert daemon.current is None and daemon.decisions == 0

                page.fill("#s-customer", "cust-7")
                page.select_option("#s-profile", "high-value")
                page.click("#btn-verify")
                page.wait_for_url(daemon.ui.url, timeout=10000)   # the customer's screen: the staff login ended
                sign_when_asked(daemon, pen, events, [genuine[6]], lambda: daemon.decisions > 0)
                page.wait_for_selector("#screen-decision:not([hidden])", timeout=10000)
                assert page.inner_text("#verdict") == "SUSPICIOUS"

                login()
                line = page.inner_text("#last-decision")
                assert line.startswith("Last decision: SUSPICIOUS under profile high-value, asked by alice"), line
                assert daemon.last_decision is not None and daemon.last_decision["profile"] == "high-value"
            finally:
                browser.close()
    finally:
        daemon.stop()
        pen.close_all()
