"""Attack 3: make the central collector acknowledge what it did not store.

Whoever can fill the collector's disk (a flood of logs, a large legitimate backlog) or take its
database down must not be able to make decisions vanish: the collector acknowledges a message
to the broker only once it is durably stored, so on a storage failure it holds the messages
unacknowledged, raises its alarm and resumes by itself when the storage is back - and if it is
restarted meanwhile, the broker redelivers. A message bad in itself is the opposite case: it is
refused, archived with its bytes and acknowledged at once, without delaying anyone else.

The storage is real and really full: a tmpfs of 4 MiB mounted by the test (we run as root, as
in CI), holding the SQLite file - or, for PostgreSQL, a tablespace the collector's tables live in
(PostgreSQL's own WAL stays on the big disk, so the failure is the tables' ``DiskFull``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from disk_helpers import fill_disk, tiny_tmpfs
from fixtures_link import SITE, LinkPki, PgServer, mqtt_client, wait_for

from kiosk import envelope
from kiosk.evidence import build
from kiosk.keys import load_encryption_key, load_signing_key
from kiosk.link import KioskLink
from kiosk.records import DecisionRecord, encode_payload
from models.trajectory import DeviceInfo, Trajectory
from tools.broker import Mosquitto
from tools.central.collector import Collector

TOPIC = f"sig/v1/{SITE}/kiosk-a/decision"


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    # Directly under /tmp, not in pytest's 0700 tree: PostgreSQL's user must reach it. Owned by
    # that user, as a tablespace must be; we are root, so the test itself can write there too.
    mnt = Path(tempfile.mkdtemp(prefix="sigkiosk-tiny-"))
    pg = pwd.getpwnam("postgres")
    try:
        # 4 MiB: the 19 big decisions below, each with 300 model rows and their index entries
        # (about 85 KB stored), must fit once the filler is gone.
        with tiny_tmpfs(mnt, "4m", uid=pg.pw_uid, gid=pg.pw_gid):
            yield mnt
    finally:
        mnt.rmdir()


@pytest.fixture(params=["sqlite", "postgresql"])
def tiny_db(request: pytest.FixtureRequest, tiny_fs: Path) -> Iterator[str]:
    """A database whose tables live on the tiny file system."""
    if request.param == "sqlite":
        yield str(tiny_fs / "central.sqlite")
        return
    import psycopg

    server: PgServer = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    (tiny_fs / "pg").mkdir()
    os.chown(tiny_fs / "pg", os.stat(tiny_fs).st_uid, os.stat(tiny_fs).st_gid)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {name} LOCATION '{tiny_fs / 'pg'}'")
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield server.dsn() + f"?options=-csearch_path%3D{name}%20-cdefault_tablespace%3D{name}"
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
            conn.execute(f"DROP TABLESPACE {name}")


def _big_decision(subject: str) -> dict:  # type: ignore[type-arg]
    # About 17 KB of random plaintext each (every list and map of a decision at its bound,
    # kiosk.records): it cannot fit in the space left, while a small row (a refusal, say) still
    # could - the "nearly full" case that lost data.
    return {"decision": "APPROVED", "score": 0.8, "subject": subject,
            "model_versions": {f"m{i:03d}" + secrets.token_hex(30): secrets.token_hex(128) for i in range(32)},
            "reasons": [secrets.token_hex(32) for _ in range(32)],
            "timings_ms": {f"t{i:03d}" + secrets.token_hex(30): 1.5 for i in range(32)},
            "explanations": [secrets.token_hex(150) for _ in range(8)]}


def _collector(link_pki: LinkPki, port: int, db: str, group: str, fresh: bool) -> Collector:
    c = Collector(link_pki.collector_config(port, db, fresh_session=fresh, share_group=group,
                                            storage_retry_min_s=0.1, storage_retry_max_s=0.5))
    c.start()
    assert c.wait_ready()
    return c


def test_a_full_disk_makes_the_collector_hold_not_ack_and_nothing_is_lost(
        link_pki: LinkPki, own_broker: Mosquitto, tmp_path: Path, tiny_fs: Path, tiny_db: str) -> None:
    group = f"d{uuid.uuid4().hex[:8]}"
    collector = _collector(link_pki, own_broker.port, tiny_db, group, fresh=True)
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite"))
    garbage = mqtt_client(link_pki, own_broker.port, "kiosk-b")
    try:
        link.start()
        link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": "before"})
        wait_for(lambda: collector.store.count("decisions") == 1, what="the first decision")
        # One refusal archived before the disk fills: its tables then have room for more small
        # rows (PostgreSQL pages), the case where a lost decision could still leave a trace.
        garbage.publish(f"sig/v1/{SITE}/kiosk-b/decision", b"garbage" * 20, qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("rejected") == 1, what="the garbage archived")

        # 1. The disk is nearly full: 13 decisions cannot be stored. The collector must alarm and
        #    hold them; then it is restarted (a crash, a deploy) while the disk is still full.
        filler = fill_disk(tiny_fs, leave=8 * 1024)
        for i in range(13):
            link.publish_decision(_big_decision(f"full-{i}"))
        assert link.flush(20, stored=False)   # the broker has them all
        wait_for(lambda: not collector.health()["storage"]["ok"], timeout=10, what="the storage alarm")
        assert not collector.health()["healthy"]
        time.sleep(1.5)   # several retries fail meanwhile; nothing may be acknowledged or refused
        h = collector.health()["storage"]
        assert h["failures"] >= 3 and h["held"] >= 1, h
        assert "full" in h["last_error"] or "no space" in h["last_error"].lower(), h   # SQLite / PostgreSQL
        assert collector.store.count("decisions") == 1
        assert collector.stats.refused == {"malformed": 1}, collector.stats.refused   # the garbage only
        collector.stop()

        # 2. A new collector (same identity) gets the unacknowledged messages again from the
        #    broker; it too holds them while the disk is full, and stores them once space is back.
        collector = _collector(link_pki, own_broker.port, tiny_db, group, fresh=False)
        wait_for(lambda: not collector.health()["storage"]["ok"], timeout=10, what="the alarm after the restart")
        filler.unlink()
        wait_for(lambda: collector.store.count("decisions") == 14, timeout=20, what="all 13 held decisions")
        wait_for(lambda: collector.health()["storage"]["ok"], timeout=5, what="the alarm cleared")
        subjects = sorted(d.payload["subject"] for d in collector.store.query_decisions(limit=100))
        assert subjects == sorted(["before", *(f"full-{i}" for i in range(13))])

        # 3. Without a restart: the disk fills again, the collector holds, and resumes by itself.
        filler = fill_disk(tiny_fs, leave=8 * 1024)
        for i in range(5):
            link.publish_decision(_big_decision(f"again-{i}"))
        assert link.flush(20, stored=False)   # the broker has them; stored only once the disk has room
        wait_for(lambda: not collector.health()["storage"]["ok"], timeout=10, what="the second alarm")
        filler.unlink()
        wait_for(lambda: collector.store.count("decisions") == 19, timeout=20, what="the 5 held decisions")
        wait_for(lambda: collector.health()["healthy"], timeout=5, what="healthy again")
        assert collector.stats.storage.outages == 2

        # Nothing was refused but the garbage: every decision is a decision row.
        assert set(collector.store.refusal_counts()) <= {"malformed", "duplicate"}, collector.store.refusal_counts()
        assert collector.store.count("rejected") == 1
    finally:
        garbage.disconnect()
        garbage.loop_stop()
        link.close()
        collector.stop()


def test_one_poison_message_does_not_delay_the_others(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                      db_url: str) -> None:
    sk = load_signing_key(link_pki.sign_key("kiosk-a"))
    central = load_encryption_key(link_pki.central_key).public_key()
    now = int(time.time() * 1000)
    base = 10_000 + int(uuid.uuid4().int % 1_000_000) * 10

    def sealed(seq: int, plaintext: bytes) -> bytes:
        return envelope.seal(plaintext, kiosk_id="kiosk-a", seq=seq, time_ms=now, topic=TOPIC, signing_key=sk,
                             recipient=central)

    good = [sealed(base + i, encode_payload(DecisionRecord("APPROVED", 0.7, subject=f"g{i}").to_payload()))
            for i in range(5)]
    # Signed by the real kiosk key; its decision text holds a lone surrogate, which neither SQLite
    # nor PostgreSQL can store (before: 2 x 2 s of retries for the whole batch, then stored singly).
    poison = sealed(base + 9, encode_payload(DecisionRecord("APPROVED", 0.7).to_payload())
                    .replace(b'"APPROVED"', b'"APPROVED\\ud800"'))
    group = f"p{uuid.uuid4().hex[:8]}"
    # A generous batch window, so the poison shares a batch with the good ones, as under load.
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True, share_group=group,
                                                    batch_wait_s=0.2))
    collector.start()
    client = None
    try:
        assert collector.wait_ready()
        client = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")
        infos = [client.publish(TOPIC, data, qos=1) for data in [good[0], good[1], poison, *good[2:]]]
        for info in infos:
            info.wait_for_publish(5)
        t0 = time.monotonic()
        wait_for(lambda: collector.store.count("decisions") == 5, timeout=10, interval=0.01, what="the 5 good ones")
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"the good decisions waited {elapsed:.2f} s behind the poison"
        wait_for(lambda: collector.store.refusal_counts() == {"bad_payload": 1}, timeout=5,
                 what=f"the poison refused, have {collector.store.refusal_counts()}")
        assert collector.health()["storage"]["ok"]   # a bad message is not a storage failure
        conn = collector.store._conn()   # the archive holds the poison, whole: the evidence
        cur = conn.cursor()
        cur.execute("SELECT sample, size FROM rejected WHERE reason = 'bad_payload'")
        rows = cur.fetchall()
        conn.commit()
        assert [(bytes(r[0]), r[1]) for r in rows] == [(poison, len(poison))]
        # It was acknowledged: a restarted collector (same session) is not handed it again.
        collector.stop()
        collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, share_group=group))
        collector.start()
        assert collector.wait_ready()
        client.publish(TOPIC, sealed(base + 20, encode_payload(DecisionRecord("APPROVED", 0.7).to_payload())),
                       qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 6, what="a decision after the restart")
        assert collector.store.refusal_counts() == {"bad_payload": 1}
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        collector.stop()


def _rename_decisions(db: str, old: str, new: str) -> None:
    """Take the decisions table away from (or give it back to) the collector, from a connection
    of our own: every read and write of it then fails in the database driver itself."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        return
    with sqlite3.connect(db) as conn:
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_evidence_arriving_while_the_database_fails_is_held_and_stored_after(
        link_pki: LinkPki, mqtt_broker: Mosquitto, db_url: str) -> None:
    # The evidence's first step at the collector is a read (is its decision stored?): that read
    # failing in the driver ended the storage thread, silently - nothing stored or acknowledged
    # any more while health() still said healthy.
    sk = load_signing_key(link_pki.sign_key("kiosk-a"))
    central = load_encryption_key(link_pki.central_key).public_key()
    base = 10_000 + int(uuid.uuid4().int % 1_000_000) * 10

    def sealed(kind: str, seq: int, payload: dict) -> bytes:  # type: ignore[type-arg]
        return envelope.seal(encode_payload(payload), kiosk_id="kiosk-a", seq=seq, time_ms=int(time.time() * 1000),
                             topic=f"sig/v1/{SITE}/kiosk-a/{kind}", signing_key=sk, recipient=central)

    rng = np.random.default_rng(3)
    n = 300
    traj = Trajectory.from_samples(np.cumsum(rng.integers(-60, 61, n)) + 30_000,
                                   np.cumsum(rng.integers(-40, 41, n)) + 20_000,
                                   np.where(np.arange(n) % 100 < 80, rng.integers(1, 8192, n), 0),
                                   t=np.arange(n) * 0.005, device=DeviceInfo("tablet", "device", 200.0, 8191, 200.0))
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True,
                                                    share_group=f"r{uuid.uuid4().hex[:8]}",
                                                    storage_retry_min_s=0.1, storage_retry_max_s=0.5))
    collector.start()
    client = None
    try:
        assert collector.wait_ready()
        client = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")
        client.publish(TOPIC, sealed("decision", base, DecisionRecord("APPROVED", 0.7, session_id="s1", mode="online").to_payload()),
                       qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 1, what="the decision")
        decision, _ = collector.store.evidence_case("kiosk-a", base)
        assert decision is not None and decision.digest

        _rename_decisions(db_url, "decisions", "decisions_away")
        evidence = build(traj, decision_seq=base, decision_digest=decision.digest, session_id="s1")
        client.publish(f"sig/v1/{SITE}/kiosk-a/evidence", sealed("evidence", base + 1, evidence.to_payload()),
                       qos=1).wait_for_publish(5)
        wait_for(lambda: not collector.health()["storage"]["ok"], timeout=10, what="the storage alarm")
        assert not collector.health()["healthy"]
        time.sleep(1.0)   # retries fail meanwhile: the evidence is held, neither stored nor refused
        h = collector.health()["storage"]
        assert h["failures"] >= 2 and h["held"] == 1, h
        assert collector.store.count("evidence") == 0
        assert collector.stats.refused == {}, collector.stats.refused

        _rename_decisions(db_url, "decisions_away", "decisions")
        wait_for(lambda: collector.store.count("evidence") == 1, timeout=10, what="the held evidence stored")
        wait_for(lambda: collector.health()["healthy"], timeout=5, what="healthy again")
        assert collector.store.evidence_case("kiosk-a", base)[1] is not None
        # The storage thread lives on: a later decision is stored too.
        client.publish(TOPIC, sealed("decision", base + 2, DecisionRecord("APPROVED", 0.7).to_payload()),
                       qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 2, what="a decision after the outage")
        assert collector.stats.refused == {} and collector.stats.storage.outages == 1
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        collector.stop()


def test_a_collector_is_not_retired_while_it_cannot_store_what_its_session_holds(
        link_pki: LinkPki, own_broker: Mosquitto, tmp_path: Path, tiny_fs: Path) -> None:
    """``central run --retire`` ends the collector's session only once what the session held is
    stored: on a full disk it gives up, the session is kept, and a collector started later with
    the same identity stores every decision (ending it then would have lost them)."""
    group = f"r{uuid.uuid4().hex[:8]}"
    db = str(tiny_fs / "central.sqlite")
    _collector(link_pki, own_broker.port, db, group, fresh=True).stop()   # down; its session kept
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite"))
    retiring = Collector(link_pki.collector_config(own_broker.port, db, share_group=group,
                                                   storage_retry_min_s=0.1, storage_retry_max_s=0.5))
    filler = fill_disk(tiny_fs, leave=8 * 1024)
    try:
        link.start()
        for i in range(5):
            link.publish_decision(_big_decision(f"held-{i}"))
        assert link.flush(20, stored=False)             # all in the stopped collector's session
        assert not retiring.retire(quiet_s=0.5, timeout_s=6)
        filler.unlink()
        collector = _collector(link_pki, own_broker.port, db, group, fresh=False)
        try:
            wait_for(lambda: collector.store.count("decisions") == 5, timeout=20,
                     what="the session's decisions stored after the retirement gave up")
        finally:
            collector.stop()
    finally:
        link.close()
        if filler.exists():
            filler.unlink()
