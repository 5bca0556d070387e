"""Every kind of bad message is refused, counted by reason, kept for audit; the collector goes on."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fixtures_link import SITE, LinkPki, mqtt_client, wait_for

from kiosk import envelope
from kiosk.keys import key_id, load_encryption_key, load_signing_key, raw_public
from kiosk.records import DecisionRecord, encode_payload
from tools.broker import Mosquitto
from tools.central.collector import Collector

DAY_MS = 86_400_000


def _topic(kiosk: str, kind: str = "decision") -> str:
    return f"sig/v1/{SITE}/{kiosk}/{kind}"


def test_bad_messages_are_refused_and_counted(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                              db_url: str) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True,
                                                    share_group=f"r{uuid.uuid4().hex[:8]}", max_envelope=64 * 1024))
    collector.start()
    ka_key = load_signing_key(link_pki.sign_key("kiosk-a"))
    kx_key = load_signing_key(link_pki.sign_key("kiosk-x"))
    central = load_encryption_key(link_pki.central_key).public_key()
    now = int(time.time() * 1000)
    seq = iter(range(10_000, 20_000))

    def sealed(kiosk: str = "kiosk-a", kind: str = "decision", *, key=ka_key, key_id_of=None, t: int | None = None,
               topic: str | None = None, plaintext: bytes | None = None, recipient=central, s: int | None = None) -> bytes:
        body = plaintext if plaintext is not None else encode_payload(DecisionRecord("APPROVED", 0.9).to_payload())
        return envelope.seal(body, kiosk_id=kiosk, seq=next(seq) if s is None else s, time_ms=now if t is None else t,
                             topic=topic or _topic(kiosk, kind), signing_key=key, recipient=recipient,
                             sign_key_id=key_id(raw_public(key_id_of or key)))

    good = sealed(s=1)
    tampered_ct = bytearray(sealed())
    tampered_ct[-envelope.SIGNATURE_LEN - 5] ^= 1           # a ciphertext byte: the signature breaks
    tampered_hdr = bytearray(sealed())
    tampered_hdr[6] ^= 1                                     # a header byte (flags/seq): the signature breaks
    cases: list[tuple[str, str, str, bytes]] = [             # (reason, publisher, topic, payload)
        ("bad_signature", "kiosk-a", _topic("kiosk-a"), bytes(tampered_ct)),
        ("bad_signature", "kiosk-a", _topic("kiosk-a"), bytes(tampered_hdr)),
        ("bad_signature", "kiosk-a", _topic("kiosk-a"), sealed(key=kx_key, key_id_of=ka_key)),  # wrong key
        ("unknown_signing_key", "kiosk-a", _topic("kiosk-a"), sealed(key=kx_key)),
        ("unknown_kiosk", "kiosk-x", _topic("kiosk-x"), sealed("kiosk-x", key=kx_key)),
        ("stale", "kiosk-a", _topic("kiosk-a"), sealed(t=now - 40 * DAY_MS)),
        ("future_time", "kiosk-a", _topic("kiosk-a"), sealed(t=now + DAY_MS)),
        ("malformed", "kiosk-a", _topic("kiosk-a"), b"not an envelope at all, just some bytes" * 3),
        ("malformed", "kiosk-a", _topic("kiosk-a"), good[:-10]),                       # truncated
        ("oversized", "kiosk-a", _topic("kiosk-a"), b"SK\x01" + bytes(100 * 1024)),
        ("topic_mismatch", "kiosk-a", _topic("kiosk-a"), sealed(kind="log")),          # log sent as decision
        ("unknown_encryption_key", "kiosk-a", _topic("kiosk-a"), sealed(recipient=X25519PrivateKey.generate().public_key())),
        ("bad_payload", "kiosk-a", _topic("kiosk-a"), sealed(plaintext=b"\xff\xfe not json")),
        ("bad_payload", "kiosk-a", _topic("kiosk-a", "log"), sealed(kind="log")),     # a decision on the log topic
        ("duplicate", "kiosk-a", _topic("kiosk-a"), good),                             # the same message again
        ("replay", "kiosk-a", _topic("kiosk-a"), sealed(s=1, plaintext=encode_payload(
            DecisionRecord("SUSPICIOUS", 0.1).to_payload()))),                         # seq 1 reused
    ]
    expected: dict[str, int] = {}
    for reason, *_ in cases:
        expected[reason] = expected.get(reason, 0) + 1
    clients = {}
    try:
        assert collector.wait_ready()
        clients = {cn: mqtt_client(link_pki, mqtt_broker.port, cn) for cn in ("kiosk-a", "kiosk-x")}
        clients["kiosk-a"].publish(_topic("kiosk-a"), good, qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 1, what="the good decision")
        for _, publisher, topic, payload in cases:
            clients[publisher].publish(topic, payload, qos=1).wait_for_publish(5)
        after = sealed()                                      # the collector still works afterwards
        clients["kiosk-a"].publish(_topic("kiosk-a"), after, qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 2, what="a good decision after the bad ones")
        wait_for(lambda: collector.store.refusal_counts() == expected, timeout=10,
                 what=f"refusal counts {expected}, have {collector.store.refusal_counts()}")
        assert dict(collector.stats.refused) == expected
        # Nothing bad was stored; the replay did not overwrite the original.
        rows = collector.store.query_decisions()
        assert [(r.seq, r.decision) for r in rows][0] == (1, "APPROVED")
        assert collector.store.count("logs") == 0
        # Refusals are archived for audit (duplicates are only counted).
        assert collector.store.count("rejected") == sum(expected.values()) - expected["duplicate"]
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
        collector.stop()


def test_an_unverified_sender_archives_a_bounded_number_of_refusals(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                                    db_url: str) -> None:
    """Any device certificate can publish on its own topic, registered or not: unverified garbage
    is counted and logged, and archived in ``rejected`` only up to a budget per sender and hour, so
    a flood cannot fill the central disk. What a registered kiosk's key signed is always archived."""
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True,
                                                    share_group=f"r{uuid.uuid4().hex[:8]}",
                                                    unverified_archive_per_hour=3))
    collector.start()
    raw = mqtt_client(link_pki, mqtt_broker.port, "kiosk-x", cert=link_pki.cert("kiosk-x"))
    ka_key = load_signing_key(link_pki.sign_key("kiosk-a"))
    central = load_encryption_key(link_pki.central_key).public_key()
    now = int(time.time() * 1000)
    try:
        assert collector.wait_ready()
        for k in range(8):
            raw.publish(_topic("kiosk-x"), b"garbage %d" % k + bytes(3000), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("malformed") == 8, what="eight refusals counted")
        assert collector.store.refusal_counts()["malformed"] == 8
        assert collector.store.count("rejected") == 3            # the budget
        # Signed by a registered kiosk, refused for its time: archived whatever the budget says.
        kiosk_a = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a", cert=link_pki.cert("kiosk-a"))
        try:
            for k in range(5):
                kiosk_a.publish(_topic("kiosk-a"), envelope.seal(
                    encode_payload(DecisionRecord("APPROVED", 0.9).to_payload()), kiosk_id="kiosk-a", seq=90_000 + k,
                    time_ms=now - 90 * DAY_MS, topic=_topic("kiosk-a"), signing_key=ka_key, recipient=central,
                    sign_key_id=key_id(raw_public(ka_key))), qos=1).wait_for_publish(10)
            wait_for(lambda: collector.stats.refused.get("stale") == 5, what="five stale decisions")
        finally:
            kiosk_a.disconnect()
            kiosk_a.loop_stop()
        assert collector.store.count("rejected") == 3 + 5
    finally:
        raw.disconnect()
        raw.loop_stop()
        collector.stop()
