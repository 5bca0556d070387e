"""The on-disk outbox: every message is committed here before it is published.

paho-mqtt keeps unsent messages in memory only; a power cut or a crash would lose them. So the
link seals a message, commits it to this SQLite database (WAL, ``synchronous=FULL``), and only
then hands it to MQTT. A log row is deleted when the broker's PUBACK arrives. A row sealed with a
receipt (decisions, staff actions, evidence: ``kiosk.receipts``) is only marked sent then, and
deleted when a collector's receipt for it matches: a broker acknowledges a message while it holds it
in memory only, and a broker killed before its next autosave would lose it. A sent row without its
receipt after ``receipt_wait_s`` is sent again, waiting twice as long each time up to
``receipt_wait_max_s``, once a collector has receipted a message published after it (``pending``).
After a reconnect or a restart, the remaining rows are sent again, oldest first.

Sequence numbers live in the same database and are allocated in the same transaction as the row,
so they survive restarts and are never reused. A fresh database starts at the current time in
microseconds: a kiosk whose state was wiped still counts upward from anything it sent before, so
the collector never mistakes its new messages for replays.

Decisions are never dropped (a full disk raises ``OutboxError`` to the caller). Logs have a byte
quota: when it is exceeded the oldest log rows are dropped, counted, and a warning is logged.
Evidence (a decision's questioned signature) is kept like a decision once stored, but is refused
when the disk is nearly full (the log reserve), so it never takes a decision's last bytes, and
when the evidence waiting to be sent has reached its own quota (``evidence_quota_bytes``).

An outbox belongs to the kiosk that first opened it (``owner``): its rows are sealed with that
kiosk's key for that kiosk's topics, which the broker lets no other identity publish. A second
kiosk pointed at the same file (two configurations sharing a relative ``outbox_path``, a device
re-provisioned under a new id with messages still queued) would take the first one's rows, be
refused them by the broker over and over, and its own would wait on the other; so opening another
kiosk's outbox is refused, with both ids named.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kiosk.errors import ApplianceError
from kiosk.receipts import Receipt
from kiosk.templates import free_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The longest a refused row waits before it is tried again (the link's back-off stops at
#: ``reconnect_max_s``, 60 s by default); a row set further ahead is due (a clock stepped back).
MAX_DEFER_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    receipt BLOB,
    sent REAL,
    sends INTEGER NOT NULL DEFAULT 0,
    first_sent REAL,
    sent_order INTEGER
);
CREATE TABLE IF NOT EXISTS owner (one INTEGER PRIMARY KEY CHECK (one = 1), kiosk_id TEXT NOT NULL);
"""
#: Columns added since the first outboxes were written (a kiosk's file from before is upgraded in place).
_ADDED_COLUMNS = (("receipt", "BLOB"), ("sent", "REAL"), ("sends", "INTEGER NOT NULL DEFAULT 0"),
                  ("first_sent", "REAL"), ("sent_order", "INTEGER"))
#: The columns after ``payload`` are read from these indexes alone: reading them from the table
#: follows each row's overflow pages (evidence is up to 700 KB), and with 250 MiB of evidence
#: waiting for receipts each look took 100-160 ms under the lock decisions wait on (a review).
#: One index per question, no more: every index costs each decision's commit a page of WAL (the
#: kind index of older files, ``outbox_kind (kind, id)``, is widened into ``outbox_kind_state``).
_INDEXES = """
DROP INDEX IF EXISTS outbox_kind;
CREATE INDEX IF NOT EXISTS outbox_kind_state ON outbox(kind, id, sent, first_sent);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(sent, next_attempt, sent_order);
"""


class OutboxError(ApplianceError, RuntimeError):
    """The outbox could not store a message (disk full, database unreadable...)."""


def receipt_waits_problem(wait_s: float, wait_max_s: float) -> str | None:
    """What is wrong with these receipt waits, or None: the one rule of the outbox and ``[link]``
    (each raises its own layer's error with it)."""
    if not 0 < wait_s <= wait_max_s:
        return f"receipt waits must be 0 < receipt_wait_s ({wait_s}) <= receipt_wait_max_s ({wait_max_s})"
    return None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    seq: int
    kind: str
    topic: str
    payload: bytes
    attempts: int


@dataclass(frozen=True)
class Backlog:
    """Rows not yet delivered, per kind: ``queued`` all of them, ``awaiting_receipt`` those the
    broker took whose collector receipt has not come, ``oldest_unconfirmed_s`` how long ago the
    oldest of those was first sent."""

    queued: dict[str, int]
    awaiting_receipt: dict[str, int]
    oldest_unconfirmed_s: dict[str, float]


class Outbox:
    """A durable FIFO of sealed messages. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path, *, owner: str | None = None, log_quota_bytes: int = 8 << 20,
                 log_reserve_bytes: int = 16 << 20, evidence_quota_bytes: int = 256 << 20,
                 receipt_wait_s: float = 120.0, receipt_wait_max_s: float = 3600.0) -> None:
        if problem := receipt_waits_problem(receipt_wait_s, receipt_wait_max_s):
            raise OutboxError(problem)
        self.receipt_wait_s = receipt_wait_s
        self.receipt_wait_max_s = receipt_wait_max_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log_quota_bytes = log_quota_bytes
        # Evidence waiting for the link, at most this much: 175 KB a pen signature, up to 700 KB a
        # picture, one per decision anyone at the counter can ask for. Unbounded, an offline kiosk's
        # disk filled to the reserve, and the update agent could no longer stage a bundle (found by
        # a review). Past it a decision's evidence is not stored (the decision is; staff see the
        # count), the evidence already queued is kept: each belongs to a recorded decision.
        self.evidence_quota_bytes = evidence_quota_bytes
        # Logs are stored only while the file system keeps this much free: on a filling disk the
        # last bytes belong to decisions, which are never dropped.
        self.log_reserve_bytes = log_reserve_bytes
        self._unsaved_drops = 0
        self._lock = threading.Lock()
        if not self.path.exists():
            # Only envelopes live here (encrypted, signed), but there is no reason for anyone
            # else to read them; SQLite gives the -wal/-shm files the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError(f"{self.path}: could not switch to WAL mode (got {mode})")
            # FULL: a committed decision survives a power cut, not only a process crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {decl}")
            self._db.executescript(_INDEXES)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('next_seq', ?)", (int(time.time() * 1_000_000),)
            )
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('dropped_logs', 0)")
            if owner is not None:
                self._claim(owner)
            # Bytes of queued logs and evidence, kept in memory so the quota checks are O(1).
            self._log_bytes = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM outbox WHERE kind='log'").fetchone()[0]
            self._evidence_bytes = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM outbox WHERE kind='evidence'").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    def _claim(self, owner: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO owner(one, kiosk_id) VALUES (1, ?)", (owner,))
        held = self._db.execute("SELECT kiosk_id FROM owner").fetchone()[0]
        if held != owner:
            queued = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self._db.close()
            raise OutboxError(
                f"outbox {self.path} belongs to kiosk {held!r}, not {owner!r} ({queued} message(s) queued, sealed "
                f"for {held!r}, which only {held!r} can send): give this kiosk its own outbox_path, or, if "
                f"{held!r} is retired and nothing is queued, remove the file")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -----------------------------------------------------------------------------

    def reserve_seq(self) -> int:
        """Allocate one sequence number for a message that does not go through the outbox (status)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seq = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot allocate a sequence number: {exc}") from exc
        return seq

    def add(self, kind: str, topic: str, build: Callable[[int], bytes | tuple[bytes, bytes | None]]) -> int:
        """Allocate a sequence number, call ``build(seq)`` to seal the message, commit; return seq.

        ``build`` returns the sealed message, or it and its receipt token: a row with a token is
        deleted only on a collector's matching receipt (``confirm``), one without at the broker's
        acknowledgement (``acknowledged``).

        Sealing happens inside the transaction because the sequence number is in the signed
        header: allocating it and storing the message must be one atomic step. A log record
        dropped because the disk is nearly full returns -1 (counted in ``dropped_logs``).
        """
        dropped = 0
        with self._lock:
            if kind == "evidence" and free_bytes(self.path.parent) < self.log_reserve_bytes:
                # Evidence is large and comes after its decision: the last bytes are for decisions.
                raise OutboxError("the disk is nearly full: evidence is not stored (the space left is for decisions)")
            if kind == "log" and free_bytes(self.path.parent) < self.log_reserve_bytes:
                # The disk is nearly full: the space left is for decisions. Not even the drop
                # counter is written (every write grows the WAL); it is saved with the next log.
                self._unsaved_drops += 1
                return -1
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seq = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
                built = build(seq)
                payload, receipt = built if isinstance(built, tuple) else (built, None)
                if kind == "evidence" and self._evidence_bytes + len(payload) > self.evidence_quota_bytes:
                    raise OutboxError(
                        f"the evidence waiting to be sent has reached its quota ({self.evidence_quota_bytes >> 20} MiB): "
                        "this decision's evidence is not stored")
                if kind == "log" and self._unsaved_drops:
                    self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_logs'", (self._unsaved_drops,))
                log_bytes = self._log_bytes
                if kind == "log":
                    dropped, log_bytes = self._enforce_log_quota(len(payload))
                    if dropped < 0:   # a single log record larger than the whole quota
                        self._db.execute("UPDATE meta SET value=value+1 WHERE key='dropped_logs'")
                        self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                        self._db.execute("COMMIT")
                        self._unsaved_drops = 0   # saved just above, with this one
                        log.warning("log record of %d bytes exceeds the log quota; dropped", len(payload))
                        return seq
                self._db.execute(
                    "INSERT INTO outbox(seq, kind, topic, payload, size, created, receipt) VALUES (?,?,?,?,?,?,?)",
                    (seq, kind, topic, payload, len(payload), time.time(), receipt),
                )
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
                if kind == "log":
                    self._log_bytes = log_bytes + len(payload)
                    self._unsaved_drops = 0
                elif kind == "evidence":
                    self._evidence_bytes += len(payload)
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot store {kind} in the outbox: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
        if dropped > 0:
            log.warning("log quota of %d bytes reached: dropped the %d oldest log records", self.log_quota_bytes, dropped)
        return seq

    def _enforce_log_quota(self, incoming: int) -> tuple[int, int]:
        """Delete oldest log rows until ``incoming`` fits (inside the caller's transaction).

        Returns (rows dropped, or -1 if the record can never fit; queued log bytes afterwards).
        """
        used = self._log_bytes
        if incoming > self.log_quota_bytes:
            return -1, used
        dropped = 0
        while used + incoming > self.log_quota_bytes:
            # A few oldest rows at a time (the index on kind, id): with the quota full each new
            # record drops one or two, and reading every log row for that (fetchall) cost 40 ms
            # a record at 8 MiB of logs, inside the lock decisions wait on (found by a review).
            rows = self._db.execute("SELECT id, size FROM outbox WHERE kind='log' ORDER BY id LIMIT 16").fetchall()
            if not rows:
                break
            gone = []
            for rid, size in rows:
                gone.append(rid)
                used -= size
                if used + incoming <= self.log_quota_bytes:
                    break
            self._db.executemany("DELETE FROM outbox WHERE id=?", [(rid,) for rid in gone])
            dropped += len(gone)
        if dropped:
            self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_logs'", (dropped,))
        return dropped, used

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- sending -----------------------------------------------------------------------------

    def pending(self, limit: int, exclude: Iterable[int] = (), now: float | None = None,
                receipted_order: int | None = None) -> list[OutboxRow]:
        """Oldest rows due for sending, skipping ``exclude`` (ids already in flight): rows never
        sent, and rows sent whose receipt is overdue although a collector has receipted a message
        published after them (``receipted_order``: the highest publish order, as ``acknowledged``
        was given it, of a receipted message; None: none since the start). A collector session
        takes a kiosk's messages in the order they were published, so such a row was lost (a
        broker killed before its autosave) or its receipt was. Without that sign an overdue row
        waits in a collector's queue at the broker, and a copy would only queue behind it. Neither
        time nor the sequence numbers are that sign (reviews: "any receipt since" sent 190 copies of
        10 decisions in a 20 s outage, and a collector back to a backlog receipting its oldest made
        the rest due, 233 copies of 300; a status report sealed after a backlog, published while
        the backlog was still being sent, did the same with sequence numbers). Collectors receipt
        the kiosk's status reports too, so a live collector is seen within a health interval.

        A row set further ahead than any wait asks (:data:`MAX_DEFER_S` for a refused row, the
        longer of that and ``receipt_wait_max_s`` for a sent one) is due: the wall clock stepped
        back since (NTP correcting a fast clock), and it would have waited the whole step, a day
        perhaps, across restarts, while newer rows went past it (found by a review)."""
        excl = set(exclude)
        now = time.time() if now is None else now
        with self._lock:
            # Ids from the index alone (outbox_due), then the rows: see _INDEXES.
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM outbox INDEXED BY outbox_due WHERE (sent IS NULL AND (next_attempt <= ? OR "
                "next_attempt > ?)) OR (sent IS NOT NULL AND COALESCE(sent_order, 0) < ? AND (next_attempt <= ? OR "
                "next_attempt > ?)) ORDER BY id LIMIT ?",
                (now, now + MAX_DEFER_S, -1 if receipted_order is None else receipted_order, now,
                 now + max(MAX_DEFER_S, self.receipt_wait_max_s), limit + len(excl)),
            ) if r[0] not in excl][:limit]
            rows = self._db.execute(
                f"SELECT id, seq, kind, topic, payload, attempts FROM outbox WHERE id IN ({','.join('?' * len(ids))}) "
                "ORDER BY id", ids).fetchall() if ids else []
        return [OutboxRow(*r) for r in rows]

    def acknowledged(self, ids: Iterable[int], now: float | None = None,
                     sent_order: Mapping[int, int] | None = None) -> int:
        """The broker acknowledged these rows: delete those without a receipt token, mark the
        others sent (due again if their receipt has not come in time); ``sent_order``: row id ->
        the order it was published in (``pending``). Returns the rows deleted."""
        ids = list(ids)
        if not ids:
            return 0
        now = time.time() if now is None else now
        order = sent_order or {}

        def work() -> int:
            # The wait doubles with each send (a lost receipt is rare; a broker that keeps losing
            # messages should not be sent every row every two minutes).
            self._db.executemany(
                "UPDATE outbox SET sent=?, first_sent=COALESCE(first_sent, ?), sends=sends+1, sent_order=?, "
                "next_attempt=? + MIN(?, ? * (1 << MIN(sends, 20))) WHERE id=? AND receipt IS NOT NULL",
                [(now, now, order.get(i), now, self.receipt_wait_max_s, self.receipt_wait_s, i) for i in ids])
            return self._delete_rows(ids, "receipt IS NULL")

        # Not fatal if it fails: the rows are sent again and the collector discards the duplicates.
        return self._write(f"record {len(ids)} acknowledged rows", work, 0)

    def last_sent_order(self) -> int:
        """The highest publish order recorded (0 for none): a restarted link counts on from it."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(sent_order), 0) FROM outbox").fetchone()[0])

    def confirm(self, receipts: Iterable[Receipt]) -> list[int]:
        """Delete the rows these receipts match (sequence number and token); their sequence
        numbers. A receipt for no row here (already confirmed, another kiosk's, forged) changes
        nothing."""
        items = [(r.seq, r.token) for r in receipts]
        if not items:
            return []

        def work() -> list[int]:
            found = [(row[0], seq) for seq, token in items for row in self._db.execute(
                "SELECT id FROM outbox WHERE seq=? AND receipt=?", (seq, token))]
            self._delete_rows([i for i, _ in found])
            return [seq for _, seq in found]

        # Not fatal if it fails: the row is sent again, and its duplicate receipted again.
        return self._write(f"delete {len(items)} confirmed rows", work, [])

    def _write(self, what: str, work: Callable[[], T], failed: T) -> T:
        """``work()`` in one transaction under the lock; its result, or ``failed`` (logged) if it
        failed. Any error rolls back, not only SQLite's: an integer SQLite cannot bind raised
        OverflowError and left the transaction open, refusing the next decision (a review)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                n = work()
                self._db.execute("COMMIT")
                return n
            except Exception as exc:
                self._rollback()
                log.error("outbox: could not %s: %s", what, exc)
                return failed

    def forget_receipts(self) -> int:
        """Receipts are switched off (``[link] receipts = false``): rows sealed with a token are
        sent again and deleted at the broker's acknowledgement, as rows without one are; no
        collector would ever confirm them now. Returns how many."""
        with self._lock:
            try:
                cur = self._db.execute("UPDATE outbox SET receipt=NULL, sent=NULL, first_sent=NULL, next_attempt=0 "
                                       "WHERE receipt IS NOT NULL")
                return cur.rowcount
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot clear the receipt tokens of {self.path}: {exc}") from exc

    def _delete_rows(self, ids: list[int], condition: str = "1") -> int:
        """Delete rows (inside the caller's transaction), keeping the quota counters right."""
        freed = {"log": 0, "evidence": 0}
        deleted = 0
        for i in ids:
            row = self._db.execute(f"DELETE FROM outbox WHERE id=? AND {condition} RETURNING kind, size", (i,)).fetchone()
            if row is not None:
                deleted += 1
                if row[0] in freed:
                    freed[row[0]] += row[1]
        self._log_bytes -= freed["log"]
        self._evidence_bytes -= freed["evidence"]
        return deleted

    def defer(self, row_id: int, delay_s: float) -> None:
        """Back off a row the broker refused, so that it is retried later, not in a hot loop."""
        delay_s = min(delay_s, MAX_DEFER_S)
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt=? WHERE id=?", (time.time() + delay_s, row_id)
            )

    # -- figures -----------------------------------------------------------------------------

    def depth(self) -> dict[str, int]:
        """Rows per kind not yet delivered: waiting to be sent, or sent and waiting for a receipt."""
        return self.backlog().queued

    def backlog(self, now: float | None = None) -> Backlog:
        """What is not yet delivered, per kind, from one read (the two counts always agree)."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, COUNT(*), COUNT(sent), MIN(first_sent) FROM outbox GROUP BY kind").fetchall()
        oldest = {k: max(0.0, now - first) for k, _, _, first in rows if first is not None}
        return Backlog(queued={k: n for k, n, _, _ in rows}, awaiting_receipt={k: a for k, _, a, _ in rows if a},
                       oldest_unconfirmed_s=oldest)

    def dropped_logs(self) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key='dropped_logs'").fetchone()[0] + self._unsaved_drops

    def next_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
