"""End to end through the real broker: kiosk link -> mosquitto (TLS, ACL) -> collector -> database."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fixtures_link import LinkPki, wait_for

from kiosk.link import KioskLink, LinkError
from kiosk.logging_mqtt import MqttLogHandler
from tools.broker import Mosquitto
from tools.central.collector import Collector


def _decision(i: int) -> dict:
    return {
        "decision": "APPROVED" if i % 3 else "SUSPICIOUS", "score": 0.5 + (i % 50) / 100,
        "reasons": ["shape", "rhythm"], "model_versions": {"pen": "3", "dtw": "1"},
        "timings_ms": {"features": 2.5, "dtw": 7.0}, "subject": f"cust-{i:04d}", "mode": "online",
    }


def test_decisions_logs_and_status_reach_the_database(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                                      db_url: str) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True))
    collector.start()
    link = KioskLink(link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "outbox.sqlite"),
                     model_versions={"pen": "3"})
    handler = MqttLogHandler(link)
    logger = logging.getLogger("kiosk.test.e2e")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert collector.wait_ready(), "collector did not subscribe"
        link.start()
        seqs = [link.publish_decision(_decision(i)) for i in range(20)]
        logger.info("verification done", extra={"user_ref": "cust-0001", "duration_ms": 12.5})
        handler.flush()
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        assert link.flush(20), "outbox did not drain"
        wait_for(lambda: collector.store.count("decisions") == 20, what="20 decisions stored")
        wait_for(lambda: collector.store.count("logs") >= 1, what="the log record")
        wait_for(lambda: collector.store.status().get("kiosk-a", {}).get("state") == "online", what="online status")
        rows = collector.store.query_decisions(kiosk_id="kiosk-a", limit=100)
        assert [r.seq for r in rows] == seqs
        assert rows[0].decision == "SUSPICIOUS" and rows[0].payload["reasons"] == ["shape", "rhythm"]
        assert rows[1].payload["model_versions"] == {"pen": "3", "dtw": "1"}
        assert rows[1].payload["timings_ms"]["dtw"] == 7.0
        suspicious = collector.store.query_decisions(outcome="SUSPICIOUS")
        assert len(suspicious) == 7
        status = collector.store.status()["kiosk-a"]
        assert status["model_versions"] == {"pen": "3"} and "queue_depth" in status
        assert collector.stats.refused == {}
    finally:
        logger.removeHandler(handler)
        handler.close()
        link.close()
        try:
            # A clean close publishes "offline".
            wait_for(lambda: collector.store.status()["kiosk-a"]["state"] == "offline", what="offline status")
        finally:
            collector.stop()


def test_raw_biometrics_are_refused_unless_policy_allows(link_pki: LinkPki, tmp_path: Path) -> None:
    link = KioskLink(link_pki.link_config("kiosk-a", 1, tmp_path / "outbox.sqlite"))
    with pytest.raises(LinkError, match="raw biometric"):
        link.publish_decision({**_decision(1), "trajectory": [[1, 2, 0.5, 0]]})
    with pytest.raises(LinkError, match="unknown decision fields"):
        link.publish_decision({**_decision(1), "customer_name": "Jane"})
    with pytest.raises(LinkError, match="score"):
        link.publish_decision({"decision": "APPROVED", "score": float("nan")})
    assert link.outbox.depth() == {}
    link.outbox.close()
    allowed = KioskLink(link_pki.link_config("kiosk-a", 1, tmp_path / "outbox2.sqlite", allow_raw_evidence=True))
    allowed.publish_decision({**_decision(1), "trajectory": [[1, 2, 0.5, 0]]})
    assert allowed.outbox.depth() == {"decision": 1}
    # Even then it is only inside the encrypted payload: the plaintext never reaches the disk.
    row = allowed.outbox.pending(1)[0]
    assert b"trajectory" not in row.payload and b"cust-0001" not in row.payload
    allowed.outbox.close()


def test_last_will_marks_a_vanished_kiosk_offline(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "c.sqlite"), fresh_session=True))
    collector.start()
    try:
        assert collector.wait_ready()
        link = KioskLink(link_pki.link_config("kiosk-b", mqtt_broker.port, tmp_path / "outbox.sqlite", keepalive_s=1))
        link.start()
        wait_for(lambda: collector.store.status().get("kiosk-b", {}).get("state") == "online", what="online")
        # Vanish without a DISCONNECT: stop paho's thread and close the socket under its feet.
        link._stop.set()
        client = link._client
        assert client is not None
        client.loop_stop()
        sock = client.socket()
        assert sock is not None
        sock.close()
        wait_for(lambda: collector.store.status()["kiosk-b"]["state"] == "offline", timeout=15, what="last will")
        assert collector.stats.refused == {}
        link.outbox.close()
    finally:
        collector.stop()


def test_kiosk_receives_its_own_and_its_groups_commands(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    from fixtures_link import mqtt_client

    got: list[tuple[str, bytes]] = []
    link = KioskLink(link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "outbox.sqlite"))
    link.add_command_handler(lambda topic, payload: got.append((topic, payload)))
    admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
    try:
        link.start()
        assert link.commands_ready.wait(20), "command subscriptions not granted"
        for topic in ("sig/v1/site1/kiosk-a/model/offer", "sig/v1/_group/canary/model/offer",
                      "sig/v1/site1/kiosk-b/model/offer"):
            admin.publish(topic, topic.encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: len(got) >= 2, what="two commands")
        time.sleep(0.2)
        assert sorted(t for t, _ in got) == ["sig/v1/_group/canary/model/offer", "sig/v1/site1/kiosk-a/model/offer"]
    finally:
        admin.disconnect()
        admin.loop_stop()
        link.close()


def test_log_handler_rate_limits_and_reports_what_it_suppressed() -> None:
    class Sink:
        def __init__(self) -> None:
            self.entries: list = []
            self.errors = 0

        def publish_log(self, entry) -> int:  # type: ignore[no-untyped-def]
            self.entries.append(entry)
            return len(self.entries)

        def note_error(self, message: str | None = None) -> None:
            self.errors += 1

    sink = Sink()
    handler = MqttLogHandler(sink, rate_per_s=0.0001, burst=3)
    lg = logging.getLogger("kiosk.test.rate")
    lg.addHandler(handler)
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    try:
        for i in range(10):
            lg.error("failure %d", i)
        handler.flush()
        assert len(sink.entries) == 3 and sink.errors == 10     # errors are counted even when suppressed
        handler._tokens = 1.0                                    # the bucket refills (time passes)
        lg.warning("after the burst")
        handler.flush()
        assert sink.entries[-1].suppressed_before == 7 and sink.entries[-1].message == "after the burst"
        lg.debug("never leaves the device")
        handler.flush()
        assert len(sink.entries) == 4
    finally:
        lg.removeHandler(handler)
        handler.close()
