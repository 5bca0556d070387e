"""One disputed case, exported for a document examiner: ``sigkiosk central export-case``.

Writes into a new directory (mode 0700: it holds raw biometric data):

* ``signature.iso19794-7`` (pen: the questioned signature as an ISO/IEC 19794-7:2007 full-format
  record, ``tools.central.iso19794_7``) or ``signature.png`` (paper: the crop the verifier checked);
* ``decision.json``: the stored decision record (kiosk, site, sequence number, times, envelope
  digest and the decrypted payload: decision, score, reasons, model versions...);
* ``verification.json``: how the evidence is tied to the decision and to the kiosk: the
  decision's envelope digest, the evidence's, the digest the evidence names (the kiosk sealed
  them together), the kiosk's Ed25519 signature of the stored evidence envelope checked again
  against the registry (``--registry``) and "verified" only for this evidence's own envelope, the
  stored payload compared with the decrypted envelope (``--enc-key``), the model versions, and
  what the signature file holds.

This is the only place evidence leaves the database; nothing here is logged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from kiosk import envelope
from kiosk.envelope import EnvelopeError
from kiosk.keys import key_id, raw_public, write_private_file
from kiosk.records import EvidenceRecord, RecordError, decode_payload
from kiosk.topics import TopicError, parse_topic
from tools.central.errors import CentralError
from tools.central.iso19794_7 import from_trajectory
from tools.central.query import iso_time
from tools.central.store import Store, StoredDecision, StoredEvidence
from tools.registry import Registry


class CaseError(CentralError, ValueError):
    """A case cannot be exported (no such decision, no evidence, the directory is in use)."""


@dataclass(frozen=True)
class CaseFiles:
    directory: Path
    signature: Path | None
    decision: Path
    verification: Path


def _signature_check(ev: StoredEvidence, registry: Registry | None,
                     enc_keys: Sequence[X25519PrivateKey] = ()) -> dict[str, Any]:
    """What the stored evidence envelope proves. ``signature`` is "verified" only when the kiosk's
    signature checks *and* the envelope is this evidence's: its digest the stored one, its signed
    kiosk, sequence and topic this evidence's (a review found "verified" beside a digest that did
    not match: any other signed message of the kiosk passed). The stored payload, from which the
    signature file is written, is tied to the envelope only by decrypting it (``enc_keys``, the
    central key); without, ``payload`` says it was not checked."""
    try:
        env = envelope.parse(ev.envelope)
    except EnvelopeError as exc:
        return {"envelope": f"unreadable: {exc}", "signature": f"FAILED: the envelope is unreadable: {exc}"}
    h = env.header
    try:
        topic = parse_topic(h.topic)
        topic_is_ours = topic.kind == "evidence" and topic.kiosk_id == ev.kiosk_id
    except TopicError:
        topic_is_ours = False
    same = {"digest": env.digest == ev.digest, "kiosk_id": h.kiosk_id == ev.kiosk_id, "seq": h.seq == ev.seq,
            "topic": topic_is_ours}
    out: dict[str, Any] = {"envelope_digest_matches": same["digest"], "signed_kiosk_id": h.kiosk_id,
                           "signed_seq": h.seq, "signed_topic": h.topic, "signed_time_ms": h.time_ms,
                           "sign_key_id": h.sign_key_id.hex()}
    out["payload"] = _payload_check(env, ev, enc_keys)
    mismatched = [k for k, ok in same.items() if not ok]
    if mismatched:
        out["signature"] = f"FAILED: the envelope is not this evidence's ({', '.join(mismatched)} differ)"
        return out
    if registry is None:
        out["signature"] = "not checked (give --registry)"
        return out
    entry = registry.kiosks.get(ev.kiosk_id)
    raw = entry.key_ids().get(h.sign_key_id) if entry is not None else None
    if raw is None:
        out["signature"] = "not checked: the key is not registered for this kiosk (any more)"
        return out
    try:
        envelope.verify(env, envelope.verify_public_key(raw))
        out["signature"] = "verified"
    except EnvelopeError as exc:
        out["signature"] = f"FAILED: {exc}"
    return out


def _payload_check(env: envelope.Envelope, ev: StoredEvidence, enc_keys: Sequence[X25519PrivateKey]) -> str:
    if not enc_keys:
        return "not checked (give --enc-key: the stored payload is compared with the decrypted envelope)"
    key = {key_id(raw_public(k)): k for k in enc_keys}.get(env.header.enc_key_id)
    if key is None:
        return f"not checked: encrypted to key {env.header.enc_key_id.hex()}, not one given"
    try:
        sealed = decode_payload(envelope.decrypt(env, key), "evidence", allow_raw_evidence=True)
    except (EnvelopeError, RecordError) as exc:
        return f"FAILED: the envelope does not decrypt to a payload: {exc}"
    if json.dumps(sealed, sort_keys=True) != json.dumps(ev.payload, sort_keys=True):
        return "FAILED: the stored payload differs from the one the kiosk sealed"
    return "matches the sealed envelope"


def _decision_json(d: StoredDecision) -> dict[str, Any]:
    return {"kiosk_id": d.kiosk_id, "site": d.site, "seq": d.seq, "created_ms": d.created_ms,
            "received_ms": d.received_ms, "envelope_digest": d.digest, "record": d.payload}


def export_case(store: Store, kiosk_id: str, decision_seq: int, out_dir: Path, *,
                registry: Registry | None = None, enc_keys: Sequence[X25519PrivateKey] = ()) -> CaseFiles:
    decision, evidence = store.evidence_case(kiosk_id, decision_seq)
    if decision is None:
        raise CaseError(f"no decision {decision_seq} of kiosk {kiosk_id!r} is stored")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CaseError(f"{out_dir} exists and is not empty: give a new directory")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out_dir, 0o700)
    verification: dict[str, Any] = {
        "kiosk_id": kiosk_id, "decision_seq": decision_seq, "decision_envelope_digest": decision.digest,
        "decision_verified_at_collector": True,   # stored only after its signature and payload checks
        # For a reader who does not count epoch milliseconds (the examiner): the kiosk's clock, UTC.
        "decision_time_utc": iso_time(decision.created_ms),
        "model_versions": decision.payload.get("model_versions", {}), "mode": decision.payload.get("mode"),
    }
    signature: Path | None = None
    if evidence is None:
        verification["evidence"] = "none stored (evidence off at the kiosk, refused, or past its retention period)"
    else:
        rec = EvidenceRecord(**{k: v for k, v in evidence.payload.items() if k not in ("type", "schema")})
        verification.update({
            "evidence_seq": evidence.seq, "evidence_envelope_digest": evidence.digest,
            "evidence_created_ms": evidence.created_ms, "evidence_received_ms": evidence.received_ms,
            "evidence_time_utc": iso_time(evidence.created_ms),
            "evidence_names_decision_digest": rec.decision_digest,
            "evidence_bound_to_decision": rec.decision_digest == decision.digest,
            "evidence_envelope": _signature_check(evidence, registry, enc_keys),
        })
        if rec.mode == "online":
            iso = from_trajectory(rec.trajectory())
            signature = out_dir / "signature.iso19794-7"
            write_private_file(signature, iso.data)
            verification["signature_file"] = {"name": signature.name, "sha256": hashlib.sha256(iso.data).hexdigest(),
                                              **iso.summary()}
        else:
            png = rec.png()
            signature = out_dir / "signature.png"
            write_private_file(signature, png)
            verification["signature_file"] = {"name": signature.name, "sha256": hashlib.sha256(png).hexdigest(),
                                              "bytes": len(png), "dpi": rec.image_dpi, "scale": rec.image_scale}
    decision_path = out_dir / "decision.json"
    # Every file 0600 in the 0700 directory: the signature is raw biometric data, the decision
    # names the customer.
    write_private_file(decision_path, (json.dumps(_decision_json(decision), indent=2, sort_keys=True) + "\n").encode())
    verification_path = out_dir / "verification.json"
    write_private_file(verification_path, (json.dumps(verification, indent=2, sort_keys=True) + "\n").encode())
    return CaseFiles(out_dir, signature, decision_path, verification_path)

