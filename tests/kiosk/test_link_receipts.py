"""A decision leaves the kiosk only when a collector says it is stored (kiosk.receipts).

mosquitto acknowledges a message (PUBACK) while it holds it in memory and writes it to disk only at
its next autosave: before receipts, a broker killed within that window while no collector was
taking its messages lost every decision the kiosk had already deleted (a review, 2026-11-30: 50 of
50). Real broker (TLS, ACL), real collector, real SQLite; the broker is SIGKILLed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures_link import SITE, LinkPki, mqtt_client, start_broker, wait_for

from kiosk import envelope, receipts
from kiosk.envelope import RECEIPT_LEN
from kiosk.keys import load_encryption_key, load_signing_key
from kiosk.link import KioskLink
from kiosk.records import DecisionRecord, encode_payload
from kiosk.topics import KioskTopics
from tools.central.collector import Collector


def _kill(broker) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL: no chance to save its persistence (a power cut, the OOM killer)."""
    assert broker.proc is not None
    broker.proc.kill()
    broker.proc.wait(10)


def _collector_away(link_pki: LinkPki, port: int, db: str) -> None:
    """A collector that subscribed once and is gone: the broker queues its share in its session."""
    collector = Collector(link_pki.collector_config(port, db, fresh_session=True))
    collector.start()
    assert collector.wait_ready()
    collector.stop()


def test_a_broker_killed_before_its_autosave_loses_no_decision(link_pki: LinkPki, tmp_path: Path) -> None:
    broker = start_broker(link_pki, tmp_path / "broker", autosave_interval_s=3600)
    db = str(tmp_path / "central.sqlite")
    _collector_away(link_pki, broker.port, db)   # a deploy, a crash: its session queues its messages
    link = KioskLink(link_pki.link_config("kiosk-a", broker.port, tmp_path / "outbox.sqlite",
                                          receipt_wait_s=1.0, receipt_wait_max_s=2.0))
    later = None
    try:
        link.start()
        for i in range(30):
            link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"n{i}"})
        assert link.flush(20, stored=False), "the broker should have acknowledged all 30"
        # Acknowledged by the broker, and still kept: no collector has said it stored them.
        assert link.outbox.depth() == {"decision": 30}
        assert link.stats().awaiting_receipt == {"decision": 30}
        # Their receipts are overdue, but no collector is taking messages: the broker holds them for
        # the collector's session, and sending copies would only queue copies (a review: 190 sends
        # of 10 decisions in a 20 s outage).
        time.sleep(3.0)
        assert link.stats().published == 30

        _kill(broker)   # within the autosave interval: the broker's copies are gone
        broker.start()
        later = Collector(link_pki.collector_config(broker.port, db))
        later.start()
        assert later.wait_ready()
        # The kiosk sends each again once its receipt is overdue; the collector stores and receipts it.
        assert link.flush(30), f"not every decision was confirmed: {link.outbox.depth()}"
        subjects = sorted(d.payload["subject"] for d in later.store.query_decisions(limit=1000))
        assert subjects == sorted(f"n{i}" for i in range(30))   # every one, each once
        assert later.stats.receipts >= 30
        assert link.stats().awaiting_receipt == {}
    finally:
        link.close()
        if later is not None:
            later.stop()
        broker.stop()


def test_receipts_from_anyone_but_the_central_key_delete_nothing(link_pki: LinkPki, tmp_path: Path) -> None:
    broker = start_broker(link_pki, tmp_path / "broker")
    db = str(tmp_path / "central.sqlite")
    _collector_away(link_pki, broker.port, db)
    link = KioskLink(link_pki.link_config("kiosk-a", broker.port, tmp_path / "outbox.sqlite"))
    clients = []
    later = None
    try:
        link.start()
        seqs = [link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"n{i}"}) for i in range(5)]
        assert link.flush(20, stored=False)
        topic = link.topics.receipt
        assert topic == f"sig/v1/{SITE}/kiosk-a/receipt"
        guessed = [receipts.Receipt(s, bytes(RECEIPT_LEN)) for s in seqs]
        # Another kiosk may not write there at all (the broker's ACL); a collector identity can,
        # but neither a guessed token nor a malformed message matches a row.
        other = mqtt_client(link_pki, broker.port, "kiosk-b")
        clients.append(other)
        info = other.publish(topic, receipts.encode(guessed)[0], qos=1)
        info.wait_for_publish(5)
        wait_for(lambda: info.mid in other.pubacks, what="the broker's answer to kiosk-b")
        assert other.pubacks[info.mid] >= 0x80, "the broker let a kiosk write another kiosk's receipts"
        rogue = mqtt_client(link_pki, broker.port, "collector.c2")
        clients.append(rogue)
        for payload in [*receipts.encode(guessed), b"SR\x01\x00\x05" + b"\x00" * 10, b"", b"x" * 5000]:
            rogue.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_for(lambda: link._bad_receipts >= 3, what="the malformed receipts seen and refused")
        time.sleep(0.5)   # the sender applies what it received every 0.2 s
        assert link.outbox.depth() == {"decision": 5}
        # Nor do they count as a collector having passed the rows over (a review: one zero token
        # made every overdue row due).
        assert link._receipted_order is None

        later = Collector(link_pki.collector_config(broker.port, db))
        later.start()
        assert link.flush(30), "the real collector's receipts should clear the outbox"
        assert later.store.count("decisions") == 5
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        link.close()
        if later is not None:
            later.stop()
        broker.stop()


def test_a_refused_message_archived_whole_is_receipted_an_unverified_one_is_not(link_pki: LinkPki,
                                                                                 tmp_path: Path) -> None:
    """A decision 40 days old (the kiosk was offline that long) is refused as ``stale`` but kept
    whole, signed, in ``rejected``: the kiosk may let it go. One that kiosk-a's key did not sign is
    kept as a sample only, and nothing tells kiosk-a to drop anything."""
    broker = start_broker(link_pki, tmp_path / "broker")
    collector = Collector(link_pki.collector_config(broker.port, str(tmp_path / "central.sqlite"), fresh_session=True))
    collector.start()
    kiosk = mqtt_client(link_pki, broker.port, "kiosk-a")   # kiosk-a's certificate, a raw client
    try:
        assert collector.wait_ready()
        topics = KioskTopics("sig", SITE, "kiosk-a")
        kiosk.subscribe(topics.receipt, qos=1)
        wait_for(lambda: kiosk.subacks == [[1]], what="kiosk-a subscribed to its receipts")
        central = load_encryption_key(link_pki.central_key).public_key()
        old_ms = int((time.time() - 40 * 86400) * 1000)

        def sealed(key_of: str, seq: int) -> tuple[bytes, bytes]:
            return envelope.seal_with_receipt(
                encode_payload(DecisionRecord("APPROVED", 0.9, created_ms=old_ms).to_payload()), kiosk_id="kiosk-a",
                seq=seq, time_ms=old_ms, topic=topics.decision, signing_key=load_signing_key(link_pki.sign_key(key_of)),
                recipient=central)

        stale, token = sealed("kiosk-a", 5)
        forged, _ = sealed("kiosk-x", 6)          # another kiosk's key under kiosk-a's name
        for data in (forged, stale):
            kiosk.publish(topics.decision, data, qos=1).wait_for_publish(5)
        wait_for(lambda: collector.stats.refused["stale"] == 1 and collector.stats.refused["unknown_signing_key"] == 1,
                 what="both refused")
        wait_for(lambda: len(kiosk.received) == 1, what="the stale decision's receipt")
        time.sleep(0.5)
        assert [(t, list(receipts.decode(p))) for t, p in kiosk.received] == [
            (topics.receipt, [receipts.Receipt(5, token)])]
    finally:
        kiosk.loop_stop()
        kiosk.disconnect()
        collector.stop()
        broker.stop()


def test_a_collector_back_to_a_backlog_is_not_sent_the_backlog_again(link_pki: LinkPki, tmp_path: Path) -> None:
    """Found by a review: with "any receipt since it was sent" as the sign of a live collector,
    the receipts for the oldest of a backlog made every later row due, and 233 of 300 were sent
    again behind their originals (sequence numbers were fooled the same way by a status report
    sealed after the backlog but published while it was still being sent). A row is sent again
    only once a message published after it is receipted."""
    broker = start_broker(link_pki, tmp_path / "broker")
    db = str(tmp_path / "central.sqlite")
    _collector_away(link_pki, broker.port, db)
    link = KioskLink(link_pki.link_config("kiosk-a", broker.port, tmp_path / "outbox.sqlite",
                                          receipt_wait_s=1.0, receipt_wait_max_s=60.0))
    later = None
    try:
        link.start()
        for i in range(100):
            link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"n{i}"})
        assert link.flush(30, stored=False)
        time.sleep(1.5)   # the outage outlasts the receipt wait
        sent = link.stats().published
        later = Collector(link_pki.collector_config(broker.port, db, batch_size=20))
        later.start()
        assert link.flush(60)
        assert later.store.count("decisions") == 100
        assert link.stats().published - sent <= 2, "the kiosk sent its backlog again"
    finally:
        link.close()
        if later is not None:
            later.stop()
        broker.stop()


def test_a_receipt_subscription_refused_is_asked_again_once_the_acl_allows_it(
        link_pki: LinkPki, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a review: kiosks upgraded before their broker's ACL got no receipts, and after the
    admin regenerated and reloaded the ACL (as the kiosk's ERROR says) nothing changed until the
    kiosk happened to reconnect."""
    broker = start_broker(link_pki, tmp_path / "broker")
    acl = broker.config_path.parent / "acl"
    current = acl.read_text()
    acl.write_text("\n".join(line for line in current.splitlines() if not line.endswith("/%u/receipt")))
    broker.reload()   # the ACL from before receipts
    time.sleep(0.5)
    collector = Collector(link_pki.collector_config(broker.port, str(tmp_path / "central.sqlite"), fresh_session=True))
    collector.start()
    link = KioskLink(link_pki.link_config("kiosk-a", broker.port, tmp_path / "outbox.sqlite", health_interval_s=1.0,
                                          receipt_wait_s=1.0, receipt_wait_max_s=2.0))
    try:
        assert collector.wait_ready()
        link.add_command_handler(lambda topic, payload: None)
        link.start()
        for i in range(5):
            link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"m{i}"})
        wait_for(lambda: collector.store.count("decisions") == 5, what="the decisions stored")
        time.sleep(1.5)
        assert link.outbox.depth() == {"decision": 5}, "no receipt can reach the kiosk yet"
        assert "receipt subscription refused" in (link.stats().last_error or "")
        # The receipts' refusal is not taken for the commands' (a review: a health report asking
        # again while the first answer was on its way made it so, on every connect).
        assert link.commands_ready.is_set()
        assert not [r for r in caplog.records if "command subscriptions" in r.getMessage()]
        acl.write_text(current)
        broker.reload()
        # Their receipts were sent while nobody could read them: the rows are sent again (1 s here,
        # 120 s by default) once the kiosk reads receipts again, and receipted again.
        assert link.flush(30), "the kiosk should ask again, get its receipts and clear its outbox"
    finally:
        link.close()
        collector.stop()
        broker.stop()
