"""The kiosk screen's web server: static page + Server-Sent Events + a tiny JSON API.

stdlib ``ThreadingHTTPServer`` bound to loopback only (the kiosk-mode browser runs on the same
machine). ``GET /events`` streams the daemon's screen events (``kiosk.daemon.EventBus``): screen
changes, live ink, enrollment results, decisions. The page posts the customer's actions:

    POST /api/verify  {"customer": "..."}          POST /api/cancel
    POST /api/verify_paper {"customer": "..."}     (the camera; needs [paper])
    POST /api/enroll  {"customer": "...", "mode": "new"|"replace"|"add"}
    POST /api/delete  {"customer": "..."}          POST /api/done   (end the signature now)
    GET  /api/status

POSTs must be JSON and come from this origin: another web page the browser might show cannot
drive the kiosk (no CORS, Host and Origin checked). The server never logs request bodies.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from kiosk.jsonbound import loads_bounded

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_BODY = 4096
KEEPALIVE_S = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class UiServer:
    def __init__(self, daemon: Any, host: str = "127.0.0.1", port: int = 8470) -> None:
        self.daemon = daemon
        self._static = {path: (resources.files("kiosk.ui").joinpath("static", name).read_bytes(), ctype)
                        for path, (name, ctype) in STATIC.items()}
        self._stop = threading.Event()
        self.httpd = _Server((host, port), self._handler_class())
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kiosk-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        ui = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "sigkiosk-ui"
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("ui: " + fmt, *args)

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy",
                                 "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: Any) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json")

            def _local_host(self) -> bool:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
                return host in ("127.0.0.1", "localhost", "::1")

            def do_GET(self) -> None:
                if not self._local_host():
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host"})
                path = self.path.split("?", 1)[0]
                if path in ui._static:
                    body, ctype = ui._static[path]
                    return self._send(HTTPStatus.OK, body, ctype)
                if path == "/api/status":
                    return self._json(HTTPStatus.OK, ui.daemon.status())
                if path == "/events":
                    return self._events()
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

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

            def do_POST(self) -> None:
                if not self._local_host():
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host"})
                origin = self.headers.get("Origin")
                if origin is not None and origin not in (f"http://{self.headers.get('Host')}",):
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
                if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    n = -1
                if not 0 <= n <= MAX_BODY:
                    return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                try:
                    body = loads_bounded(self.rfile.read(n) or b"{}", max_bytes=MAX_BODY, max_depth=4)   # 4000 "[": RecursionError
                    if not isinstance(body, dict):
                        raise ValueError
                except ValueError:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": "invalid JSON"})
                from kiosk.daemon import RequestError

                d = ui.daemon
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/api/cancel":
                        d.cancel()
                        return self._json(HTTPStatus.OK, {"ok": True})
                    if path == "/api/done":
                        d.done_signing()
                        return self._json(HTTPStatus.OK, {"ok": True})
                    kind = {"/api/verify": "verify", "/api/verify_paper": "verify_paper", "/api/enroll": "enroll",
                            "/api/delete": "delete"}.get(path)
                    if kind is None:
                        return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                    if d.current is not None or d.state.value not in ("idle",):
                        return self._json(HTTPStatus.CONFLICT, {"error": "the kiosk is busy"})
                    req = d.submit(kind, str(body.get("customer", "")), source="screen", mode=str(body.get("mode", "new")))
                    return self._json(HTTPStatus.ACCEPTED, {"ok": True, "session": req.request_id})
                except RequestError as exc:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

        return Handler
