"""Push bundles to kiosks over MQTT and follow what they report: ``sigkiosk admin push|status``.

Push (one target = a group, or one kiosk): the chunks are published *retained* first, then the
offer (retained), each with QoS 1 and waited for; the previous bundle's chunks on that target are
then cleared. Retained messages are what makes the transfer reach kiosks that are offline now and
resume after any disconnect: the broker hands them over again at every (re)subscription.

Rollout: the groups in order (canary first). The next group gets the bundle only when every
registered kiosk of the current group reports it ``active``; any ``refused``, ``rolled_back`` or
``failed`` (or the timeout) halts the rollout and reports which kiosk said what.

Kiosk reports are signed by the kiosk's Ed25519 key and verified against the registry, so a
compromised broker cannot fake a canary's success.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kiosk.bundle import (
    DEFAULT_CHUNK,
    BundleError,
    BundleFile,
    Offer,
    TrustPolicy,
    chunk_subtopic,
    manifest_digest,
    verify_envelope,
)
from kiosk.jsonbound import loads_bounded
from kiosk.tls import client_tls_context
from kiosk.topics import GROUP_NAMESPACE, TOPIC_VERSION, validate_id
from kiosk.update_agent import REPORT_TYPE
from tools.central.errors import CentralError
from tools.registry import Registry

log = logging.getLogger(__name__)

TERMINAL_FAIL = ("refused", "rolled_back", "failed")
#: A kiosk's signed update report is a few hundred bytes; anything far larger is not one.
MAX_REPORT_BYTES = 64 << 10


class RolloutError(CentralError, RuntimeError):
    pass


@dataclass(frozen=True)
class AdminConnection:
    host: str
    port: int
    ca_file: Path
    cert_file: Path       # admin.NAME certificate
    key_file: Path
    prefix: str = "sig"


def target_base(prefix: str, *, group: str | None = None, site: str | None = None, kiosk: str | None = None) -> str:
    if group is not None:
        return f"{validate_id(prefix, 'prefix')}/{TOPIC_VERSION}/{GROUP_NAMESPACE}/{validate_id(group, 'group')}/model"
    if site is None or kiosk is None:
        raise ValueError("a push targets a group, or a kiosk with its site")
    return f"{validate_id(prefix, 'prefix')}/{TOPIC_VERSION}/{validate_id(site, 'site')}/{validate_id(kiosk, 'kiosk id')}/model"


class AdminClient:
    """One admin MQTT connection: publishes offers and chunks, collects verified kiosk reports."""

    def __init__(self, conn: AdminConnection, registry: Registry) -> None:
        self.conn = conn
        self.registry = registry
        self.reports: dict[str, dict[str, Any]] = {}   # kiosk -> latest verified report
        self._arrival: dict[str, int] = {}               # kiosk -> arrival number of that report
        self.history: list[dict[str, Any]] = []
        self._retained: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._subacks = 0
        #: Called (on the MQTT thread) with each verified kiosk report: progress output.
        self.on_report: Callable[[str, dict[str, Any]], None] | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"admin-{id(self)}", protocol=mqtt.MQTTv5)
        c.tls_set_context(client_tls_context(conn.ca_file, conn.cert_file, conn.key_file))
        c.max_inflight_messages_set(32)
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        # A callback's exception must not end the admin's network thread (paho re-raises it by
        # default): every later SUBACK and acknowledgement would be lost with it.
        c.suppress_exceptions = True
        self.client = c

    def __enter__(self) -> AdminClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, timeout: float = 15.0) -> None:
        self.client.connect(self.conn.host, self.conn.port)
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                raise RolloutError(f"could not connect to the broker {self.conn.host}:{self.conn.port} as admin")
            time.sleep(0.02)
        self._subscribe(f"{self.conn.prefix}/{TOPIC_VERSION}/+/+/update")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _subscribe(self, topic: str, timeout: float = 10.0) -> None:
        with self._cond:
            n = self._subacks
            self.client.subscribe(topic, qos=1)
            if not self._cond.wait_for(lambda: self._subacks > n, timeout):
                raise RolloutError(f"no SUBACK for {topic}")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        if any(r.is_failure for r in rcs):
            log.error("rollout: subscription refused by the broker (ACL?)")
        with self._cond:
            self._subacks += 1
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/update"):
            try:
                self._on_report(msg.topic, bytes(msg.payload))
            except Exception:   # a report is a stranger's bytes; one must never stop the others
                log.exception("rollout: a report on %s could not be read", msg.topic[:200])
        else:
            with self._cond:
                self._retained[msg.topic] = bytes(msg.payload)
                self._cond.notify_all()

    def _on_report(self, topic: str, data: bytes) -> None:
        site, kiosk = topic.split("/")[-3:-1]
        entry = self.registry.kiosks.get(kiosk)
        # A revoked kiosk's key speaks for nobody; a report under another site than the kiosk's
        # registered one is not its (the broker lets a kiosk write any site's update topic).
        # Found by a review: a stolen key's retained reports kept every push failing, revoked or not.
        if entry is None or entry.revoked or entry.site != site or not data:
            return
        try:
            body = verify_envelope(loads_bounded(data, max_bytes=MAX_REPORT_BYTES), TrustPolicy.from_public_keys(entry.sign_keys, 1))
        except (BundleError, ValueError) as exc:
            log.warning("rollout: ignoring an unverifiable report from %s: %s", kiosk, exc)
            return
        if body.get("type") != REPORT_TYPE or body.get("kiosk") != kiosk:
            return
        order = (body.get("time_ms", 0), body.get("seq", 0))
        if not all(type(v) is int for v in order):   # compared below: a string raised TypeError here
            log.warning("rollout: ignoring a report from %s whose time_ms or seq is not an integer", kiosk)
            return
        with self._cond:
            old = self.reports.get(kiosk)
            # Newest by the kiosk's clock; seq breaks ties (it restarts at 1 with the process).
            if old is None or order >= (old.get("time_ms", 0), old.get("seq", 0)):
                self.reports[kiosk] = body
                self._arrival[kiosk] = len(self.history) + 1
            self.history.append(body)
            self._cond.notify_all()
        if self.on_report is not None:
            self.on_report(kiosk, body)

    # -- pushing ---------------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, timeout: float = 60.0) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise RolloutError(f"broker did not acknowledge {topic}")

    def send(self, topic: str, payload: bytes, timeout: float = 15.0) -> None:
        """Publish a command, not retained (a kiosk must not find it again at its next connection),
        and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1, retain=False)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise RolloutError(f"the broker did not acknowledge {topic} (is this admin allowed to publish there?)")

    def current_offer(self, base: str, grace_s: float = 0.3) -> Offer | None:
        """The offer retained on ``base`` now, if any (to clear its chunks after a new push)."""
        topic = f"{base}/offer"
        self._subscribe(topic)
        with self._cond:
            self._cond.wait_for(lambda: topic in self._retained, grace_s)
            data = self._retained.pop(topic, b"")
        self.client.unsubscribe(topic)
        if not data:
            return None
        try:
            return Offer.from_bytes(data, 1 << 40)
        except BundleError:
            return None

    def push(self, bundle: BundleFile, base: str, chunk_size: int = DEFAULT_CHUNK) -> Offer:
        old = self.current_offer(base)
        offer = Offer.for_payload(bundle.envelope, bundle.payload, chunk_size)
        infos = []
        for i in range(len(offer.chunks)):   # chunks first: whoever sees the offer finds them there
            data = bundle.payload[i * chunk_size:(i + 1) * chunk_size]
            infos.append(self.client.publish(f"{base}/{chunk_subtopic(offer.bundle_id, i)}", data, qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise RolloutError("the broker did not acknowledge every chunk")
        self._publish(f"{base}/offer", offer.to_bytes())
        if old is not None and old.short_id != offer.short_id:
            self._clear_chunks(base, old)
        log.info("rollout: pushed %s (%d bytes, %d chunks) to %s", offer.short_id, offer.size, len(offer.chunks), base)
        return offer

    def _clear_chunks(self, base: str, offer: Offer) -> None:
        infos = [self.client.publish(f"{base}/{chunk_subtopic(offer.bundle_id, i)}", b"", qos=1, retain=True)
                 for i in range(len(offer.chunks))]
        for info in infos:
            info.wait_for_publish(60)

    def clear(self, base: str) -> bool:
        """Remove the retained offer and its chunks from ``base``; True if there was one."""
        old = self.current_offer(base)
        self._publish(f"{base}/offer", b"")
        if old is None:
            return False
        self._clear_chunks(base, old)
        return True

    # -- following -------------------------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the report stream: ``wait``/``outcome`` after it ignore older reports."""
        with self._cond:
            return len(self.history)

    def answered(self, kiosks: Sequence[str], since: int, timeout: float) -> set[str]:
        """The kiosks of ``kiosks`` that sent any report after ``since`` (``mark()``), waiting up to
        ``timeout`` for the first one: a kiosk online when an offer arrives answers it at once."""
        wanted = set(kiosks)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = {str(r.get("kiosk")) for r in self.history[since:]} & wanted
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                self._cond.wait(min(left, 0.5))

    def outcome(self, kiosk: str, digest: str, since: int = 0, pushed_ms: int | None = None) -> str | None:
        """``active``, a failure state, or None (still working / nothing yet) for this bundle.

        A failure counts only if it answers this push (``pushed_ms``, the offer's creation time)
        and arrived after ``since``: a refusal of an earlier push of the same bundle (say, before
        a second admin signed it) must not stand for this one. Running it is success whenever."""
        r = self.reports.get(kiosk)
        if r is None:
            return None
        if (r.get("active") or {}).get("bundle") == digest[:16] and r.get("state") == "active":
            return "active"
        o = r.get("offer") or {}
        if (o.get("manifest") == digest[:16] and r.get("state") in TERMINAL_FAIL and self._arrival.get(kiosk, 0) > since
                and (pushed_ms is None or o.get("pushed_ms") == pushed_ms)):
            return str(r["state"])
        return None

    def wait(self, kiosks: Sequence[str], digest: str, timeout: float, since: int = 0,
             pushed_ms: int | None = None) -> dict[str, str]:
        """Wait until each kiosk reached an outcome, or one failed, or the timeout; return outcomes.

        Reports that arrived before ``since`` (``mark()`` taken before the push) do not count: a
        kiosk answers every offer message, so an old refusal cannot stand for the new push."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = {k: self.outcome(k, digest, since, pushed_ms) for k in kiosks}
                left = deadline - time.monotonic()
                if any(v in TERMINAL_FAIL for v in got.values()) or all(got.values()) or left <= 0:
                    return {k: v or ("timeout" if left <= 0 else "pending") for k, v in got.items()}
                self._cond.wait(min(left, 0.5))


@dataclass
class StageResult:
    group: str
    kiosks: list[str]
    outcomes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.kiosks) and all(v == "active" for v in self.outcomes.values())


#: Seconds a push waits for the first kiosk of a group to answer its offer before it says that
#: none is online (instead of waiting the whole ``timeout_s`` for kiosks that are not there).
ONLINE_WAIT_S = 15.0


@dataclass
class RolloutResult:
    bundle: str
    stages: list[StageResult]
    halted: bool
    reports: dict[str, dict[str, Any]]
    #: The group none of whose kiosks answered the offer (the push stopped there), if any.
    offline_group: str | None = None

    @property
    def ok(self) -> bool:
        return not self.halted and all(s.ok for s in self.stages)

    def summary(self) -> str:
        lines = [f"bundle {self.bundle}: {'done' if self.ok else 'HALTED' if self.halted else 'incomplete'}"]
        if self.offline_group is not None:
            lines.append(f"  no kiosk of group {self.offline_group} answered the offer: none is online (or their "
                         "[link] group is not this one). The offer stays on the broker: a kiosk of the group "
                         "installs it when it connects; `sigkiosk admin status` shows what each reports.")
        for s in self.stages:
            lines.append(f"  group {s.group}: {sum(v == 'active' for v in s.outcomes.values())}/{len(s.kiosks)} active "
                         f"in {s.seconds:.1f} s")
            for k, v in sorted(s.outcomes.items()):
                if v != "active":
                    r = self.reports.get(k, {})
                    lines.append(f"    {k}: {v} {r.get('reason') or ''} {r.get('detail') or ''}".rstrip())
        return "\n".join(lines)


def group_members(registry: Registry, group: str) -> list[str]:
    return sorted(k for k, e in registry.active().items() if e.group == group)   # revoked kiosks never report


def rollout(conn: AdminConnection, registry: Registry, bundle: BundleFile, groups: Sequence[str], *,
            timeout_s: float = 600.0, wait_last: bool = True, chunk_size: int = DEFAULT_CHUNK,
            online_wait_s: float = ONLINE_WAIT_S, progress: Callable[[str], None] | None = None) -> RolloutResult:
    """Push to each group in turn; stop at the first group where a kiosk does not report success,
    or where no kiosk answers the offer within ``online_wait_s`` (none online). ``progress`` is
    told each step each kiosk reports ("canary-1: downloading")."""
    digest = manifest_digest(bundle.envelope)
    stages: list[StageResult] = []
    with AdminClient(conn, registry) as admin:
        if progress is not None:
            admin.on_report = progress_printer(progress)
        for n, group in enumerate(groups):
            members = group_members(registry, group)
            stage = StageResult(group, members)
            stages.append(stage)
            if not members:
                stage.outcomes = {}
                return RolloutResult(digest[:16], stages, True, dict(admin.reports))
            t0 = time.monotonic()
            since = admin.mark()
            offer = admin.push(bundle, target_base(conn.prefix, group=group), chunk_size)
            if progress is not None:
                progress(f"group {group}: offer {offer.short_id} pushed to {len(members)} kiosk(s): "
                         f"{', '.join(members)}")
            if n == len(groups) - 1 and not wait_last:
                stage.outcomes = {k: "pushed" for k in members}
                break
            if not admin.answered(members, since, min(online_wait_s, timeout_s)):
                stage.outcomes = {k: "offline" for k in members}
                stage.seconds = time.monotonic() - t0
                return RolloutResult(digest[:16], stages, True, dict(admin.reports), offline_group=group)
            stage.outcomes = admin.wait(members, digest, timeout_s, since, offer.created_ms)
            stage.seconds = time.monotonic() - t0
            if not stage.ok:
                return RolloutResult(digest[:16], stages, True, dict(admin.reports))
        return RolloutResult(digest[:16], stages, False, dict(admin.reports))


def progress_printer(say: Callable[[str], None]) -> Callable[[str, dict[str, Any]], None]:
    """Each kiosk's reported step, once per change (a kiosk repeats its state after reconnects)."""
    last: dict[str, tuple[Any, ...]] = {}

    def on_report(kiosk: str, body: dict[str, Any]) -> None:
        key = (body.get("state"), body.get("reason"))
        if last.get(kiosk) == key:
            return
        last[kiosk] = key
        why = f" ({body['reason']})" if body.get("reason") else ""
        say(f"  {kiosk}: {body.get('state')}{why}")

    return on_report


def fleet_status(conn: AdminConnection, registry: Registry, settle_s: float = 1.0) -> list[dict[str, Any]]:
    """What each kiosk reports (its retained, verified update status), registry kiosks first."""
    with AdminClient(conn, registry) as admin:
        time.sleep(settle_s)   # retained reports arrive right after the SUBACK
        reports = dict(admin.reports)
    rows = []
    for kid in sorted(set(registry.kiosks) | set(reports)):
        r = reports.get(kid, {})
        act, prev = r.get("active") or {}, r.get("previous") or {}
        state, reason = r.get("state", "no report"), r.get("reason") or ""
        active = f"{act.get('name')} v{act.get('version')}" if act else "-"
        if state == "no_model" and not act:
            # No bundle was ever installed: the kiosk serves the models shipped with its software
            # ([verifier], kiosk/UPDATES.md), which is not "no model" to an admin reading this.
            state, active, reason = "shipped", "shipped models", "no bundle installed"
        rows.append({
            "kiosk": kid, "group": registry.kiosks[kid].group if kid in registry.kiosks else r.get("group"),
            "state": state, "active": active,
            "previous": f"v{prev.get('version')}" if prev else "-", "reason": reason,
            "age_s": round(time.time() - r["time_ms"] / 1000, 1) if "time_ms" in r else None,
        })
    return rows
