"""The outbox on its own: durability, order, sequence numbers across restarts, the log quota."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from kiosk.outbox import Backlog, Outbox, OutboxError
from kiosk.receipts import Receipt


def _payload(n: int) -> bytes:
    return bytes(n)


def test_wal_mode_and_sequences_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path)
    seqs = [ob.add("decision", "t/decision", lambda s: s.to_bytes(8, "big")) for _ in range(5)]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    # A fresh outbox starts from the clock (microseconds), far above anything small.
    assert abs(seqs[0] - time.time() * 1_000_000) < 60 * 1_000_000
    status_seq = ob.reserve_seq()
    ob.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ob = Outbox(path)
    assert ob.add("decision", "t/decision", lambda s: b"x") == status_seq + 1
    rows = ob.pending(100)
    assert [r.seq for r in rows] == [*seqs, status_seq + 1]          # oldest first
    assert rows[0].payload == seqs[0].to_bytes(8, "big")              # sealed with its own seq
    ob.close()


def test_a_failed_seal_stores_nothing_and_burns_no_sequence(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    before = ob.next_seq()

    def boom(seq: int) -> bytes:
        raise ValueError("cannot seal")

    with pytest.raises(ValueError):
        ob.add("decision", "t", boom)
    assert ob.depth() == {} and ob.next_seq() == before
    ob.close()


def test_pending_skips_in_flight_and_delete_and_defer(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    for _ in range(5):
        ob.add("decision", "t", lambda s: b"d")
    rows = ob.pending(2)
    nxt = ob.pending(2, exclude=[r.id for r in rows])
    assert [r.id for r in nxt] == [rows[-1].id + 1, rows[-1].id + 2]
    ob.acknowledged([rows[0].id])
    ob.defer(rows[1].id, 60)
    assert [r.id for r in ob.pending(10)] == [r.id for r in nxt] + [nxt[-1].id + 1]
    assert ob.pending(10, now=time.time() + 120)[0].id == rows[1].id and ob.pending(10, now=time.time() + 120)[0].attempts == 1
    ob.close()


def test_a_row_deferred_before_the_clock_stepped_back_is_not_stranded(tmp_path: Path) -> None:
    """Found by a review: a refused row's retry time is a wall-clock time on disk; when NTP then
    stepped a fast clock back an hour, the row waited the whole hour (across restarts) while newer
    rows went past it. A retry time further ahead than any back-off is due."""
    ob = Outbox(tmp_path / "o.sqlite")
    ob.add("decision", "t", lambda s: b"held")
    ob.add("decision", "t", lambda s: b"next")
    first, second = ob.pending(10)
    ob.defer(first.id, 30)
    now = time.time()
    assert [r.id for r in ob.pending(10, now=now)] == [second.id]          # backed off, as it should
    assert [r.id for r in ob.pending(10, now=now - 3600)] == [first.id, second.id]   # the clock went back
    ob.defer(first.id, 86_400)                                               # no back-off is a day long
    assert ob.pending(10, now=now + 700)[0].id == first.id
    ob.close()


def test_a_full_log_quota_drops_without_reading_every_log_row(tmp_path: Path) -> None:
    """Offline with the quota full, each new log record drops the oldest one or two: the work
    (SQLite's virtual machine steps, counted, not timed) must not grow with the logs queued (it
    read every log row, 40 ms a record at 8 MiB)."""
    def steps_to_add_one(rows: int) -> int:
        ob = Outbox(tmp_path / f"o{rows}.sqlite", log_quota_bytes=rows * 300)
        for _ in range(rows):
            ob.add("log", "t/log", lambda s: _payload(300))
        assert ob.dropped_logs() == 0
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0
        ob._db.set_progress_handler(step, 100)
        ob.add("log", "t/log", lambda s: _payload(300))
        ob._db.set_progress_handler(None, 100)
        assert ob.dropped_logs() == 1 and ob.depth() == {"log": rows}
        ob.close()
        return counted[0]

    small, large = steps_to_add_one(200), steps_to_add_one(4000)
    assert large <= small + 5, (small, large)


def test_evidence_waiting_for_the_link_has_a_quota_and_decisions_do_not(tmp_path: Path) -> None:
    """Evidence is large and anyone at the counter can ask for decisions: an offline kiosk keeps at
    most its quota of it. Past it a decision's evidence is refused (the caller counts it), the
    evidence queued is kept, decisions still go in; sent evidence frees its share, also across
    a restart."""
    ob = Outbox(tmp_path / "o.sqlite", evidence_quota_bytes=1000)
    kept = [ob.add("evidence", "t/evidence", lambda s: _payload(400)) for _ in range(2)]
    with pytest.raises(OutboxError, match="quota"):
        ob.add("evidence", "t/evidence", lambda s: _payload(400))
    ob.add("decision", "t/decision", lambda s: _payload(4000))
    assert ob.depth() == {"evidence": 2, "decision": 1}
    assert [r.seq for r in ob.pending(10) if r.kind == "evidence"] == kept
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite", evidence_quota_bytes=1000)
    with pytest.raises(OutboxError, match="quota"):   # counted again from the file
        ob.add("evidence", "t/evidence", lambda s: _payload(400))
    ob.acknowledged([r.id for r in ob.pending(10) if r.kind == "evidence"][:1])
    ob.add("evidence", "t/evidence", lambda s: _payload(400))
    assert ob.depth() == {"evidence": 2, "decision": 1}
    ob.close()


def test_log_quota_drops_oldest_logs_counts_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ob = Outbox(tmp_path / "o.sqlite", log_quota_bytes=1000)
    for _ in range(3):
        ob.add("decision", "t/decision", lambda s: _payload(400))   # decisions never count, never drop
    log_seqs = [ob.add("log", "t/log", lambda s: _payload(300)) for _ in range(3)]
    assert ob.depth() == {"decision": 3, "log": 3} and ob.dropped_logs() == 0
    with caplog.at_level(logging.WARNING, logger="kiosk.outbox"):
        newest = ob.add("log", "t/log", lambda s: _payload(300))
    assert ob.dropped_logs() == 1
    assert "dropped the 1 oldest log records" in caplog.text
    remaining = [r.seq for r in ob.pending(100) if r.kind == "log"]
    assert remaining == [*log_seqs[1:], newest]
    # A record bigger than the whole quota is dropped (and counted) instead of emptying the queue.
    ob.add("log", "t/log", lambda s: _payload(5000))
    assert ob.dropped_logs() == 2 and ob.depth() == {"decision": 3, "log": 3}
    # Acknowledged (deleted) logs free their share of the quota, also across a restart.
    ob.acknowledged([r.id for r in ob.pending(100) if r.kind == "log"][:1])
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite", log_quota_bytes=1000)
    ob.add("log", "t/log", lambda s: _payload(300))
    assert ob.dropped_logs() == 2 and ob.depth() == {"decision": 3, "log": 3}
    ob.add("log", "t/log", lambda s: _payload(300))
    assert ob.dropped_logs() == 3
    ob.close()


def test_unusable_outbox_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="cannot open outbox"):
        Outbox(bad)


def test_an_outbox_belongs_to_the_kiosk_that_opened_it_first(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()          # an outbox from before owners were recorded: the first kiosk claims it
    ob = Outbox(path, owner="kiosk-a")
    seq = ob.add("decision", "sig/v1/s1/kiosk-a/decision", lambda s: b"sealed for kiosk-a")
    ob.close()
    # A second kiosk pointed at the same file would send kiosk-a's rows under its own identity
    # (the broker refuses them, again and again) while its own waited behind them.
    with pytest.raises(OutboxError, match=r"belongs to kiosk 'kiosk-a', not 'kiosk-b' \(1 message"):
        Outbox(path, owner="kiosk-b")
    ob = Outbox(path, owner="kiosk-a")   # the refusal changed nothing
    assert [(r.seq, r.payload) for r in ob.pending(10)] == [(seq, b"sealed for kiosk-a")]
    ob.close()


def test_drops_are_counted_once_when_an_oversized_log_saves_them(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", log_quota_bytes=1000, log_reserve_bytes=1 << 62)   # "nearly full"
    assert ob.add("log", "t/log", lambda s: _payload(10)) == -1        # dropped, not yet written
    ob.log_reserve_bytes = 0                                           # space again
    ob.add("log", "t/log", lambda s: _payload(2000))                   # larger than the quota: dropped
    assert ob.dropped_logs() == 2
    ob.add("log", "t/log", lambda s: _payload(10))                     # stored
    assert ob.dropped_logs() == 2 and ob.depth().get("log") == 1
    ob.close()
    assert Outbox(tmp_path / "o.sqlite").dropped_logs() == 2           # what was saved


def _receipted(ob: Outbox, token: bytes) -> int:
    return ob.add("decision", "t/decision", lambda s: (b"sealed", token))


def test_a_receipted_row_outlives_the_brokers_acknowledgement_until_its_receipt_matches(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", receipt_wait_s=10, receipt_wait_max_s=25)
    seq = _receipted(ob, b"\x01" * 16)
    ob.add("log", "t/log", lambda s: b"a log")                   # logs: the PUBACK is enough
    t0 = time.time()
    ids = [r.id for r in ob.pending(10)]
    assert ob.acknowledged(ids, now=t0, sent_order={ids[0]: 5, ids[1]: 6}) == 1
    assert ob.last_sent_order() == 5                              # the log row is gone
    b = ob.backlog(now=t0 + 1)
    assert b.queued == {"decision": 1} and b.awaiting_receipt == {"decision": 1}
    assert b.oldest_unconfirmed_s == {"decision": pytest.approx(1, abs=0.01)}   # since first sent
    assert ob.pending(10, now=t0 + 5, receipted_order=9) == []    # waiting for its receipt
    # Overdue, but nothing published after it has been receipted: it waits in a collector's queue.
    assert ob.pending(10, now=t0 + 11) == [] and ob.pending(10, now=t0 + 11, receipted_order=4) == []
    assert [r.seq for r in ob.pending(10, now=t0 + 11, receipted_order=9)] == [seq]   # passed over: sent again
    ob.acknowledged([ids[0]], now=t0 + 11, sent_order={ids[0]: 10})
    assert ob.pending(10, now=t0 + 11 + 19, receipted_order=99) == []   # the wait doubled (20 s)...
    assert ob.pending(10, now=t0 + 11 + 21, receipted_order=9) == []    # ...and this send is later
    ob.acknowledged([ob.pending(10, now=t0 + 32, receipted_order=99)[0].id], now=t0 + 32, sent_order={ids[0]: 11})
    assert ob.pending(10, now=t0 + 32 + 24, receipted_order=99) == []   # ...up to its cap (25 s)
    assert len(ob.pending(10, now=t0 + 32 + 26, receipted_order=99)) == 1
    assert ob.backlog(now=t0 + 40).oldest_unconfirmed_s == {"decision": pytest.approx(40, abs=0.01)}
    # A receipt for another sequence, or with another token, deletes nothing.
    assert ob.confirm([Receipt(seq + 1, b"\x01" * 16), Receipt(seq, b"\x02" * 16)]) == []
    assert ob.depth() == {"decision": 1}
    assert ob.confirm([Receipt(seq, b"\x01" * 16)]) == [seq]
    assert ob.depth() == {} and ob.backlog() == Backlog({}, {}, {})
    assert ob.confirm([Receipt(seq, b"\x01" * 16)]) == []         # a replayed receipt: nothing left to do
    ob.close()


def test_a_sent_row_the_broker_refuses_again_keeps_its_back_off(tmp_path: Path) -> None:
    """Found by a review: the clock-step rule took a sent row deferred past receipt_wait_max_s
    (shorter than a refused row's back-off) as stranded by a clock step, and sent it in a loop."""
    ob = Outbox(tmp_path / "o.sqlite", receipt_wait_s=1, receipt_wait_max_s=5)
    _receipted(ob, b"\x01" * 16)
    t0 = time.time()
    ob.acknowledged([ob.pending(1)[0].id], now=t0)
    row = ob.pending(1, now=t0 + 2, receipted_order=1)[0]
    ob.defer(row.id, 60)                                           # the broker refused the second send
    assert ob.pending(1, now=time.time() + 1, receipted_order=1) == []


def test_a_sent_row_is_not_stranded_by_a_clock_stepped_back(tmp_path: Path) -> None:
    """Found by a review: a row acknowledged while the clock ran a day fast waited a day."""
    ob = Outbox(tmp_path / "o.sqlite", receipt_wait_s=1, receipt_wait_max_s=5)
    seq = _receipted(ob, b"\x01" * 16)
    t0 = time.time()
    ob.acknowledged([ob.pending(1)[0].id], now=t0 + 86400)          # the clock a day fast
    assert [r.seq for r in ob.pending(1, now=t0, receipted_order=1)] == [seq]   # corrected: due


def test_switching_receipts_off_sends_the_waiting_rows_again_to_be_deleted_at_the_brokers_ack(tmp_path: Path) -> None:
    """Found by a review: rows sealed while receipts were on waited for ever for a receipt no
    collector sends once they are off, and their evidence held the quota."""
    ob = Outbox(tmp_path / "o.sqlite")
    _receipted(ob, b"\x01" * 16)
    ob.add("evidence", "t/evidence", lambda s: (b"e" * 100, b"\x02" * 16))
    ob.acknowledged([r.id for r in ob.pending(10)])
    assert ob.pending(10) == []
    assert ob.forget_receipts() == 2
    assert ob.acknowledged([r.id for r in ob.pending(10)]) == 2
    assert ob.depth() == {}
    ob.close()


def test_an_outbox_from_before_receipts_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:   # the schema as kiosks wrote it before receipts
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL UNIQUE,
                kind TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL,
                created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0);
            INSERT INTO meta VALUES ('next_seq', 100), ('dropped_logs', 0);
            INSERT INTO outbox (seq, kind, topic, payload, size, created) VALUES (99, 'decision', 't', x'00', 1, 0);
        """)
    ob = Outbox(path)
    old = ob.pending(10)
    assert [r.seq for r in old] == [99]
    assert _receipted(ob, b"\x03" * 16) == 100
    # Sealed before receipts, it has none to wait for: the broker's acknowledgement deletes it.
    assert ob.acknowledged([r.id for r in ob.pending(10)]) == 1
    assert ob.backlog().awaiting_receipt == {"decision": 1}
    ob.close()


def test_receipt_waits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="receipt"):
        Outbox(tmp_path / "o.sqlite", receipt_wait_s=100, receipt_wait_max_s=10)
    with pytest.raises(OutboxError, match="receipt"):
        Outbox(tmp_path / "o.sqlite", receipt_wait_s=0)
