"""Structured log records to the central server: a ``logging.Handler`` feeding the link's outbox.

Records are redacted before they leave the handler (keys, tokens, PEM blocks, long base64/hex
blobs and raw biometric fields never reach the outbox), rate-limited with a token bucket (the
number suppressed is reported on the next record that passes), and never re-entered: a log line
emitted while a log record is being queued (e.g. the outbox's "quota reached" warning) stays
local instead of recursing.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from kiosk.records import RAW_EVIDENCE_KEYS, LogEntry

REDACTED = "[redacted]"

# Field names whose values are secrets or biometrics, whatever they contain.
_SENSITIVE_KEY = re.compile(
    r"(key|secret|token|passw|credential|private|signature|cert|pem|nonce)", re.IGNORECASE
)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.DOTALL)
# Long unbroken base64 or hex: how keys, ciphertexts and encoded images look in text.
_BLOB = re.compile(r"(?:[A-Za-z0-9+/_-]{40,}={0,2})|(?:\b[0-9a-fA-F]{32,}\b)")
# Long runs of numbers: how pen samples look once someone prints a trajectory.
_NUMBER_RUN = re.compile(r"(?:[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?[,;\s\]\[()]+){16,}", re.IGNORECASE)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and becomes a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

MAX_MESSAGE = 2000
MAX_FIELD = 500


def _blob(m: re.Match[str]) -> str:
    s = m.group(0)
    if re.fullmatch(r"[0-9a-fA-F]+", s):
        return REDACTED
    # Base64 of key material mixes cases and digits; topic names and paths ("sig/v1/branch-17/...")
    # are lower-case and stay readable.
    if re.search(r"[A-Z]", s) and re.search(r"[a-z]", s) and re.search(r"[0-9]", s):
        return REDACTED
    return s


def redact_text(text: str) -> str:
    text = _PEM.sub(REDACTED, text)
    text = _BLOB.sub(_blob, text)
    text = _NUMBER_RUN.sub(REDACTED + " ", text)
    return text


def redact_value(key: str, value: Any) -> Any:
    if _SENSITIVE_KEY.search(key) or key.lower() in RAW_EVIDENCE_KEYS:
        return REDACTED
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        if len(value) > 16:   # long arrays are data (pen samples), not diagnostics
            return f"<{len(value)} items>"
        return [redact_value(key, v) for v in value]
    return redact_text(str(value))[:MAX_FIELD]


class _Sink(Protocol):
    def publish_log(self, entry: LogEntry) -> int: ...
    def note_error(self, message: str | None = None) -> None: ...


class MqttLogHandler(logging.Handler):
    """Sends redacted, rate-limited log records through a ``KioskLink``.

    ``rate_per_s`` / ``burst``: token bucket. Default INFO and above; DEBUG never leaves the device.
    Writing to the outbox costs an fsync, so the calling thread (perhaps in the middle of a
    verification) only redacts and enqueues; a background thread writes. If that queue is full
    the record is counted as suppressed, never waited for.
    """

    def __init__(self, link: _Sink, *, level: int = logging.INFO, rate_per_s: float = 10.0, burst: int = 50,
                 queue_size: int = 1000) -> None:
        super().__init__(level=max(level, logging.INFO))
        self.link = link
        self.rate = rate_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._suppressed = 0
        self._guard = threading.local()
        self._bucket_lock = threading.Lock()
        self._queue: queue.Queue[LogEntry | None] = queue.Queue(maxsize=queue_size)
        self._writer = threading.Thread(target=self._write_loop, name="mqtt-log-writer", daemon=True)
        self._writer.start()

    def _take_token(self) -> tuple[bool, int]:
        with self._bucket_lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return False, 0
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._guard, "active", False):
            return
        self._guard.active = True
        try:
            if record.levelno >= logging.ERROR:
                self.link.note_error(redact_text(record.getMessage())[:200])
            ok, suppressed = self._take_token()
            if not ok:
                return
            try:
                self._queue.put_nowait(self.to_entry(record, suppressed))
            except queue.Full:
                with self._bucket_lock:
                    self._suppressed += 1 + suppressed
        except Exception:
            self.handleError(record)
        finally:
            self._guard.active = False

    def _write_loop(self) -> None:
        # Whatever this thread logs itself (e.g. the outbox's quota warning) stays local.
        self._guard.active = True
        while True:
            entry = self._queue.get()
            try:
                if entry is None:
                    return
                self.link.publish_log(entry)
            except Exception as exc:   # the outbox refused it (disk full...): count, keep going
                try:
                    self.link.note_error(f"log record not queued: {type(exc).__name__}")
                except Exception:
                    pass
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every accepted record is in the outbox (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.flush()
        if self._writer.is_alive():
            try:
                self._queue.put(None, timeout=1)
            except queue.Full:
                pass
            self._writer.join(2)
        super().close()

    @staticmethod
    def to_entry(record: logging.LogRecord, suppressed: int = 0) -> LogEntry:
        message = redact_text(record.getMessage())[:MAX_MESSAGE]
        fields = {
            k: redact_value(k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        }
        if record.exc_info and record.exc_info[0] is not None:
            # Type and message only: a traceback's locals and reprs can carry anything.
            fields["exception"] = f"{record.exc_info[0].__name__}: {redact_text(str(record.exc_info[1]))[:MAX_FIELD]}"
        return LogEntry(
            level=record.levelname, logger=record.name, message=message, fields=fields,
            created_ms=int(record.created * 1000), suppressed_before=suppressed,
        )


class RedactingFilter(logging.Filter):
    """The same redaction for local handlers (journald, files): install it on the handler.

    It rewrites the record in place (message rendered and redacted, ``extra`` fields redacted,
    traceback reduced to type and message), so every handler after it sees the safe version.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())[:MAX_MESSAGE]
        record.args = None
        for k, v in list(vars(record).items()):
            if k not in _STANDARD_ATTRS and not k.startswith("_"):
                setattr(record, k, redact_value(k, v))
        if record.exc_info and record.exc_info[0] is not None:
            record.msg += f" [{record.exc_info[0].__name__}: {redact_text(str(record.exc_info[1]))[:MAX_FIELD]}]"
            record.exc_info = None
            record.exc_text = None
        return True
