"""The sealed evidence path end to end: kiosk link -> real mosquitto (TLS, generated ACL, the
sigkiosk_acl plugin) -> real collector -> SQLite and PostgreSQL, then the case export read back.
Hostile evidence through the same broker: another kiosk's decision claimed, a tampered envelope,
a replayed sequence number, an oversized message, a publish on another kiosk's topic. And the
running collector deleting evidence past its retention period while keeping the decisions."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from fixtures_link import LinkPki, mqtt_client, wait_for
from iso19794_7_reader import read as read_iso

from kiosk import envelope
from kiosk.evidence import build
from kiosk.keys import key_id, load_public_raw, load_signing_key, raw_public
from kiosk.link import KioskLink
from kiosk.records import DecisionRecord, encode_payload
from models.image import SignatureImage
from tools.broker import Mosquitto
from tools.central.collector import Collector
from tools.commands import central_cmd
from tools.synth import make_population

NOT_AUTHORIZED = 0x87
DAY_MS = 86_400_000


def _decision(session: str, mode: str = "online") -> dict:
    return {"decision": "SUSPICIOUS", "score": 0.41, "reasons": ["rhythm"], "model_versions": {"pen": "3"},
            "subject": "cust-0042", "session_id": session, "mode": mode}


def _seal(link_pki: LinkPki, kiosk: str, kind: str, payload: dict, seq: int, time_ms: int) -> bytes:
    """What kiosk ``kiosk`` would seal itself (its own signing key), for messages sent by hand."""
    sk = load_signing_key(link_pki.sign_key(kiosk))
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    central = X25519PublicKey.from_public_bytes(load_public_raw(link_pki.central_pub))
    return envelope.seal(encode_payload(payload), kiosk_id=kiosk, seq=seq, time_ms=time_ms,
                         topic=f"sig/v1/site1/{kiosk}/{kind}", signing_key=sk, recipient=central,
                         sign_key_id=key_id(raw_public(sk)))


def test_evidence_travels_sealed_is_refused_when_hostile_and_expires(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                                     tmp_path: Path, db_url: str) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db_url, fresh_session=True,
                                                    evidence_retention_days=5.0, evidence_purge_interval_s=0.3,
                                                    evidence_orphan_wait_s=1.0))
    collector.start()
    link_a = KioskLink(link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "a.sqlite"))
    link_b = KioskLink(link_pki.link_config("kiosk-b", mqtt_broker.port, tmp_path / "b.sqlite"))
    raw_a = None
    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=6)["001"][0][0]
    crop = np.random.default_rng(4).integers(120, 256, (90, 300), dtype=np.uint8)
    try:
        assert collector.wait_ready(), "collector did not subscribe"
        link_a.start()
        link_b.start()
        # Decision first, then its evidence: the link names the decision's envelope digest.
        pen_seq = link_a.publish_decision(_decision("s-pen"))
        digest = link_a.decision_digest(pen_seq)
        assert digest is not None
        pen_ev = link_a.publish_evidence(build(traj, decision_seq=pen_seq, decision_digest=digest, session_id="s-pen"))
        paper_seq = link_a.publish_decision(_decision("s-paper", "offline"))
        link_a.publish_evidence(build(SignatureImage(crop), decision_seq=paper_seq,
                                      decision_digest=link_a.decision_digest(paper_seq) or "", session_id="s-paper"))
        # Kiosk B sends evidence naming kiosk A's decision (its own key, its own topic).
        b_seq = link_b.publish_decision(_decision("s-b"))
        link_b.publish_evidence(build(traj, decision_seq=pen_seq, decision_digest=digest, session_id="s-pen"))
        assert link_a.flush(20) and link_b.flush(20), "outboxes did not drain"
        wait_for(lambda: collector.store.count("evidence") == 2, what="two evidence rows")
        wait_for(lambda: collector.stats.refused.get("unknown_decision") == 1, what="B's claim refused")
        assert collector.store.count("decisions") == 3 and b_seq > 0

        now = int(time.time() * 1000)
        extra = link_a.publish_decision(_decision("s-extra"))
        extra_digest = link_a.decision_digest(extra) or ""
        assert link_a.flush(20)
        # From here kiosk A's messages are sent by hand, with its certificate (the broker takes the
        # certificate's name as client id: the link gives way to this raw client).
        link_a.close()
        raw_a = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a", cert=link_pki.cert("kiosk-a"))
        # Tampered: one ciphertext byte of a good envelope flipped.
        good = _seal(link_pki, "kiosk-a", "evidence", build(traj, decision_seq=extra, session_id="s-extra",
                                                             decision_digest=extra_digest).to_payload(),
                     seq=extra + 100, time_ms=now)
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x01
        topic = "sig/v1/site1/kiosk-a/evidence"
        raw_a.publish(topic, bytes(bad), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("bad_signature") == 1, what="tampered evidence refused")
        # The good one, delivered twice (a redelivery), then its sequence number reused (a replay).
        for data in (good, good):
            raw_a.publish(topic, data, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.store.count("evidence") == 3, what="the hand-sealed evidence")
        wait_for(lambda: collector.stats.refused.get("duplicate") == 1, what="the redelivery counted")
        other = _seal(link_pki, "kiosk-a", "evidence", build(traj, decision_seq=extra, session_id="s-extra",
                                                              decision_digest=extra_digest).to_payload(),
                      seq=extra + 100, time_ms=now)
        raw_a.publish(topic, other, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("replay") == 1, what="the replay refused")
        # Raw data in the wrong fields, under kiosk A's valid key: refused by the strict decoding.
        stray = {**build(traj, decision_seq=extra, session_id="s-extra", decision_digest=extra_digest).to_payload(),
                 "trajectory": [[1.0, 2.0, 0.5]]}
        raw_a.publish(topic, _seal(link_pki, "kiosk-a", "evidence", stray, seq=extra + 101, time_ms=now),
                      qos=1).wait_for_publish(10)
        in_decision = {**DecisionRecord.from_dict(_decision("s-raw")).to_payload(), "samples": [[1.0, 2.0]]}
        raw_a.publish("sig/v1/site1/kiosk-a/decision", _seal(link_pki, "kiosk-a", "decision", in_decision,
                                                              seq=extra + 102, time_ms=now), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("bad_payload") == 2, what="raw data in wrong fields refused")
        # Oversized: refused unread. On kiosk B's topic: the broker's ACL refuses kiosk A.
        raw_a.publish(topic, bytes(envelope.DEFAULT_MAX_ENVELOPE + 1), qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.refused.get("oversized") == 1, what="oversized evidence refused")
        info = raw_a.publish("sig/v1/site1/kiosk-b/evidence", good, qos=1)
        info.wait_for_publish(10)
        wait_for(lambda: info.mid in raw_a.pubacks, what="the broker's answer")
        assert raw_a.pubacks[info.mid] == NOT_AUTHORIZED

        # Retention, in the running collector: a decision and its evidence captured 10 days ago.
        old_seq = int(time.time() * 1e6)
        old_t = now - 10 * DAY_MS
        old_digest = envelope.parse(old_dec := _seal(link_pki, "kiosk-a", "decision",
                                                     DecisionRecord.from_dict(_decision("s-old")).to_payload(),
                                                     seq=old_seq, time_ms=old_t)).digest
        raw_a.publish("sig/v1/site1/kiosk-a/decision", old_dec, qos=1).wait_for_publish(10)
        raw_a.publish(topic, _seal(link_pki, "kiosk-a", "evidence", build(traj, decision_seq=old_seq,
                      decision_digest=old_digest, session_id="s-old").to_payload(), seq=old_seq + 1, time_ms=old_t),
                      qos=1).wait_for_publish(10)
        wait_for(lambda: collector.stats.stored["evidence"] == 4, what="the old evidence stored")
        wait_for(lambda: collector.purged_evidence >= 1, what="the old evidence purged")
        assert collector.store.evidence_case("kiosk-a", old_seq)[1] is None
        assert collector.store.evidence_case("kiosk-a", old_seq)[0] is not None      # its decision stays
        assert collector.store.count("evidence") == 3                                 # the fresh ones stay
    finally:
        if raw_a is not None:
            raw_a.disconnect()
            raw_a.loop_stop()
        link_a.close()
        link_b.close()
        collector.stop()

    # The case, from the database the collector wrote.
    parser = argparse.ArgumentParser()
    central_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "case"
    args = parser.parse_args(["central", "export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", str(pen_seq),
                              "--out", str(out), "--registry", str(link_pki.registry_file)])
    assert args.func(args) == 0
    rec = read_iso((out / "signature.iso19794-7").read_bytes())
    assert rec.count == len(traj) and rec.samples["s"] == traj.pen_down.astype(int).tolist()
    xy = traj.xy_mm()
    assert xy is not None
    x_scale = rec.channels[0].scaling
    assert x_scale is not None and np.max(np.abs(np.array(rec.samples["x"]) / x_scale - xy[:, 0])) <= 0.5 / x_scale
    v = json.loads((out / "verification.json").read_text())
    assert v["evidence_seq"] == pen_ev and v["evidence_bound_to_decision"] is True
    assert v["evidence_envelope"]["signature"] == "verified"


def test_a_paper_decision_is_followed_by_its_checked_crop(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                                          caplog) -> None:  # type: ignore[no-untyped-def]
    """The daemon's paper flow: the decision, then the crop the verifier checked, as PNG, beside it."""
    import logging

    import cv2

    from kiosk.config import load_config
    from kiosk.daemon import Daemon
    from models.render import render_ink
    from tests.kiosk.daemon_helpers import link_table, write_config, writers
    from tools.photos import make_photo

    caplog.set_level(logging.DEBUG)
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "central.sqlite"),
                                                    fresh_session=True))
    collector.start()
    camera = tmp_path / "camera" / "frame.png"
    camera.parent.mkdir()
    cfg = write_config(tmp_path, link=link_table(link_pki, mqtt_broker.port, tmp_path),
                       extra=f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\nattempts = 2\n'
                             'countdown_s = 0.0\n')
    daemon = Daemon(load_config(cfg))
    genuine, _ = next(iter(writers().values()))
    rng = np.random.default_rng(1)
    cv2.imwrite(str(camera), make_photo(render_ink(genuine[6], rng=rng), rng, difficulty="clean").frame)
    try:
        assert collector.wait_ready()
        daemon.start()
        assert daemon.store is not None and daemon.link is not None
        daemon.store.put("cust-paper", list(genuine[:5]))
        result = daemon.submit("verify_paper", "cust-paper").wait(120)
        assert result["ok"] is True and result["recorded"] is True
        assert daemon.link.flush(30)
        case = wait_for(lambda: (c := collector.store.evidence_case("kiosk-a", result["seq"]))[1] is not None and c,
                        what="the paper evidence beside its decision")
        decision, evidence = case
        assert decision.payload["mode"] == "offline" and evidence.payload["mode"] == "offline"
        png = _png_of(evidence.payload)
        crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert crop.ndim == 2 and crop.dtype == np.uint8 and min(crop.shape) >= 8
        assert evidence.payload["image_scale"] == 1.0 and daemon.evidence_failures == 0
    finally:
        daemon.stop()
        collector.stop()
    # Neither the image nor its base64 is ever logged.
    assert evidence.payload["image_png"][:40] not in caplog.text


def _png_of(payload: dict) -> bytes:
    from kiosk.records import EvidenceRecord

    return EvidenceRecord(**{k: v for k, v in payload.items() if k not in ("type", "schema")}).png()


def test_the_link_seals_evidence_and_honours_the_switch(link_pki: LinkPki, tmp_path: Path) -> None:
    import pytest

    from kiosk.link import LinkError

    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=9)["001"][0][0]
    link = KioskLink(link_pki.link_config("kiosk-a", 1, tmp_path / "on.sqlite"))   # never started: rows stay
    try:
        seq = link.publish_decision(_decision("session-in-the-clear-1"))
        digest = link.decision_digest(seq)
        assert digest is not None and link.decision_digest(seq + 12345) is None
        link.publish_evidence(build(traj, decision_seq=seq, decision_digest=digest, session_id="session-in-the-clear-1"))
        rows = link.outbox.pending(10)
        assert [r.kind for r in rows] == ["decision", "evidence"] and rows[1].topic.endswith("/kiosk-a/evidence")
        # Only the sealed envelope is on disk: no sample, no session id in the clear.
        assert b"session-in-the-clear-1" not in rows[1].payload and repr(float(traj.x[5])).encode() not in rows[1].payload
        assert envelope.parse(rows[0].payload).digest == digest
    finally:
        link.outbox.close()
    off = KioskLink(link_pki.link_config("kiosk-a", 1, tmp_path / "off.sqlite", evidence=False))
    try:
        seq = off.publish_decision(_decision("s-2"))
        with pytest.raises(LinkError, match="evidence = false"):
            off.publish_evidence(build(traj, decision_seq=seq, decision_digest=off.decision_digest(seq) or "",
                                       session_id="s-2"))
        assert off.outbox.depth() == {"decision": 1}
    finally:
        off.outbox.close()


def test_evidence_arriving_before_its_decision_waits_for_it(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                            tmp_path: Path) -> None:
    """With several collectors in a share group, a decision and its evidence can reach different
    ones, the evidence first: it is held (unacknowledged) for its decision, then stored; evidence
    whose decision never comes is refused once the wait is over."""
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "c.sqlite"), fresh_session=True,
                                                    evidence_orphan_wait_s=3.0))
    collector.start()
    raw = mqtt_client(link_pki, mqtt_broker.port, "kiosk-b", cert=link_pki.cert("kiosk-b"))
    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=10)["001"][0][0]
    now = int(time.time() * 1000)
    seq = int(time.time() * 1e6)
    try:
        assert collector.wait_ready()
        decision = _seal(link_pki, "kiosk-b", "decision", DecisionRecord.from_dict(_decision("s-late")).to_payload(),
                         seq=seq, time_ms=now)
        digest = envelope.parse(decision).digest
        topic = "sig/v1/site1/kiosk-b/evidence"
        for ev_seq, ref, ref_digest, session in ((seq + 1, seq, digest, "s-late"),
                                                 (seq + 2, seq + 99, "e" * 64, "s-never")):
            raw.publish(topic, _seal(link_pki, "kiosk-b", "evidence", build(
                traj, decision_seq=ref, decision_digest=ref_digest, session_id=session).to_payload(),
                seq=ev_seq, time_ms=now), qos=1).wait_for_publish(10)
        t0 = time.monotonic()
        time.sleep(1.0)
        assert collector.store.count("evidence") == 0 and collector.stats.refused == {}   # both held
        raw.publish("sig/v1/site1/kiosk-b/decision", decision, qos=1).wait_for_publish(10)
        wait_for(lambda: collector.store.count("evidence") == 1, what="the held evidence stored after its decision")
        assert collector.store.evidence_case("kiosk-b", seq)[1] is not None
        wait_for(lambda: collector.stats.refused.get("unknown_decision") == 1, what="the orphan refused")
        assert time.monotonic() - t0 >= 2.5          # not before its wait was over
        assert collector.store.count("rejected") == 1
    finally:
        raw.disconnect()
        raw.loop_stop()
        collector.stop()
