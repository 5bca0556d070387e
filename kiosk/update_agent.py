"""The model-update agent: receives signed bundles over MQTT and installs them without ever
leaving the appliance without a working model. Protocol and format: ``kiosk/UPDATES.md``.

Pipeline for one offer (each step reported, signed, on ``<prefix>/v1/<site>/<kiosk>/update``)::

    offer -> manifest checks (signatures k-of-n, name, expiry, version > counter, appliance
    version, target, size)        -> refused early, nothing downloaded
    -> chunks (per-chunk SHA-256, stored to disk, resumable after a disconnect or a restart)
    -> payload SHA-256, file SHA-256s against the signed manifest
    -> staged in a temporary slot directory, loaded by the real TFLite runtime, golden vectors run
    -> committed as the spare slot -> atomic switch (rename + fsync) -> counter raised
    -> checked again from the active slot; on failure: automatic rollback to the previous slot

Usage (the daemon)::

    agent = UpdateAgent.for_link(UpdateConfig.from_mapping(toml["update"], base_dir), link)
    agent.add_switch_listener(lambda slot: reload_models(slot.model_paths()))
    agent.start()                  # recovery + golden check of the active slot, then subscribes
    model = agent.active_model()   # SlotInfo | None: .model_paths(), .version, .directory
    agent.report_model_failure("inference errors")   # the daemon saw the model misbehave
    agent.close()
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.bundle import (
    BundleError,
    BundleFile,
    Manifest,
    Offer,
    TrustPolicy,
    canonical,
    check_manifest,
    manifest_digest,
    sign_envelope,
    split_payload,
    verify_envelope,
)
from kiosk.golden import DEFAULT_GOLDEN_TIMEOUT_S, check_golden_isolated
from kiosk.keys import load_public_raw, load_signing_key
from kiosk.slots import SlotError, SlotInfo, SlotStore
from kiosk.templates import atomic_write, free_bytes
from kiosk.topics import GROUP_NAMESPACE, TOPIC_VERSION, KioskTopics

log = logging.getLogger(__name__)

REPORT_TYPE = "sigkiosk-update-status"
#: A chunk index in a topic: ASCII digits only ("²".isdigit() is true, and int() of it raises).
_CHUNK_INDEX = re.compile(r"[0-9]{1,9}")
#: What a message held in memory is charged besides its topic and payload (Python's objects around
#: them): an empty payload under a long topic was charged nothing, and a 1-byte early chunk 1 byte
#: (found by a review: 2 000 empty messages held 120 MB against a bound they never touched).
MESSAGE_COST = 512
#: Most messages queued for the agent's thread at once (a bundle of 256 KiB chunks: 256 for 64 MiB).
MAX_QUEUED_MESSAGES = 1024
#: Most offers whose chunks are held before the offer itself (the broker's retained order): one
#: bundle pushed at a time, and a few left over from earlier pushes. Each held id was also looked at
#: after every message: tens of thousands of made-up ids slowed the agent to a crawl.
MAX_EARLY_OFFERS = 4
#: A step hook gets the step name and details; tests use it to SIGKILL the agent at each step.
StepHook = Callable[[str, Mapping[str, Any]], None]
Publish = Callable[[str, bytes, bool], bool]


def _cost(topic: str, payload: bytes) -> int:
    return len(topic) + len(payload) + MESSAGE_COST


def update_topic(topics: KioskTopics) -> str:
    """Where a kiosk publishes its (retained, signed) update status."""
    return f"{topics.base}/update"


def offer_topics(prefix: str, site: str, kiosk_id: str, group: str | None) -> list[str]:
    """Command bases (ending in ``/model``) that may carry offers for this kiosk."""
    bases = [f"{prefix}/{TOPIC_VERSION}/{site}/{kiosk_id}/model"]
    if group:
        bases.append(f"{prefix}/{TOPIC_VERSION}/{GROUP_NAMESPACE}/{group}/model")
    return bases


#: Bounds of [update] golden_timeout_s: a shipped model checks in under a second here.
MIN_GOLDEN_TIMEOUT_S, MAX_GOLDEN_TIMEOUT_S = 2.0, 3600.0


@dataclass(frozen=True)
class UpdateConfig:
    """The ``[update]`` table of the kiosk's TOML file."""

    root: Path                              # slot store (A/B slots, counter, transfers)
    bundle_name: str                        # the bundle this appliance runs, e.g. "sigkiosk-models"
    admin_keys: tuple[Path, ...]            # trusted admin Ed25519 public keys (base64 raw files)
    threshold: int = 1                      # how many distinct admin keys must sign
    appliance_version: str = ""             # default: kiosk.link.SOFTWARE_VERSION
    max_bundle_bytes: int = 64 << 20
    transfer_timeout_s: float = 120.0       # no new chunk for this long: report missing chunks
    #: Free space a download leaves on the store's file system besides what it needs (its chunks
    #: and the staged copy): the kiosk's decisions and audits are written there too.
    disk_reserve_bytes: int = 64 << 20
    #: How long one model's golden check may take before the model is refused (kiosk.golden).
    golden_timeout_s: float = DEFAULT_GOLDEN_TIMEOUT_S

    def __post_init__(self) -> None:
        # A typo (0, a negative, a hundredth) failed every model's golden check: every bundle
        # refused, and at the next start the installed model rolled back (found by a review).
        if not MIN_GOLDEN_TIMEOUT_S <= self.golden_timeout_s <= MAX_GOLDEN_TIMEOUT_S:
            raise ValueError(f"golden_timeout_s must be {MIN_GOLDEN_TIMEOUT_S:g}-{MAX_GOLDEN_TIMEOUT_S:g} s, got "
                             f"{self.golden_timeout_s}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> UpdateConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown update settings: {', '.join(unknown)}")

        def path(p: Any) -> Path:
            q = Path(p)
            return q if q.is_absolute() or base_dir is None else Path(base_dir) / q

        kw = dict(data)
        kw["root"] = path(kw["root"])
        kw["admin_keys"] = tuple(path(p) for p in kw.get("admin_keys", ()))
        return cls(**kw)

    def policy(self) -> TrustPolicy:
        return TrustPolicy.from_public_keys([load_public_raw(p) for p in self.admin_keys], self.threshold)


@dataclass
class _Transfer:
    offer: Offer
    manifest: Manifest
    directory: Path
    have: set[int]
    last_progress: float
    resumed: int
    stall_reported: bool = False


class UpdateAgent:
    def __init__(self, config: UpdateConfig, *, topics: KioskTopics, publish: Publish | None = None,
                 signing_key: Ed25519PrivateKey | None = None, connected: threading.Event | None = None,
                 step_hook: StepHook | None = None, model_versions_sink: Callable[[Mapping[str, str]], None] | None = None) -> None:
        from kiosk.link import SOFTWARE_VERSION

        self.config = config
        self.topics = topics
        self.policy = config.policy()
        self.appliance_version = config.appliance_version or SOFTWARE_VERSION
        self.store = SlotStore(config.root, config.bundle_name)
        self._publish = publish
        self._sign_key = signing_key
        self._connected = connected
        self._hook = step_hook
        self._versions_sink = model_versions_sink
        self._bases = offer_topics(topics.prefix, topics.site, topics.kiosk_id, topics.group)
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._queued_bytes = 0
        self._qlock = threading.Lock()
        self._lock = threading.RLock()
        self._transfer: _Transfer | None = None
        self._pending: dict[str, dict[int, bytes]] = {}   # chunks that arrived before their offer
        self._pending_bytes = 0
        self._pending_since: dict[str, float] = {}        # when the first orphan chunk came
        self._listeners: list[Callable[[SlotInfo | None], None]] = []
        self._seq = 0
        self._last_report: bytes | None = None
        self._unsent: list[bytes] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_state: dict[str, Any] = {}
        self._bad_digest: str | None = None   # the active bundle failed its checks, no rollback possible

    @classmethod
    def for_link(cls, config: UpdateConfig, link: Any, step_hook: StepHook | None = None) -> UpdateAgent:
        """Wire the agent to a ``KioskLink``: its command topics, its MQTT connection, its key."""

        def publish(topic: str, payload: bytes, retain: bool) -> bool:
            return bool(link.publish_raw(topic, payload, retain=retain))

        agent = cls(config, topics=link.topics, publish=publish, signing_key=load_signing_key(link.config.sign_key_file),
                    connected=link.commands_ready, step_hook=step_hook, model_versions_sink=link.set_model_versions)
        agent._link = link   # type: ignore[attr-defined]
        return agent

    # -- public API -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from whatever a crash left, check the active model, then listen for offers."""
        with self._lock:
            try:
                self.recover()
            except Exception as exc:   # never keep the kiosk from starting: the old model serves
                log.exception("update: recovery at start failed; the downloads are dropped")
                self._cleanup_incoming(keep=None)
                self._report("failed", reason="recovery_failed", detail=f"{type(exc).__name__}: {exc}"[:300])
        self._thread = threading.Thread(target=self._run, name="update-agent", daemon=True)
        self._thread.start()
        link = getattr(self, "_link", None)
        if link is not None:
            link.add_command_handler(self.on_command)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def active_model(self) -> SlotInfo | None:
        """The bundle the daemon should serve (files under ``.directory``), or None: none is
        installed, or the active one failed its checks and there was nothing to roll back to
        (the daemon then falls back to what needs no model, e.g. the classic verifier)."""
        act = self.store.active()
        if act is not None and act.digest == self._bad_digest:
            return None
        return act

    def add_switch_listener(self, callback: Callable[[SlotInfo | None], None]) -> None:
        """``callback(active)`` runs (on the agent's thread) after every switch or rollback."""
        self._listeners.append(callback)

    def report_model_failure(self, reason: str) -> SlotInfo | None:
        """The daemon found the active model failing: roll back to the previous slot if any.
        Returns what to serve now (None: nothing usable)."""
        with self._lock:
            return self._rollback(f"reported by the daemon: {reason}")

    def install_file(self, path: Path) -> str:
        """Install a bundle file directly (factory provisioning, USB); same checks. Returns the state."""
        bf = BundleFile.read(path)
        offer = Offer.for_payload(bf.envelope, bf.payload)
        with self._lock:
            manifest = self._check_offer(offer)
            if manifest is None:
                return self.last_state.get("state", "refused")
            return self._install(offer, manifest, bf.payload)

    def on_command(self, topic: str, payload: bytes) -> None:
        """The link's command handler (network thread): queue, bounded, and return at once."""
        cost = _cost(topic, payload)
        with self._qlock:
            if (self._queued_bytes + cost > 2 * self.config.max_bundle_bytes
                    or self._queue.qsize() >= MAX_QUEUED_MESSAGES):
                log.warning("update: command queue full; dropping a message on %s (retained copies come back on reconnect)",
                            topic[:200])
                return
            self._queued_bytes += cost
        self._queue.put((topic, payload))

    # -- reports ----------------------------------------------------------------------------------------

    def _slot_summary(self, info: SlotInfo | None) -> dict[str, Any] | None:
        if info is None:
            return None
        return {"slot": info.slot, "name": info.manifest.name, "version": info.version, "bundle": info.digest[:16]}

    def _report(self, state: str, *, reason: str | None = None, detail: str = "", offer: Offer | None = None,
                manifest: Manifest | None = None, **extra: Any) -> None:
        self._seq += 1
        body: dict[str, Any] = {
            "type": REPORT_TYPE, "kiosk": self.topics.kiosk_id, "site": self.topics.site, "group": self.topics.group,
            "seq": self._seq, "time_ms": int(time.time() * 1000), "state": state, "reason": reason, "detail": detail,
            "active": self._slot_summary(self.store.active()), "previous": self._slot_summary(self.store.previous()),
            "installed_version": self.store.installed_version(), "appliance_version": self.appliance_version,
        }
        if offer is not None:
            # pushed_ms names the push (an admin re-pushing the same bundle makes a new offer).
            body["offer"] = {"bundle_id": offer.short_id, "manifest": manifest_digest(offer.envelope)[:16],
                             "pushed_ms": offer.created_ms}
            if manifest is not None:
                body["offer"].update(name=manifest.name, version=manifest.version)
        body.update(extra)
        self.last_state = body
        level = logging.WARNING if state in ("refused", "rolled_back", "failed", "no_model") else logging.INFO
        log.log(level, "update: %s%s%s", state, f" ({reason})" if reason else "", f": {detail}" if detail else "")
        payload = canonical(sign_envelope(body, [self._sign_key]) if self._sign_key else {"signed": body, "signatures": []})
        self._last_report = payload
        self._send_report(payload)
        if self._versions_sink is not None:
            act = self.store.active()
            self._versions_sink({act.manifest.name: str(act.version)} if act else {})

    def _send_report(self, payload: bytes | None = None) -> None:
        """Publish a report now, or keep it (bounded) until the link is connected: every step
        counts, including those taken at start-up before the broker is reachable."""
        if payload is not None:
            self._unsent.append(payload)
            del self._unsent[:-32]
        if self._publish is None or (self._connected is not None and not self._connected.is_set()):
            return
        while self._unsent:
            try:
                if not self._publish(update_topic(self.topics), self._unsent[0], True):
                    return
            except (RuntimeError, ValueError, OSError) as exc:
                log.warning("update: could not publish status: %s", exc)
                return
            self._unsent.pop(0)

    def _step(self, name: str, **details: Any) -> None:
        if self._hook is not None:
            self._hook(name, details)

    # -- checks -------------------------------------------------------------------------------------------

    def check_slot(self, info: SlotInfo) -> str | None:
        """Why the bundle in this slot must not serve (signature, hashes, golden vectors), or None."""
        try:
            verify_envelope(info.envelope, self.policy)   # the slot's manifest is the signed one
        except BundleError as exc:
            return f"{exc.reason}: {exc.detail}"
        for f in info.manifest.files:
            try:
                h = hashlib.sha256((info.directory / f.name).read_bytes()).hexdigest()
            except OSError as exc:
                return f"file {f.name} unreadable: {exc.strerror}"
            if h != f.sha256:
                return f"file {f.name} does not match its SHA-256"
        for m in info.manifest.models:
            # In a child process with a time limit: a signed model that loops for ever, or crashes the
            # runtime, fails its check instead of holding the agent and the kiosk's start.
            res = check_golden_isolated(info.directory / m.file, info.directory / m.golden, m.atol, m.rtol,
                                        timeout_s=self.config.golden_timeout_s)
            if not res.ok:
                return f"golden vectors of {m.file}: {res.detail}"
        return None

    def _check_offer(self, offer: Offer) -> Manifest | None:
        """Manifest-level checks; reports and returns None when the offer is refused."""
        try:
            manifest = Manifest.from_dict(verify_envelope(offer.envelope, self.policy))
            check_manifest(manifest, expected_name=self.config.bundle_name,
                           installed_version=self.store.installed_version(), appliance_version=self.appliance_version,
                           kiosk_id=self.topics.kiosk_id, group=self.topics.group, max_bytes=self.config.max_bundle_bytes)
            if manifest.payload_size != offer.size:
                raise BundleError("malformed", f"offer size {offer.size} differs from the manifest's {manifest.payload_size}")
        except BundleError as exc:
            self._report("refused", reason=exc.reason, detail=exc.detail, offer=offer)
            return None
        return manifest

    # -- transfer ----------------------------------------------------------------------------------------

    def _parse_topic(self, topic: str) -> tuple[str, list[str]] | None:
        for base in self._bases:
            if topic.startswith(base + "/"):
                return base, topic[len(base) + 1:].split("/")
        return None

    def _handle(self, topic: str, payload: bytes) -> None:
        parsed = self._parse_topic(topic)
        if parsed is None:
            return
        _, parts = parsed
        if parts == ["offer"]:
            if payload:   # an empty retained message clears an offer
                self._on_offer(payload)
        elif len(parts) == 3 and parts[0] == "chunk" and _CHUNK_INDEX.fullmatch(parts[2]) and payload:
            self._on_chunk(parts[1], int(parts[2]), payload)

    def _on_offer(self, data: bytes) -> None:
        try:
            offer = Offer.from_bytes(data, self.config.max_bundle_bytes)
        except BundleError as exc:
            self._report("refused", reason=exc.reason, detail=exc.detail)
            return
        digest = manifest_digest(offer.envelope)   # Offer.from_bytes checked it can be computed
        act = self.store.active()
        if act is not None and act.digest == digest:
            # Redelivered retained offer of what already runs (e.g. restart after the switch).
            # A transfer of another offer (the group's, say) goes on untouched.
            self._drop_pending(offer.short_id)
            self._report("active", offer=offer, manifest=act.manifest, detail="already active")
            return
        if self._transfer is not None and self._transfer.offer.bundle_id == offer.bundle_id:
            return   # the same offer again (both the kiosk and its group topic, or a redelivery)
        manifest = self._check_offer(offer)
        if manifest is None:
            self._drop_pending(offer.short_id)
            return
        self._begin_transfer(offer, manifest)

    def _drop_pending(self, short_id: str) -> dict[int, bytes]:
        chunks = self._pending.pop(short_id, {})
        self._pending_since.pop(short_id, None)
        self._pending_bytes -= sum(len(c) + MESSAGE_COST for c in chunks.values())
        return chunks

    def _begin_transfer(self, offer: Offer, manifest: Manifest) -> None:
        d = self.store.root / "incoming" / offer.short_id
        # Its chunks, then the staged copy; and what the kiosk's decisions need after them (a
        # download that filled the disk left every later decision unrecorded until someone cleared
        # it; found by a review). Checked first: a refusal leaves a download in progress alone.
        # Chunks of this offer already on disk (a resume) are counted as space it has.
        have_bytes = sum(p.stat().st_size for p in d.glob("*.chunk")) if d.is_dir() else 0
        need = max(0, 2 * offer.size - have_bytes) + self.config.disk_reserve_bytes
        free = free_bytes(self.store.root)
        if free < need:
            self._report("refused", reason="disk_full", offer=offer, manifest=manifest,
                         detail=f"{free >> 20} MiB free; the bundle needs {(need - self.config.disk_reserve_bytes) >> 20} "
                                f"MiB more and {self.config.disk_reserve_bytes >> 20} MiB stay free for the kiosk's "
                                "decisions")
            return
        self._cleanup_incoming(keep=offer.short_id)   # one transfer at a time bounds the disk used
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "offer.json").exists():
            atomic_write(d / "offer.json", offer.to_bytes())
        have = set()
        for p in d.glob("*.chunk"):   # resume: keep every stored chunk that still matches its hash
            idx = int(p.stem) if p.stem.isdigit() else -1
            if 0 <= idx < len(offer.chunks) and hashlib.sha256(p.read_bytes()).hexdigest() == offer.chunks[idx]:
                have.add(idx)
            else:
                p.unlink(missing_ok=True)
        self._transfer = _Transfer(offer, manifest, d, have, time.monotonic(), resumed=len(have))
        self._report("downloading", offer=offer, manifest=manifest,
                     progress={"have": len(have), "total": len(offer.chunks), "resumed": len(have)})
        for idx, data in sorted(self._drop_pending(offer.short_id).items()):
            if self._transfer is None:   # a chunk could not be written: the download was dropped
                break
            self._store_chunk(idx, data)
        self._maybe_install()

    def _on_chunk(self, short_id: str, idx: int, data: bytes) -> None:
        t = self._transfer
        if t is not None and t.offer.short_id == short_id:
            self._store_chunk(idx, data)
            self._maybe_install()
            return
        # The broker sends retained messages in topic order, not publication order: a chunk may
        # come before its offer. Hold a bounded number of them in memory.
        if self._pending_bytes + len(data) + MESSAGE_COST > self.config.max_bundle_bytes:
            return
        if short_id not in self._pending and len(self._pending) >= MAX_EARLY_OFFERS:
            return
        self._pending_since.setdefault(short_id, time.monotonic())
        slot = self._pending.setdefault(short_id, {})
        if idx not in slot:
            slot[idx] = data
            self._pending_bytes += len(data) + MESSAGE_COST

    def _store_chunk(self, idx: int, data: bytes) -> None:
        t = self._transfer
        assert t is not None
        if not 0 <= idx < len(t.offer.chunks) or idx in t.have:
            return
        if hashlib.sha256(data).hexdigest() != t.offer.chunks[idx]:
            self._report("refused", reason="corrupt_chunk", offer=t.offer, manifest=t.manifest,
                         detail=f"chunk {idx} does not match its SHA-256 in the offer; waiting for a good copy",
                         progress={"have": len(t.have), "total": len(t.offer.chunks)})
            return
        # No fsync per chunk: a torn chunk after a power cut fails its hash at resume and is fetched again.
        tmp = t.directory / f".{idx}.tmp"
        try:
            tmp.write_bytes(data)
            tmp.replace(t.directory / f"{idx}.chunk")
        except OSError as exc:
            # The disk filled after all (something else wrote): give the space back at once.
            self._cleanup_incoming(keep=None)
            self._report("refused", reason="io_error", offer=t.offer, manifest=t.manifest,
                         detail=f"chunk {idx} could not be written ({exc.strerror}); the download is dropped")
            return
        t.have.add(idx)
        t.last_progress = time.monotonic()
        t.stall_reported = False
        self._step("chunk_stored", index=idx, have=len(t.have), total=len(t.offer.chunks))

    def _check_stall(self) -> None:
        # Orphan chunks (their offer never came, e.g. cleared) must not hold memory for ever.
        now = time.monotonic()
        for short_id, since in list(self._pending_since.items()):
            if now - since > self.config.transfer_timeout_s:
                self._drop_pending(short_id)
        t = self._transfer
        if t is None or t.stall_reported or time.monotonic() - t.last_progress < self.config.transfer_timeout_s:
            return
        missing = sorted(set(range(len(t.offer.chunks))) - t.have)
        t.stall_reported = True
        self._report("refused", reason="missing_chunks", offer=t.offer, manifest=t.manifest,
                     detail=f"{len(missing)} chunk(s) missing after {self.config.transfer_timeout_s:g} s: "
                            f"{missing[:20]}; kept for resuming", missing=missing[:100],
                     progress={"have": len(t.have), "total": len(t.offer.chunks)})

    def _maybe_install(self) -> None:
        t = self._transfer
        if t is None or len(t.have) < len(t.offer.chunks):
            return
        payload = b"".join((t.directory / f"{i}.chunk").read_bytes() for i in range(len(t.offer.chunks)))
        self._transfer = None
        if hashlib.sha256(payload).hexdigest() != t.offer.bundle_id:
            self._refuse_transfer(t, "hash_mismatch", "the reassembled payload does not match the offer's id")
            return
        try:
            self._install(t.offer, t.manifest, payload)
        except Exception as exc:   # a defect of ours or the runtime's: the old model keeps serving
            log.exception("update: installing %s failed", t.offer.short_id)
            self.store.discard_staged()
            self._report("failed", reason="install_error", detail=f"{type(exc).__name__}: {exc}"[:300],
                         offer=t.offer, manifest=t.manifest)
        finally:
            # Whatever _install did, the download is not tried again: left on disk after an
            # exception, recover() installed it again at every start (found by a review).
            self._cleanup_incoming(keep=None)

    def _refuse_transfer(self, t: _Transfer, reason: str, detail: str) -> None:
        self._report("refused", reason=reason, detail=detail, offer=t.offer, manifest=t.manifest)
        self._cleanup_incoming(keep=None)

    def _cleanup_incoming(self, keep: str | None) -> None:
        for p in (self.store.root / "incoming").iterdir():
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
        if keep is None:
            self._transfer = None

    # -- install, switch, rollback -----------------------------------------------------------------------

    def _install(self, offer: Offer, manifest: Manifest, payload: bytes) -> str:
        self._report("verifying", offer=offer, manifest=manifest)
        try:
            files = split_payload(manifest, payload)
            # The version may have moved on while we downloaded (another offer, a local install).
            check_manifest(manifest, expected_name=self.config.bundle_name,
                           installed_version=self.store.installed_version(), appliance_version=self.appliance_version,
                           kiosk_id=self.topics.kiosk_id, group=self.topics.group, max_bytes=self.config.max_bundle_bytes)
        except BundleError as exc:
            self._report("refused", reason=exc.reason, detail=exc.detail, offer=offer, manifest=manifest)
            return "refused"
        try:
            staged = self.store.stage(offer.envelope, files)
        except OSError as exc:   # disk full, read-only, damaged: the old model keeps serving
            self.store.discard_staged()
            self._report("failed", reason="io_error", detail=f"cannot write the staging directory: {exc}",
                         offer=offer, manifest=manifest)
            return "failed"
        self._step("staged", directory=str(staged))
        info = SlotInfo("staged", staged, offer.envelope, manifest)
        problem = self.check_slot(info)   # the real runtime, on the files as written to disk
        if problem is not None:
            self.store.discard_staged()
            reason = "golden_failed" if problem.startswith("golden") else "hash_mismatch"
            self._report("refused", reason=reason, detail=problem, offer=offer, manifest=manifest)
            return "refused"
        try:
            slot = self.store.commit_staged()
        except OSError as exc:
            self.store.discard_staged()
            self._report("failed", reason="io_error", detail=f"cannot replace the spare slot: {exc}",
                         offer=offer, manifest=manifest)
            return "failed"
        self._step("slot_written", slot=slot)
        self._report("staged", offer=offer, manifest=manifest, slot=slot)
        self._step("before_switch", slot=slot)
        try:
            new = self.store.switch(slot)
        except (SlotError, OSError) as exc:
            # The rename is the commit point: if it happened (the counter write failed after
            # it), go on with the new model - the counter is repaired at the next open.
            act = self.store.active()
            if act is None or act.digest != manifest_digest(offer.envelope):
                self._report("failed", reason="switch_failed", detail=str(exc), offer=offer, manifest=manifest)
                return "failed"
            new = act
        self._step("after_switch", slot=slot)
        # Check again from where the daemon will load it: a rename or a disk can still let us down.
        problem = self.check_slot(new)
        if problem is not None:
            self._rollback(f"new model failed its checks after the switch: {problem}", offer=offer, manifest=manifest)
            return "rolled_back"
        self._bad_digest = None
        self._report("active", offer=offer, manifest=manifest)
        self._notify()
        return "active"

    def _rollback(self, why: str, **kw: Any) -> SlotInfo | None:
        prev = self.store.previous()
        if prev is None or self.check_slot(prev) is not None:
            act = self.store.active()
            self._bad_digest = act.digest if act is not None else None
            self._report("failed", reason="no_rollback_target", detail=f"{why}; no working previous slot", **kw)
            self._notify()
            return None
        info = self.store.rollback()
        self._report("rolled_back", reason="post_switch_check_failed", detail=why, **kw)
        self._notify()
        return info

    def _notify(self) -> None:
        act = self.active_model()
        for cb in list(self._listeners):
            try:
                cb(act)
            except Exception:   # a listener's bug must not stop updates
                log.exception("update: switch listener failed")

    def recover(self) -> None:
        """At start: the active slot must pass its checks, else roll back; then resume a transfer."""
        act = self.store.active()
        if act is None:
            self._report("no_model", reason="no_active_slot", detail="no model installed yet")
        else:
            problem = self.check_slot(act)
            if problem is not None:
                self._rollback(f"active model failed its checks at start: {problem}")
            else:
                self._report("active", detail="checked at start")
        for d in sorted((self.store.root / "incoming").iterdir()):
            try:
                offer = Offer.from_bytes((d / "offer.json").read_bytes(), self.config.max_bundle_bytes)
            except (OSError, BundleError):
                shutil.rmtree(d, ignore_errors=True)
                continue
            act = self.store.active()
            if act is not None and act.digest == manifest_digest(offer.envelope):
                shutil.rmtree(d, ignore_errors=True)   # crashed after the switch: it is done
                continue
            manifest = self._check_offer(offer)
            if manifest is None:
                shutil.rmtree(d, ignore_errors=True)
                continue
            self._begin_transfer(offer, manifest)
            break

    # -- worker ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        was_connected = False
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            try:
                with self._lock:
                    if item is not None:
                        with self._qlock:
                            self._queued_bytes -= _cost(*item)
                        self._handle(*item)
                    self._check_stall()
                    now_connected = self._connected.is_set() if self._connected is not None else True
                    if now_connected and not was_connected:
                        if not self._unsent and self._last_report is not None:
                            self._unsent.append(self._last_report)   # retained state after a reconnect
                        self._send_report()
                    was_connected = now_connected
            except Exception:   # never let the agent die: the old model keeps serving
                log.exception("update: error while handling a command")
