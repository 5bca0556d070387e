"""No key and no raw biometric data ever reaches a log: local log output, the broker's log, the
log records stored centrally. The test makes the code log carelessly on purpose, then greps."""

from __future__ import annotations

import base64
import logging
import sqlite3
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from fixtures_link import LinkPki, mqtt_client, wait_for

from kiosk.keys import load_encryption_key, load_signing_key
from kiosk.link import KioskLink
from kiosk.logging_mqtt import MqttLogHandler, RedactingFilter, redact_text
from tools.broker import Mosquitto
from tools.central.collector import Collector

# Distinctive pen samples: if any of these numbers shows up in a log, raw pen data leaked.
TRAJECTORY = [[1234.5678 + i, 8765.4321 - i, 0.4321, 1000 + i] for i in range(64)]


def _secrets(link_pki: LinkPki) -> list[str]:
    out: list[str] = []
    for priv in (load_signing_key(link_pki.sign_key("kiosk-a")), load_encryption_key(link_pki.central_key)):
        raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        out += [raw.hex(), base64.b64encode(raw).decode()]
        pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
        out += [line for line in pem.splitlines() if "-----" not in line]
    tls_key = link_pki.cert("kiosk-a")[1].read_text()
    out += [line for line in tls_key.splitlines() if "-----" not in line]
    out += ["PRIVATE KEY", "1234.5678", "8765.4321", "1240.5678"]
    return out


def test_no_key_or_raw_biometric_in_any_log(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    local_log = tmp_path / "local.log"
    file_handler = logging.FileHandler(local_log)
    # Everything logged locally, by our code and by the careless caller below, through the filter a
    # daemon installs on its journald handler; extra fields are written too.
    file_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(private_key)s %(trajectory)s",
                                                defaults={"private_key": "", "trajectory": ""}))
    file_handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(file_handler)
    db = tmp_path / "central.sqlite"
    # The raw-evidence policy is allowed at both ends: the collector enforces it too.
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(db), fresh_session=True,
                                                    share_group=f"s{uuid.uuid4().hex[:6]}", allow_raw_evidence=True))
    link = KioskLink(link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "outbox.sqlite",
                                          allow_raw_evidence=True))
    handler = MqttLogHandler(link)
    app = logging.getLogger("kiosk.daemon.careless")
    app.addHandler(handler)
    pem = link_pki.sign_key("kiosk-a").read_text()
    raw_key = load_signing_key(link_pki.sign_key("kiosk-a")).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    kx = None
    try:
        collector.start()
        assert collector.wait_ready()
        link.start()
        # Careless logging, the kind a daemon might do by mistake: the handler must redact it.
        app.warning("loaded signing key %s", pem)
        app.warning("key bytes %s / %s", raw_key.hex(), base64.b64encode(raw_key).decode())
        app.info("pen samples %s", TRAJECTORY)
        app.info("session done", extra={"private_key": pem, "trajectory": TRAJECTORY, "points": TRAJECTORY[:3],
                                        "token": "abc", "duration_ms": 12.5})
        try:
            raise RuntimeError(f"bad pen stream {TRAJECTORY[:20]}")
        except RuntimeError:
            app.exception("capture failed")
        # A decision carrying raw evidence (policy allows it): it travels encrypted, never logged.
        link.publish_decision({"decision": "APPROVED", "score": 0.9, "trajectory": TRAJECTORY})
        handler.flush()
        # Refused messages are logged by the collector: make one that contains a key.
        kx = mqtt_client(link_pki, mqtt_broker.port, "kiosk-b")
        kx.publish("sig/v1/site1/kiosk-b/decision", pem.encode(), qos=1).wait_for_publish(5)
        assert link.flush(20)
        wait_for(lambda: collector.store.count("logs") >= 5 and collector.store.count("decisions") == 1,
                 what="logs and the decision stored")
        wait_for(lambda: collector.stats.refused.get("malformed", 0) == 1, what="the refusal")
    finally:
        app.removeHandler(handler)
        handler.close()
        if kx is not None:
            kx.disconnect()
            kx.loop_stop()
        link.close()
        collector.stop()
        root.removeHandler(file_handler)
        root.setLevel(old_level)
        file_handler.close()
    with sqlite3.connect(db) as conn:
        central_logs = "\n".join(r[0] for r in conn.execute("SELECT payload FROM logs"))
        stored_decision = conn.execute("SELECT payload FROM decisions").fetchone()[0]
    texts = {"local log": local_log.read_text(), "broker log": mqtt_broker.log_tail(1 << 22),
             "central logs": central_logs}
    assert "redacted" in central_logs and "duration_ms" in central_logs   # the records did arrive
    local = texts["local log"]
    assert "link: connected" in local and "refused message" in local and "capture failed" in local
    assert "capture failed" in central_logs and "RuntimeError" in central_logs
    for where, text in texts.items():
        for secret in _secrets(link_pki):
            assert secret not in text, f"{secret[:12]}... found in the {where}"
    # The evidence reached the audit trail intact (decrypted only there).
    assert "1234.5678" in stored_decision


def test_redaction_rules() -> None:
    assert "[redacted]" in redact_text("token=" + "A" * 44)
    assert redact_text("decision APPROVED in 12.5 ms for kiosk-a") == "decision APPROVED in 12.5 ms for kiosk-a"
    assert "1.5, 2.5" not in redact_text("pts " + ", ".join(f"{i}.5" for i in range(40)))
