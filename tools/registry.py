"""The registry of kiosks: id, site, group and the Ed25519 public keys that may sign for it.

The collector trusts an envelope only if its kiosk is here and its signing key id is one of the
kiosk's keys (several keys allow rotation); the broker configuration generator reads groups from it.
Stored as JSON (human-readable, diffable, small); written atomically.

A decommissioned kiosk is not forgotten but marked revoked (``sigkiosk admin revoke``), with the
time and a reason: the collector then refuses its messages as ``revoked_kiosk`` (rather than an
anonymous ``unknown_kiosk``), ``central stats`` shows it revoked, the broker ACL denies it
everything, rollouts skip it, and its id cannot silently be registered again.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.keys import key_id
from kiosk.templates import atomic_write
from kiosk.topics import validate_id
from tools.central.errors import CentralError


class RegistryError(CentralError, ValueError):
    pass


@dataclass(frozen=True)
class KioskEntry:
    kiosk_id: str
    site: str
    group: str | None = None
    sign_keys: tuple[bytes, ...] = ()   # raw Ed25519 public keys
    revoked_at_ms: int | None = None    # set by `sigkiosk admin revoke`; None: in service
    revoked_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None

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
                revoked_at = e.get("revoked_at_ms")
                kiosks[kid] = KioskEntry(
                    kiosk_id=kid, site=e["site"], group=e.get("group"),
                    sign_keys=tuple(base64.b64decode(k, validate=True) for k in e.get("sign_keys", [])),
                    revoked_at_ms=None if revoked_at is None else int(revoked_at),
                    revoked_reason=str(e.get("revoked_reason", "")),
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # AttributeError: a top level or a "kiosks" that is not an object (a list, a number).
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
                    **({"revoked_at_ms": e.revoked_at_ms, "revoked_reason": e.revoked_reason} if e.revoked else {}),
                }
                for kid, e in sorted(self.kiosks.items())
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # Durable before it replaces the old one, and the rename itself durable: a power cut must
        # not leave an empty registry (every revocation in it forgotten). Public keys only: 0644.
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)

    @classmethod
    @contextmanager
    def editing(cls, path: Path, *, must_exist: bool = False) -> Iterator[Registry]:
        """The registry at ``path``, loaded under an exclusive lock held until it is saved (when
        the block ends without an error): two admin commands at once each see the other's change.
        Without it, a ``register`` that had loaded the file before a ``revoke`` saved it wrote the
        kiosk back unrevoked. ``must_exist``: a missing file is an error (a mistyped path must not
        look like an empty registry)."""
        path = Path(path)
        if must_exist and not path.exists():
            raise RegistryError(f"registry {path} does not exist (wrong --registry?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reg = cls.load(path)
            yield reg
            reg.save(path)
        finally:
            os.close(lock)

    def add(self, entry: KioskEntry, *, replace_keys: bool = False) -> KioskEntry:
        """Add a kiosk, or add a key to an existing one (rotation) unless ``replace_keys``."""
        old = self.kiosks.get(entry.kiosk_id)
        if old is not None and old.revoked:
            # Re-registering would quietly bring a decommissioned (perhaps stolen) kiosk back.
            raise RegistryError(f"kiosk {entry.kiosk_id} was revoked ({old.revoked_reason or 'no reason given'}); "
                                "register the replacement under a new id")
        for other in self.kiosks.values():
            shared = set(other.sign_keys) & set(entry.sign_keys)
            if other.kiosk_id != entry.kiosk_id and shared:
                # One key, one kiosk: a revoked kiosk's key under a new id would bring the stolen
                # device back, and a key shared by two kiosks makes their records indistinguishable.
                state = "revoked " if other.revoked else ""
                raise RegistryError(f"signing key {key_id(next(iter(shared))).hex()} belongs to {state}kiosk "
                                    f"{other.kiosk_id}: generate a new key for {entry.kiosk_id}")
        if old is not None and not replace_keys:
            group = old.group if entry.group is None else entry.group
            rotation = not set(entry.sign_keys) <= set(old.sign_keys)
            if rotation and (entry.site != old.site or group != old.group):
                # A new key of a registered kiosk: its site and group stay. A mistyped --site moved
                # it (its records then refused as site_mismatch) and a missing --group took it out
                # of its rollout group, both with "registered" printed (found by a review).
                raise RegistryError(f"kiosk {entry.kiosk_id} is registered at site {old.site}, group "
                                    f"{old.group or '-'}; a new key keeps them (asked: site {entry.site}, group "
                                    f"{entry.group or '-'}). To move it, register it again with a key it has, "
                                    "or with --replace-keys")
            # The same key again: a correction of the site or group (a site mistyped at registration).
            keys = tuple(dict.fromkeys(old.sign_keys + entry.sign_keys))
            entry = KioskEntry(entry.kiosk_id, entry.site, group, keys)
        self.kiosks[entry.kiosk_id] = entry
        return entry

    def revoke(self, kiosk_id: str, *, reason: str, now_ms: int) -> KioskEntry:
        """Mark a kiosk revoked (kept, with its keys, so its later messages are refused by name)."""
        old = self.kiosks.get(kiosk_id)
        if old is None:
            raise RegistryError(f"kiosk {kiosk_id} is not in the registry")
        if old.revoked:
            return old
        entry = dataclasses.replace(old, revoked_at_ms=int(now_ms), revoked_reason=reason)
        self.kiosks[kiosk_id] = entry
        return entry

    def active(self) -> dict[str, KioskEntry]:
        """The kiosks in service (not revoked)."""
        return {k: e for k, e in self.kiosks.items() if not e.revoked}
