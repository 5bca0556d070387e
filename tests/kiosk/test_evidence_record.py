"""Evidence records (kiosk.records.EvidenceRecord, kiosk.evidence): exact round trip of the pen
samples and the paper crop through the strict payload codec, the size bounds, and hostile payloads
(raw data in the wrong fields, a decision carrying samples, malformed columns), whose refusals
never quote a sample value."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from kiosk.evidence import EvidenceError, build, encode_png
from kiosk.records import (
    MAX_EVIDENCE_PNG,
    MAX_EVIDENCE_POINTS,
    DecisionRecord,
    EvidenceRecord,
    RecordError,
    decode_payload,
    encode_payload,
)
from models.image import SignatureImage
from models.trajectory import DeviceInfo, Trajectory
from tools.synth import make_population

DIGEST = "ab" * 32


def _pen() -> Trajectory:
    return make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=3)["001"][0][0]


def _tablet() -> Trajectory:
    """A trajectory as the evdev capture gives it: integer device units, raw pressure levels, a gap."""
    rng = np.random.default_rng(5)
    n = 400
    x = np.cumsum(rng.integers(-40, 41, n)) + 20_000
    y = np.cumsum(rng.integers(-30, 31, n)) + 12_000
    p = np.where(np.arange(n) % 97 < 80, rng.integers(1, 8192, n), 0)
    t = np.cumsum(rng.integers(4000, 6000, n)) / 1e6
    return Trajectory.from_samples(x, y, p, t=t - t[0], device=DeviceInfo("wacom test", "device", 200.0, 8191, 200.0),
                                   gaps=(150,))


def _roundtrip(rec: EvidenceRecord) -> EvidenceRecord:
    payload = decode_payload(encode_payload(rec.to_payload()), "evidence")
    return EvidenceRecord(**{k: v for k, v in payload.items() if k not in ("type", "schema")})


@pytest.mark.parametrize("make", [_pen, _tablet])
def test_pen_evidence_round_trips_every_sample_exactly(make) -> None:  # type: ignore[no-untyped-def]
    traj = make()
    rec = build(traj, decision_seq=7, decision_digest=DIGEST, session_id="sess-1")
    back = _roundtrip(rec).trajectory()
    for col in ("x", "y", "t", "pressure", "pen_down"):
        assert np.array_equal(getattr(back, col), getattr(traj, col)), col
    assert back.device == traj.device and back.gaps == traj.gaps and back.stroke_breaks == traj.stroke_breaks


def test_paper_evidence_is_the_checked_crop_as_png() -> None:
    rng = np.random.default_rng(1)
    px = np.full((180, 520), 235, np.uint8)
    cv2.putText(px, "J. Doe", (20, 120), cv2.FONT_HERSHEY_SCRIPT_COMPLEX, 3, 20, 4)
    px = np.clip(px.astype(int) + rng.integers(-3, 4, px.shape), 0, 255).astype(np.uint8)
    rec = _roundtrip(build(SignatureImage(px, dpi=300.0), decision_seq=9, decision_digest=DIGEST, session_id="s"))
    assert rec.mode == "offline" and rec.image_scale == 1.0 and rec.image_dpi == 300.0
    decoded = cv2.imdecode(np.frombuffer(rec.png(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, px)   # lossless: exactly the pixels the verifier checked


def test_a_png_too_large_is_made_smaller_until_it_fits_and_says_so() -> None:
    noise = np.random.default_rng(2).integers(0, 256, (1000, 1000), dtype=np.uint8)   # ~1 MB as PNG
    png, scale = encode_png(noise)
    assert len(png) <= MAX_EVIDENCE_PNG and 0.3 < scale < 1.0
    h, w = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape
    assert (w, h) == (round(1000 * scale), round(1000 * scale))
    with pytest.raises(EvidenceError, match="does not fit"):
        encode_png(noise, max_bytes=100)


def _pen_payload() -> dict:
    return build(_pen(), decision_seq=7, decision_digest=DIGEST, session_id="s").to_payload()


def _paper_payload() -> dict:
    return build(SignatureImage(np.full((40, 80), 200, np.uint8)), decision_seq=7, decision_digest=DIGEST,
                 session_id="s").to_payload()


@pytest.mark.parametrize(("change", "why"), [
    (lambda p: p.update(image_png=_paper_payload()["image_png"]), "pen evidence carries paper fields: image_png"),
    (lambda p: p.update(trajectory=p["x"]), "unknown evidence fields: trajectory"),
    (lambda p: p.update(samples=[[1, 2, 3]]), "unknown evidence fields: samples"),
    (lambda p: p.update(session_id=json.dumps(p["x"][:30])), "session_id must be a string of 1-128"),
    (lambda p: p.update(decision_digest="zz" * 32), "decision_digest must be 64 lower-case hex"),
    (lambda p: p.update(decision_seq=-1), "decision_seq must be a sequence number"),
    (lambda p: p.update(mode="video"), "lacks a mode"),
    (lambda p: p.pop("pen_down"), "pen evidence lacks pen_down"),
    (lambda p: p.update(y=p["y"][:-1]), "differ in length"),
    (lambda p: p.update(x=[str(v) for v in p["x"]]), "field 'x' is not of type"),
    (lambda p: p["pressure"].__setitem__(3, 1.7), "not a valid trajectory"),
    (lambda p: p.update(t=list(reversed(p["t"]))), "not a valid trajectory"),
    (lambda p: p.update(x=p["x"] * 100, y=p["y"] * 100, t=p["t"] * 100, pressure=p["pressure"] * 100,
                        pen_down=p["pen_down"] * 100), f"1-{MAX_EVIDENCE_POINTS} samples"),
])
def test_hostile_pen_evidence_is_refused_without_quoting_samples(change, why: str) -> None:  # type: ignore[no-untyped-def]
    payload = _pen_payload()
    samples = [repr(v) for col in ("x", "y", "t", "pressure") for v in payload[col] if len(repr(v)) > 5]
    change(payload)
    data = json.dumps(payload).encode()
    with pytest.raises(RecordError, match=why) as err:
        decode_payload(data, "evidence")
    shown = str(err.value)
    assert not [s for s in samples if s in shown], shown


@pytest.mark.parametrize(("change", "why"), [
    (lambda p: p.update(x=[1.0], y=[1.0], t=[0.0], pressure=[0.5], pen_down=[True]), "paper evidence carries pen fields"),
    (lambda p: p.update(image_png="not base64!"), "not base64"),
    (lambda p: p.update(image_png=base64.b64encode(b"GIF89a" + bytes(100)).decode()), "is not a PNG"),
    (lambda p: p.update(image_png=base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(MAX_EVIDENCE_PNG)).decode()),
     "exceeds"),
    (lambda p: p.update(image_scale=2.0), "at most 1"),
    (lambda p: p.pop("image_png"), "lacks image_png"),
])
def test_hostile_paper_evidence_is_refused(change, why: str) -> None:  # type: ignore[no-untyped-def]
    payload = _paper_payload()
    change(payload)
    with pytest.raises(RecordError, match=why):
        decode_payload(json.dumps(payload).encode(), "evidence")


def test_evidence_is_never_taken_for_another_record_type() -> None:
    data = encode_payload(_pen_payload())
    with pytest.raises(RecordError, match="does not match topic kind"):
        decode_payload(data, "decision")
    # ...and a decision still refuses raw samples in any of its fields (its own policy).
    with pytest.raises(RecordError, match="raw biometric data"):
        DecisionRecord.from_dict({"decision": "APPROVED", "score": 0.9, "samples": [1, 2]})
    decision = json.loads(encode_payload(DecisionRecord("APPROVED", 0.9).to_payload()))
    decision["evidence"] = {"x": [1.0]}
    with pytest.raises(RecordError, match="raw biometric data"):
        decode_payload(json.dumps(decision).encode(), "decision")


def test_evidence_gives_way_to_decisions_on_a_nearly_full_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kiosk.outbox import Outbox, OutboxError

    outbox = Outbox(tmp_path / "outbox.sqlite", log_reserve_bytes=1 << 62)   # every disk is "nearly full"
    try:
        outbox.add("decision", "sig/v1/s/k/decision", lambda seq: b"sealed decision")
        with pytest.raises(OutboxError, match="evidence is not stored"):
            outbox.add("evidence", "sig/v1/s/k/evidence", lambda seq: b"sealed evidence")
        assert outbox.depth() == {"decision": 1}
    finally:
        outbox.close()
