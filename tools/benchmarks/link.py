"""Benchmark: the secure link. Kiosk-side cost of one decision, and collector throughput.

Kiosk side: sealing one typical decision (JSON + X25519 ephemeral + HKDF + AES-GCM + Ed25519),
and sealing plus committing it to the outbox (SQLite WAL, synchronous=FULL: an fsync per
decision), which is what ``KioskLink.publish_decision`` costs before it returns.

Collector side: decisions per second through one collector's pipeline - parse, signature check,
decryption, payload check, and the batched idempotent insert into SQLite (synchronous=FULL) -
fed pre-sealed envelopes from several kiosks, so the broker and the network are not measured.
Then the same through a private mosquitto (TLS, ACL, persistent session, manual acks): envelopes
queued at the broker for the collector's session, drained and committed by one collector.
"""

from __future__ import annotations

import getpass
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from kiosk import envelope
from kiosk.keys import CENTRAL_ENC_KEY, key_id, raw_public, write_private_file
from kiosk.outbox import Outbox
from kiosk.records import DecisionRecord, encode_payload
from kiosk.tls import client_tls_context
from tools import pki
from tools.broker import BrokerError, BrokerSettings, Mosquitto, find_mosquitto, free_port
from tools.registry import KioskEntry, Registry

NAME = "link"


def _decision(i: int) -> dict:
    return {
        "decision": "APPROVED" if i % 5 else "SUSPICIOUS", "score": 0.5 + (i % 50) / 100,
        "reasons": ["shape", "speed", "pressure", "rhythm"][: 1 + i % 4],
        "model_versions": {"pen-student-int8": "2026.11.3", "dtw": "1.2.0", "calibration": "7"},
        "timings_ms": {"preprocess": 1.8, "features": 2.4, "model": 9.7, "dtw": 6.1, "fusion": 0.1},
        "subject": f"cust-{i:06d}", "session_id": f"s-{i:08d}", "mode": "online",
    }


def run(quick: bool = False) -> dict[str, float]:
    from tools.central.collector import Processor, _Incoming
    from tools.central.store import SqliteStore

    n_seal = 300 if quick else 3000
    n_commit = 100 if quick else 500
    n_collect = 1000 if quick else 10000
    n_kiosks = 10
    central = X25519PrivateKey.generate()
    kiosk_keys = {f"kiosk-{k:03d}": Ed25519PrivateKey.generate() for k in range(n_kiosks)}
    registry = Registry()
    for kid, sk in kiosk_keys.items():
        registry.add(KioskEntry(kid, "bench", None, (raw_public(sk),)))
    now_ms = int(time.time() * 1000)

    def seal(i: int, kid: str = "kiosk-000") -> tuple[str, bytes]:
        topic = f"sig/v1/bench/{kid}/decision"
        rec = DecisionRecord.from_dict(_decision(i))
        sk = kiosk_keys[kid]
        return topic, envelope.seal(encode_payload(rec.to_payload()), kiosk_id=kid, seq=i, time_ms=now_ms, topic=topic,
                                    signing_key=sk, recipient=central.public_key(), sign_key_id=key_id(raw_public(sk)))

    # -- kiosk: seal -----------------------------------------------------------------------------
    samples = []
    for i in range(n_seal):
        t0 = time.perf_counter()
        _, data = seal(i)
        samples.append(time.perf_counter() - t0)
    seal_us = statistics.median(samples) * 1e6
    seal_p95_us = sorted(samples)[int(0.95 * len(samples))] * 1e6
    envelope_bytes = len(data)

    # -- kiosk: seal + durable commit -----------------------------------------------------------------
    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(Path(d) / "outbox.sqlite")
        samples = []
        for i in range(n_commit):
            def build(_seq: int, i: int = i) -> bytes:
                return seal(i)[1]

            t0 = time.perf_counter()
            ob.add("decision", "sig/v1/bench/kiosk-000/decision", build)
            samples.append(time.perf_counter() - t0)
        ob.close()
    commit_us = statistics.median(samples) * 1e6
    commit_p95_us = sorted(samples)[int(0.95 * len(samples))] * 1e6

    # -- collector: verify + decrypt + store -------------------------------------------------------
    kids = list(kiosk_keys)
    msgs = []
    for i in range(n_collect):
        topic, data = seal(i, kids[i % n_kiosks])
        msgs.append(_Incoming(topic, data, i, 1, False, now_ms + 10))
    proc = Processor(registry, [central])
    t0 = time.perf_counter()
    accepted = [proc.process(m) for m in msgs]
    verify_decrypt_s = time.perf_counter() - t0
    assert all(hasattr(a, "payload") for a in accepted), "benchmark envelopes were refused"
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "central.sqlite", create=True)
        proc2 = Processor(registry, [central])
        t0 = time.perf_counter()
        for b in range(0, n_collect, 200):
            batch = [proc2.process(m) for m in msgs[b:b + 200]]
            store.store(batch)  # type: ignore[arg-type]
        pipeline_s = time.perf_counter() - t0
        stored = store.count("decisions")
        store.close()
    assert stored == n_collect

    broker_rate = _through_broker(msgs, registry, central, quick)
    pg_rate = _postgres_store_rate(msgs, registry, central)

    figures = {
        "seal_us_median": round(seal_us, 1),
        "seal_us_p95": round(seal_p95_us, 1),
        "seal_and_commit_us_median": round(commit_us, 1),
        "seal_and_commit_us_p95": round(commit_p95_us, 1),
        "envelope_bytes": float(envelope_bytes),
        "collector_verify_decrypt_per_s": round(n_collect / verify_decrypt_s, 1),
        "collector_decisions_per_s": round(n_collect / pipeline_s, 1),
    }
    if broker_rate is not None:
        figures["collector_via_broker_decisions_per_s"] = round(broker_rate, 1)
    if pg_rate is not None:
        figures["collector_postgresql_decisions_per_s"] = round(pg_rate, 1)
    print(f"link: kiosk seal one decision {seal_us:.0f} us median ({seal_p95_us:.0f} us p95), "
          f"{envelope_bytes} B envelope")
    print(f"link: kiosk seal + durable outbox commit {commit_us:.0f} us median ({commit_p95_us:.0f} us p95)")
    print(f"link: collector verify + decrypt {figures['collector_verify_decrypt_per_s']:.0f} decisions/s; "
          f"verify + decrypt + store (SQLite, batches of 200) {figures['collector_decisions_per_s']:.0f} decisions/s "
          f"({n_collect} decisions, {n_kiosks} kiosks, one core)")
    if broker_rate is not None:
        print(f"link: through a local mosquitto (TLS) into one collector (SQLite): {broker_rate:.0f} decisions/s")
    if pg_rate is not None:
        print(f"link: collector verify + decrypt + store into PostgreSQL ($SIGKIOSK_BENCH_PG): {pg_rate:.0f} decisions/s")
    return figures


def _postgres_store_rate(msgs: list, registry, central) -> float | None:  # type: ignore[no-untyped-def]
    """Only when ``SIGKIOSK_BENCH_PG`` names a PostgreSQL database to write into (a scratch schema)."""

    from tools.central.collector import Processor
    from tools.central.store import PostgresStore

    dsn = os.environ.get("SIGKIOSK_BENCH_PG")
    if not dsn:
        return None
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        store = PostgresStore(dsn + ("&" if "?" in dsn else "?") + f"options=-csearch_path%3D{schema}", create=True)
        proc = Processor(registry, [central])
        t0 = time.perf_counter()
        for b in range(0, len(msgs), 200):
            store.store([proc.process(m) for m in msgs[b:b + 200]])  # type: ignore[misc]
        rate = len(msgs) / (time.perf_counter() - t0)
        store.close()
        return rate
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _through_broker(msgs: list, registry, central, quick: bool) -> float | None:  # type: ignore[no-untyped-def]
    """Decisions/s a collector drains from a private mosquitto (TLS, ACL, manual acks, SQLite).

    Pre-sealed envelopes are published first (the collector's session queues them at the broker),
    then the collector connects and the time until the last one is committed is measured.
    """


    from tools.central.collector import Collector, CollectorConfig

    try:
        find_mosquitto()
    except BrokerError as exc:
        print(f"link: broker figure skipped: {exc}")
        return None

    n = min(len(msgs), 1000 if quick else 5000)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        pki.init_ca(root / "ca")
        pki.issue(root / "ca", "collector", "bench", root / "certs")
        pki.issue(root / "ca", "admin", "bench", root / "certs")
        registry.save(root / "registry.json")
        write_private_file(root / CENTRAL_ENC_KEY, central.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        port = free_port()
        broker = Mosquitto.create(BrokerSettings(root / "broker", root / "ca", port=port, collectors=("bench",),
                                                 admins=(), run_as_user=getpass.getuser(),
                                                 extra_acl_users={"admin.bench": ["topic write sig/v1/#"]}))
        broker.start()
        try:
            cfg = CollectorConfig(
                broker_host="localhost", broker_port=port, ca_file=root / "ca" / "ca.crt",
                cert_file=root / "certs" / "collector.bench.crt", key_file=root / "certs" / "collector.bench.key",
                enc_key_files=(root / CENTRAL_ENC_KEY,), registry_file=root / "registry.json",
                db=str(root / "central.sqlite"),
            )
            # Create the collector's session (and subscription), then go away: messages queue for it.
            first = Collector(cfg)
            first.start()
            if not first.wait_ready(20):
                print("link: broker figure skipped: the collector could not subscribe")
                return None
            first.stop()
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            pub.tls_set_context(client_tls_context(root / "ca" / "ca.crt", root / "certs" / "admin.bench.crt",
                                                   root / "certs" / "admin.bench.key"))
            pub.max_inflight_messages_set(200)
            pub.connect("localhost", port)
            pub.loop_start()
            infos = [pub.publish(m.topic, m.payload, qos=1) for m in msgs[:n]]
            for info in infos:
                info.wait_for_publish(60)
            pub.disconnect()
            pub.loop_stop()
            collector = Collector(cfg)
            t0 = time.perf_counter()
            collector.start()
            deadline = t0 + 120
            while collector.stats.stored["decision"] < n and time.perf_counter() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
            got = collector.stats.stored["decision"]
            collector.stop()
            if got < n:
                print(f"link: broker figure skipped: only {got}/{n} stored in time")
                return None
            return n / elapsed
        finally:
            broker.stop()


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
