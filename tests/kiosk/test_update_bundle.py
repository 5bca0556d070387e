"""Bundles, signatures (k of n), manifests, the slot store and the golden checker - no broker."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from fixtures_update import BUNDLE_NAME, MODELS, UpdatePki, make_bundle, provision

from kiosk.bundle import (
    BundleError,
    BundleFile,
    Manifest,
    Offer,
    TrustPolicy,
    check_manifest,
    split_payload,
    verify_envelope,
)
from kiosk.golden import check_golden, check_golden_isolated
from kiosk.keys import load_public_raw
from kiosk.slots import SlotStore
from tools.bundle import sign_bundle


def _policy(pki: UpdatePki, threshold: int = 1) -> TrustPolicy:
    return TrustPolicy.from_public_keys([load_public_raw(p) for p in pki.admin_pubs()], threshold)


def test_threshold_counts_distinct_trusted_keys(update_pki: UpdatePki) -> None:
    k0, k1, k2 = update_pki.admin_keys
    one = make_bundle(update_pki, 2, sign=[k0])
    with pytest.raises(BundleError) as e:
        verify_envelope(one.envelope, _policy(update_pki, 2))
    assert e.value.reason == "too_few_signatures"
    # The same key's signature twice still counts once.
    doubled = copy.deepcopy(one.envelope)
    doubled["signatures"] = doubled["signatures"] * 2
    with pytest.raises(BundleError, match="too_few_signatures"):
        verify_envelope(doubled, _policy(update_pki, 2))
    # A rogue signature adds nothing; a second admin's does.
    with pytest.raises(BundleError, match="too_few_signatures"):
        verify_envelope(sign_bundle(one, [update_pki.rogue_key]).envelope, _policy(update_pki, 2))
    two = sign_bundle(one, [k2])
    assert verify_envelope(two.envelope, _policy(update_pki, 2))["version"] == 2
    assert len(two.envelope["signatures"]) == 2 and two.payload == one.payload


@pytest.mark.parametrize("case, reason", [
    ("unsigned", "unsigned"), ("rogue", "unknown_key"), ("tampered", "bad_signature"), ("garbage_sig", "bad_signature"),
])
def test_signature_refusals(update_pki: UpdatePki, case: str, reason: str) -> None:
    b = make_bundle(update_pki, 2, sign=[] if case == "unsigned" else [update_pki.rogue_key] if case == "rogue" else None)
    env = copy.deepcopy(b.envelope)
    if case == "tampered":
        env["signed"]["version"] = 99
    if case == "garbage_sig":
        env["signatures"][0]["sig"] = "AAAA"
    with pytest.raises(BundleError) as e:
        verify_envelope(env, _policy(update_pki))
    assert e.value.reason == reason


def test_manifest_checks(update_pki: UpdatePki) -> None:
    m = make_bundle(update_pki, 5, target_groups=["canary"], min_appliance_version="0.2.0").manifest
    kw = dict(expected_name=BUNDLE_NAME, installed_version=4, appliance_version="0.2.0", kiosk_id="k1", group="canary",
              max_bytes=1 << 20)
    check_manifest(m, **kw)  # type: ignore[arg-type]
    for change, reason in [({"installed_version": 5}, "not_newer"), ({"appliance_version": "0.1.9"}, "appliance_too_old"),
                           ({"group": "fleet"}, "wrong_target"), ({"expected_name": "other"}, "wrong_name"),
                           ({"max_bytes": 100}, "too_large"), ({"now": m.expires + 1}, "expired")]:
        with pytest.raises(BundleError) as e:
            check_manifest(m, **{**kw, **change})  # type: ignore[arg-type]
        assert e.value.reason == reason, change


def test_bundle_file_roundtrip_and_tampered_payload(update_pki: UpdatePki, tmp_path: Path) -> None:
    b = make_bundle(update_pki, 3, notes="retrained 2026-11")
    b.write(tmp_path / "x.skb")
    back = BundleFile.read(tmp_path / "x.skb")
    assert back.envelope == b.envelope and back.payload == b.payload
    assert set(split_payload(back.manifest, back.payload)) == {"dense_v1.tflite", "dense_v1.golden.npz"}
    bad = bytearray(b.payload)
    bad[100] ^= 1
    with pytest.raises(BundleError, match="hash_mismatch"):
        split_payload(b.manifest, bytes(bad))
    with pytest.raises(BundleError, match="malformed"):
        BundleFile.from_bytes(b"SKB1\xff\xff\xff\xff{}")


def test_manifest_refuses_path_names(update_pki: UpdatePki) -> None:
    d = make_bundle(update_pki, 2).manifest.to_dict()
    for name in ("../evil.tflite", "a/b.tflite", ".hidden"):
        bad = copy.deepcopy(d)
        bad["files"][0]["name"] = name
        bad["models"][0]["file"] = name
        with pytest.raises(BundleError, match="malformed"):
            Manifest.from_dict(bad)


def test_offer_bounds(update_pki: UpdatePki) -> None:
    b = make_bundle(update_pki, 2)
    offer = Offer.for_payload(b.envelope, b.payload, 1024)
    assert Offer.from_bytes(offer.to_bytes(), 1 << 20).chunks == offer.chunks
    with pytest.raises(BundleError, match="too_large"):
        Offer.from_bytes(offer.to_bytes(), 1000)
    d = json.loads(offer.to_bytes())
    d["chunks"] = d["chunks"][:-1]
    with pytest.raises(BundleError, match="malformed"):
        Offer.from_bytes(json.dumps(d).encode(), 1 << 20)
    # Found by a review: Infinity (which json reads) as a number raised OverflowError, not a refusal.
    for field in ("size", "created_ms", "chunk_size"):
        inf = json.loads(offer.to_bytes())
        inf[field] = float("inf")
        with pytest.raises(BundleError, match="malformed"):
            Offer.from_bytes(json.dumps(inf).encode(), 1 << 20)


def test_golden_checker_uses_the_real_runtime() -> None:
    assert check_golden(MODELS / "dense_v1.tflite", MODELS / "dense_v1.golden.npz").ok
    bad = check_golden(MODELS / "broken.tflite", MODELS / "broken.golden.npz")
    assert not bad.ok and "exceeds" in bad.detail
    assert not check_golden(MODELS / "dense_v2.tflite", MODELS / "dense_v1.golden.npz").ok
    # Loose enough tolerances make the same pair pass: the tolerance is really applied.
    assert check_golden(MODELS / "dense_v2.tflite", MODELS / "dense_v1.golden.npz", atol=10.0).ok
    not_a_model = check_golden(MODELS / "dense_v1.golden.npz", MODELS / "dense_v1.golden.npz")
    assert not not_a_model.ok and "cannot load" in not_a_model.detail
    # The same in a child process, as the update agent runs it: the verdict and its reasons agree.
    assert check_golden_isolated(MODELS / "dense_v1.tflite", MODELS / "dense_v1.golden.npz").ok
    bad = check_golden_isolated(MODELS / "broken.tflite", MODELS / "broken.golden.npz")
    assert not bad.ok and "exceeds" in bad.detail and bad.cases == 4
    assert not check_golden_isolated(MODELS / "dense_v2.tflite", MODELS / "dense_v1.golden.npz").ok
    assert check_golden_isolated(MODELS / "dense_v2.tflite", MODELS / "dense_v1.golden.npz", atol=10.0).ok
    assert "cannot load" in check_golden_isolated(MODELS / "dense_v1.golden.npz", MODELS / "dense_v1.golden.npz").detail
    never = check_golden_isolated(MODELS / "spin.tflite", MODELS / "spin.golden.npz", timeout_s=1.0)
    assert not never.ok and "did not finish in 1 s" in never.detail


def test_slot_switch_keeps_previous_and_counter_survives(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    store = SlotStore(root, BUNDLE_NAME)
    assert store.active().slot == "a" and store.previous() is None and store.installed_version() == 1
    b3 = make_bundle(update_pki, 3, model="dense_v2")
    store.stage(b3.envelope, split_payload(b3.manifest, b3.payload))
    store.switch(store.commit_staged())
    assert (store.active().slot, store.active().version, store.previous().version) == ("b", 3, 1)
    assert os.readlink(root / "current") == "slots/b"
    assert json.loads((root / "COUNTER").read_text()) == {BUNDLE_NAME: 3}
    # Rolling back does not lower the counter: version 3 is burnt.
    store.rollback()
    again = SlotStore(root, BUNDLE_NAME)
    assert again.active().version == 1 and again.previous() is None and again.installed_version() == 3
    assert os.readlink(root / "current") == "slots/a"
    # Wiping and re-installing the slots (a re-flash) does not reset it either.
    for slot in ("a", "b"):
        for f in (root / "slots" / slot).iterdir():
            f.unlink()
    assert SlotStore(root, BUNDLE_NAME).installed_version() == 3


def test_crash_between_switch_and_counter_is_repaired(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 4))
    (root / "COUNTER").write_text("{}")   # as if the power went right after the ACTIVE rename
    store = SlotStore(root, BUNDLE_NAME)
    assert store.installed_version() == 4
    assert json.loads((root / "COUNTER").read_text()) == {BUNDLE_NAME: 4}


def test_threshold_policy_must_be_satisfiable(update_pki: UpdatePki) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        _policy(update_pki, 4)


def test_golden_checker_reads_the_named_layout(tmp_path: Path) -> None:
    """The layout tools/train/convert.py writes for the pen models: inputs by name, ``outputs``."""
    import numpy as np

    with np.load(MODELS / "dense_v1.golden.npz") as g:
        xs, ys = g["input_0"][:, 0], g["output_0"][:, 0]   # drop the batch axis
    np.savez(tmp_path / "named.golden.npz", keras_tensor=xs, outputs=ys, lengths=np.array([16] * len(xs)))
    assert check_golden(MODELS / "dense_v1.tflite", tmp_path / "named.golden.npz").ok
    np.savez(tmp_path / "off.golden.npz", keras_tensor=xs, outputs=ys + 0.01)
    wrong = check_golden(MODELS / "dense_v1.tflite", tmp_path / "off.golden.npz")
    assert not wrong.ok and "exceeds" in wrong.detail
    np.savez(tmp_path / "badname.golden.npz", feats=xs, outputs=ys)
    assert "matches no single model input" in check_golden(MODELS / "dense_v1.tflite", tmp_path / "badname.golden.npz").detail


def test_a_write_cut_before_its_rename_leaves_the_old_pointer_and_no_leftover(update_pki: UpdatePki,
                                                                              tmp_path: Path) -> None:
    """The slot store writes as the template store does (one writer, ``kiosk.templates.atomic_write``):
    a power cut after the new ACTIVE's temporary file and before its rename leaves the old one
    in force, and the next open removes the temporary file; the pointer files are the service's
    alone whatever the umask."""
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    before = (root / "ACTIVE").read_bytes()
    half = root / ".ACTIVE.4242.0a1b2c3d.tmp"   # the name atomic_write gives its temporary file
    half.write_bytes(b'{"slot": "b", "vers')
    store = SlotStore(root, BUNDLE_NAME)
    assert not half.exists() and (root / "ACTIVE").read_bytes() == before
    assert store.active().slot == "a" and store.active().version == 1
    old = os.umask(0o022)
    try:
        b2 = make_bundle(update_pki, 2, model="dense_v2")
        store.stage(b2.envelope, split_payload(b2.manifest, b2.payload))
        store.switch(store.commit_staged())
    finally:
        os.umask(old)
    for name in ("ACTIVE", "COUNTER"):
        assert (root / name).stat().st_mode & 0o777 == 0o600, name
    assert not list(root.glob(".*.tmp"))
