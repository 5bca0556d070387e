"""The site threshold in the staff view (``/staff``, real headless Chromium) and at the centre.

An operator sees the calibrated threshold and its facts, reverts it (confirmed) and resumes it;
each step decides the kiosk's next verification, reaches the collector's ``audit`` table (real
mosquitto, collector and SQLite) and ``sigkiosk central query --audit``; the status report
carries the site threshold to the central kiosks page. The staff API refuses a revert without a
login, without its confirmation, with an unknown action, and on a kiosk without calibration.
The fleet: ``sigkiosk admin calibration revert|resume --kiosk K`` sends a signed command through
mosquitto, audited as ``central:ADMIN``; replayed, addressed to another kiosk, signed with
another key, with an unknown action or moved to the other command topic, it is refused.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from daemon_helpers import as_replayed, central_sign_key, link_table, start_daemon, write_config
from fixtures_link import LinkPki, mqtt_client, wait_for

from kiosk.commands import (
    DOMAIN,
    CalibrationCommand,
    CommandError,
    CommandVerifier,
    calibration_topic,
    make_calibration_command,
    make_verify_command,
    verify_topic,
)
from kiosk.daemon import Daemon
from kiosk.staff import OperatorStore
from kiosk.templates import TemplateStore
from kiosk.topics import KioskTopics
from kiosk.ui.server import SCREEN_COOKIE, STAFF_COOKIE
from models.classic import ClassicConfig
from tools.central.collector import Collector
from tools.central.web_pages import kiosks_page
from tools.commands import central_cmd

SHIPPED = ClassicConfig().threshold
# The calibration's defaults are on the classic distance's scale (the shipped match score needs its own).
CLASSIC = '\n[verifier]\nkind = "classic"\n'
CALIBRATION = ("\n[calibration]\nenabled = true\nmin_customers = 3\nstrength = 0.0\ntarget_frr = 0.2\n"
               "max_down = 0.05\nmax_up = 0.04\n")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=3, n_genuine=5, n_forgeries=1, seed=41)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _calibrated_kiosk(root: Path, population: Any, link: dict[str, Any] | None, *,
                      commands_pub: Path | None = None, ui: bool = True) -> tuple[Daemon, Any, Any, float]:
    """A kiosk whose three customers' references are built: its threshold has moved."""
    from kiosk.config import load_config

    config_path = write_config(root, ui=ui, link=link, extra=CLASSIC + CALIBRATION, commands_pub=commands_pub)
    config = load_config(config_path)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = TemplateStore(config.storage.templates_dir, config.storage.template_key, create_key=True)
    for w in sorted(population):
        store.put(f"cust-{w}", as_replayed(population[w][0][:5]))
    daemon, pen, config = start_daemon(config_path)
    assert daemon.pen_references is not None
    for w in sorted(population):
        daemon.pen_references.lookup(f"cust-{w}")
    moved = daemon.status()["calibration"]["threshold"]   # type: ignore[index]
    assert moved != SHIPPED and SHIPPED - 0.05 <= moved <= SHIPPED + 0.04
    OperatorStore(config.staff.operators_file).set("alice", "864201")
    return daemon, pen, config, moved


def _until(page: Any, expression: str, timeout: float = 10.0) -> None:
    wait_for(lambda: page.evaluate(f"() => Boolean({expression})"), timeout, what=expression)


def _audit_rows(collector: Collector) -> list[tuple[str, str, str]]:
    return [(r["operator"], r["mode"], r["outcome"]) for r in collector.store.query_audit(kiosk_id="kiosk-a")
            if r["action"] == "calibration"]


def test_staff_revert_and_resume_in_the_browser_reach_the_centre(  # type: ignore[no-untyped-def]
        population, browser: Any, link_pki: LinkPki, mqtt_broker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "central.sqlite"
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(db), fresh_session=True))
    collector.start()
    link = link_table(link_pki, mqtt_broker.port, tmp_path) | {"health_interval_s": 0.5}
    daemon, pen, config, moved = _calibrated_kiosk(tmp_path, population, link)
    assert daemon.ui is not None
    page = browser.new_page(viewport={"width": 800, "height": 480})
    try:
        assert collector.wait_ready()
        page.goto(daemon.ui.start_url)
        page.goto(daemon.ui.url + "staff")
        page.fill("#operator", "alice")
        page.fill("#pin", "864201")
        page.click("#btn-login")
        page.wait_for_selector("#btn-calibration:visible")
        page.click("#btn-calibration")
        page.wait_for_selector("#staff-calibration:not([hidden])")
        _until(page, "document.body.dataset.calibration === 'moving'")
        reason = daemon.status()["calibration"]["reason"]   # type: ignore[index]
        assert page.inner_text("#cal-state") == {"calibrated": "Moving with this kiosk's customers",
                                                 "clamped": "Moved as far as its bounds allow"}[reason]
        assert page.inner_text("#cal-threshold") == f"{moved:.4f}"
        assert page.inner_text("#cal-shipped") == f"{SHIPPED:.4f}" \
            and page.inner_text("#cal-bounds") == f"{SHIPPED - 0.05:.4f} to {SHIPPED + 0.04:.4f} (distance)"
        assert page.inner_text("#cal-target") == "20 % of genuine refused"
        assert page.inner_text("#cal-customers") == "3 customers (moves from 3)"
        assert page.inner_text("#cal-moved") not in ("", "never")
        assert not page.is_visible("#btn-cal-resume")

        # Revert: asked first; Back leaves the threshold where it is.
        page.click("#btn-cal-revert")
        page.wait_for_selector("#staff-cal-confirm:not([hidden])")
        page.click("#btn-cal-confirm-back")
        page.wait_for_selector("#staff-calibration:not([hidden])")
        assert daemon.verifier.policy.threshold == moved
        page.click("#btn-cal-revert")
        page.click("#btn-cal-confirm")
        _until(page, "document.body.dataset.calibration === 'held'")
        assert page.inner_text("#cal-state") == "Held at the shipped threshold by staff"
        assert page.inner_text("#cal-threshold") == f"{SHIPPED:.4f}"
        assert daemon.verifier.policy.threshold == SHIPPED and daemon.status()["calibration"]["held"]  # type: ignore[index]
        page.screenshot(path=str(tmp_path / "staff-calibration-held.png"))

        # The status report carries the held threshold to the centre.
        wait_for(lambda: collector.store.status().get("kiosk-a", {}).get("site_threshold") == SHIPPED, 20,
                 what="status with the shipped threshold")

        page.click("#btn-cal-resume")
        page.click("#btn-cal-confirm")
        _until(page, "document.body.dataset.calibration === 'moving'")
        assert daemon.verifier.policy.threshold == moved and page.inner_text("#cal-threshold") == f"{moved:.4f}"
        wait_for(lambda: collector.store.status().get("kiosk-a", {}).get("site_threshold") == moved, 20,
                 what="status with the site threshold")
        page.click("#btn-cal-back")
        page.click("#btn-logout")

        assert daemon.link is not None and daemon.link.flush(30)
        want = [("kiosk", "auto", f"{SHIPPED:.4f}->{moved:.4f} n=3"),
                ("alice", "revert", f"{moved:.4f}->{SHIPPED:.4f} n=3 held"),
                ("alice", "resume", f"{SHIPPED:.4f}->{moved:.4f} n=3")]
        wait_for(lambda: len(_audit_rows(collector)) >= 3, 20, what="three calibration audit rows")
        assert _audit_rows(collector) == want

        # ...and the fleet's tools show them: the audit query and the kiosks page.
        parser = argparse.ArgumentParser()
        central_cmd.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["central", "query", "--db", str(db), "--audit", "--kiosk", "kiosk-a",
                                  "--operator", "alice", "--json"])
        assert args.func(args) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["mode"], r["outcome"]) for r in lines if r["action"] == "calibration"] == [w[1:] for w in want[1:]]
        assert {"login", "calibration"} <= {r["action"] for r in lines}
        html = kiosks_page({}, collector.store.status(), user="auditor", csrf="x").decode()
        assert f"<td>{moved:.4f}</td>" in html
    finally:
        page.close()
        daemon.stop()
        pen.close_all()
        collector.stop()


def _call(daemon: Daemon, path: str, body: dict[str, Any] | None, cookies: dict[str, str]) -> tuple[int, dict[str, Any]]:
    assert daemon.ui is not None
    conn = http.client.HTTPConnection("127.0.0.1", daemon.ui.port, timeout=10)
    headers = {"Host": f"127.0.0.1:{daemon.ui.port}", "Content-Type": "application/json",
               "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    conn.request("POST", path, body=json.dumps(body or {}).encode(), headers=headers)
    r = conn.getresponse()
    payload = r.read()
    for header in r.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if value and "Max-Age=0" not in header:
            cookies[name] = value
    conn.close()
    return r.status, json.loads(payload) if payload else {}


def test_staff_api_refuses_calibration_changes_it_should_not_make(population, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, pen, config, moved = _calibrated_kiosk(tmp_path, population, None)
    assert daemon.ui is not None
    screen = {SCREEN_COOKIE: daemon.ui.token}
    revert = {"action": "revert", "confirm": "revert"}
    try:
        # The customer at the counter holds the screen, not a login; a made-up staff cookie is none either.
        assert _call(daemon, "/api/staff/calibration", revert, dict(screen))[0] == 401
        assert _call(daemon, "/api/staff/calibration", revert, screen | {STAFF_COOKIE: "x" * 43})[0] == 401
        # Not even the kiosk's screen: another local process.
        assert _call(daemon, "/api/staff/calibration", revert, {})[0] == 403
        cookies = dict(screen)
        assert _call(daemon, "/api/staff/login", {"operator": "alice", "pin": "864201"}, cookies)[0] == 200
        for body in ({"action": "revert"}, {"action": "revert", "confirm": "resume"},
                     {"action": "revert", "confirm": True}, {"action": "reset", "confirm": "reset"},
                     {"action": ["revert"], "confirm": ["revert"]}, {}):
            status, answer = _call(daemon, "/api/staff/calibration", body, cookies)
            assert status == 400 and "error" in answer, (body, status, answer)
        assert daemon.verifier.policy.threshold == moved and not daemon.status()["calibration"]["held"]  # type: ignore[index]
        status, answer = _call(daemon, "/api/staff/calibration", revert, cookies)
        assert status == 200 and answer["calibration"]["held"] and answer["calibration"]["threshold"] == SHIPPED
        # Reverting again is harmless: still held, and recorded again.
        assert _call(daemon, "/api/staff/calibration", revert, cookies)[0] == 200
        assert daemon.verifier.policy.threshold == SHIPPED
    finally:
        daemon.stop()
        pen.close_all()

    # A kiosk without [calibration]: the page has no button, and the API says why it will not.
    root = tmp_path / "off"
    root.mkdir()
    daemon, pen, config = start_daemon(write_config(root, ui=True))
    assert daemon.ui is not None
    try:
        OperatorStore(config.staff.operators_file).set("alice", "864201")
        cookies = {SCREEN_COOKIE: daemon.ui.token}
        assert _call(daemon, "/api/staff/login", {"operator": "alice", "pin": "864201"}, cookies)[0] == 200
        status, answer = _call(daemon, "/api/staff/calibration", revert, cookies)
        assert status == 409 and "not enabled" in answer["error"]
    finally:
        daemon.stop()
        pen.close_all()


def _signed(key: Ed25519PrivateKey, topic: str, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    sig = key.sign(DOMAIN + topic.encode() + b"\0" + raw)
    return json.dumps({"body": base64.b64encode(raw).decode(), "sig": base64.b64encode(sig).decode()}).encode()


def test_calibration_commands_are_checked_like_every_command(tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    topics = KioskTopics("sig", "site1", "kiosk-a")
    topic, vtopic = calibration_topic(topics), verify_topic(topics)
    v = CommandVerifier(key.public_key(), "kiosk-a", topics, tmp_path / "seen.json", max_age_s=60)
    now = int(time.time() * 1000)
    cmd = v.check(topic, make_calibration_command(key, topic, "kiosk-a", "revert", "c1", admin="ops"))
    assert cmd == CalibrationCommand("c1", "revert", cmd.issued_ms, cmd.expires_ms, "ops")
    base = {"v": 1, "type": "calibration", "kiosk": "kiosk-a", "issued_ms": now, "expires_ms": now + 60_000}
    cases = {
        "replay": make_calibration_command(key, topic, "kiosk-a", "resume", "c1"),
        "bad_signature": make_calibration_command(other, topic, "kiosk-a", "revert", "c2"),
        "wrong_kiosk": make_calibration_command(key, topic, "kiosk-b", "revert", "c3"),
        "expired": make_calibration_command(key, topic, "kiosk-a", "revert", "c4", ttl_s=1, now_ms=now - 5000),
        "stale": make_calibration_command(key, topic, "kiosk-a", "revert", "c5", ttl_s=3600, now_ms=now - 120_000),
        "unknown_action": make_calibration_command(key, topic, "kiosk-a", "reset", "c6"),
        # Signed for the other kiosk's topic: the signature covers the topic.
        "bad_signature ": make_calibration_command(key, calibration_topic(KioskTopics("sig", "site1", "kiosk-b")),
                                                   "kiosk-a", "revert", "c7"),
        # A verification's body on the calibration topic, and the other way round.
        "malformed": make_verify_command(key, topic, "kiosk-a", "c-1", "c8"),
        "unknown_action ": _signed(key, topic, {**base, "action": ["revert"], "request_id": "c9"}),
        "malformed  ": _signed(key, topic, {**base, "action": "revert", "request_id": "c10", "admin": "ops; rm -rf"}),
        "malformed   ": _signed(key, topic, {**base, "v": 2, "action": "revert", "request_id": "c11"}),
    }
    for reason, payload in cases.items():
        with pytest.raises(CommandError) as exc:
            v.check(topic, payload)
        assert exc.value.reason == reason.strip(), reason
    with pytest.raises(CommandError) as exc:
        v.check(vtopic, make_calibration_command(key, vtopic, "kiosk-a", "revert", "c12"))
    assert exc.value.reason == "malformed"
    with pytest.raises(CommandError) as exc:
        v.check(topic + "x", make_calibration_command(key, topic + "x", "kiosk-a", "revert", "c13"))
    assert exc.value.reason == "bad_topic"


def test_fleet_reverts_and_resumes_a_kiosk_with_a_signed_command(  # type: ignore[no-untyped-def]
        population, link_pki: LinkPki, mqtt_broker, tmp_path: Path, caplog, capsys) -> None:
    from tools.commands import admin_cmd

    caplog.set_level(logging.INFO)
    sign_key, sign_pub = central_sign_key(tmp_path)
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "central.sqlite"),
                                                    fresh_session=True))
    collector.start()
    daemon, pen, config, moved = _calibrated_kiosk(tmp_path, population, link_table(link_pki, mqtt_broker.port, tmp_path),
                                                   commands_pub=sign_pub, ui=False)
    crt, key = link_pki.cert("admin.ops")
    cli = ["--kiosk", "kiosk-a", "--sign-key", str(tmp_path / "central" / "central-sign.key"),
           "--broker-host", "localhost", "--broker-port", str(mqtt_broker.port), "--ca", str(link_pki.ca_dir / "ca.crt"),
           "--cert", str(crt), "--key", str(key), "--registry", str(link_pki.registry_file)]

    def refused(reason: str) -> int:
        return sum(getattr(r, "event", None) == "command_refused" and getattr(r, "reason", "") == reason
                   for r in caplog.records)

    try:
        assert collector.wait_ready()
        assert daemon.link is not None and daemon.link.commands_ready.wait(10)
        assert admin_cmd.main(["calibration", "revert", *cli, "--request-id", "cal-1"]) == 0
        assert "revert to the shipped threshold (held) requested" in capsys.readouterr().out
        wait_for(lambda: daemon.verifier.policy.threshold == SHIPPED, what="reverted by the central command")
        assert daemon.status()["calibration"]["held"]   # type: ignore[index]
        assert admin_cmd.main(["calibration", "resume", *cli, "--request-id", "cal-2"]) == 0
        wait_for(lambda: daemon.verifier.policy.threshold == moved, what="resumed by the central command")

        # The same request id again: a replay, refused; the threshold stays where it is.
        assert admin_cmd.main(["calibration", "revert", *cli, "--request-id", "cal-1"]) == 0
        wait_for(lambda: refused("replay") >= 1, what="the replay refused")
        # For another kiosk (signed for kiosk-b's id, sent on kiosk-a's topic), and an unknown action.
        topic = calibration_topic(daemon.link.topics)
        admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
        try:
            admin.publish(topic, make_calibration_command(sign_key, topic, "kiosk-b", "revert", "cal-3"), qos=1)
            admin.publish(topic, make_calibration_command(sign_key, topic, "kiosk-a", "reset", "cal-4"), qos=1)
            wait_for(lambda: refused("wrong_kiosk") >= 1 and refused("unknown_action") >= 1,
                     what="wrong kiosk and unknown action refused")
        finally:
            admin.disconnect()
            admin.loop_stop()
        # The CLI does not send an action it does not know.
        with pytest.raises(SystemExit):
            admin_cmd.main(["calibration", "reset", *cli])
        assert daemon.verifier.policy.threshold == moved and not daemon.status()["calibration"]["held"]  # type: ignore[index]

        assert daemon.link.flush(30)
        want = [("kiosk", "auto", f"{SHIPPED:.4f}->{moved:.4f} n=3"),
                ("central:ops", "revert", f"{moved:.4f}->{SHIPPED:.4f} n=3 held"),
                ("central:ops", "resume", f"{SHIPPED:.4f}->{moved:.4f} n=3")]
        wait_for(lambda: len(_audit_rows(collector)) >= 3, 20, what="three calibration audit rows")
        assert _audit_rows(collector) == want
    finally:
        daemon.stop()
        pen.close_all()
        collector.stop()
