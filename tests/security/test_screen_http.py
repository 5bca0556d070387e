"""Attack 10: stalled requests hold the screen server's threads for ever.

A local process opens connections to the kiosk's screen server and never finishes its request
(silent, or a byte every so often: "slowloris"). Each connection used to hold a thread with no
time limit. Now a silent connection is dropped after the read timeout, a trickling one at the
request deadline, and connections beyond the pool's size are answered 503 at once without a
thread; the kiosk's browser is served again as soon as the stalled connections are gone.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import start_daemon, write_config

from kiosk.ui.server import SCREEN_COOKIE, UiServer

READ_TIMEOUT_S = 1.0
DEADLINE_S = 2.5
POOL = 4


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[UiServer]:
    daemon, pen, _ = start_daemon(write_config(tmp_path))
    server = UiServer(daemon, "127.0.0.1", 0, read_timeout_s=READ_TIMEOUT_S, request_deadline_s=DEADLINE_S,
                      max_connections=POOL)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        daemon.stop()
        pen.close_all()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``s`` (reads EOF or a reset), None if still open."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return time.monotonic() - t0
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        return time.monotonic() - t0


def _get(port: int, path: str = "/index.html") -> bytes:
    with _connect(port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)



def test_silent_connection_is_dropped_after_the_read_timeout(ui: UiServer) -> None:
    s = _connect(ui.port)
    s.sendall(b"GET /index.html HTTP/1.1\r\n")   # and then nothing
    took = _closed_within(s, READ_TIMEOUT_S + 5)
    s.close()
    assert took is not None, "a silent client held its connection (and thread) for ever"
    assert took < READ_TIMEOUT_S + 2


def test_trickling_request_is_cut_at_the_deadline(ui: UiServer) -> None:
    s = _connect(ui.port)
    stop = threading.Event()

    def trickle() -> None:
        # One header byte every half read-timeout: each receive succeeds, the request never ends.
        try:
            s.sendall(b"GET /index.html HTTP/1.1\r\nX-Slow: ")
            while not stop.wait(READ_TIMEOUT_S / 2):
                s.sendall(b"a")
        except OSError:
            pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        took = _closed_within(s, DEADLINE_S + 5)
    finally:
        stop.set()
        t.join(5)
        s.close()
    assert took is not None, "a trickling client held its connection past the deadline"
    assert took < DEADLINE_S + 2


def test_connections_beyond_the_pool_get_503_and_no_thread(ui: UiServer) -> None:
    stalled = [_connect(ui.port) for _ in range(POOL)]
    for s in stalled:
        s.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.3)
    extra = [_connect(ui.port) for _ in range(20)]
    try:
        for s in extra:
            s.settimeout(5)
            assert s.recv(100).startswith(b"HTTP/1.1 503"), "an over-the-limit connection was not refused"
        # Threads alive for the server stay within the pool, however many connections came.
        serving = [t for t in threading.enumerate() if t.name != "kiosk-ui" and "process_request" in repr(t)]
        assert len(serving) <= POOL
        # Once the stalled clients are dropped by the read timeout, the browser is served again.
        for s in stalled:
            assert _closed_within(s, READ_TIMEOUT_S + 5) is not None
        reply = _get(ui.port)
        assert reply.startswith(b"HTTP/1.1 200") or reply.startswith(b"HTTP/1.1 403"), reply[:80]
    finally:
        for s in stalled + extra:
            s.close()


def _peak_mb_since_reset() -> float:
    with open("/proc/self/status") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmHWM", "VmRSS"))}
    return fields["VmHWM"] / 1024


def _reset_peak() -> float:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        return [int(line.split()[1]) for line in f if line.startswith("VmRSS")][0] / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_huge_request_headers_get_431_and_cost_no_memory(ui: UiServer) -> None:
    """Attack 10b: the standard library reads up to 100 header lines of 64 KiB each, before the
    server looks at who is asking: one such request from any local process held 55 MB of the
    daemon, 16 of them 420 MB (its budget is 250 MB, the unit's MemoryMax 400 MB)."""
    line = b"X-Pad: " + b"a" * 65000 + b"\r\n"
    request = b"POST /api/verify HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line * 98 + b"\r\n"
    replies: list[bytes] = []

    def send() -> None:
        with _connect(ui.port) as s:
            try:
                s.sendall(request)
            except OSError:
                pass   # the server answered and closed before the whole head was sent
            s.settimeout(10)
            try:
                replies.append(s.recv(100))
            except OSError:
                replies.append(b"")

    before = _reset_peak()
    senders = [threading.Thread(target=send) for _ in range(POOL)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(30)
    grew = _peak_mb_since_reset() - before
    assert grew < 30, f"{POOL} requests of {len(request) / 1e6:.1f} MB of headers grew the peak by {grew:.0f} MB"
    assert replies and all(r.startswith(b"HTTP/1.1 431") for r in replies if r), replies
    assert any(replies), "no request was answered"
    # A browser's own requests are far below the limit and still served.
    reply = _get(ui.port)
    assert reply.startswith(b"HTTP/1.1 200") or reply.startswith(b"HTTP/1.1 403"), reply[:80]


def _exchange(port: int, requests: bytes, wait_s: float = 3.0) -> bytes:
    """``requests`` on one connection; all the server sends until it closes it (or is silent)."""
    with _connect(port) as s:
        s.sendall(requests)
        s.settimeout(wait_s)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, socket.timeout, ConnectionResetError):
            pass
    return out


def test_a_strangers_connection_is_closed_after_each_answer(ui: UiServer) -> None:
    """Attack 10c (found by a review, 2026-11-30): the deadline restarted with each request on a
    kept-alive connection, so a stranger trickling public requests one after another held every
    worker as long as it liked, and the kiosk's browser got 503. Now only the kiosk's own browser
    keeps a connection; a stranger's ends with each answer."""
    get = f"GET /style.css HTTP/1.1\r\nHost: 127.0.0.1:{ui.port}\r\n".encode()
    out = _exchange(ui.port, get + b"\r\n" + get + b"\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in out, out[:300]
    own = get + f"Cookie: {SCREEN_COOKIE}={ui.token}\r\n\r\n".encode()
    out = _exchange(ui.port, own + own, wait_s=1.5)
    assert out.count(b"HTTP/1.1 200") == 2, out[:300]


def test_a_foreign_cookie_neither_hides_the_screen_secret_nor_costs_cpu(ui: UiServer) -> None:
    """Attack 10d (found by a review, 2026-11-30): browsers do not separate cookies by port, so a
    page of another local server could set a cookie that http.cookies cannot parse, and the kiosk's
    browser then lost its screen secret with it (403 on everything until cookies were cleared); a
    header of 16 KB of backslashes took the parser a second of CPU (CVE-2024-7592), the daemon's
    GIL held all the while. The header is now read by hand, in one pass."""
    status = f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{ui.port}\r\nConnection: close\r\n"
    out = _exchange(ui.port, (status + f'Cookie: prefs={{"lang":"en"}}; {SCREEN_COOKIE}={ui.token}\r\n\r\n').encode())
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    slash = 'a="' + "\\" * 15_000 + '"'
    t0 = time.process_time()
    for _ in range(5):
        out = _exchange(ui.port, (status + f"Cookie: {slash}\r\n\r\n").encode())
        assert out.startswith(b"HTTP/1.1 403"), out[:200]
    assert time.process_time() - t0 < 1.0, "five hostile cookie headers cost a second of CPU or more"
