"""The registry of kiosks: id, site, group and the Ed25519 public keys that may sign for it.

The collector trusts an envelope only if its kiosk is here and its signing key id is one of the
kiosk's keys (several keys allow rotation); the broker configuration generator reads groups from it.
Stored as JSON (human-readable, diffable, small); written atomically.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.keys import key_id
from kiosk.topics import validate_id


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class KioskEntry:
    kiosk_id: str
    site: str
    group: str | None = None
    sign_keys: tuple[bytes, ...] = ()   # raw Ed25519 public keys

    def __post_init__(self) -> None:
        validate_id(self.kiosk_id, "kiosk id")
        validate_id(self.site, "site")
        if self.group is not None:
            validate_id(self.group, "group")
        for k in self.sign_keys:
            if len(k) != 32:
                raise RegistryError(f"kiosk {self.kiosk_id}: a signing key has {len(k)} bytes, not 32")

    def key_ids(self) -> dict[bytes, bytes]:
        return {key_id(k): k for k in self.sign_keys}


@dataclass
class Registry:
    kiosks: dict[str, KioskEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Registry:
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            kiosks = {}
            for kid, e in data.get("kiosks", {}).items():
                kiosks[kid] = KioskEntry(
                    kiosk_id=kid, site=e["site"], group=e.get("group"),
                    sign_keys=tuple(base64.b64decode(k, validate=True) for k in e.get("sign_keys", [])),
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"registry {path} is invalid: {exc}") from None
        return cls(kiosks)

    def save(self, path: Path) -> None:
        path = Path(path)
        data = {
            "format": 1,
            "kiosks": {
                kid: {
                    "site": e.site, "group": e.group,
                    "sign_keys": [base64.b64encode(k).decode() for k in e.sign_keys],
                }
                for kid, e in sorted(self.kiosks.items())
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)

    def add(self, entry: KioskEntry, *, replace_keys: bool = False) -> KioskEntry:
        """Add a kiosk, or add a key to an existing one (rotation) unless ``replace_keys``."""
        old = self.kiosks.get(entry.kiosk_id)
        if old is not None and not replace_keys:
            keys = tuple(dict.fromkeys(old.sign_keys + entry.sign_keys))
            entry = KioskEntry(entry.kiosk_id, entry.site, entry.group, keys)
        self.kiosks[entry.kiosk_id] = entry
        return entry
