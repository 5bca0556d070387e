"""Where the collector keeps what it receives: SQLite (default) or PostgreSQL, same schema.

Decisions, logs and staff audit records are stored idempotently on (kiosk_id, seq): inserting a
message that is already there does nothing, and tells the caller whether it was the *same* message (a harmless redelivery,
counted as ``duplicate``) or a different one reusing the sequence number (a ``replay``, refused).
Status keeps the latest report per kiosk (highest sequence number wins). Every refusal is counted
by reason and kept, bounded, in ``rejected`` for audit: bad input is refused, but never lost silently.

Times are integer milliseconds since the Unix epoch (UTC): exact, portable between both databases.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from tools.central.errors import CentralError
from tools.central.query import DecisionFilter, QueryError, mode_name, search_key

StoreResult = Literal["stored", "duplicate", "replay", "ignored", "unknown_decision", "evidence_exists"]
#: Results that refuse an item: archived in ``rejected`` and counted (a duplicate is counted only).
REFUSED_RESULTS = ("duplicate", "replay", "unknown_decision", "evidence_exists")

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
    # A decision names several models (model_versions): one row each, so "which decisions did
    # model version X make" is an indexed lookup, not a scan of the payloads. The key leads with
    # the version: it is that lookup's index, and the only one (each index costs every insert).
    """CREATE TABLE IF NOT EXISTS decision_models (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
        PRIMARY KEY (version, model, kiosk_id, seq))""",
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


#: The searchable columns of ``decisions`` beyond the first schema's, filled from the payload at
#: insert, lower-cased (``tools.central.query.search_key``: case-insensitive alike on both
#: databases). ``outcome`` is ``decision`` lower-cased; ``mode`` is pen/paper. A database made
#: before them gets them added and back-filled from the stored payloads when it is opened.
DECISION_COLUMNS = ("subject", "mode", "operator", "profile", "outcome")

_INDEXES = [
    *(f"CREATE INDEX IF NOT EXISTS decisions_{c}_time ON decisions ({c}, created_ms)"
      for c in ("site", *DECISION_COLUMNS)),
    # The collector looks up the refusals it may reconsider (``refused_for_now``) by reason and kiosk.
    "CREATE INDEX IF NOT EXISTS rejected_reason_kiosk ON rejected (reason, kiosk_claim, received_ms)",
    # A verified refusal's bytes are archived once (_record_refusals looks for them by these).
    "CREATE INDEX IF NOT EXISTS rejected_kiosk_seq ON rejected (kiosk_claim, seq, reason)",
]

#: Rows back-filled per transaction when an old database is migrated.
MIGRATE_BATCH = 1000


# Evidence (kiosk.records.EvidenceRecord): a decision's questioned signature, raw biometric data.
# Kept beside its decision (kiosk_id, decision_seq) for the retention period, then purged
# (``purge_evidence``); ``envelope`` is the sealed message as received, so an export can check the
# kiosk's signature again. Never read by the decision queries.
_EVIDENCE_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS evidence (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, site TEXT NOT NULL, decision_seq BIGINT NOT NULL,
        session_id TEXT NOT NULL, mode TEXT NOT NULL, created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL,
        digest TEXT NOT NULL, payload TEXT NOT NULL, envelope BYTEA NOT NULL,
        PRIMARY KEY (kiosk_id, seq))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS evidence_decision ON evidence (kiosk_id, decision_seq)",
    "CREATE INDEX IF NOT EXISTS evidence_time ON evidence (created_ms)",
]


class StoreError(CentralError, RuntimeError):
    """Storing failed for a reason that is not the message's content: the disk is full, the
    database is down or refuses us. Nothing of the batch is stored; the caller must not
    acknowledge it, and may retry the same batch later."""


class StoreMissing(StoreError):
    """There is no central database where one was to be read (a mistyped path, a wrong schema)."""


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


def _search_columns(p: dict[str, Any]) -> tuple[str | None, ...]:
    """subject, mode, operator, profile, outcome of a decision payload, as DECISION_COLUMNS hold them."""
    return (search_key(p.get("subject")), mode_name(p.get("mode")), search_key(p.get("operator"), 64),
            search_key(p.get("profile"), 64), search_key(p.get("decision"), 64) or "")


def _model_rows(kiosk_id: str, seq: int, p: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    """decision_models rows of a decision payload: (kiosk_id, seq, model, version), lower-cased."""
    mv = p.get("model_versions")
    rows = []
    for model, version in (mv.items() if isinstance(mv, dict) else ()):
        name, ver = search_key(model, 64), search_key(version, 128)
        if name is not None and ver is not None:
            rows.append((kiosk_id, seq, name, ver))
    return rows


def _order(f: DecisionFilter) -> str:
    """Oldest first. One kiosk's records in the order it made them, its sequence: its clock may
    have been stepped back (a lost RTC set by NTP) and created_ms then disagrees with the order of
    events. A fleet's records have no common sequence, so by the kiosks' clocks."""
    return " ORDER BY seq" if f.kiosk_id is not None else " ORDER BY created_ms, kiosk_id, seq"


def _payload(text: str) -> dict[str, Any]:
    """A stored payload; one damaged by hand (the collector stores only JSON objects) reads as
    empty instead of failing a whole query or migration."""
    try:
        p = json.loads(text)
    except ValueError:
        return {}
    return p if isinstance(p, dict) else {}


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
    receipt: bytes | None = None   # its receipt token (kiosk.receipts), sent to the kiosk once stored


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
    # Whether a kiosk's signature verified: what a registered kiosk key sent is always archived.
    verified: bool = False
    # False: counted in ``refusals`` only, no row in ``rejected`` (the collector's bound on what an
    # unverified sender may archive).
    archive: bool = True
    # The message's receipt token, for one a kiosk's signature verified and the central key opens:
    # archived whole, it is as durably kept as a stored one, so its kiosk may let it go.
    receipt: bytes | None = None


@dataclass(frozen=True)
class HeldRefusal:
    """A refused message archived whole, for a reason a later state may lift (``refused_for_now``)."""

    received_ms: int
    reason: str
    kiosk_claim: str
    seq: int
    message: bytes


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
    digest: str | None = None   # the envelope digest; filled by the case export's lookup

    # What the payload says, as sent (case kept); the searchable columns hold it lower-cased.
    def _text(self, key: str) -> str | None:
        v = self.payload.get(key)
        return v if isinstance(v, str) else None

    @property
    def subject(self) -> str | None:
        return self._text("subject")

    @property
    def operator(self) -> str | None:
        return self._text("operator")

    @property
    def profile(self) -> str | None:
        return self._text("profile")

    @property
    def paper_references(self) -> str | None:
        """A paper decision's references: "paper" or "pad-ink" (None for pen, or schema 1)."""
        return self._text("paper_references")

    @property
    def mode(self) -> str | None:
        """pen or paper (the payload's online/offline)."""
        return mode_name(self.payload.get("mode"))

    @property
    def model_versions(self) -> dict[str, str]:
        mv = self.payload.get("model_versions")
        return {str(k): str(v) for k, v in mv.items()} if isinstance(mv, dict) else {}

    @property
    def reasons(self) -> list[str]:
        r = self.payload.get("reasons")
        return [str(x) for x in r] if isinstance(r, list) else []

    @property
    def explanations(self) -> list[str]:
        """The verdict's reasons in words, as the kiosk's screen gives them (empty before schema 3)."""
        e = self.payload.get("explanations")
        return [str(x) for x in e] if isinstance(e, list) else []


_REFUSED_DETAIL = {
    "duplicate": "sequence {seq} already stored",
    "replay": "sequence {seq} already stored with different content",
    "unknown_decision": "evidence {seq} names decision {ref}, which this kiosk has not stored with that digest, "
                        "session and mode",
    "evidence_exists": "decision {ref} already has its evidence",
}


@dataclass(frozen=True)
class StoredEvidence:
    """A stored evidence record: raw biometric data, read only by the case export."""

    kiosk_id: str
    seq: int
    site: str
    created_ms: int
    received_ms: int
    digest: str
    payload: dict[str, Any]
    envelope: bytes


@dataclass(frozen=True)
class RejectedSummary:
    """Refused messages of one reason from one claimed kiosk: how many, the last one's time and detail."""

    reason: str
    kiosk_claim: str | None
    count: int
    last_ms: int
    detail: str


class Store(Protocol):
    def store(self, items: Sequence[Accepted], refusals: Sequence[Refusal] = (), *,
              archive: bool = True) -> list[StoreResult]: ...
    def refused_for_now(self, reason: str, kiosks: Sequence[str] | None = None, since_ms: int = 0,
                        limit: int = 500, before: tuple[int, int] | None = None) -> list[HeldRefusal]: ...
    def forget_refused(self, held: Sequence[HeldRefusal]) -> None: ...
    def held_bytes(self, kiosk_claim: str, reasons: Sequence[str], since_ms: int = 0) -> tuple[int, int]: ...
    def refile_refused(self, refiled: Sequence[tuple[HeldRefusal, str, str]]) -> None: ...
    def record_refusals(self, refusals: Sequence[Refusal]) -> None: ...
    def query_decisions(self, where: DecisionFilter | None = None, /, **fields: Any) -> list[StoredDecision]: ...
    def rejected_summary(self, limit: int = 100) -> list[RejectedSummary]: ...
    def query_audit(self, where: DecisionFilter | None = None, /, **fields: Any) -> list[dict[str, Any]]: ...
    def refusal_counts(self) -> dict[str, int]: ...
    def count(self, table: str) -> int: ...
    def status(self) -> dict[str, dict[str, Any]]: ...
    def has_decision(self, kiosk_id: str, seq: int, digest: str) -> bool: ...
    def purge_evidence(self, older_than_ms: int) -> int: ...
    def evidence_case(self, kiosk_id: str, decision_seq: int) -> tuple[StoredDecision | None, StoredEvidence | None]: ...
    def find_decision_seq(self, session_id: str) -> list[tuple[str, int]]: ...
    def release(self) -> None: ...
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

    def release(self) -> None:
        """Close the calling thread's connection (a server's thread per client ends with it; the
        next call from this thread opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._all_lock:
            self._all = [c for c in self._all if c is not conn]
        try:
            conn.close()
        except Exception:
            pass

    def _conn(self) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.ph)

    def _init_schema(self) -> None:
        self._create(self._conn())

    def _create(self, conn: Any) -> None:
        """Tables and indexes; an older database's new columns added and back-filled."""
        cur = conn.cursor()
        for stmt in (*_SCHEMA, *_EVIDENCE_SCHEMA):
            cur.execute(stmt if self.ph == "%s" else stmt.replace("BYTEA", "BLOB"))
        have = self._columns(cur, "decisions")
        for col in DECISION_COLUMNS:
            if col not in have:
                cur.execute(f"ALTER TABLE decisions ADD COLUMN {col} TEXT")
        conn.commit()
        # Every row this code stores has an outcome: a NULL one is a row from before the columns.
        # Batches, each committed: a large archive never sits in memory, and an interrupted
        # migration resumes where it stopped.
        while True:
            cur.execute(self._sql("SELECT kiosk_id, seq, decision, payload FROM decisions WHERE outcome IS NULL "
                                  "LIMIT %s"), (MIGRATE_BATCH,))
            rows = cur.fetchall()
            if not rows:
                break
            # (A batch is one transaction: its rows get their columns and their model rows together.)
            models: list[tuple[str, int, str, str]] = []
            for kiosk_id, seq, decision, payload in rows:
                p = {**_payload(payload), "decision": decision}
                cur.execute(self._sql("UPDATE decisions SET subject=%s, mode=%s, operator=%s, profile=%s, outcome=%s "
                                      "WHERE kiosk_id=%s AND seq=%s"), (*_search_columns(p), kiosk_id, seq))
                models += _model_rows(kiosk_id, int(seq), p)
            self._insert_models(cur, models)
            conn.commit()
        for stmt in _INDEXES:
            cur.execute(stmt)
        conn.commit()

    def _columns(self, cur: Any, table: str) -> set[str]:
        cur.execute(f"PRAGMA table_info({table})")
        return {r[1] for r in cur.fetchall()}

    def _tables(self) -> set[str]:
        rows = self._read("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    def _insert_models(self, cur: Any, rows: list[tuple[str, int, str, str]]) -> None:
        if rows:
            # One statement for a whole batch's model rows: per-row statements cost a quarter of
            # the store's time. Two names equal but for case are one model: the first counts.
            cur.executemany(self._sql("INSERT INTO decision_models (kiosk_id, seq, model, version) "
                                      "VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING"), rows)

    def store(self, items: Sequence[Accepted], refusals: Sequence[Refusal] = (), *,
              archive: bool = True) -> list[StoreResult]:
        """Store a batch in one transaction; return one result per item, in order. ``archive``:
        items the store refuses (a replay, evidence without its decision...) are archived in
        ``rejected`` and counted; without, only the results say so (a message reconsidered from
        ``rejected`` is already there)."""
        conn = self._conn()
        cur = conn.cursor()
        results: list[StoreResult] = []
        extra_refusals: list[Refusal] = []
        models: list[tuple[str, int, str, str]] = []
        try:
            for it in items:
                res = self._store_one(cur, it, models)
                results.append(res)
                if res in REFUSED_RESULTS and archive:
                    extra_refusals.append(Refusal(
                        reason=res, topic=f"{it.site}/{it.kiosk_id}/{it.kind}", received_ms=it.received_ms,
                        size=len(it.raw), detail=_REFUSED_DETAIL[res].format(seq=it.seq, ref=it.payload.get("decision_seq")),
                        kiosk_claim=it.kiosk_id, seq=it.seq, sample=b"" if res == "duplicate" else it.raw, whole=True,
                        verified=True,
                    ))
            self._insert_models(cur, models)
            self._record_refusals(cur, [*refusals, *extra_refusals], keep_duplicates=False)
            conn.commit()
        except Exception as exc:
            self._abandon(conn)
            if isinstance(exc, _CONTENT_ERRORS):
                raise StoreContentError(f"the database refused an item of a batch of {len(items)}: {exc}") from exc
            raise StoreError(f"storing a batch of {len(items)} failed: {exc}") from exc
        return results

    def _store_one(self, cur: Any, it: Accepted, models: list[tuple[str, int, str, str]]) -> StoreResult:
        """Store one item; a stored decision's model rows are added to ``models`` (the caller
        inserts them with the batch)."""
        # json.dumps escapes control characters, so the payload text never holds a NUL (which
        # PostgreSQL text refuses); the extracted columns go through _text for the same reason.
        # As UTF-8, not escaped: escaped, each non-ASCII character took six bytes of the row (a
        # review's amplification; the plaintext's bound is the row's).
        payload = json.dumps(it.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        p = it.payload
        if it.kind == "status":
            # The newest report wins (highest sequence) - except the last will of the connection the
            # stored report came from: it was sealed when that connection opened, so its sequence
            # is lower than the "online" reports sent over it, yet it is newer than all of them.
            # And once that will is stored, no report of its connection replaces it: the broker
            # publishes a will only when the connection is gone, so such a report was sent before
            # and arrives late (two collectors of a share group, a batch redelivered; found by a
            # review: a dead kiosk read "online" for good). The IS NOT NULLs keep NULL (a report
            # without will_seq) from making the condition unknown, which would refuse every update.
            will_seq = p.get("will_seq")
            will_seq = int(will_seq) if isinstance(will_seq, int) and not isinstance(will_seq, bool) else None
            cur.execute(self._sql(
                "INSERT INTO kiosk_status (kiosk_id, seq, will_seq, site, created_ms, received_ms, state, payload) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id) DO UPDATE SET seq=excluded.seq, "
                "will_seq=excluded.will_seq, site=excluded.site, created_ms=excluded.created_ms, "
                "received_ms=excluded.received_ms, state=excluded.state, payload=excluded.payload "
                "WHERE (kiosk_status.seq < excluded.seq AND NOT (kiosk_status.will_seq IS NOT NULL "
                "AND kiosk_status.seq = kiosk_status.will_seq AND excluded.will_seq IS NOT NULL "
                "AND excluded.will_seq = kiosk_status.will_seq)) OR "
                "(kiosk_status.will_seq = excluded.seq AND kiosk_status.seq <> excluded.seq)"),
                (it.kiosk_id, it.seq, will_seq, it.site, it.created_ms, it.received_ms, _text(p.get("state"), 32), payload))
            return "stored" if cur.rowcount == 1 else "ignored"
        if it.kind == "decision":
            score = p.get("score")
            cur.execute(self._sql(
                "INSERT INTO decisions (kiosk_id, seq, site, created_ms, received_ms, decision, score, digest, payload, "
                "subject, mode, operator, profile, outcome) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id, seq) DO NOTHING"),
                (it.kiosk_id, it.seq, it.site, it.created_ms, it.received_ms, _text(p.get("decision"), 64),
                 float(score) if isinstance(score, (int, float)) else None, it.digest, payload, *_search_columns(p)))
            if cur.rowcount == 1:
                models += _model_rows(it.kiosk_id, it.seq, p)
                return "stored"
            table = "decisions"
        elif it.kind == "log":
            cur.execute(self._sql(
                "INSERT INTO logs (kiosk_id, seq, site, created_ms, received_ms, level, message, digest, payload) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (kiosk_id, seq) DO NOTHING"),
                (it.kiosk_id, it.seq, it.site, it.created_ms, it.received_ms, _text(p.get("level", ""), 16),
                 _text(p.get("message", ""), 4000), it.digest, payload))
            table = "logs"
        elif it.kind == "evidence":
            return self._store_evidence(cur, it, payload)
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

    # -- evidence ---------------------------------------------------------------------------------

    def _store_evidence(self, cur: Any, it: Accepted, payload: str) -> StoreResult:
        """Evidence is stored only beside its decision: the same kiosk's decision ``decision_seq``,
        with the envelope digest, session and mode the evidence names; once per decision."""
        p = it.payload
        cur.execute(self._sql("SELECT digest FROM evidence WHERE kiosk_id=%s AND seq=%s"), (it.kiosk_id, it.seq))
        row = cur.fetchone()
        if row is not None:
            return "duplicate" if row[0] == it.digest else "replay"
        cur.execute(self._sql("SELECT digest, payload FROM decisions WHERE kiosk_id=%s AND seq=%s"),
                    (it.kiosk_id, p["decision_seq"]))
        row = cur.fetchone()
        if row is None or row[0] != p["decision_digest"]:
            return "unknown_decision"
        decision = json.loads(row[1])
        if decision.get("session_id") != p["session_id"] or decision.get("mode", "online") != p["mode"]:
            return "unknown_decision"
        cur.execute(self._sql("SELECT seq FROM evidence WHERE kiosk_id=%s AND decision_seq=%s"),
                    (it.kiosk_id, p["decision_seq"]))
        if cur.fetchone() is not None:
            return "evidence_exists"
        cur.execute(self._sql(
            "INSERT INTO evidence (kiosk_id, seq, site, decision_seq, session_id, mode, created_ms, received_ms, digest, "
            "payload, envelope) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"),
            (it.kiosk_id, it.seq, it.site, p["decision_seq"], _text(p["session_id"], 128), p["mode"], it.created_ms,
             it.received_ms, it.digest, payload, it.raw))
        return "stored"

    def has_decision(self, kiosk_id: str, seq: int, digest: str) -> bool:
        """Is this kiosk's decision ``seq``, with this envelope digest, stored?"""
        return bool(self._read("SELECT 1 FROM decisions WHERE kiosk_id=%s AND seq=%s AND digest=%s",
                               (kiosk_id, int(seq), digest)))

    def purge_evidence(self, older_than_ms: int) -> int:
        """Delete evidence created before ``older_than_ms`` (the retention period's start), and
        refused evidence envelopes received before it; decisions stay. Returns the rows deleted."""
        def purge(cur: Any) -> int:
            cur.execute(self._sql("DELETE FROM evidence WHERE created_ms < %s"), (int(older_than_ms),))
            n = max(cur.rowcount, 0)
            # A refused evidence message is archived whole: it decrypts to the same raw data.
            cur.execute(self._sql("DELETE FROM rejected WHERE topic LIKE %s AND received_ms < %s"),
                        ("%/evidence", int(older_than_ms)))
            return n + max(cur.rowcount, 0)

        return self._transaction("purging evidence", purge)

    def _abandon(self, conn: Any) -> None:
        """After a failed statement: roll the transaction back, or, if the connection is lost, drop
        it (the next call reconnects)."""
        try:
            conn.rollback()
        except Exception:
            self._local.conn = None

    def _transaction(self, what: str, work: Callable[[Any], int]) -> int:
        """``work(cursor)`` in one transaction, committed; on any error rolled back (the connection
        dropped if it is lost) and raised as a StoreError naming ``what``."""
        conn = self._conn()
        try:
            n = work(conn.cursor())
            conn.commit()
        except Exception as exc:
            self._abandon(conn)
            raise StoreError(f"{what} failed: {exc}") from exc
        return n

    def evidence_case(self, kiosk_id: str, decision_seq: int) -> tuple[StoredDecision | None, StoredEvidence | None]:
        """One decision and its evidence (either may be missing), for ``sigkiosk central export-case``."""
        rows = self._read("SELECT kiosk_id, seq, site, created_ms, received_ms, decision, score, payload, digest "
                          "FROM decisions WHERE kiosk_id=%s AND seq=%s", (kiosk_id, int(decision_seq)))
        decision = None
        if rows:
            r = rows[0]
            decision = StoredDecision(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), r[5], r[6], json.loads(r[7]))
            decision_digest: str | None = r[8]
        rows = self._read("SELECT kiosk_id, seq, site, created_ms, received_ms, digest, payload, envelope FROM evidence "
                          "WHERE kiosk_id=%s AND decision_seq=%s", (kiosk_id, int(decision_seq)))
        evidence = None
        if rows:
            r = rows[0]
            evidence = StoredEvidence(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), r[5], json.loads(r[6]), bytes(r[7]))
        if decision is not None and decision_digest is not None:
            decision = dataclasses.replace(decision, digest=decision_digest)
        return decision, evidence

    def find_decision_seq(self, session_id: str) -> list[tuple[str, int]]:
        """(kiosk, seq) of the decisions of a kiosk session id (a case is often known by it)."""
        # The payload's text as the store writes it (UTF-8; rows of before, escaped, differ only
        # for an id with non-ASCII characters, which no kiosk makes).
        rows = self._read("SELECT kiosk_id, seq, payload FROM decisions WHERE payload LIKE %s ORDER BY kiosk_id, seq",
                          (f'%"session_id":{json.dumps(session_id, ensure_ascii=False)}%',))
        return [(r[0], int(r[1])) for r in rows if json.loads(r[2]).get("session_id") == session_id]

    def _record_refusals(self, cur: Any, refusals: Iterable[Refusal], keep_duplicates: bool = False) -> None:
        counts: dict[str, int] = {}
        for r in refusals:
            counts[r.reason] = counts.get(r.reason, 0) + 1
            if r.reason == "duplicate" and not keep_duplicates:
                continue   # a redelivery is normal after a reconnect: count it, do not archive it
            if not r.archive:
                continue
            if r.verified and r.whole and r.seq is not None and r.kiosk_claim is not None:
                # A kiosk sends a message again until a collector receipts it, and some refusals
                # carry no receipt (a central key this collector lacks): each copy was archived
                # whole, hourly for ever (a review). The same bytes under the same reason once.
                cur.execute(self._sql("SELECT sample FROM rejected WHERE reason=%s AND kiosk_claim=%s AND seq=%s"),
                            (r.reason, r.kiosk_claim, r.seq))
                if any(bytes(row[0]) == r.sample for row in cur.fetchall()):
                    continue
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

    def refused_for_now(self, reason: str, kiosks: Sequence[str] | None = None, since_ms: int = 0,
                        limit: int = 500, before: tuple[int, int] | None = None) -> list[HeldRefusal]:
        """Messages refused for ``reason``, archived whole (the sample is the message), received at
        or after ``since_ms``, of the claimed ``kiosks`` (any without), newest first (then by
        sequence number, highest first); with ``before`` = (received_ms, seq) of the last one a
        previous call gave, the ones after it in that order (the next page)."""
        if kiosks is not None and not kiosks:
            return []
        sql = ("SELECT received_ms, reason, kiosk_claim, seq, sample FROM rejected WHERE reason = %s "
               "AND received_ms >= %s AND kiosk_claim IS NOT NULL AND seq IS NOT NULL AND size = LENGTH(sample)")
        args: list[Any] = [reason, int(since_ms)]
        if kiosks is not None:
            sql += f" AND kiosk_claim IN ({', '.join(['%s'] * len(kiosks))})"
            args += list(kiosks)
        if before is not None:
            sql += " AND (received_ms < %s OR (received_ms = %s AND seq < %s))"
            args += [int(before[0]), int(before[0]), int(before[1])]
        sql += " ORDER BY received_ms DESC, seq DESC LIMIT %s"
        args.append(int(limit))
        return [HeldRefusal(int(r[0]), str(r[1]), str(r[2]), int(r[3]), bytes(r[4])) for r in self._read(sql, args)]

    def held_bytes(self, kiosk_claim: str, reasons: Sequence[str], since_ms: int = 0) -> tuple[int, int]:
        """(rows, bytes) of the messages claiming ``kiosk_claim`` archived whole for ``reasons``,
        received at or after ``since_ms``: what :meth:`refused_for_now` could still give back."""
        if not reasons:
            return 0, 0
        sql = (f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM rejected WHERE kiosk_claim = %s AND reason IN "
               f"({', '.join(['%s'] * len(reasons))}) AND received_ms >= %s AND seq IS NOT NULL "
               "AND size = LENGTH(sample)")
        rows, size = self._read(sql, [kiosk_claim, *reasons, int(since_ms)])[0]
        return int(rows), int(size)

    def refile_refused(self, refiled: Sequence[tuple[HeldRefusal, str, str]]) -> None:
        """Archived refusals found final when reconsidered: each (held, reason, detail) filed under
        its final reason, kept as archived (not counted again: the ``refusals`` counts say why
        messages were refused when they came), so that they no longer stand in the way of those
        that may pass (every row of that reason, kiosk, sequence and bytes: its redeliveries)."""
        def refile(cur: Any) -> int:
            for h, reason, detail in refiled:
                # These very bytes: another message under the same sequence number (the kiosk's
                # genuine one beside a tampered copy) stays where it is.
                cur.execute(self._sql("UPDATE rejected SET reason = %s, detail = %s "
                                      "WHERE reason = %s AND kiosk_claim = %s AND seq = %s AND sample = %s"),
                            (reason, _text(detail, 1000), h.reason, h.kiosk_claim, h.seq, h.message))
            return len(refiled)

        if refiled:
            self._transaction(f"refiling {len(refiled)} reconsidered refusal(s)", refile)

    def forget_refused(self, held: Sequence[HeldRefusal]) -> None:
        """Delete the archived refusals of messages since stored (every row of that reason, kiosk
        and sequence: one message refused at each of its redeliveries)."""
        def forget(cur: Any) -> int:
            for h in held:
                cur.execute(self._sql("DELETE FROM rejected WHERE reason = %s AND kiosk_claim = %s AND seq = %s"),
                            (h.reason, h.kiosk_claim, h.seq))
            return len(held)

        if held:
            self._transaction(f"forgetting {len(held)} reconsidered refusal(s)", forget)

    def query_decisions(self, where: DecisionFilter | None = None, /, **fields: Any) -> list[StoredDecision]:
        """Decisions matching ``where`` (with ``fields`` of DecisionFilter replacing its values:
        ``query_decisions(kiosk_id="kiosk-a", limit=10)``), oldest first (``_order``)."""
        f = replace(where or DecisionFilter(), **fields)
        clauses: list[str] = []
        args: list[str | int] = []
        for clause, value in (("kiosk_id = %s", f.kiosk_id), ("site = %s", f.site), ("subject = %s", f.subject),
                              ("mode = %s", f.mode), ("operator = %s", f.operator), ("profile = %s", f.profile),
                              ("outcome = %s", f.outcome), ("created_ms >= %s", f.since_ms),
                              ("created_ms < %s", f.until_ms)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if f.model is not None:
            name, version = f.model
            clauses.append("EXISTS (SELECT 1 FROM decision_models m WHERE m.kiosk_id = decisions.kiosk_id "
                           "AND m.seq = decisions.seq AND m.version = %s" + ("" if name is None else " AND m.model = %s")
                           + ")")
            args.extend([version] if name is None else [version, name])
        sql = ("SELECT kiosk_id, seq, site, created_ms, received_ms, decision, score, payload FROM decisions"
               + (" WHERE " + " AND ".join(clauses) if clauses else "")
               + _order(f) + " LIMIT %s")
        args.append(f.limit)
        rows = self._read(sql, args)
        return [StoredDecision(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), r[5], r[6], _payload(r[7])) for r in rows]

    def rejected_summary(self, limit: int = 100) -> list[RejectedSummary]:
        """Refused messages grouped by reason and claimed kiosk: how many, the last time, the last
        detail; most recent group first."""
        rows = self._read(
            "SELECT reason, kiosk_claim, COUNT(*), MAX(received_ms) FROM rejected GROUP BY reason, kiosk_claim "
            "ORDER BY MAX(received_ms) DESC, reason LIMIT %s", (int(limit),))
        out = []
        for reason, claim, n, last in rows:
            detail = self._read("SELECT detail FROM rejected WHERE reason = %s AND received_ms = %s AND "
                                + ("kiosk_claim IS NULL" if claim is None else "kiosk_claim = %s") + " LIMIT 1",
                                (reason, last) if claim is None else (reason, last, claim))
            out.append(RejectedSummary(reason, claim, int(n), int(last), detail[0][0] if detail else ""))
        return out

    def query_audit(self, where: DecisionFilter | None = None, /, **fields: Any) -> list[dict[str, Any]]:
        """Staff actions, oldest first (``_order``): the decrypted payload plus kiosk_id, site, seq. The filter is
        a decision filter's: kiosk, site, operator, subject (the customer), outcome (the action's)
        and time; a mode, profile or model version is refused. Values compare case-insensitively:
        the kiosk's names are ASCII (operator and customer patterns), so SQL lower() is the same on
        both databases (the audit table is small; no index on it)."""
        f = replace(where or DecisionFilter(limit=1000), **fields)
        unusable = [n for n in ("mode", "profile", "model_version") if getattr(f, n) is not None]
        if unusable:
            raise QueryError(f"staff actions have no {unusable[0].replace('_', ' ')}")
        clauses: list[str] = []
        args: list[str | int] = []
        for clause, value in (("kiosk_id = %s", f.kiosk_id), ("site = %s", f.site), ("lower(operator) = %s", f.operator),
                              ("lower(subject) = %s", f.subject), ("lower(outcome) = %s", f.outcome),
                              ("created_ms >= %s", f.since_ms), ("created_ms < %s", f.until_ms)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        sql = ("SELECT kiosk_id, site, seq, created_ms, payload FROM audit"
               + (" WHERE " + " AND ".join(clauses) if clauses else "") + _order(f) + " LIMIT %s")
        args.append(f.limit)
        rows = self._read(sql, args)
        # The time is the envelope's (signed, bounded; what the filters compare), as a decision's.
        return [{**json.loads(r[4]), "kiosk_id": r[0], "site": r[1], "seq": int(r[2]), "created_ms": int(r[3])}
                for r in rows]

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of one query; the read transaction is ended at once (PostgreSQL would hold it open).
        A driver error becomes a StoreError (the callers, the collector's included, handle only
        that), and the connection is rolled back or, if lost, dropped, as ``store`` does."""
        conn = self._conn()
        try:
            cur = conn.cursor()
            cur.execute(self._sql(sql), args)
            rows = cur.fetchall()
            conn.commit()
        except Exception as exc:
            self._abandon(conn)
            raise StoreError(f"reading the database failed: {exc}") from exc
        return list(rows)

    def refusal_counts(self) -> dict[str, int]:
        rows = self._read("SELECT reason, count FROM refusals ORDER BY reason")
        return {r[0]: int(r[1]) for r in rows}

    def count(self, table: str) -> int:
        if table not in ("decisions", "logs", "kiosk_status", "rejected", "audit", "evidence"):
            raise ValueError(table)
        return int(self._read(f"SELECT COUNT(*) FROM {table}")[0][0])

    def status(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT kiosk_id, seq, state, received_ms, payload, site FROM kiosk_status ORDER BY kiosk_id")
        return {r[0]: {"seq": int(r[1]), "state": r[2], "received_ms": int(r[3]), **json.loads(r[4]), "site": r[5]}
                for r in rows}


class SqliteStore(_SqlStore):
    """SQLite in WAL mode; one connection per thread (the collector writes from one thread)."""

    ph = "?"

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreMissing(f"no database at {self.path} (check --db; only 'sigkiosk central run' creates one)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            if not create and "decisions" not in self._tables():
                raise StoreMissing(f"{self.path} is not a sigkiosk central database (no decisions table)")
        except StoreMissing:
            self.close()
            raise
        except (sqlite3.DatabaseError, StoreError) as exc:   # not SQLite at all: a mistyped path to another file
            self.close()
            raise StoreMissing(f"{self.path} is not a sigkiosk central database ({exc})") from None
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

    def __init__(self, dsn: str, *, create: bool = False) -> None:
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
        if not create and "decisions" not in self._tables():
            self.close()
            raise StoreMissing("this PostgreSQL database (and search_path) has no sigkiosk tables "
                               "(check --db; only 'sigkiosk central run' creates them)")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(724311)")
            try:
                self._create(conn)
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

    def _columns(self, cur: Any, table: str) -> set[str]:
        cur.execute("SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s", (table,))
        return {r[0] for r in cur.fetchall()}

    def _tables(self) -> set[str]:
        rows = self._read("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {r[0] for r in rows}


def open_store(db: str | Path, *, create: bool = False) -> Store:
    """``postgresql://...`` or ``postgres://...`` opens PostgreSQL; ``sqlite:///path`` or a path, SQLite.

    Only ``create=True`` (the collector) makes a new database or its tables; otherwise a path with
    no database, or a database without the tables, is refused (StoreMissing) instead of being
    answered from a new empty one. A database made by an older version is migrated on opening."""
    s = str(db)
    if s.startswith(("postgresql://", "postgres://")):
        return PostgresStore(s, create=create)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///") - 1:] if s.startswith("sqlite:////") else s[len("sqlite:///"):]
    return SqliteStore(Path(s), create=create)
