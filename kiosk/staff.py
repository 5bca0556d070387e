"""Staff authentication at the kiosk: operators, their PINs, login sessions, lockout, audit hooks.

Template management (enroll new / replace / add, delete) changes whom the kiosk approves as a
customer, so only a logged-in operator may start it (issue 15: an attacker at the counter had
replaced a customer's references with his own). This module holds:

* ``OperatorStore``: the operators file (``[staff] operators_file``, JSON, mode 0600). Each operator
  has a PIN or passphrase stored as a scrypt hash (memory-hard: 32 MiB per guess) with its own
  random salt and its own cost parameters, so the cost can be raised for new entries later. The
  file is refused if group or others may read it. ``sigkiosk admin operator add NAME`` writes it.
* ``StaffAuth``: ``login(operator, secret)`` -> a session token; failures are counted per operator
  (``max_failures`` in a row lock that operator for ``lockout_s``) and globally (more than
  ``global_max_failures`` within ``global_window_s`` refuse every login for the rest of the
  window), so neither one operator's PIN nor the set of all PINs can be guessed at the screen.
  A server facing a network (the central web page) passes each request's ``client`` (its
  address): the window's count is then kept per client, so a stranger's failures refuse his own
  logins, not everybody's (the kiosk has one screen: one client, one global count).
  A session ends on logout, after ``idle_timeout_s`` without a staff request, after
  ``max_session_s`` in all, or when another operator logs in (one screen, one operator).
  Attempts are serialised: a flood of logins costs one scrypt at a time, not the daemon's memory.

Every login, failure, lockout and logout is handed to the ``audit`` callback (the daemon seals it
into the outbox as an ``AuditRecord``). A successful login whose audit record cannot be written is
refused. Never logged or audited: the PIN, the session token (only its short public id).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from kiosk.errors import ApplianceError
from kiosk.templates import atomic_write

log = logging.getLogger(__name__)

#: scrypt cost of new hashes: N=2**15, r=8 -> 32 MiB and ~0.1 s per guess on the kiosk's CPU.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SECRET = 6
MAX_SECRET = 256
FILE_VERSION = 1
#: Where the daemon keeps the login failures (under its state_dir): ``StaffAuth(state_file=...)``.
STAFF_STATE_FILE = "staff-failures.json"
#: Operator names whose failures are saved, most recent first: a made-up name's count never ends,
#: and each failed login rewrites the file (a review: 1000 names, 62 KB and 12 ms a failure).
SAVED_NAMES = 100
#: A larger state file is read as damaged (the service writes a few KB).
MAX_STATE_BYTES = 1 << 20
#: Failure counters kept for at most this many distinct (possibly made-up) operator names.
MAX_TRACKED_NAMES = 1000
#: Failure windows kept for at most this many distinct clients (``StaffAuth.login(client=...)``).
MAX_TRACKED_CLIENTS = 4096

_OPERATOR_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")   # fullmatch: "$" would let a trailing newline in


class OperatorEntryInvalid(ApplianceError, ValueError):
    """The operators file, an operator entry, a name or a PIN is unusable; the message says why."""


class LoginRefused(ApplianceError):
    """A login was refused. ``reason``: bad_credentials, locked, rate_limited."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class LoginUnavailable(ApplianceError):
    """No login can be checked now: the failures could not be saved (a full or read-only disk),
    and a check whose failure a restart would forget is a free guess."""


def validate_operator(name: str) -> str:
    if not isinstance(name, str) or not _OPERATOR_RE.fullmatch(name):
        raise OperatorEntryInvalid("operator name: 1-32 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def validate_secret(secret: str) -> str:
    if not isinstance(secret, str) or not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise OperatorEntryInvalid(f"a PIN or passphrase has {MIN_SECRET} to {MAX_SECRET} characters")
    return secret


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # surrogatepass: a PIN with a lone surrogate (JSON lets a request send one) is a wrong PIN, not
    # an UnicodeEncodeError that skipped the failure count and told which operator names exist
    # (found by a review). A stored PIN never holds one: its hash is the same either way.
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class StaffConfig:
    """The ``[staff]`` table. ``operators_file`` relative paths are resolved under the state dir."""

    operators_file: Path = Path("operators.json")
    max_failures: int = 5            # failed logins in a row that lock one operator
    lockout_s: float = 300.0
    global_max_failures: int = 20    # failed logins of all operators together within global_window_s
    global_window_s: float = 60.0
    idle_timeout_s: float = 120.0    # a staff session ends this long after its last request
    max_session_s: float = 900.0     # ...and this long after the login, whatever happens

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.global_max_failures < 1:
            raise ValueError("max_failures and global_max_failures must be at least 1")
        for name in ("lockout_s", "global_window_s", "idle_timeout_s", "max_session_s"):
            if not 0 < float(getattr(self, name)) <= 86400:
                raise ValueError(f"{name} must be in (0, 86400] seconds, got {getattr(self, name)}")


class OperatorStore:
    """The operators file: name -> scrypt hash of the PIN/passphrase. Written atomically, 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077:
            raise OperatorEntryInvalid(f"{self.path} may be read by group or others (mode {st.st_mode & 0o777:o}); "
                             "chmod 600 it: it holds the operators' PIN hashes")
        try:
            data = json.loads(self.path.read_text())
            ops = data["operators"]
            if data.get("version") != FILE_VERSION or not isinstance(ops, dict):
                raise ValueError("unknown version")
        except (ValueError, KeyError, TypeError) as exc:
            raise OperatorEntryInvalid(f"{self.path}: not an operators file ({exc})") from None
        return ops

    def names(self) -> list[str]:
        return sorted(self._read())

    def entry(self, name: str) -> dict[str, Any] | None:
        return self._read().get(name)

    def stamp(self, name: str) -> bytes | None:
        """A digest of ``name``'s stored entry (None if there is none): changes when the operator is
        removed or their PIN or passphrase changed, which ends their open sessions."""
        e = self.entry(name)
        return None if e is None else hashlib.sha256(json.dumps(e, sort_keys=True).encode()).digest()

    def set(self, name: str, secret: str, *, n: int = SCRYPT_N) -> None:
        """Add an operator or change their PIN/passphrase."""
        validate_operator(name)
        validate_secret(secret)
        ops = self._read()
        salt = secrets.token_bytes(16)
        ops[name] = {"kdf": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt),
                     "hash": _b64(_hash(secret, salt, n, SCRYPT_R, SCRYPT_P)), "set_ms": int(time.time() * 1000)}
        self._write(ops)

    def remove(self, name: str) -> bool:
        ops = self._read()
        if ops.pop(name, None) is None:
            return False
        self._write(ops)
        return True

    def verify(self, name: str, secret: str) -> bool:
        """True if ``secret`` is ``name``'s. Costs one scrypt even for an unknown name, so the
        answer's timing does not tell which operator names exist."""
        e = self._read().get(name) if _OPERATOR_RE.fullmatch(name or "") else None
        if e is None:
            _hash(secret or "-", b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            return False
        try:
            want = base64.b64decode(e["hash"])
            got = _hash(secret, base64.b64decode(e["salt"]), int(e["n"]), int(e["r"]), int(e["p"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OperatorEntryInvalid(f"{self.path}: entry {name!r} is damaged ({type(exc).__name__})") from None
        return hmac.compare_digest(want, got)

    def _write(self, ops: dict[str, dict[str, Any]]) -> None:
        # The kiosk's one temporary-file writer: its leftovers after a power cut are what the
        # daemon removes at start (this file's own naming escaped that; found by a review).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"version": FILE_VERSION, "operators": ops}, indent=1,
                                           sort_keys=True).encode(), mode=0o600)


@dataclass
class StaffSession:
    """A logged-in operator. ``session_id`` is public (audit records name it); the token is not."""

    operator: str
    session_id: str
    created: float
    last_used: float
    token_digest: bytes = field(repr=False)
    #: The operator's stored entry at login (``OperatorStore.stamp``).
    stamp: bytes | None = field(default=None, repr=False)


class AuditFn(Protocol):
    """Records a staff action (the daemon's ``audit``; what it returns is not used here)."""

    def __call__(self, action: str, outcome: str, operator: str, *, staff_session: str | None = None,
                 required: bool = False) -> object: ...


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


class StaffAuth:
    """Logins, lockouts and sessions of the kiosk's operators. Thread-safe."""

    def __init__(self, config: StaffConfig, audit: AuditFn, *, clock: Callable[[], float] = time.monotonic,
                 exclusive: bool = True, state_file: Path | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        #: One session at a time (a kiosk: one screen, one operator); False lets several users
        #: be logged in at once (the central web page).
        self.exclusive = exclusive
        self.operators = OperatorStore(config.operators_file)
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()          # state below
        self._login_lock = threading.Lock()    # one scrypt at a time
        self._failures: collections.OrderedDict[str, _Failures] = collections.OrderedDict()
        # Times of failed logins in the window, per client ("": the kiosk's one screen); most recent last.
        self._recent: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._sessions: dict[bytes, StaffSession] = {}
        # Refusals that checked no PIN (rate limited, locked) are audited once per episode: the
        # client's window of failures, the operator's lockout. Each tap on "Log in" wrote a sealed,
        # fsynced audit row that is never dropped: a stranger tapping at the counter filled the
        # disk of a kiosk that was offline (found by a review). Most recent last.
        self._refusals_audited: collections.OrderedDict[tuple[str, str, float], None] = collections.OrderedDict()
        # The failure counts, lockouts and the screen's window of failures, kept on disk: in memory
        # only, pulling the kiosk's plug at the counter gave a PIN guesser a fresh count (the
        # README's limits until 2026-11-30). None: in memory only (the central web page).
        self._state_file = None if state_file is None else Path(state_file)
        self._wall = wall
        self._unsaved = False   # the last save failed: no login is checked until one succeeds
        self._load_state()

    def _load_state(self) -> None:
        """The counts saved by :meth:`_save_state`, aged by the wall-clock time since (never less
        than nothing: a clock set back keeps a lockout, it does not lengthen it past lockout_s)."""
        if self._state_file is None:
            return

        def number(value: object) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"not a finite number: {str(value)[:40]}")
            return float(value)

        try:
            with self._state_file.open("rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            data = json.loads(raw)
            elapsed = max(0.0, self._wall() - number(data["saved_at"]))
            operators, ages = data["operators"], data["screen_failure_ages_s"]
            if not isinstance(operators, dict) or not isinstance(ages, list):
                raise ValueError("operators must be an object, screen_failure_ages_s a list")
            ages = [number(a) for a in ages[-self.config.global_max_failures:]]
        except FileNotFoundError:
            return
        except Exception as exc:   # any damage (a review: Infinity and deep nesting raised past a narrower list)
            # Counting starts again, loudly: the file is the service's own (0600, state_dir).
            log.error("staff: the saved login failures in %s are unreadable (%s); counting starts again",
                      self._state_file, exc, extra={"event": "staff_state_unreadable"})
            return
        cfg, now = self.config, self._clock()
        for name, entry in list(operators.items())[-SAVED_NAMES:]:
            try:
                count = int(min(max(number(entry["count"]), 0.0), cfg.max_failures - 1))
                locked = min(max(number(entry["locked_s"]), 0.0), cfg.lockout_s) - elapsed
            except (KeyError, TypeError, ValueError):
                continue
            if isinstance(name, str) and (count or locked > 0):
                self._failures[name] = _Failures(count, now + locked if locked > 0 else 0.0)
        window = collections.deque(sorted(now - (a + elapsed) for a in ages if 0 <= a + elapsed < cfg.global_window_s))
        if window:
            self._recent[""] = window

    def _save_state(self) -> bool:
        """Lock held. What survives a restart: each operator's failures in a row and lockout (the
        latest SAVED_NAMES), and the kiosk screen's window of failures (``client=""``), as ages
        against the wall clock. False (logged) if it could not be written."""
        if self._state_file is None:
            return True
        now = self._clock()
        kept = [(n, f) for n, f in self._failures.items() if f.count or f.locked_until > now][-SAVED_NAMES:]
        data = {
            "saved_at": self._wall(),
            "operators": {n: {"count": f.count, "locked_s": max(0.0, f.locked_until - now)} for n, f in kept},
            "screen_failure_ages_s": [now - t for t in self._recent.get("", ())],
        }
        try:
            atomic_write(self._state_file, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            log.error("staff: cannot save the login failures to %s: %s; no login is checked until they are saved",
                      self._state_file, exc, extra={"event": "staff_state_unsaved"})
            self._unsaved = True
            return False
        self._unsaved = False
        return True

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def login(self, operator: str, secret: str, *, client: str = "") -> tuple[str, StaffSession]:
        """A new session for ``operator``: (token, session). Raises LoginRefused (audited).
        ``client``: who asks (a network server's client address), whose failures the rate limit
        counts; left out, all failures count together (the kiosk's one screen)."""
        cfg = self.config
        name = operator if isinstance(operator, str) and _OPERATOR_RE.fullmatch(operator) else "?"
        with self._login_lock:
            now = self._clock()
            with self._lock:
                if self._unsaved and not self._save_state():
                    # Fail closed: a failure a restart would forget is a free guess (a review: a
                    # full disk and a pulled plug gave 12 PIN checks where 3 lock).
                    raise LoginUnavailable("the kiosk cannot save failed logins (is its disk full?)")
                recent = self._recent.get(client)
                while recent and recent[0] <= now - cfg.global_window_s:
                    recent.popleft()
                if recent is not None and not recent:
                    del self._recent[client]
                elif recent is not None and len(recent) >= cfg.global_max_failures:
                    retry = recent[0] + cfg.global_window_s - now
                    self._audit_refusal("rate_limited", client, recent[0], name)
                    where = "from this address" if client else "at this kiosk"
                    raise LoginRefused("rate_limited", f"Too many failed logins {where}. Try again later.", retry)
                f = self._failures.get(name)
                if f is not None and f.locked_until > now:
                    self._audit_refusal("locked_out", name, f.locked_until, name)
                    raise LoginRefused("locked", "This operator is locked after repeated failures. Try again later.",
                                    f.locked_until - now)
            ok = self.operators.verify(name, secret if isinstance(secret, str) else "")
            now = self._clock()
            with self._lock:
                if not ok:
                    recent = self._recent.pop(client, None) or collections.deque()
                    self._recent[client] = recent       # most recent last: the oldest is evicted
                    while len(self._recent) > MAX_TRACKED_CLIENTS:
                        self._recent.popitem(last=False)
                    recent.append(now)
                    f = self._failures.pop(name, None) or _Failures()
                    self._failures[name] = f              # most recent last: the oldest is evicted
                    while len(self._failures) > MAX_TRACKED_NAMES:
                        self._failures.popitem(last=False)
                    f.count += 1
                    if f.count >= cfg.max_failures:
                        f.count, f.locked_until = 0, now + cfg.lockout_s
                    self._save_state()   # before anyone is told: a restart then changes nothing
                    if f.locked_until > now:
                        self._audit("login", "locked", name)
                        log.warning("operator locked after repeated failed logins",
                                    extra={"event": "staff_locked", "operator": name})
                        raise LoginRefused("locked", "This operator is locked after repeated failures. Try again later.",
                                        cfg.lockout_s)
                    self._audit("login", "bad_credentials", name)
                    raise LoginRefused("bad_credentials", "Unknown operator or wrong PIN.")
                if self._failures.pop(name, None) is not None:
                    self._save_state()
                token = secrets.token_urlsafe(32)
                s = StaffSession(name, secrets.token_hex(6), now, now, self._digest(token), self.operators.stamp(name))
                # The login counts only once its audit record is durable (required=True raises,
                # and the session already open stays as it was).
                self._audit("login", "ok", name, staff_session=s.session_id, required=True)
                for old in list(self._sessions.values()) if self.exclusive else []:
                    self._end(old, "superseded")   # one screen, one operator
                self._sessions[s.token_digest] = s
                log.info("staff login", extra={"event": "staff_login", "operator": name, "staff_session": s.session_id})
                return token, s

    def _audit_refusal(self, outcome: str, who: str, episode: float, name: str) -> None:
        # Lock held. The first refusal of an episode is audited; the rest of it only counted in
        # the log (rate-limited itself).
        key = (outcome, who, episode)
        if key in self._refusals_audited:
            log.info("login refused again (%s): not audited again", outcome,
                     extra={"event": "staff_refused_again", "reason": outcome})
            return
        self._refusals_audited[key] = None
        while len(self._refusals_audited) > MAX_TRACKED_CLIENTS + MAX_TRACKED_NAMES:
            self._refusals_audited.popitem(last=False)
        self._audit("login", outcome, name)

    def session(self, token: str | None) -> StaffSession | None:
        """The live session of ``token``, its idle clock restarted; None if none or ended."""
        return self._live(token, touch=True)

    def is_live(self, token: str | None) -> bool:
        """Is ``token`` a live session's? Unlike :meth:`session`, its idle clock is left alone."""
        return self._live(token, touch=False) is not None

    def _live(self, token: str | None, *, touch: bool) -> StaffSession | None:
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(self._digest(token))
            if s is None or not self._alive(s):
                return None
            if touch:
                s.last_used = self._clock()
            return s

    def check(self, session: StaffSession | None) -> bool:
        """Is ``session`` one this kiosk issued and still live? (``Daemon.submit``'s test.)"""
        if not isinstance(session, StaffSession):
            return False
        with self._lock:
            if self._sessions.get(session.token_digest) is not session or not self._alive(session):
                return False
            session.last_used = self._clock()
            return True

    def logout(self, token_or_session: str | StaffSession | None, reason: str = "logout") -> StaffSession | None:
        with self._lock:
            if isinstance(token_or_session, StaffSession):
                s = token_or_session if self._sessions.get(token_or_session.token_digest) is token_or_session else None
            else:
                s = self._sessions.get(self._digest(token_or_session)) if token_or_session else None
            if s is None or not self._alive(s):
                return None
            self._end(s, reason)
            return s

    def expire(self) -> None:
        """End sessions past their idle or total time (audited); the daemon calls this now and then."""
        with self._lock:
            for s in list(self._sessions.values()):
                self._alive(s)

    def _alive(self, s: StaffSession) -> bool:
        now = self._clock()
        if now - s.last_used > self.config.idle_timeout_s:
            self._end(s, "idle_timeout")
            return False
        if now - s.created > self.config.max_session_s:
            self._end(s, "session_expired")
            return False
        # Removed, or their PIN changed, since the login: the session ends with it (it lived on for
        # up to max_session_s; found by a review).
        try:
            current = self.operators.stamp(s.operator)
        except OperatorEntryInvalid:
            current = None
        if current is None or current != s.stamp:
            self._end(s, "credentials_changed")
            return False
        return True

    def _end(self, s: StaffSession, reason: str) -> None:
        if self._sessions.pop(s.token_digest, None) is not None:
            self._audit("logout", reason, s.operator, staff_session=s.session_id)
            log.info("staff logout", extra={"event": "staff_logout", "operator": s.operator,
                                            "staff_session": s.session_id, "reason": reason})


__all__ = ["LoginRefused", "OperatorEntryInvalid", "OperatorStore", "StaffAuth", "StaffConfig", "StaffSession",
           "validate_operator", "validate_secret"]
