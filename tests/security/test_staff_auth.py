"""Attack 1: anyone at the kiosk becomes another customer.

The staff actions (enroll new / replace / add, delete) used to sit behind a ``<details>`` element
on the customer's own screen, and the screen API and ``Daemon.submit`` took them from anyone: an
attacker replaced a customer's references with his own signatures and was then APPROVED as that
customer. Now they need an operator's login on a separate staff view (``/staff``, ``kiosk.staff``):
scrypt-hashed PINs, lockout per operator and a global rate limit, an idle timeout, a confirmation
(the customer retyped) for replace and delete, and an audit record of every staff action, sealed
into the outbox before the action counts and stored by the central collector. Everything here runs
against the real daemon, its real HTTP server, real Chromium, mosquitto and the collector's SQLite.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import (
    as_replayed,
    link_table,
    sign_when_asked,
    start_daemon,
    wait_idle,
    write_config,
    writers,
)
from disk_helpers import fill_disk
from fixtures_link import LinkPki, wait_for

from kiosk.daemon import Daemon
from kiosk.errors import StaffLoginRequired
from kiosk.staff import (
    STAFF_STATE_FILE,
    LoginRefused,
    LoginUnavailable,
    OperatorStore,
    StaffAuth,
    StaffConfig,
    StaffSession,
)
from kiosk.templates import TemplateStore
from kiosk.ui.server import SCREEN_COOKIE, STAFF_COOKIE
from tools.central.collector import Collector

PINS = {"alice": "864201", "bob": "135799"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _staff_table(**kw: Any) -> str:
    return "\n[staff]\n" + "".join(f"{k} = {v!r}\n" for k, v in kw.items())


class Browser:
    """The kiosk's own browser as an HTTP client: it holds the screen cookie (the per-boot secret)
    and whatever cookies the server sets (the staff session)."""

    def __init__(self, daemon: Daemon) -> None:
        self.port = daemon.ui.port
        self.cookies = {SCREEN_COOKIE: daemon.ui.token}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Host": f"127.0.0.1:{self.port}", "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        data = None
        if method == "POST":
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        for header in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        conn.close()
        return r.status, json.loads(payload) if payload else {}

    def login(self, operator: str, pin: str | None = None) -> int:
        return self.call("POST", "/api/staff/login", {"operator": operator, "pin": pin or PINS[operator]})[0]


def _operators(daemon: Daemon, *names: str) -> None:
    ops = OperatorStore(daemon.config.staff.operators_file)
    for n in names:
        ops.set(n, PINS[n])


def _enroll_directly(config: Any, customer: str, refs: list) -> TemplateStore:
    store = TemplateStore(config.storage.templates_dir, config.storage.template_key)
    store.put(customer, as_replayed(refs))
    return store


def _audits(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    return [(r.operator, r.action, r.outcome) for r in caplog.records if getattr(r, "event", None) == "audit"]


@pytest.fixture
def kiosk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, Any, Any]]:
    extra = getattr(request, "param", "")
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, extra=extra))
    try:
        yield daemon, pen, config
    finally:
        daemon.stop()
        pen.close_all()


def test_the_customer_screen_cannot_replace_or_delete_anothers_signatures(kiosk: tuple[Daemon, Any, Any]) -> None:
    daemon, _, config = kiosk
    victim, _ = writers()["001"]
    store = _enroll_directly(config, "victim-1", victim[:5])
    before = [r.x.copy() for r in store.get("victim-1").references]
    _operators(daemon, "alice")
    screen = Browser(daemon)   # the attacker at the counter: he has the kiosk's browser, no login

    # The old screen API is gone, and the staff API wants a login.
    assert screen.call("POST", "/api/enroll", {"customer": "victim-1", "mode": "replace"})[0] == 404
    assert screen.call("POST", "/api/delete", {"customer": "victim-1"})[0] == 404
    for path, body in (("/api/staff/enroll", {"customer": "victim-1", "mode": "replace", "confirm": "victim-1"}),
                       ("/api/staff/enroll", {"customer": "victim-1", "mode": "add"}),
                       ("/api/staff/delete", {"customer": "victim-1", "confirm": "victim-1"})):
        status, answer = screen.call("POST", path, body)
        assert status == 401, (path, status, answer)
    # A made-up staff cookie is no login either.
    screen.cookies[STAFF_COOKIE] = "x" * 43
    assert screen.call("POST", "/api/staff/delete", {"customer": "victim-1", "confirm": "victim-1"})[0] == 401

    # In-process callers too: Daemon.submit wants a live session this kiosk issued.
    for kw in ({"mode": "replace", "confirm": "victim-1"}, {"mode": "add"}):
        with pytest.raises(StaffLoginRequired):
            daemon.submit("enroll", "victim-1", **kw)
    forged = StaffSession("alice", "abc", time.monotonic(), time.monotonic(), b"\0" * 32)
    with pytest.raises(StaffLoginRequired):
        daemon.submit("delete", "victim-1", staff=forged, confirm="victim-1")

    # The customer's page holds no staff controls at all: only a link to the staff view.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.ui.port, timeout=5)
    conn.request("GET", "/", headers={"Host": f"127.0.0.1:{daemon.ui.port}"})
    page = conn.getresponse().read().decode()
    conn.close()
    assert "btn-enroll" not in page and "btn-delete" not in page and "data-mode" not in page
    assert 'href="/staff"' in page

    wait_idle(daemon)
    after = store.get("victim-1")
    assert after is not None and len(after.references) == len(before)
    assert all((a.x == b).all() for a, b in zip(after.references, before, strict=True))


@pytest.mark.parametrize("kiosk", [_staff_table(max_failures=3, lockout_s=2.0, global_max_failures=5,
                                                global_window_s=60.0)], indirect=True)
def test_login_lockout_per_operator_global_rate_limit_and_no_pin_in_logs(
        kiosk: tuple[Daemon, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    daemon, _, config = kiosk
    _operators(daemon, "alice", "bob")
    # The PINs are stored as scrypt hashes with their own salts, in a file only the daemon reads.
    raw = config.staff.operators_file.read_text()
    assert PINS["alice"] not in raw and PINS["bob"] not in raw
    assert os.stat(config.staff.operators_file).st_mode & 0o777 == 0o600
    entries = json.loads(raw)["operators"]
    assert entries["alice"]["kdf"] == "scrypt" and entries["alice"]["n"] >= 2**14
    assert entries["alice"]["salt"] != entries["bob"]["salt"]

    b = Browser(daemon)
    assert b.login("alice", "000000") == 401
    assert b.login("alice", "111111") == 401
    assert b.login("alice", "222222") == 423            # the third failure in a row locks alice...
    saved = json.loads((config.state_dir / STAFF_STATE_FILE).read_text())   # and a restart keeps it
    assert saved["operators"]["alice"]["locked_s"] > 0
    assert b.login("alice") == 423                      # ...even for the right PIN
    assert b.login("alice") == 423                      # (audited once a lockout: see below)
    assert b.login("bob") == 200                        # the lock is alice's only
    assert b.call("POST", "/api/staff/logout")[0] == 200
    time.sleep(2.2)                                     # lockout_s
    assert b.login("alice") == 200
    assert b.call("POST", "/api/staff/logout")[0] == 200

    # Guessing across operators: the global limit (5 failures a minute) stops every login.
    assert b.login("mallory", "123456") == 401
    assert b.login("eve", "654321") == 401
    assert b.login("bob") == 429
    for _ in range(5):                                  # taps on "Log in" while limited: audited once
        assert b.login("bob") == 429
    assert STAFF_COOKIE not in b.cookies

    audits = _audits(caplog)
    assert audits == [("alice", "login", "bad_credentials"), ("alice", "login", "bad_credentials"),
                      ("alice", "login", "locked"), ("alice", "login", "locked_out"),
                      ("bob", "login", "ok"), ("bob", "logout", "logout"),
                      ("alice", "login", "ok"), ("alice", "logout", "logout"),
                      ("mallory", "login", "bad_credentials"), ("eve", "login", "bad_credentials"),
                      ("bob", "login", "rate_limited")]
    # The PINs (right and wrong) appear in no log record, message or field.
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.__dict__)
        for pin in (*PINS.values(), "000000", "111111", "222222", "123456", "654321"):
            assert pin not in text, rec


@pytest.mark.parametrize("kiosk", [_staff_table(idle_timeout_s=1.0)], indirect=True)
def test_idle_staff_session_ends_and_an_enrollment_logs_the_operator_out(
        kiosk: tuple[Daemon, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    daemon, _, config = kiosk
    genuine, _ = writers()["001"]
    store = _enroll_directly(config, "cust-1", genuine[:5])
    _operators(daemon, "alice")
    b = Browser(daemon)
    assert b.login("alice") == 200
    status, session = b.call("GET", "/api/staff/session")
    assert status == 200 and (session["operator"], session["idle_timeout_s"]) == ("alice", 1.0)
    assert session["profiles"] == [{"name": "standard", "label": "standard", "default": True}]
    time.sleep(1.4)   # the operator walked away from the counter
    assert b.call("GET", "/api/staff/session")[0] == 401
    assert b.call("POST", "/api/staff/delete", {"customer": "cust-1", "confirm": "cust-1"})[0] == 401
    assert store.get("cust-1") is not None
    assert ("alice", "logout", "idle_timeout") in _audits(caplog)

    # Starting an enrollment hands the screen to the customer: the operator's session ends, so
    # the customer cannot open the staff view on it.
    assert b.login("alice") == 200
    status, answer = b.call("POST", "/api/staff/enroll", {"customer": "cust-2", "mode": "new"})
    assert status == 202 and answer["logged_out"] is True
    assert STAFF_COOKIE not in b.cookies
    assert b.call("GET", "/api/staff/session")[0] == 401
    assert ("alice", "logout", "handed_to_customer") in _audits(caplog)
    b.call("POST", "/api/cancel")
    wait_idle(daemon)


def test_replace_and_delete_need_the_customer_typed_again(kiosk: tuple[Daemon, Any, Any]) -> None:
    daemon, _, config = kiosk
    genuine, _ = writers()["001"]
    store = _enroll_directly(config, "cust-3", genuine[:5])
    _operators(daemon, "alice")
    b = Browser(daemon)
    assert b.login("alice") == 200
    for body in ({"customer": "cust-3"}, {"customer": "cust-3", "confirm": "cust-33"}, {"customer": "cust-3", "confirm": ""}):
        status, answer = b.call("POST", "/api/staff/delete", body)
        assert status == 400 and "confirm" in answer["error"], (body, answer)
    status, answer = b.call("POST", "/api/staff/enroll", {"customer": "cust-3", "mode": "replace"})
    assert status == 400 and "confirm" in answer["error"]
    wait_idle(daemon)
    assert store.get("cust-3") is not None   # nothing happened
    status, _ = b.call("POST", "/api/staff/delete", {"customer": "cust-3", "confirm": "cust-3"})
    assert status == 202
    wait_for(lambda: store.get("cust-3") is None, 10)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
    return path


@pytest.mark.parametrize("kiosk", [_staff_table(idle_timeout_s=3.0)], indirect=True)
def test_staff_view_in_chromium_login_confirm_delete_and_idle_logout(kiosk: tuple[Daemon, Any, Any]) -> None:
    from playwright.sync_api import sync_playwright

    daemon, _, config = kiosk
    genuine, _ = writers()["001"]
    store = _enroll_directly(config, "cust-4", genuine[:5])
    _operators(daemon, "alice")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
            page.goto(daemon.ui.start_url)
            page.wait_for_function("document.body.dataset.connected === 'yes'")
            assert page.locator("#btn-enroll, #btn-delete, details").count() == 0   # nothing for staff here
            page.click("#link-staff")
            page.wait_for_selector("#staff-login:not([hidden])")
            page.fill("#operator", "alice")
            page.fill("#pin", "999999")
            page.click("#btn-login")
            page.wait_for_function("document.getElementById('staff-message').textContent.includes('wrong PIN')")
            assert page.is_visible("#staff-login") and not page.is_visible("#staff-actions")
            page.fill("#pin", PINS["alice"])
            page.click("#btn-login")
            page.wait_for_selector("#staff-actions:not([hidden])")
            assert page.inner_text("#who") == "alice"
            # No [paper] on this kiosk: no enrollment from paper offered.
            page.wait_for_function("document.getElementById('link-status').textContent.length > 0")
            assert not page.is_visible("#btn-paper-enroll")
            token = next(c["value"] for c in page.context.cookies() if c["name"] == STAFF_COOKIE)
            # The staff cookie is HttpOnly: the page's scripts cannot read or leak it.
            assert STAFF_COOKIE not in page.evaluate("document.cookie")
            assert any(c["name"] == STAFF_COOKIE and c["httpOnly"] and c["sameSite"] == "Strict"
                       for c in page.context.cookies())

            page.fill("#s-customer", "cust-4")
            page.click("#btn-delete")
            page.wait_for_selector("#staff-confirm:not([hidden])")
            page.fill("#confirm", "cust-5")   # a slip: the wrong customer
            page.click("#btn-confirm")
            page.wait_for_function("document.getElementById('staff-message').textContent.includes('confirm')")
            assert store.get("cust-4") is not None
            page.fill("#confirm", "cust-4")
            page.click("#btn-confirm")
            page.wait_for_function("document.getElementById('staff-message').textContent.includes('Delete requested')")
            wait_for(lambda: store.get("cust-4") is None, 10)

            # Left alone, the staff view logs out and returns to the customer's screen.
            page.wait_for_url(daemon.ui.url, timeout=10000)
            assert daemon.staff.session(token) is None
            assert not any(c["name"] == STAFF_COOKIE for c in page.context.cookies())
        finally:
            browser.close()


def test_staff_view_in_chromium_enrolls_a_customer_from_paper_at_the_camera(tmp_path: Path) -> None:
    """The operator logs in at /staff, types the customer and asks for an enrollment from paper:
    the screen goes to the customer's side, which shows each photo's prompt (the camera here: a
    folder of generated photos of one Dutch writer's scans, read by OpenCV) and the result."""
    import cv2
    import numpy as np
    from playwright.sync_api import sync_playwright

    from models.image import SignatureImage
    from tests.shared_data import shared_data
    from tools.photos import make_photo

    scans = sorted((shared_data("offline/sigcomp-dutch-kaggle") / "039").glob("*.png"))[:3]
    camera = tmp_path / "camera"
    camera.mkdir()
    rng = np.random.default_rng(39)
    for i, scan in enumerate(scans):
        photo = make_photo(SignatureImage(cv2.imread(str(scan), cv2.IMREAD_GRAYSCALE)), rng, difficulty="clean")
        cv2.imwrite(str(camera / f"frame_{i:04d}.png"), photo.frame)
    paper = (f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\nframes = 1\ncountdown_s = 2.0\n'
             'preview = false\n')
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, extra=paper))
    _operators(daemon, "alice")
    events = daemon.bus.subscribe()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
                page.goto(daemon.ui.start_url)
                page.wait_for_function("document.body.dataset.connected === 'yes'")
                page.click("#link-staff")
                page.wait_for_selector("#staff-login:not([hidden])")
                page.fill("#operator", "alice")
                page.fill("#pin", PINS["alice"])
                page.click("#btn-login")
                page.wait_for_selector("#btn-paper-enroll:visible")
                page.fill("#s-customer", "cust-paper-9")
                page.click("#btn-paper-enroll")
                # Handed to the customer's screen (the staff login ends): the camera's prompt, then the result.
                page.wait_for_url(daemon.ui.url, timeout=10000)
                page.wait_for_function("(document.getElementById('paper-title')?.textContent || '')"
                                       ".startsWith('Reference signature')", timeout=30000)
                page.wait_for_function("(document.getElementById('message-text')?.textContent || '')"
                                       ".includes('3 paper signatures saved')", timeout=60000)
                assert not any(c["name"] == STAFF_COOKIE for c in page.context.cookies())
            finally:
                browser.close()
        stored = TemplateStore(config.storage.templates_dir, config.storage.template_key).get("cust-paper-9")
        assert stored is not None and len(stored.paper) == 3 and stored.references == ()
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        titles = [e.get("title") for e in seen if e.get("screen") == "paper"]
        assert titles == [f"Reference signature {k} of 3: hold it under the camera" for k in (1, 2, 3)]
    finally:
        daemon.stop()
        pen.close_all()


def test_every_staff_action_reaches_the_central_audit_table(link_pki: LinkPki, mqtt_broker, tmp_path: Path) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "central.sqlite"), fresh_session=True))
    collector.start()
    genuine, _ = writers()["001"]
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, link=link_table(link_pki, mqtt_broker.port, tmp_path)))
    t0 = int(time.time() * 1000)
    try:
        assert collector.wait_ready()
        _operators(daemon, "alice")
        events = daemon.bus.subscribe()
        b = Browser(daemon)
        assert b.login("alice") == 200
        status, answer = b.call("POST", "/api/staff/enroll", {"customer": "cust-77", "mode": "new"})
        assert status == 202
        session = answer["session"]
        sign_when_asked(daemon, pen, events, list(genuine[:7]), lambda: daemon.bus.screen.get("screen") == "enrolled")
        wait_idle(daemon)
        assert b.login("alice") == 200
        assert b.call("POST", "/api/staff/delete", {"customer": "cust-77", "confirm": "cust-77"})[0] == 202
        wait_idle(daemon)
        assert b.call("POST", "/api/staff/logout")[0] == 200
        assert b.login("alice", "000000") == 401

        assert daemon.link.flush(30)
        want = [("login", None, None, "ok"), ("enroll", "new", "cust-77", "started"),
                ("logout", None, None, "handed_to_customer"), ("enroll", "new", "cust-77", "ok"),
                ("login", None, None, "ok"), ("delete", None, "cust-77", "started"), ("delete", None, "cust-77", "ok"),
                ("logout", None, None, "logout"), ("login", None, None, "bad_credentials")]
        wait_for(lambda: len(collector.store.query_audit(kiosk_id="kiosk-a")) >= len(want), 20)
        rows = collector.store.query_audit(kiosk_id="kiosk-a")
        assert [(r["action"], r["mode"], r["subject"], r["outcome"]) for r in rows] == want
        assert {r["operator"] for r in rows} == {"alice"} and {r["site"] for r in rows} == {"site1"}
        now = int(time.time() * 1000)
        assert all(t0 <= r["created_ms"] <= now for r in rows)
        # The enrollment's records name its kiosk session; the login session ties them together.
        assert rows[1]["session_id"] == rows[3]["session_id"] == session
        assert rows[0]["staff_session"] == rows[1]["staff_session"] == rows[2]["staff_session"]
        assert all("pin" not in r and PINS["alice"] not in json.dumps(r) for r in rows)
    finally:
        daemon.stop()
        collector.stop()
        pen.close_all()


def test_a_staff_action_that_cannot_be_audited_is_not_done(link_pki: LinkPki, mqtt_broker, tmp_path: Path,
                                                           tiny_fs: Path) -> None:
    genuine, _ = writers()["001"]
    link = link_table(link_pki, mqtt_broker.port, tmp_path)
    link["outbox_path"] = str(tiny_fs / "outbox.sqlite")
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, link=link))
    try:
        store = _enroll_directly(config, "cust-8", genuine[:5])
        _operators(daemon, "alice", "bob")
        b = Browser(daemon)
        assert b.login("alice") == 200
        filler = fill_disk(tiny_fs)   # the outbox's disk is full: no audit record can be stored
        status, answer = b.call("POST", "/api/staff/delete", {"customer": "cust-8", "confirm": "cust-8"})
        assert status == 503 and "cannot be recorded" in answer["error"]
        assert Browser(daemon).login("bob") == 503   # a login that cannot be audited is refused
        wait_idle(daemon)
        assert store.get("cust-8") is not None
        filler.unlink()
        assert b.call("POST", "/api/staff/delete", {"customer": "cust-8", "confirm": "cust-8"})[0] == 202
        wait_for(lambda: store.get("cust-8") is None, 10)
    finally:
        daemon.stop()
        pen.close_all()


def test_wait_for_staff_keeps_suspicious_off_the_customers_screen(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, ui=False)
    cfg.write_text(cfg.read_text().replace("show_decision_s = 30.0", 'show_decision_s = 30.0\ncustomer_decision = "wait_for_staff"'))
    genuine, forged = writers()["001"]
    daemon, pen, config = start_daemon(cfg)
    try:
        _enroll_directly(config, "cust-9", genuine[:5])
        events = daemon.bus.subscribe()
        shown: list[dict] = []
        req = daemon.submit("verify", "cust-9")
        sign_when_asked(daemon, pen, events, [forged[0]], req.done.is_set, seen=shown)
        assert req.wait(1)["decision"] == "SUSPICIOUS"   # decided as usual...
        wait_idle(daemon)
        while not events.empty():
            shown.append(events.get_nowait())
        screens = [e for e in shown if e.get("screen") == "decision"]
        # ...but the customer's screen only asks them to wait: no verdict, score or aspects (and,
        # this being a bench kiosk without a link, that nothing records the result).
        assert screens == [{"type": "screen", "screen": "decision", "state": "decision", "decision": "WAIT",
                            "show_s": 30.0, "recorded": False}]
        req = daemon.submit("verify", "cust-9")
        shown = []
        sign_when_asked(daemon, pen, events, [genuine[6]], req.done.is_set, seen=shown)
        assert req.wait(1)["decision"] == "APPROVED"
        wait_idle(daemon)
        while not events.empty():
            shown.append(events.get_nowait())
        assert [e["decision"] for e in shown if e.get("screen") == "decision"] == ["APPROVED"]
    finally:
        daemon.stop()
        pen.close_all()


def test_admin_operator_command_stores_only_a_private_scrypt_hash(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    exe = root / ".venv" / "bin" / "sigkiosk"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    ops = tmp_path / "state" / "operators.json"

    def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, "admin", "operator", *args, "--file", str(ops)], input=stdin,
                              capture_output=True, text=True, timeout=60, cwd=root)

    r = admin("add", "carol", "--stdin", stdin="4711\n")
    assert r.returncode == 2 and "6 to 256 characters" in r.stderr and not ops.exists()   # too short: nothing stored
    r = admin("add", "carol", "--stdin", stdin="correct horse battery\n")
    assert r.returncode == 0, r.stderr
    assert "correct horse" not in r.stdout + r.stderr
    assert ops.stat().st_mode & 0o777 == 0o600 and "correct horse" not in ops.read_text()
    store = OperatorStore(ops)
    assert store.verify("carol", "correct horse battery") and not store.verify("carol", "correct horse batterY")
    assert admin("list").stdout.split() == ["carol"]
    assert admin("add", "Carol!", "--stdin", stdin="whatever1\n").returncode == 2   # bad name
    assert admin("remove", "carol").returncode == 0 and store.names() == []
    # A file others may read is refused, not used.
    store.set("dave", "123456789")
    ops.chmod(0o644)
    r = admin("list")
    assert r.returncode == 2 and "chmod 600" in r.stderr


def test_the_failure_window_per_client_counts_each_clients_own_and_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A network server's logins (``client=``) count failures per client, in a bounded table;
    the kiosk's own (no client) keep one count for all, as the test above checks on the screen."""
    import kiosk.staff

    OperatorStore(tmp_path / "ops.json").set("alice", "123456")
    auth = StaffAuth(StaffConfig(operators_file=tmp_path / "ops.json", global_max_failures=2),
                     lambda *a, **k: None, exclusive=False)
    for _ in range(2):
        with pytest.raises(LoginRefused, match="wrong PIN"):
            auth.login("mallory", "000000", client="10.0.0.9")
    with pytest.raises(LoginRefused) as exc:
        auth.login("alice", "123456", client="10.0.0.9")     # right PIN, limited address
    assert exc.value.reason == "rate_limited" and "from this address" in str(exc.value)
    assert auth.login("alice", "123456", client="10.0.0.1")[1].operator == "alice"
    assert auth.login("alice", "123456")[1].operator == "alice"   # the kiosk's count is its own
    monkeypatch.setattr(kiosk.staff, "MAX_TRACKED_CLIENTS", 3)
    for i in range(6):
        with pytest.raises(LoginRefused):
            auth.login(f"guess{i}", "000000", client=f"10.1.0.{i}")
    assert len(auth._recent) == 3   # the oldest clients' windows are dropped, not kept without bound


def test_a_pin_with_a_lone_surrogate_is_a_wrong_pin_that_counts(tmp_path: Path) -> None:
    """Found by a review: a PIN holding a lone surrogate (JSON's "\\ud800") raised while being
    hashed: for a real operator "operators file damaged" (503), for an unknown name no answer at
    all, and neither counted towards the lockout nor audited - a free oracle of operator names."""
    OperatorStore(tmp_path / "ops.json").set("alice", "123456")
    audit: list[tuple[str, ...]] = []
    auth = StaffAuth(StaffConfig(operators_file=tmp_path / "ops.json", max_failures=3, global_max_failures=50),
                     lambda *a, **k: audit.append(a), exclusive=False)
    for name in ("alice", "nobody"):
        for _ in range(3):
            with pytest.raises(LoginRefused) as exc:
                auth.login(name, "\ud800")
            assert exc.value.reason in ("bad_credentials", "locked"), exc.value
    with pytest.raises(LoginRefused) as exc:
        auth.login("alice", "123456")                      # locked by the three tries, as any wrong PIN
    assert exc.value.reason == "locked"
    assert audit, "the failed logins were audited"


def test_a_calibration_revert_that_cannot_be_audited_is_not_done(link_pki: LinkPki, mqtt_broker, tmp_path: Path,
                                                                 tiny_fs: Path) -> None:
    """Reverting or resuming the site threshold is a staff action like the others: recorded first,
    and refused - nothing changed - when its audit record cannot be stored."""
    from test_staff_calibration import SHIPPED, _calibrated_kiosk, _call

    from tools.synth import make_population

    population = make_population(n_writers=3, n_genuine=5, n_forgeries=1, seed=41)
    link = link_table(link_pki, mqtt_broker.port, tmp_path)
    link["outbox_path"] = str(tiny_fs / "outbox.sqlite")
    daemon, pen, _, moved = _calibrated_kiosk(tmp_path, population, link)
    assert daemon.ui is not None
    cookies = {SCREEN_COOKIE: daemon.ui.token}
    revert = {"action": "revert", "confirm": "revert"}
    try:
        assert _call(daemon, "/api/staff/login", {"operator": "alice", "pin": "864201"}, cookies)[0] == 200
        filler = fill_disk(tiny_fs)   # the outbox's disk is full: no audit record can be stored
        status, answer = _call(daemon, "/api/staff/calibration", revert, cookies)
        assert status == 503 and "cannot be recorded" in answer["error"], (status, answer)
        state = daemon.status()["calibration"]
        assert daemon.verifier.policy.threshold == moved and not state["held"], state  # type: ignore[index]
        with pytest.raises(Exception, match="cannot be recorded"):   # the central command's path
            daemon.revert_calibration(None, operator="central:ops")
        assert daemon.verifier.policy.threshold == moved
        filler.unlink()
        status, answer = _call(daemon, "/api/staff/calibration", revert, cookies)
        assert status == 200 and answer["calibration"]["held"] and daemon.verifier.policy.threshold == SHIPPED
    finally:
        daemon.stop()
        pen.close_all()


def test_pulling_the_plug_does_not_reset_the_login_failures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A PIN guesser at the counter could power-cycle the kiosk: the counts lived in memory, so
    every restart gave another max_failures tries per operator and a fresh global window (the
    README's limits until 2026-11-30). They are saved in the state dir and aged by the wall clock."""
    OperatorStore(tmp_path / "ops.json").set("alice", "123456")
    cfg = StaffConfig(operators_file=tmp_path / "ops.json", max_failures=3, lockout_s=300.0,
                      global_max_failures=6, global_window_s=60.0)
    state = tmp_path / "state" / STAFF_STATE_FILE
    state.parent.mkdir()
    wall = [1_000_000.0]

    def restart() -> StaffAuth:
        return StaffAuth(cfg, lambda *a, **k: None, state_file=state, wall=lambda: wall[0])

    def refused(auth: StaffAuth, name: str, pin: str) -> str:
        with pytest.raises(LoginRefused) as exc:
            auth.login(name, pin)
        return exc.value.reason

    auth = restart()
    assert [refused(auth, "alice", "000000") for _ in range(2)] == ["bad_credentials"] * 2
    auth = restart()                                   # the plug pulled after two wrong PINs
    assert refused(auth, "alice", "000000") == "locked"   # the third still locks
    assert os.stat(state).st_mode & 0o777 == 0o600
    auth = restart()
    assert refused(auth, "alice", "123456") == "locked"   # and the lock outlives a restart
    wall[0] += 301.0                                    # its time is over, as the wall clock says
    auth = restart()
    assert auth.login("alice", "123456")[1].operator == "alice"
    # The screen's window of failures across operators survives too.
    wall[0] += 1000.0
    auth = restart()
    assert [refused(auth, f"guess{i}", "000000") for i in range(4)] == ["bad_credentials"] * 4
    auth = restart()
    assert [refused(auth, f"more{i}", "000000") for i in range(2)] == ["bad_credentials"] * 2
    assert refused(restart(), "alice", "123456") == "rate_limited"
    wall[0] += 61.0
    assert restart().login("alice", "123456")[1].operator == "alice"
    # A damaged file is said at ERROR, and counting starts again; it never stops the kiosk.
    state.write_text("{ half written")
    assert restart().login("alice", "123456")[1].operator == "alice"
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_failures_that_cannot_be_saved_stop_logins_and_a_damaged_file_never_stops_the_kiosk(
        tmp_path: Path, tiny_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a review: on a full disk the failures stayed in memory, and a pulled plug gave 12
    PIN checks where 3 lock; a state file holding Infinity or deep nesting stopped the daemon."""
    from disk_helpers import fill_disk

    OperatorStore(tmp_path / "ops.json").set("alice", "123456")
    cfg = StaffConfig(operators_file=tmp_path / "ops.json", max_failures=3)
    state = tiny_fs / STAFF_STATE_FILE
    auth = StaffAuth(cfg, lambda *a, **k: None, state_file=state)
    filler = fill_disk(tiny_fs)
    with pytest.raises(LoginRefused):
        auth.login("alice", "000000")                  # refused, and its failure not saved...
    with pytest.raises(LoginUnavailable):
        auth.login("alice", "123456")                  # ...so no PIN is checked until it is
    filler.unlink()
    assert auth.login("alice", "123456")[1].operator == "alice"
    for damaged in ('{"saved_at":1,"operators":{"alice":{"count":Infinity,"locked_s":1e999}},"screen_failure_ages_s":[]}',
                    '{"saved_at":Infinity,"operators":{},"screen_failure_ages_s":[]}', "[" * 100_000,
                    '{"saved_at":1,"operators":{"alice":{"count":' + "9" * 400 + ',"locked_s":1}},"screen_failure_ages_s":[1e999]}',
                    " " * ((1 << 20) + 1)):
        other = tmp_path / STAFF_STATE_FILE            # (the tiny file system holds 1 MiB)
        other.write_text(damaged)
        assert StaffAuth(cfg, lambda *a, **k: None, state_file=other).login("alice", "123456")[1].operator == "alice"
    assert sum("unreadable" in r.getMessage() for r in caplog.records) >= 4
