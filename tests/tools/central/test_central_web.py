"""The central web page (issue 17, item 2) against a real SQLite database and real headless
Chromium: log in, filter, see rows; every page fits 1366 x 768 and 1920 x 1080 (no horizontal
scroll, nothing leaves the width; screenshots not blank). Hostile: no session gets the login page
(401) and no data, wrong passwords lock the user, CSRF and cross-site logins are refused, injected
filter values neither break nor leak, stored markup is shown escaped and never runs, static paths
do not traverse, nothing but login/logout writes, sessions time out, TLS sets Secure cookies."""

from __future__ import annotations

import http.client
import io
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import cv2
import numpy as np
import pytest

from kiosk.staff import OperatorStore
from tools.central.store import Accepted, Refusal, open_store
from tools.central.web import CentralWeb, WebConfig, WebError
from tools.registry import KioskEntry, Registry

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T0 = 1_790_000_000_000
PASSWORD = "correct horse battery"
XSS = "<script>alert('x')</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
PAD_CHANGED = "Pressure was not compared: none was measured for this signature, though the references have it."
REPO = Path(__file__).resolve().parents[3]


def _decisions() -> list[Accepted]:
    out = []
    for i in range(1, 41):
        subject = {7: XSS, 8: XSS_IMG, 9: "C" * 64}.get(i, f"cust-{i % 5:03d}")
        # What the kiosk's screen said why: a pad changed since enrollment; one kiosk's text is markup.
        why = {4: [PAD_CHANGED], 12: [PAD_CHANGED, XSS_IMG]}.get(i, [])
        payload = {"type": "decision", "schema": 3, "decision": "SUSPICIOUS" if i % 4 == 0 else "APPROVED",
                   "score": i / 50, "reasons": ["shape", "speed"] if i % 4 == 0 else [], "subject": subject,
                   "explanations": why,
                   "mode": "online" if i % 2 else "offline", "operator": "alice" if i % 3 == 0 else None,
                   "profile": "high-value" if i % 5 == 0 else "standard",
                   "model_versions": {"classic": "1", "threshold": "0.42", "embedder": "paper-2026.11-" + "x" * 30},
                   "created_ms": T0 + i * 60_000}
        out.append(Accepted("decision", "kiosk-a" if i % 2 else "kiosk-b", "branch-01", i, T0 + i * 60_000,
                            T0 + i * 60_000 + 40, f"d{i}", payload))
    return out


def _status(kiosk: str, seq: int, **fields: Any) -> Accepted:
    payload = {"type": "status", "state": "online", "model_versions": {"classic": "1", "threshold": "0.42"},
               "software_version": "1.4.0", "errors": 0, "dropped_logs": 0, **fields}
    return Accepted("status", kiosk, "branch-01", seq, T0, T0 + seq, f"s{kiosk}{seq}", payload)


@dataclass
class Site:
    db: Path
    users: Path
    registry: Path
    web: CentralWeb
    n_decisions: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("central-web")
    store = open_store(d / "central.sqlite", create=True)
    decisions = _decisions()
    store.store(decisions)
    store.store([_status("kiosk-a", 1, errors=3, link_problem="broker refused the TLS handshake " + XSS),
                 _status("kiosk-b", 1, state="offline", site_threshold=1.2870),
                 _status("kiosk-c", 1, software_version=XSS_IMG)])
    store.record_refusals([Refusal("bad_signature", "sig/v1/branch-01/kiosk-z/decision", T0, 300,
                                   "signature does not verify " + XSS_IMG, kiosk_claim="kiosk-z", sample=b"x" * 300)] * 3)
    store.close()
    reg = Registry()
    for kid in ("kiosk-a", "kiosk-b", "kiosk-c"):
        reg.add(KioskEntry(kid, "branch-01", "canary"))
    reg.revoke("kiosk-c", reason="stolen", now_ms=T0 + 5000)
    reg.save(d / "registry.json")
    users = d / "users.json"
    OperatorStore(users).set("auditor", PASSWORD)
    OperatorStore(users).set("victim", PASSWORD)
    web = CentralWeb(WebConfig(db=str(d / "central.sqlite"), users_file=users, registry_file=d / "registry.json",
                               port=0))
    web.start()
    try:
        yield Site(d / "central.sqlite", users, d / "registry.json", web, len(decisions))
    finally:
        web.stop()


@dataclass
class Client:
    """A plain HTTP client with a cookie jar: what a script (not a browser) can send."""

    web: CentralWeb
    cookies: dict[str, str] = field(default_factory=dict)
    https: ssl.SSLContext | None = None
    source: str | None = None   # the client's own address (another loopback one: another client)

    def request(self, method: str, path: str, body: str | bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, str]:
        conn: http.client.HTTPConnection
        if self.https is not None:
            conn = http.client.HTTPSConnection("localhost", self.web.port, context=self.https, timeout=20)
        else:
            conn = http.client.HTTPConnection(self.web.host, self.web.port, timeout=20,
                                              source_address=(self.source, 0) if self.source else None)
        h = dict(headers or {})
        if self.cookies:
            h.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for c in r.msg.get_all("Set-Cookie") or []:
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return r.status, r.msg, data

    def get(self, path: str) -> tuple[int, http.client.HTTPMessage, str]:
        return self.request("GET", path)

    def login(self, user: str = "auditor", password: str = PASSWORD, **extra: str) -> tuple[int, str]:
        if "sigkiosk_csrf" not in self.cookies:
            self.get("/login")
        form = {"csrf": self.cookies.get("sigkiosk_csrf", ""), "user": user, "password": password, **extra}
        status, _, body = self.request("POST", "/login", urlencode(form),
                                       {"Content-Type": "application/x-www-form-urlencoded"})
        return status, body


def _rows(body: str) -> list[list[str]]:
    tbody = re.search(r'<table id="decisions">.*?<tbody>(.*?)</tbody>', body, re.S)
    assert tbody is not None, body[:500]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S) for tr in re.findall(r"<tr>(.*?)</tr>", tbody.group(1), re.S)]


# -- without a browser: the hostile requests ------------------------------------------------------------
def test_no_session_gets_the_login_page_and_no_data(site: Site) -> None:
    c = Client(site.web)
    for path in ("/decisions", "/decisions?customer=cust-001", "/decisions.csv", "/kiosks", "/alarms", "/"):
        status, headers, body = c.get(path)
        assert status == 401, path
        assert 'action="/login"' in body and "cust-00" not in body and "kiosk-a" not in body, path
        assert headers["Cache-Control"] == "no-store"
    c.cookies["sigkiosk_central"] = "forged-" + "A" * 40
    status, headers, body = c.get("/decisions")
    assert status == 401 and "cust-00" not in body
    assert "sigkiosk_central=; Max-Age=0" in " ".join(headers.get_all("Set-Cookie") or [])


def test_login_sets_a_strict_httponly_session_and_logout_ends_it(site: Site) -> None:
    c = Client(site.web)
    status, headers, _ = c.get("/login")
    assert status == 200
    csrf_cookie = next(v for v in headers.get_all("Set-Cookie") or [] if v.startswith("sigkiosk_csrf="))
    assert "HttpOnly" in csrf_cookie and "SameSite=Strict" in csrf_cookie and "Secure" not in csrf_cookie
    status, _ = c.login()
    assert status == 303
    assert len(c.cookies["sigkiosk_central"]) >= 40
    status, _, body = c.get("/decisions")
    assert status == 200 and len(_rows(body)) == site.n_decisions
    token = c.cookies["sigkiosk_central"]
    status, _, _ = c.request("POST", "/logout", urlencode({"csrf": c.cookies["sigkiosk_csrf"]}),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and "sigkiosk_central" not in c.cookies
    c.cookies["sigkiosk_central"] = token                 # the old token is dead on the server too
    assert c.get("/decisions")[0] == 401


def test_logins_without_the_form_token_or_from_another_site_are_refused(site: Site) -> None:
    c = Client(site.web)
    c.get("/login")
    form = "user=auditor&password=" + quote(PASSWORD)
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    assert c.request("POST", "/login", form, ctype)[0] == 403                              # no token
    assert c.request("POST", "/login", form + "&csrf=" + "B" * 43, ctype)[0] == 403        # not the cookie's
    good = form + "&csrf=" + c.cookies["sigkiosk_csrf"]
    assert c.request("POST", "/login", good, {**ctype, "Origin": "https://evil.example"})[0] == 403
    assert c.request("POST", "/login", good, {"Content-Type": "application/json"})[0] == 415
    assert c.request("POST", "/login", "x" * 5000, ctype)[0] == 413
    assert "sigkiosk_central" not in c.cookies
    assert c.request("POST", "/login", good, {**ctype, "Origin": f"http://{site.web.host}:{site.web.port}"})[0] == 303


def test_wrong_passwords_lock_the_user(site: Site) -> None:
    c = Client(site.web)
    codes = [c.login("victim", "wrong password")[0] for _ in range(5)]
    assert codes == [401, 401, 401, 401, 423]
    status, body = c.login("victim", PASSWORD)              # the right password, too late
    assert status == 423 and "locked" in body
    assert "sigkiosk_central" not in c.cookies
    assert c.get("/decisions")[0] == 401
    assert Client(site.web).login("auditor")[0] == 303       # one user's lockout is not everybody's


def test_a_strangers_failed_logins_do_not_lock_out_other_clients(site: Site) -> None:
    """The failed-login rate limit counts per client address: 25 failures from a stranger at
    127.0.0.2 (made-up names: no one user's lockout) refuse his further logins, even with a right
    password, while a user at 127.0.0.1 still logs in."""
    web = CentralWeb(WebConfig(db=str(site.db), users_file=site.users, port=0))
    web.start()
    try:
        stranger = Client(web, source="127.0.0.2")
        codes = [stranger.login(f"guess{i}", "wrong password")[0] for i in range(25)]
        assert codes == [401] * 20 + [429] * 5
        status, body = stranger.login("auditor", PASSWORD)       # his address is limited, whatever he sends
        assert status == 429 and "from this address" in body and "sigkiosk_central" not in stranger.cookies
        user = Client(web)                                         # 127.0.0.1: another client
        assert user.login("auditor")[0] == 303 and user.get("/decisions")[0] == 200
        assert user.login("nobody", "wrong password")[0] == 401  # its own failures still count (not 429)
    finally:
        web.stop()


def _pipelined(web: CentralWeb, first: bytes, cookie: str = "") -> bytes:
    """``first`` then a second request on one keep-alive connection; everything the server sends
    until it closes the connection (or is silent for 3 s)."""
    follow = f"GET /style.css HTTP/1.1\r\nHost: {web.host}:{web.port}\r\n{cookie}\r\n".encode()
    with socket.create_connection((web.host, web.port), timeout=3) as s:
        s.sendall(first + follow)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


SMUGGLED = b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(("what", "head", "body"), [
    ("unknown path", "POST /nowhere HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n", SMUGGLED),
    ("cross-site", "POST /login HTTP/1.1\r\nOrigin: https://evil.example\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n", SMUGGLED),
    ("wrong type", "POST /login HTTP/1.1\r\nContent-Type: application/json\r\n", SMUGGLED),
    ("too large", "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n",
     b"x" * 3000 + SMUGGLED),
    ("GET with a body", "GET /login HTTP/1.1\r\n", SMUGGLED),
])
def test_a_refused_body_is_never_read_as_the_next_request(site: Site, what: str, head: str, body: bytes) -> None:
    """A request answered without reading its body ends the connection with its answer: the
    body (here a whole request of its own) is never parsed as the next request."""
    request = (head + f"Host: {site.web.host}:{site.web.port}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    out = _pipelined(site.web, request)
    assert out.count(b"HTTP/1.1 ") == 1, (what, out[:300])
    assert b"\r\nConnection: close\r\n" in out.split(b"\r\n\r\n", 1)[0] + b"\r\n", what
    assert b"body {" not in out and b"text/css" not in out, what   # no style sheet: neither request ran


def test_a_chunked_post_is_refused_and_its_body_never_read(site: Site) -> None:
    chunk = SMUGGLED
    request = (f"POST /login HTTP/1.1\r\nHost: {site.web.host}:{site.web.port}\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n").encode() \
        + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    out = _pipelined(site.web, request)
    assert out.startswith(b"HTTP/1.1 411 ") and out.count(b"HTTP/1.1 ") == 1, out[:300]
    assert b"text/css" not in out


def test_a_read_body_keeps_the_connection(site: Site) -> None:
    """The other side: a logged-in browser's POST whose body was read (a login refused for its form
    token) leaves the connection open, and the next request on it is answered as itself. Without a
    session every answer closes the connection (found by a review of the kiosk's screen server: a
    stranger's next request on a kept connection restarted the deadline, so trickled requests
    could hold every worker)."""
    body = b"user=auditor&password=x&csrf=none"
    c = Client(site.web)
    assert c.login()[0] == 303
    cookie = "Cookie: " + "; ".join(f"{k}={v}" for k, v in c.cookies.items()) + "\r\n"
    head = (f"POST /login HTTP/1.1\r\nHost: {site.web.host}:{site.web.port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n")
    out = _pipelined(site.web, (head + cookie + "\r\n").encode() + body, cookie)
    assert out.startswith(b"HTTP/1.1 403 ") and out.count(b"HTTP/1.1 ") == 2 and b"text/css" in out, out[:300]
    stranger = _pipelined(site.web, (head + "\r\n").encode() + body)
    assert stranger.startswith(b"HTTP/1.1 403 ") and stranger.count(b"HTTP/1.1 ") == 1, stranger[:300]
    assert b"Connection: close" in stranger


INJECTED = [
    ("customer", "' OR '1'='1"), ("customer", "cust-001'; DROP TABLE decisions; --"), ("operator", "%"),
    ("kiosk", "kiosk-a\" OR 1=1 --"), ("model_version", "x=y') OR ('1'='1"), ("outcome", "APPROVED' --"),
    ("site", "\\x00"), ("profile", "_"), ("customer", XSS),
]


@pytest.mark.parametrize(("name", "value"), INJECTED)
def test_injected_filter_values_neither_break_nor_leak(site: Site, name: str, value: str) -> None:
    c = Client(site.web)
    assert c.login()[0] == 303
    status, _, body = c.get("/decisions?" + urlencode({name: value}))
    assert status == 200, body[:300]
    rows = _rows(body)
    if value == XSS:
        assert len(rows) == 1 and rows[0][7] == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    else:
        assert rows == []
    assert "<script" not in body and "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
    assert open_store(site.db).count("decisions") == site.n_decisions   # nothing dropped


@pytest.mark.parametrize("query", ["mode=pen%27%20OR%201%3D1", "since=%3Cscript%3E", "limit=999999999", "limit=-1",
                                   "customer=a&customer=b", "payload=1", "&".join(f"f{i}=1" for i in range(40)),
                                   "customer=" + "x" * 300, "since=%C2%B2", "limit=%C2%B2", "until=%D9%A3",
                                   "since=9999999999999999999999999", "limit=9999999999999999999999999"])
def test_bad_filter_values_get_a_clear_escaped_error(site: Site, query: str) -> None:
    c = Client(site.web)
    assert c.login()[0] == 303
    status, _, body = c.get("/decisions?" + query)
    assert status == 400
    assert 'id="filter-error"' in body and "<script" not in body
    assert 'id="decisions"' not in body


def test_a_failing_database_gets_database_unavailable_and_the_server_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "central.sqlite"
    store = open_store(db, create=True)
    store.store(_decisions()[:3])
    store.close()
    users = tmp_path / "users.json"
    OperatorStore(users).set("auditor", PASSWORD)
    web = CentralWeb(WebConfig(db=str(db), users_file=users, registry_file=tmp_path / "registry.json", port=0))
    web.start()
    try:
        c = Client(web)
        assert c.login()[0] == 303
        assert c.get("/kiosks")[0] == 200   # the web's store is open
        with sqlite3.connect(db) as conn:   # the database fails underneath: its tables are gone
            for table in ("decisions", "kiosk_status"):
                conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        for path in ("/decisions", "/decisions.csv", "/kiosks", "/alarms"):
            status, _, body = c.get(path)
            assert status == 503, (path, status)
            assert "Database unavailable" in body and "no such table" not in body
        with sqlite3.connect(db) as conn:
            for table in ("decisions", "kiosk_status"):
                conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        status, _, body = c.get("/decisions")
        assert status == 200 and len(_rows(body)) == 3
    finally:
        web.stop()


@pytest.mark.parametrize("path", ["/../../../../etc/passwd", "/style.css/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                                  "//etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/..\\..\\etc\\passwd",
                                  "/style.css%00.html", "/tools/central/web.py", "/central.sqlite", "/users.json"])
def test_static_paths_do_not_traverse(site: Site, path: str) -> None:
    c = Client(site.web)
    assert c.login()[0] == 303                      # even logged in
    status, _, body = c.get(path)
    assert status == 404
    assert "root:" not in body and "scrypt" not in body and "SQLite" not in body
    status, headers, css = c.get("/style.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "table" in css


def test_nothing_but_login_and_logout_writes(site: Site) -> None:
    before = site.db.read_bytes()
    c = Client(site.web)
    assert c.login()[0] == 303
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/decisions", "/kiosks", "/alarms", "/decisions.csv", "/api/decisions"):
        assert c.request("POST", path, "csrf=" + c.cookies["sigkiosk_csrf"], ctype)[0] == 404
    for method in ("PUT", "DELETE", "PATCH"):
        assert c.request(method, "/decisions", "x")[0] == 501
    for path in ("/decisions", "/kiosks", "/alarms", "/decisions.csv?outcome=suspicious"):
        assert c.get(path)[0] == 200
    store = open_store(site.db)
    try:
        assert store.count("decisions") == site.n_decisions and store.refusal_counts() == {"bad_signature": 3}
    finally:
        store.close()
    assert "kiosk-c" in Registry.load(site.registry).kiosks
    del before   # the SQLite file may be touched by the WAL checkpoint; the rows above are what matter


def test_every_answer_carries_the_security_headers(site: Site) -> None:
    c = Client(site.web)
    answers = [c.get("/login"), c.get("/decisions"), c.get("/nope")]
    c.login()
    answers += [c.get("/decisions"), c.get("/kiosks"), c.get("/alarms"), c.get("/style.css"), c.get("/decisions.csv")]
    for status, h, _ in answers:
        assert h["Cache-Control"] == "no-store" and h["X-Content-Type-Options"] == "nosniff", status
        assert "script-src" not in h["Content-Security-Policy"] and "default-src 'none'" in h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"] and h["X-Frame-Options"] == "DENY"
        assert "Python" not in (h["Server"] or "")


def test_csv_download_is_the_cli_export(site: Site) -> None:
    import csv

    c = Client(site.web)
    c.login()
    status, h, text = c.get("/decisions.csv?outcome=suspicious&mode=paper")
    assert status == 200 and h["Content-Type"].startswith("text/csv") and "attachment" in h["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["seq"]) for r in rows] == [i for i in range(1, 41) if i % 4 == 0]   # multiples of 4 are even: paper
    assert all(r["decision"] == "SUSPICIOUS" and r["mode"] == "paper" for r in rows)


def test_kiosks_and_alarms_pages(site: Site) -> None:
    c = Client(site.web)
    c.login()
    _, _, kiosks = c.get("/kiosks")
    row_c = re.search(r"<tr><td>kiosk-c</td>(.*?)</tr>", kiosks, re.S)
    assert row_c is not None and "revoked 2026-09-21 14:13:25" in row_c.group(1) and "stolen" in row_c.group(1)
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in row_c.group(1)          # software_version, escaped
    assert "classic=1" in kiosks and "in service" in kiosks
    # The site calibration's threshold (status site_threshold), "-" for a kiosk that does not calibrate.
    row_b = re.search(r"<tr><td>kiosk-b</td>(.*?)</tr>", kiosks, re.S)
    assert row_b is not None and "<td>1.2870</td>" in row_b.group(1)
    assert "<th>Site threshold</th>" in kiosks and "<td>1.2870</td>" not in row_c.group(1)
    _, _, alarms = c.get("/alarms")
    assert re.search(r"<td>kiosk-a</td>.*?3 errors<br>link: broker refused the TLS handshake &lt;script&gt;", alarms, re.S)
    assert re.search(r"<td>kiosk-b</td>.*?state offline", alarms, re.S)
    assert re.search(r"<td>kiosk-c</td>.*?revoked, yet its last status says online", alarms, re.S)
    assert re.search(r"<td>bad_signature</td><td class=num>3</td>", alarms)
    assert re.search(r"<td>bad_signature</td><td>kiosk-z</td><td class=num>3</td>", alarms)
    assert "<img" not in alarms and "<script" not in alarms


def test_idle_sessions_end(site: Site) -> None:
    web = CentralWeb(WebConfig(db=str(site.db), users_file=site.users, port=0, idle_timeout_s=0.8))
    web.start()
    try:
        c = Client(web)
        assert c.login()[0] == 303
        assert c.get("/decisions")[0] == 200
        time.sleep(0.5)
        assert c.get("/kiosks")[0] == 200          # used: the idle clock restarts
        time.sleep(1.2)
        assert c.get("/decisions")[0] == 401
    finally:
        web.stop()


def test_a_removed_user_or_a_changed_password_ends_the_open_session(site: Site, tmp_path: Path) -> None:
    """Found by a review: `central user remove` (or a new password) left the user's open session
    valid for up to max_session_s (8 h) as long as it was used. Now it ends at the next request."""
    users = tmp_path / "users.json"
    shutil.copyfile(site.users, users)
    users.chmod(0o600)
    web = CentralWeb(WebConfig(db=str(site.db), users_file=users, port=0))
    web.start()
    try:
        store = OperatorStore(users)
        store.set("second", "another long passphrase")
        a, b = Client(web), Client(web)
        assert a.login()[0] == 303 and b.login("second", "another long passphrase")[0] == 303
        assert a.get("/decisions")[0] == 200 and b.get("/decisions")[0] == 200
        store.set("auditor", "a new passphrase, changed")    # a password change
        store.remove("second")                                # a user removed
        assert a.get("/decisions")[0] == 401 and b.get("/decisions")[0] == 401
        assert a.login(password="a new passphrase, changed")[0] == 303 and a.get("/decisions")[0] == 200
    finally:
        web.stop()


def test_tls_sets_secure_cookies(site: Site, tmp_path: Path) -> None:
    from tools.pki import init_ca, issue

    ca = init_ca(tmp_path / "ca")
    cert = issue(tmp_path / "ca", "server", "localhost", tmp_path / "certs")
    web = CentralWeb(WebConfig(db=str(site.db), users_file=site.users, port=0, host="127.0.0.1",
                               tls_cert=cert.cert_path, tls_key=cert.key_path))
    web.start()
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        c = Client(web, https=ctx)
        status, h, _ = c.get("/login")
        assert status == 200 and "max-age=" in h["Strict-Transport-Security"]
        assert all("Secure" in v for v in h.get_all("Set-Cookie") or [])
        c.login()
        assert c.get("/decisions")[0] == 200
        # A plain-HTTP client gets no page (the TLS server does not speak it).
        plain = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/login")
            plain.getresponse().read()
        plain.close()
    finally:
        web.stop()


def test_the_web_page_refuses_to_start_without_users_or_database(site: Site, tmp_path: Path) -> None:
    with pytest.raises(WebError, match="no users"):
        CentralWeb(WebConfig(db=str(site.db), users_file=tmp_path / "none.json", port=0))
    from tools.central.store import StoreMissing

    with pytest.raises(StoreMissing):
        CentralWeb(WebConfig(db=str(tmp_path / "typo.sqlite"), users_file=site.users, port=0))
    assert not (tmp_path / "typo.sqlite").exists()


def test_user_add_command(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "tools.commands.central_cmd", "user"]
    out = subprocess.run([*cmd, "add", "carol", "--users", str(users), "--password-stdin"], input=PASSWORD + "\n",
                         capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert users.stat().st_mode & 0o777 == 0o600 and PASSWORD not in users.read_text()
    assert OperatorStore(users).verify("carol", PASSWORD) and not OperatorStore(users).verify("carol", "nope-nope")
    bad = subprocess.run([*cmd, "add", "Carol Smith", "--users", str(users), "--password-stdin"], input="short\n",
                         capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "operator name" in bad.stderr
    out = subprocess.run([*cmd, "list", "--users", str(users)], capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert out.stdout.split() == ["carol"]


# -- in Chromium ----------------------------------------------------------------------------------------
# The page in the display: no horizontal scroll, nothing leaves the width, no cell's text cut.
FITS_JS = """() => {
  const vw = window.innerWidth, de = document.documentElement, bad = [];
  if (de.scrollWidth > vw) bad.push(`page is ${de.scrollWidth} px wide in ${vw}`);
  for (const el of document.querySelectorAll("header *, main *")) {
    if (!el.getClientRects().length) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " '" + (el.textContent || "").trim().slice(0, 30) + "'";
    if (r.left < -0.5 || r.right > vw + 0.5) bad.push(`${name} at ${Math.round(r.left)}..${Math.round(r.right)} leaves the width`);
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && el.tagName !== "INPUT")
      bad.push(`${name} is cut: ${el.scrollWidth} px of content in ${el.clientWidth}`);
  }
  return bad;
}"""
HEADER_BGR = np.array([0x91, 0x3D, 0x0B])   # #0b3d91


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _table_rows(page: Any) -> list[list[str]]:
    return page.evaluate("() => [...document.querySelectorAll('#decisions tbody tr')]"
                         ".map(tr => [...tr.cells].map(td => td.innerText))")


def test_log_in_filter_and_see_rows_in_chromium(site: Site, browser: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(site.web.url + "decisions")
        assert page.locator("#decisions").count() == 0 and page.locator("#login").is_visible()
        page.fill("input[name=user]", "auditor")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login")
        page.wait_for_selector("#decisions")
        assert len(_table_rows(page)) == site.n_decisions
        assert page.evaluate("document.cookie") == ""       # HttpOnly: no script can read the session
        cookie = next(c for c in ctx.cookies() if c["name"] == "sigkiosk_central")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # Filter: customer in another case, pen only.
        page.fill("input[name=customer]", "CUST-001")
        page.select_option("select[name=mode]", "pen")
        page.click("#apply")
        page.wait_for_url(re.compile(r"customer=CUST-001"))
        rows = _table_rows(page)
        want = [i for i in range(1, 41) if i % 5 == 1 and i % 2 == 1]
        assert [int(r[3]) for r in rows] == want and all(r[7] == "cust-001" and r[6] == "pen" for r in rows)
        assert page.input_value("input[name=customer]") == "CUST-001"    # the form keeps the filter
        # What the kiosk said why, under the reason codes: markup a kiosk sent shows as text.
        page.goto(site.web.url + "decisions?" + urlencode({"customer": "cust-002"}))
        why = {int(r[3]): r[11] for r in _table_rows(page)}
        assert why[12] == f"shape, speed\n{PAD_CHANGED}\n{XSS_IMG}" and why[2] == "", why
        assert page.locator("#decisions .why li").count() == 2
        # A stored subject that is markup shows as text and never runs.
        page.goto(site.web.url + "decisions?" + urlencode({"customer": XSS}))
        assert [r[7] for r in _table_rows(page)] == [XSS]
        page.goto(site.web.url + "decisions?" + urlencode({"customer": XSS_IMG}))
        assert [r[7] for r in _table_rows(page)] == [XSS_IMG]
        page.goto(site.web.url + "decisions?" + urlencode({"customer": "x'; DROP TABLE decisions; --"}))
        assert _table_rows(page) == [] and "0 decision(s)" in page.inner_text("#count")
        page.goto(site.web.url + "decisions?mode=ink")
        assert "pen or paper" in page.inner_text("#filter-error")
        assert dialogs == []
        page.click("header button")                         # log out
        page.wait_for_selector("#login")
        page.goto(site.web.url + "decisions")
        assert page.locator("#decisions").count() == 0
    finally:
        ctx.close()


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (1920, 1080)])
def test_pages_fit_a_laptop_screen(site: Site, browser: Any, tmp_path: Path, width: int, height: int) -> None:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    try:
        page.goto(site.web.url + "login")
        page.fill("input[name=user]", "auditor")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login")
        page.wait_for_selector("#decisions")
        for path, table in (("decisions", "#decisions"), ("kiosks", "#kiosks"), ("alarms", "#rejected"),
                            ("login", None)):
            if path == "login":
                ctx.clear_cookies()
            page.goto(site.web.url + path)
            if table:
                page.wait_for_selector(table)
                box = page.locator(table).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5
                assert box["width"] > 0.8 * width, f"{path}: the table uses {box['width']} px of {width}"
            # A decision word is never broken over two lines.
            assert page.evaluate("() => [...document.querySelectorAll('#decisions .decision')]"
                                 ".every(s => s.getClientRects().length === 1)")
            bad = page.evaluate(FITS_JS)
            assert not bad, f"{path} at {width}x{height}: " + "; ".join(bad[:5])
            shot = tmp_path / f"{width}x{height}-{path}.png"
            page.screenshot(path=str(shot))
            img = cv2.imread(str(shot))
            assert img is not None and img.shape[:2] == (height, width)
            assert img.std() > 20, f"{shot.name} is blank"
            header = np.all(np.abs(img[:30].astype(int) - HEADER_BGR) <= 12, axis=2).mean()
            assert header > 0.5, f"{shot.name}: no header bar ({header:.2f})"
            dark = (img.max(axis=2) < 90).mean()    # text drawn (the header's blue is not this dark)
            assert dark > (0.0002 if table is None else 0.002), f"{shot.name}: no text drawn ({dark:.4f})"
    finally:
        ctx.close()
