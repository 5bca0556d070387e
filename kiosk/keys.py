"""Key material of the secure link: generation, storage (0600), loading, key ids.

Each kiosk has an Ed25519 key that signs its envelopes; the central server has an X25519 key that
envelopes are encrypted to. Private keys are PKCS#8 PEM files readable by their owner only;
public keys are raw 32-byte keys in base64 (one line), easy to paste into a registry.

A key id is the first 8 bytes of SHA-256 over the raw public key: it names a key in envelope
headers and registries without revealing anything, and lets keys be rotated (several ids valid).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from kiosk.errors import ApplianceError

KEY_ID_LEN = 8


class KeyFileError(ApplianceError, ValueError):
    """A key file is missing, unreadable, of the wrong type or has unsafe permissions."""


def key_id(public_raw: bytes) -> bytes:
    """The 8-byte id of a raw 32-byte public key."""
    if len(public_raw) != 32:
        raise KeyFileError(f"a raw public key has 32 bytes, got {len(public_raw)}")
    return hashlib.sha256(public_raw).digest()[:KEY_ID_LEN]


def raw_public(key: Ed25519PublicKey | X25519PublicKey | Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    if isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write secret bytes atomically to ``path`` with mode 0600 (never briefly world-readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a key (remove it first)")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # the umask cannot loosen it, but be explicit
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_public_file(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def check_private_perms(path: Path) -> None:
    """``KeyFileError`` when a private key file is readable by group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} is accessible by group or others (mode {mode:o}); chmod 600 it")


def save_public(path: Path, public_raw: bytes) -> None:
    write_public_file(path, base64.b64encode(public_raw) + b"\n")


def load_public_raw(path: Path) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyFileError(f"{path} is not a base64 raw public key") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path}: a raw public key has 32 bytes, got {len(raw)}")
    return raw


def _load_private(path: Path) -> object:
    path = Path(path)
    try:
        check_private_perms(path)
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM private key") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def load_encryption_key(path: Path) -> X25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path} is not an X25519 private key")
    return key


def generate_signing_key(private_path: Path, public_path: Path | None = None) -> bytes:
    """Create an Ed25519 key pair on disk; return the raw public key."""
    key = Ed25519PrivateKey.generate()
    write_private_file(Path(private_path), _private_pem(key))
    pub = raw_public(key)
    save_public(Path(public_path) if public_path else Path(f"{private_path}.pub"), pub)
    return pub


def generate_encryption_key(private_path: Path, public_path: Path | None = None) -> bytes:
    """Create an X25519 key pair on disk; return the raw public key."""
    key = X25519PrivateKey.generate()
    write_private_file(Path(private_path), _private_pem(key))
    pub = raw_public(key)
    save_public(Path(public_path) if public_path else Path(f"{private_path}.pub"), pub)
    return pub


# File names used by ``sigkiosk admin gen-keys`` and by the default link configuration.
# Each party has both kinds: the kiosk signs what it sends (Ed25519) and can be encrypted to
# (X25519, for data the central server sends it); the central server decrypts what kiosks send
# (X25519) and signs what it sends them (Ed25519).
KIOSK_SIGN_KEY = "sign.key"
KIOSK_SIGN_PUB = "sign.pub"
KIOSK_ENC_KEY = "enc.key"
KIOSK_ENC_PUB = "enc.pub"
CENTRAL_ENC_KEY = "central-enc.key"
CENTRAL_ENC_PUB = "central-enc.pub"
CENTRAL_SIGN_KEY = "central-sign.key"
CENTRAL_SIGN_PUB = "central-sign.pub"
