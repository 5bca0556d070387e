"""The envelope format: round trip, every tampering detected, structure checks, compression bounds."""

from __future__ import annotations

import struct
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from kiosk import envelope
from kiosk.envelope import EnvelopeError
from kiosk.keys import key_id, raw_public

TOPIC = "sig/v1/site1/kiosk-a/decision"


@pytest.fixture(scope="module")
def keys() -> tuple[Ed25519PrivateKey, X25519PrivateKey]:
    return Ed25519PrivateKey.generate(), X25519PrivateKey.generate()


def _seal(keys, plaintext: bytes = b'{"type":"decision"}', **kw) -> bytes:  # type: ignore[no-untyped-def]
    sk, central = keys
    args = dict(kiosk_id="kiosk-a", seq=42, time_ms=1_700_000_000_000, topic=TOPIC, signing_key=sk,
                recipient=central.public_key())
    args.update(kw)
    return envelope.seal(plaintext, **args)


def _open(keys, data: bytes, **kw) -> bytes:  # type: ignore[no-untyped-def]
    sk, central = keys
    env = envelope.parse(data, **kw)
    envelope.verify(env, sk.public_key())
    return envelope.decrypt(env, central)


def test_round_trip_and_header(keys) -> None:  # type: ignore[no-untyped-def]
    data = _seal(keys, b"hello decision")
    env = envelope.parse(data)
    h = env.header
    assert (h.kiosk_id, h.seq, h.time_ms, h.topic, h.version) == ("kiosk-a", 42, 1_700_000_000_000, TOPIC, 1)
    assert h.sign_key_id == key_id(raw_public(keys[0])) and h.enc_key_id == key_id(raw_public(keys[1]))
    assert _open(keys, data) == b"hello decision"
    assert b"hello decision" not in data
    # Compact: fixed overhead is a few hundred bytes at most.
    assert len(data) - len(b"hello decision") < 250


def test_each_message_has_fresh_keys_and_nonce(keys) -> None:  # type: ignore[no-untyped-def]
    a, b = envelope.parse(_seal(keys)), envelope.parse(_seal(keys))
    assert a.header.eph_pub != b.header.eph_pub and a.header.nonce != b.header.nonce
    assert a.ciphertext != b.ciphertext and a.digest != b.digest


def test_large_payloads_are_compressed(keys) -> None:  # type: ignore[no-untyped-def]
    body = b'{"reasons":["shape"],"x":"' + b"a" * 20000 + b'"}'
    data = _seal(keys, body)
    assert envelope.parse(data).header.flags & envelope.FLAG_ZLIB and len(data) < 2000
    assert _open(keys, data) == body


def test_every_byte_of_header_and_ciphertext_is_protected(keys) -> None:  # type: ignore[no-untyped-def]
    data = _seal(keys, b"x" * 40)
    sig_start = len(data) - envelope.SIGNATURE_LEN
    refused = 0
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(EnvelopeError) as exc:
            _open(keys, bytes(bad))
        assert exc.value.reason in ("bad_signature", "malformed", "unsupported_version", "decrypt_failed"), i
        if i >= sig_start:
            assert exc.value.reason == "bad_signature"
        refused += 1
    assert refused == len(data)


def test_resigned_with_another_key_fails(keys) -> None:  # type: ignore[no-untyped-def]
    other = Ed25519PrivateKey.generate()
    data = _seal(keys, signing_key=other, sign_key_id=key_id(raw_public(keys[0])))
    with pytest.raises(EnvelopeError, match="signature") as exc:
        _open(keys, data)
    assert exc.value.reason == "bad_signature"


def test_header_swapped_onto_other_ciphertext_fails_decryption(keys) -> None:  # type: ignore[no-untyped-def]
    # A kiosk key holder re-signing someone's ciphertext under a new header: AES-GCM's AAD binds
    # the header, so decryption fails even though the signature is valid.
    sk, central = keys
    a = envelope.parse(_seal(keys, b"secret", seq=1))
    b = envelope.parse(_seal(keys, b"other", seq=2))
    signed = b.aad + struct.pack(">I", len(a.ciphertext)) + a.ciphertext
    forged = envelope.parse(signed + sk.sign(signed))
    envelope.verify(forged, sk.public_key())
    with pytest.raises(EnvelopeError) as exc:
        envelope.decrypt(forged, central)
    assert exc.value.reason == "decrypt_failed"


def test_wrong_recipient_cannot_decrypt(keys) -> None:  # type: ignore[no-untyped-def]
    env = envelope.parse(_seal(keys))
    with pytest.raises(EnvelopeError) as exc:
        envelope.decrypt(env, X25519PrivateKey.generate())
    assert exc.value.reason == "decrypt_failed"


@pytest.mark.parametrize("data,reason", [
    (b"", "malformed"),
    (b"XX\x01" + bytes(200), "malformed"),
    (b"SK\x02" + bytes(200), "unsupported_version"),
    (b"SK\x01\xff\xff" + bytes(200), "malformed"),
])
def test_structural_garbage_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as exc:
        envelope.parse(data)
    assert exc.value.reason == reason


def test_oversized_is_refused_before_parsing(keys) -> None:  # type: ignore[no-untyped-def]
    data = _seal(keys)
    with pytest.raises(EnvelopeError) as exc:
        envelope.parse(data, max_size=len(data) - 1)
    assert exc.value.reason == "oversized"
    envelope.parse(data, max_size=len(data))


def test_decompression_bomb_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    # Build a valid envelope whose (signed, encrypted) payload is a zlib bomb.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sk, central = keys
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    data = _seal(keys, b"tiny")
    env = envelope.parse(data)
    h = env.header
    hdr = envelope.Header(h.kiosk_id, h.seq, h.time_ms, h.topic, h.sign_key_id, h.enc_key_id, h.eph_pub, h.nonce,
                          flags=envelope.FLAG_ZLIB).encode()
    aad = struct.pack(">2sBH", b"SK", 1, len(hdr)) + hdr
    shared = central.exchange(X25519PublicKey.from_public_bytes(h.eph_pub))
    key = envelope._derive_key(shared, h.eph_pub, raw_public(central))
    ct = AESGCM(key).encrypt(h.nonce, bomb, aad)
    signed = aad + struct.pack(">I", len(ct)) + ct
    env2 = envelope.parse(signed + sk.sign(signed))
    envelope.verify(env2, sk.public_key())
    with pytest.raises(EnvelopeError) as exc:
        envelope.decrypt(env2, central, max_plaintext=1 << 20)
    assert exc.value.reason == "oversized"


def test_the_receipt_is_computed_by_the_sealer_and_the_central_key_only(keys) -> None:  # type: ignore[no-untyped-def]
    sk, central = keys
    args = dict(kiosk_id="kiosk-a", seq=42, time_ms=1_700_000_000_000, topic=TOPIC, signing_key=sk,
                recipient=central.public_key())
    data, receipt = envelope.seal_with_receipt(b'{"type":"decision"}', **args)  # type: ignore[arg-type]
    env = envelope.parse(data)
    assert len(receipt) == envelope.RECEIPT_LEN
    assert envelope.receipt(env, central) == receipt
    assert envelope.receipt(env, X25519PrivateKey.generate()) != receipt     # another key cannot
    again, receipt2 = envelope.seal_with_receipt(b'{"type":"decision"}', **args)  # type: ignore[arg-type]
    assert receipt2 != receipt                                                 # one per message
    assert receipt not in data and receipt not in envelope.decrypt(env, central)   # nowhere on the wire
