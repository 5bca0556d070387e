"""The sd_notify protocol, in a few lines: readiness, status and watchdog pings to systemd.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and, with
``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). A message is one datagram of
newline-separated ``KEY=VALUE`` lines. Outside systemd (no socket) every call is a no-op, so the
daemon runs the same way from a terminal.

The watchdog pings only while the main loop proves it is alive: it calls :meth:`Watchdog.beat`
each iteration, or :meth:`Watchdog.busy` before a blocking call with a known upper bound (a
capture with its timeouts). A loop stuck past its bound stops the pings and systemd kills and
restarts the service - which is the point of having a watchdog.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to ``$NOTIFY_SOCKET`` (or an explicit address)."""

    def __init__(self, address: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """``notify(READY=1, STATUS="idle")``; True when the datagram was sent."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]   # abstract namespace socket
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(msg, addr)
                return True
            except OSError as exc:
                # Never fatal: a daemon that cannot reach systemd still serves customers.
                log.warning("sd_notify to %s failed: %s", self.address, exc.strerror or exc)
                return False

    def ready(self, status: str = "") -> bool:
        return self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of systemd's ``WatchdogSec``), or None when not requested."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None   # meant for another process (e.g. a wrapper)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval`` seconds while the main loop is alive.

    Alive means: :meth:`beat` was called within ``stale_after`` seconds, or the loop declared
    with :meth:`busy` that it is inside a bounded blocking call whose bound has not passed yet.
    """

    def __init__(self, notifier: Notifier, interval: float, stale_after: float | None = None) -> None:
        self.notifier = notifier
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else 2 * interval
        self._last_beat = time.monotonic()
        self._busy_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    def beat(self) -> None:
        self._last_beat = time.monotonic()
        self._busy_until = 0.0

    def busy(self, seconds: float) -> None:
        """The loop is about to block for at most ``seconds`` (keep pinging until then)."""
        now = time.monotonic()
        self._last_beat = now
        self._busy_until = now + seconds

    def alive(self) -> bool:
        now = time.monotonic()
        return now - self._last_beat <= self.stale_after or now <= self._busy_until

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval):
            if self.alive():
                if self.notifier.notify(WATCHDOG=1):
                    self.pings += 1
                warned = False
            elif not warned:
                log.error("main loop unresponsive for %.1f s: watchdog pings stopped",
                          time.monotonic() - self._last_beat)
                warned = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval + 1)
            self._thread = None
