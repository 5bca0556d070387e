"""The central collector: MQTT in, verified and decrypted records out to the database.

It subscribes with MQTT v5 shared subscriptions (``$share/<group>/...``), so several collectors
with the same group split the load; each has its own identity (``collector.NAME``) and a persistent
session, so messages that arrive while it is down wait for it at the broker. Acknowledgement is
manual: a message is PUBACKed only after its row (or its refusal) is committed, so killing a
collector at any moment loses nothing: the broker redelivers, and the store is idempotent on
(kiosk, sequence).

Two kinds of failure, never confused. A message bad in itself (any refusal below, or content the
database refuses) is archived *with its bytes* in ``rejected`` and acknowledged at once, without
delaying the others of its batch. A storage failure (disk full, database down, anything not about
one message's content) stops acknowledging: the batch is held and retried with backoff, an alarm
is raised (an error log; ``stats.storage`` / ``health()``), and work resumes by itself when the
storage is back. If even archiving a refusal fails, that too is a storage failure.

For each message, cheapest checks first: size; structure; topic versus signed header; registry
(kiosk known, signing key id registered); Ed25519 signature; time window; decryption (AES-GCM
authenticates the header too); payload (strict: ``kiosk.records.decode_payload``); then the store
decides stored/duplicate/replay (and, for evidence, whether its decision is stored).
Every refusal is counted by reason and logged; the collector keeps running whatever arrives.

**Refused for now.** Four reasons can be lifted by a later state, and a message refused for one
is reconsidered from its archived bytes (``reconsider``), stored when it now passes and its
refusal deleted: ``unknown_kiosk`` and ``unknown_signing_key`` (the kiosk or its new key
registered since; looked at when the registry is reloaded), ``future_time`` (the kiosk's clock is
no longer ahead of ours) and ``unknown_decision`` (evidence whose decision arrived since, maybe
through another collector of the share group; looked at when this collector stores decisions of
that kiosk), and all four every ``reconsider_interval_s`` and at start. The kiosk deleted its
copy when the broker took the message, so without this a decision sent before its kiosk was
registered stayed in ``rejected`` for good. Unverified messages (the first two reasons) are
archived whole up to ``RECONSIDER_UNSIGNED_BYTES``, enough for any decision or audit record.
Evidence past ``evidence_retention_days`` is deleted by the running collector (at start, then
every ``evidence_purge_interval_s``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk import envelope
from kiosk.envelope import EnvelopeError
from kiosk.keys import key_id, load_encryption_key, raw_public
from kiosk.receipts import Receipt
from kiosk.receipts import encode as encode_receipts
from kiosk.records import RecordError, decode_payload, max_plaintext
from kiosk.tls import client_tls_context
from kiosk.topics import DEFAULT_PREFIX, KioskTopics, TopicError, collector_filters, parse_topic
from tools.central.store import (
    Accepted,
    HeldRefusal,
    Refusal,
    Store,
    StoreContentError,
    StoreError,
    StoreResult,
    open_store,
)
from tools.registry import Registry

log = logging.getLogger(__name__)

#: Every reason a message can be refused for (documented; also the keys of ``stats()``).
REFUSAL_REASONS = (
    "oversized", "malformed", "unsupported_version", "bad_topic", "topic_mismatch", "unknown_kiosk", "revoked_kiosk",
    "site_mismatch", "unknown_signing_key", "bad_signature", "future_time", "stale",
    "unknown_encryption_key", "decrypt_failed", "bad_payload", "duplicate", "replay", "unstorable",
    "unknown_decision", "evidence_exists",
)
#: Refusals a later state can lift (see the module's docstring): the collector reconsiders them.
RECONSIDERED = ("unknown_kiosk", "unknown_signing_key", "future_time", "unknown_decision")
#: An unverified message refused as unknown_kiosk or unknown_signing_key is archived whole (so it
#: can be reconsidered) up to this size; larger ones (evidence) keep the usual sample.
RECONSIDER_UNSIGNED_BYTES = 32 << 10
#: The refusals of unverified messages that are kept whole (a kiosk's backlog before it or its
#: key is registered): bounded by bytes held per claimed kiosk, not per hour.
_HELD_UNVERIFIED = ("unknown_kiosk", "unknown_signing_key")
#: Refusals that are final for a reconsidered message whatever is configured or registered
#: later: its bytes do not verify or parse, it is older than any collector takes, or its kiosk
#: was revoked. Any other (a site, a schema, a key not configured yet) may still pass later: kept.
_FINAL = ("bad_signature", "topic_mismatch", "malformed", "stale", "revoked_kiosk")
#: What one held row costs beyond its bytes (the row, its index entries, its topic and detail):
#: a flood of tiny messages is bounded too.
HELD_ROW_COST = 512
#: Seconds between reading a full kiosk's held bytes again.
HELD_REREAD_S = 10.0


@dataclass(frozen=True)
class CollectorConfig:
    broker_host: str
    broker_port: int
    ca_file: Path
    cert_file: Path          # collector.NAME certificate
    key_file: Path
    enc_key_files: tuple[Path, ...]   # central X25519 private key(s); several during a rotation
    registry_file: Path
    db: str = "central.sqlite"        # a path / sqlite:///path, or postgresql://...
    prefix: str = DEFAULT_PREFIX
    share_group: str = "collectors"
    max_envelope: int = envelope.DEFAULT_MAX_ENVELOPE
    max_age_s: float = 30 * 86400     # kiosks may be offline for weeks; their outbox holds on
    max_future_s: float = 300.0       # clock skew tolerated
    batch_size: int = 200
    batch_wait_s: float = 0.02
    session_expiry_s: int = 7 * 86400
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    registry_reload_s: float = 10.0   # pick up newly registered kiosks without a restart
    # Discard the broker-side session of this identity on the first connect (its queued messages
    # and old subscriptions, e.g. after changing share_group). Normally False: resuming the
    # session is what makes a restarted collector lose nothing.
    fresh_session: bool = False
    # Policy: may decisions carry raw pen data / images (``evidence``)? Must match the kiosks'.
    allow_raw_evidence: bool = False
    # While the storage fails, the held batch is retried after min, doubling up to max, seconds.
    storage_retry_min_s: float = 0.25
    storage_retry_max_s: float = 15.0
    # Evidence (raw biometric data) is kept this long after its capture, then deleted by the
    # running collector (checked every evidence_purge_interval_s) or ``sigkiosk central purge``.
    evidence_retention_days: float = 365.0
    evidence_purge_interval_s: float = 3600.0
    # Evidence whose decision is not stored yet may be racing it through another collector of the
    # share group: held unacknowledged this long (at most evidence_orphans_max at once, well under
    # the broker's 100 in flight) for its decision, then stored or refused as unknown_decision.
    evidence_orphan_wait_s: float = 10.0
    evidence_orphans_max: int = 8
    # Refusals a later state can lift (RECONSIDERED) are looked at again this often (and when the
    # registry is reloaded, and after storing decisions), at most reconsider_limit per reason.
    reconsider_interval_s: float = 60.0
    reconsider_limit: int = 500
    # Unverified messages (no registered kiosk's signature checked) archived in ``rejected`` per
    # claimed sender and hour, by this collector; beyond, they are counted and logged, not kept:
    # any device certificate can publish on its own topic, and ``rejected`` must not fill the disk.
    unverified_archive_per_hour: int = 1000
    # Except a message kept whole to be stored once its kiosk (or its new key) is registered
    # (unknown_kiosk, unknown_signing_key): that is a kiosk's real backlog, which arrives all at
    # once when it connects, so it is bounded by the bytes held per claimed kiosk (rows received
    # within max_age_s, HELD_ROW_COST more each, until they are stored or filed as final), not
    # per hour. Each collector reads the sum when it first sees the kiosk and, at most every
    # HELD_REREAD_S, when its own count says full: a share group may hold up to its size times this.
    unverified_held_bytes_per_kiosk: int = 64 << 20


@dataclass
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    received_ms: int
    epoch: int = 0      # which connection it arrived on (packet ids are only valid on that one)


class Processor:
    """Verification and decryption, independent of MQTT (used by the collector and the benchmark)."""

    def __init__(self, registry: Registry, enc_keys: list[X25519PrivateKey], *, prefix: str = DEFAULT_PREFIX,
                 max_envelope: int = envelope.DEFAULT_MAX_ENVELOPE, max_age_s: float = 30 * 86400,
                 max_future_s: float = 300.0, allow_raw_evidence: bool = False) -> None:
        self.registry = registry
        self.allow_raw_evidence = allow_raw_evidence
        self.enc_keys = {key_id(raw_public(k)): k for k in enc_keys}
        self.prefix = prefix
        self.max_envelope = max_envelope
        self.max_age_ms = int(max_age_s * 1000)
        self.max_future_ms = int(max_future_s * 1000)
        self._verify_keys: dict[bytes, Ed25519PublicKey] = {}

    def _refuse(self, reason: str, msg: _Incoming, detail: str, kiosk: str | None = None, seq: int | None = None,
                *, signed: bool = False, receipt: bytes | None = None) -> Refusal:
        # A message whose signature verified is archived whole (a registered kiosk's key sent it:
        # it is evidence); anything else only as a bounded sample, except a small one refused for a
        # registration that may come later (it is reconsidered then, from these bytes).
        whole = signed or (reason in ("unknown_kiosk", "unknown_signing_key") and seq is not None
                           and len(msg.payload) <= RECONSIDER_UNSIGNED_BYTES)
        return Refusal(reason=reason, topic=msg.topic, received_ms=msg.received_ms, size=len(msg.payload),
                       detail=detail, kiosk_claim=kiosk, seq=seq, sample=msg.payload if whole else msg.payload[:4096],
                       whole=whole, verified=signed, receipt=receipt if signed else None)

    def process(self, msg: _Incoming, now_ms: int | None = None) -> Accepted | Refusal:
        """Verify and decrypt one message. ``now_ms``: the time to hold its signed time against for
        the future-time check (default: when it was received; a reconsidered message, now)."""
        try:
            t = parse_topic(msg.topic)
            if t.prefix != self.prefix:
                raise TopicError(f"prefix {t.prefix!r} is not ours")
        except TopicError as exc:
            return self._refuse("bad_topic", msg, str(exc))
        try:
            env = envelope.parse(msg.payload, self.max_envelope)
        except EnvelopeError as exc:
            return self._refuse(exc.reason, msg, str(exc), t.kiosk_id)
        h = env.header
        if h.seq >= 2**63:   # the databases store signed 64-bit integers; kiosks start near 2**51
            return self._refuse("malformed", msg, f"sequence number {h.seq} out of range", t.kiosk_id)
        if h.topic != msg.topic or h.kiosk_id != t.kiosk_id:
            return self._refuse("topic_mismatch", msg, f"signed header says {h.kiosk_id!r} on {h.topic!r}", t.kiosk_id, h.seq)
        entry = self.registry.kiosks.get(t.kiosk_id)
        if entry is None:
            return self._refuse("unknown_kiosk", msg, f"kiosk {t.kiosk_id!r} is not registered", t.kiosk_id, h.seq)
        if entry.revoked:   # decommissioned (sigkiosk admin revoke): its key no longer speaks for it
            return self._refuse("revoked_kiosk", msg, f"kiosk {t.kiosk_id!r} was revoked at {entry.revoked_at_ms} ms",
                                t.kiosk_id, h.seq)
        if entry.site != t.site:
            return self._refuse("site_mismatch", msg, f"kiosk is registered at site {entry.site!r}", t.kiosk_id, h.seq)
        raw = entry.key_ids().get(h.sign_key_id)
        if raw is None:
            return self._refuse("unknown_signing_key", msg, f"signing key {h.sign_key_id.hex()} is not registered for this kiosk", t.kiosk_id, h.seq)
        pub = self._verify_keys.get(raw)
        if pub is None:
            pub = self._verify_keys[raw] = Ed25519PublicKey.from_public_bytes(raw)
        try:
            envelope.verify(env, pub)
        except EnvelopeError as exc:
            return self._refuse(exc.reason, msg, str(exc), t.kiosk_id, h.seq)
        # From here on every refusal is archived whole (a registered kiosk signed it): its receipt
        # lets the kiosk drop its copy once the archive is committed.
        dkey = self.enc_keys.get(h.enc_key_id)

        def receipt() -> bytes | None:
            try:
                return None if dkey is None else envelope.receipt(env, dkey)
            except EnvelopeError:
                return None

        # Time window, only after the signature: an unsigned time proves nothing.
        now = msg.received_ms
        if h.time_ms > (now if now_ms is None else max(now, now_ms)) + self.max_future_ms:
            return self._refuse("future_time", msg, f"time is {(h.time_ms - now) / 1000:.0f} s in the future", t.kiosk_id, h.seq,
                                signed=True, receipt=receipt())
        # Status reports are exempt from the age limit: a last will is sealed at connect time and
        # may be published by the broker much later; the highest sequence wins instead.
        if t.kind != "status" and h.time_ms < now - self.max_age_ms:
            return self._refuse("stale", msg, f"time is {(now - h.time_ms) / 86_400_000:.1f} days old", t.kiosk_id, h.seq,
                                signed=True, receipt=receipt())
        if dkey is None:
            return self._refuse("unknown_encryption_key", msg, f"encrypted to unknown key {h.enc_key_id.hex()}", t.kiosk_id,
                                h.seq, signed=True)
        try:
            # Each kind inflates to its own bound: a small record of megabytes is refused unread.
            plaintext, rcpt = envelope.decrypt_with_receipt(env, dkey, max_plaintext(t.kind, raw_evidence=self.allow_raw_evidence))
        except EnvelopeError as exc:
            return self._refuse(exc.reason, msg, str(exc), t.kiosk_id, h.seq, signed=True, receipt=receipt())
        try:
            payload = decode_payload(plaintext, t.kind, allow_raw_evidence=self.allow_raw_evidence)
        except RecordError as exc:
            return self._refuse("bad_payload", msg, str(exc), t.kiosk_id, h.seq, signed=True, receipt=rcpt)
        return Accepted(kind=t.kind, kiosk_id=t.kiosk_id, site=t.site, seq=h.seq, created_ms=h.time_ms,
                        received_ms=msg.received_ms, digest=env.digest, payload=payload, raw=msg.payload,
                        receipt=rcpt)


@dataclass
class StorageHealth:
    """The storage alarm: raised on the first failed commit, cleared by the next good one."""

    ok: bool = True
    failures: int = 0                 # failed commit attempts, all outages together
    outages: int = 0
    down_since_ms: int | None = None  # start of the current outage
    held: int = 0                     # messages held unacknowledged meanwhile
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failures": self.failures, "outages": self.outages,
                "down_since_ms": self.down_since_ms, "held": self.held, "last_error": self.last_error}


@dataclass
class CollectorStats:
    received: int = 0
    stored: Counter = field(default_factory=Counter)     # kind -> rows stored
    refused: Counter = field(default_factory=Counter)    # reason -> count
    storage: StorageHealth = field(default_factory=StorageHealth)
    receipts: int = 0   # receipt entries sent back to kiosks (kiosk.receipts)
    receipts_refused: int = 0   # receipt messages the broker refused (an ACL from before receipts)

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "stored": dict(self.stored), "refused": dict(self.refused),
                "storage": self.storage.as_dict(), "receipts": self.receipts, "receipts_refused": self.receipts_refused}


class Collector:
    """Runs the MQTT subscription and the store loop. ``run()`` blocks; ``stop()`` ends it."""

    def __init__(self, config: CollectorConfig, *, client_name: str | None = None) -> None:
        self.config = config
        self._registry_mtime: tuple[int, int] = (0, 0)
        self.processor = Processor(
            self._load_registry(), [load_encryption_key(p) for p in config.enc_key_files], prefix=config.prefix,
            max_envelope=config.max_envelope, max_age_s=config.max_age_s, max_future_s=config.max_future_s,
            allow_raw_evidence=config.allow_raw_evidence,
        )
        self.store: Store = open_store(config.db, create=True)
        self.stats = CollectorStats()
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._epoch = 0
        self._client = self._make_client(client_name)
        self._last_registry_check = time.monotonic()
        if not config.evidence_retention_days > 0:
            raise ValueError("evidence_retention_days must be positive")
        self._next_purge = 0.0   # purge once at start, then every evidence_purge_interval_s
        self.purged_evidence = 0
        # Evidence held for its decision: (message, give up at monotonic time).
        self._orphans: list[tuple[_Incoming, float]] = []
        self._next_orphan_check = 0.0
        self._next_reconsider = 0.0   # at start, then every reconsider_interval_s
        self.reconsidered = 0         # messages stored after a refusal was lifted
        # Where the next look over every kiosk goes on, per reason: (received_ms, seq), or None
        # (from the newest).
        self._reconsider_from: dict[str, tuple[int, int] | None] = {}
        # Unverified refusals archived per claimed sender: (hour window's start, count).
        self._unverified: dict[str, tuple[float, int]] = {}
        # Bytes held whole for reconsideration per claimed kiosk, as last read from the database
        # plus what this collector archived since (forgotten when this collector stores or refiles
        # a kiosk's rows, or a commit fails; read again when it would pass the budget).
        self._held: dict[str, int] = {}
        self._held_read: dict[str, float] = {}    # when each was last read (monotonic)
        self._held_full: set[str] = set()          # over the budget since (warned once)
        # For retire(): when the last message came, whether to subscribe on (re)connecting, and
        # the broker's answer to the unsubscribe.
        self._last_message = time.monotonic()
        # Held by the storage thread from taking work (queue, held evidence, a stranded batch) until
        # it is stored and acknowledged: retire() looks at what is left only between two rounds.
        self._working = threading.Lock()
        self._retiring = False
        self._unsubscribed = threading.Event()
        self._unsubscribe_failed = False
        self._end_session = False   # stop() disconnects ending the session (retire())
        self._stranded: list[_Incoming] = []   # a batch an unexpected error interrupted, tried again first

    @staticmethod
    def _registry_stamp(p: Path) -> tuple[int, int]:
        st = p.stat() if p.exists() else None
        return (st.st_mtime_ns, st.st_size) if st else (0, 0)

    def _load_registry(self) -> Registry:
        p = Path(self.config.registry_file)
        self._registry_mtime = self._registry_stamp(p)
        return Registry.load(p)

    def _make_client(self, client_name: str | None) -> mqtt.Client:
        c = self.config
        # The broker replaces the client id with the certificate's CN (use_username_as_clientid);
        # a stable id is what makes the persistent session (and its queued messages) ours again.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_name or "", protocol=mqtt.MQTTv5,
                             manual_ack=True)
        client.tls_set_context(client_tls_context(c.ca_file, c.cert_file, c.key_file))
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_publish = self._on_publish
        return client

    # -- MQTT callbacks ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("collector: broker refused connection: %s", rc)
            return
        log.info("collector: connected (session present: %s)", getattr(flags, "session_present", None))
        # Messages still queued from the previous connection are redelivered by the broker now,
        # if it still has them: a new epoch makes the worker store the old copies without
        # acknowledging them (their packet ids may name other messages on this connection). Stored,
        # not dropped: a broker killed and restarted from its last autosave, or a session that
        # expired, does not redeliver them, and storing twice is harmless (found by a review).
        self._epoch += 1
        self._connected.set()
        if self._retiring:
            return
        client.subscribe([(f, mqtt.SubscribeOptions(qos=1)) for f in self._shared_filters()])

    def _shared_filters(self) -> list[str]:
        return [f"$share/{self.config.share_group}/{f}" for f in collector_filters(self.config.prefix)]

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        bad = [str(r) for r in rcs if r.is_failure]
        if bad:
            log.error("collector: subscription refused: %s", ", ".join(bad))
        else:
            self._subscribed.set()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        bad = [str(r) for r in (rcs if isinstance(rcs, list) else [rcs]) if getattr(r, "is_failure", False)]
        if bad:
            log.error("collector: unsubscribe refused: %s; the session is kept", ", ".join(bad))
            self._unsubscribe_failed = True
        self._unsubscribed.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
        # Only receipts are published. Refused (a broker ACL from before receipts): nothing is lost,
        # the kiosks send those messages again, but they would for ever.
        if rc is not None and getattr(rc, "is_failure", False):
            self.stats.receipts_refused += 1
            if self.stats.receipts_refused in (1, 100) or self.stats.receipts_refused % 10_000 == 0:
                log.error("collector: the broker refused %d receipt(s) (%s): regenerate its ACL with sigkiosk admin "
                          "broker-config, or kiosks keep sending what is stored", self.stats.receipts_refused, rc)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning("collector: disconnected (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._last_message = time.monotonic()
        self._queue.put(_Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain),
                                  int(time.time() * 1000), self._epoch))

    # -- main loop --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and process in background threads (tests, embedding)."""
        c = self.config
        if c.fresh_session:
            self._discard_session()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = c.session_expiry_s
        self._client.connect_async(c.broker_host, int(c.broker_port), keepalive=c.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        worker = threading.Thread(target=self._work, name="collector-store", daemon=True)
        self._worker: threading.Thread | None = worker
        worker.start()

    def _discard_session(self) -> None:
        """Connect once with clean start and no expiry, so the broker forgets this identity's session.

        (Connecting with clean start *and* an expiry would not do: mosquitto 2.0 does not restore
        a session begun with clean start after a broker restart, and we need it restored.)
        """
        c = self.config
        tmp = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        tmp.tls_set_context(client_tls_context(c.ca_file, c.cert_file, c.key_file))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        try:
            tmp.connect(c.broker_host, int(c.broker_port), keepalive=c.keepalive_s, clean_start=True, properties=props)
            tmp.loop_start()
            deadline = time.monotonic() + 10
            while not tmp.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)
            tmp.disconnect()
            tmp.loop_stop()
        except OSError as exc:
            log.warning("collector: could not discard the old session: %s", exc)

    def retire(self, quiet_s: float = 3.0, timeout_s: float = 600.0) -> bool:
        """Leave the share group for good, losing nothing: take up this identity's session, store
        what it holds, unsubscribe, store what was still on its way, then disconnect ending the
        session. True when it ended with nothing left in hand; False (the session kept, nothing
        lost) if it could not within ``timeout_s``.

        Stopping a collector leaves its session in the group: the broker keeps routing a share of
        the kiosks' messages into it, and discards them when the session expires (mosquitto gives
        them to no other member; found by a review: 10 of 20 decisions lost after a retirement as
        this README described it, connecting once with a fresh session and stopping)."""
        deadline = time.monotonic() + timeout_s
        self.start()
        try:
            if not self.wait_ready(max(0.0, deadline - time.monotonic())) or not self._settled(quiet_s, deadline):
                return False
            self._retiring = True
            self._unsubscribed.clear()
            self._unsubscribe_failed = False
            self._client.unsubscribe(self._shared_filters())
            if (not self._unsubscribed.wait(max(0.0, deadline - time.monotonic())) or self._unsubscribe_failed
                    or not self._settled(quiet_s, deadline)):
                return False
            if not self.stats.storage.ok:   # what it held is not stored: the session must keep it
                return False
            self._end_session = True
            log.info("collector: retired from share group %s; its session is ended", self.config.share_group)
            return True
        finally:
            self.stop()

    def _settled(self, quiet_s: float, deadline: float) -> bool:
        """Nothing queued, held or in hand, and no message for ``quiet_s``."""
        while time.monotonic() < deadline:
            # Between two of the storage thread's rounds (a round holds it while it stores, maybe
            # retrying a failing database: bounded by the deadline here).
            if self._working.acquire(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                try:
                    idle = self._queue.empty() and not self._orphans and not self._stranded
                finally:
                    self._working.release()
                if idle and time.monotonic() - self._last_message >= quiet_s:
                    return True
            time.sleep(0.05)
        return False

    def run(self) -> None:
        """Blocking: start, then wait until ``stop()`` (or Ctrl-C)."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    def health(self) -> dict[str, Any]:
        """For monitoring: healthy means connected, subscribed and storing."""
        storage = self.stats.storage.as_dict()
        connected = self._connected.is_set() and self._subscribed.is_set()
        return {"healthy": connected and storage["ok"], "connected": connected, "storage": storage,
                "queued": self._queue.qsize(), "purged_evidence": self.purged_evidence}

    def stop(self) -> None:
        if self._stop.is_set() and not getattr(self, "_worker", None):
            return
        self._stop.set()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.join(10)
            self._worker = None
        props = None
        if self._end_session:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()
        self.store.close()

    def _maybe_reload_registry(self) -> None:
        now = time.monotonic()
        if now - self._last_registry_check < self.config.registry_reload_s:
            return
        self._last_registry_check = now
        p = Path(self.config.registry_file)
        try:
            if p.exists() and self._registry_stamp(p) != self._registry_mtime:
                self.processor.registry = self._load_registry()
                log.info("collector: registry reloaded (%d kiosks)", len(self.processor.registry.kiosks))
                self._reconsider_safely(("unknown_kiosk", "unknown_signing_key"))
        except Exception as exc:   # keep the old registry: a half-written edit must not stop us
            log.error("collector: registry reload failed, keeping the previous one: %s", exc)

    def purge_evidence(self, now_ms: int | None = None) -> int:
        """Delete the evidence past its retention period now; the number of rows deleted."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        n = self.store.purge_evidence(now_ms - int(self.config.evidence_retention_days * 86_400_000))
        self.purged_evidence += n
        if n:
            log.info("collector: purged %d evidence row(s) older than %g days", n, self.config.evidence_retention_days)
        return n

    def _maybe_purge_evidence(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + self.config.evidence_purge_interval_s
        try:
            self.purge_evidence()
        except StoreError as exc:   # retried at the next interval; storing goes on meanwhile
            log.error("collector: purging expired evidence failed: %s", exc)

    def reconsider(self, reasons: tuple[str, ...] = RECONSIDERED, kiosks: Sequence[str] | None = None,
                   now_ms: int | None = None) -> int:
        """Messages refused for ``reasons`` (of the claimed ``kiosks``; all without) that pass now:
        stored, and their refusals deleted. Returns how many were stored. Raises StoreError."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        stored = 0
        for reason in reasons:
            # A refusal of an unregistered kiosk can pass only once it is registered.
            claims = kiosks
            if reason in ("unknown_kiosk", "unknown_signing_key"):
                registered = sorted(k for k, e in self.processor.registry.kiosks.items() if not e.revoked)
                claims = registered if kiosks is None else [k for k in kiosks if k in registered]
            since_ms, limit = now_ms - self.processor.max_age_ms, self.config.reconsider_limit
            if reason == "unknown_decision":
                # Evidence is large (up to the envelope limit) and travels right after its decision:
                # a day back, and a tenth as many at once, bound what each look reads and decrypts.
                since_ms, limit = max(since_ms, now_ms - 86_400_000), max(1, limit // 10)
            # A look over every kiosk goes on from where the last one stopped, back to the newest
            # once it has read them all: rows that keep failing (newest first) cannot take every
            # look's places and starve older ones that would pass. A look for given kiosks (their
            # decisions just stored) reads their newest.
            before = self._reconsider_from.get(reason) if kiosks is None else None
            held = self.store.refused_for_now(reason, claims, since_ms=since_ms, limit=limit, before=before)
            if kiosks is None:
                self._reconsider_from[reason] = (held[-1].received_ms, held[-1].seq) if len(held) >= limit else None
            passing: list[tuple[HeldRefusal, Accepted]] = []
            final: list[tuple[HeldRefusal, str, str]] = []
            for h in held:
                try:
                    topic = envelope.parse(h.message, self.processor.max_envelope).header.topic
                    r = self.processor.process(_Incoming(topic, h.message, 0, 0, False, h.received_ms), now_ms=now_ms)
                except Exception as exc:   # it was refused before; a message that cannot be read stays so
                    log.debug("collector: refused message of %s %d not reconsidered: %s", h.kiosk_claim, h.seq, exc)
                    continue
                if isinstance(r, Accepted):
                    passing.append((h, r))
                elif r.reason in _FINAL:
                    # It still fails, for a reason no later state lifts (tampered, too old, its
                    # kiosk revoked): final. Left under its old reason, the newest such rows would
                    # fill every look (newest first, reconsider_limit) and starve older ones.
                    final.append((h, r.reason, f"{r.detail} (reconsidered; refused first as {reason})"))
            self.store.refile_refused(final)
            if final:
                self._forget_held(h.kiosk_claim for h, _, _ in final)
            if not passing:
                continue
            results = self.store.store([a for _, a in passing], archive=False)
            done = [h for (h, _), res in zip(passing, results, strict=True) if res in ("stored", "duplicate")]
            self.store.forget_refused(done)
            self._forget_held(h.kiosk_claim for h in done)
            for (h, a), res in zip(passing, results, strict=True):
                if res == "stored":
                    stored += 1
                    self.stats.stored[a.kind] += 1
                    log.info("collector: kiosk %s %s %d, refused as %s, stored now", a.kiosk_id, a.kind, a.seq, h.reason)
        self.reconsidered += stored
        return stored

    def _reconsider_safely(self, reasons: tuple[str, ...], kiosks: Sequence[str] | None = None) -> None:
        try:
            self.reconsider(reasons, kiosks)
        except StoreError as exc:   # tried again at the next interval; storing goes on meanwhile
            log.error("collector: reconsidering refused messages failed: %s", exc)
        except Exception:   # after a batch's acknowledgements: it must not make the batch run again
            log.exception("collector: reconsidering refused messages failed")

    def _maybe_reconsider(self) -> None:
        now = time.monotonic()
        if now < self._next_reconsider:
            return
        self._next_reconsider = now + self.config.reconsider_interval_s
        self._reconsider_safely(RECONSIDERED)

    def _is_orphan(self, a: Accepted, earlier: list[Accepted]) -> bool:
        """Evidence whose decision is neither stored nor earlier in its batch."""
        if a.kind != "evidence":
            return False
        ref, digest = a.payload.get("decision_seq"), a.payload.get("decision_digest")
        if any(e.kind == "decision" and e.kiosk_id == a.kiosk_id and e.seq == ref for e in earlier):
            return False
        try:
            return not self.store.has_decision(a.kiosk_id, int(ref), str(digest))   # type: ignore[arg-type]
        except StoreError:   # the store decides (and holds the batch while it fails)
            return False

    def _retry_orphans(self) -> None:
        """Held evidence whose decision has arrived, or whose wait is over, goes through (then it is
        stored, or refused as unknown_decision); the rest waits on. What was held from an earlier
        connection goes through at once (stored, not acknowledged: see ``_on_connect``)."""
        now = time.monotonic()
        if not self._orphans or now < self._next_orphan_check:
            return
        self._next_orphan_check = now + 0.25
        ready: list[_Incoming] = []
        waiting: list[tuple[_Incoming, float]] = []
        for m, give_up in self._orphans:
            if m.epoch != self._epoch:   # from an earlier connection: it waits no longer
                ready.append(m)
                continue
            try:
                r = self.processor.process(m) if give_up > now else None
            except Exception:   # handle_batch reports it
                r = None
            if r is None or not isinstance(r, Accepted) or not self._is_orphan(r, []):
                ready.append(m)
            else:
                waiting.append((m, give_up))
        self._orphans = waiting
        if ready:
            try:
                self.handle_batch(ready, hold=False)
            except Exception:
                self._stranded = ready + self._stranded
                raise

    def _work(self) -> None:
        # On stop, whatever is still queued is simply not acknowledged: the broker redelivers it.
        while not self._stop.is_set():
            try:
                self._work_once()
            except Exception as exc:   # last resort: this thread ending would stop all storing, silently
                log.exception("collector: unexpected error in the storage thread; its batch is held and tried again")
                self._storage_failing(exc, len(self._stranded) or None)
                self._stop.wait(self.config.storage_retry_min_s)

    def _work_once(self) -> None:
        """One round of the storage thread: purge and retry when due, then one batch if any."""
        with self._working:
            self._work_round()

    def _work_round(self) -> None:
        self._maybe_purge_evidence()
        self._maybe_reconsider()
        self._retry_orphans()
        # A batch an unexpected error interrupted first: taken off the queue and not acknowledged,
        # the broker would not send it again on this connection (found by a review: it was lost
        # from memory, holding broker in-flight slots, while health turned green again).
        batch, self._stranded = self._stranded, []
        if not batch:
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                self._maybe_reload_registry()
                return
            deadline = time.monotonic() + self.config.batch_wait_s
            while len(batch) < self.config.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
        try:
            self.handle_batch(batch)
        except Exception:
            self._stranded = batch
            raise
        self._maybe_reload_registry()

    def _within_archive_budget(self, r: Refusal) -> Refusal:
        """``r``, or ``r`` counted only once its sender has had ``unverified_archive_per_hour``
        unverified messages archived this hour (a verified one is always archived); one kept whole
        for reconsideration, once its claimed kiosk holds ``unverified_held_bytes_per_kiosk``."""
        if r.verified:
            return r
        if r.whole and r.kiosk_claim is not None and r.reason in _HELD_UNVERIFIED:
            return self._within_held_budget(r, r.kiosk_claim)
        claim = r.kiosk_claim or "(no kiosk)"
        now = time.monotonic()
        start, n = self._unverified.get(claim, (now, 0))
        if now - start >= 3600.0:
            start, n = now, 0
        self._unverified[claim] = (start, n + 1)
        if n < self.config.unverified_archive_per_hour:
            return r
        if n == self.config.unverified_archive_per_hour:
            log.warning("collector: more than %d unverified messages this hour claiming %s: counted, no longer "
                        "archived until the hour is over", n, claim[:64])
        return replace(r, archive=False)

    def _within_held_budget(self, r: Refusal, claim: str) -> Refusal:
        """Raises StoreError if the held bytes cannot be read (``_commit`` retries the batch)."""
        budget = self.config.unverified_held_bytes_per_kiosk
        now = time.monotonic()
        cost = r.size + HELD_ROW_COST
        held = self._held.get(claim)
        # Read again when unknown, or when full and not read for a while (stored messages' rows
        # are deleted by the reconsideration; a flood over the budget does not query each time).
        if held is None or (held + cost > budget and now - self._held_read.get(claim, -HELD_REREAD_S) >= HELD_REREAD_S):
            # What the reconsideration can still give back: received within max_age_s.
            since_ms = int(time.time() * 1000) - self.processor.max_age_ms
            rows, size = self.store.held_bytes(claim, _HELD_UNVERIFIED, since_ms=since_ms)
            held = size + rows * HELD_ROW_COST
            self._held_read[claim] = now
        if held + cost <= budget:
            self._held[claim] = held + cost
            self._held_full.discard(claim)
            return r
        self._held[claim] = held
        if claim not in self._held_full:
            self._held_full.add(claim)
            log.warning("collector: kiosk %s (unregistered, or its key is) holds %d bytes of messages to store once "
                        "it is registered: more are counted, no longer kept", claim[:64], held)
        return replace(r, archive=False)

    def _forget_held(self, claims: Iterable[str]) -> None:
        """Read these kiosks' held bytes again at their next message: rows of theirs were deleted
        or filed under a final reason."""
        for claim in claims:
            self._held.pop(claim, None)

    def _store_isolating(self, accepted: list[Accepted], refusals: list[Refusal]) -> tuple[list[StoreResult], list[Refusal]]:
        """Store a batch; if the database refuses an item's *content*, store the others and archive
        that one (with its bytes) as ``unstorable``, with no wait. A StoreError that is not about
        content propagates: nothing may be acknowledged then."""
        try:
            return self.store.store(accepted, refusals), []
        except StoreContentError as exc:
            log.error("collector: %s; finding the item", exc)
        results: list[StoreResult] = []
        unstorable: list[Refusal] = []
        for a in accepted:
            try:
                results.extend(self.store.store([a]))
            except StoreContentError as exc:
                log.error("collector: kiosk %s sequence %d refused by the database: %s", a.kiosk_id, a.seq, exc)
                unstorable.append(Refusal("unstorable", f"{a.site}/{a.kiosk_id}/{a.kind}", a.received_ms, len(a.raw),
                                          f"the database refused it: {exc}"[:1000], a.kiosk_id,
                                          a.seq if 0 <= a.seq < 2**63 else None, sample=a.raw, whole=True,
                                          verified=True))
                results.append("ignored")
        try:
            self.store.store([], [*refusals, *unstorable])
        except StoreContentError as exc:
            # Some refusal's own text is what the database refuses (the store's text cleaning
            # should make this impossible): archive them with their bytes and a plain note, rather
            # than hold the batch for ever. A storage failure still propagates.
            log.error("collector: archiving refusals needed plain text: %s", exc)
            self.store.store([], [replace(r, topic="(not storable)", detail=f"{r.reason}; detail not storable",
                                                      kiosk_claim=None, seq=None) for r in [*refusals, *unstorable]])
        return results, unstorable

    def _storage_failing(self, exc: BaseException, held: int | None) -> None:
        """Raise (or keep) the storage alarm in stats/health(); ``held``: the messages now held, if known."""
        health = self.stats.storage
        health.failures += 1
        health.last_error = str(exc)[:500]
        if held is not None:
            health.held = held
        if health.ok:
            health.ok = False
            health.outages += 1
            health.down_since_ms = int(time.time() * 1000)

    def _commit(self, accepted: list[Accepted], refusals: list[Refusal],
                held: int) -> tuple[list[StoreResult], list[Refusal]] | None:
        """Commit until it works; None if we are stopping (then the broker redelivers what we
        hold). Never returns before the batch is durably stored; a reconnect meanwhile does not
        drop it (the broker may no longer have it)."""
        health = self.stats.storage
        delay = self.config.storage_retry_min_s
        while True:
            try:
                # Decided at each attempt: the held bytes are read from the storage that may be
                # failing, and what a failed attempt counted was not archived.
                out = self._store_isolating(accepted, [self._within_archive_budget(r) for r in refusals])
            except StoreError as exc:
                self._held.clear()
                self._storage_failing(exc, held)
                # The alarm: an error every attempt (the backoff bounds how often), and the state
                # in stats/health(). Nothing of this batch is acknowledged.
                log.error("collector: STORAGE FAILING, %d message(s) held unacknowledged, retry in %.1f s: %s",
                          held, delay, exc)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.config.storage_retry_max_s)
                continue
            if not health.ok:
                down_s = (time.time() * 1000 - (health.down_since_ms or 0)) / 1000
                log.warning("collector: storage is back after %.1f s; the %d held message(s) are stored", down_s, held)
                health.ok, health.down_since_ms, health.held = True, None, 0
            return out

    def handle_batch(self, batch: list[_Incoming], *, hold: bool = True) -> None:
        """Verify, store and acknowledge a batch. ``hold``: evidence whose decision is not stored
        yet is kept back, unacknowledged, for its decision (``_retry_orphans``)."""
        if not batch:
            return
        accepted: list[Accepted] = []
        refusals: list[Refusal] = []
        kept: list[_Incoming] = []
        for m in batch:
            try:
                r = self.processor.process(m)
            except Exception as exc:   # a bug must not kill the collector or lose the message
                log.exception("collector: unexpected error processing a message")
                r = Refusal("malformed", m.topic, m.received_ms, len(m.payload), f"internal error: {type(exc).__name__}",
                            sample=m.payload[:self.processor.max_envelope], whole=True)
            if isinstance(r, Accepted):
                if hold and len(self._orphans) < self.config.evidence_orphans_max and self._is_orphan(r, accepted):
                    self._orphans.append((m, time.monotonic() + self.config.evidence_orphan_wait_s))
                    continue
                accepted.append(r)
            else:
                refusals.append(r)
            kept.append(m)
        batch = kept
        if not batch:
            return
        committed = self._commit(accepted, refusals, len(batch))
        if committed is None:
            return
        results, unstorable = committed
        self.stats.received += len(batch)
        for a, res in zip(accepted, results, strict=True):
            if res == "stored" or res == "ignored":
                self.stats.stored[a.kind] += res == "stored"
            else:
                self.stats.refused[res] += 1
                if res == "replay":
                    log.warning("collector: refused replay: kiosk %s sequence %d reused with different content", a.kiosk_id, a.seq)
        for r in [*refusals, *unstorable]:
            self.stats.refused[r.reason] += 1
            log.warning("collector: refused message on %s: %s (%s)", r.topic[:200], r.reason, r.detail[:200])
        for m in batch:
            if m.qos > 0 and m.epoch == self._epoch:
                self._client.ack(m.mid, m.qos)
        self._send_receipts(accepted, [*refusals, *unstorable])
        # Evidence refused before its decision came (another collector's batch, or the wait was
        # over): its decision may be among those just stored.
        kiosks = sorted({a.kiosk_id for a, res in zip(accepted, results, strict=True)
                         if a.kind == "decision" and res == "stored"})
        if kiosks:
            self._reconsider_safely(("unknown_decision",), kiosks)

    def _send_receipts(self, accepted: Sequence[Accepted], refusals: Sequence[Refusal]) -> None:
        """Tell each kiosk which of its messages this committed batch holds (``kiosk.receipts``).

        Every accepted item is in the database now, stored or archived whole (a duplicate's
        original is), and so is every refusal that carries a receipt (a registered kiosk signed
        it). QoS 1, not retained: one lost on the way is answered by the kiosk sending the
        message again, and its duplicate is receipted again."""
        by_kiosk: dict[tuple[str, str], list[Receipt]] = {}
        for a in accepted:
            if a.receipt is not None:
                by_kiosk.setdefault((a.site, a.kiosk_id), []).append(Receipt(a.seq, a.receipt))
        for r in refusals:
            if r.receipt is not None and r.seq is not None:
                try:
                    t = parse_topic(r.topic)
                except TopicError:
                    continue
                by_kiosk.setdefault((t.site, t.kiosk_id), []).append(Receipt(r.seq, r.receipt))
        for (site, kiosk_id), items in sorted(by_kiosk.items()):
            topic = KioskTopics(self.config.prefix, site, kiosk_id).receipt
            for message in encode_receipts(items):
                info = self._client.publish(topic, message, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    log.debug("collector: receipts for %s not sent now (%s); the kiosk sends again",
                              kiosk_id, mqtt.error_string(info.rc))
            self.stats.receipts += len(items)


def load_config(data: Mapping[str, Any], base_dir: Path | None = None) -> CollectorConfig:
    """Build a CollectorConfig from a mapping (the ``[central]`` table of a TOML file)."""
    kw = dict(data)
    for k in ("ca_file", "cert_file", "key_file", "registry_file"):
        if k in kw:
            p = Path(kw[k])
            kw[k] = p if p.is_absolute() or base_dir is None else base_dir / p
    if "enc_key_files" in kw:
        kw["enc_key_files"] = tuple(
            Path(p) if Path(p).is_absolute() or base_dir is None else base_dir / p for p in kw["enc_key_files"]
        )
    return CollectorConfig(**kw)
