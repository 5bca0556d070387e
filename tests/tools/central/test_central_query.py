"""Queries people use (issue 17): every filter, case-insensitive, on SQLite and the real PostgreSQL;
a missing database refused; CSV/JSON export without raw evidence and safe in a spreadsheet; an old
database migrated; the staff actions queried the same way."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tools.central.export import safe_cell
from tools.central.query import DecisionFilter, QueryError
from tools.central.store import Accepted, StoreMissing, open_store
from tools.commands import central_cmd

T0 = 1_790_000_000_000   # 2026-09-21T14:13:20Z


def _dec(seq: int, *, kiosk: str = "kiosk-a", site: str = "site1", decision: str = "APPROVED", **fields: Any) -> Accepted:
    payload = {"type": "decision", "schema": 1, "decision": decision, "score": 0.5 + seq / 100, "reasons": ["shape"],
               "created_ms": T0 + seq, **fields}
    return Accepted("decision", kiosk, site, seq, T0 + seq, T0 + seq + 5, f"d{seq}", payload)


FLEET = [
    _dec(1, subject="Cust-001", mode="online", operator="alice", profile="standard",
         model_versions={"classic": "1", "threshold": "0.42"},
         explanations=["Pressure was not compared: the references were signed without it."]),
    _dec(2, subject="cust-002", mode="offline", operator="bob", profile="High-Value", decision="SUSPICIOUS",
         model_versions={"embedder": "paper-2026.11", "threshold": "0.5"}),
    _dec(3, kiosk="kiosk-b", site="site2", subject="CUST-001", mode="online", decision="SUSPICIOUS",
         model_versions={"classic": "2", "threshold": "0.42"}),
    _dec(4, kiosk="kiosk-b", site="site2", subject="cust-003", mode="offline", operator="alice",
         model_versions={"embedder": "paper-2026.12"}),
]


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    central_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["central", *argv])
    return int(args.func(args))


@pytest.fixture
def fleet_db(db_url: str) -> str:
    store = open_store(db_url, create=True)
    try:
        assert store.store(FLEET) == ["stored"] * len(FLEET)
    finally:
        store.close()
    return db_url


def _seqs(db: str, **text: str) -> list[int]:
    store = open_store(db)
    try:
        return [d.seq for d in store.query_decisions(DecisionFilter.from_text(text))]
    finally:
        store.close()


@pytest.mark.parametrize(("text", "want"), [
    ({"customer": "cust-001"}, [1, 3]),                      # case-insensitive both ways
    ({"subject": "CUST-002"}, [2]),
    ({"mode": "pen"}, [1, 3]), ({"mode": "ONLINE"}, [1, 3]), ({"mode": "paper"}, [2, 4]), ({"mode": "offline"}, [2, 4]),
    ({"operator": "Alice"}, [1, 4]),
    ({"profile": "high-value"}, [2]),
    ({"outcome": "suspicious"}, [2, 3]),
    ({"kiosk": "KIOSK-B"}, [3, 4]),
    ({"site": "site1"}, [1, 2]),
    ({"model_version": "0.42"}, [1, 3]),                     # any model with that version
    ({"model_version": "classic=2"}, [3]),                   # that model's version
    ({"model_version": "Embedder=PAPER-2026.11"}, [2]),
    ({"model_version": "threshold=1"}, []),                  # "1" is classic's version, not threshold's
    ({"since": str(T0 + 2), "until": "2026-09-21T14:13:20.004Z"}, [2, 3]),
    ({"customer": "cust-001", "mode": "pen", "kiosk": "kiosk-b", "outcome": "SUSPICIOUS"}, [3]),
    ({"customer": "cust-001' OR '1'='1"}, []),               # bound parameters: metacharacters are data
    ({"model_version": "x=y' OR 1=1 --"}, []),
    ({"operator": "%"}, []), ({"subject": "_"}, []),
])
def test_every_filter_case_insensitive(fleet_db: str, text: dict[str, str], want: list[int]) -> None:
    assert _seqs(fleet_db, **text) == want


def test_bad_filter_values_are_refused_with_a_reason() -> None:
    with pytest.raises(QueryError, match="pen or paper"):
        DecisionFilter.from_text({"mode": "ink"})
    with pytest.raises(QueryError, match="ISO 8601"):
        DecisionFilter.from_text({"since": "last tuesday"})
    with pytest.raises(QueryError, match="unknown filter"):
        DecisionFilter.from_text({"payload": "x"})
    with pytest.raises(QueryError, match="at most"):
        DecisionFilter.from_text({"customer": "x" * 300})
    with pytest.raises(QueryError, match="limit"):
        DecisionFilter.from_text({"limit": "-1"})
    # Digits that str.isdigit() takes but int() refuses, or too many of them: a QueryError each,
    # never a ValueError or the database's OverflowError.
    for text in ("\u00b2", "1\u00b2", "\u0663", "\uff11", "9" * 16, "9" * 25):
        with pytest.raises(QueryError, match="limit"):
            DecisionFilter.from_text({"limit": text})
        with pytest.raises(QueryError, match="time"):
            DecisionFilter.from_text({"since": text})
        with pytest.raises(QueryError, match="time"):
            DecisionFilter.from_text({"until": text})
    with pytest.raises(QueryError, match="limit must be 1"):
        DecisionFilter.from_text({"limit": "9" * 15})
    for ms in (10**15, -(10**15), 2**63):
        with pytest.raises(QueryError, match="out of range"):
            DecisionFilter(since_ms=ms)


@pytest.mark.parametrize(("text", "want"), [
    ({"since": "9" * 15}, []), ({"until": "9" * 15}, [1, 2, 3, 4]), ({"since": "0"}, [1, 2, 3, 4]),
    ({"since": "0001-01-01"}, [1, 2, 3, 4]), ({"until": "0001-01-01"}, []), ({"until": "9999-12-31T23:59:59Z"}, [1, 2, 3, 4]),
])
def test_the_widest_times_accepted_are_queried_on_both_databases(fleet_db: str, text: dict[str, str],
                                                                   want: list[int]) -> None:
    assert _seqs(fleet_db, **text) == want


def test_a_missing_database_is_refused_and_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo" / "central.sqlite"
    assert _run_cli(["query", "--db", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "no database at" in err and str(missing) in err
    assert not missing.exists() and not missing.parent.exists()
    assert _run_cli(["stats", "--db", str(missing)]) == 2
    assert not missing.exists()
    other = tmp_path / "notes.txt"                         # a file, but no database
    other.write_text("not a database, just notes\n" * 100)
    assert _run_cli(["query", "--db", str(other)]) == 2
    assert "not a sigkiosk central database" in capsys.readouterr().err
    assert other.read_text().startswith("not a database")
    empty = tmp_path / "empty.sqlite"                      # SQLite, but not ours
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreMissing, match="no decisions table"):
        open_store(empty)


def test_a_postgresql_schema_without_tables_is_refused(pg_server) -> None:  # type: ignore[no-untyped-def]
    from fixtures_link import fresh_pg_schema

    dsn = fresh_pg_schema(pg_server)
    with pytest.raises(StoreMissing, match="no sigkiosk tables"):
        open_store(dsn)
    import psycopg

    with psycopg.connect(dsn) as conn:
        n = conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()").fetchone()
    assert n is not None and n[0] == 0                     # nothing was created


def test_csv_and_json_export_hold_no_raw_evidence_and_no_formula(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url, create=True)
    hostile = [
        _dec(1, subject="=HYPERLINK(\"http://evil.example\",\"x\")", operator="+cmd", profile="@SUM(A1)",
             mode="online", model_versions={"classic": "-1+1"},
             evidence={"samples": [[1, 2, 3, 4]] * 5, "image_png": "iVBORw0KGgo"}),
        _dec(2, subject="-2+3", decision="SUSPICIOUS", reasons=["=1+1"], mode="offline", paper_references="paper",
             explanations=["=cmd|' /C calc'!A0", "Wider than usual, by 40 %."]),
    ]
    store.store(hostile)
    store.close()
    out = tmp_path / "export.csv"
    assert _run_cli(["query", "--db", db_url, "--format", "csv", "--output", str(out)]) == 0
    text = out.read_text()
    assert "iVBORw0KGgo" not in text and "samples" not in text and "evidence" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["seq"] for r in rows] == ["1", "2"]
    assert rows[0]["subject"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert rows[0]["operator"] == "'+cmd" and rows[0]["profile"] == "'@SUM(A1)"
    assert rows[0]["mode"] == "pen" and rows[0]["model_versions"] == "classic=-1+1"
    assert rows[1]["subject"] == "'-2+3" and rows[1]["reasons"] == "'=1+1"
    assert rows[0]["paper_references"] == "" and rows[1]["paper_references"] == "paper"   # which references decided
    # What the kiosk said why: sentences apart by " | " (they hold commas), the first not run.
    assert rows[0]["explanations"] == "" and rows[1]["explanations"] == "'=cmd|' /C calc'!A0 | Wider than usual, by 40 %."
    for r in rows:   # no cell a spreadsheet would run
        assert not any(v.startswith(("=", "+", "-", "@")) for v in r.values()), r
    jout = tmp_path / "export.jsonl"
    assert _run_cli(["query", "--db", db_url, "--format", "json", "--output", str(jout), "--outcome", "approved"]) == 0
    recs = [json.loads(line) for line in jout.read_text().splitlines()]
    assert len(recs) == 1 and "evidence" not in json.dumps(recs)
    assert recs[0]["subject"].startswith("=HYPERLINK")      # JSON keeps the value as sent: no spreadsheet here
    assert recs[0]["model_versions"] == {"classic": "-1+1"} and recs[0]["time"] == "2026-09-21T14:13:20.001Z"
    # The export names customers and operators: a new file, 0600; never an existing file or a
    # symbolic link's target (found by a review: both were overwritten, the file world-readable).
    assert out.stat().st_mode & 0o777 == 0o600
    assert _run_cli(["query", "--db", db_url, "--format", "csv", "--output", str(out)]) == 2
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    assert _run_cli(["query", "--db", db_url, "--format", "csv", "--output", str(link)]) == 2
    assert victim.read_text() == "keep me"


def test_safe_cell() -> None:
    assert [safe_cell(v) for v in ("=1", "+1", "-1", "@a", "\tx", "\rx", "a=1", "", None, -0.5, 3)] == \
        ["'=1", "'+1", "'-1", "'@a", "'\tx", "'\rx", "a=1", "", "", "-0.5", "3"]


def test_table_output_and_filters_from_the_command_line(fleet_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["query", "--db", fleet_db, "--customer", "CUST-001", "--mode", "pen",
                     "--model-version", "classic=1", "--operator", "ALICE", "--profile", "Standard"]) == 0
    out = capsys.readouterr().out
    assert "1 decision(s)" in out and "Cust-001" in out and "pen" in out and "standard" in out
    assert "\n" + " " * 24 + "why: Pressure was not compared: the references were signed without it.\n" in out
    assert _run_cli(["query", "--db", fleet_db, "--mode", "ink"]) == 2
    assert "pen or paper" in capsys.readouterr().err


def _old_schema(cur: Any) -> None:
    # The decisions table as the first collector made it, before the searchable columns.
    cur.execute("""CREATE TABLE decisions (
        kiosk_id TEXT NOT NULL, seq BIGINT NOT NULL, site TEXT NOT NULL,
        created_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL,
        decision TEXT NOT NULL, score DOUBLE PRECISION, digest TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (kiosk_id, seq))""")


def test_an_old_database_is_migrated_and_backfilled(db_url: str) -> None:
    rows = [(a.kiosk_id, a.seq, a.site, a.created_ms, a.received_ms, a.payload["decision"], a.payload["score"],
             a.digest, json.dumps(a.payload)) for a in FLEET]
    rows.append(("kiosk-c", 9, "site3", T0 + 9, T0 + 9, "APPROVED", None, "d9", "not json"))   # damaged: kept
    if db_url.startswith("postgres"):
        import psycopg

        with psycopg.connect(db_url) as conn:
            _old_schema(conn.cursor())
            conn.cursor().executemany("INSERT INTO decisions VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
    else:
        conn = sqlite3.connect(db_url)
        _old_schema(conn.cursor())
        conn.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?)", rows)
        conn.commit()
        conn.close()
    store = open_store(db_url)   # not create: the old database exists, so it is migrated
    try:
        assert store.count("decisions") == 5
        assert [d.seq for d in store.query_decisions(subject="cust-001")] == [1, 3]
        assert [d.seq for d in store.query_decisions(mode="paper")] == [2, 4]
        assert [d.seq for d in store.query_decisions(model_version="classic=2")] == [3]
        assert [d.seq for d in store.query_decisions(outcome="approved")] == [1, 4, 9]
        store.store([_dec(5, subject="cust-001", operator="carol")])        # new rows go in as usual
        assert [d.seq for d in store.query_decisions(subject="CUST-001")] == [1, 3, 5]
    finally:
        store.close()
    store = open_store(db_url)   # opening again: nothing left to migrate, same answers
    try:
        assert [d.seq for d in store.query_decisions(operator="alice")] == [1, 4]
    finally:
        store.close()


def test_staff_actions_with_the_same_filters(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    def act(seq: int, operator: str, action: str, outcome: str, subject: str | None = None,
            said_ms: int | None = None) -> Accepted:
        return Accepted("audit", "kiosk-a", "site1", seq, T0 + seq, T0 + seq, f"a{seq}",
                        {"type": "audit", "operator": operator, "action": action, "outcome": outcome,
                         "subject": subject, "created_ms": T0 + seq if said_ms is None else said_ms})

    store = open_store(db_url, create=True)
    # The 4th claims a time past year 9999 in its payload (stored by a collector of before the bound):
    # the export shows the envelope's time, as for decisions (found by a review: every audit export
    # with that row failed, "year 146140482 is out of range").
    store.store([act(1, "alice", "login", "ok"), act(2, "alice", "enroll", "ok", "Cust-001"),
                 act(3, "bob", "login", "bad_credentials"), act(4, "bob", "delete", "=cmd", "cust-001", 2**62)])
    assert [r["seq"] for r in store.query_audit(subject="CUST-001")] == [2, 4]
    assert [r["seq"] for r in store.query_audit(operator="BOB", outcome="Bad_Credentials")] == [3]
    with pytest.raises(QueryError, match="no mode"):
        store.query_audit(mode="pen")
    store.close()
    assert _run_cli(["query", "--audit", "--db", db_url, "--operator", "bob", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["seq"], r["action"], r["outcome"]) for r in rows] == [("3", "login", "bad_credentials"),
                                                                     ("4", "delete", "'=cmd")]
    assert rows[1]["time"] == "2026-09-21T14:13:20.004Z"


def test_one_kiosk_in_its_own_order_when_its_clock_was_stepped_back(db_url: str) -> None:
    # kiosk-a's clock was set back 10 s between its records 2 and 3 (an RTC corrected by NTP):
    # its own sequence, not its clock, is the order things happened at that kiosk.
    def at(kind: str, seq: int, created: int, kiosk: str = "kiosk-a") -> Accepted:
        payload = {"type": kind, "decision": "APPROVED", "score": 0.5, "operator": "alice", "action": "login",
                   "outcome": "ok", "created_ms": created}
        return Accepted(kind, kiosk, "site1", seq, created, T0 + 50_000 + seq, f"{kind}{kiosk}{seq}", payload)

    stamps = {1: T0 + 20_000, 2: T0 + 21_000, 3: T0 + 11_000, 4: T0 + 12_000}
    store = open_store(db_url, create=True)
    try:
        store.store([at(kind, seq, ms) for kind in ("decision", "audit") for seq, ms in stamps.items()]
                    + [at(kind, 1, T0 + 15_000, "kiosk-b") for kind in ("decision", "audit")])
        assert [d.seq for d in store.query_decisions(kiosk_id="kiosk-a")] == [1, 2, 3, 4]
        assert [d.seq for d in store.query_decisions(kiosk_id="kiosk-a", limit=2)] == [1, 2]
        assert [r["seq"] for r in store.query_audit(kiosk_id="kiosk-a")] == [1, 2, 3, 4]
        # the fleet has no common sequence: by the kiosks' clocks
        assert [(d.kiosk_id, d.seq) for d in store.query_decisions()] == [
            ("kiosk-a", 3), ("kiosk-a", 4), ("kiosk-b", 1), ("kiosk-a", 1), ("kiosk-a", 2)]
        assert [(r["kiosk_id"], r["seq"]) for r in store.query_audit()] == [
            ("kiosk-a", 3), ("kiosk-a", 4), ("kiosk-b", 1), ("kiosk-a", 1), ("kiosk-a", 2)]
    finally:
        store.close()


def test_the_kiosks_own_records_are_found_by_profile_operator_and_mode(db_url: str) -> None:
    # Payloads as the kiosk writes them (kiosk.records.DecisionRecord, schema 2), not hand-made.
    from kiosk.records import DecisionRecord

    recs = [DecisionRecord("APPROVED", 0.9, subject="Cust-042", mode="online", profile="high-value",
                           operator="central:ops", model_versions={"classic": "1", "threshold": "0.3"}, created_ms=T0 + 1),
            DecisionRecord("SUSPICIOUS", 0.2, subject="cust-042", mode="offline", profile="standard", operator="alice",
                           paper_references="paper", created_ms=T0 + 2)]
    store = open_store(db_url, create=True)
    try:
        store.store([Accepted("decision", "kiosk-a", "site1", i, r.created_ms, r.created_ms, f"r{i}", r.to_payload())
                     for i, r in enumerate(recs, 1)])
        assert [d.seq for d in store.query_decisions(profile="HIGH-VALUE")] == [1]
        assert [d.seq for d in store.query_decisions(operator="Central:Ops")] == [1]
        assert [d.seq for d in store.query_decisions(subject="CUST-042", mode="paper")] == [2]
        assert [d.seq for d in store.query_decisions(model_version="threshold=0.3")] == [1]
        d = store.query_decisions(DecisionFilter(outcome="suspicious"))[0]
        assert (d.profile, d.operator, d.mode, d.subject) == ("standard", "alice", "paper", "cust-042")
    finally:
        store.close()
