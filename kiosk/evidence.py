"""The evidence of a decision: the questioned signature, as an ``EvidenceRecord`` (``kiosk.records``).

A bank's fraud team and a document examiner need what the customer actually signed, not only the
score: for the pen, the samples as the capture produced them; for paper, the signature crop the
verifier checked, as PNG. ``build`` turns what a flow verified into the record the link seals
after the decision (``[link] evidence``, on by default). Nothing here logs a sample or a pixel.
"""

from __future__ import annotations

import base64

import numpy as np

from kiosk.errors import ApplianceError
from kiosk.records import MAX_EVIDENCE_PNG, EvidenceRecord
from models.image import SignatureImage
from models.trajectory import Trajectory

#: How many times a too-large PNG is re-encoded smaller before the evidence is refused.
_SHRINK_TRIES = 6


class EvidenceError(ApplianceError, ValueError):
    """The evidence cannot be built (too large, unreadable); the message says which, never what."""


def pen_evidence(traj: Trajectory, *, decision_seq: int, decision_digest: str, session_id: str) -> EvidenceRecord:
    """The pen samples of ``traj`` exactly (float64 values, as JSON numbers, round-trip exact)."""
    d = traj.device
    return EvidenceRecord(
        decision_seq=decision_seq, decision_digest=decision_digest, session_id=session_id, mode="online",
        x=tuple(traj.x.tolist()), y=tuple(traj.y.tolist()), t=tuple(traj.t.tolist()),
        pressure=tuple(traj.pressure.tolist()), pen_down=tuple(traj.pen_down.tolist()),
        gaps=traj.gaps, stroke_breaks=traj.stroke_breaks, device_name=d.name, units=d.units,
        resolution=d.resolution, pressure_levels=d.pressure_levels, nominal_rate_hz=d.nominal_rate_hz,
        time_measured=d.time_measured,
    )


def encode_png(pixels: np.ndarray, max_bytes: int = MAX_EVIDENCE_PNG) -> tuple[bytes, float]:
    """Lossless PNG of ``pixels``; if larger than ``max_bytes``, the image made smaller (area
    averaging) until it fits. Returns the PNG and the scale applied (1.0: as checked)."""
    import cv2

    scale = 1.0
    img = pixels
    for _ in range(_SHRINK_TRIES + 1):
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise EvidenceError("the signature image could not be encoded as PNG")
        if buf.size <= max_bytes:
            return buf.tobytes(), scale
        # PNG size grows about with the pixel count: aim a little under the bound.
        scale *= 0.9 * (max_bytes / buf.size) ** 0.5
        h, w = pixels.shape[:2]
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        img = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    raise EvidenceError(f"the signature image does not fit the evidence limit of {max_bytes} bytes as PNG")


def paper_evidence(image: SignatureImage, *, decision_seq: int, decision_digest: str,
                   session_id: str) -> EvidenceRecord:
    png, scale = encode_png(image.pixels)
    return EvidenceRecord(
        decision_seq=decision_seq, decision_digest=decision_digest, session_id=session_id, mode="offline",
        image_png=base64.b64encode(png).decode("ascii"), image_dpi=image.dpi, image_scale=scale,
    )


def build(captured: Trajectory | SignatureImage, *, decision_seq: int, decision_digest: str,
          session_id: str) -> EvidenceRecord:
    """The evidence record of what a flow verified (a pen trajectory or a paper crop)."""
    if isinstance(captured, Trajectory):
        return pen_evidence(captured, decision_seq=decision_seq, decision_digest=decision_digest, session_id=session_id)
    if isinstance(captured, SignatureImage):
        return paper_evidence(captured, decision_seq=decision_seq, decision_digest=decision_digest,
                              session_id=session_id)
    raise EvidenceError(f"no evidence can be made of a {type(captured).__name__}")
