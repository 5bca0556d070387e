"""Model bundles: the signed manifest, its verification, the bundle file and the transfer offer.

Shared by the appliance (verification) and ``tools/bundle.py`` (creation, signing). The format is
documented in ``kiosk/UPDATES.md``. In short:

* the *manifest* (name, version, times, file sizes and SHA-256, models with their golden vectors
  and tolerances, minimum appliance version, target groups, notes) is canonical JSON, wrapped in a
  TUF-style envelope ``{"signed": manifest, "signatures": [{"keyid", "sig"}]}``; a bundle is
  trusted when at least ``threshold`` *distinct* trusted admin keys signed exactly those bytes;
* the *payload* is the files concatenated in manifest order (the manifest gives each file's size);
* a *bundle file* (``.skb``) is ``b"SKB1" | u32 manifest length | envelope JSON | payload``;
* an *offer* (MQTT, retained) carries the envelope, the payload's size and SHA-256 (its id) and
  one SHA-256 per chunk, so a kiosk refuses a bad bundle before downloading any of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.errors import ApplianceError
from kiosk.jsonbound import JSONBoundsError, loads_bounded
from kiosk.keys import key_id, raw_public

MANIFEST_TYPE = "sigkiosk-model-bundle"
OFFER_TYPE = "sigkiosk-model-offer"
FORMAT = 1
BUNDLE_MAGIC = b"SKB1"
MAX_MANIFEST_BYTES = 256 << 10
MAX_FILES = 64
# Identifiers are matched whole (``fullmatch``): ``$`` with ``match`` let "model.tflite\n" through.
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(ApplianceError, ValueError):
    """A bundle, manifest or offer is refused. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- canonical JSON and signatures -----------------------------------------------------------------

def canonical(obj: Any) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign_envelope(signed: Mapping[str, Any], keys: Iterable[Ed25519PrivateKey],
                  existing: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """Wrap ``signed`` with signatures by ``keys`` (added to ``existing``; one per key id)."""
    body = canonical(signed)
    sigs = {s["keyid"]: dict(s) for s in existing}
    for k in keys:
        kid = key_id(raw_public(k)).hex()
        sigs[kid] = {"keyid": kid, "sig": base64.b64encode(k.sign(body)).decode()}
    return {"signed": dict(signed), "signatures": sorted(sigs.values(), key=lambda s: s["keyid"])}


@dataclass(frozen=True)
class TrustPolicy:
    """The admin keys a kiosk trusts and how many distinct ones must sign (k of n, as TUF roots)."""

    keys: Mapping[str, bytes]   # key id (hex) -> raw Ed25519 public key
    threshold: int = 1

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("the signature threshold must be at least 1")
        if self.threshold > len(self.keys):
            raise ValueError(f"threshold {self.threshold} exceeds the {len(self.keys)} trusted keys: nothing could ever install")

    @classmethod
    def from_public_keys(cls, raws: Iterable[bytes], threshold: int = 1) -> TrustPolicy:
        return cls({key_id(r).hex(): r for r in raws}, threshold)


def verify_envelope(envelope: Any, policy: TrustPolicy) -> dict[str, Any]:
    """Return the signed object if ``threshold`` distinct trusted keys signed it; else BundleError.

    Reasons: ``malformed``, ``unsigned`` (no signatures), ``unknown_key`` (signatures, none by a
    trusted key), ``bad_signature`` (a trusted key's signature does not match: tampered content),
    ``too_few_signatures`` (valid, but fewer than the threshold).
    """
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise BundleError("malformed", "not a signed envelope")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise BundleError("unsigned", "the manifest carries no signatures")
    body = canonical(envelope["signed"])
    valid: set[str] = set()
    bad: set[str] = set()
    unknown = 0
    for s in sigs:
        if not isinstance(s, dict) or not isinstance(s.get("keyid"), str) or not isinstance(s.get("sig"), str):
            raise BundleError("malformed", "a signature entry is not {keyid, sig}")
        raw = policy.keys.get(s["keyid"])
        if raw is None:
            unknown += 1
            continue
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(s["sig"], validate=True), body)
            valid.add(s["keyid"])   # a set: one key signing twice counts once
        except (InvalidSignature, ValueError):
            bad.add(s["keyid"])
    if len(valid) >= policy.threshold:
        return envelope["signed"]
    if bad:
        raise BundleError("bad_signature", f"signature(s) by trusted key(s) {', '.join(sorted(bad))} do not match "
                                           "the manifest (tampered or re-written after signing)")
    if not valid:
        raise BundleError("unknown_key", f"{unknown} signature(s), none by a trusted admin key")
    raise BundleError("too_few_signatures", f"{len(valid)} valid signature(s) of {policy.threshold} required")


# -- the manifest -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    file: str                  # the .tflite
    golden: str                # its golden vectors (.npz)
    atol: float | None = None
    rtol: float | None = None


def parse_version(text: str) -> tuple[int, ...]:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}", text):
        raise BundleError("malformed", f"appliance version {text!r} is not like 1.2.3")
    return tuple(int(p) for p in text.split("."))


def _tolerance(value: Any, what: str) -> float | None:
    """A golden-vector tolerance from the manifest: absent, or a finite number >= 0 (a string, a
    list, NaN or infinity would make the golden check raise, or pass anything)."""
    if value is None:
        return None
    try:
        x = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:   # an integer of 400 digits
        x = math.inf
    if not math.isfinite(x) or x < 0:
        raise BundleError("malformed", f"golden tolerance {what} must be a finite number >= 0, got {value!r}"[:200])
    return x


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    created: int                          # Unix seconds
    expires: int                          # Unix seconds
    files: tuple[FileEntry, ...]
    models: tuple[ModelEntry, ...]
    min_appliance_version: str = "0.0.0"
    target_groups: tuple[str, ...] = ("*",)   # "*": any kiosk; else group names or kiosk ids
    notes: str = ""

    @property
    def payload_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": MANIFEST_TYPE, "format": FORMAT, "name": self.name, "version": self.version,
            "created": self.created, "expires": self.expires,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
            "models": [{k: v for k, v in (("file", m.file), ("golden", m.golden), ("atol", m.atol), ("rtol", m.rtol))
                        if v is not None} for m in self.models],
            "min_appliance_version": self.min_appliance_version, "target_groups": list(self.target_groups),
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse and validate structure (not trust: call ``verify_envelope`` first)."""
        try:
            if d.get("type") != MANIFEST_TYPE or d.get("format") != FORMAT:
                raise BundleError("malformed", f"not a {MANIFEST_TYPE} format {FORMAT} manifest")
            files = tuple(FileEntry(str(f["name"]), int(f["size"]), str(f["sha256"])) for f in d["files"])
            models = tuple(ModelEntry(str(m["file"]), str(m["golden"]), _tolerance(m.get("atol"), "atol"),
                                      _tolerance(m.get("rtol"), "rtol")) for m in d["models"])
            m = cls(name=str(d["name"]), version=d["version"], created=int(d["created"]), expires=int(d["expires"]),
                    files=files, models=models, min_appliance_version=str(d.get("min_appliance_version", "0.0.0")),
                    target_groups=tuple(str(g) for g in d.get("target_groups", ["*"])), notes=str(d.get("notes", "")))
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError("malformed", f"manifest field missing or wrong: {exc!r}") from None
        m.validate()
        return m

    def validate(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise BundleError("malformed", f"bundle name {self.name!r}: lower-case letters, digits, . _ -")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or not 0 < self.version < 2**53:
            raise BundleError("malformed", f"version must be a positive integer, got {self.version!r}")
        if self.expires <= self.created:
            raise BundleError("malformed", "the manifest expires before it was created")
        if not self.files or len(self.files) > MAX_FILES:
            raise BundleError("malformed", f"a bundle has 1..{MAX_FILES} files")
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise BundleError("malformed", "duplicate file names")
        for f in self.files:
            # Names become paths inside the slot: no separators, no "..", no hidden files.
            if not _FILE_RE.fullmatch(f.name) or ".." in f.name:
                raise BundleError("malformed", f"file name {f.name!r} is not allowed")
            if f.size < 0 or not _HEX64.fullmatch(f.sha256):
                raise BundleError("malformed", f"file {f.name}: bad size or sha256")
        if not self.models:
            raise BundleError("malformed", "a bundle has at least one model with golden vectors")
        for m in self.models:
            if m.file not in names or m.golden not in names:
                raise BundleError("malformed", f"model {m.file} / golden {m.golden} not among the files")
        parse_version(self.min_appliance_version)


def manifest_digest(envelope: Mapping[str, Any]) -> str:
    """SHA-256 of the signed manifest bytes: names one exact manifest (signatures excluded)."""
    return hashlib.sha256(canonical(envelope["signed"])).hexdigest()


def check_manifest(manifest: Manifest, *, expected_name: str, installed_version: int, appliance_version: str,
                   kiosk_id: str, group: str | None, now: float | None = None, max_bytes: int) -> None:
    """The checks that need no payload: refuse early, before downloading anything."""
    now = time.time() if now is None else now
    if manifest.name != expected_name:
        raise BundleError("wrong_name", f"bundle {manifest.name!r}, this appliance runs {expected_name!r}")
    if manifest.expires <= now:
        raise BundleError("expired", f"the manifest expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(manifest.expires))}")
    if manifest.created > now + 300:
        raise BundleError("malformed", "the manifest was created in the future (clock skew over 5 min?)")
    if manifest.version <= installed_version:
        raise BundleError("not_newer", f"version {manifest.version} is not newer than installed version {installed_version}")
    if parse_version(appliance_version) < parse_version(manifest.min_appliance_version):
        raise BundleError("appliance_too_old", f"needs appliance {manifest.min_appliance_version}, this is {appliance_version}")
    targets = set(manifest.target_groups)
    if "*" not in targets and kiosk_id not in targets and (group is None or group not in targets):
        raise BundleError("wrong_target", f"bundle targets {sorted(targets)}, this kiosk is {kiosk_id} in group {group or '-'}")
    if manifest.payload_size > max_bytes:
        raise BundleError("too_large", f"payload of {manifest.payload_size} bytes exceeds the limit of {max_bytes}")


def split_payload(manifest: Manifest, payload: bytes) -> dict[str, bytes]:
    """Cut the payload into the manifest's files, checking each size and SHA-256."""
    if len(payload) != manifest.payload_size:
        raise BundleError("hash_mismatch", f"payload has {len(payload)} bytes, the manifest says {manifest.payload_size}")
    out, pos = {}, 0
    for f in manifest.files:
        data = payload[pos:pos + f.size]
        pos += f.size
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise BundleError("hash_mismatch", f"file {f.name} does not match its SHA-256 in the signed manifest")
        out[f.name] = data
    return out


# -- bundle files -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleFile:
    envelope: dict[str, Any]
    payload: bytes

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_dict(self.envelope["signed"])

    def to_bytes(self) -> bytes:
        env = canonical(self.envelope)
        return BUNDLE_MAGIC + struct.pack(">I", len(env)) + env + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleFile:
        if len(data) < 8 or data[:4] != BUNDLE_MAGIC:
            raise BundleError("malformed", "not a sigkiosk bundle file (magic SKB1)")
        (n,) = struct.unpack(">I", data[4:8])
        if n > MAX_MANIFEST_BYTES or 8 + n > len(data):
            raise BundleError("malformed", "manifest length out of range")
        try:
            env = loads_bounded(data[8:8 + n], max_bytes=MAX_MANIFEST_BYTES)
        except JSONBoundsError as exc:
            raise BundleError("malformed", f"the manifest: {exc}") from None
        if not isinstance(env, dict) or not isinstance(env.get("signed"), dict):
            raise BundleError("malformed", "the manifest is not a signed envelope")
        return cls(env, data[8 + n:])

    @classmethod
    def read(cls, path: Path) -> BundleFile:
        return cls.from_bytes(Path(path).read_bytes())

    def write(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())


# -- the transfer offer -----------------------------------------------------------------------------

DEFAULT_CHUNK = 256 << 10
MAX_CHUNK = 1 << 20   # the broker's max_packet_size is 2 MiB; leave room


@dataclass(frozen=True)
class Offer:
    envelope: dict[str, Any]
    bundle_id: str                 # SHA-256 (hex) of the whole payload
    size: int
    chunk_size: int
    chunks: tuple[str, ...]        # SHA-256 (hex) of each chunk
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def short_id(self) -> str:
        return self.bundle_id[:16]

    @classmethod
    def for_payload(cls, envelope: dict[str, Any], payload: bytes, chunk_size: int = DEFAULT_CHUNK) -> Offer:
        if not 1024 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size must be 1 KiB..{MAX_CHUNK} bytes")
        chunks = tuple(hashlib.sha256(payload[i:i + chunk_size]).hexdigest() for i in range(0, len(payload), chunk_size))
        return cls(envelope, hashlib.sha256(payload).hexdigest(), len(payload), chunk_size, chunks)

    def to_bytes(self) -> bytes:
        return canonical({"type": OFFER_TYPE, "format": FORMAT, "bundle_id": self.bundle_id, "size": self.size,
                          "chunk_size": self.chunk_size, "chunks": list(self.chunks), "manifest": self.envelope,
                          "created_ms": self.created_ms})

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int) -> Offer:
        limit = MAX_MANIFEST_BYTES + 64 * (max_bytes // 1024 + 1) + 4096
        if len(data) > limit:
            raise BundleError("too_large", "offer message too large")
        try:
            d = loads_bounded(data, max_bytes=limit)
        except JSONBoundsError as exc:
            raise BundleError("malformed", f"offer unreadable: {exc}") from None
        try:
            if d.get("type") != OFFER_TYPE or d.get("format") != FORMAT:
                raise BundleError("malformed", "not a model offer")
            offer = cls(d["manifest"], str(d["bundle_id"]), int(d["size"]), int(d["chunk_size"]),
                        tuple(str(c) for c in d["chunks"]), int(d.get("created_ms", 0)))
        except BundleError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:   # int(Infinity): overflow
            raise BundleError("malformed", f"offer unreadable: {exc!r}") from None
        if not isinstance(offer.envelope, dict) or not isinstance(offer.envelope.get("signed"), dict):
            raise BundleError("malformed", "the offer's manifest is not a signed envelope")
        try:
            manifest_digest(offer.envelope)
        except ValueError:   # NaN / Infinity: json accepts them, canonical JSON does not
            raise BundleError("malformed", "the offer's manifest is not canonical JSON") from None
        if not _HEX64.fullmatch(offer.bundle_id) or not all(_HEX64.fullmatch(c) for c in offer.chunks):
            raise BundleError("malformed", "offer hashes are not SHA-256 hex")
        if offer.size > max_bytes:
            raise BundleError("too_large", f"bundle of {offer.size} bytes exceeds the limit of {max_bytes}")
        if not 1024 <= offer.chunk_size <= MAX_CHUNK or len(offer.chunks) != -(-offer.size // offer.chunk_size):
            raise BundleError("malformed", "chunk size or count inconsistent with the size")
        return offer


def chunk_subtopic(bundle_id: str, index: int) -> str:
    """Chunk topics, below a command base ``.../model/``: ``chunk/<first 16 hex of id>/<index>``."""
    return f"chunk/{bundle_id[:16]}/{index}"
