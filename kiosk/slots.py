"""A/B model slots with an atomic switch and a persistent anti-rollback version counter.

Layout under the store's root (all on one file system, so ``rename`` is atomic)::

    slots/a/, slots/b/   one installed bundle each: its files + bundle.json (the signed manifest,
                         written last: a slot without it is incomplete and never used)
    ACTIVE               JSON {"slot", "previous", "name", "version", "bundle", "switched_ms"}
    current -> slots/a   a symlink that follows ACTIVE, for a daemon that wants one fixed path
                         (ACTIVE is the truth; the link is re-synced at every open)
    COUNTER              JSON {bundle name: highest version ever activated}
    incoming/            transfers in progress (kiosk.update_agent)

Every change is write-to-temp, fsync the file, rename, fsync the directory: after a power cut at
any point, ``ACTIVE`` names either the old slot or the new one, both complete. The spare slot is
rewritten only after ``ACTIVE`` stops naming it as the rollback target. The counter lives outside
the slots, so neither a restart nor rewriting a slot lowers it, and it is raised on every switch;
at open it is also raised to the active slot's version (a crash between switch and counter write).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiosk.bundle import BundleError, Manifest, canonical, manifest_digest
from kiosk.errors import ApplianceError
from kiosk.templates import atomic_write, fsync_dir

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
MANIFEST_FILE = "bundle.json"


class SlotError(ApplianceError, RuntimeError):
    pass


@dataclass(frozen=True)
class SlotInfo:
    slot: str
    directory: Path
    envelope: dict[str, Any]
    manifest: Manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def digest(self) -> str:
        return manifest_digest(self.envelope)

    def path(self, file_name: str) -> Path:
        return self.directory / file_name

    def model_paths(self) -> dict[str, Path]:
        """Model file name -> path of the .tflite in this slot."""
        return {m.file: self.directory / m.file for m in self.manifest.models}


class SlotStore:
    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        (self.root / "slots").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(exist_ok=True)
        self._cleanup()

    # -- reading ------------------------------------------------------------------------------------

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # fsync + rename make this impossible short of disk damage; treat as absent, loudly.
            log.error("slots: %s is unreadable (%s); ignoring it", path, exc)
            return None
        return obj if isinstance(obj, dict) else None

    def slot_dir(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise SlotError(f"unknown slot {slot!r}")
        return self.root / "slots" / slot

    def slot_info(self, slot: str | None) -> SlotInfo | None:
        """The complete bundle in ``slot`` (manifest parsed; file hashes NOT re-checked here)."""
        if slot not in SLOTS:
            return None
        d = self.slot_dir(slot)
        env = self._read_json(d / MANIFEST_FILE)
        if env is None:
            return None
        try:
            return SlotInfo(slot, d, env, Manifest.from_dict(env.get("signed")))
        except BundleError as exc:
            log.error("slots: slot %s has an invalid manifest: %s", slot, exc)
            return None

    def pointer(self) -> dict[str, Any]:
        return self._read_json(self.root / "ACTIVE") or {}

    def active(self) -> SlotInfo | None:
        return self.slot_info(self.pointer().get("slot"))

    def previous(self) -> SlotInfo | None:
        return self.slot_info(self.pointer().get("previous"))

    def spare_slot(self) -> str:
        cur = self.pointer().get("slot")
        return "b" if cur == "a" else "a"

    def counter(self) -> int:
        value = (self._read_json(self.root / "COUNTER") or {}).get(self.name, 0)
        return value if isinstance(value, int) else 0

    def installed_version(self) -> int:
        """The version a new bundle must exceed: the highest ever activated (or active now)."""
        act = self.active()
        return max(self.counter(), act.version if act and act.manifest.name == self.name else 0)

    # -- writing ------------------------------------------------------------------------------------

    def _write_pointer(self, slot: str | None, previous: str | None) -> None:
        info = self.slot_info(slot) if slot else None
        data = {"slot": slot, "previous": previous, "name": self.name,
                "version": info.version if info else None, "bundle": info.digest if info else None,
                "switched_ms": int(time.time() * 1000)}
        atomic_write(self.root / "ACTIVE", canonical(data))
        self._sync_link(slot)

    def _sync_link(self, slot: str | None) -> None:
        link = self.root / "current"
        target = f"slots/{slot}" if slot else None
        try:
            if target is None:
                link.unlink(missing_ok=True)
                return
            if link.is_symlink() and os.readlink(link) == target:
                return
            tmp = self.root / ".current.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, link)   # atomic: the link never disappears
            fsync_dir(self.root)
        except OSError as exc:   # a convenience only: never fail a switch over it
            log.warning("slots: could not update the 'current' link: %s", exc)

    def raise_counter(self, version: int) -> None:
        if version <= self.counter():
            return
        data = self._read_json(self.root / "COUNTER") or {}
        data[self.name] = version
        atomic_write(self.root / "COUNTER", canonical(data))

    def _staging(self) -> Path:
        return self.root / "slots" / ".staged.tmp"

    def stage(self, envelope: Mapping[str, Any], files: Mapping[str, bytes]) -> Path:
        """Write a bundle's files (fsynced) to a staging directory; nothing in use is touched."""
        tmp = self._staging()
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        # The manifest last: its presence marks the slot complete.
        atomic_write(tmp / MANIFEST_FILE, canonical(dict(envelope)))
        return tmp

    def discard_staged(self) -> None:
        shutil.rmtree(self._staging(), ignore_errors=True)

    def commit_staged(self) -> str:
        """Move the staged bundle into the spare slot; return the slot's name."""
        ptr = self.pointer()
        spare = self.spare_slot()
        if ptr.get("previous") == spare:
            # The spare is about to change: it must stop being the rollback target first, or a
            # crash mid-replace followed by a rollback would activate a half-replaced slot.
            self._write_pointer(ptr.get("slot"), None)
        final = self.slot_dir(spare)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(self._staging(), final)
        fsync_dir(final.parent)
        return spare

    def switch(self, slot: str) -> SlotInfo:
        """Make ``slot`` active atomically; the old active slot becomes the rollback target."""
        info = self.slot_info(slot)
        if info is None:
            raise SlotError(f"slot {slot} holds no complete bundle")
        cur = self.pointer().get("slot")
        self._write_pointer(slot, cur if cur != slot else None)
        self.raise_counter(info.version)
        return info

    def rollback(self) -> SlotInfo:
        """Reactivate the previous slot. The failed one is no longer a rollback target."""
        prev = self.pointer().get("previous")
        info = self.slot_info(prev)
        if info is None:
            raise SlotError("no previous slot to roll back to")
        self._write_pointer(prev, None)
        return info

    def _cleanup(self) -> None:
        """Remove what a crash can leave behind: temporary slot directories and files."""
        for p in (self.root / "slots").glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        act = self.active()
        if self.pointer():
            self._sync_link(self.pointer().get("slot"))
        if act is not None and act.manifest.name == self.name and act.version > self.counter():
            self.raise_counter(act.version)   # crashed between the switch and the counter write
