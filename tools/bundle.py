"""Create and sign model bundles (off-device): ``sigkiosk admin bundle`` / ``sigkiosk admin sign``.

A bundle is the model files, their golden vectors and a manifest signed by one or more admin
Ed25519 keys (format: ``kiosk/UPDATES.md``). Several admins sign the same manifest in turn
(``sign``), until the kiosks' threshold is met; signing never changes the manifest itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiosk.bundle import BundleFile, FileEntry, Manifest, ModelEntry, sign_envelope
from kiosk.keys import key_id, load_signing_key, raw_public


@dataclass(frozen=True)
class ModelSpec:
    model: Path                  # .tflite
    golden: Path                 # its golden vectors (.npz)
    atol: float | None = None
    rtol: float | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``MODEL.tflite[:GOLDEN.npz]``; the golden file defaults to MODEL.golden.npz beside it."""
        model, _, golden = text.partition(":")
        m = Path(model)
        return cls(m, Path(golden) if golden else m.with_suffix(".golden.npz"))


def create_bundle(*, name: str, version: int, models: Sequence[ModelSpec], target_groups: Sequence[str] = ("*",),
                  expires_in_s: float = 30 * 86400, min_appliance_version: str = "0.0.0", notes: str = "",
                  extra_files: Sequence[Path] = (), sign_keys: Sequence[Path] = (), created: int | None = None) -> BundleFile:
    """Build a bundle from files on disk; sign it with ``sign_keys`` (may be none: sign later)."""
    paths: list[Path] = []
    for m in models:
        paths += [m.model, m.golden]
    paths += list(extra_files)
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"two files share a name in the bundle: {sorted(n for n in names if names.count(n) > 1)}")
    contents = [p.read_bytes() for p in paths]
    created = int(time.time()) if created is None else created
    manifest = Manifest(
        name=name, version=version, created=created, expires=int(created + expires_in_s),
        files=tuple(FileEntry(p.name, len(c), hashlib.sha256(c).hexdigest()) for p, c in zip(paths, contents)),
        models=tuple(ModelEntry(m.model.name, m.golden.name, m.atol, m.rtol) for m in models),
        min_appliance_version=min_appliance_version, target_groups=tuple(target_groups), notes=notes,
    )
    manifest.validate()
    env = sign_envelope(manifest.to_dict(), [load_signing_key(k) for k in sign_keys])
    return BundleFile(env, b"".join(contents))


def sign_bundle(bundle: BundleFile, keys: Sequence[Path]) -> BundleFile:
    """Add signatures (one per key; re-signing with the same key replaces its signature)."""
    env = sign_envelope(bundle.envelope["signed"], [load_signing_key(k) for k in keys], bundle.envelope.get("signatures", []))
    return BundleFile(env, bundle.payload)


def describe(bundle: BundleFile) -> str:
    m = bundle.manifest
    sigs = ", ".join(s["keyid"] for s in bundle.envelope.get("signatures", [])) or "none"
    return (f"bundle {m.name} version {m.version}: {len(m.files)} files, {m.payload_size} bytes, targets "
            f"{', '.join(m.target_groups)}, expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(m.expires))}, "
            f"signatures by {sigs}")


def key_fingerprint(path: Path) -> str:
    return key_id(raw_public(load_signing_key(path))).hex()
