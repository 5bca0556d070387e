"""The standard library's HTTP server, bounded: a connection pool and a per-request deadline.

Shared by the kiosk's screen server (``kiosk.ui.server``) and the central web page
(``tools.central.web``): both face clients that may be hostile or just slow.

* :class:`BoundedServer`: a thread per connection, but never more than ``max_connections``; beyond
  that a connection is answered 503 and closed at once instead of taking a thread.
* :class:`DeadlineHandler`: the request line and headers together are at most ``max_head_bytes``
  (431 beyond, and the connection closed): the standard library alone reads up to 100 header lines
  of 64 KiB each, before any check of who is asking, and 16 such requests held 420 MB of a daemon
  whose budget is 250.
* The same handler's socket timeout (``timeout``) drops a silent client, but alone it
  lets a client trickle one byte every few seconds for ever; the deadline shuts the socket if the
  request (line, headers, body - and a TLS handshake, which happens at the first read) is not
  complete within ``request_deadline_s``. A handler calls ``_request_complete()`` once it has read
  the whole request, so a long answer (an event stream) is not cut. ``_body_length()`` is the
  request body's length, or None for a body this server does not read (chunked, unbounded, too
  large): a handler answering without reading a body must close the connection with its answer
  (``close_connection`` and ``Connection: close``), or the body's bytes would be read as the
  connection's next request.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them (503 beyond)."""

    daemon_threads = True
    allow_reuse_address = True
    # A burst of connections beyond the listen backlog has its SYNs dropped and retried by the
    # kernel seconds later: keep room for a burst so the refusal below is immediate.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def serve_in_thread(self, name: str) -> None:
        """Serve on a daemon thread of its own until ``stop``."""
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.shutdown()
        self.server_close()


class _BoundedHead:
    """The request's stream while its headers are parsed: at most ``left`` more bytes, then an end
    of headers (``exceeded`` says so), so that no line and no number of lines can take more."""

    def __init__(self, raw: Any, left: int) -> None:
        self.raw = raw
        self.left = left
        self.exceeded = False

    def readline(self, size: int = -1) -> bytes:
        if self.left <= 0:
            self.exceeded = True
            return b""
        want = self.left if size is None or size < 0 else min(size, self.left)
        line = self.raw.readline(want)
        self.left -= len(line)
        if self.left <= 0 and not line.endswith(b"\n"):
            self.exceeded = True
        return bytes(line)


#: A cookie value this code ever sets (a URL-safe token): anything else under our names is not ours.
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of the cookie ``name`` in a Cookie header, in one linear pass; None if absent or
    not a token. Not ``http.cookies.SimpleCookie``: one malformed cookie of another site on the
    same host (browsers do not separate ports) made it drop every cookie, the screen secret too,
    and a header of backslashes took it a second of CPU (CVE-2024-7592, unfixed in this Python);
    found by a review. The first well-formed cookie of the name wins, as browsers send the most
    specific path first."""
    for part in (header or "").split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            value = value.strip()
            if _COOKIE_VALUE.fullmatch(value):
                return value
    return None


class DeadlineHandler(BaseHTTPRequestHandler):
    """A request handler whose request must be complete within ``request_deadline_s``, its request
    line and headers at most ``max_head_bytes``."""

    request_deadline_s: float = 15.0
    #: The request line and every header line together: a browser's requests here (a session or
    #: screen cookie, a few headers) take under 2 KiB.
    max_head_bytes: int = 16 << 10
    _deadline: threading.Timer | None = None

    def parse_request(self) -> bool:
        # raw_requestline: set by handle_one_request before it calls this (not in typeshed).
        line: bytes = getattr(self, "raw_requestline", b"")
        head = _BoundedHead(self.rfile, self.max_head_bytes - len(line))
        self.rfile = head   # type: ignore[assignment]
        try:
            ok = super().parse_request()
        finally:
            self.rfile = head.raw
        if ok and head.exceeded:
            self.close_connection = True
            self.send_error(431, "Request Header Fields Too Large")
            return False
        return ok

    def handle_one_request(self) -> None:
        self._deadline = threading.Timer(self.request_deadline_s, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._request_complete()

    def _expire(self) -> None:
        log.info("%s: request not complete within %.0f s; connection closed", self.server_version,
                 self.request_deadline_s)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body_length(self, max_body: int) -> int | None:
        """The request body's length when it is a plain one of at most ``max_body`` bytes, else None."""
        if self.headers.get("Transfer-Encoding") is not None:
            return None   # chunked or other codings: never read, never guessed at
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
            return None
        n = int(raw)
        return n if n <= max_body else None

    def _request_complete(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


__all__ = ["BoundedServer", "DeadlineHandler"]
