"""The kiosk's secure link to the central server: ``KioskLink(config).publish_decision(...)``.

Every decision and log record is sealed (``kiosk.envelope``), committed to the on-disk outbox
(``kiosk.outbox``) and only then published over MQTT (TLS, QoS 1). A sender thread publishes the
outbox oldest-first with a bounded number of messages in flight. A log row is deleted when the
broker's PUBACK arrives; a decision, staff action or evidence row only when a collector's receipt
for it comes back on the kiosk's receipt topic (``kiosk.receipts``; ``[link] receipts``), since the
broker acknowledges what it holds in memory. Rows left over by a disconnect or a restart are sent
again in order; a sent row whose receipt is overdue once a collector has receipted a message
published after it (``Outbox.pending``). Reconnects use paho's exponential back-off;
a message the broker refuses is retried with its own back-off.

A connection that cannot be made is logged at ERROR with its reason, named for the person who
fixes it (``describe_connection_error``: TLS and which side distrusts which, refused, host not found,
timed out, the broker refusing the kiosk); a link still not connected ``connect_warn_s`` after
``start()`` says so at ERROR, so "kiosk ready" never hides a link that cannot connect. The reason is
in ``stats().problem`` (the daemon's status) until the next successful connection.

The status topic is retained: ``online`` with health figures every ``health_interval_s``, and a
last will ``offline`` that the broker publishes if the kiosk vanishes. Status is not queued in the
outbox: an old health report is worthless after a restart.

Usage (the daemon)::

    link = KioskLink(LinkConfig.from_mapping(toml["link"], base_dir=config_dir), model_versions={...})
    logs = MqttLogHandler(link)                   # kiosk.logging_mqtt: redacted, rate-limited
    logging.getLogger().addHandler(logs)
    link.start()
    seq = link.publish_decision({"decision": "APPROVED", "score": 0.93, "reasons": ["shape"],
                                 "model_versions": {...}, "timings_ms": {...}})
    link.add_command_handler(update_agent.on_command)   # model/... command topics (later issue)
    ...
    logs.close(); link.close()                    # the handler first: it writes into the link
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from kiosk import envelope, receipts
from kiosk.errors import ApplianceError
from kiosk.keys import key_id, load_public_raw, load_signing_key, raw_public
from kiosk.outbox import Outbox, OutboxError, receipt_waits_problem
from kiosk.records import (
    AuditRecord,
    DecisionRecord,
    EvidenceRecord,
    LogEntry,
    RecordError,
    StatusRecord,
    encode_payload,
)
from kiosk.tls import client_tls_context
from kiosk.topics import DEFAULT_PREFIX, KioskTopics, validate_id

log = logging.getLogger(__name__)

SOFTWARE_VERSION = "0.1.0"
#: Most messages paho holds to send (in flight included; ``mqtt.Client.max_queued_messages_set``).
MAX_QUEUED = 100
#: Kinds kept until a collector's receipt says they are stored (``[link] receipts``).
RECEIPTED_KINDS = ("decision", "audit", "evidence")


class LinkError(ApplianceError, RuntimeError):
    """The link could not accept a message (bad record, outbox unavailable)."""


@dataclass(frozen=True)
class LinkConfig:
    """Configuration of the link: the ``[link]`` table of the kiosk's TOML file.

    Paths may be relative; ``from_mapping`` resolves them against the configuration's directory.
    """

    kiosk_id: str
    site: str
    broker_host: str
    broker_port: int
    ca_file: Path            # the device CA (trust anchor for the broker's certificate)
    cert_file: Path          # this kiosk's TLS client certificate (CN = kiosk_id)
    key_file: Path           # its TLS private key
    sign_key_file: Path      # Ed25519 key signing envelopes
    central_pub_file: Path   # the central server's X25519 public key (base64 raw)
    outbox_path: Path
    group: str | None = None
    prefix: str = DEFAULT_PREFIX
    keepalive_s: int = 30
    health_interval_s: float = 60.0
    log_quota_bytes: int = 8 << 20
    evidence_quota_bytes: int = 256 << 20   # evidence waiting for the link (kiosk.outbox.Outbox)
    max_inflight: int = 20
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    resend_after_s: float = 60.0         # re-publish a row unacknowledged this long while connected
    allow_raw_evidence: bool = False     # policy: may decisions carry raw pen data / images?
    # Seal each decision's questioned signature (kiosk.evidence) after it, for disputes. On by
    # default: a bank must be able to show a disputed signature to an examiner, and it travels
    # encrypted to the central key only; the central side keeps it for its retention period.
    evidence: bool = True
    connect_warn_s: float = 5.0          # still not connected this long after start(): an ERROR says why
    # Keep decisions, staff actions and evidence after the broker's PUBACK until a collector's
    # receipt says they are stored (kiosk.receipts). Off only for a fleet whose collectors are
    # older than receipts: they never send one, and every such row would stay in the outbox.
    receipts: bool = True
    receipt_wait_s: float = 120.0        # a sent row with no receipt this long is sent again...
    receipt_wait_max_s: float = 3600.0   # ...waiting twice as long each time, up to this

    def __post_init__(self) -> None:
        validate_id(self.kiosk_id, "kiosk id")
        validate_id(self.site, "site")
        validate_id(self.prefix, "prefix")
        if self.group is not None:
            validate_id(self.group, "group")
        if not 0 < int(self.broker_port) < 65536:
            raise ValueError(f"broker_port out of range: {self.broker_port}")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if problem := receipt_waits_problem(self.receipt_wait_s, self.receipt_wait_max_s):
            raise ValueError(problem)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> LinkConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown link settings: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("ca_file", "cert_file", "key_file", "sign_key_file", "central_pub_file", "outbox_path"):
                p = Path(value)
                kwargs[name] = p if p.is_absolute() or base_dir is None else Path(base_dir) / p
            else:
                kwargs[name] = value
        return cls(**kwargs)

    @property
    def topics(self) -> KioskTopics:
        return KioskTopics(self.prefix, self.site, self.kiosk_id, self.group)


@dataclass(frozen=True)
class LinkStats:
    connected: bool
    queue_depth: Mapping[str, int]   # not yet delivered, receipts awaited included
    in_flight: int
    dropped_logs: int
    errors: int
    published: int
    uptime_s: float
    last_error: str | None = None
    problem: str | None = None   # why the link is not connected (None once it connects)
    #: Wall-clock time (epoch s) the link last connected or lost its connection; its start when it
    #: never connected ("not connected since ..." on the staff view).
    since: float | None = None
    #: Messages per kind the broker took whose collector receipt has not come (part of
    #: queue_depth, from the same read), and how long ago the oldest of each was first sent (s).
    awaiting_receipt: Mapping[str, int] = field(default_factory=dict)
    oldest_unconfirmed_s: Mapping[str, float] = field(default_factory=dict)


def describe_connection_error(error: BaseException | str, host: str, port: int) -> str:
    """What went wrong with a connection attempt, in words that say what to check.

    ``error`` is the exception paho's connect raised, or the text of the socket error paho logged
    (a TLS 1.3 server reports a distrusted client certificate only after the handshake, on the
    first read). The result starts with the class of failure: ``TLS``, ``refused``, ``host not
    found``, ``timed out``, ``network``.
    """
    text = str(error)
    low = text.lower()
    where = f"{host}:{port}"
    if isinstance(error, ssl.SSLCertVerificationError) or "certificate_verify_failed" in low:
        detail = getattr(error, "verify_message", None) or text
        if "hostname" in low or "ip address mismatch" in low:
            return (f"TLS: the broker's certificate does not name {host!r} ({detail}); "
                    "set [link] broker_host to a name in the broker's certificate")
        return (f"TLS: this kiosk does not trust the broker's certificate ({detail}); "
                "[link] ca_file must be the fleet's device CA (ca.crt) that signed the broker's certificate")
    if "unknown_ca" in low or "unknown ca" in low:
        return ("TLS: the broker does not trust this kiosk's certificate (alert unknown ca); "
                "[link] cert_file must be issued by the fleet's device CA (sigkiosk admin issue-cert --kiosk ID)")
    if "revoked" in low:
        return "TLS: the broker refused this kiosk's certificate: it is revoked (issue a new one)"
    if "certificate_expired" in low or "certificate expired" in low:
        return "TLS: a certificate has expired (the kiosk's or the broker's); renew it"
    if "bad_certificate" in low or "bad certificate" in low or "certificate required" in low:
        return ("TLS: the broker refused this kiosk's certificate (bad certificate); check [link] cert_file "
                "and key_file are this kiosk's pair, issued by the fleet's device CA")
    if "wrong_version_number" in low or "wrong version number" in low or "record layer failure" in low:
        return (f"TLS: {where} does not speak TLS (a plain MQTT port, 1883?); set [link] broker_port to the "
                "broker's TLS port (8883)")
    if isinstance(error, ssl.SSLError) or "[ssl" in low:
        return f"TLS: {text}"
    if isinstance(error, ConnectionRefusedError) or "connection refused" in low:
        return f"refused: nothing accepts connections at {where}; check [link] broker_port and that the broker runs"
    if isinstance(error, socket.gaierror) or "name or service not known" in low or "name resolution" in low:
        return f"host not found: {host!r} does not resolve; check [link] broker_host and DNS"
    if isinstance(error, TimeoutError) or "timed out" in low:
        return f"timed out connecting to {where}; check [link] broker_host, broker_port and the firewall"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)) or "reset by peer" in low:
        return (f"network: {where} closed the connection during the handshake ({text}); is the kiosk's "
                "certificate trusted and not revoked there?")
    if isinstance(error, OSError) and error.strerror:
        return f"network: {error.strerror} ({where})"
    return f"network: {text} ({where})"


class _Client(mqtt.Client):
    """paho's client, telling the link why a connection attempt failed.

    paho's network loop catches the exception of a failed connect (refused, TLS...) and only
    retries; ``reconnect`` is where it is raised, so the link hears it here first.
    """

    connect_failed: Callable[[BaseException], None] | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            if self.connect_failed is not None:
                self.connect_failed(exc)
            raise


@dataclass
class _Flight:
    row_id: int
    info: mqtt.MQTTMessageInfo
    sent_at: float
    attempts: int = 0
    order: int = 0    # publish order (Outbox.pending)


# PUBACK reason 0x10: the broker accepted the message but had no subscriber to route it to (no
# collector session exists, e.g. before the first collector ever connected, or after a broker lost
# its sessions). The message would go nowhere: keep it in the outbox and retry.
_NO_SUBSCRIBERS = "No matching subscribers"


class KioskLink:
    """Publishes sealed decisions, logs and status for one kiosk. Thread-safe."""

    def __init__(self, config: LinkConfig, *, model_versions: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self._sign_key = load_signing_key(config.sign_key_file)
        self._sign_key_id = key_id(raw_public(self._sign_key))
        self._central_pub = X25519PublicKey.from_public_bytes(load_public_raw(config.central_pub_file))
        self.outbox = Outbox(config.outbox_path, owner=config.kiosk_id, log_quota_bytes=config.log_quota_bytes,
                             evidence_quota_bytes=config.evidence_quota_bytes, receipt_wait_s=config.receipt_wait_s,
                             receipt_wait_max_s=config.receipt_wait_max_s)
        self._model_versions: dict[str, str] = dict(model_versions or {})
        self._started_at = time.monotonic()
        self._errors = 0
        self._last_error: str | None = None
        self._published = 0
        self._cond = threading.Condition()
        self._connected = False
        self._connected_since = 0.0
        self._state_since = time.time()   # wall clock, for people: when connected last changed
        self._stop = threading.Event()
        self._failures: dict[int, str] = {}
        self._inflight: dict[int, _Flight] = {}   # row id -> flight
        self._receipts: list[receipts.Receipt] = []   # received on the network thread, applied by the sender
        self._bad_receipts = 0
        # Publish order: every message this link publishes (rows, status reports) gets the next
        # number, continuing from the outbox's; ``_orders`` remembers the latest (sequence number
        # -> order). The highest order a collector has receipted since the start: a row published
        # before it whose receipt is overdue was lost, not queued (Outbox.pending).
        self._order = self.outbox.last_sent_order()
        # seq -> (order, a status report's receipt token; None for a row, whose token the outbox keeps)
        self._orders: OrderedDict[int, tuple[int, bytes | None]] = OrderedDict()
        self._receipted_order: int | None = None
        # The receipt subscription of this connection: None asked (or not yet), True granted,
        # False refused (asked again at each health report).
        self._receipts_granted: bool | None = None
        # The command subscriptions' SUBSCRIBE ids: every other SUBACK answers the receipts'. Never
        # held while calling paho: paho holds its callback lock while it calls _on_subscribe.
        self._command_sub_mids: set[int] = set()
        self._sub_lock = threading.Lock()
        if not config.receipts:
            # Rows sealed while receipts were on would wait for ever for a receipt nobody sends.
            forgotten = self.outbox.forget_receipts()
            if forgotten:
                log.warning("link: [link] receipts = false: %d row(s) that waited for a collector's receipt are "
                            "sent again and deleted at the broker's acknowledgement", forgotten)
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._will_seq: int | None = None
        self._last_will_seq: int | None = None
        self._command_handlers: list[Callable[[str, bytes], None]] = []
        self._site_threshold: float | None = None
        self._problem: str | None = None           # why the last connection attempt failed
        self._problem_logged: dict[str, float] = {}   # reason -> when it was last logged at ERROR
        self._failed_attempts = 0
        self._socket_error: str | None = None      # the last socket error paho logged
        self._warned_not_connected = False
        self._reported_failures: int = 0                 # see _on_connect
        self._reported_problem: str | None = None
        #: Set once the broker has granted the command-topic subscriptions of the current connection.
        self.commands_ready = threading.Event()
        # The envelope digests of the latest decisions (seq -> SHA-256 of the signed part): their
        # evidence names the exact decision it belongs to (``decision_digest``).
        self._decision_digests: OrderedDict[int, str] = OrderedDict()

    # -- public API ---------------------------------------------------------------------------

    def publish_decision(self, record: DecisionRecord | Mapping[str, Any]) -> int:
        """Seal and durably queue one decision; return its sequence number.

        Returns once the decision is committed to disk (not when it reaches the server): from
        then on it survives crashes and restarts and is delivered exactly once to the database.
        Raises ``LinkError`` for an invalid record or an unusable outbox (e.g. disk full).
        """
        try:
            if not isinstance(record, DecisionRecord):
                record = DecisionRecord.from_dict(record, allow_raw_evidence=self.config.allow_raw_evidence)
            elif record.evidence and not self.config.allow_raw_evidence:
                raise RecordError("decision carries raw evidence but the policy does not allow it")
        except (RecordError, TypeError) as exc:
            raise LinkError(f"decision refused: {exc}") from exc
        return self._enqueue("decision", record.to_payload(), record.created_ms)

    def decision_digest(self, seq: int) -> str | None:
        """The envelope digest of a decision this link queued recently (its last 64), else None."""
        with self._cond:
            return self._decision_digests.get(seq)

    def publish_evidence(self, record: EvidenceRecord) -> int:
        """Seal and durably queue a decision's evidence (``kiosk.evidence``); its sequence number.

        Called after the decision is queued, never before: the decision never waits on it. A
        record whose sealed envelope exceeds the envelope limit is refused whole (``LinkError``,
        nothing queued), as is evidence while ``[link] evidence = false`` or on a nearly full disk.
        """
        if not self.config.evidence:
            raise LinkError("evidence refused: [link] evidence = false")
        if not isinstance(record, EvidenceRecord):
            raise LinkError("evidence refused: not an EvidenceRecord")
        return self._enqueue("evidence", record.to_payload(), record.created_ms)

    def publish_audit(self, record: AuditRecord) -> int:
        """Seal and durably queue one staff action (``kiosk.staff``); return its sequence number.

        Like a decision: returns once the record is committed to the outbox, and is never dropped
        under the log quota. Raises ``LinkError`` if it cannot be stored.
        """
        if not isinstance(record, AuditRecord):
            raise LinkError("audit refused: not an AuditRecord")
        return self._enqueue("audit", record.to_payload(), record.created_ms)

    def publish_log(self, entry: LogEntry) -> int:
        """Queue one (already redacted) log record; may drop older logs under the disk quota."""
        return self._enqueue("log", entry.to_payload(), entry.created_ms)

    def add_command_handler(self, handler: Callable[[str, bytes], None]) -> None:
        """Receive messages on this kiosk's command topics (``.../model/#`` and its group's).

        The link subscribes on every connection; ``handler(topic, payload)`` runs on the network
        thread, so it should hand work off quickly. Payloads are whatever admins publish there
        (signed bundles, verified by the update agent - not by the link).
        """
        self._command_handlers.append(handler)
        client = self._client
        if client is not None and self._connected:
            self._subscribe_commands(client)

    def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish an already sealed message now (QoS 1), bypassing the outbox.

        For senders that keep their own retry state (the update agent's signed, retained step
        reports); False when not connected, so the caller keeps the message and tries again.
        """
        client = self._client
        if client is None or not self._connected:
            return False
        return client.publish(topic, payload, qos=1, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def set_model_versions(self, versions: Mapping[str, str]) -> None:
        self._model_versions = dict(versions)

    def set_site_threshold(self, threshold: float | None) -> None:
        """The site calibration's active threshold, for the status report (None: not calibrating)."""
        self._site_threshold = None if threshold is None else float(threshold)

    def note_error(self, message: str | None = None) -> None:
        """Count an error for the health report (the log handler calls this for ERROR records)."""
        self._errors += 1
        if message:
            self._last_error = message[:200]

    def start(self) -> None:
        """Connect (in the background, retrying with back-off) and start sending the outbox."""
        if self._thread is not None:
            return
        c = self.config
        client = _Client(
            CallbackAPIVersion.VERSION2, client_id=c.kiosk_id, protocol=mqtt.MQTTv5,
        )
        client.connect_failed = lambda exc: self._connection_failed(
            describe_connection_error(exc, c.broker_host, int(c.broker_port)))
        client.on_log = self._on_log
        client.tls_set_context(client_tls_context(c.ca_file, c.cert_file, c.key_file))
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(c.max_inflight)
        # paho queues what waits for an in-flight slot without a bound; the outbox hands it at most
        # max_inflight rows, but the update agent's reports go straight in (one per garbage offer
        # an admin credential can publish): past this, publish says so and the caller keeps its own.
        client.max_queued_messages_set(max(MAX_QUEUED, 4 * c.max_inflight))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._set_will(client)
        self._client = client
        client.connect_async(c.broker_host, int(c.broker_port), keepalive=c.keepalive_s)
        client.loop_start()
        self._thread = threading.Thread(target=self._sender, name=f"link-sender-{c.kiosk_id}", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 30.0, *, stored: bool = True) -> bool:
        """Wait until every message is delivered: stored centrally (a collector's receipt came),
        or, with ``stored=False``, at least taken by the broker. True if so within ``timeout``."""
        def done() -> bool:
            b = self.outbox.backlog()
            return not b.queued if stored else b.queued == b.awaiting_receipt
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.05)
        return done()

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect, stop threads. Unsent messages stay in the outbox."""
        client = self._client
        if client is not None and self._connected:
            try:
                info = client.publish(self.topics.status, self._seal_status("offline"), qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError, OutboxError) as exc:
                log.warning("link: could not publish offline status: %s", exc)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self.outbox.close()
        self._thread = None
        self._client = None

    def __enter__(self) -> KioskLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> LinkStats:
        backlog = self.outbox.backlog()
        return LinkStats(
            connected=self._connected, queue_depth=backlog.queued, in_flight=len(self._inflight),
            dropped_logs=self.outbox.dropped_logs(), errors=self._errors, published=self._published,
            uptime_s=time.monotonic() - self._started_at, last_error=self._last_error,
            problem=None if self._connected else self._problem, since=self._state_since,
            awaiting_receipt=backlog.awaiting_receipt, oldest_unconfirmed_s=backlog.oldest_unconfirmed_s,
        )

    # -- sealing ------------------------------------------------------------------------------

    def _seal_with_receipt(self, seq: int, topic: str, payload: Mapping[str, Any], time_ms: int) -> tuple[bytes, bytes]:
        return envelope.seal_with_receipt(
            encode_payload(payload), kiosk_id=self.config.kiosk_id, seq=seq, time_ms=time_ms,
            topic=topic, signing_key=self._sign_key, recipient=self._central_pub, sign_key_id=self._sign_key_id,
        )

    def _enqueue(self, kind: str, payload: Mapping[str, Any], created_ms: int) -> int:
        topic = self.topics.topic(kind)  # type: ignore[arg-type]
        sealed: list[bytes] = []

        def build(seq: int) -> tuple[bytes, bytes | None]:
            data, receipt = self._seal_with_receipt(seq, topic, payload, created_ms)
            if len(data) > envelope.DEFAULT_MAX_ENVELOPE:
                # The collector would refuse it unread: say so here, and store nothing.
                raise RecordError(f"{kind} envelope of {len(data)} bytes exceeds the limit of "
                                  f"{envelope.DEFAULT_MAX_ENVELOPE} bytes")
            sealed.append(data)
            # Logs are dropped under their quota anyway: the broker's acknowledgement is enough.
            return data, receipt if self.config.receipts and kind in RECEIPTED_KINDS else None

        try:
            seq = self.outbox.add(kind, topic, build)
        except OutboxError as exc:
            self.note_error(str(exc))
            raise LinkError(str(exc)) from exc
        except ValueError as exc:   # e.g. a value json cannot encode; an oversized envelope
            raise LinkError(f"{kind} refused: {exc}") from exc
        with self._cond:
            if kind == "decision" and sealed:
                self._decision_digests[seq] = hashlib.sha256(sealed[-1][:-envelope.SIGNATURE_LEN]).hexdigest()
                while len(self._decision_digests) > 64:
                    self._decision_digests.popitem(last=False)
            self._cond.notify_all()
        return seq

    def _status(self, state: str, will_seq: int | None = None) -> StatusRecord:
        return StatusRecord(
            will_seq=will_seq if will_seq is not None else self._will_seq,
            state=state, uptime_s=round(time.monotonic() - self._started_at, 3),
            queue_depth=self.outbox.depth(), dropped_logs=self.outbox.dropped_logs(), errors=self._errors,
            model_versions=dict(self._model_versions), software_version=SOFTWARE_VERSION,
            link_failures=self._reported_failures,
            link_problem=self._reported_problem[:200] if self._reported_problem else None,
            site_threshold=self._site_threshold,
        )

    def _seal_status(self, state: str, *, is_will: bool = False) -> bytes:
        return self._seal_status_with_receipt(state, is_will=is_will)[0]

    def _seal_status_with_receipt(self, state: str, *, is_will: bool = False,
                                  seq: int | None = None) -> tuple[bytes, bytes]:
        seq = self.outbox.reserve_seq() if seq is None else seq
        if is_will:
            self._last_will_seq = seq
        rec = self._status(state, will_seq=seq if is_will else None)
        return self._seal_with_receipt(seq, self.topics.status, rec.to_payload(), rec.created_ms)

    def _set_will(self, client: mqtt.Client) -> None:
        # A fresh will for every connection attempt. Reports sent over the connection name it
        # (``will_seq``), so the collector can tell this will - sealed before them, published after
        # them - from a stale one left over by an older connection.
        payload = self._seal_status("offline", is_will=True)
        self._will_seq = self._last_will_seq
        client.will_set(self.topics.status, payload, qos=1, retain=True)

    # -- connection health ------------------------------------------------------------------------

    #: A reason already logged at ERROR is logged again at most this often while it persists
    #: (reconnects back off to reconnect_max_s; a journal line a minute would bury everything else).
    REPEAT_ERROR_S = 300.0

    def _connection_failed(self, reason: str) -> None:
        self._problem = reason
        self._failed_attempts += 1
        now = time.monotonic()
        last = self._problem_logged.get(reason)
        if last is None or now - last >= self.REPEAT_ERROR_S:
            self._problem_logged[reason] = now
            log.error("link: cannot connect to %s:%s: %s", self.config.broker_host, self.config.broker_port, reason,
                      extra={"event": "link_connect_failed", "attempts": self._failed_attempts})
        else:
            log.debug("link: connection attempt %d failed: %s", self._failed_attempts, reason)

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho reports socket errors (e.g. the TLS alert of a broker that distrusts our certificate,
        # which TLS 1.3 delivers on the first read) only as a log line; on_disconnect follows.
        if level == mqtt.MQTT_LOG_ERR and ("socket" in buf or "SSL" in buf):
            self._socket_error = buf

    def _check_connected_in_time(self) -> None:
        """Called by the sender thread: an ERROR if the link is still not connected after connect_warn_s."""
        if self._connected or self._warned_not_connected:
            return
        waited = time.monotonic() - self._started_at
        if waited < self.config.connect_warn_s:
            return
        self._warned_not_connected = True
        if self._problem is not None and self._problem in self._problem_logged:
            return   # the reason is already in the log at ERROR
        log.error("link: not connected to %s:%s %.0f s after start: %s", self.config.broker_host,
                  self.config.broker_port, waited, self._problem or "no answer from the broker yet "
                  "(check [link] broker_host, broker_port and the firewall)",
                  extra={"event": "link_not_connected"})

    # -- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            self._connection_failed(
                f"auth: the broker refused this kiosk ({rc}); is {self.config.kiosk_id!r} registered at the "
                "broker (sigkiosk admin register) with this certificate, and not revoked?")
            return
        if self._problem is not None:
            log.info("link: connected to %s:%s after %d failed attempt(s) (last: %s)", self.config.broker_host,
                     self.config.broker_port, self._failed_attempts, self._problem)
        else:
            log.info("link: connected to %s:%s", self.config.broker_host, self.config.broker_port)
        # Kept for this connection's status reports: the central side learns what it took to connect.
        self._reported_failures, self._reported_problem = self._failed_attempts, self._problem
        self._problem = None
        self._failed_attempts = 0
        self._socket_error = None
        self._problem_logged.clear()
        with self._sub_lock:
            self._command_sub_mids.clear()   # ids of a connection that is gone (they are reused)
        if self._command_handlers:
            self._subscribe_commands(client)
        self._receipts_granted = None
        self._subscribe_receipts(client, again=False)
        with self._cond:
            self._connected = True
            self._connected_since = time.monotonic()
            self._state_since = time.time()
            self._cond.notify_all()

    def _subscribe_commands(self, client: mqtt.Client) -> None:
        filters = [self.topics.model_commands]
        if self.topics.group_model_commands:
            filters.append(self.topics.group_model_commands)
        mid = client.subscribe([(f, mqtt.SubscribeOptions(qos=1)) for f in filters])[1]
        if mid is not None:
            with self._sub_lock:
                self._command_sub_mids.add(mid)

    def _subscribe_receipts(self, client: mqtt.Client, *, again: bool) -> None:
        """Subscribe to this kiosk's receipts: on connecting, and ``again`` only once refused (a
        health report asking while the first answer was on its way took the answer for the
        command subscription's: a review)."""
        if not self.config.receipts or (again and self._receipts_granted is not False):
            return
        self._receipts_granted = None
        # Not retained and not queued for us while we are away: a receipt that never came is
        # answered by sending the row again, whose duplicate the collector receipts again.
        client.subscribe([(self.topics.receipt, mqtt.SubscribeOptions(qos=1))])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        bad = [str(r) for r in rcs if r.is_failure]
        with self._sub_lock:
            receipt_sub = mid not in self._command_sub_mids
            self._command_sub_mids.discard(mid)
        if receipt_sub:
            self._receipts_granted = not bad
            if bad:
                # Nothing is lost, but nothing leaves the outbox: it fills up (evidence first).
                self.note_error("receipt subscription refused")
                log.error("link: the broker refused this kiosk's receipt topic (%s): decisions, staff actions and "
                          "evidence stay in the outbox until it is granted; regenerate the broker's ACL (sigkiosk "
                          "admin broker-config) and reload it. Asking again every %.0f s", ", ".join(bad),
                          self.config.health_interval_s)
            return
        if bad:
            self.note_error("command subscription refused")
            log.error("link: broker refused the command subscriptions: %s", ", ".join(bad))
        else:
            self.commands_ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.receipt:
            self._on_receipts(bytes(msg.payload))
            return
        for handler in list(self._command_handlers):
            try:
                handler(msg.topic, bytes(msg.payload))
            except Exception:   # a handler's bug must not take the network thread down
                self.note_error("command handler failed")
                log.exception("link: command handler failed for %s", msg.topic)

    def _on_receipts(self, data: bytes) -> None:
        try:
            got = receipts.decode(data)
        except receipts.ReceiptError as exc:
            # Only a collector may publish here (the broker's ACL); count it, say it once in a while.
            self._bad_receipts += 1
            if self._bad_receipts in (1, 10, 100) or self._bad_receipts % 1000 == 0:
                log.warning("link: refused %d malformed receipt message(s) (latest: %s)", self._bad_receipts, exc)
            return
        with self._cond:
            self._receipts.extend(got)
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.commands_ready.clear()
        with self._cond:
            was = self._connected
            self._connected = False
            if was:
                self._state_since = time.time()
            self._cond.notify_all()
        socket_error, self._socket_error = self._socket_error, None
        if was and not self._stop.is_set():
            # A reason from the moment it went down; the reconnect attempts replace it with theirs.
            self._problem = f"connection lost: {socket_error or rc}"
            log.warning("link: disconnected (%s); will reconnect with back-off", socket_error or rc)
        elif not was and not self._stop.is_set() and socket_error is not None:
            # The connection broke before the broker's CONNACK: the TLS handshake's late alert or a
            # reset. (A refused CONNACK was reported by _on_connect already.)
            self._connection_failed(describe_connection_error(socket_error, self.config.broker_host,
                                                              int(self.config.broker_port)))
        if not self._stop.is_set():
            try:
                self._set_will(client)
            except OutboxError as exc:
                log.error("link: could not prepare last will: %s", exc)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
        with self._cond:
            if rc is not None and (getattr(rc, "is_failure", False) or getattr(rc, "value", 0) == 0x10):
                self._failures[mid] = _NO_SUBSCRIBERS if rc.value == 0x10 else str(rc)
            else:
                # mids are reused; a failure recorded for an untracked publish (status) must not
                # be mistaken for the fate of a later row that happens to get the same mid.
                self._failures.pop(mid, None)
            self._cond.notify_all()

    # -- sender thread --------------------------------------------------------------------------

    def _sender(self) -> None:
        next_health = 0.0
        while not self._stop.is_set():
            try:
                self._reap_acks()
                if self._connected:
                    self._send_more()
                    now = time.monotonic()
                    if now >= next_health:
                        self._publish_health()
                        next_health = now + self.config.health_interval_s
                else:
                    next_health = 0.0   # report health right after the next connect
                    self._check_connected_in_time()
            except Exception as exc:   # never let the sender die: the outbox is durable, retry
                self.note_error(f"sender: {exc}")
                log.exception("link: sender error")
                time.sleep(0.5)
            with self._cond:
                self._cond.wait(timeout=0.2)
        try:
            self._reap_acks()
        except Exception as exc:   # rows not deleted now are sent again after the restart
            log.warning("link: final acknowledgement pass failed: %s", exc)

    def _apply_receipts(self) -> None:
        with self._cond:
            got, self._receipts = self._receipts, []
        if got:
            matched = set(self.outbox.confirm(got))
            # Only receipts that prove themselves (a row's token matched, or a status report's):
            # any other, from a rogue collector certificate, would make every overdue row due (a
            # review). And only now, on this thread: raised before the rows these receipts
            # confirm were deleted, the sender would take them for passed over.
            top = -1
            with self._cond:
                for r in got:
                    order, token = self._orders.get(r.seq, (-1, None))
                    if r.seq in matched or (token is not None and hmac.compare_digest(token, r.token)):
                        top = max(top, order)
            if top >= 0 and (self._receipted_order is None or top > self._receipted_order):
                self._receipted_order = top

    def _reap_acks(self) -> None:
        self._apply_receipts()
        done: dict[int, int] = {}   # row id -> publish order
        now = time.monotonic()
        with self._cond:
            for row_id, fl in list(self._inflight.items()):
                if fl.info.is_published():
                    del self._inflight[row_id]
                    failure = self._failures.pop(fl.info.mid, None)
                    if failure is None:
                        done[row_id] = fl.order
                        continue
                    # Keep the row - decisions are never dropped - and retry with back-off.
                    delay = min(self.config.reconnect_max_s, self.config.reconnect_min_s * 2 ** min(fl.attempts, 16))
                    self.outbox.defer(row_id, delay)
                    if failure != _NO_SUBSCRIBERS:
                        self._errors += 1
                        self._last_error = f"broker refused publish: {failure}"
                        log.error("link: broker refused message (row %d): %s; retrying in %.0f s", row_id, failure, delay)
                    elif fl.attempts == 0:
                        log.warning("link: no collector subscribed at the broker; holding messages and retrying")
                elif (self._connected and now - fl.sent_at > self.config.resend_after_s
                      and now - self._connected_since > self.config.resend_after_s):
                    # Safety net: paho resends its own queue on reconnect, but if a PUBACK never
                    # comes, send the row again. The collector discards duplicates.
                    del self._inflight[row_id]
        if done:
            self.outbox.acknowledged(done, sent_order=done)
            self._published += len(done)

    def _send_more(self) -> None:
        client = self._client
        room = self.config.max_inflight - len(self._inflight)
        if client is None or room <= 0:
            return
        for row in self.outbox.pending(room, exclude=self._inflight.keys(), receipted_order=self._receipted_order):
            order = self._next_order(row.seq)
            info = client.publish(row.topic, row.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # The connection dropped under us (NO_CONN). paho keeps such a message and sends it
                # after reconnecting, but its MQTTMessageInfo then never reports the PUBACK; so the
                # row stays untracked and is published again by us - one harmless duplicate.
                log.debug("link: publish of row %d returned %s", row.id, mqtt.error_string(info.rc))
                break
            with self._cond:
                self._inflight[row.id] = _Flight(row.id, info, time.monotonic(), row.attempts, order)

    def _publish_health(self) -> None:
        client = self._client
        if client is None:
            return
        self._subscribe_receipts(client, again=True)   # if the broker refused it (an ACL since reloaded)
        seq = self.outbox.reserve_seq()
        data, token = self._seal_status_with_receipt("online", seq=seq)
        self._next_order(seq, token)
        client.publish(self.topics.status, data, qos=1, retain=True)

    #: Sequence numbers whose publish order is remembered: far more than are ever in flight or
    #: awaiting a receipt on one connection at once (max_inflight, a health report a minute).
    ORDERS_KEPT = 4096

    def _next_order(self, seq: int, token: bytes | None = None) -> int:
        with self._cond:
            self._order += 1
            self._orders[seq] = (self._order, token)
            self._orders.move_to_end(seq)
            while len(self._orders) > self.ORDERS_KEPT:
                self._orders.popitem(last=False)
            return self._order
