"""Evidence at the central side, on SQLite and the real PostgreSQL: stored only beside its own
decision (hostile cases refused and archived), kept out of queries, purged after the retention
period (decisions kept), and exported for one case: the ISO/IEC 19794-7 record read back field by
field with an independent reader (tests/iso19794_7_reader.py), or the PNG, with the decision and
its verification. Every message is really sealed and goes through the collector's checks."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from iso19794_7_reader import read as read_iso

from kiosk import envelope
from kiosk.evidence import build
from kiosk.keys import key_id, raw_public
from kiosk.records import DecisionRecord, EvidenceRecord, encode_payload
from models.image import SignatureImage
from models.trajectory import DeviceInfo, Trajectory
from tools.central.collector import Processor, _Incoming
from tools.central.query import iso_time
from tools.central.store import Accepted, Store, open_store
from tools.commands import central_cmd
from tools.registry import KioskEntry, Registry
from tools.synth import make_population

DAY_MS = 86_400_000


class Fleet:
    """Two registered kiosks sealing real envelopes to one central key, and the collector's checks."""

    def __init__(self) -> None:
        self.central = X25519PrivateKey.generate()
        self.keys = {k: Ed25519PrivateKey.generate() for k in ("kiosk-a", "kiosk-b")}
        self.registry = Registry()
        for kid, sk in self.keys.items():
            self.registry.add(KioskEntry(kid, "site1", None, (raw_public(sk),)))
        self.processor = Processor(self.registry, [self.central], max_age_s=400 * 86400)
        self.seq = 1_000

    def seal(self, kind: str, payload: dict[str, Any], *, kiosk: str = "kiosk-a", seq: int | None = None,
             time_ms: int | None = None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        topic = f"sig/v1/site1/{kiosk}/{kind}"
        sk = self.keys[kiosk]
        return envelope.seal(encode_payload(payload), kiosk_id=kiosk, seq=seq,
                             time_ms=int(time.time() * 1000) if time_ms is None else time_ms, topic=topic,
                             signing_key=sk, recipient=self.central.public_key(), sign_key_id=key_id(raw_public(sk)))

    def accept(self, kind: str, data: bytes, kiosk: str = "kiosk-a") -> Accepted:
        got = self.processor.process(_Incoming(f"sig/v1/site1/{kiosk}/{kind}", data, 1, 1, False, int(time.time() * 1000)))
        assert isinstance(got, Accepted), got
        return got

    def decision(self, session: str, mode: str = "online", **kw: Any) -> tuple[Accepted, int, str]:
        data = self.seal("decision", DecisionRecord("SUSPICIOUS", 0.31, ("rhythm",), {"pen-classic": "1.4.0"},
                                                    session_id=session, subject="cust-9", mode=mode).to_payload(), **kw)
        acc = self.accept("decision", data, kw.get("kiosk", "kiosk-a"))
        return acc, acc.seq, acc.digest


def _tablet() -> Trajectory:
    rng = np.random.default_rng(8)
    n = 500
    x = np.cumsum(rng.integers(-60, 61, n)) + 30_000
    y = np.cumsum(rng.integers(-40, 41, n)) + 20_000
    p = np.where(np.arange(n) % 120 < 100, rng.integers(1, 8192, n), 0)
    t = np.cumsum(rng.integers(4500, 5500, n)) / 1e6
    return Trajectory.from_samples(x, y, p, t=t - t[0], device=DeviceInfo("tablet", "device", 200.0, 8191, 200.0))


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    central_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["central", *argv])
    return int(args.func(args))


def _stored(store: Store, fleet: Fleet, traj: Trajectory, session: str) -> tuple[int, int]:
    dec, dseq, digest = fleet.decision(session)
    ev = fleet.accept("evidence", fleet.seal("evidence", build(traj, decision_seq=dseq, decision_digest=digest,
                                                               session_id=session).to_payload()))
    assert store.store([dec, ev]) == ["stored", "stored"]   # one batch: the decision first
    return dseq, ev.seq


def _stored_case(db_url: str, tmp_path: Path, session: str) -> tuple[Fleet, int, int, Path]:
    """One pen decision and its evidence stored in ``db_url``, and the fleet's registry saved:
    (fleet, decision seq, evidence seq, registry file)."""
    fleet = Fleet()
    store = open_store(db_url, create=True)
    try:
        dseq, eseq = _stored(store, fleet, _tablet(), session)
    finally:
        store.close()
    reg = tmp_path / "registry.json"
    fleet.registry.save(reg)
    return fleet, dseq, eseq, reg


def test_evidence_is_stored_only_beside_its_own_decision(db_url: str) -> None:
    fleet = Fleet()
    store = open_store(db_url, create=True)
    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=2)["001"][0][0]
    try:
        dseq, eseq = _stored(store, fleet, traj, "sess-1")
        ev_payload = build(traj, decision_seq=dseq, decision_digest=_digest(store, dseq), session_id="sess-1")
        other, oseq, odigest = fleet.decision("sess-2")
        store.store([other])
        b_dec, bseq, bdigest = fleet.decision("sess-b", kiosk="kiosk-b")
        store.store([b_dec])

        def evidence(kiosk: str = "kiosk-a", seq: int | None = None, **kw: Any) -> Accepted:
            fields = {"decision_seq": oseq, "decision_digest": odigest, "session_id": "sess-2", **kw}
            rec = build(traj, **fields)  # type: ignore[arg-type]
            return fleet.accept("evidence", fleet.seal("evidence", rec.to_payload(), kiosk=kiosk, seq=seq), kiosk)

        hostile = [
            evidence(decision_seq=999_999),                            # no such decision
            evidence(decision_digest="0" * 64),                        # not that decision's envelope
            evidence(session_id="sess-1"),                             # another session's decision
            evidence("kiosk-a", decision_seq=bseq, decision_digest=bdigest, session_id="sess-b"),  # kiosk A claims B's
            fleet.accept("evidence", fleet.seal("evidence", ev_payload.to_payload())),   # a second one for dseq
        ]
        assert store.store(hostile) == ["unknown_decision"] * 3 + ["unknown_decision", "evidence_exists"]
        paper = fleet.accept("evidence", fleet.seal("evidence", build(
            SignatureImage(np.full((60, 200), 210, np.uint8)), decision_seq=oseq, decision_digest=odigest,
            session_id="sess-2").to_payload()))
        assert store.store([paper]) == ["unknown_decision"]      # paper evidence for a pen decision
        # Redelivery and replay of the stored evidence's sequence number.
        same = fleet.accept("evidence", fleet.seal("evidence", build(traj, decision_seq=dseq, decision_digest=_digest(
            store, dseq), session_id="sess-1").to_payload(), seq=eseq))
        assert store.store([same]) == ["replay"]                  # new ephemeral key: different bytes, same seq
        good = evidence()
        assert store.store([good, good]) == ["stored", "duplicate"]
        assert store.count("evidence") == 2
        counts = store.refusal_counts()
        assert counts["unknown_decision"] == 5 and counts["evidence_exists"] == 1 and counts["replay"] == 1
        assert store.count("rejected") == 7        # archived whole (encrypted), duplicates only counted
        # The decision queries never carry evidence.
        for d in store.query_decisions():
            assert set(d.payload) & {"x", "y", "t", "pressure", "image_png", "evidence"} == set()
    finally:
        store.close()


def _digest(store: Store, seq: int) -> str:
    decision, _ = store.evidence_case("kiosk-a", seq)
    assert decision is not None and decision.digest is not None
    return decision.digest


def test_evidence_is_purged_after_retention_and_decisions_stay(db_url: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fleet = Fleet()
    store = open_store(db_url, create=True)
    now = int(time.time() * 1000)
    traj = make_population(n_writers=1, n_genuine=1, n_forgeries=0, seed=4)["001"][0][0]
    try:
        ages = {"old": 40, "older": 200, "new": 5}
        seqs = {}
        for name, days in ages.items():
            t = now - days * DAY_MS
            dec, dseq, digest = fleet.decision(name, time_ms=t)
            ev = fleet.accept("evidence", fleet.seal("evidence", build(traj, decision_seq=dseq, decision_digest=digest,
                                                                       session_id=name).to_payload(), time_ms=t))
            assert store.store([dec, ev]) == ["stored", "stored"]
            seqs[name] = dseq
        refused = fleet.accept("evidence", fleet.seal("evidence", build(traj, decision_seq=1, decision_digest="1" * 64,
                                                                        session_id="x").to_payload()))
        store.store([refused])
        assert store.count("rejected") == 1
        assert store.purge_evidence(now - 30 * DAY_MS) == 2     # "old" and "older"; the refusal is newer
        assert store.evidence_case("kiosk-a", seqs["old"])[1] is None
        assert store.evidence_case("kiosk-a", seqs["older"])[1] is None
        assert store.evidence_case("kiosk-a", seqs["new"])[1] is not None
        assert store.count("decisions") == 3 and store.count("rejected") == 1
        assert store.purge_evidence(now + DAY_MS) == 2           # everything past: "new" and the archived refusal
        assert store.count("evidence") == 0 and store.count("rejected") == 0 and store.count("decisions") == 3
    finally:
        store.close()
    if db_url.startswith("postgres"):
        return
    # The command: the retention in days; a mistyped database is refused, not created.
    assert _cli("purge", "--db", db_url, "--evidence-retention-days", "30") == 0
    assert "purged 0 evidence row(s) older than 30 days" in capsys.readouterr().out
    missing = tmp_path / "no-such.sqlite"
    assert _cli("purge", "--db", str(missing)) == 2
    assert "no database at" in capsys.readouterr().err and not missing.exists()
    with pytest.raises(SystemExit):
        _cli("purge", "--db", db_url, "--evidence-retention-days", "0")


def _check_iso_against(data: bytes, traj: Trajectory) -> dict[str, Any]:
    """The record read back, field by field, against what the kiosk captured."""
    rec = read_iso(data)
    assert rec.format_id == b"SDI\x00" and rec.version == b" 10\x00"
    names = [c.name for c in rec.channels]
    assert names == ["x", "y", "t", "f", "s"]
    assert rec.inclusion == 0x8000 | 0x4000 | 0x0100 | 0x0040 | 0x0020     # x y t f s
    assert rec.body_flags == 0 and rec.extended == b"" and rec.count == len(traj)
    ch = {c.name: c for c in rec.channels}
    assert [ch[n].preamble for n in names] == [0x80, 0x80, 0x80, 0x60, 0x00]
    xy = traj.xy_mm()
    assert xy is not None
    for i, name in enumerate(("x", "y")):
        scale = ch[name].scaling
        assert scale is not None and scale <= 200.0                    # at most the device's resolution
        assert 32767 / np.abs(xy[:, i]).max() >= scale * 0.99          # the largest scale that fits
        mm = np.array(rec.samples[name]) / scale
        assert np.max(np.abs(mm - xy[:, i])) <= 0.5 / scale + 1e-9
    tscale = ch["t"].scaling
    assert tscale == 1000.0                                            # milliseconds, exactly representable
    assert np.max(np.abs(np.array(rec.samples["t"]) / tscale - (traj.t - traj.t[0]))) <= 0.5 / tscale + 1e-9
    levels = traj.device.pressure_levels
    assert (ch["f"].minimum, ch["f"].maximum) == (0, levels)
    assert np.max(np.abs(np.array(rec.samples["f"]) - traj.pressure * levels)) <= 0.5 + 1e-9
    assert rec.samples["s"] == traj.pen_down.astype(int).tolist()
    return {"x_scale": ch["x"].scaling}


def test_export_case_pen_writes_iso_19794_7_decision_and_verification(db_url: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _fleet, dseq, eseq, reg = _stored_case(db_url, tmp_path, "sess-pen")
    traj = _tablet()
    out = tmp_path / "case"
    assert _cli("export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", str(dseq), "--out", str(out),
                "--registry", str(reg)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["decision.json", "signature.iso19794-7", "verification.json"]
    assert out.stat().st_mode & 0o777 == 0o700
    # Raw biometric data and the customer's reference: no file of the case is readable by others.
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "decision.json": 0o600, "signature.iso19794-7": 0o600, "verification.json": 0o600}
    _check_iso_against((out / "signature.iso19794-7").read_bytes(), traj)
    decision = json.loads((out / "decision.json").read_text())
    assert decision["record"]["session_id"] == "sess-pen" and decision["record"]["decision"] == "SUSPICIOUS"
    v = json.loads((out / "verification.json").read_text())
    assert v["evidence_bound_to_decision"] is True and v["evidence_seq"] == eseq
    assert v["decision_time_utc"] == iso_time(decision["created_ms"]) and v["evidence_time_utc"].endswith("Z")
    assert v["decision_envelope_digest"] == decision["envelope_digest"] == v["evidence_names_decision_digest"]
    assert v["evidence_envelope"]["signature"] == "verified" and v["evidence_envelope"]["envelope_digest_matches"]
    assert v["model_versions"] == {"pen-classic": "1.4.0"}
    assert v["signature_file"]["points"] == len(traj) and v["signature_file"]["version"] == " 10"
    # A key the registry no longer has for the kiosk: said, not passed off as verified.
    other = Registry()
    other.add(KioskEntry("kiosk-a", "site1", None, (raw_public(Ed25519PrivateKey.generate()),)))
    other.save(reg)
    out2 = tmp_path / "case2"
    assert _cli("export-case", "--db", db_url, "--session", "sess-pen", "--out", str(out2), "--registry", str(reg)) == 0
    assert "not registered" in json.loads((out2 / "verification.json").read_text())["evidence_envelope"]["signature"]
    # An existing, non-empty directory is never written into; an unknown decision is an error.
    capsys.readouterr()
    assert _cli("export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", str(dseq), "--out", str(out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert _cli("export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", "12345", "--out",
                str(tmp_path / "c3")) == 2
    assert "no decision 12345" in capsys.readouterr().err


def test_export_case_says_verified_only_for_this_evidences_own_sealed_envelope(db_url: str, tmp_path: Path) -> None:
    """Found by a review: with write access to the database, an evidence row's envelope swapped for
    another signed message of the kiosk (its decision's) still exported as "verified" (beside a
    digest that did not match), and a forged stored payload exported as verified too. Now the
    signed kiosk, sequence, topic and digest must be this evidence's, and --enc-key compares the
    stored payload with the one the kiosk sealed."""
    import sqlite3

    fleet, dseq, eseq, reg = _stored_case(db_url, tmp_path, "sess-swap")
    from cryptography.hazmat.primitives import serialization

    from kiosk.keys import write_private_file

    key_file = tmp_path / "central.key"   # the central server's key, as `sigkiosk admin gen-keys` writes it
    write_private_file(key_file, fleet.central.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))

    def verification(name: str, *extra: str) -> dict[str, Any]:
        out = tmp_path / name
        assert _cli("export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", str(dseq), "--out", str(out),
                    "--registry", str(reg), *extra) == 0
        return json.loads((out / "verification.json").read_text())["evidence_envelope"]  # type: ignore[no-any-return]

    honest = verification("honest", "--enc-key", str(key_file))
    assert honest["signature"] == "verified" and honest["payload"] == "matches the sealed envelope"
    assert verification("no-key")["payload"].startswith("not checked")

    def tamper(sql: str, *args: Any) -> None:
        if db_url.startswith("postgres"):
            import psycopg

            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), args)
        else:
            with sqlite3.connect(db_url) as conn:
                conn.execute(sql, args)

    # The stored payload forged (fewer points): the kiosk's signature still checks, the payload not.
    store = open_store(db_url)
    try:
        payload = store.evidence_case("kiosk-a", dseq)[1].payload   # type: ignore[union-attr]
    finally:
        store.close()
    n = len(payload["x"])
    forged = {k: v[:-5] if isinstance(v, list) and len(v) == n else v for k, v in payload.items()}
    tamper("UPDATE evidence SET payload = ? WHERE kiosk_id = ? AND seq = ?", json.dumps(forged, sort_keys=True),
           "kiosk-a", eseq)
    assert verification("forged", "--enc-key", str(key_file))["payload"].startswith("FAILED")
    # The envelope swapped for another signed message of the same kiosk: not "verified".
    decision_envelope = fleet.seal("decision", DecisionRecord("APPROVED", 0.9).to_payload())
    tamper("UPDATE evidence SET envelope = ? WHERE kiosk_id = ? AND seq = ?", decision_envelope, "kiosk-a", eseq)
    swapped = verification("swapped")
    assert swapped["signature"].startswith("FAILED: the envelope is not this evidence's"), swapped


def test_export_case_paper_writes_the_png(db_url: str, tmp_path: Path) -> None:
    fleet = Fleet()
    store = open_store(db_url, create=True)
    px = np.random.default_rng(3).integers(150, 256, (120, 380), dtype=np.uint8)
    try:
        dec, dseq, digest = fleet.decision("sess-paper", mode="offline")
        rec = build(SignatureImage(px, dpi=200.0), decision_seq=dseq, decision_digest=digest, session_id="sess-paper")
        ev = fleet.accept("evidence", fleet.seal("evidence", rec.to_payload()))
        assert store.store([dec, ev]) == ["stored", "stored"]
    finally:
        store.close()
    out = tmp_path / "case"
    assert _cli("export-case", "--db", db_url, "--kiosk", "kiosk-a", "--seq", str(dseq), "--out", str(out)) == 0
    import cv2

    png = (out / "signature.png").read_bytes()
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), px)
    v = json.loads((out / "verification.json").read_text())
    assert v["signature_file"]["dpi"] == 200.0 and v["evidence_envelope"]["signature"].startswith("not checked")
    assert EvidenceRecord  # the one record type the export reads back
