"""Where the collector keeps what it receives: SQLite (default) or PostgreSQL, same schema.

Decisions, logs and staff audit records are stored idempotently on (kiosk_id, seq): inserting a
message that is already there does nothing, and tells the caller whether it was the *same* message (a harmless redelivery,
counted as ``duplicate``) or a different one reusing the sequence number (a ``replay``, refused).
Status keeps the latest report per kiosk (highest sequence number wins). Every refusal is counted
by reason and kept, bounded, in ``rejected`` for audit: bad input is refused, but never lost silently.

Times are integer milliseconds since the Unix epoch (UTC): exact, portable between both databases.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tools.central.errors import CentralError

StoreResult = Literal["stored", "duplicate", "replay", "ignored"]

#: Bytes of a refused message kept for audit (they are encrypted anyway; the bound stops a flood
#: of oversized garbage from filling the database).
REJECTED_SAMPLE_BYTES = 4096

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS decisions (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, site TEXT NOT NULL,
        created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL,
        decision TEXT NOT NULL, score DOUBLE PRECISION, digest TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (kiosk_id, seq))""",
    "CREATE INDEX IF NOT EXISTS decisions_time ON decisions (created_ms)",
    "CREATE INDEX IF NOT EXISTS decisions_kiosk_time ON decisions (kiosk_id, created_ms)",
    """CREATE TABLE IF NOT EXISTS logs (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, site TEXT NOT NULL,
        created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL,
        level TEXT NOT NULL, message TEXT NOT NULL, digest TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (kiosk_id, seq))""",
    """CREATE TABLE IF NOT EXISTS kiosk_status (
        kiosk_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, will_seq BIGINT, site TEXT NOT NULL,
        created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL, state TEXT NOT NULL, payload TEXT NOT NULL)""",
    # Staff actions at the kiosks (kiosk.records.AuditRecord): who did what to which customer, when.
    """CREATE TABLE IF NOT EXISTS audit (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, site TEXT NOT NULL,
        created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL,
        operator TEXT NOT NULL, action TEXT NOT NULL, subject TEXT, outcome TEXT NOT NULL,
        digest TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (kiosk_id, seq))""",
    "CREATE INDEX IF NOT EXISTS audit_time ON audit (created_ms)",
    "CREATE TABLE IF NOT EXISTS refusals (reason TEXT PRIMARY KEY, count BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rejected (
        received_ms BIGINT NOT NULL, reason TEXT NOT NULL, topic TEXT NOT NULL,
        kiosk_claim TEXT, seq BIGINT, size BIGINT NOT NULL, detail TEXT NOT NULL, sample BYTEA)""",
]


class StoreError(CentralError, RuntimeError):
    """Storing failed for a reason that is not the message's content: the disk is full, the
    database is down or refuses us. Nothing of the batch is stored; the caller must not
    acknowledge it, and may retry the same batch later."""


class StoreContentError(StoreError):
    """The database refused the *content* of an item (a value out of range, text it cannot hold):
    retrying cannot help. Raised only for such errors; everything else is a plain StoreError."""


def _content_error_types() -> tuple[type[BaseException], ...]:
    # Errors about the values, not the storage: integer overflow, text a database cannot encode,
    # constraint and data errors. Everything else (disk full, I/O, connection, permission,
    # locking) is about the storage and must never be taken for a bad message.
    found: list[type[BaseException]] = [OverflowError, UnicodeEncodeError, sqlite3.IntegrityError, sqlite3.DataError]
    try:
        import psycopg
    except ImportError:   # pragma: no cover - the central extra installs it
        return tuple(found)
    return (*found, psycopg.DataError, psycopg.IntegrityError)


_CONTENT_ERRORS = _content_error_types()


def _text(value: object, limit: int) -> str:
    # No NUL (PostgreSQL text refuses it) and no lone surrogate (not encodable): archiving a
    # refusal must never fail because of what the refused message held.
    text = str(value).replace("\x00", "\ufffd")[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class Accepted:
    """A verified, decrypted message ready to store."""

    kind: str            # decision | log | status | audit
    kiosk_id: str
    site: str
    seq: int
    created_ms: int
    received_ms: int
    digest: str
    payload: dict[str, Any]
    raw: bytes = b""     # the envelope as received: archived whole if the item is refused after all


@dataclass(frozen=True)
class Refusal:
    reason: str
    topic: str
    received_ms: int
    size: int
    detail: str
    kiosk_claim: str | None = None
    seq: int | None = None
    sample: bytes = b""
    # The sample is the whole message, kept whole: set for messages whose signature verified (a
    # registered kiosk sent them: the archive is the evidence, and they are bounded by the
    # envelope size limit). Unauthenticated garbage keeps only REJECTED_SAMPLE_BYTES.
    whole: bool = False


@dataclass(frozen=True)
class StoredDecision:
    kiosk_id: str
    seq: int
    site: str
    created_ms: int
    received_ms: int
    decision: str
    score: float | None
    payload: dict[str, Any]


class Store(Protocol):
    def store(self, items: Sequence[Accepted], refusals: Sequence[Refusal] = ()) -> list[StoreResult]: ...
    def record_refusals(self, refusals: Sequence[Refusal]) -> None: ...
    def query_decisions(self, *, kiosk_id: str | None = None, since_ms: int | None = None,
                        until_ms: int | None = None, outcome: str | None = None,
                        limit: int = 100) -> list[StoredDecision]: ...
    def query_audit(self, *, kiosk_id: str | None = None, operator: str | None = None,
                    subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...
    def refusal_counts(self) -> dict[str, int]: ...
    def count(self, table: str) -> int: ...
    def status(self) -> dict[str, dict[str, Any]]: ...
    def close(self) -> None: ...


class _SqlStore:
    """Shared SQL for both backends; subclasses provide a DB-API connection and the placeholder.

    Connections are per thread (the collector's store thread, a caller's thread for queries);
    ``close`` closes all of them.
    """

    ph = "?"
    _all: list[Any]
    _all_lock: threading.Lock
    _local: threading.local

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
        self._local = threading.local()

    def _conn(self) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.ph)

    def _init_schema(self) -> None:
        conn = self._conn()
        cur = conn.cursor()
        for stmt in _SCHEMA:
            cur.execute(stmt if self.ph == "%s" else stmt.replace("BYTEA", "BLOB"))
        conn.commit()

    def store(self, items: Sequence[Accepted], refusals: Sequence[Refusal] = ()) -> list[StoreResult]:
        """Store a batch in one transaction; return one result per item, in order."""
        conn = self._conn()
        cur = conn.cursor()
        results: list[StoreResult] = []
        extra_refusals: list[Refusal] = []
        try:
            for it in items:
                res = self._store_one(cur, it)
                results.append(res)
                if res in ("duplicate", "replay"):
                    extra_refusals.append(Refusal(
                        reason=res, topic=f"{it.site}/{it.kiosk_id}/{it.kind}", received_ms=it.received_ms,
                        size=len(it.raw), detail=f"sequence {it.seq} already stored"
                        + (" with different content" if res == "replay" else ""),
                        kiosk_claim=it.kiosk_id, seq=it.seq, sample=it.raw if res == "replay" else b"", whole=True,
                    ))
            self._record_refusals(cur, [*refusals, *extra_refusals], keep_duplicates=False)
            conn.commit()
        except Exception as exc:
            try:
                conn.rollback()
            except Exception:   # connection lost: drop it, the next call reconnects
                self._local.conn = None
            if isinstance(exc, _CONTENT_ERRORS):
                raise StoreContentError(f"the database refused an item of a batch of {len(items)}: {exc}") from exc
            raise StoreError(f"storing a batch of {len(items)} failed: {exc}") from exc
        return results

    def _store_one(self, cur: Any, it: Accepted) -> StoreResult:
        # json.dumps escapes control characters, so the payload text never holds a NUL (which
        # PostgreSQL text refuses); the extracted columns go through _text for the same reason.
        payload = json.dumps(it.payload, separators=(",", ":"), sort_keys=True)
        p = it.payload
        if it.kind == "status":
            # The newest report wins (highest sequence) - except the last will of the connection the
            # stored report came from: it was sealed when that connection opened, so its sequence
            # is lower than the "online" reports sent over it, yet it is newer than all of them.
            will_seq = p.get("will_seq")
            will_seq = int(will_seq) if isinstance(will_seq, int) and not isinstance(will_seq, bool) else None
            cur.execute(self._sql(
                "INSERT INTO kiosk_status (kiosk_id, seq, will_seq, site, created_ms, received_ms, state, payload) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id) DO UPDATE SET seq=excluded.seq, "
                "will_seq=excluded.will_seq, site=excluded.site, created_ms=excluded.created_ms, "
                "received_ms=excluded.received_ms, state=excluded.state, payload=excluded.payload "
                "WHERE kiosk_status.seq < excluded.seq OR "
                "(kiosk_status.will_seq = excluded.seq AND kiosk_status.seq <> excluded.seq)"),
                (it.kiosk_id, it.seq, will_seq, it.site, it.created_ms, it.received_ms, _text(p.get("state"), 32), payload))
            return "stored" if cur.rowcount == 1 else "ignored"
        if it.kind == "decision":
            score = p.get("score")
            cur.execute(self._sql(
                "INSERT INTO decisions (kiosk_id, seq, site, created_ms, received_ms, decision, score, digest, payload) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id, seq) DO NOTHING"),
                (it.kiosk_id, it.seq, it.site, it.created_ms, it.received_ms, _text(p.get("decision"), 64),
                 float(score) if isinstance(score, (int, float)) else None, it.digest, payload))
            table = "decisions"
        elif it.kind == "log":
            cur.execute(self._sql(
                "INSERT INTO logs (kiosk_id, seq, site, created_ms, received_ms, level, message, digest, payload) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id, seq) DO NOTHING"),
                (it.kiosk_id, it.seq, it.site, it.created_ms, it.received_ms, _text(p.get("level", ""), 16),
                 _text(p.get("message", ""), 4000), it.digest, payload))
            table = "logs"
        elif it.kind == "audit":
            subject = p.get("subject")
            cur.execute(self._sql(
                "INSERT INTO audit (kiosk_id, seq, site, created_ms, received_ms, operator, action, subject, outcome, "
                "digest, payload) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id, seq) DO NOTHING"),
                (it.kiosk_id, it.seq, it.site, it.created_ms, it.received_ms, _text(p.get("operator", ""), 64),
                 _text(p.get("action", ""), 32), None if subject is None else _text(subject, 128),
                 _text(p.get("outcome", ""), 64), it.digest, payload))
            table = "audit"
        else:
            raise StoreError(f"unknown kind {it.kind!r}")
        if cur.rowcount == 1:
            return "stored"
        cur.execute(self._sql(f"SELECT digest FROM {table} WHERE kiosk_id=%s AND seq=%s"), (it.kiosk_id, it.seq))
        row = cur.fetchone()
        return "duplicate" if row is not None and row[0] == it.digest else "replay"

    def _record_refusals(self, cur: Any, refusals: Iterable[Refusal], keep_duplicates: bool = False) -> None:
        counts: dict[str, int] = {}
        for r in refusals:
            counts[r.reason] = counts.get(r.reason, 0) + 1
            if r.reason == "duplicate" and not keep_duplicates:
                continue   # a redelivery is normal after a reconnect: count it, do not archive it
            cur.execute(self._sql(
                "INSERT INTO rejected (received_ms, reason, topic, kiosk_claim, seq, size, detail, sample) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"),
                (r.received_ms, r.reason, _text(r.topic, 512), r.kiosk_claim, r.seq, r.size, _text(r.detail, 1000),
                 r.sample if r.whole else r.sample[:REJECTED_SAMPLE_BYTES]))
        for reason, n in sorted(counts.items()):   # sorted: a fixed lock order between collectors
            cur.execute(self._sql(
                "INSERT INTO refusals (reason, count) VALUES (%s,%s) "
                "ON CONFLICT (reason) DO UPDATE SET count = refusals.count + excluded.count"), (reason, n))

    def record_refusals(self, refusals: Sequence[Refusal]) -> None:
        if refusals:
            self.store([], refusals)

    def query_decisions(self, *, kiosk_id: str | None = None, since_ms: int | None = None,
                        until_ms: int | None = None, outcome: str | None = None,
                        limit: int = 100) -> list[StoredDecision]:
        where: list[str] = []
        args: list[str | int] = []
        for clause, value in (("kiosk_id = %s", kiosk_id), ("created_ms >= %s", since_ms),
                              ("created_ms < %s", until_ms), ("decision = %s", outcome)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = ("SELECT kiosk_id, seq, site, created_ms, received_ms, decision, score, payload FROM decisions"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_ms, kiosk_id, seq LIMIT %s")
        args.append(int(limit))
        rows = self._read(sql, args)
        return [StoredDecision(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), r[5], r[6], json.loads(r[7])) for r in rows]

    def query_audit(self, *, kiosk_id: str | None = None, operator: str | None = None,
                    subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Staff actions, oldest first: the decrypted payload plus kiosk_id, site, seq."""
        where: list[str] = []
        args: list[str | int] = []
        for col, val in (("kiosk_id", kiosk_id), ("operator", operator), ("subject", subject)):
            if val is not None:
                where.append(f"{col} = %s")
                args.append(val)
        sql = ("SELECT kiosk_id, site, seq, payload FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_ms, kiosk_id, seq LIMIT %s")
        args.append(int(limit))
        rows = self._read(sql, args)
        return [{**json.loads(r[3]), "kiosk_id": r[0], "site": r[1], "seq": int(r[2])} for r in rows]

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of one query; the read transaction is ended at once (PostgreSQL would hold it open)."""
        cur = self._conn().cursor()
        cur.execute(self._sql(sql), args)
        rows = cur.fetchall()
        self._conn().commit()
        return list(rows)

    def refusal_counts(self) -> dict[str, int]:
        rows = self._read("SELECT reason, count FROM refusals ORDER BY reason")
        return {r[0]: int(r[1]) for r in rows}

    def count(self, table: str) -> int:
        if table not in ("decisions", "logs", "kiosk_status", "rejected", "audit"):
            raise ValueError(table)
        cur = self._conn().cursor()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        n = int(cur.fetchone()[0])
        self._conn().commit()
        return n

    def status(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT kiosk_id, seq, state, received_ms, payload FROM kiosk_status ORDER BY kiosk_id")
        return {r[0]: {"seq": int(r[1]), "state": r[2], "received_ms": int(r[3]), **json.loads(r[4])} for r in rows}


class SqliteStore(_SqlStore):
    """SQLite in WAL mode; one connection per thread (the collector writes from one thread)."""

    ph = "?"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        self._init_schema()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")   # the audit trail: acked means on disk
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn


class PostgresStore(_SqlStore):
    """PostgreSQL via psycopg 3. Several collectors may share one database."""

    ph = "%s"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:   # pragma: no cover - the central extra installs it
            raise StoreError("PostgreSQL needs psycopg: pip install 'sigkiosk[central]'") from exc
        self.dsn = dsn
        self._psycopg = psycopg
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        # Two collectors starting together would race on CREATE TABLE IF NOT EXISTS: serialise them.
        conn = self._conn()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(724311)")
            try:
                for stmt in _SCHEMA:
                    cur.execute(stmt)
                conn.commit()
            finally:
                cur.execute("SELECT pg_advisory_unlock(724311)")
                conn.commit()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._psycopg.connect(self.dsn)
            except self._psycopg.OperationalError as exc:
                raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _init_schema(self) -> None:   # done under an advisory lock in __init__
        pass


def open_store(db: str | Path) -> Store:
    """``postgresql://...`` or ``postgres://...`` opens PostgreSQL; ``sqlite:///path`` or a path, SQLite."""
    s = str(db)
    if s.startswith(("postgresql://", "postgres://")):
        return PostgresStore(s)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///") - 1:] if s.startswith("sqlite:////") else s[len("sqlite:///"):]
    return SqliteStore(Path(s))
