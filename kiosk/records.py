"""Records the link carries, as typed dataclasses, and their (plaintext, pre-encryption) encoding.

The plaintext inside an envelope is compact JSON with a ``type`` field. Decisions carry the
decision, score, reasons, model versions and timings. Raw pen data or images are biometric data:
they are refused unless the link's policy allows them (``allow_raw_evidence``), and even then they
only travel inside the encrypted payload.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PAYLOAD_SCHEMA = 1

#: Keys that hold raw biometric data. Refused in a decision unless the policy asks for evidence.
RAW_EVIDENCE_KEYS = frozenset({"trajectory", "points", "pen_data", "raw", "image", "image_png", "samples", "evidence"})


class RecordError(ValueError):
    """A record is invalid; the message says which field and why."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class DecisionRecord:
    """One verification decision, as the central server stores it.

    ``decision`` is e.g. ``"APPROVED"`` or ``"SUSPICIOUS"``; ``score`` is the calibrated match score;
    ``reasons`` short machine-readable codes (``"shape"``, ``"speed"``...); ``model_versions`` maps a
    model name to its version; ``timings_ms`` maps a stage to its duration. ``subject`` is a
    pseudonymous customer reference (never a name), ``session_id`` the kiosk's session id.
    ``evidence`` holds raw pen data or an image, only when the policy allows it.
    """

    decision: str
    score: float
    reasons: tuple[str, ...] = ()
    model_versions: Mapping[str, str] = field(default_factory=dict)
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    subject: str | None = None
    session_id: str | None = None
    mode: str | None = None   # "online" (pen) or "offline" (image)
    created_ms: int = field(default_factory=_now_ms)
    evidence: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.decision, str) or not self.decision or len(self.decision) > 64:
            raise RecordError("decision must be a non-empty string of at most 64 characters")
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise RecordError(f"score must be a finite number, got {self.score!r}")
        if isinstance(self.reasons, (str, bytes)) or not all(isinstance(r, str) for r in self.reasons):
            raise RecordError("reasons must be a list of strings")
        object.__setattr__(self, "reasons", tuple(self.reasons))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.model_versions).items()):
            raise RecordError("model_versions must map names to version strings")
        for k, v in dict(self.timings_ms).items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RecordError(f"timings_ms[{k!r}] must be a finite number")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, allow_raw_evidence: bool = False) -> DecisionRecord:
        """Build from a plain dict (the daemon's API); unknown keys are refused, not silently kept."""
        data = dict(data)
        raw = sorted(k for k in data if k in RAW_EVIDENCE_KEYS)
        evidence: dict[str, Any] | None = dict(data.pop("evidence", None) or {}) or None
        for k in raw:
            if k != "evidence":
                evidence = {**(evidence or {}), k: data.pop(k)}
        if evidence and not allow_raw_evidence:
            raise RecordError(
                f"decision carries raw biometric data ({', '.join(raw)}) but the link policy does not "
                "allow raw evidence (allow_raw_evidence = false)"
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecordError(f"unknown decision fields: {', '.join(unknown)}")
        if "decision" not in data or "score" not in data:
            raise RecordError("a decision needs at least 'decision' and 'score'")
        return cls(**data, evidence=evidence)

    def to_payload(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["model_versions"] = dict(self.model_versions)
        d["timings_ms"] = dict(self.timings_ms)
        if self.evidence is None:
            d.pop("evidence")
        return {"type": "decision", "schema": PAYLOAD_SCHEMA, **d}


@dataclass(frozen=True)
class LogEntry:
    """One structured log line sent to the central server (already redacted)."""

    level: str
    logger: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    created_ms: int = field(default_factory=_now_ms)
    suppressed_before: int = 0   # records dropped by the rate limiter just before this one

    def to_payload(self) -> dict[str, Any]:
        d = asdict(self)
        d["fields"] = dict(self.fields)
        return {"type": "log", "schema": PAYLOAD_SCHEMA, **d}


@dataclass(frozen=True)
class StatusRecord:
    """Retained status: ``online`` with health figures, or ``offline`` (last will / clean exit)."""

    state: str
    uptime_s: float = 0.0
    queue_depth: Mapping[str, int] = field(default_factory=dict)
    dropped_logs: int = 0
    errors: int = 0
    model_versions: Mapping[str, str] = field(default_factory=dict)
    software_version: str = ""
    will_seq: int | None = None   # sequence of the last will registered for this connection
    created_ms: int = field(default_factory=_now_ms)

    def to_payload(self) -> dict[str, Any]:
        d = asdict(self)
        d["queue_depth"] = dict(self.queue_depth)
        d["model_versions"] = dict(self.model_versions)
        return {"type": "status", "schema": PAYLOAD_SCHEMA, **d}


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")


def decode_payload(data: bytes, expected_type: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("payload is not a JSON object")
    if obj.get("type") != expected_type:
        raise RecordError(f"payload type {obj.get('type')!r} does not match topic kind {expected_type!r}")
    if expected_type == "decision":
        if not isinstance(obj.get("decision"), str) or isinstance(obj.get("score"), bool) or not isinstance(obj.get("score"), (int, float)):
            raise RecordError("decision payload lacks a decision string or a numeric score")
    if expected_type == "status" and not isinstance(obj.get("state"), str):
        raise RecordError("status payload lacks a state")
    return obj
