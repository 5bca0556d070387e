"""The envelope: what a kiosk puts on the wire. Format documented in ``kiosk/ENVELOPE.md``.

The payload is encrypted to the central server's X25519 key (ephemeral X25519, HKDF-SHA256,
AES-256-GCM); the header (format version, kiosk id, sequence number, time, topic, key ids) is the
AEAD's associated data, and the whole envelope is signed with the kiosk's Ed25519 key. The broker
can route it but can neither read nor forge it, and a replay is recognised by its sequence number.

``seal`` runs on the kiosk; ``parse`` + ``verify`` + ``decrypt`` run on the collector, in that
order, so that the cheap checks refuse garbage before any public-key work is done.

A **receipt** (``seal_with_receipt``, ``receipt``) is a 16-byte value derived from the message's
key agreement under a label of its own: only the kiosk that sealed the message and the holder of
the central key can compute it. The collector sends it back once the message is stored; the
kiosk deletes its outbox copy only on a receipt that matches, so a broker that loses messages it
acknowledged (killed before its autosave) loses nothing, and nobody else (another kiosk, the
broker, an eavesdropper) can make a kiosk drop a message it has not delivered.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk.errors import ApplianceError
from kiosk.keys import KEY_ID_LEN, key_id, raw_public

MAGIC = b"SK"
FORMAT_VERSION = 1
SIGNATURE_LEN = 64
TAG_LEN = 16
NONCE_LEN = 12
HKDF_INFO = b"sigkiosk envelope v1 x25519-hkdf-sha256-aes256gcm"
RECEIPT_INFO = b"sigkiosk receipt v1"
RECEIPT_LEN = 16

#: Envelopes larger than this are refused unread (a kiosk never needs more: decisions are < 2 KiB;
#: an image attached by policy is a 128x128 PNG, well under this).
DEFAULT_MAX_ENVELOPE = 1 << 20

FLAG_ZLIB = 0x01
_KNOWN_FLAGS = FLAG_ZLIB
# Compress only when it is worth it; tiny JSON payloads grow under zlib.
_COMPRESS_MIN = 512

# prefix: magic(2) version(1) header_len(2)
_PREFIX = struct.Struct(">2sBH")
# fixed header part: flags(1) seq(8) time_ms(8) sign_key_id(8) enc_key_id(8) eph_pub(32) nonce(12)
_FIXED = struct.Struct(f">BQQ{KEY_ID_LEN}s{KEY_ID_LEN}s32s{NONCE_LEN}s")


class EnvelopeError(ApplianceError, ValueError):
    """An envelope was refused. ``reason`` is a short stable code used for counting refusals."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """The signed, authenticated header of an envelope."""

    kiosk_id: str
    seq: int
    time_ms: int
    topic: str
    sign_key_id: bytes
    enc_key_id: bytes
    eph_pub: bytes
    nonce: bytes
    flags: int = 0
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        kid = self.kiosk_id.encode("utf-8")
        top = self.topic.encode("utf-8")
        if len(kid) > 255:
            raise EnvelopeError("malformed", "kiosk id longer than 255 bytes")
        if len(top) > 65535:
            raise EnvelopeError("malformed", "topic longer than 65535 bytes")
        return (
            _FIXED.pack(
                self.flags, self.seq, self.time_ms, self.sign_key_id, self.enc_key_id,
                self.eph_pub, self.nonce,
            )
            + struct.pack(">B", len(kid)) + kid
            + struct.pack(">H", len(top)) + top
        )

    @classmethod
    def decode(cls, data: bytes, version: int) -> Header:
        try:
            flags, seq, time_ms, skid, ekid, eph, nonce = _FIXED.unpack_from(data, 0)
            off = _FIXED.size
            (klen,) = struct.unpack_from(">B", data, off)
            off += 1
            kid = data[off:off + klen]
            off += klen
            (tlen,) = struct.unpack_from(">H", data, off)
            off += 2
            top = data[off:off + tlen]
            off += tlen
        except struct.error:
            raise EnvelopeError("malformed", "header truncated") from None
        if off != len(data) or len(kid) != klen or len(top) != tlen:
            raise EnvelopeError("malformed", "header length fields do not add up")
        if flags & ~_KNOWN_FLAGS:
            raise EnvelopeError("malformed", f"unknown header flags {flags:#x}")
        try:
            kiosk_id, topic = kid.decode("utf-8"), top.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("malformed", "header strings are not UTF-8") from None
        return cls(kiosk_id, seq, time_ms, topic, skid, ekid, eph, nonce, flags, version)


@dataclass(frozen=True)
class Envelope:
    """A parsed (not yet verified) envelope."""

    header: Header
    signed: bytes       # everything the signature covers
    aad: bytes          # prefix + header: authenticated by AES-GCM
    ciphertext: bytes   # AES-GCM output, tag included
    signature: bytes

    @property
    def digest(self) -> str:
        """SHA-256 of the signed part: identifies this exact message (duplicates vs replays)."""
        return hashlib.sha256(self.signed).hexdigest()


def _derive_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes, info: bytes = HKDF_INFO, length: int = 32) -> bytes:
    # The salt binds the key to both public keys, so a key can never be reused across recipients;
    # the label keeps the receipt independent of the content key (knowing one tells nothing of the other).
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=eph_pub + recipient_pub, info=info).derive(shared)


def seal(
    plaintext: bytes,
    *,
    kiosk_id: str,
    seq: int,
    time_ms: int,
    topic: str,
    signing_key: Ed25519PrivateKey,
    recipient: X25519PublicKey,
    sign_key_id: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient``, sign everything, return the envelope bytes."""
    return seal_with_receipt(plaintext, kiosk_id=kiosk_id, seq=seq, time_ms=time_ms, topic=topic,
                             signing_key=signing_key, recipient=recipient, sign_key_id=sign_key_id)[0]


def seal_with_receipt(
    plaintext: bytes,
    *,
    kiosk_id: str,
    seq: int,
    time_ms: int,
    topic: str,
    signing_key: Ed25519PrivateKey,
    recipient: X25519PublicKey,
    sign_key_id: bytes | None = None,
) -> tuple[bytes, bytes]:
    """``seal``, and the receipt the recipient will compute from the envelope (``receipt``)."""
    if not 0 <= seq < 2**64:
        raise ValueError("sequence number out of range")
    flags = 0
    if len(plaintext) >= _COMPRESS_MIN:
        packed = zlib.compress(plaintext, 6)
        if len(packed) < len(plaintext):
            plaintext, flags = packed, FLAG_ZLIB
    eph = X25519PrivateKey.generate()
    eph_pub = raw_public(eph)
    recipient_pub = raw_public(recipient)
    shared = eph.exchange(recipient)
    key = _derive_key(shared, eph_pub, recipient_pub)
    nonce = os.urandom(NONCE_LEN)
    header = Header(
        kiosk_id=kiosk_id, seq=seq, time_ms=time_ms, topic=topic,
        sign_key_id=sign_key_id if sign_key_id is not None else key_id(raw_public(signing_key)),
        enc_key_id=key_id(recipient_pub), eph_pub=eph_pub, nonce=nonce, flags=flags,
    ).encode()
    aad = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad)
    signed = aad + struct.pack(">I", len(ciphertext)) + ciphertext
    return signed + signing_key.sign(signed), _derive_key(shared, eph_pub, recipient_pub, RECEIPT_INFO, RECEIPT_LEN)


def parse(data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE) -> Envelope:
    """Split envelope bytes into their parts, checking structure only (no cryptography)."""
    if len(data) > max_size:
        raise EnvelopeError("oversized", f"envelope of {len(data)} bytes exceeds {max_size}")
    if len(data) < _PREFIX.size + _FIXED.size + 3 + 4 + TAG_LEN + SIGNATURE_LEN:
        raise EnvelopeError("malformed", f"envelope of {len(data)} bytes is too short")
    magic, version, hlen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise EnvelopeError("malformed", "not an envelope (bad magic)")
    if version != FORMAT_VERSION:
        raise EnvelopeError("unsupported_version", f"envelope format version {version} is not supported")
    hend = _PREFIX.size + hlen
    if hend + 4 > len(data):
        raise EnvelopeError("malformed", "header length exceeds envelope")
    header = Header.decode(data[_PREFIX.size:hend], version)
    (clen,) = struct.unpack_from(">I", data, hend)
    cend = hend + 4 + clen
    if clen < TAG_LEN or cend + SIGNATURE_LEN != len(data):
        raise EnvelopeError("malformed", "ciphertext length does not match envelope size")
    return Envelope(
        header=header, signed=data[:cend], aad=data[:hend],
        ciphertext=data[hend + 4:cend], signature=data[cend:],
    )


def verify(env: Envelope, public_key: Ed25519PublicKey) -> None:
    try:
        public_key.verify(env.signature, env.signed)
    except InvalidSignature:
        raise EnvelopeError("bad_signature", "signature does not verify with the kiosk's key") from None


def _shared(env: Envelope, private_key: X25519PrivateKey) -> bytes:
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(env.header.eph_pub))
    except ValueError:
        raise EnvelopeError("decrypt_failed", "invalid ephemeral key") from None


def receipt(env: Envelope, private_key: X25519PrivateKey) -> bytes:
    """The receipt of ``env`` (encrypted to ``private_key``'s public key), as ``seal_with_receipt``
    gave its sealer. Raises EnvelopeError for an unusable ephemeral key."""
    return _derive_key(_shared(env, private_key), env.header.eph_pub, raw_public(private_key), RECEIPT_INFO, RECEIPT_LEN)


def decrypt(env: Envelope, private_key: X25519PrivateKey, max_plaintext: int = 8 * DEFAULT_MAX_ENVELOPE) -> bytes:
    return decrypt_with_receipt(env, private_key, max_plaintext)[0]


def decrypt_with_receipt(env: Envelope, private_key: X25519PrivateKey,
                         max_plaintext: int = 8 * DEFAULT_MAX_ENVELOPE) -> tuple[bytes, bytes]:
    """``decrypt``, and the envelope's ``receipt`` from the same key agreement (one X25519, not two)."""
    h = env.header
    shared, recipient_pub = _shared(env, private_key), raw_public(private_key)
    key = _derive_key(shared, h.eph_pub, recipient_pub)
    rcpt = _derive_key(shared, h.eph_pub, recipient_pub, RECEIPT_INFO, RECEIPT_LEN)
    try:
        plaintext = AESGCM(key).decrypt(h.nonce, env.ciphertext, env.aad)
    except InvalidTag:
        raise EnvelopeError("decrypt_failed", "ciphertext or header failed authentication") from None
    if h.flags & FLAG_ZLIB:
        # Bounded inflation: a signed envelope from a registered kiosk could still be a zip bomb.
        d = zlib.decompressobj()
        try:
            plaintext = d.decompress(plaintext, max_plaintext)
        except zlib.error:
            raise EnvelopeError("bad_payload", "compressed payload is corrupt") from None
        if d.unconsumed_tail or not d.eof:
            raise EnvelopeError("oversized", "decompressed payload too large or truncated")
        if d.unused_data:
            # Bytes no reader of the payload would see (a second stream, say) have no business
            # in a signed record: what is stored must be all that was sent.
            raise EnvelopeError("bad_payload", f"{len(d.unused_data)} bytes after the end of the compressed stream")
    elif len(plaintext) > max_plaintext:
        raise EnvelopeError("oversized", f"payload of {len(plaintext)} bytes exceeds {max_plaintext}")
    return plaintext, rcpt


def verify_public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
