"""The kiosk screen's web server: static pages + Server-Sent Events + a tiny JSON API.

stdlib ``ThreadingHTTPServer`` bound to loopback only (the kiosk-mode browser runs on the same
machine). ``GET /events`` streams the daemon's screen events (``kiosk.screen_events``): screen
changes, live ink, enrollment results, decisions. The server knows the daemon only as a
:class:`ScreenBackend` (what the page may ask of it), so it imports nothing of ``kiosk.daemon``.
The customer's page (``/``) posts:

    POST /api/verify  {"customer": "..."}          POST /api/cancel
    POST /api/verify_paper {"customer": "..."}     (the camera; needs [paper])
    POST /api/done    (end the signature now)      GET  /api/status

The staff view (``/staff``) logs an operator in (``kiosk.staff``) and manages templates:

    POST /api/staff/login  {"operator": "...", "pin": "..."}     POST /api/staff/logout
    GET  /api/staff/session
    POST /api/staff/enroll {"customer": "...", "mode": "new"|"replace"|"add", "confirm": "..."}
    POST /api/staff/enroll_paper  (the same, reference pictures from the camera; needs [paper])
    POST /api/staff/delete {"customer": "...", "confirm": "..."}  (confirm: the customer retyped)
    POST /api/staff/verify {"customer": "...", "profile": "...", "paper": false}
         (a verification under an application profile, ``kiosk.profiles``; the decision records the
         profile and the operator. The session ends: the customer gets the screen.)

    POST /api/staff/calibration {"action": "revert"|"resume", "confirm": "revert"|"resume"}
         (``[calibration]``: back to the shipped threshold and held there, or moving again; the
         page asks first and sends the action again as ``confirm``. Audited by the daemon; the
         answer is the calibration's new state. The session stays: nobody else gets the screen.)

The session's answers (login, ``GET /api/staff/session``) carry what the staff view shows: the
profiles to pick from and the last decision (its profile and who asked). ``GET /api/status``
carries the site calibration's state (``calibration``, null when it is off).

Only the kiosk's own browser may use the stream and the API: the daemon holds a per-boot secret
(``[ui] token_file``, readable by the browser's user only); the browser opens ``/?k=<secret>``
once, gets it back as an HttpOnly SameSite=Strict cookie and is redirected to ``/``. Without the
cookie ``/events`` and every ``/api/*`` answer 403, so another local process sees no ink. The
staff session is a second such cookie; it ends on logout, on the idle timeout, and when an
enrollment hands the screen to the customer. The static files are public (they hold no secret).

POSTs must be JSON and come from this origin: another web page the browser might show cannot
drive the kiosk (no CORS, Host and Origin checked). The server never logs request bodies, the
secret or the session tokens (the request line is logged without its query).
"""

from __future__ import annotations

import grp
import hmac
import json
import logging
import os
import queue
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from kiosk.errors import ActionNotAuditable, AuditNotRecorded, KioskBusy, RequestRefused, StaffLoginRequired
from kiosk.jsonbound import loads_bounded
from kiosk.screen_events import EventBus, State
from kiosk.staff import LoginRefused, LoginUnavailable, OperatorEntryInvalid, StaffAuth, StaffSession
from kiosk.ui.bounded_http import BoundedServer, DeadlineHandler, cookie_value

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8"),
          "/staff": ("staff.html", "text/html; charset=utf-8"),
          "/staff.js": ("staff.js", "text/javascript; charset=utf-8")}
SCREEN_COOKIE = "sigkiosk_screen"
STAFF_COOKIE = "sigkiosk_staff"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
MAX_BODY = 4096
KEEPALIVE_S = 10.0
#: Seconds a connection may stay silent while we read from it (per receive).
READ_TIMEOUT_S = 10.0
#: Seconds from accepting a connection to a complete request (line, headers and body): a client
#: that trickles a byte at a time cannot hold a worker longer than this.
REQUEST_DEADLINE_S = 15.0
#: Connections served at once (the kiosk's browser needs a handful; each holds one thread).
MAX_CONNECTIONS = 32

def screen_token(path: Path | None, group: str | None = None) -> str:
    """The per-boot secret of the kiosk's browser.

    ``path`` None: a fresh one, in memory only (tests, the demo). Otherwise the one in ``path`` if
    it is ours and private (a daemon restarted within the boot keeps the browser's cookie valid;
    /run is emptied at boot), else a fresh one written there, mode 0640 with group ``group`` (the
    kiosk browser's user is its member) or 0600 without one."""
    if path is None:
        return secrets.token_urlsafe(32)
    path = Path(path)
    try:
        st = path.stat()
        old = path.read_text().strip()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o007 and _TOKEN_RE.match(old):
            return old
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise RuntimeError(f"[ui] token_group {group!r} does not exist (the kiosk browser's group)") from None
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if gid != -1:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o640)
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return token


class ScreenBackend(Protocol):
    """What the screen's page may see and ask of the kiosk (``kiosk.daemon.Daemon`` is one)."""

    @property
    def bus(self) -> EventBus: ...
    @property
    def state(self) -> State: ...
    @property
    def current(self) -> object | None: ...
    @property
    def staff(self) -> StaffAuth: ...

    def status(self) -> dict[str, object]: ...
    def staff_overview(self) -> dict[str, object]: ...
    def submit(self, kind: str, customer: str, *, source: str = "screen", mode: str = "new",
               request_id: str | None = None, image: Path | None = None, staff: StaffSession | None = None,
               confirm: str | None = None, profile: str | None = None, when_idle: bool = False) -> _Submitted: ...
    def cancel(self) -> None: ...
    def done_signing(self) -> None: ...
    def revert_calibration(self, staff: StaffSession | None, *, operator: str | None = None) -> None: ...
    def resume_calibration(self, staff: StaffSession | None, *, operator: str | None = None) -> None: ...


class _Submitted(Protocol):
    @property
    def request_id(self) -> str: ...


class UiServer:
    def __init__(self, daemon: ScreenBackend, host: str = "127.0.0.1", port: int = 8470, *,
                 read_timeout_s: float = READ_TIMEOUT_S, request_deadline_s: float = REQUEST_DEADLINE_S,
                 max_connections: int = MAX_CONNECTIONS, token_file: Path | None = None,
                 token_group: str | None = None) -> None:
        self.daemon = daemon
        #: The per-boot secret: only a client presenting it (the kiosk's browser) gets events and API.
        self.token = screen_token(token_file, token_group)
        self.read_timeout_s = read_timeout_s
        self.request_deadline_s = request_deadline_s
        self._static = {path: (resources.files("kiosk.ui").joinpath("static", name).read_bytes(), ctype)
                        for path, (name, ctype) in STATIC.items()}
        self._stop = threading.Event()
        self.httpd = BoundedServer((host, port), self._handler_class(), max_connections)
        bound_host, self.port = self.httpd.server_address[:2]
        # An AF_INET server's address is (str, int); socketserver types the host as str | bytes.
        self.host = bound_host.decode() if isinstance(bound_host, bytes) else bound_host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def start_url(self) -> str:
        """What the kiosk's browser opens: the page, with the secret that becomes its cookie."""
        return f"{self.url}?k={self.token}"

    @property
    def cookie_header(self) -> str:
        """A ``Cookie`` header for an in-process client of the API (tests, the demo)."""
        return f"{SCREEN_COOKIE}={self.token}"

    def start(self) -> None:
        self.httpd.serve_in_thread("kiosk-ui")

    def stop(self) -> None:
        self._stop.set()
        self.httpd.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        ui = self

        class Handler(DeadlineHandler):
            server_version = "sigkiosk-ui"
            protocol_version = "HTTP/1.1"
            timeout = ui.read_timeout_s   # socket timeout: a silent client is dropped
            request_deadline_s = ui.request_deadline_s

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("ui: " + fmt, *args)

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                # Never the query: the browser's first request carries the screen secret in it.
                # getattr: a malformed request line is answered before a path is set.
                log.debug("ui: %s %s %s", getattr(self, "command", "-"), getattr(self, "path", "-").split("?", 1)[0], code)

            def _cookie(self, name: str) -> str | None:
                return cookie_value(self.headers.get("Cookie"), name)

            def _screen_ok(self) -> bool:
                """Is this the kiosk's own browser (it holds the per-boot secret)?"""
                got = self._cookie(SCREEN_COOKIE)
                return got is not None and hmac.compare_digest(got.encode(), ui.token.encode())

            def _send(self, status: int, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if not self._screen_ok():
                    # Only the kiosk's browser keeps a connection: a stranger's next request on
                    # the same one restarted the deadline, so trickled requests held every worker
                    # for as long as they liked (found by a review).
                    self.close_connection = True
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy",
                                 "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json", headers)

            def _local_host(self) -> bool:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
                return host in ("127.0.0.1", "localhost", "::1")

            def do_GET(self) -> None:
                self._request_complete()
                if not self._local_host():
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host"})
                path, _, query = self.path.partition("?")
                if path in ui._static:
                    if query.startswith("k="):
                        return self._enter(path, query[2:])
                    body, ctype = ui._static[path]
                    return self._send(HTTPStatus.OK, body, ctype)
                if path not in ("/api/status", "/events", "/api/staff/session"):
                    return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                if not self._screen_ok():
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "only the kiosk's own screen may connect"})
                if path == "/api/status":
                    return self._json(HTTPStatus.OK, ui.daemon.status())
                if path == "/api/staff/session":
                    s = ui.daemon.staff.session(self._cookie(STAFF_COOKIE))
                    if s is None:
                        return self._json(HTTPStatus.UNAUTHORIZED, {"error": "not logged in"})
                    return self._json(HTTPStatus.OK, {"operator": s.operator,
                                                      "idle_timeout_s": ui.daemon.staff.config.idle_timeout_s,
                                                      **ui.daemon.staff_overview()})
                return self._events()

            def _enter(self, path: str, secret: str) -> None:
                """The kiosk browser's first request: the secret becomes an HttpOnly cookie and
                leaves the address (a redirect to the page without it)."""
                if not hmac.compare_digest(secret.encode(), ui.token.encode()):
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong screen secret"})
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header("Location", path)
                self.send_header("Set-Cookie", f"{SCREEN_COOKIE}={ui.token}; Path=/; HttpOnly; SameSite=Strict")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _events(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                q = ui.daemon.bus.subscribe()
                try:
                    while not ui._stop.is_set():
                        try:
                            ev = q.get(timeout=KEEPALIVE_S)
                            data = b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"
                        except queue.Empty:
                            data = b": keep-alive\n\n"
                        self.wfile.write(data)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass   # the page went away
                finally:
                    ui.daemon.bus.unsubscribe(q)

            def _refuse_unread(self, status: HTTPStatus, error: str) -> None:
                # The body stays unread: the connection ends with the answer, or the browser's next
                # request on it would be read from the middle of this body.
                self.close_connection = True
                self._json(status, {"error": error})   # _send says Connection: close

            def do_POST(self) -> None:
                if not self._local_host():
                    return self._refuse_unread(HTTPStatus.FORBIDDEN, "wrong host")
                origin = self.headers.get("Origin")
                if origin is not None and origin not in (f"http://{self.headers.get('Host')}",):
                    return self._refuse_unread(HTTPStatus.FORBIDDEN, "cross-origin request refused")
                if not self._screen_ok():
                    return self._refuse_unread(HTTPStatus.FORBIDDEN, "only the kiosk's own screen may connect")
                if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    return self._refuse_unread(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON")
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    n = -1
                if not 0 <= n <= MAX_BODY:
                    return self._refuse_unread(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
                raw = self.rfile.read(n)
                self._request_complete()
                try:
                    body = loads_bounded(raw or b"{}", max_bytes=MAX_BODY, max_depth=4)   # 4000 "[": RecursionError
                    if not isinstance(body, dict):
                        raise ValueError
                except ValueError:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": "invalid JSON"})
                d = ui.daemon
                path = self.path.split("?", 1)[0]
                if path.startswith("/api/staff/"):
                    return self._staff(path, body)
                try:
                    if path == "/api/cancel":
                        d.cancel()
                        return self._json(HTTPStatus.OK, {"ok": True})
                    if path == "/api/done":
                        d.done_signing()
                        return self._json(HTTPStatus.OK, {"ok": True})
                    # Template management is not here: it is the staff view's (/api/staff/...).
                    kind = {"/api/verify": "verify", "/api/verify_paper": "verify_paper"}.get(path)
                    if kind is None:
                        return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                    # Checked and queued in one step by the daemon (two presses at once: one 409).
                    req = d.submit(kind, str(body.get("customer", "")), source="screen", when_idle=True)
                    return self._json(HTTPStatus.ACCEPTED, {"ok": True, "session": req.request_id})
                except KioskBusy:
                    return self._json(HTTPStatus.CONFLICT, {"error": "the kiosk is busy"})
                except RequestRefused as exc:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

            def _staff(self, path: str, body: dict[str, Any]) -> None:
                d = ui.daemon
                clear = (("Set-Cookie", f"{STAFF_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),)
                token = self._cookie(STAFF_COOKIE)
                if path == "/api/staff/login":
                    try:
                        token, s = d.staff.login(str(body.get("operator", "")), str(body.get("pin", "")))
                    except LoginRefused as exc:
                        status = {"locked": HTTPStatus.LOCKED, "rate_limited": HTTPStatus.TOO_MANY_REQUESTS}.get(
                            exc.reason, HTTPStatus.UNAUTHORIZED)
                        return self._json(status, {"error": str(exc), "reason": exc.reason}, clear)
                    except (AuditNotRecorded, OperatorEntryInvalid, LoginUnavailable) as exc:
                        log.error("staff login impossible: %s", exc, extra={"event": "staff_login_failed"})
                        return self._json(HTTPStatus.SERVICE_UNAVAILABLE,
                                          {"error": "Logins are not possible now; the kiosk's log says why."}, clear)
                    cookie = f"{STAFF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                    return self._json(HTTPStatus.OK, {"operator": s.operator, "idle_timeout_s": d.staff.config.idle_timeout_s,
                                                      **d.staff_overview()}, (("Set-Cookie", cookie),))
                if path == "/api/staff/logout":
                    d.staff.logout(token)
                    return self._json(HTTPStatus.OK, {"ok": True}, clear)
                if path == "/api/staff/calibration":
                    return self._calibration(body, token, clear)
                kind = {"/api/staff/enroll": "enroll", "/api/staff/enroll_paper": "enroll_paper",
                        "/api/staff/delete": "delete", "/api/staff/verify": "verify"}.get(path)
                if kind is None:
                    return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                profile = body.get("profile")
                if kind == "verify":
                    if body.get("paper") is True:
                        kind = "verify_paper"
                    if profile is not None and not isinstance(profile, str):
                        return self._json(HTTPStatus.BAD_REQUEST, {"error": "profile must be a profile's name"})
                session = d.staff.session(token)
                if session is None:
                    return self._json(HTTPStatus.UNAUTHORIZED, {"error": "Please log in (staff only)."}, clear)
                confirm = body.get("confirm")
                try:
                    extra = {"profile": profile} if kind.startswith("verify") else {}
                    # when_idle: checked and queued in one step (an operator's double click queued
                    # a second replace that ran after the logout, for whoever was at the pen).
                    req = d.submit(kind, str(body.get("customer", "")), source="screen", mode=str(body.get("mode", "new")),
                                   staff=session, confirm=confirm if isinstance(confirm, str) else None,
                                   when_idle=True, **extra)
                except KioskBusy:
                    return self._json(HTTPStatus.CONFLICT, {"error": "the kiosk is busy"})
                except StaffLoginRequired as exc:
                    return self._json(HTTPStatus.UNAUTHORIZED, {"error": str(exc)}, clear)
                except ActionNotAuditable as exc:
                    return self._unaudited(exc)
                except RequestRefused as exc:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                if kind != "delete":
                    # The customer gets the screen (and the pen) now: the staff session ends, so
                    # nobody at the screen can open the staff view on the operator's login.
                    d.staff.logout(session, "handed_to_customer")
                    return self._json(HTTPStatus.ACCEPTED, {"ok": True, "session": req.request_id, "logged_out": True},
                                      clear)
                return self._json(HTTPStatus.ACCEPTED, {"ok": True, "session": req.request_id})

            def _unaudited(self, exc: ActionNotAuditable) -> None:
                """A staff action whose audit record cannot be stored is not done: say so."""
                log.error("staff action refused: %s", exc, extra={"event": "staff_action_unaudited"})
                return self._json(HTTPStatus.SERVICE_UNAVAILABLE,
                                  {"error": "This action cannot be recorded now, so it is not done. See the kiosk's log."})

            def _calibration(self, body: dict[str, Any], token: str | None,
                             clear: tuple[tuple[str, str], ...]) -> None:
                d = ui.daemon
                action = body.get("action")
                if action not in ("revert", "resume"):
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": "action must be revert or resume"})
                if body.get("confirm") != action:
                    return self._json(HTTPStatus.BAD_REQUEST,
                                      {"error": f"{action} needs confirming: confirm must repeat the action"})
                session = d.staff.session(token)
                if session is None:
                    return self._json(HTTPStatus.UNAUTHORIZED, {"error": "Please log in (staff only)."}, clear)
                try:
                    (d.revert_calibration if action == "revert" else d.resume_calibration)(session)
                except StaffLoginRequired as exc:
                    return self._json(HTTPStatus.UNAUTHORIZED, {"error": str(exc)}, clear)
                except ActionNotAuditable as exc:
                    return self._unaudited(exc)
                except RequestRefused as exc:
                    return self._json(HTTPStatus.CONFLICT, {"error": str(exc)})
                return self._json(HTTPStatus.OK, {"ok": True, "calibration": d.status().get("calibration")})

        return Handler
