"""The central web page: read-only views of the central database, behind a login.

``sigkiosk central web --db central.sqlite --users users.json [--registry registry.json]`` serves

    GET  /decisions[.csv]?customer=&mode=&...   the decisions, filtered (DecisionFilter, as the CLI)
    GET  /kiosks                                registry + last status: versions, last seen, revoked
    GET  /alarms                                refusal counts, refused messages, kiosks in trouble
    GET  /login, POST /login, POST /logout      the only requests that change anything: a session

Nothing else writes: no endpoint changes the database (the store is only queried) or the
registry. Users are central users in their own file (``sigkiosk central user add NAME``), with
the kiosk's staff machinery (``kiosk.staff``): scrypt-hashed passwords, per-user lockout after
repeated failures, a rate limit on failed logins per client address (an IPv6 client's /64: a
stranger's failures refuse his own logins, not everybody's; behind a proxy every client has the
proxy's address), sessions that end on logout, idle timeout or after a maximum time. The session cookie is HttpOnly, SameSite=Strict, and Secure when served over TLS
(``--tls-cert/--tls-key``; without them bind to loopback or put TLS in front). The login form
carries a CSRF token (double submit: a SameSite=Strict cookie and a form field must agree), and a
POST whose Origin is another site is refused. Every answer says no-store, forbids framing and
scripts (CSP), and every stored value is HTML-escaped (``tools.central.web_pages``). Static content
is one style sheet from memory: no path reaches the file system. The standard library server with
the kiosk's bounds (``kiosk.ui.bounded_http``): a connection pool, read timeouts, a request deadline.
Request bodies, passwords and session tokens are never logged.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import secrets
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kiosk.staff import LoginRefused, OperatorEntryInvalid, OperatorStore, StaffAuth, StaffConfig, StaffSession
from kiosk.ui.bounded_http import BoundedServer, DeadlineHandler, cookie_value
from tools.central import web_pages as pages
from tools.central.errors import CentralError
from tools.central.export import write_csv
from tools.central.query import DecisionFilter, QueryError
from tools.central.store import Store, open_store
from tools.registry import KioskEntry, Registry, RegistryError

log = logging.getLogger(__name__)

SESSION_COOKIE = "sigkiosk_central"
CSRF_COOKIE = "sigkiosk_csrf"
MAX_BODY = 2048
#: Query string fields at most (the filter form has 11).
MAX_FIELDS = 24
#: Rows a page shows unless the form asks for fewer or more (at most MAX_PAGE_ROWS).
PAGE_ROWS = 200
MAX_PAGE_ROWS = 5000
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")


class WebError(CentralError, RuntimeError):
    """The web page cannot start (no users, a missing database, an unusable TLS key...)."""


@dataclass(frozen=True)
class WebConfig:
    db: str
    users_file: Path
    registry_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8480
    tls_cert: Path | None = None
    tls_key: Path | None = None
    idle_timeout_s: float = 900.0
    max_session_s: float = 8 * 3600.0
    max_failures: int = 5
    lockout_s: float = 300.0
    global_max_failures: int = 20
    global_window_s: float = 60.0
    read_timeout_s: float = 10.0
    request_deadline_s: float = 15.0
    max_connections: int = 32


def client_key(address: str) -> str:
    """Whose failed logins count together: the client's address (IPv6: its /64, which one client
    usually holds whole)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _audit(action: str, outcome: str, operator: str, *, staff_session: str | None = None,
           required: bool = False) -> None:
    # Central logins are logged, not stored: the page writes nothing to the audit database.
    log.info("central web %s: %s (%s)", action, outcome, operator,
             extra={"event": f"central_web_{action}", "operator": operator, "outcome": outcome,
                    "web_session": staff_session})


class CentralWeb:
    """The server. ``start()`` serves in a thread; ``stop()`` ends it."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        users = OperatorStore(config.users_file)
        try:
            names = users.names()
        except OperatorEntryInvalid as exc:
            raise WebError(str(exc)) from None
        if not names:
            raise WebError(f"no users in {config.users_file}: add one with "
                           f"'sigkiosk central user add NAME --users {config.users_file}'")
        open_store(config.db).close()   # a missing database is refused now, not at the first page
        self.auth = StaffAuth(StaffConfig(operators_file=config.users_file, max_failures=config.max_failures,
                                          lockout_s=config.lockout_s, global_max_failures=config.global_max_failures,
                                          global_window_s=config.global_window_s,
                                          idle_timeout_s=config.idle_timeout_s, max_session_s=config.max_session_s),
                              _audit, exclusive=False)
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self.tls = config.tls_cert is not None
        self.httpd = BoundedServer((config.host, config.port), self._handler_class(), config.max_connections)
        if config.tls_cert is not None:
            if config.tls_key is None:
                raise WebError("--tls-cert needs --tls-key")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(config.tls_cert, config.tls_key)
            except (OSError, ssl.SSLError) as exc:
                self.httpd.server_close()
                raise WebError(f"TLS certificate/key unusable: {exc}") from None
            # The handshake happens at the first read, in the connection's own thread and within
            # its request deadline: a client that never completes it holds no one else up.
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    @property
    def store(self) -> Store:
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.config.db)
            return self._store

    def start(self) -> None:
        self.httpd.serve_in_thread("central-web")

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self.httpd.stop()
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def registry(self) -> tuple[dict[str, KioskEntry], str | None]:
        """The registry as it is now (re-read each time: revocations show at once), or why not."""
        if self.config.registry_file is None:
            return {}, None
        try:
            return dict(Registry.load(self.config.registry_file).kiosks), None
        except (RegistryError, OSError) as exc:
            return {}, f"the registry cannot be read: {exc}"

    def _handler_class(self) -> type[DeadlineHandler]:
        web = self

        class Handler(DeadlineHandler):
            server_version = "sigkiosk-central"
            sys_version = ""
            protocol_version = "HTTP/1.1"
            timeout = web.config.read_timeout_s
            request_deadline_s = web.config.request_deadline_s
            _set_cookies: list[str]

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    if web._store is not None:
                        web._store.release()   # this connection's thread ends: so does its database connection

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("central web: " + fmt, *args)

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                # The path only: a query holds what somebody searched for (customer references).
                log.debug("central web: %s %s %s", getattr(self, "command", "-"),
                          getattr(self, "path", "-").split("?", 1)[0][:200], code)

            # -- plumbing --------------------------------------------------------------------------
            def _cookie(self, name: str) -> str | None:
                return cookie_value(self.headers.get("Cookie"), name)

            def _cookie_attrs(self) -> str:
                return "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if web.tls else "")

            def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8",
                      headers: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                for c in getattr(self, "_set_cookies", []):
                    self.send_header("Set-Cookie", c)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("X-Frame-Options", "DENY")
                # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the
                # login form, which the cross-site check must refuse.
                self.send_header("Referrer-Policy", "same-origin")
                self.send_header("Content-Security-Policy", CSP)
                if not web.auth.is_live(self._cookie(SESSION_COOKIE)):
                    # Only a logged-in browser keeps its connection: a stranger's next request on
                    # the same one restarted the deadline, so trickled requests could hold every
                    # worker (found by a review of the kiosk's screen server, which shares this).
                    self.close_connection = True
                if self.close_connection:
                    self.send_header("Connection", "close")
                if web.tls:
                    self.send_header("Strict-Transport-Security", "max-age=31536000")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _redirect(self, where: str) -> None:
                self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", (("Location", where),))

            def _csrf(self) -> str:
                """The CSRF token of this browser: its cookie's, or a new one set with this answer."""
                have = self._cookie(CSRF_COOKIE)
                if have and 32 <= len(have) <= 64 and have.replace("-", "").replace("_", "").isalnum():
                    return have
                token = secrets.token_urlsafe(32)
                self._set_cookies = [*getattr(self, "_set_cookies", []), f"{CSRF_COOKIE}={token}{self._cookie_attrs()}"]
                return token

            def _session(self) -> StaffSession | None:
                web.auth.expire()
                return web.auth.session(self._cookie(SESSION_COOKIE))

            def _login_required(self) -> None:
                """No (live) session: the login page, status 401, and no data."""
                self._set_cookies = [f"{SESSION_COOKIE}=; Max-Age=0{self._cookie_attrs()}"] \
                    if self._cookie(SESSION_COOKIE) else []
                self._send(HTTPStatus.UNAUTHORIZED, pages.login_page(self._csrf(), "Please log in."))

            # -- GET -------------------------------------------------------------------------------
            def do_HEAD(self) -> None:
                self.do_GET()

            def _refuse_unread(self, status: int, body: bytes) -> None:
                # The body stays unread: the connection ends with the answer, or its bytes would be
                # read as this connection's next request.
                self.close_connection = True
                self._request_complete()
                self._send(status, body)

            def do_GET(self) -> None:
                self._request_complete()
                if self._body_length(0) != 0:
                    self.close_connection = True   # a GET's body is never read: see _refuse_unread
                self._set_cookies = []
                parts = urlsplit(self.path)
                path = parts.path
                if path == "/style.css":
                    return self._send(HTTPStatus.OK, pages.CSS, "text/css; charset=utf-8")
                if path == "/login":
                    if self._session() is not None:
                        return self._redirect("/decisions")
                    return self._send(HTTPStatus.OK, pages.login_page(self._csrf()))
                if path not in ("/", "/decisions", "/decisions.csv", "/kiosks", "/alarms"):
                    return self._send(HTTPStatus.NOT_FOUND, pages.message_page("Not found", "There is no such page."))
                session = self._session()
                if session is None:
                    return self._login_required()
                if path == "/":
                    return self._redirect("/decisions")
                try:
                    if path in ("/decisions", "/decisions.csv"):
                        return self._decisions(session, parts.query, csv=path.endswith(".csv"))
                    status = web.store.status()
                    registry, reg_error = web.registry()
                    if path == "/kiosks":
                        return self._send(HTTPStatus.OK, pages.kiosks_page(registry, status, user=session.operator,
                                                                           csrf=self._csrf(), registry_error=reg_error))
                    return self._send(HTTPStatus.OK, pages.alarms_page(
                        web.store.refusal_counts(), web.store.rejected_summary(), status, registry,
                        user=session.operator, csrf=self._csrf()))
                except CentralError as exc:
                    log.error("central web: the database failed: %s", exc)
                    return self._send(HTTPStatus.SERVICE_UNAVAILABLE, pages.message_page(
                        "Database unavailable", "The central database cannot be read now; the server's log says why.",
                        user=session.operator, csrf=self._csrf()))

            def _decisions(self, session: StaffSession, query: str, *, csv: bool) -> None:
                try:
                    raw = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_FIELDS, strict_parsing=False)
                except ValueError:
                    raw = {"": ["too many fields"]}
                form = {k: v[0] for k, v in raw.items()}
                where: DecisionFilter | None = None
                error: str | None = None
                try:
                    if "" in form or any(len(v) > 1 for v in raw.values()):
                        raise QueryError("each filter at most once")
                    where = DecisionFilter.from_text(form, limit=PAGE_ROWS)
                    if where.limit > MAX_PAGE_ROWS:
                        raise QueryError(f"at most {MAX_PAGE_ROWS} rows a page (the CLI exports more)")
                except QueryError as exc:
                    error, where = str(exc), None
                if where is None:
                    body = pages.decisions_page([], {k: v for k, v in form.items() if k}, user=session.operator,
                                                csrf=self._csrf(), where=None, error=error)
                    return self._send(HTTPStatus.BAD_REQUEST, body)
                rows = web.store.query_decisions(where)
                if csv:
                    out = io.StringIO()
                    write_csv(rows, out)
                    return self._send(HTTPStatus.OK, out.getvalue().encode("utf-8"), "text/csv; charset=utf-8",
                                      (("Content-Disposition", 'attachment; filename="decisions.csv"'),))
                self._send(HTTPStatus.OK, pages.decisions_page(rows, form, user=session.operator, csrf=self._csrf(),
                                                               where=where))

            # -- POST: login and logout only --------------------------------------------------------
            def do_POST(self) -> None:
                self._set_cookies = []
                path = urlsplit(self.path).path
                if path not in ("/login", "/logout"):
                    return self._refuse_unread(HTTPStatus.NOT_FOUND,
                                               pages.message_page("Not found", "There is no such page."))
                scheme = "https" if web.tls else "http"
                origin = self.headers.get("Origin")
                if origin is not None and origin != f"{scheme}://{self.headers.get('Host')}":
                    return self._refuse_unread(HTTPStatus.FORBIDDEN,
                                               pages.message_page("Refused", "Cross-site request refused."))
                if not (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                    return self._refuse_unread(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                               pages.message_page("Refused", "Send the form."))
                if self.headers.get("Transfer-Encoding") is not None:
                    return self._refuse_unread(HTTPStatus.LENGTH_REQUIRED,
                                               pages.message_page("Refused", "Send the form with a Content-Length."))
                n = self._body_length(MAX_BODY)
                if n is None:
                    return self._refuse_unread(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, pages.message_page("Refused", "Too large."))
                raw = self.rfile.read(n)
                self._request_complete()
                try:
                    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), max_num_fields=8).items()}
                except (UnicodeDecodeError, ValueError):
                    form = {}
                cookie = self._cookie(CSRF_COOKIE) or ""
                sent = form.get("csrf", "")
                if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
                    return self._send(HTTPStatus.FORBIDDEN, pages.login_page(
                        self._csrf(), "The form expired or came from elsewhere. Please log in again."))
                if path == "/logout":
                    web.auth.logout(self._cookie(SESSION_COOKIE))
                    self._set_cookies = [f"{SESSION_COOKIE}=; Max-Age=0{self._cookie_attrs()}"]
                    return self._redirect("/login")
                try:
                    token, session = web.auth.login(form.get("user", ""), form.get("password", ""),
                                                    client=client_key(str(self.client_address[0])))
                except LoginRefused as exc:
                    status = {"locked": HTTPStatus.LOCKED, "rate_limited": HTTPStatus.TOO_MANY_REQUESTS}.get(
                        exc.reason, HTTPStatus.UNAUTHORIZED)
                    words = {"bad_credentials": "Unknown user or wrong password."}.get(exc.reason, str(exc))
                    return self._send(status, pages.login_page(self._csrf(), words))
                except OperatorEntryInvalid as exc:
                    log.error("central web: the users file is unusable: %s", exc)
                    return self._send(HTTPStatus.SERVICE_UNAVAILABLE, pages.login_page(
                        self._csrf(), "Logins are not possible now; the server's log says why."))
                # A new CSRF token with the new session: one seen before the login is not reused.
                self._set_cookies = [f"{SESSION_COOKIE}={token}{self._cookie_attrs()}",
                                     f"{CSRF_COOKIE}={secrets.token_urlsafe(32)}{self._cookie_attrs()}"]
                log.info("central web: %s logged in", session.operator)
                return self._redirect("/decisions")

        return Handler


__all__ = ["CSRF_COOKIE", "CentralWeb", "SESSION_COOKIE", "WebConfig", "WebError"]
