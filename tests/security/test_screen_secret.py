"""Attack 5: live ink leaks to any local process.

``GET /events`` used to stream every point of every signature (enrollments included) to whoever
connected to the screen's port, and the API answered anyone on the machine. Now both answer only
the kiosk's own browser: the daemon keeps a per-boot secret in a file only the browser's user can
read (``[ui] token_file``), the browser trades it once for an HttpOnly cookie, and everything
else gets 403. Tested from another process while a customer signs, and through the kiosk
browser's real start-up path (the unit's start script, a file:// start page, Chromium).
"""

from __future__ import annotations

import grp
import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_helpers import as_replayed, sign_when_asked, start_daemon, wait_idle, write_config, writers

from kiosk.templates import TemplateStore
from kiosk.ui.server import SCREEN_COOKIE

UNITS = Path(__file__).resolve().parents[2] / "systemd"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Another local process: it tries the event stream and the API over and over for ``seconds``,
# keeps every byte it is sent, and prints what it got as JSON.
SNOOPER = r"""
import json, socket, sys, time
port, seconds, cookie = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
got, statuses = b"", []
requests = [("GET", "/events", b""), ("GET", "/api/status", b""), ("GET", "/api/staff/session", b""),
            ("POST", "/api/verify", b'{"customer": "cust-1"}'), ("POST", "/api/cancel", b"{}"),
            ("POST", "/api/staff/login", b'{"operator": "alice", "pin": "000000"}')]
deadline = time.monotonic() + seconds
i = 0
while time.monotonic() < deadline:
    method, path, body = requests[i % len(requests)]
    i += 1
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if cookie:
        head += f"Cookie: sigkiosk_screen={cookie}\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    s.settimeout(0.5)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    s.close()
    got += data
    statuses.append(int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0)
print(json.dumps({"statuses": statuses, "bytes": got.decode("latin-1")}))
"""


def _stream(port: int, cookie: str, into: list[dict], stop: threading.Event) -> None:
    """The kiosk's browser: the event stream with the screen cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/events", headers={"Host": f"127.0.0.1:{port}", "Cookie": f"{SCREEN_COOKIE}={cookie}"})
    r = conn.getresponse()
    assert r.status == 200
    while not stop.is_set():
        line = r.fp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            into.append(json.loads(line[6:]))
    conn.close()


def test_another_process_gets_no_ink_and_no_api_while_a_customer_signs(tmp_path: Path) -> None:
    genuine, _ = writers()["001"]
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True))
    TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-1", as_replayed(genuine[:5]))
    browser_events: list[dict] = []
    stop = threading.Event()
    t = threading.Thread(target=_stream, args=(daemon.ui.port, daemon.ui.token, browser_events, stop), daemon=True)
    t.start()
    try:
        # Two snoopers in other processes: one with no secret, one with a guessed one.
        snoopers = [subprocess.Popen([sys.executable, "-c", SNOOPER, str(daemon.ui.port), "8", cookie],
                                     stdout=subprocess.PIPE, text=True)
                    for cookie in ("", "A" * 43)]
        time.sleep(0.5)
        events = daemon.bus.subscribe()
        req = daemon.submit("verify", "cust-1")
        sign_when_asked(daemon, pen, events, [genuine[5]], req.done.is_set)
        assert req.wait(1)["decision"] == "APPROVED"
        for p in snoopers:
            out, _ = p.communicate(timeout=30)
            seen = json.loads(out)
            assert len(seen["statuses"]) >= 6 and set(seen["statuses"]) == {403}, seen["statuses"]
            assert '"ink"' not in seen["bytes"] and "points" not in seen["bytes"] and "cust-1" not in seen["bytes"]
        # The kiosk's own browser was streamed the ink meanwhile: there was ink to leak.
        wait_idle(daemon)
        assert any(e.get("type") == "ink" and e["points"] for e in browser_events)
    finally:
        stop.set()
        daemon.stop()
        pen.close_all()


def test_the_screen_secret_is_private_kept_within_the_boot_and_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "run" / "ui-token"
    group = grp.getgrgid(os.getgid()).gr_name   # a group this process may give the file to
    cfg = write_config(tmp_path, ui=True)
    cfg.write_text(cfg.read_text().replace("show_decision_s = 30.0",
                                           f'show_decision_s = 30.0\ntoken_file = "{token_file}"\ntoken_group = "{group}"'))
    daemon, pen, _ = start_daemon(cfg)
    try:
        token = daemon.ui.token
        st = token_file.stat()
        assert token_file.read_text().strip() == token and len(token) >= 40
        assert st.st_mode & 0o777 == 0o640 and st.st_gid == os.getgid()   # owner and the browser's group only
        # The browser's first request: the secret becomes an HttpOnly SameSite=Strict cookie and
        # leaves the address; a wrong secret gets nothing.
        conn = http.client.HTTPConnection("127.0.0.1", daemon.ui.port, timeout=5)
        conn.request("GET", f"/?k={token}", headers={"Host": f"127.0.0.1:{daemon.ui.port}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 303 and r.getheader("Location") == "/"
        cookie = r.getheader("Set-Cookie")
        assert cookie.startswith(f"{SCREEN_COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.request("GET", "/?k=" + "B" * 43, headers={"Host": f"127.0.0.1:{daemon.ui.port}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 403 and r.getheader("Set-Cookie") is None
        conn.close()
        assert not any(token in (rec.getMessage() + repr(rec.__dict__)) for rec in caplog.records), \
            "the screen secret reached the log"
    finally:
        daemon.stop()
        pen.close_all()
    # A restart within the boot keeps it (the browser's cookie stays valid)...
    daemon, pen, _ = start_daemon(cfg)
    try:
        assert daemon.ui.token == token
    finally:
        daemon.stop()
        pen.close_all()
    # ...unless the file could have been read by anyone: then it is replaced.
    token_file.chmod(0o644)
    daemon, pen, _ = start_daemon(cfg)
    try:
        assert daemon.ui.token != token and token_file.stat().st_mode & 0o777 == 0o640
    finally:
        daemon.stop()
        pen.close_all()


def test_kiosk_browser_unit_hands_the_secret_over_off_the_command_line(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    unit = (UNITS / "sigkiosk-browser.service").read_text()
    exec_lines = [line for line in unit.splitlines() if line.startswith(("ExecStart=", "ExecStartPre="))]
    assert exec_lines and not any("ui-token" in line or "?k=" in line for line in exec_lines)
    assert any(line.startswith("ExecStart=") and "file://%t/sigkiosk-screen.html" in line for line in exec_lines)

    token_file = tmp_path / "run" / "ui-token"
    cfg = write_config(tmp_path, ui=True)
    cfg.write_text(cfg.read_text().replace("show_decision_s = 30.0", f'show_decision_s = 30.0\ntoken_file = "{token_file}"'))
    daemon, pen, _ = start_daemon(cfg)
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    try:
        # The unit's ExecStartPre: the start page in the user's private runtime directory.
        subprocess.run([str(UNITS / "sigkiosk-screen-start"), str(runtime), str(token_file), daemon.ui.url],
                       check=True, timeout=30)
        start = runtime / "sigkiosk-screen.html"
        assert start.stat().st_mode & 0o777 == 0o600 and daemon.ui.token in start.read_text()
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(bypass_csp=True)
                page.goto(start.as_uri())
                page.wait_for_url(daemon.ui.url, timeout=15000)   # the secret left the address
                page.wait_for_function("document.body.dataset.connected === 'yes'", timeout=15000)
                # A page without the cookie (another browser profile, another process) is refused.
                other = browser.new_context(bypass_csp=True).new_page()
                other.goto(daemon.ui.url)
                other.wait_for_function("document.body.dataset.connected === 'no'", timeout=15000)
                assert "not connected" in other.inner_text("#idle-message")
            finally:
                browser.close()
    finally:
        daemon.stop()
        pen.close_all()
