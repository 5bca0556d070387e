"""The appliance daemon: the wiring of the kiosk's parts and flows, and its state machine.

States (``State``): ``idle`` -> ``identify`` (which customer; from the screen or a signed request
from the central server) -> ``capture`` (the live pen; ink streamed to the screen) -> ``verify`` ->
``report`` (sealed into the outbox, sent to the central server) -> ``decision`` (shown on the
screen) -> ``idle``. What each request does is a flow (``kiosk.flows``: verify with the pen,
verify a signed paper with ``[paper]``, enroll ``new``/``replace``/``add`` on the pad or from
paper, delete), given the screen, the capture and the reporter as small protocols; the parts are
built from the configuration by ``kiosk.app``.

Template management (enroll, enroll_paper, delete) needs a logged-in operator (``kiosk.staff``,
``submit(staff=...)``), ``replace`` and ``delete`` the customer typed again (``confirm``), and each
is audited (``audit``: an ``AuditRecord`` sealed into the outbox when it starts, before anything
changes, and when it ends). A verification is decided under an application profile
(``kiosk.profiles``): the one the staff view or the central command chose, else the default; the
decision records it and who asked (``operator``).

One thread runs the state machine and the flows, so there is never more than one customer at
the pen; requests come in through :meth:`Daemon.submit` (the screen's HTTP API, the command
topic). The pen verifier is swapped by the model-update agent with :meth:`Daemon.set_verifier`,
which drops every cached reference set (they are rebuilt from the stored reference trajectories)
and tells the link and the listeners.

Never logged: keys, raw pen data, template contents, customer references (a session id is).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_host.pen_source import PenService
from kiosk import app
from kiosk.calibration import SiteCalibration
from kiosk.commands import CALIBRATION_SUFFIX, VERIFY_SUFFIX, CalibrationCommand, CommandError
from kiosk.config import NOTHING_RECORDS, ConfigError, DaemonConfig
from kiosk.errors import (
    ActionNotAuditable,
    AuditNotRecorded,
    CalibrationNotSaved,
    DecisionNotRecorded,
    KioskBusy,
    RequestRefused,
    StaffLoginRequired,
)
from kiosk.evidence import EvidenceError
from kiosk.evidence import build as build_evidence
from kiosk.flows.base import Finished, Request, RequestEnded
from kiosk.flows.capture import CameraPaperCapture, LivePenCapture
from kiosk.flows.enroll import Delete, Enroll
from kiosk.flows.enroll_paper import MAX_PAPER_FILES, EnrollPaper
from kiosk.flows.references import Caches, ReferenceCache
from kiosk.flows.verify import VerifyPaper, VerifyPen
from kiosk.link import LinkError
from kiosk.profiles import UnknownProfile
from kiosk.records import OPERATOR_NAME, AuditRecord
from kiosk.screen_events import Event, EventBus, Message, ScreenChange, State, View
from kiosk.sdnotify import Notifier, Watchdog, watchdog_interval
from kiosk.staff import STAFF_STATE_FILE, StaffAuth, StaffSession
from kiosk.templates import StoredTemplate, TemplateError, TemplateStore, remove_leftovers, validate_customer
from models.calibration import SiteThreshold
from models.classic import ClassicConfig
from models.image import SignatureImage
from models.trajectory import DeviceInfo, Trajectory
from models.verification import PenVerifier, ReferenceSet

if TYPE_CHECKING:
    from firmware_host.camera import Camera
    from kiosk.commands import CommandVerifier
    from kiosk.link import KioskLink, LinkStats
    from kiosk.ui.server import UiServer
    from kiosk.update_agent import SlotInfo, UpdateAgent
    from models.paper import PaperVerifier

log = logging.getLogger(__name__)

Flow = Callable[[Request], Finished]
#: Decisions whose timings (and unrecorded session ids) the daemon keeps for benchmarks and staff.
RECENT_DECISIONS = 1000


class _Screen:
    """``kiosk.flows.base.Screen``: the state machine's state, told to the page and to systemd."""

    def __init__(self, bus: EventBus, notifier: Notifier) -> None:
        self.bus = bus
        self.notifier = notifier
        self.state = State.STARTING

    def enter(self, state: State, view: View | None = None) -> None:
        self.state = state
        self.bus.publish(ScreenChange(state, view if view is not None else Message(state.value)))
        if state is not State.STOPPED:
            self.notifier.status(state.value)

    def quietly(self, state: State) -> None:
        """The state changes, the page keeps what it shows (a decision stays up); a page that
        connects later (the browser restarted, its event stream reconnected) starts from the new
        state, not from the last customer's decision (it was shown that, hours later if need be;
        found by a review)."""
        self.state = state
        self.bus.remember(ScreenChange(state, Message(state.value)))
        self.notifier.status(state.value)

    def publish(self, event: Event) -> None:
        self.bus.publish(event)


class _Heartbeat:
    """``kiosk.flows.capture.Heartbeat``: the systemd watchdog when there is one."""

    def __init__(self) -> None:
        self.watchdog: Watchdog | None = None

    def beat(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat()

    def busy(self, seconds: float) -> None:
        if self.watchdog is not None:
            self.watchdog.busy(seconds)


class Daemon:
    """The appliance. ``start()`` brings it up (ready), ``stop()`` takes it down."""

    def __init__(self, config: DaemonConfig, *, digitizer: PenService | None = None,
                 verifier: PenVerifier | None = None, notifier: Notifier | None = None,
                 link: KioskLink | None = None, start_ui: bool | None = None) -> None:
        self.config = config
        self.bus = EventBus()
        self.notifier = notifier or Notifier()
        self._screen = _Screen(self.bus, self.notifier)
        self._heartbeat = _Heartbeat()
        self.verifier: PenVerifier = self._calibrated(verifier or app.pen_verifier(config))
        #: ``[calibration]``: the site threshold (``kiosk.calibration``), from start() on when enabled.
        self.calibration: SiteCalibration | None = None
        self.digitizer = digitizer or app.digitizer(config)
        self._link = link
        self._own_link = link is None and config.link is not None
        self._start_ui = config.ui.enabled if start_ui is None else start_ui
        #: Operator logins: enroll and delete need one of its sessions (``submit(staff=...)``).
        self.staff = StaffAuth(config.staff, self.audit, state_file=config.state_dir / STAFF_STATE_FILE)
        self.store: TemplateStore | None = None
        self.ui: UiServer | None = None
        self._requests: queue.Queue[Request] = queue.Queue()
        self._unfinished = 0   # submitted and not yet ended: queued, or running (``pending``)
        self._unfinished_lock = threading.Lock()
        # Held from a when_idle submission's check to its request being queued: two of them at once
        # (an operator's double click) cannot both find the kiosk idle.
        self._admission = threading.Lock()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: The customers' reference sets, as the current pen (and paper) verifier built them.
        self.pen_references: ReferenceCache[PenVerifier] | None = None
        self.paper_references: ReferenceCache[PaperVerifier] | None = None
        self._caches = Caches()
        self.paper: PaperVerifier | None = None     # with [paper]
        self.camera: Camera | None = None           # with [paper]
        self._flows: dict[str, Flow] = {}
        self._model_listeners: list[Callable[[PenVerifier], None]] = []
        self._commands: CommandVerifier | None = None
        self.update_agent: UpdateAgent | None = None   # with [update]
        self._failed_models: set[str] = set()         # digests of bundles whose model failed to load
        self._remove_log_handler: Callable[[], None] | None = None
        self.current: Request | None = None
        # Per-decision figures of the most recent decisions only: a kiosk runs for months, and a
        # stranger can ask for a decision every few seconds (found by a review: these grew forever).
        #: Pen-up (capture complete) to decision durably published, in ms.
        self.latencies_ms: deque[float] = deque(maxlen=RECENT_DECISIONS)
        self.decisions = 0
        #: Decisions that could not be recorded (never shown as final; for staff): how many, and
        #: the session ids of the latest.
        self.unrecorded_count = 0
        self.unrecorded: deque[str] = deque(maxlen=RECENT_DECISIONS)
        #: Evidence: ms to build, seal and commit each (after its decision), and failures.
        self.evidence_ms: deque[float] = deque(maxlen=RECENT_DECISIONS)
        self.evidence_failures = 0
        #: The last decision recorded (for the staff view: decision, profile, who asked).
        self.last_decision: dict[str, object] | None = None
        self.ready_at: float | None = None
        self.started_at = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def link(self) -> KioskLink | None:
        return self._link

    @property
    def state(self) -> State:
        return self._screen.state

    @property
    def watchdog(self) -> Watchdog | None:
        return self._heartbeat.watchdog

    def start(self) -> None:
        cfg = self.config
        if self._link is None and cfg.link is None and not cfg.unrecorded:
            # A decision is never shown as final unless it is recorded (found by a review: without
            # a link, decisions were shown and staff actions done with nothing recording them).
            raise ConfigError(NOTHING_RECORDS)
        t0 = time.monotonic()
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # What a power cut left mid-write beside the calibration state, the command replay list, the
        # operators file and the template key (each written whole aside, then moved into place).
        for d in dict.fromkeys((cfg.state_dir, cfg.storage.template_key.parent, cfg.staff.operators_file.parent)):
            if remove_leftovers(d):
                log.info("removed temporary files a power cut left in %s", d, extra={"event": "leftovers_removed"})
        self.store = TemplateStore(cfg.storage.templates_dir, cfg.storage.template_key,
                                   create_key=cfg.storage.create_key, seen_signatures=cfg.storage.seen_signatures)
        if cfg.calibration.enabled:
            self.calibration = SiteCalibration(cfg.calibration, cfg.state_dir, self.store, self._calibration_audit,
                                               self._calibration_changed)
        self.pen_references = ReferenceCache(self.store, self.verifier, _enroll_pen,
                                             self.calibration.built if self.calibration is not None else None)
        self._caches.add(self.pen_references)
        if self._own_link:
            parts = app.link(cfg, self.verifier.model_versions())
            self._link = parts.link
            self._remove_log_handler = app.install_log_handler(parts.log_handler)
        if self._link is not None:
            self._link.set_model_versions(self.verifier.model_versions())
            self._commands = app.command_verifier(cfg, self._link)
            if self._commands is not None:
                self._link.add_command_handler(self._on_command)
            if cfg.update is not None:
                self._start_update_agent(self._link)
            self._link.start()
        if self._start_ui:
            self.ui = app.screen(cfg, self)
            self.ui.start()
        self._warm_up()
        if self.calibration is not None:
            self.calibration.attach(self.verifier)  # type: ignore[arg-type]  # wrapped by _calibrated
        pen = LivePenCapture(self.digitizer, self._screen, cfg.device, self._heartbeat,
                             cancel=self._cancel, done=self._done)
        self._flows = {
            "verify": VerifyPen(self._screen, pen, self.pen_references, self, cfg.ui, cfg.profiles, self.store),
            "enroll": Enroll(self._screen, pen, self.store, self._caches, cfg.policy, self._features),
            "delete": Delete(self.store, self._caches),
        }
        if cfg.paper.enabled:
            self.paper, self.camera = app.paper(cfg)
            self.paper_references = ReferenceCache(self.store, self.paper, _enroll_paper)
            self._caches.add(self.paper_references)
            paper_capture = CameraPaperCapture(self.camera, self._screen, cfg.paper, self._heartbeat,
                                               cancel=self._cancel)
            self._flows["verify_paper"] = VerifyPaper(self._screen, paper_capture, self.paper_references, self, cfg.ui,
                                                      cfg.profiles)
            paper_refs = self.paper_references
            self._flows["enroll_paper"] = EnrollPaper(self._screen, paper_capture, self.store, self._caches,
                                                      lambda: paper_refs.verifier,
                                                      max_attempts=cfg.policy.max_enroll_attempts)
        interval = watchdog_interval()
        if interval is not None:
            self._heartbeat.watchdog = Watchdog(self.notifier, interval)
            self._heartbeat.watchdog.start()
        self._thread = threading.Thread(target=self._main_loop, name="kiosk-main", daemon=True)
        self._thread.start()
        self._screen.enter(State.IDLE)
        self.ready_at = time.monotonic()
        self.notifier.ready("idle")
        log.info("kiosk ready", extra={"event": "ready", "ready_ms": round((time.monotonic() - t0) * 1000, 1),
                                        "ui_port": self.ui.port if self.ui else None,
                                        "templates": self.store.count()})

    def _warm_up(self) -> None:
        # numba compiles the DTW kernels on first use (or loads them from its cache): do it now,
        # before "ready", not on the first customer's signature.
        try:
            self.verifier.warm_up(_warm_sample())
        except Exception:   # never fatal: the first verification compiles instead
            log.exception("verifier warm-up failed")

    def stop(self, timeout: float = 10.0) -> None:
        if self._stop.is_set():
            return
        self.notifier.stopping()
        self._stop.set()
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._end_queued()
        if self._heartbeat.watchdog is not None:
            self._heartbeat.watchdog.stop()
        if self.ui is not None:
            self.ui.stop()
        if self._remove_log_handler is not None:
            self._remove_log_handler()
        if self.update_agent is not None:
            self.update_agent.close()
        if self._own_link and self._link is not None:
            self._link.close()
        self.digitizer.close()
        if self.camera is not None:
            self.camera.close()
        self._screen.enter(State.STOPPED)
        self.notifier.close()

    def _end_queued(self) -> None:
        """Requests still queued at stop end as "stopping" (their waiters return; a staff action's
        end is audited while the link is still open), not never (found by a review)."""
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                req.finish(ok=False, error="stopping")
            finally:
                self._one_ended()

    def _one_ended(self) -> None:
        """A submitted request ended (run, or ended at stop): one fewer ``pending``."""
        with self._unfinished_lock:
            self._unfinished -= 1

    def run_forever(self) -> int:
        """``sigkiosk run``: start, serve until SIGTERM/SIGINT, stop cleanly."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            while not stop.wait(1.0):
                if self._thread is not None and not self._thread.is_alive():
                    log.error("main loop died; exiting for systemd to restart the service")
                    return 1
        finally:
            self.stop()
        return 0

    # -- model hook (the update agent) --------------------------------------------------------
    def add_model_listener(self, listener: Callable[[PenVerifier], None]) -> None:
        self._model_listeners.append(listener)

    def set_verifier(self, verifier: PenVerifier) -> None:
        """The active model changed: use ``verifier`` from the next signature on."""
        verifier.warm_up(_warm_sample())
        verifier = self._calibrated(verifier)
        with self._lock:
            self.verifier = verifier
            if self.pen_references is not None:
                self.pen_references.use(verifier)   # rebuilt from the stored trajectories with the new model
        if self._link is not None:
            self._link.set_model_versions(verifier.model_versions())
        for fn in list(self._model_listeners):
            fn(verifier)
        if self.calibration is not None:
            # The new model's shipped threshold, then its own customers' scores.
            self.calibration.attach(verifier)  # type: ignore[arg-type]  # wrapped by _calibrated
        log.info("active verifier changed", extra={"event": "model_changed", "model_versions": verifier.model_versions()})

    # -- site self-calibration (kiosk.calibration) ------------------------------------------------
    def _calibrated(self, verifier: PenVerifier) -> PenVerifier:
        if not self.config.calibration.enabled:
            return verifier

        return verifier if isinstance(verifier, SiteThreshold) else SiteThreshold(verifier)

    def _calibration_audit(self, outcome: str, operator: str, mode: str, required: bool) -> object:
        try:
            return self.audit("calibration", outcome, operator, mode=mode, required=required)
        except AuditNotRecorded as exc:
            raise ActionNotAuditable(str(exc)) from None

    def _calibration_changed(self, threshold: float, shipped: float, held: bool) -> None:
        # The status report carries the site threshold (the central kiosks page shows it).
        if self._link is not None:
            self._link.set_site_threshold(threshold)

    def revert_calibration(self, staff: StaffSession | None, *, operator: str | None = None) -> None:
        """Back to the shipped threshold and held there (audited). Who: a logged-in operator
        (``staff``), or ``operator`` ``central:ADMIN`` for the signed central command."""
        self._calibration_for(staff, operator, "revert").revert(self._calibration_operator(staff, operator))

    def resume_calibration(self, staff: StaffSession | None, *, operator: str | None = None) -> None:
        """Let the site calibration move the threshold again (the same callers as revert)."""
        self._calibration_for(staff, operator, "resume").resume(self._calibration_operator(staff, operator))

    @staticmethod
    def _calibration_operator(staff: StaffSession | None, operator: str | None) -> str:
        return staff.operator if staff is not None else str(operator)

    def _calibration_for(self, staff: StaffSession | None, operator: str | None, action: str) -> SiteCalibration:
        if staff is None and operator is not None:
            if not OPERATOR_NAME.fullmatch(operator) or operator.partition(":")[0] != "central":
                raise RequestRefused("operator: 'central' or 'central:ADMIN' for a request without a staff login")
        elif staff is None or operator is not None or not self.staff.check(staff):
            raise StaffLoginRequired(f"the site calibration's {action} needs a logged-in operator (the staff view)")
        if self.calibration is None:
            raise RequestRefused("site calibration is not enabled on this kiosk ([calibration] enabled = true)")
        return self.calibration

    def _features(self) -> ClassicConfig:
        """The feature configuration enrollment checks a sample's consistency with (the verifier's)."""
        with self._lock:
            vcfg = getattr(self.verifier, "config", None)
        return vcfg if isinstance(vcfg, ClassicConfig) else ClassicConfig()

    def _start_update_agent(self, link: KioskLink) -> None:
        """``[update]``: run the model-update agent on the link; serve its active slot's model."""
        agent = self.update_agent = app.update_agent(self.config, link)
        agent.start()   # recovery and checks of the active slot, then offers
        agent.add_switch_listener(self._on_model_switch)
        active = agent.active_model()
        if active is not None:
            self._on_model_switch(active)

    def _on_model_switch(self, slot: SlotInfo | None) -> None:
        """The agent switched (or rolled back) the active bundle: load its model and serve it.

        Runs on the agent's thread. A model that does not load (or fails its warm-up) is reported
        to the agent, which rolls back (and calls this again with the previous slot); until then
        the current verifier keeps serving. ``slot`` None: no usable bundle, so the configured
        model (``[verifier] model_dir``, default the shipped one) serves."""
        if slot is not None and slot.digest in self._failed_models:
            return   # already reported: do not loop on a bundle that cannot load
        try:
            if slot is None:
                verifier = app.pen_verifier(self.config)
            else:
                verifier = app.pen_verifier(self.config, slot.directory, {slot.manifest.name: str(slot.version)})
            verifier.warm_up(_warm_sample())
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load; keeping the current verifier",
                      extra={"event": "model_load_failed", "reason": why,
                             "bundle_version": slot.version if slot is not None else None})
            if slot is not None and self.update_agent is not None:
                self._failed_models.add(slot.digest)
                self.update_agent.report_model_failure(why)
            return
        self.set_verifier(verifier)

    # -- staff audit ----------------------------------------------------------------------------
    def audit(self, action: str, outcome: str, operator: str, *, subject: str | None = None,
              mode: str | None = None, session_id: str | None = None, staff_session: str | None = None,
              required: bool = False) -> int | None:
        """Record one staff action: sealed into the outbox for the central server (with a link),
        and logged without the customer. ``required``: raise ``AuditNotRecorded`` if it cannot be
        stored, so the action is refused instead of done unaudited. Returns the record's sequence number."""

        rec = AuditRecord(operator=operator, action=action, outcome=outcome, subject=subject, mode=mode,
                          session_id=session_id, staff_session=staff_session)
        seq = None
        if self._link is not None:
            try:
                seq = self._link.publish_audit(rec)
            except LinkError as exc:
                log.error("staff action could not be audited: %s", exc,
                          extra={"event": "audit_failed", "action": action, "operator": operator})
                if required:
                    raise AuditNotRecorded(f"the staff action cannot be recorded: {exc}") from exc
        log.info("staff action %s: %s", action, outcome, extra={
            "event": "audit", "action": action, "outcome": outcome, "operator": operator, "mode": mode,
            "session": session_id, "staff_session": staff_session, "seq": seq})
        return seq

    def _audit_result(self, req: Request) -> None:
        """The end of an enroll/delete, before the request reports done (``Request.on_finish``)."""
        r = req.result
        outcome = "ok" if r.get("ok") else str(r.get("error") or "failed")[:64]
        self.audit(req.kind, outcome, req.operator or "?", subject=req.customer,
                   mode=None if req.kind == "delete" else req.mode, session_id=req.request_id,
                   staff_session=req.staff_session)
        if self.calibration is not None and r.get("ok"):
            try:   # the customer's new references join the site's scores (or leave them)
                self.calibration.customer_changed(req.customer)
            except Exception:
                log.exception("site calibration failed", extra={"event": "calibration_failed"})

    # -- decisions (``kiosk.flows.base.DecisionReporter``) ------------------------------------
    def record_decision(self, record: Mapping[str, object]) -> int | None:
        seq = None
        if self._link is not None:
            try:
                seq = self._link.publish_decision(record)
            except LinkError as exc:
                raise DecisionNotRecorded(str(exc)) from exc
        # Not the customer reference: the staff view shows what was decided, and how, not for whom.
        self.last_decision = {k: record.get(k) for k in ("decision", "score", "profile", "operator", "session_id",
                                                          "mode")} | {"at": time.time()}
        return seq

    def decision_shown(self, session_id: str, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)
        self.decisions += 1

    def decision_unrecorded(self, session_id: str) -> None:
        with self._lock:
            self.unrecorded.append(session_id)
            self.unrecorded_count += 1

    def record_evidence(self, session_id: str, decision_seq: int, captured: Trajectory | SignatureImage) -> int | None:
        """Seal the decision's questioned signature into the outbox (``[link] evidence``).

        Runs after the decision is recorded and shown. A failure (too large, disk nearly full) is
        logged with its reason - never a sample - and counted in ``evidence_failures``."""
        link = self._link
        if link is None or not link.config.evidence:
            return None
        t0 = time.perf_counter()
        try:
            digest = link.decision_digest(decision_seq)
            if digest is None:
                raise EvidenceError(f"decision {decision_seq} is not one this link queued")
            rec = build_evidence(captured, decision_seq=decision_seq, decision_digest=digest, session_id=session_id)
            seq = link.publish_evidence(rec)
        except Exception as exc:   # evidence never costs the decision, whatever went wrong
            self.evidence_failures += 1
            log.error("evidence of a decision could not be recorded: %s", exc,
                      extra={"event": "evidence_failed", "session": session_id, "decision_seq": decision_seq})
            return None
        self.evidence_ms.append((time.perf_counter() - t0) * 1e3)
        return seq

    # -- requests -----------------------------------------------------------------------------
    def submit(self, kind: str, customer: str, *, source: str = "screen", mode: str = "new",
               request_id: str | None = None, image: Path | None = None, images: Sequence[Path] = (),
               staff: StaffSession | None = None, confirm: str | None = None, profile: str | None = None,
               operator: str | None = None, when_idle: bool = False) -> Request:
        """Queue a request. ``enroll``, ``enroll_paper`` and ``delete`` change whom the kiosk
        approves: they need ``staff``, a live session of ``self.staff`` (an operator's login), and
        ``replace`` and ``delete`` need ``confirm`` equal to ``customer`` (typed again). Their start
        is audited durably before they are queued; their end when they finish. ``enroll_paper``
        takes the reference pictures from ``images`` (scanned files), or from the camera.

        A verification runs under ``profile`` (None: the default; an unknown one is refused with
        :class:`UnknownProfile`). Who asked goes into its decision: the operator of ``staff`` (a
        verification started at the staff view, which needs a live session too), or ``operator``
        for a request without one (the central command: ``"central:ADMIN"``).

        ``when_idle``: refused with :class:`KioskBusy` unless no request is running or queued,
        checked and queued atomically: what the screen and the central command ask for. A
        request queued behind a customer's signing took the next signature written at the pen,
        and a staff action queued twice by a double click ran after the operator's logout."""
        if kind not in ("verify", "verify_paper", "enroll", "enroll_paper", "delete"):
            raise RequestRefused(f"unknown request {kind!r}")
        verification = kind in ("verify", "verify_paper")
        if not verification and profile is not None:
            raise RequestRefused(f"a profile goes with a verification, not {kind}")
        resolved = self.config.profiles.resolve(profile).name if verification else None
        if operator is not None and (staff is not None or not OPERATOR_NAME.fullmatch(operator)
                                     or operator.partition(":")[0] != "central"):
            raise RequestRefused("operator: 'central' or 'central:ADMIN' for a request without a staff login")
        if verification and staff is not None and not self.staff.check(staff):
            raise StaffLoginRequired("the staff login has ended: log in again to start a verification")
        if kind in ("verify_paper", "enroll_paper") and self.paper is None:
            raise RequestRefused("paper verification is not configured on this kiosk ([paper] enabled = true)")
        if image is not None and kind != "verify_paper":
            raise RequestRefused("an image goes with verify_paper only")
        if isinstance(images, (str, bytes)) or not all(isinstance(p, (str, Path)) for p in images):
            raise RequestRefused("images: a list of file paths")
        if images and kind != "enroll_paper":
            raise RequestRefused("images go with enroll_paper only")
        if len(images) > MAX_PAPER_FILES:
            raise RequestRefused(f"at most {MAX_PAPER_FILES} files for one enrollment, got {len(images)}")
        if mode not in ("new", "replace", "add"):
            raise RequestRefused(f"unknown enrollment mode {mode!r}")
        try:
            validate_customer(customer)
        except ValueError as exc:
            raise RequestRefused(str(exc)) from None
        if self._stop.is_set():
            raise RequestRefused("the kiosk is stopping")
        staff_action = kind in ("enroll", "enroll_paper", "delete")
        if staff_action:
            if staff is None or not self.staff.check(staff):
                raise StaffLoginRequired(f"{kind} needs a logged-in operator (the staff view)")
            if (kind == "delete" or mode == "replace") and confirm != customer:
                raise RequestRefused(f"{'delete' if kind == 'delete' else 'replace'} needs confirming: "
                                     "type the customer reference again")
        if when_idle:
            with self._admission:
                if self.pending or self.current is not None or self.state is not State.IDLE:
                    raise KioskBusy("the kiosk is busy")
                return self._queue(kind, customer, source, mode, request_id, image, images, staff, resolved,
                                   operator, staff_action)
        return self._queue(kind, customer, source, mode, request_id, image, images, staff, resolved, operator,
                           staff_action)

    def _queue(self, kind: str, customer: str, source: str, mode: str, request_id: str | None, image: Path | None,
               images: Sequence[Path], staff: StaffSession | None, resolved: str | None, operator: str | None,
               staff_action: bool) -> Request:
        given_id: dict[str, Any] = {"request_id": request_id} if request_id else {}
        req = Request(kind, customer, source, mode, image=Path(image) if image is not None else None,
                      images=tuple(Path(p) for p in images), **given_id)
        req.profile = resolved
        req.operator = staff.operator if staff is not None else operator
        if staff_action:
            assert staff is not None
            req.operator, req.staff_session = staff.operator, staff.session_id
            try:
                self.audit(kind, "started", staff.operator, subject=customer, mode=None if kind == "delete" else mode,
                           session_id=req.request_id, staff_session=staff.session_id, required=True)
            except AuditNotRecorded as exc:
                raise ActionNotAuditable(str(exc)) from None
            req.on_finish = self._audit_result
        with self._unfinished_lock:
            self._unfinished += 1
        self._requests.put(req)
        return req

    @property
    def pending(self) -> int:
        """Requests submitted and not yet ended, queued or running. ``current`` alone is None
        between a request's submission and the loop taking it, and an idle screen says nothing
        of what is queued."""
        with self._unfinished_lock:
            return self._unfinished

    def cancel(self) -> None:
        """The screen's Cancel: abandon the current capture."""
        self._cancel.set()

    def done_signing(self) -> None:
        """The screen's "Done" button: end the signature now instead of waiting for the pen-up timeout."""
        self._done.set()

    def status(self) -> dict[str, object]:
        link: LinkStats | None = self._link.stats() if self._link is not None else None
        pen_present = self.digitizer.present()
        return {"state": self.state.value, "kiosk": self.config.kiosk_id, "decisions": self.decisions,
                "templates": self.store.count() if self.store else 0,
                "digitizer": pen_present,
                # "No pen connected" on the staff view: which pen, and whether it is there now.
                "pen": {"source": self.digitizer.source, "connected": pen_present,
                        "device": self.digitizer.describe()},
                "link_connected": bool(link and link.connected),
                # For the staff view's status line: "not connected since ..., why".
                "link_configured": link is not None,
                "link_since": link.since if link else None,
                "link_problem": getattr(link, "problem", None),
                "queue_depth": dict(link.queue_depth) if link else {},
                # Of those, sent and not yet confirmed stored by the central side (kiosk.receipts).
                "awaiting_receipt": dict(link.awaiting_receipt) if link else {},
                "oldest_unconfirmed_s": round(link.oldest_unconfirmed_s.get("decision", 0.0)) if link else 0,
                "model_versions": self.verifier.model_versions(),
                # The staff view offers enrollment from paper only where there is a paper verifier.
                "paper": self.paper is not None,
                "unrecorded_decisions": self.unrecorded_count,
                # Decisions whose evidence could not be queued (too large, disk nearly full): a
                # dispute about them has no signature to show.
                "evidence_failures": self.evidence_failures,
                "calibration": self.calibration.status() if self.calibration is not None else None}

    def staff_overview(self) -> dict[str, object]:
        """What the staff view shows a logged-in operator: the profiles to pick from and the last
        decision (its profile and who asked)."""
        return {"profiles": self.config.profiles.staff_view(), "last_decision": self.last_decision}

    def _on_command(self, topic: str, payload: bytes) -> None:
        if not topic.endswith(("/" + VERIFY_SUFFIX, "/" + CALIBRATION_SUFFIX)) or self._commands is None:
            return   # other command topics (model updates) belong to the update agent
        try:
            cmd = self._commands.check(topic, payload)
            operator = f"central:{cmd.admin}" if cmd.admin else "central"
            if isinstance(cmd, CalibrationCommand):
                # Off the network thread: the calibration's lock may be held while a customer's
                # references are scored.
                threading.Thread(target=self._calibration_command, args=(cmd, operator), name="calibration-command",
                                 daemon=True).start()
                return
            # Only on an idle kiosk: queued behind a customer at the pen, it took the next signature
            # written there as this customer's (and ran after its command had expired).
            self.submit("verify", cmd.customer, source="central", request_id=cmd.request_id, profile=cmd.profile,
                        operator=operator, when_idle=True)
            log.info("verification requested by the central server", extra={
                "event": "command", "request": cmd.request_id, "profile": cmd.profile})
        except CommandError as exc:
            named = {"request": exc.request_id} if exc.request_id is not None else {}
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": exc.reason, **named})
        except UnknownProfile as exc:
            # Said centrally too (the log reaches the collector): the request is not run at all
            # rather than run under another profile than the one asked for.
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": "unknown_profile",
                                                           "request": cmd.request_id})
        except KioskBusy as exc:
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": "busy",
                                                           "request": cmd.request_id})
        except RequestRefused as exc:
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": "invalid"})

    def _calibration_command(self, cmd: CalibrationCommand, operator: str) -> None:
        """A signed revert/resume from the central server; audited by the calibration (action
        ``calibration``, mode revert/resume, operator ``central:ADMIN``)."""
        try:
            (self.revert_calibration if cmd.action == "revert" else self.resume_calibration)(None, operator=operator)
        except ActionNotAuditable as exc:
            log.error("command refused: %s", exc, extra={"event": "command_refused", "reason": "unaudited",
                                                         "request": cmd.request_id})
            return
        except CalibrationNotSaved as exc:
            log.error("command failed: %s", exc, extra={"event": "command_refused", "reason": "not_saved",
                                                       "request": cmd.request_id})
            return
        except RequestRefused as exc:
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": "calibration_off",
                                                           "request": cmd.request_id})
            return
        log.info("site calibration %s requested by the central server", cmd.action, extra={
            "event": "command", "request": cmd.request_id, "action": cmd.action})

    # -- the state machine --------------------------------------------------------------------
    def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._heartbeat.beat()
            try:
                req = self._requests.get(timeout=0.5)
            except queue.Empty:
                self.staff.expire()   # idle staff sessions end (and are audited) even if nobody asks
                continue
            self.current = req
            self._cancel.clear()
            try:
                if self._stop.is_set():
                    # stop() came between the take and the clear above, and its cancel was cleared:
                    # this request would run uncancelled while the pen and link close under it.
                    req.finish(ok=False, error="stopping")
                else:
                    self._run(req)
            except Exception as exc:   # one customer's failure never takes the kiosk down
                log.exception("request failed", extra={"event": "request_failed", "session": req.request_id})
                self._screen.enter(State.IDLE, Message("error", message="Sorry, something went wrong. Please ask staff."))
                req.finish(ok=False, error=f"internal error: {type(exc).__name__}")
            finally:
                self.current = None
                self._one_ended()
                if req.done.is_set() and self.state is not State.IDLE and not self._stop.is_set():
                    self._screen.quietly(State.IDLE)

    def _run(self, req: Request) -> None:
        """One request through its flow; the screen is left as the flow says, then the request ends."""
        try:
            finished = self._flows[req.kind](req)
        except RequestEnded as end:
            # Shown first: whoever waits on the request finds the screen that says why it ended.
            self._screen.enter(State.IDLE, end.view)
            req.finish(ok=False, error=end.error, **end.result)
            return
        if finished.view is None:
            # The decision stays on the screen; the kiosk is idle again.
            req.finish(**finished.result)
            self._screen.quietly(State.IDLE)
        else:
            req.finish(**finished.result)
            self._screen.enter(State.IDLE, finished.view)


def _enroll_pen(verifier: PenVerifier, stored: StoredTemplate) -> ReferenceSet[Any] | None:
    return verifier.enroll(stored.references) if stored.references else None


def _enroll_paper(verifier: PaperVerifier, stored: StoredTemplate) -> ReferenceSet[Any] | None:
    """Paper questions: the customer's paper references when there are any, else the pad
    references drawn as ink (``Verdict.references`` says which)."""
    from models.paper import StaleReferences

    if stored.paper:
        try:
            return verifier.enroll_prepared(stored.paper)
        except StaleReferences as exc:
            if not stored.references:
                raise TemplateError(str(exc)) from None
            log.warning("paper references unusable, using the pad references: %s", exc,
                        extra={"event": "paper_references_stale"})
    return verifier.enroll_pad(stored.references) if stored.references else None


def _warm_sample() -> Trajectory:
    """A small synthetic scribble, long enough for every feature (the warm-up only compiles)."""


    n = 60
    t = np.linspace(0, 0.6, n)
    return Trajectory(x=np.cos(t * 9) * 10 + t * 20, y=np.sin(t * 7) * 5, pressure=np.full(n, 0.5), t=t,
                      pen_down=np.ones(n, dtype=bool),
                      device=DeviceInfo(name="warm-up", units="mm", resolution=100.0, pressure_levels=1023))


__all__ = ["Daemon", "Request", "State"]
