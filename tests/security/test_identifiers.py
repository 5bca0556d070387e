"""Attack 8: an identifier with a trailing newline (or a look-alike character) slips through.

Identifier patterns were checked with ``re.match`` and ``^...$``; ``$`` also matches just before
a final newline, so "alice\\n" was a valid customer, "kiosk-1\\n" a valid kiosk id and
"dense_v1.tflite\\n" a valid file name in a signed bundle (written into the slot as such). Every
validator now matches the whole string (``fullmatch``) with ASCII-only classes; each is fed the
usual tricks here, and two attacks go through the real entry points: a signed command and the
daemon's request API with customer "alice\\n", and a signed bundle whose file name ends in "\\n".
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from kiosk import keys
from kiosk.bundle import BundleError, BundleFile, Manifest, Offer, parse_version, sign_envelope
from kiosk.commands import DOMAIN, CommandError, CommandVerifier, make_verify_command, verify_topic
from kiosk.templates import validate_customer
from kiosk.topics import KioskTopics, TopicError, parse_topic, validate_id
from kiosk.update_agent import UpdateAgent
from tools import pki

#: Appended to (or swapped into) a good identifier: each must make it invalid.
TRICKS = ("\n", "\r", "\x00", "\r\n", " ", "\t")
#: Unicode look-alikes of ASCII letters and digits (Cyrillic a, fullwidth 1, Kelvin sign, Arabic-Indic 3, superscript 2).
LOOKALIKES = ("\u0430", "\uff11", "\u212a", "\u0663", "\u00b2")


def _variants(good: str) -> list[str]:
    out = [good + t for t in TRICKS] + [t + good for t in TRICKS]
    out += [good[:-1] + c for c in LOOKALIKES] + [c + good[1:] for c in LOOKALIKES]
    return out


@pytest.mark.parametrize("bad", _variants("kiosk-1"))
def test_topic_ids_are_matched_whole(bad: str) -> None:
    assert validate_id("kiosk-1") == "kiosk-1"
    with pytest.raises(TopicError):
        validate_id(bad)
    with pytest.raises(TopicError):
        KioskTopics("sig", "branch-1", bad)


def test_a_topic_part_with_a_newline_is_refused() -> None:
    assert parse_topic("sig/v1/branch-1/kiosk-1/decision").kiosk_id == "kiosk-1"
    with pytest.raises(TopicError):
        parse_topic("sig/v1/branch-1/kiosk-1\n/decision")


@pytest.mark.parametrize("bad", _variants("alice"))
def test_customer_references_are_matched_whole(bad: str) -> None:
    assert validate_customer("alice") == "alice"
    with pytest.raises(ValueError):
        validate_customer(bad)


@pytest.mark.parametrize("bad", _variants("alice"))
def test_operator_names_are_matched_whole(bad: str, tmp_path: Path) -> None:
    """The staff operators' (and the central web page's users') names: the one validator a review
    found still on ``^...$`` (2026-11-29): "alice\\n" could be stored, log in and reach the audit."""
    from kiosk.staff import OperatorEntryInvalid, OperatorStore, validate_operator

    assert validate_operator("alice") == "alice"
    with pytest.raises(OperatorEntryInvalid):
        validate_operator(bad)
    store = OperatorStore(tmp_path / "operators.json")
    with pytest.raises(OperatorEntryInvalid):
        store.set(bad, "246810")


@pytest.mark.parametrize("bad", _variants("ops"))
def test_service_names_in_certificates_are_matched_whole(bad: str) -> None:
    assert pki.identity("admin", "ops") == "admin.ops"
    with pytest.raises((pki.PkiError, TopicError)):
        pki.identity("admin", bad)
    with pytest.raises((pki.PkiError, TopicError)):
        pki.identity("kiosk", bad)


def _manifest_dict(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "type": "sigkiosk-model-bundle", "format": 1, "name": "sigkiosk-models", "version": 2, "created": 1, "expires": 2,
        "files": [{"name": "m.tflite", "size": 1, "sha256": "a" * 64}, {"name": "m.golden.npz", "size": 1, "sha256": "b" * 64}],
        "models": [{"file": "m.tflite", "golden": "m.golden.npz"}], "min_appliance_version": "1.2.3",
    }
    d.update(over)
    return d


def test_a_good_manifest_parses() -> None:
    assert Manifest.from_dict(_manifest_dict()).files[0].name == "m.tflite"


@pytest.mark.parametrize("bad", _variants("m.tflite"))
def test_bundle_file_names_are_matched_whole(bad: str) -> None:
    d = _manifest_dict(files=[{"name": bad, "size": 1, "sha256": "a" * 64}, {"name": "m.golden.npz", "size": 1, "sha256": "b" * 64}],
                       models=[{"file": bad, "golden": "m.golden.npz"}])
    with pytest.raises(BundleError, match="malformed"):
        Manifest.from_dict(d)


@pytest.mark.parametrize("bad", _variants("sigkiosk-models"))
def test_bundle_names_are_matched_whole(bad: str) -> None:
    with pytest.raises(BundleError, match="malformed"):
        Manifest.from_dict(_manifest_dict(name=bad))


@pytest.mark.parametrize("bad", ["a" * 64 + "\n", "a" * 63 + "\u0663", "A" * 64, "a" * 64 + "\x00"])
def test_sha256_fields_are_matched_whole(bad: str) -> None:
    with pytest.raises(BundleError, match="malformed"):
        Manifest.from_dict(_manifest_dict(files=[{"name": "m.tflite", "size": 1, "sha256": bad},
                                                 {"name": "m.golden.npz", "size": 1, "sha256": "b" * 64}]))
    offer = {"type": "sigkiosk-model-offer", "format": 1, "bundle_id": bad, "size": 10, "chunk_size": 1024,
             "chunks": ["c" * 64], "manifest": {"signed": {}, "signatures": []}}
    with pytest.raises(BundleError, match="SHA-256"):
        Offer.from_bytes(json.dumps(offer).encode(), 1 << 20)


@pytest.mark.parametrize("bad", ["1.2.3\n", "\u0661.\u0662.\u0663", "1.2.3\x00", "\uff11.2.3", "1." + "9" * 5000])
def test_appliance_versions_are_ascii_digits(bad: str) -> None:
    assert parse_version("1.2.3") == (1, 2, 3)
    with pytest.raises(BundleError, match="malformed"):
        parse_version(bad)


# -- through the real entry points ----------------------------------------------------------------

def test_a_signed_command_for_customer_alice_newline_is_refused(tmp_path: Path) -> None:
    """The central server's verification request, signed with its real key: the signature is
    valid, the customer field is not."""
    priv = tmp_path / "central-sign.key"
    keys.generate_signing_key(priv)
    key = keys.load_signing_key(priv)
    topics = KioskTopics("sig", "site1", "kiosk-a")
    topic = verify_topic(topics)
    v = CommandVerifier(key.public_key(), "kiosk-a", topics, tmp_path / "seen.json")
    assert v.check(topic, make_verify_command(key, topic, "kiosk-a", "alice", "r1")).customer == "alice"
    for i, bad in enumerate(("alice\n", "alice\r", "alice\x00", "\u0430lice")):
        with pytest.raises(CommandError) as exc:
            v.check(topic, make_verify_command(key, topic, "kiosk-a", bad, f"r{i + 2}"))
        assert exc.value.reason == "malformed"
    # The request id becomes the decision's session id: matched whole as well.
    now = int(time.time() * 1000)
    body = json.dumps({"v": 1, "type": "verify", "kiosk": "kiosk-a", "request_id": "r9\n", "customer": "alice",
                       "issued_ms": now, "expires_ms": now + 60_000}).encode()
    payload = json.dumps({"body": base64.b64encode(body).decode(),
                          "sig": base64.b64encode(key.sign(DOMAIN + topic.encode() + b"\0" + body)).decode()}).encode()
    with pytest.raises(CommandError, match="request id"):
        v.check(topic, payload)


def test_the_daemon_refuses_customer_alice_newline(tmp_path: Path) -> None:
    from daemon_helpers import write_config

    from kiosk.config import load_config
    from kiosk.daemon import Daemon
    from kiosk.errors import RequestRefused

    daemon = Daemon(load_config(write_config(tmp_path)))
    for bad in ("alice\n", "alice\r\n", "alice\x00"):
        with pytest.raises(RequestRefused, match="customer reference"):
            daemon.submit("verify", bad)


def test_a_signed_bundle_with_a_file_name_ending_in_newline_is_refused(update_pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A bundle signed by a trusted admin key whose model file is "dense_v1.tflite\\n": before,
    it installed, and the slot held a file whose name ends in a newline."""
    from fixtures_update import make_bundle

    good = make_bundle(update_pki, 2)
    signed = json.loads(json.dumps(good.envelope["signed"]))
    for f in signed["files"]:
        if f["name"].endswith(".tflite"):
            f["name"] += "\n"
    signed["models"][0]["file"] += "\n"
    env = sign_envelope(signed, [keys.load_signing_key(update_pki.admin_keys[0])])
    path = tmp_path / "newline.skb"
    BundleFile(env, good.payload).write(path)
    agent = UpdateAgent(update_pki.update_config(tmp_path / "root"), topics=KioskTopics("sig", "branch-1", "solo-1"))
    try:
        assert agent.install_file(path) == "refused"
        assert agent.last_state["reason"] == "malformed" and "is not allowed" in agent.last_state["detail"]
        assert not any("\n" in p.name for p in (tmp_path / "root").rglob("*"))
    finally:
        agent.close()


def test_a_chunk_index_in_unicode_digits_is_ignored(update_pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """"²".isdigit() is true and int("²") raises: the handler must skip the topic, not crash."""
    agent = UpdateAgent(update_pki.update_config(tmp_path / "root"), topics=KioskTopics("sig", "branch-1", "solo-1"))
    try:
        agent._handle("sig/v1/branch-1/solo-1/model/chunk/0123456789abcdef/\u00b2", b"data")   # no exception
    finally:
        agent.close()
