"""Attack 9: payloads that are small on the wire and huge, or deep, once parsed.

* A golden-vector ``.npz`` in a signed bundle: zip members declare their uncompressed size and
  ``.npy`` headers their shape, and ``np.load`` believed both; a 1 MB file of deflated zeros made
  the update agent allocate 1 GB (and 1.1 GB peak) before it ran a single golden case. Malformed
  tolerances (an array for ``atol``, a string, NaN) raised ``TypeError`` out of the checker.
* JSON nested 100 000 deep (100 kB, inside every size limit) raised ``RecursionError`` - not a
  ``ValueError`` - out of the manifest, offer and command parsers.

Each is sent through the real verification (a bundle signed by a trusted admin key installed by
the real update agent, a real offer message, a command signed with the central key) and must be
refused with the module's own error, quickly and with bounded memory.
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kiosk import keys
from kiosk.bundle import BundleError, BundleFile, Manifest, Offer, sign_envelope
from kiosk.commands import DOMAIN, CommandError, CommandVerifier, make_verify_command, verify_topic
from kiosk.golden import MAX_GOLDEN_BYTES, check_golden
from kiosk.jsonbound import JSONBoundsError, json_depth, loads_bounded
from kiosk.topics import KioskTopics
from kiosk.update_agent import UpdateAgent

DEEP = 100_000
MODELS = Path(__file__).resolve().parents[1] / "kiosk" / "update_models"


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.fixture(scope="module")
def npz_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dense_v1's golden file, but ``input_0`` is 1 GiB of float32 zeros: about 1 MB deflated."""
    path = tmp_path_factory.mktemp("bomb") / "dense_v1.golden.npz"
    with np.load(MODELS / "dense_v1.golden.npz") as good, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("input_0.npy", "w", force_zip64=True) as f:
            f.write(_npy_header(((1 << 30) // 4,)))
            zeros = bytes(16 << 20)
            for _ in range(64):
                f.write(zeros)
        for k in ("output_0", "atol", "rtol"):
            buf = io.BytesIO()
            np.save(buf, good[k])
            z.writestr(f"{k}.npy", buf.getvalue())
    assert path.stat().st_size < 2 << 20
    return path


def _peak_reset() -> float | None:
    """Reset this process's peak RSS; the resident MiB at the reset (None where /proc cannot)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def test_a_signed_golden_bomb_is_refused_quickly_in_bounded_memory(update_pki, npz_bomb: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tools.bundle import ModelSpec, create_bundle

    bundle = create_bundle(name="sigkiosk-models", version=2, models=[ModelSpec(MODELS / "dense_v1.tflite", npz_bomb)],
                           sign_keys=[update_pki.admin_keys[0]])
    path = tmp_path / "bomb.skb"
    bundle.write(path)
    assert path.stat().st_size < 2 << 20
    agent = UpdateAgent(update_pki.update_config(tmp_path / "root"), topics=KioskTopics("sig", "branch-1", "solo-1"))
    try:
        base = _peak_reset()
        t0 = time.perf_counter()
        state = agent.install_file(path)
        took = time.perf_counter() - t0
        grew = None if base is None else _status("VmHWM") - base
    finally:
        agent.close()
    assert state == "refused", agent.last_state
    assert agent.last_state["reason"] == "golden_failed" and "declared" in agent.last_state["detail"]
    assert took < 5, took
    if grew is not None:
        assert grew < 64, f"peak grew by {grew:.0f} MiB"
    assert agent.active_model() is None


def _npz(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "g.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _good(**over: np.ndarray) -> dict[str, np.ndarray]:
    with np.load(MODELS / "dense_v1.golden.npz") as g:
        d = {k: g[k] for k in g.files}
    d.update(over)
    return d


def test_the_shipped_golden_file_still_passes(tmp_path: Path) -> None:
    res = check_golden(MODELS / "dense_v1.tflite", _npz(tmp_path, _good()))
    assert res.ok and res.cases == 4, res


@pytest.mark.parametrize("atol,reason", [
    (np.array([1e-3, 1e-3], np.float32), "atol must be one number"),
    (np.array("1e-3"), "numbers only"),
    (np.array(np.nan, np.float32), "finite"),
    (np.array(np.inf, np.float64), "finite"),
    (np.array(-1.0), "finite number >= 0"),
], ids=["array", "string", "nan", "inf", "negative"])
def test_malformed_golden_tolerances_are_a_clean_failure(tmp_path: Path, atol: np.ndarray, reason: str) -> None:
    res = check_golden(MODELS / "dense_v1.tflite", _npz(tmp_path, _good(atol=atol)))   # no TypeError
    assert not res.ok and reason in res.detail, res


@pytest.mark.parametrize("value", ["1e-3", [1e-3], float("nan"), float("inf"), -1.0, True, 10**400])
def test_malformed_manifest_tolerances_are_malformed(value: object) -> None:
    d = {"type": "sigkiosk-model-bundle", "format": 1, "name": "sigkiosk-models", "version": 2, "created": 1, "expires": 2,
         "files": [{"name": "m.tflite", "size": 1, "sha256": "a" * 64}, {"name": "g.npz", "size": 1, "sha256": "b" * 64}],
         "models": [{"file": "m.tflite", "golden": "g.npz", "atol": value}]}
    with pytest.raises(BundleError, match="malformed"):
        Manifest.from_dict(d)


def _zip_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "g.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_golden_files_with_lying_or_unusable_members_are_refused(tmp_path: Path) -> None:
    model = MODELS / "dense_v1.tflite"
    cases = {
        # The header claims 1 GiB, the member holds 16 bytes of it.
        "header larger than the data": {"input_0.npy": _npy_header(((1 << 30) // 4,)) + bytes(16)},
        "object array": {"input_0.npy": _npy_header((1,), "|O") + bytes(8)},
        "not an array": {"input_0.npy": b"hello"},
        "path in a name": {"../input_0.npy": _npy_header((1,)) + bytes(4)},
        "too many arrays": {f"a{i}.npy": _npy_header((1,)) + bytes(4) for i in range(40)},
        "no case axis": {"input_0.npy": _npy_header(()) + bytes(4), "output_0.npy": _npy_header(()) + bytes(4)},
    }
    for what, members in cases.items():
        res = check_golden(model, _zip_with(tmp_path, members))
        assert not res.ok and res.detail.startswith("golden file refused"), (what, res)
    (tmp_path / "big.npz").write_bytes(b"PK" + bytes(MAX_GOLDEN_BYTES))
    assert "golden file refused" in check_golden(model, tmp_path / "big.npz").detail


# -- JSON depth -----------------------------------------------------------------------------------

def _deep(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def test_a_bundle_file_with_a_100000_deep_manifest_is_refused(update_pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = '{"signed":{"type":"sigkiosk-model-bundle","notes":' + _deep() + '},"signatures":[]}'
    data = b"SKB1" + len(env).to_bytes(4, "big") + env.encode()
    with pytest.raises(BundleError, match="deeper than"):
        BundleFile.from_bytes(data)
    path = tmp_path / "deep.skb"
    path.write_bytes(data)
    agent = UpdateAgent(update_pki.update_config(tmp_path / "root"), topics=KioskTopics("sig", "branch-1", "solo-1"))
    try:
        with pytest.raises(BundleError, match="malformed"):   # the real install entry point: a clean refusal
            agent.install_file(path)
    finally:
        agent.close()


def test_an_offer_with_a_100000_deep_manifest_is_refused_and_reported(update_pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    offer = ('{"type":"sigkiosk-model-offer","format":1,"bundle_id":"' + "a" * 64 + '","size":1,"chunk_size":1024,'
             '"chunks":["' + "b" * 64 + '"],"manifest":{"signed":' + _deep() + '}}').encode()
    with pytest.raises(BundleError, match="deeper than"):
        Offer.from_bytes(offer, 1 << 20)
    agent = UpdateAgent(update_pki.update_config(tmp_path / "root"), topics=KioskTopics("sig", "branch-1", "solo-1"))
    try:
        agent._handle("sig/v1/branch-1/solo-1/model/offer", offer)   # what the agent's thread does with a message
        assert agent.last_state["state"] == "refused" and agent.last_state["reason"] == "malformed"
    finally:
        agent.close()


def test_a_signed_offer_still_verifies(update_pki) -> None:  # type: ignore[no-untyped-def]
    from fixtures_update import make_bundle

    b = make_bundle(update_pki, 3)
    offer = Offer.for_payload(b.envelope, b.payload)
    assert Offer.from_bytes(offer.to_bytes(), 1 << 20).bundle_id == offer.bundle_id


def test_deep_commands_are_refused_not_crashed(tmp_path: Path) -> None:
    priv = tmp_path / "central-sign.key"
    keys.generate_signing_key(priv)
    key = keys.load_signing_key(priv)
    topics = KioskTopics("sig", "site1", "kiosk-a")
    topic = verify_topic(topics)
    v = CommandVerifier(key.public_key(), "kiosk-a", topics, tmp_path / "seen.json")
    assert v.check(topic, make_verify_command(key, topic, "kiosk-a", "alice", "r1")).customer == "alice"
    # Unsigned and deep, inside the 4 kB limit: refused before the signature is even looked at.
    with pytest.raises(CommandError) as exc:
        v.check(topic, _deep(2000).encode())
    assert exc.value.reason == "malformed"
    with pytest.raises(CommandError) as exc:
        v.check(topic, _deep().encode())
    assert exc.value.reason == "oversized"
    # Signed by the central key, but the body is 1100 deep (still inside 4 kB once base64).
    body = ('{"v":1,"type":"verify","kiosk":"kiosk-a","request_id":"r2","customer":"alice","x":' + _deep(1100) + "}").encode()
    payload = json.dumps({"body": base64.b64encode(body).decode(),
                          "sig": base64.b64encode(key.sign(DOMAIN + topic.encode() + b"\0" + body)).decode()}).encode()
    with pytest.raises(CommandError) as exc:
        v.check(topic, payload)
    assert exc.value.reason == "malformed"


def test_a_deep_signed_envelope_is_refused_by_the_parser_not_by_the_signer(update_pki) -> None:  # type: ignore[no-untyped-def]
    """900 levels parse under the interpreter's limit but the signature check (canonical JSON)
    then recursed again: the bound stops it at the parser, whoever signed it."""
    env = sign_envelope({"type": "x", "notes": json.loads(_deep(40))}, [keys.load_signing_key(update_pki.admin_keys[0])])
    data = json.dumps(env).encode()
    with pytest.raises(BundleError, match="deeper than"):
        BundleFile.from_bytes(b"SKB1" + len(data).to_bytes(4, "big") + data)


def test_the_depth_scan_is_linear_and_ignores_strings() -> None:
    assert json_depth('{"a": "[[[[{{{{", "b": [[1]]}') == 3
    assert loads_bounded(b'{"a": "[[[[", "b": [[1]]}', max_bytes=100) == {"a": "[[[[", "b": [[1]]}
    t0 = time.perf_counter()
    for doc in ('"\\"' * 100_000, '"' + "\\" * 200_000, '{"a":' * 100_000, "[" * 200_000):
        with pytest.raises(JSONBoundsError):
            loads_bounded(doc, max_bytes=1 << 20)
    assert time.perf_counter() - t0 < 2
    with pytest.raises(JSONBoundsError, match="exceeds"):
        loads_bounded(b"[]" + b" " * 100, max_bytes=100)
