"""Refused for now, stored later: a message refused for a reason a later state lifts is not lost.

The kiosk deletes its copy of a message once the broker has it, so a refusal the collector
acknowledges is final for the kiosk. Four refusals are not final for the product: a kiosk that sent
before it was registered (or with its new key), a kiosk whose clock ran ahead, and evidence that
arrived before its decision (through another collector of the share group, or after its wait).
Each is reconsidered from its archived bytes and stored once it passes; its refusal is deleted.
Real mosquitto (TLS, the generated ACL), the real collector, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fixtures_link import SITE, UNREGISTERED, LinkPki, mqtt_client, wait_for

from kiosk import envelope
from kiosk.evidence import build
from kiosk.keys import key_id, load_encryption_key, load_signing_key, raw_public
from kiosk.records import DecisionRecord, encode_payload
from tools.broker import Mosquitto
from tools.central.collector import HELD_ROW_COST, Collector, _Incoming
from tools.registry import KioskEntry, Registry
from tools.synth import make_population


def _sealed(link_pki: LinkPki, kiosk: str, kind: str, payload: dict, seq: int, time_ms: int) -> bytes:
    sk = load_signing_key(link_pki.sign_key(kiosk))
    central = load_encryption_key(link_pki.central_key).public_key()
    return envelope.seal(encode_payload(payload), kiosk_id=kiosk, seq=seq, time_ms=time_ms,
                         topic=f"sig/v1/{SITE}/{kiosk}/{kind}", signing_key=sk, recipient=central,
                         sign_key_id=key_id(raw_public(sk)))


def _decision(session: str) -> dict:
    return DecisionRecord.from_dict({"decision": "APPROVED", "score": 0.91, "reasons": [], "subject": "cust-7",
                                     "model_versions": {"pen": "3"}, "session_id": session,
                                     "mode": "online"}).to_payload()


def _own_registry(link_pki: LinkPki, tmp_path: Path) -> Path:
    """The collector's own copy of the registry, in which a test registers kiosk-x later."""
    registry = tmp_path / "registry.json"
    registry.write_bytes(link_pki.registry_file.read_bytes())
    return registry


def _register_unregistered(link_pki: LinkPki, registry: Path, site: str = SITE) -> None:
    """What `sigkiosk admin register` writes for the kiosk that sent before it was registered."""
    reg = Registry.load(registry)
    reg.add(KioskEntry(UNREGISTERED, site, None, (raw_public(load_signing_key(link_pki.sign_key(UNREGISTERED))),)))
    reg.save(registry)


def _collector(link_pki: LinkPki, port: int, db_url: str, registry: Path, **config: Any) -> Collector:
    """A collector of a share group of its own, reading ``registry`` again every 0.2 s."""
    return Collector(link_pki.collector_config(port, db_url, fresh_session=True, share_group=f"r{uuid.uuid4().hex[:8]}",
                                               registry_file=registry, registry_reload_s=0.2, **config))


@contextmanager
def _started(collector: Collector, link_pki: LinkPki, port: int) -> Iterator[Any]:
    """The collector running, and an MQTT client of the unregistered kiosk's certificate."""
    collector.start()
    raw_x = mqtt_client(link_pki, port, UNREGISTERED, cert=link_pki.cert(UNREGISTERED))
    try:
        assert collector.wait_ready()
        yield raw_x
    finally:
        raw_x.disconnect()
        raw_x.loop_stop()
        collector.stop()


def test_refused_for_now_is_stored_once_it_can_be(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                                  db_url: str) -> None:
    registry = _own_registry(link_pki, tmp_path)   # kiosk-x is registered during the test
    # evidence without its decision: refused at once
    collector = _collector(link_pki, mqtt_broker.port, db_url, registry, evidence_orphans_max=0)
    collector.start()
    raw_a = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a", cert=link_pki.cert("kiosk-a"))
    raw_x = mqtt_client(link_pki, mqtt_broker.port, UNREGISTERED, cert=link_pki.cert(UNREGISTERED))
    now = int(time.time() * 1000)
    seq = int(time.time() * 1e6)
    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=3)["001"][0][0]
    try:
        assert collector.wait_ready()
        # 1. Evidence before its decision, refused as unknown_decision; then the decision.
        decision = _sealed(link_pki, "kiosk-a", "decision", _decision("s-1"), seq, now)
        evidence = _sealed(link_pki, "kiosk-a", "evidence", build(
            traj, decision_seq=seq, decision_digest=envelope.parse(decision).digest, session_id="s-1").to_payload(),
            seq + 1, now)
        raw_a.publish(f"sig/v1/{SITE}/kiosk-a/evidence", evidence, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("unknown_decision") == 1, what="the early evidence refused")
        assert collector.store.count("evidence") == 0 and len(collector.store.refused_for_now("unknown_decision")) == 1
        raw_a.publish(f"sig/v1/{SITE}/kiosk-a/decision", decision, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.store.count("evidence") == 1, what="the evidence stored after its decision")
        assert collector.store.evidence_case("kiosk-a", seq)[1] is not None
        assert collector.store.refused_for_now("unknown_decision") == []

        # 2. A kiosk that sends before it is registered: refused as unknown_kiosk, archived whole.
        x_seq = seq + 10
        raw_x.publish(f"sig/v1/{SITE}/{UNREGISTERED}/decision",
                      _sealed(link_pki, UNREGISTERED, "decision", _decision("s-x"), x_seq, now), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("unknown_kiosk") == 1, what="the unregistered kiosk refused")
        assert collector.store.query_decisions(kiosk_id=UNREGISTERED) == []
        # ... an admin registers it (what `sigkiosk admin register` writes): the collector's next
        # registry reload stores the decision it refused.
        _register_unregistered(link_pki, registry)
        stored = wait_for(lambda: collector.store.query_decisions(kiosk_id=UNREGISTERED), what="the decision stored")
        assert [(d.seq, d.payload["session_id"]) for d in stored] == [(x_seq, "s-x")]
        assert collector.store.refused_for_now("unknown_kiosk") == []

        # 3. A kiosk whose clock runs 10 minutes ahead (5 are tolerated): refused as future_time,
        # stored when its time is no longer in the future (the sweep's clock, given here).
        f_seq, ahead = seq + 20, now + 10 * 60_000
        raw_a.publish(f"sig/v1/{SITE}/kiosk-a/decision", _sealed(link_pki, "kiosk-a", "decision", _decision("s-f"),
                                                                f_seq, ahead), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("future_time") == 1, what="the future decision refused")
        assert collector.reconsider(("future_time",), now_ms=now) == 0                  # still ahead
        assert collector.reconsider(("future_time",), now_ms=ahead - 60_000) == 1       # 1 min ahead: tolerated
        assert [d.seq for d in collector.store.query_decisions(kiosk_id="kiosk-a")] == [seq, f_seq]
        assert collector.store.refused_for_now("future_time") == []

        # What stays refused stays: a forged evidence claim, a tampered message of an unknown kiosk.
        assert collector.reconsider() == 0
        assert collector.reconsidered == 3
        counts = json.loads(json.dumps(collector.store.refusal_counts()))
        assert counts == {"unknown_decision": 1, "unknown_kiosk": 1, "future_time": 1}   # counted as they happened
    finally:
        for c in (raw_a, raw_x):
            c.disconnect()
            c.loop_stop()
        collector.stop()


def test_garbage_claiming_a_kiosk_is_not_kept_whole_or_stored(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                              tmp_path: Path, db_url: str) -> None:
    """An unregistered sender's unverifiable bytes are archived whole only while small, and
    registering the kiosk later does not turn a tampered message into a decision."""
    registry = _own_registry(link_pki, tmp_path)
    collector = _collector(link_pki, mqtt_broker.port, db_url, registry)
    now = int(time.time() * 1000)
    seq = int(time.time() * 1e6)
    with _started(collector, link_pki, mqtt_broker.port) as raw_x:
        good = _sealed(link_pki, UNREGISTERED, "decision", _decision("s-ok"), seq, now)
        tampered = bytearray(_sealed(link_pki, UNREGISTERED, "decision", _decision("s-bad"), seq + 1, now))
        tampered[-1] ^= 1
        big = _sealed(link_pki, UNREGISTERED, "decision", {**_decision("s-big"), "subject": secrets.token_hex(40_000)}, seq + 2, now)
        for body, kind in ((good, "decision"), (bytes(tampered), "decision"), (big, "decision")):
            raw_x.publish(f"sig/v1/{SITE}/{UNREGISTERED}/{kind}", body, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("unknown_kiosk") == 3, what="three refusals")
        assert {h.seq for h in collector.store.refused_for_now("unknown_kiosk")} == {seq, seq + 1}   # not the big one
        _register_unregistered(link_pki, registry)
        wait_for(lambda: collector.store.query_decisions(kiosk_id=UNREGISTERED), what="the good decision stored")
        time.sleep(0.5)
        assert [d.seq for d in collector.store.query_decisions(kiosk_id=UNREGISTERED)] == [seq]
        # Still refused, now for what it is: filed under its final reason, out of later looks' way.
        assert collector.store.refused_for_now("unknown_kiosk") == []
        assert [h.seq for h in collector.store.refused_for_now("bad_signature")] == [seq + 1]


def test_a_kiosks_backlog_before_its_registration_is_kept_up_to_a_byte_budget(
        link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path, db_url: str) -> None:
    """A kiosk that worked for days before an admin registered it connects and sends its whole
    backlog at once: what it signed is kept to be stored once it is registered, bounded by the
    bytes held for that kiosk, not by the hourly cap on unverified garbage (which kept the first
    1000 of an hour and lost the rest for good: found by a review)."""
    registry = _own_registry(link_pki, tmp_path)
    now = int(time.time() * 1000)
    seq = int(time.time() * 1e6)
    backlog = [_sealed(link_pki, UNREGISTERED, "decision", _decision(f"s-{k:02d}"), seq + k, now) for k in range(8)]
    assert len({len(b) for b in backlog}) == 1
    collector = _collector(link_pki, mqtt_broker.port, db_url, registry, unverified_archive_per_hour=3,
                           unverified_held_bytes_per_kiosk=5 * (len(backlog[0]) + HELD_ROW_COST))
    with _started(collector, link_pki, mqtt_broker.port) as raw_x:
        for body in backlog:
            raw_x.publish(f"sig/v1/{SITE}/{UNREGISTERED}/decision", body, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("unknown_kiosk") == 8, what="the backlog refused for now")
        # More than the hourly cap (3) kept, up to the kiosk's byte budget (5 messages).
        assert sorted(h.seq for h in collector.store.refused_for_now("unknown_kiosk")) == [seq + k for k in range(5)]
        assert collector.store.held_bytes(UNREGISTERED, ("unknown_kiosk", "unknown_signing_key")) == (5, 5 * len(backlog[0]))
        _register_unregistered(link_pki, registry)
        wait_for(lambda: len(collector.store.query_decisions(kiosk_id=UNREGISTERED)) == 5, what="the kept backlog stored")
        # Their refusals are deleted right after (a transaction of their own).
        wait_for(lambda: collector.store.refused_for_now("unknown_kiosk") == [], what="their refusals deleted")
        assert collector.store.held_bytes(UNREGISTERED, ("unknown_kiosk",)) == (0, 0)


def test_messages_that_fail_for_good_do_not_starve_the_backlog(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                               tmp_path: Path, db_url: str) -> None:
    """Each look reads the newest refusals of a reason (at most reconsider_limit): when a kiosk's
    newest held messages fail for good once it is registered (tampered), they are filed under
    their final reason, and the older ones that pass are stored at the next looks (before, the
    same hopeless rows filled every look and the backlog behind them was never stored)."""
    registry = _own_registry(link_pki, tmp_path)
    collector = _collector(link_pki, mqtt_broker.port, db_url, registry, reconsider_interval_s=0.2, reconsider_limit=2)
    now = int(time.time() * 1000)
    seq = int(time.time() * 1e6)
    with _started(collector, link_pki, mqtt_broker.port) as raw_x:
        messages = []
        for k in range(5):   # two good ones, then three tampered, newer
            body = bytearray(_sealed(link_pki, UNREGISTERED, "decision", _decision(f"s-{k}"), seq + k, now - 60_000 + k * 1000))
            if k >= 2:
                body[-1] ^= 1
            messages.append(bytes(body))
        for body in messages:
            raw_x.publish(f"sig/v1/{SITE}/{UNREGISTERED}/decision", body, qos=1).wait_for_publish(10)
            time.sleep(0.02)   # received in this order: the tampered ones are the newest
        wait_for(lambda: collector.stats.refused.get("unknown_kiosk") == 5, what="five refusals")
        _register_unregistered(link_pki, registry)
        stored = wait_for(lambda: len(collector.store.query_decisions(kiosk_id=UNREGISTERED)) == 2
                          and collector.store.query_decisions(kiosk_id=UNREGISTERED), what="the two good ones stored")
        assert [d.seq for d in stored] == [seq, seq + 1]
        wait_for(lambda: collector.store.refused_for_now("unknown_kiosk") == [], what="their refusals deleted")
        assert sorted(h.seq for h in collector.store.refused_for_now("bad_signature")) == [seq + 2, seq + 3, seq + 4]


# What a reconsideration decides, driven without the broker: the collector's own processor and
# store (SQLite and PostgreSQL) handle batches as they would arrive (found by a review).

DAY_MS = 86_400_000


def _arrived(body: bytes, received_ms: int) -> _Incoming:
    return _Incoming(f"sig/v1/{SITE}/{UNREGISTERED}/decision", body, 0, 0, False, received_ms)


def _register_at(link_pki: LinkPki, collector: Collector, registry: Path, site: str) -> None:
    """Registered at ``site``, and the collector's registry read again (no reload thread here)."""
    _register_unregistered(link_pki, registry, site)
    collector.processor.registry = Registry.load(registry)


def test_a_site_mistyped_at_registration_does_not_finalise_the_backlog(link_pki: LinkPki, tmp_path: Path,
                                                                        db_url: str) -> None:
    """Registered at a mistyped site, the backlog fails as site_mismatch: not final (registering
    again replaces the site), so it is stored once the site is right."""
    registry = _own_registry(link_pki, tmp_path)
    collector = Collector(link_pki.collector_config(1, db_url, registry_file=registry))
    now, seq = int(time.time() * 1000), int(time.time() * 1e6)
    try:
        collector.handle_batch([_arrived(_sealed(link_pki, UNREGISTERED, "decision", _decision(f"s-{k}"), seq + k, now),
                                         now) for k in range(3)])
        assert len(collector.store.refused_for_now("unknown_kiosk")) == 3
        _register_at(link_pki, collector, registry, "site-typo")
        assert collector.reconsider() == 0
        assert len(collector.store.refused_for_now("unknown_kiosk")) == 3     # still held
        _register_at(link_pki, collector, registry, SITE)
        assert collector.reconsider() == 3
        assert [d.seq for d in collector.store.query_decisions(kiosk_id=UNREGISTERED)] == [seq, seq + 1, seq + 2]
    finally:
        collector.store.close()


def test_a_tampered_copy_under_the_same_number_leaves_the_genuine_message_held(link_pki: LinkPki, tmp_path: Path,
                                                                              db_url: str) -> None:
    """A tampered copy of a held message (same sequence number, newer) is filed as final alone:
    the genuine one is stored at the next look."""
    registry = _own_registry(link_pki, tmp_path)
    collector = Collector(link_pki.collector_config(1, db_url, registry_file=registry, reconsider_limit=1))
    now, seq = int(time.time() * 1000), int(time.time() * 1e6)
    good = _sealed(link_pki, UNREGISTERED, "decision", _decision("s-good"), seq, now)
    bad = bytearray(good)
    bad[-1] ^= 1
    try:
        collector.handle_batch([_arrived(good, now - 2000)])
        collector.handle_batch([_arrived(bytes(bad), now - 1000)])
        _register_at(link_pki, collector, registry, SITE)
        assert collector.reconsider() == 0                  # the newest, tampered: filed as final
        assert collector.reconsider() == 1                  # then the genuine one
        assert [d.seq for d in collector.store.query_decisions(kiosk_id=UNREGISTERED)] == [seq]
        assert [h.message for h in collector.store.refused_for_now("bad_signature")] == [bytes(bad)]
    finally:
        collector.store.close()


def test_held_messages_too_old_to_store_do_not_use_the_budget(link_pki: LinkPki, tmp_path: Path, db_url: str) -> None:
    """Messages held longer than max_age_s are never stored: they do not count against the
    kiosk's budget, which would otherwise stay full for good and lose its newer messages."""
    registry = _own_registry(link_pki, tmp_path)
    now, seq = int(time.time() * 1000), int(time.time() * 1e6)
    old = [_sealed(link_pki, UNREGISTERED, "decision", _decision(f"s-o{k}"), seq + k, now - 31 * DAY_MS) for k in range(2)]
    collector = Collector(link_pki.collector_config(
        1, db_url, registry_file=registry, unverified_held_bytes_per_kiosk=2 * (len(old[0]) + HELD_ROW_COST)))
    try:
        collector.handle_batch([_arrived(m, now - 31 * DAY_MS) for m in old])   # unregistered for a month
        assert collector.store.held_bytes(UNREGISTERED, ("unknown_kiosk",)) == (2, 2 * len(old[0]))
        fresh = Collector(link_pki.collector_config(
            1, db_url, registry_file=registry, unverified_held_bytes_per_kiosk=2 * (len(old[0]) + HELD_ROW_COST)))
        new = _sealed(link_pki, UNREGISTERED, "decision", _decision("s-new"), seq + 10, now)
        fresh.handle_batch([_arrived(new, now)])      # a restarted collector: reads the held bytes
        _register_at(link_pki, fresh, registry, SITE)
        assert fresh.reconsider() == 1
        assert [d.seq for d in fresh.store.query_decisions(kiosk_id=UNREGISTERED)] == [seq + 10]
        fresh.store.close()
    finally:
        collector.store.close()


def test_looks_page_past_rows_that_keep_failing(link_pki: LinkPki, tmp_path: Path, db_url: str) -> None:
    """Rows that fail again for a reason that is not final (signed with a key not registered for
    the kiosk: perhaps a key registered later) are kept; each look over every kiosk goes on from
    where the last stopped, so the older backlog behind them is stored (before, every look read
    the same newest rows)."""
    registry = _own_registry(link_pki, tmp_path)
    collector = Collector(link_pki.collector_config(1, db_url, registry_file=registry, reconsider_limit=2))
    now, seq = int(time.time() * 1000), int(time.time() * 1e6)
    other_key = load_signing_key(link_pki.sign_key("kiosk-a"))
    central = load_encryption_key(link_pki.central_key).public_key()
    topic = f"sig/v1/{SITE}/{UNREGISTERED}/decision"
    try:
        for k in range(2):   # the backlog, older
            collector.handle_batch([_arrived(_sealed(link_pki, UNREGISTERED, "decision", _decision(f"s-{k}"), seq + k, now),
                                             now - 5000 + k)])
        for k in range(3):   # newer, signed with another key
            body = envelope.seal(encode_payload(_decision(f"s-o{k}")), kiosk_id=UNREGISTERED, seq=seq + 10 + k, time_ms=now,
                                 topic=topic, signing_key=other_key, recipient=central,
                                 sign_key_id=key_id(raw_public(other_key)))
            collector.handle_batch([_arrived(body, now - 1000 + k)])
        _register_at(link_pki, collector, registry, SITE)
        stored = [collector.reconsider() for _ in range(3)]
        assert sum(stored) == 2 and stored[0] == 0          # the first look: the three newest fail again
        assert [d.seq for d in collector.store.query_decisions(kiosk_id=UNREGISTERED)] == [seq, seq + 1]
        assert len(collector.store.refused_for_now("unknown_kiosk")) == 3   # kept: not final
    finally:
        collector.store.close()
