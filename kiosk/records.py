"""Records the link carries, as typed dataclasses, and their (plaintext, pre-encryption) encoding.

The plaintext inside an envelope is compact JSON with a ``type`` field. Decisions carry the
decision, score, reasons, model versions and timings. Raw pen data or images are biometric data:
they are refused unless the link's policy allows them (``allow_raw_evidence``), and even then they
only travel inside the encrypted payload.

Payloads are strict, on both sides (``encode_payload`` on the kiosk, ``decode_payload`` at the
collector): numbers finite and integers within 64 bits, no control characters in any string or key
(tab and newline only in a log's free text), bounded nesting, no duplicate keys, a known ``schema``
version, and exactly the fields of the record's dataclass (``RECORD_TYPES``) with the declared
types - for that schema version: a field a later schema added (``FIELDS_SINCE``) is refused in an
older payload and required in a newer one. A kiosk's valid key vouches for who sent a payload, not
for what it holds.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import math
import re
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kiosk.errors import ApplianceError

if TYPE_CHECKING:
    from models.trajectory import Trajectory

#: The schema this code writes. 2 added a decision's ``profile``, ``operator`` and ``paper_references``;
#: 3 its ``explanations``.
PAYLOAD_SCHEMA = 3
#: Payload schema versions this code reads; any other is refused, never guessed at. A fleet updates
#: gradually (the collector first), so payloads of kiosks not yet updated are read.
KNOWN_SCHEMAS = frozenset({1, 2, PAYLOAD_SCHEMA})
#: The schema version that added a field, per payload type (fields not named here are schema 1's).
#: A payload of an older schema must not carry the field (that kiosk did not know it); one of its
#: schema or later must (``null`` where it does not apply): a kiosk of that schema always writes
#: it, so its absence is a malformed payload, not an old kiosk. Read back as the field's default.
FIELDS_SINCE: dict[str, dict[str, int]] = {"decision": {"profile": 2, "operator": 2, "paper_references": 2,
                                                        "explanations": 3}}
#: What a paper decision compared the picture with (``models.paper_reference``): the customer's
#: paper references, or their pad references drawn as ink.
PAPER_REFERENCE_KINDS = frozenset({"paper", "pad-ink"})
#: Bounds of a decision's ``explanations``: a verifier gives one or two sentences; a payload with
#: more, or longer, did not come from one (and would crowd the staff's decision table).
MAX_EXPLANATIONS, MAX_EXPLANATION_CHARS = 8, 300
#: Bounds of a decision's other texts: a kiosk's own are far inside them (a customer reference is at
#: most 64 characters, a request id 16, a model version a digest or a short name). Without them one
#: signed decision of a few KB on the wire inflated to 8 MiB in the store (found by a review).
MAX_REF_CHARS = 128                         # subject, session_id
MAX_CODES, MAX_CODE_CHARS = 32, 64          # reasons; model_versions' and timings_ms' names; mode
MAX_VERSION_CHARS = 256                     # a model version
#: The largest plaintext of each payload kind, after decompression. Evidence (pen samples, a PNG)
#: and a decision that carries raw evidence under a policy that allows it take the envelope's
#: bound; the others are small records (a log line's text and fields are cut at the kiosk to
#: about 27 000 characters), so a compressed envelope cannot inflate into megabytes of them.
MAX_PLAINTEXT_RAW = 8 << 20
MAX_PLAINTEXT = 256 << 10


def max_plaintext(kind: str, *, raw_evidence: bool = False) -> int:
    """The largest plaintext a payload of ``kind`` may have (``raw_evidence``: a decision that may
    carry raw evidence)."""
    return MAX_PLAINTEXT_RAW if kind == "evidence" or (kind == "decision" and raw_evidence) else MAX_PLAINTEXT
#: Deepest nesting a payload may have (a decision is 2 deep; evidence and log fields a little more).
MAX_DEPTH = 12
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: The last millisecond of year 9999: every record's ``created_ms`` is a time a reader can print.
MAX_TIME_MS = 253_402_300_799_999
# Control characters (C0, DEL, C1) and lone surrogates (not encodable as UTF-8): never in a string.
# A NUL cuts strings in C tools and PostgreSQL refuses it; an escape sequence repaints the terminal
# of whoever reads the data; a carriage return forges a line of output.
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# ...except tab and newline in free text (a log message, a log record's fields).
_BAD_CHARS_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_FREE_TEXT = {"log": frozenset({"message", "fields"})}
#: Fields only a link policy with ``allow_raw_evidence`` lets through.
POLICY_FIELDS = frozenset({"evidence"})

#: Keys that hold raw biometric data. Refused in a decision unless the policy asks for evidence.
RAW_EVIDENCE_KEYS = frozenset({"trajectory", "points", "pen_data", "raw", "image", "image_png", "samples", "evidence"})

#: An application profile's name, as the kiosk config names it and a decision records it.
PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: A decision's operator: a staff operator's login name (kiosk.staff.validate_operator's rule), or
#: the central command, with the admin identity it was sent under (tools.pki's name rule).
OPERATOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}|central(:[a-z0-9][a-z0-9-]{0,62})?")


class RecordError(ApplianceError, ValueError):
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

    ``profile`` is the application profile whose thresholds decided (``[profiles.NAME]`` of the
    kiosk config). ``operator`` says who asked for the verification: the staff operator logged in
    at the kiosk's staff view (their login name), ``"central:ADMIN"`` for a signed request of the
    central command (``sigkiosk admin verify``; ADMIN the name of the admin certificate it was sent
    with, ``"central"`` alone when the request did not name one), or None for the customer's own
    request at the kiosk. ``paper_references`` (paper decisions, ``mode`` ``"offline"``): what the
    picture was compared with, ``"paper"`` (the customer's references enrolled from paper) or
    ``"pad-ink"`` (their pad references drawn as ink); None for a pen decision. All three are None
    in a decision of schema 1 (a kiosk that predates them). ``explanations``: the verdict's reasons in
    words, as the kiosk's decision screen gives them (a pad changed since enrollment, so pressure
    was not compared; the paper check's proportions), also when the screen withheld the decision
    from the customer: the staff who decide then read them centrally. Empty before schema 3.
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
    profile: str | None = None
    operator: str | None = None
    paper_references: str | None = None
    explanations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (isinstance(self.explanations, (str, bytes)) or not all(isinstance(e, str) for e in self.explanations)
                or len(self.explanations) > MAX_EXPLANATIONS
                or not all(0 < len(e) <= MAX_EXPLANATION_CHARS for e in self.explanations)):
            raise RecordError(f"explanations must be a list of at most {MAX_EXPLANATIONS} strings of "
                              f"1-{MAX_EXPLANATION_CHARS} characters")
        object.__setattr__(self, "explanations", tuple(self.explanations))
        if self.paper_references is not None and self.paper_references not in PAPER_REFERENCE_KINDS:
            raise RecordError(f"paper_references {self.paper_references!r:.40} is not one of "
                              f"{sorted(PAPER_REFERENCE_KINDS)}")
        if self.profile is not None and not (isinstance(self.profile, str) and PROFILE_NAME.fullmatch(self.profile)):
            raise RecordError(f"profile {self.profile!r:.50} is not a profile name (1-32 lower-case letters, digits, "
                              "'-' or '_', starting with a letter or digit)")
        if self.operator is not None and not (isinstance(self.operator, str) and OPERATOR_NAME.fullmatch(self.operator)):
            raise RecordError(f"operator {self.operator!r:.80} is neither a staff operator's name nor "
                              "'central' or 'central:ADMIN'")
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
                raise RecordError(f"timings_ms[{k!r:.70}] must be a finite number")
        self._check_sizes()

    def _check_sizes(self) -> None:
        for name in ("subject", "session_id"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or len(v) > MAX_REF_CHARS):
                raise RecordError(f"{name} must be a string of at most {MAX_REF_CHARS} characters")
        if self.mode is not None and (not isinstance(self.mode, str) or len(self.mode) > MAX_CODE_CHARS):
            raise RecordError(f"mode must be a string of at most {MAX_CODE_CHARS} characters")
        if len(self.reasons) > MAX_CODES or any(len(r) > MAX_CODE_CHARS for r in self.reasons):
            raise RecordError(f"reasons must be at most {MAX_CODES} codes of at most {MAX_CODE_CHARS} characters")
        versions, timings = dict(self.model_versions), dict(self.timings_ms)
        if (len(versions) > MAX_CODES or any(len(k) > MAX_CODE_CHARS or len(v) > MAX_VERSION_CHARS
                                             for k, v in versions.items())):
            raise RecordError(f"model_versions must be at most {MAX_CODES} names of at most {MAX_CODE_CHARS} "
                              f"characters, each version at most {MAX_VERSION_CHARS}")
        if len(timings) > MAX_CODES or any(len(k) > MAX_CODE_CHARS for k in timings):
            raise RecordError(f"timings_ms must be at most {MAX_CODES} stages of at most {MAX_CODE_CHARS} characters")

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
        d["explanations"] = list(self.explanations)
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

    def __post_init__(self) -> None:
        # A log line is best effort: what the collector would refuse is neutralised here, so a
        # stray escape sequence or NaN in an exception message never costs the whole record.
        for name in ("level", "logger", "message"):
            object.__setattr__(self, name, _clean_log_value(getattr(self, name), name == "message", 0))
        object.__setattr__(self, "fields", _clean_log_value(dict(self.fields), True, 1))

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
    # Connection attempts that failed before this connection, and the last one's reason
    # (kiosk.link): a kiosk that could not connect says why centrally once it gets through.
    link_failures: int = 0
    link_problem: str | None = None
    # The active threshold of [calibration] (kiosk.calibration); absent or null: not calibrating.
    # Optional at every schema: a kiosk without calibration, or of before it, does not write it.
    site_threshold: float | None = None
    created_ms: int = field(default_factory=_now_ms)

    def to_payload(self) -> dict[str, Any]:
        d = asdict(self)
        if d["site_threshold"] is None:
            del d["site_threshold"]   # a collector of before it reads this kiosk's status still
        d["queue_depth"] = dict(self.queue_depth)
        d["model_versions"] = dict(self.model_versions)
        return {"type": "status", "schema": PAYLOAD_SCHEMA, **d}


#: What a staff member did at the kiosk (``kiosk.staff``; the daemon's template management;
#: ``enroll_paper``: references from scans or camera photos).
#: ``calibration``: the site threshold moved (``kiosk.calibration``; operator ``kiosk`` when the
#: kiosk moved it, the operator's for a revert or resume; ``mode`` auto/revert/resume).
AUDIT_ACTIONS = frozenset({"login", "logout", "enroll", "enroll_paper", "delete", "calibration"})


@dataclass(frozen=True)
class AuditRecord:
    """One staff action at the kiosk: who (``operator``), what (``action``; ``mode`` new/replace/add
    for an enrollment), to which customer (``subject``, the same pseudonymous reference a decision
    carries), when (``created_ms``) and how it ended (``outcome``: ``started`` before a template
    changes, then ``ok`` or the error; for logins ``ok``, ``bad_credentials``, ``locked``...).
    ``session_id`` is the kiosk request's id, ``staff_session`` the login session's public id."""

    operator: str
    action: str
    outcome: str
    subject: str | None = None
    mode: str | None = None
    session_id: str | None = None
    staff_session: str | None = None
    created_ms: int = field(default_factory=_now_ms)

    def __post_init__(self) -> None:
        for name in ("operator", "outcome"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v) > 64:
                raise RecordError(f"audit {name} must be a non-empty string of at most 64 characters")
        if self.action not in AUDIT_ACTIONS:
            raise RecordError(f"unknown audit action {self.action!r}")
        for name in ("subject", "mode", "session_id", "staff_session"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or len(v) > 128):
                raise RecordError(f"audit {name} must be a string of at most 128 characters")

    def to_payload(self) -> dict[str, Any]:
        return {"type": "audit", "schema": PAYLOAD_SCHEMA, **asdict(self)}


#: The most pen samples one evidence record carries: 100 s at 200 Hz, far beyond any signature.
#: Such a record is about 1 MB of JSON, about 0.4 MB sealed (zlib): inside the envelope limit. A
#: longer capture is refused whole, never cut (a cut signature is no evidence).
MAX_EVIDENCE_POINTS = 20_000
#: The largest paper-evidence PNG (bytes, before base64): a found signature crop is 20-150 KB; a
#: larger one is re-encoded smaller by ``kiosk.evidence`` (its ``image_scale`` says by how much).
MAX_EVIDENCE_PNG = 512 * 1024
EVIDENCE_MODES = frozenset({"online", "offline"})
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEX64 = re.compile("[0-9a-f]{64}")
_PEN_COLUMNS = ("x", "y", "t", "pressure", "pen_down")
_PEN_ONLY = (*_PEN_COLUMNS, "device_name", "units", "resolution", "pressure_levels", "nominal_rate_hz",
             "time_measured")
_PAPER_ONLY = ("image_png", "image_dpi", "image_scale")


@dataclass(frozen=True)
class EvidenceRecord:
    """The questioned signature of one decision, for disputes (``type: "evidence"``).

    Sent after its decision, on its own topic, sealed to the central key like every record. It is
    bound to the decision by ``decision_seq`` (the decision envelope's sequence number: same kiosk,
    the kiosk id comes from the signed header) and ``decision_digest`` (SHA-256 of that envelope's
    signed part): the collector stores it only beside that exact decision.

    ``mode`` "online": the pen samples as the capture produced them (``x``, ``y`` in ``units``,
    ``t`` seconds from the first sample, ``pressure`` 0..1, ``pen_down``, ``gaps``,
    ``stroke_breaks``) and the device's description. ``mode`` "offline": ``image_png``, base64 of
    the PNG of the signature crop the verifier checked (``image_scale`` < 1 when it was re-encoded
    smaller to fit). Each mode's fields and only those; every check's message names the field,
    never a value (this is raw biometric data and refusals are logged).
    """

    decision_seq: int
    decision_digest: str
    session_id: str
    mode: str
    created_ms: int = field(default_factory=_now_ms)
    x: tuple[float, ...] | None = None
    y: tuple[float, ...] | None = None
    t: tuple[float, ...] | None = None
    pressure: tuple[float, ...] | None = None
    pen_down: tuple[bool, ...] | None = None
    gaps: tuple[int, ...] = ()
    stroke_breaks: tuple[int, ...] = ()
    device_name: str | None = None
    units: str | None = None
    resolution: float | None = None
    pressure_levels: int | None = None
    nominal_rate_hz: float | None = None
    time_measured: bool | None = None
    image_png: str | None = None
    image_dpi: float | None = None
    image_scale: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.decision_seq, bool) or not isinstance(self.decision_seq, int) or not 0 <= self.decision_seq < 2**63:
            raise RecordError("evidence decision_seq must be a sequence number (0 <= n < 2**63)")
        if not isinstance(self.decision_digest, str) or not _HEX64.fullmatch(self.decision_digest):
            raise RecordError("evidence decision_digest must be 64 lower-case hex digits (SHA-256)")
        if not isinstance(self.session_id, str) or not 0 < len(self.session_id) <= 128:
            raise RecordError("evidence session_id must be a string of 1-128 characters")
        if self.mode not in EVIDENCE_MODES:
            raise RecordError("evidence mode must be 'online' (pen) or 'offline' (paper)")
        for name in ("x", "y", "t", "pressure", "pen_down", "gaps", "stroke_breaks"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))
        if self.mode == "online":
            self._check_pen()
        else:
            self._check_paper()

    def _check_pen(self) -> None:
        stray = [n for n in _PAPER_ONLY if getattr(self, n) is not None]
        if stray:
            raise RecordError(f"pen evidence carries paper fields: {', '.join(stray)}")
        missing = [n for n in (*_PEN_COLUMNS, "units", "time_measured") if getattr(self, n) is None]
        if missing:
            raise RecordError(f"pen evidence lacks {', '.join(missing)}")
        n = len(self.x or ())
        if not 0 < n <= MAX_EVIDENCE_POINTS:
            raise RecordError(f"pen evidence must have 1-{MAX_EVIDENCE_POINTS} samples, has {n}")
        if any(len(getattr(self, c)) != n for c in _PEN_COLUMNS):
            raise RecordError("pen evidence columns x, y, t, pressure, pen_down differ in length")
        try:
            self.trajectory()
        except ValueError as exc:   # TrajectoryError: its message holds sample values, never logged
            raise RecordError(f"pen evidence is not a valid trajectory ({type(exc).__name__})") from None

    def _check_paper(self) -> None:
        stray = [n for n in _PEN_ONLY if getattr(self, n) is not None] + [n for n in ("gaps", "stroke_breaks")
                                                                          if getattr(self, n)]
        if stray:
            raise RecordError(f"paper evidence carries pen fields: {', '.join(stray)}")
        if not isinstance(self.image_png, str):
            raise RecordError("paper evidence lacks image_png")
        png = self.png()
        if len(png) > MAX_EVIDENCE_PNG:
            raise RecordError(f"paper evidence image of {len(png)} bytes exceeds {MAX_EVIDENCE_PNG}")
        if not png.startswith(_PNG_MAGIC):
            raise RecordError("paper evidence image_png is not a PNG")
        for name in ("image_dpi", "image_scale"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise RecordError(f"paper evidence {name} must be a positive number")
        if self.image_scale is not None and self.image_scale > 1:
            raise RecordError("paper evidence image_scale must be at most 1 (an image is only ever made smaller)")

    def trajectory(self) -> Trajectory:
        """The pen samples as a ``models.Trajectory`` (pen evidence only)."""
        from models.trajectory import DeviceInfo, Trajectory

        if self.mode != "online":
            raise RecordError("paper evidence has no pen samples")
        device = DeviceInfo(name=self.device_name or "unknown", units=self.units,  # type: ignore[arg-type]
                            resolution=self.resolution, pressure_levels=self.pressure_levels,
                            nominal_rate_hz=self.nominal_rate_hz, time_measured=bool(self.time_measured))
        return Trajectory(x=self.x, y=self.y, pressure=self.pressure, t=self.t, pen_down=self.pen_down,  # type: ignore[arg-type]
                          device=device, gaps=self.gaps, stroke_breaks=self.stroke_breaks)

    def png(self) -> bytes:
        """The paper evidence's PNG bytes."""
        if self.image_png is None:
            raise RecordError("pen evidence has no image")
        try:
            return base64.b64decode(self.image_png, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("paper evidence image_png is not base64") from None

    def to_payload(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every sample (17 ms for a 350-point signature).
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("x", "y", "t", "pressure", "pen_down", "gaps", "stroke_breaks"):
            if d[name] is not None:
                d[name] = list(d[name])
        return {"type": "evidence", "schema": PAYLOAD_SCHEMA, **{k: v for k, v in d.items() if v is not None}}


def _clean_log_value(value: Any, free_text: bool, depth: int) -> Any:
    if isinstance(value, str):
        return (_BAD_CHARS_TEXT if free_text else _BAD_CHARS).sub("\ufffd", value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH - 1:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {_clean_log_value(str(k), False, depth): _clean_log_value(v, free_text, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_log_value(v, free_text, depth + 1) for v in value]
    return _clean_log_value(str(value), free_text, depth)


#: The record class of each payload type: its dataclass fields are the payload's fields, with the
#: declared types (a new record type only needs an entry here to get every check).
RECORD_TYPES: dict[str, type] = {"decision": DecisionRecord, "log": LogEntry, "status": StatusRecord,
                                 "audit": AuditRecord, "evidence": EvidenceRecord}


def _check_value(value: Any, where: str, depth: int, free_text: bool) -> None:
    """Finite numbers, 64-bit integers, strings and keys without control characters, bounded depth."""
    if depth > MAX_DEPTH:
        raise RecordError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        bad = (_BAD_CHARS_TEXT if free_text else _BAD_CHARS).search(value)
        if bad:
            raise RecordError(f"{where[:100]}: control character U+{ord(bad.group()):04X} in a string")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise RecordError(f"{where[:100]}: integer outside 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"{where[:100]}: {value} is not a finite number")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or _BAD_CHARS.search(k):
                raise RecordError(f"{where[:100]}: a key is not a string without control characters")
            _check_value(v, f"{where}.{k[:40]}", depth + 1, free_text)
    elif isinstance(value, (list, tuple)):
        # A column of plain numbers or flags (evidence samples): one pass, no call per value.
        if all(type(v) is float for v in value):
            if not all(map(math.isfinite, value)):
                raise RecordError(f"{where[:100]}: a value is not a finite number")
            return
        if all(type(v) is bool for v in value):
            return
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", depth + 1, free_text)
    else:
        raise RecordError(f"{where[:100]}: {type(value).__name__} is not a JSON value")


def _schema(payload: Mapping[str, Any]) -> int:
    schema = payload.get("schema")
    # An integer, not merely equal to one: 1.0 == 1 in Python, but a kiosk writes 1.
    if type(schema) is not int or schema not in KNOWN_SCHEMAS:
        raise RecordError(f"payload schema {schema!r:.40} is not one this version reads {sorted(KNOWN_SCHEMAS)}")
    return schema


def check_payload(payload: Mapping[str, Any]) -> None:
    """The checks every payload passes whatever its type, on the kiosk and at the collector."""
    _schema(payload)
    kind = payload.get("type")
    free = _FREE_TEXT.get(kind, frozenset()) if isinstance(kind, str) else frozenset()
    for k, v in payload.items():
        if not isinstance(k, str) or _BAD_CHARS.search(k):
            raise RecordError("a payload key is not a string without control characters")
        _check_value(v, k[:40], 1, k in free)


def _conforms(value: Any, tp: Any) -> bool:
    """Does a JSON value match a record field's annotation? (the few shapes records use)"""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list):   # tuple[X, ...] / list[X]: a JSON array of X
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin in (Mapping, dict):   # Mapping[str, X]: a JSON object of X (keys are strings in JSON)
        return isinstance(value, dict) and all(_conforms(v, args[1]) for v in value.values())
    raise TypeError(f"records: no payload check for the annotation {tp!r}")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)   # evaluates the annotations' strings: once per class
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# An annotation _conforms cannot check fails here, at import, rather than on the first payload.
_probe: object
for _cls in RECORD_TYPES.values():
    for _tp in _field_types(_cls).values():
        for _probe in (None, "", 0, [], {}):
            _conforms(_probe, _tp)


def check_record(payload: Mapping[str, Any], *, allow_raw_evidence: bool = False) -> None:
    """The payload has exactly its record's fields, of the declared types, and builds the record."""
    kind = payload.get("type")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(kind, str):
        raise RecordError(f"unknown payload type {kind!r:.40}")
    schema = _schema(payload)
    body = {k: v for k, v in payload.items() if k not in ("type", "schema")}
    since = FIELDS_SINCE.get(kind, {})
    declared = {name: tp for name, tp in _field_types(cls).items() if since.get(name, 1) <= schema}
    unknown = sorted(set(body) - set(declared))
    if unknown:
        newer = [u for u in unknown if u in since]
        if newer and len(newer) == len(unknown):
            raise RecordError(f"{kind} fields {', '.join(newer)} came with schema {max(since[u] for u in newer)}, "
                              f"the payload says schema {schema}")
        raise RecordError(f"unknown {kind} fields: {', '.join(u[:40] for u in unknown[:10])}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name in declared and f.name not in body
               and (since.get(f.name, 1) > 1
                    or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)]
    if missing:
        raise RecordError(f"{kind} payload of schema {schema} lacks {', '.join(missing)}")
    for name, value in body.items():
        if not _conforms(value, declared[name]):
            raise RecordError(f"{kind} field {name!r} is not of type {declared[name]}")
    created = body.get("created_ms")
    if isinstance(created, int) and not 0 <= created <= MAX_TIME_MS:
        # An int64 passes the type check, but a date beyond year 9999 breaks every reader that
        # shows it (found by a review: one such audit record failed each audit export with it).
        raise RecordError(f"{kind} created_ms {created} is not a time between 1970 and 9999")
    forbidden = sorted(k for k in POLICY_FIELDS & set(body) if body[k] is not None)
    if forbidden and not allow_raw_evidence:
        raise RecordError(f"{kind} carries raw biometric data ({', '.join(forbidden)}) but the link policy does not "
                          "allow raw evidence (allow_raw_evidence = false)")
    try:
        cls(**body)   # the record's own checks (its __post_init__)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"invalid {kind} payload: {exc}") from None


def _no_constants(name: str) -> Any:
    raise RecordError(f"payload holds {name}, which is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):   # two JSON parsers may keep different values: refuse the ambiguity
        raise RecordError("payload has duplicate keys")
    return obj


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON of a payload, after the checks the collector makes (refused here, not there)."""
    check_payload(payload)
    data = json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
    kind = payload.get("type")
    limit = max_plaintext(kind if isinstance(kind, str) else "", raw_evidence=payload.get("evidence") is not None)
    if len(data) > limit:
        raise RecordError(f"{kind} payload of {len(data)} bytes exceeds the limit of {limit} bytes")
    return data


def decode_payload(data: bytes, expected_type: str, *, allow_raw_evidence: bool = False) -> dict[str, Any]:
    """Parse and check a payload strictly (see the module docstring); RecordError says why not."""
    try:
        # NaN / Infinity literals, which Python's json accepts by default, are refused outright;
        # a number too large for a float (1e999) becomes inf, which check_payload refuses.
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except RecordError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:   # JSONDecodeError; an integer of > 4300 digits
        raise RecordError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise RecordError(f"payload nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(obj, dict):
        raise RecordError("payload is not a JSON object")
    if obj.get("type") != expected_type:
        raise RecordError(f"payload type {obj.get('type')!r} does not match topic kind {expected_type!r}")
    if expected_type == "decision":
        if not isinstance(obj.get("decision"), str) or isinstance(obj.get("score"), bool) or not isinstance(obj.get("score"), (int, float)):
            raise RecordError("decision payload lacks a decision string or a numeric score")
    if expected_type == "status" and not isinstance(obj.get("state"), str):
        raise RecordError("status payload lacks a state")
    if expected_type == "audit" and not (isinstance(obj.get("operator"), str) and isinstance(obj.get("outcome"), str)
                                         and obj.get("action") in AUDIT_ACTIONS):
        raise RecordError("audit payload lacks an operator, a known action or an outcome")
    if expected_type == "evidence" and not (obj.get("mode") in EVIDENCE_MODES and isinstance(obj.get("decision_seq"), int)):
        raise RecordError("evidence payload lacks a mode or a decision_seq")
    check_payload(obj)
    check_record(obj, allow_raw_evidence=allow_raw_evidence)
    return obj
