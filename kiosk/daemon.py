"""The appliance daemon: a state machine around capture, verification, enrollment and reporting.

States (``State``): ``idle`` -> ``identify`` (which customer; from the screen or a signed request
from the central server) -> ``capture`` (the live pen; ink streamed to the screen) -> ``verify`` ->
``decision`` (shown on the screen) -> ``report`` (sealed into the outbox, sent to the central
server) -> ``idle``. Enrollment runs ``enroll`` captures until N references are accepted
("Save (n/N)"; a refused sample is answered with reasons and the customer signs again), then
writes the encrypted template. Template management: ``enroll`` with mode ``new``, ``replace``
or ``add``, and ``delete``; these need a logged-in operator (``kiosk.staff``, ``submit(staff=...)``),
``replace`` and ``delete`` the customer typed again (``confirm``), and each is audited (``audit``:
an ``AuditRecord`` sealed into the outbox when it starts, before anything changes, and when it ends). Paper signatures (``verify_paper``, with ``[paper]``): ``identify`` ->
``capture`` (the camera, until a photo holds a signature; each refusal tells the person what to
change) or a scanned file -> ``verify`` (``kiosk.paper``, against the pad references drawn as
ink) -> ``decision`` -> ``report`` (mode ``offline``).

One thread runs the state machine and does all the capturing, so there is never more than one
customer at the pen; requests come in through :meth:`Daemon.submit` (the screen's HTTP API, the
command topic). The verifier is one object behind ``kiosk.verifier.Verifier``; the model-update
agent swaps it with :meth:`Daemon.set_verifier`, which drops every cached template (they are
rebuilt from the stored reference trajectories) and tells the link and the listeners.

Never logged: keys, raw pen data, template contents, customer references (a session id is).
"""

from __future__ import annotations

import enum
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evdev import ecodes

from firmware_host.errors import (
    CaptureError,
    DeviceGoneError,
    DevicePermissionError,
    NoPenDeviceError,
    NoSignatureError,
)
from firmware_host.events import DeviceState
from firmware_host.evdev_reader import DigitizerService
from kiosk.config import DaemonConfig
from kiosk.sdnotify import Notifier, Watchdog, watchdog_interval
from kiosk.sessions import EnrollmentSession, VerificationOutcome, new_session_id, verify
from kiosk.staff import AuditError, StaffAuth, StaffSession
from kiosk.templates import TemplateError, TemplateStore, validate_customer
from models.classic import ClassicConfig
from models.pen import make_verifier
from models.verification import PenVerifier as Verifier

log = logging.getLogger(__name__)

#: Capture retries after the pen was unplugged mid-signature (the customer signs again).
MAX_UNPLUG_RETRIES = 3


class State(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    IDENTIFY = "identify"
    CAPTURE = "capture"
    VERIFY = "verify"
    DECISION = "decision"
    REPORT = "report"
    ENROLL = "enroll"
    STOPPED = "stopped"


class RequestError(ValueError):
    """A request was refused before anything happened (bad customer reference, busy...)."""


class StaffRequired(RequestError):
    """Template management without a live operator session (``kiosk.staff``)."""


class NotAuditable(RequestError):
    """A staff action whose audit record cannot be stored (outbox full or broken): refused."""


@dataclass
class Request:
    kind: str                   # "verify", "verify_paper", "enroll", "delete"
    customer: str
    source: str = "screen"      # "screen", "central", "api"
    mode: str = "new"           # enrollment: "new", "replace", "add"
    image: Path | None = None   # verify_paper: a scanned file instead of the camera
    request_id: str = field(default_factory=new_session_id)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)
    operator: str | None = None          # enroll/delete: the logged-in operator who asked
    staff_session: str | None = None     # ...and their login session's public id
    #: Runs before the request is reported done (the staff action's audit record).
    on_finish: Callable[[Request], None] | None = field(default=None, repr=False)

    def finish(self, **result: Any) -> None:
        self.result = result
        if self.on_finish is not None:
            try:
                self.on_finish(self)
            except Exception:   # the result stands; the failure to audit it is logged
                log.exception("request finish hook failed", extra={"event": "finish_hook_failed",
                                                                   "session": self.request_id})
        self.done.set()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{self.kind} request not finished within {timeout} s")
        return self.result


class EventBus:
    """Fan-out of screen events to every connected page (and tests). Never blocks the daemon."""

    def __init__(self) -> None:
        self._subs: list[queue.Queue[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.screen: dict[str, Any] = {"type": "screen", "screen": "starting"}

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=2000)
        with self._lock:
            self._subs.append(q)
            q.put_nowait(self.screen)   # a page that connects late sees the current screen
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            if q in self._subs:
                self._subs.remove(q)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            if event.get("type") == "screen":
                self.screen = event
            for q in self._subs:
                try:
                    q.put_nowait(event)
                except queue.Full:
                    pass   # a stuck page loses ink, never the daemon's time


class InkTracker:
    """Raw evdev frames -> normalised points for the live ink (0..1 over the pad's area)."""

    def __init__(self, caps: Any, bus: EventBus, batch_s: float = 0.03) -> None:
        ax, ay = caps.abs.get(ecodes.ABS_X), caps.abs.get(ecodes.ABS_Y)
        ap = caps.abs.get(ecodes.ABS_PRESSURE)
        self.x0, self.xr = (ax.min, max(ax.max - ax.min, 1)) if ax else (0, 1)
        self.y0, self.yr = (ay.min, max(ay.max - ay.min, 1)) if ay else (0, 1)
        self.p0, self.pr = (ap.min, max(ap.max - ap.min, 1)) if ap else (0, 0)
        self.aspect = (self.xr / max(ax.resolution, 1)) / (self.yr / max(ay.resolution, 1)) if ax and ay and ax.resolution and ay.resolution else self.xr / self.yr
        self.bus = bus
        self.batch_s = batch_s
        self.x = self.y = self.p = 0
        self.touch = False
        self.points: list[list[float]] = []
        self.last_flush = time.monotonic()
        self.total = 0

    def __call__(self, item: Any) -> None:
        if isinstance(item, DeviceState):
            self.x = item.abs.get(ecodes.ABS_X, self.x)
            self.y = item.abs.get(ecodes.ABS_Y, self.y)
            self.p = item.abs.get(ecodes.ABS_PRESSURE, self.p)
            self.touch = ecodes.BTN_TOUCH in item.keys
            return
        t = getattr(item, "type", None)
        if t == ecodes.EV_ABS:
            if item.code == ecodes.ABS_X:
                self.x = item.value
            elif item.code == ecodes.ABS_Y:
                self.y = item.value
            elif item.code == ecodes.ABS_PRESSURE:
                self.p = item.value
        elif t == ecodes.EV_KEY and item.code == ecodes.BTN_TOUCH:
            self.touch = bool(item.value)
        elif t == ecodes.EV_SYN and item.code == ecodes.SYN_REPORT:
            down = self.touch or (self.pr > 0 and self.p > self.p0)
            p = (self.p - self.p0) / self.pr if self.pr else (1.0 if down else 0.0)
            self.points.append([round((self.x - self.x0) / self.xr, 4), round((self.y - self.y0) / self.yr, 4),
                                round(max(0.0, min(1.0, p)), 3), 1 if down else 0])
            now = time.monotonic()
            if now - self.last_flush >= self.batch_s:
                self.flush()

    def flush(self) -> None:
        if self.points:
            self.total += len(self.points)
            self.bus.publish({"type": "ink", "points": self.points, "aspect": round(self.aspect, 4)})
            self.points = []
        self.last_flush = time.monotonic()


class Daemon:
    """The appliance. ``start()`` brings it up (ready), ``stop()`` takes it down."""

    def __init__(self, config: DaemonConfig, *, digitizer: DigitizerService | None = None,
                 verifier: Verifier | None = None, notifier: Notifier | None = None,
                 link: Any | None = None, start_ui: bool | None = None) -> None:
        self.config = config
        self.bus = EventBus()
        self.notifier = notifier or Notifier()
        self.state = State.STARTING
        self.verifier: Verifier = verifier or make_verifier(
            config.verifier.kind, config.verifier.threshold, config.verifier.rhythm_tolerance,
            config.verifier.rhythm_decides, model_dir=config.verifier.model_dir)
        self.digitizer = digitizer or DigitizerService(
            config.device.selector(), config.device.segmenter(), input_dir=config.device.input_dir,
            rediscover_interval=config.device.rediscover_interval_s)
        self._link = link
        self._own_link = link is None and config.link is not None
        self._start_ui = config.ui.enabled if start_ui is None else start_ui
        #: Operator logins: enroll and delete need one of its sessions (``submit(staff=...)``).
        self.staff = StaffAuth(config.staff, self.audit)
        self.store: TemplateStore | None = None
        self.ui: Any = None
        self._requests: queue.Queue[Request] = queue.Queue()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._templates: dict[str, Any] = {}
        self._paper_templates: dict[str, Any] = {}
        self.paper: Any = None      # kiosk.paper.PaperVerifier with [paper]
        self.camera: Any = None     # firmware_host.camera.Camera with [paper]
        self._templates_lock = threading.Lock()
        self._model_listeners: list[Callable[[Verifier], None]] = []
        self._commands: Any = None
        self.update_agent: Any = None            # kiosk.update_agent.UpdateAgent with [update]
        self._failed_models: set[str] = set()     # digests of bundles whose model failed to load
        self._log_handler: Any = None
        self.watchdog: Watchdog | None = None
        self.current: Request | None = None
        #: Pen-up (capture complete) to decision durably published, per decision, in ms.
        self.latencies_ms: list[float] = []
        self.decisions = 0
        #: Session ids of decisions that could not be recorded (never shown as final; for staff).
        self.unrecorded: list[str] = []
        self.ready_at: float | None = None
        self.started_at = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def link(self) -> Any:
        return self._link

    def start(self) -> None:
        cfg = self.config
        t0 = time.monotonic()
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = TemplateStore(cfg.storage.templates_dir, cfg.storage.template_key,
                                   create_key=cfg.storage.create_key)
        if self._own_link:
            from kiosk.link import KioskLink
            from kiosk.logging_mqtt import MqttLogHandler

            self._link = KioskLink(cfg.link, model_versions=self.verifier.model_versions())
            self._log_handler = MqttLogHandler(self._link)
            logging.getLogger().addHandler(self._log_handler)
        if self._link is not None:
            self._link.set_model_versions(self.verifier.model_versions())
            if cfg.commands.enabled and cfg.commands.central_sign_pub is not None:
                from kiosk.commands import CommandVerifier, load_central_sign_pub

                self._commands = CommandVerifier(load_central_sign_pub(cfg.commands.central_sign_pub), cfg.kiosk_id,
                                                 self._link.topics, cfg.state_dir / "commands-seen.json",
                                                 cfg.commands.max_age_s)
                self._link.add_command_handler(self._on_command)
            if cfg.update is not None:
                self._start_update_agent()
            self._link.start()
        if self._start_ui:
            from kiosk.ui.server import UiServer

            self.ui = UiServer(self, cfg.ui.host, cfg.ui.port, token_file=cfg.ui.token_file,
                               token_group=cfg.ui.token_group)
            self.ui.start()
        self._warm_up()
        if cfg.paper.enabled:
            self._start_paper()
        interval = watchdog_interval()
        if interval is not None:
            self.watchdog = Watchdog(self.notifier, interval)
            self.watchdog.start()
        self._thread = threading.Thread(target=self._main_loop, name="kiosk-main", daemon=True)
        self._thread.start()
        self._set_state(State.IDLE)
        self.ready_at = time.monotonic()
        self.notifier.ready("idle")
        log.info("kiosk ready", extra={"event": "ready", "ready_ms": round((time.monotonic() - t0) * 1000, 1),
                                        "ui_port": self.ui.port if self.ui else None,
                                        "templates": self.store.count()})

    def _start_paper(self) -> None:
        from firmware_host.camera import Camera
        from models.paper import PaperVerifier

        pc = self.config.paper
        self.paper = PaperVerifier(pc.model_dir, anomaly=pc.anomaly)
        self.paper.warm_up()
        source = int(pc.camera) if isinstance(pc.camera, int) or str(pc.camera).isdigit() else pc.camera
        self.camera = Camera(source, warmup_s=pc.warmup_s, frames=pc.frames)

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
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.ui is not None:
            self.ui.stop()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
        if self.update_agent is not None:
            self.update_agent.close()
        if self._own_link and self._link is not None:
            self._link.close()
        self.digitizer.close()
        if self.camera is not None:
            self.camera.close()
        self._set_state(State.STOPPED)
        self.notifier.close()

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
    def add_model_listener(self, listener: Callable[[Verifier], None]) -> None:
        self._model_listeners.append(listener)

    def set_verifier(self, verifier: Verifier) -> None:
        """The active model changed: use ``verifier`` from the next signature on."""
        verifier.warm_up(_warm_sample())
        with self._templates_lock:
            self.verifier = verifier
            self._templates.clear()   # rebuilt from the stored trajectories with the new model
        if self._link is not None:
            self._link.set_model_versions(verifier.model_versions())
        for fn in list(self._model_listeners):
            fn(verifier)
        log.info("active verifier changed", extra={"event": "model_changed", "model_versions": verifier.model_versions()})

    def _start_update_agent(self) -> None:
        """``[update]``: run the model-update agent on the link; serve its active slot's model."""
        from kiosk.update_agent import UpdateAgent

        assert self.config.update is not None
        self.update_agent = UpdateAgent.for_link(self.config.update, self._link)
        self.update_agent.start()   # recovery and checks of the active slot, then offers
        self.update_agent.add_switch_listener(self._on_model_switch)
        active = self.update_agent.active_model()
        if active is not None:
            self._on_model_switch(active)

    def _on_model_switch(self, slot: Any) -> None:
        """The agent switched (or rolled back) the active bundle: load its model and serve it.

        Runs on the agent's thread. A model that does not load (or fails its warm-up) is reported
        to the agent, which rolls back (and calls this again with the previous slot); until then
        the current verifier keeps serving. ``slot`` None: no usable bundle, so the configured
        model (``[verifier] model_dir``, default the shipped one) serves."""
        vc = self.config.verifier
        if slot is not None and slot.digest in self._failed_models:
            return   # already reported: do not loop on a bundle that cannot load
        model_dir = slot.directory if slot is not None else vc.model_dir
        versions = {slot.manifest.name: str(slot.version)} if slot is not None else None
        try:
            verifier = make_verifier(vc.kind, vc.threshold, vc.rhythm_tolerance, vc.rhythm_decides,
                                     model_dir=model_dir, versions=versions)
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
        and logged without the customer. ``required``: raise ``AuditError`` if it cannot be stored,
        so the action is refused instead of done unaudited. Returns the record's sequence number."""
        from kiosk.records import AuditRecord

        rec = AuditRecord(operator=operator, action=action, outcome=outcome, subject=subject, mode=mode,
                          session_id=session_id, staff_session=staff_session)
        seq = None
        if self._link is not None:
            from kiosk.link import LinkError

            try:
                seq = self._link.publish_audit(rec)
            except LinkError as exc:
                log.error("staff action could not be audited: %s", exc,
                          extra={"event": "audit_failed", "action": action, "operator": operator})
                if required:
                    raise AuditError(f"the staff action cannot be recorded: {exc}") from exc
        log.info("staff action %s: %s", action, outcome, extra={
            "event": "audit", "action": action, "outcome": outcome, "operator": operator, "mode": mode,
            "session": session_id, "staff_session": staff_session, "seq": seq})
        return seq

    def _audit_result(self, req: Request) -> None:
        """The end of an enroll/delete, before the request reports done (``Request.on_finish``)."""
        r = req.result
        outcome = "ok" if r.get("ok") else str(r.get("error") or "failed")[:64]
        self.audit(req.kind, outcome, req.operator or "?", subject=req.customer,
                   mode=req.mode if req.kind == "enroll" else None, session_id=req.request_id,
                   staff_session=req.staff_session)

    # -- requests -----------------------------------------------------------------------------
    def submit(self, kind: str, customer: str, *, source: str = "screen", mode: str = "new",
               request_id: str | None = None, image: Path | None = None, staff: StaffSession | None = None,
               confirm: str | None = None) -> Request:
        """Queue a request. ``enroll`` and ``delete`` change whom the kiosk approves: they need
        ``staff``, a live session of ``self.staff`` (an operator's login), and ``replace`` and
        ``delete`` need ``confirm`` equal to ``customer`` (typed again). Their start is audited
        durably before they are queued; their end when they finish."""
        if kind not in ("verify", "verify_paper", "enroll", "delete"):
            raise RequestError(f"unknown request {kind!r}")
        if kind == "verify_paper" and self.paper is None:
            raise RequestError("paper verification is not configured on this kiosk ([paper] enabled = true)")
        if image is not None and kind != "verify_paper":
            raise RequestError("an image goes with verify_paper only")
        if mode not in ("new", "replace", "add"):
            raise RequestError(f"unknown enrollment mode {mode!r}")
        try:
            validate_customer(customer)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        if self._stop.is_set():
            raise RequestError("the kiosk is stopping")
        staff_action = kind in ("enroll", "delete")
        if staff_action:
            if staff is None or not self.staff.check(staff):
                raise StaffRequired(f"{kind} needs a logged-in operator (the staff view)")
            if (kind == "delete" or mode == "replace") and confirm != customer:
                raise RequestError(f"{'delete' if kind == 'delete' else 'replace'} needs confirming: "
                                   "type the customer reference again")
        req = Request(kind, customer, source, mode, image=Path(image) if image is not None else None,
                      **({"request_id": request_id} if request_id else {}))
        if staff_action:
            assert staff is not None
            req.operator, req.staff_session = staff.operator, staff.session_id
            try:
                self.audit(kind, "started", staff.operator, subject=customer, mode=mode if kind == "enroll" else None,
                           session_id=req.request_id, staff_session=staff.session_id, required=True)
            except AuditError as exc:
                raise NotAuditable(str(exc)) from None
            req.on_finish = self._audit_result
        self._requests.put(req)
        return req

    def cancel(self) -> None:
        """The screen's Cancel: abandon the current capture."""
        self._cancel.set()

    def done_signing(self) -> None:
        """The screen's "Done" button: end the signature now instead of waiting for the pen-up timeout."""
        self._done.set()

    def status(self) -> dict[str, Any]:
        link = self._link.stats() if self._link is not None else None
        return {"state": self.state.value, "kiosk": self.config.kiosk_id, "decisions": self.decisions,
                "templates": self.store.count() if self.store else 0,
                "digitizer": self.digitizer.digitizer is not None,
                "link_connected": bool(link and link.connected),
                "queue_depth": dict(link.queue_depth) if link else {},
                "model_versions": self.verifier.model_versions(),
                "unrecorded_decisions": len(self.unrecorded)}

    def _on_command(self, topic: str, payload: bytes) -> None:
        from kiosk.commands import VERIFY_SUFFIX, CommandError

        if not topic.endswith("/" + VERIFY_SUFFIX):
            return   # other command topics (model updates) belong to the update agent
        try:
            cmd = self._commands.check(topic, payload)
            self.submit("verify", cmd.customer, source="central", request_id=cmd.request_id)
            log.info("verification requested by the central server", extra={"event": "command", "request": cmd.request_id})
        except CommandError as exc:
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": exc.reason})
        except RequestError as exc:
            log.warning("command refused: %s", exc, extra={"event": "command_refused", "reason": "invalid"})

    # -- the state machine --------------------------------------------------------------------
    def _set_state(self, state: State, **screen: Any) -> None:
        self.state = state
        self.bus.publish({"type": "screen", "screen": screen.pop("screen", state.value), "state": state.value, **screen})
        if state is not State.STOPPED:
            self.notifier.status(state.value)

    def _beat(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat()

    def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._beat()
            try:
                req = self._requests.get(timeout=0.5)
            except queue.Empty:
                self.staff.expire()   # idle staff sessions end (and are audited) even if nobody asks
                continue
            self.current = req
            self._cancel.clear()
            try:
                if req.kind == "verify":
                    self._do_verify(req)
                elif req.kind == "verify_paper":
                    self._do_verify_paper(req)
                elif req.kind == "enroll":
                    self._do_enroll(req)
                else:
                    self._do_delete(req)
            except Exception as exc:   # one customer's failure never takes the kiosk down
                log.exception("request failed", extra={"event": "request_failed", "session": req.request_id})
                self._set_state(State.IDLE, screen="error", message="Sorry, something went wrong. Please ask staff.")
                req.finish(ok=False, error=f"internal error: {type(exc).__name__}")
            finally:
                self.current = None
                if req.done.is_set() and self.state is not State.IDLE and not self._stop.is_set():
                    self.state = State.IDLE
                    self.notifier.status("idle")

    def _cached_template(self, cache: dict[str, Any], customer: str,
                         builder: Callable[[], Callable[[list[Any]], Any]]) -> Any | None:
        """The customer's template from ``cache``, or built from the stored references by the
        builder current now (None if not enrolled). A template is cached only if its builder is
        still the current one when it is done: a model switched meanwhile has cleared the cache."""
        with self._templates_lock:
            tpl = cache.get(customer)
            build = builder()
        if tpl is not None:
            return tpl
        assert self.store is not None
        stored = self.store.get(customer)
        if stored is None:
            return None
        tpl = build(list(stored.references))
        with self._templates_lock:
            if build == builder():
                cache[customer] = tpl
        return tpl

    def _template(self, customer: str) -> Any | None:
        return self._cached_template(self._templates, customer, lambda: self.verifier.build)

    def _capture(self, req: Request, prompt: dict[str, Any]) -> Any | None:
        """One signature from the pen, with live ink; None when abandoned (screen updated)."""
        dev = self.config.device
        bound = dev.customer_timeout_s + dev.max_duration_s + dev.pen_up_timeout_s + 10.0
        for attempt in range(MAX_UNPLUG_RETRIES + 1):
            self._done.clear()
            self._set_state(State.CAPTURE if req.kind == "verify" else State.ENROLL, **prompt)
            if self.watchdog is not None:
                self.watchdog.busy(bound + dev.customer_timeout_s)
            ink: InkTracker | None = None

            def on_item(item: Any) -> None:
                nonlocal ink
                if ink is None:
                    caps = self.digitizer.digitizer.caps if self.digitizer.digitizer else None
                    if caps is None:
                        return
                    ink = InkTracker(caps, self.bus)
                    self.bus.publish({"type": "ink_start", "aspect": round(ink.aspect, 4)})
                ink(item)

            try:
                sig = self.digitizer.capture_one(done=self._done, cancel=self._cancel, on_item=on_item,
                                                 device_timeout=dev.customer_timeout_s,
                                                 start_timeout=dev.customer_timeout_s)
                if ink is not None:
                    ink.flush()
                return sig
            except DeviceGoneError:
                log.warning("pen unplugged during a signature", extra={"event": "device_gone", "session": req.request_id})
                self.bus.publish({"type": "notice", "message": "The pen was disconnected. Please wait, then sign again."})
                continue
            except NoSignatureError as exc:
                reason = "cancelled" if self._cancel.is_set() else "timeout"
                log.info("no signature: %s", exc, extra={"event": "no_signature", "session": req.request_id, "reason": reason})
                req.finish(ok=False, error=reason)
                self._set_state(State.IDLE, screen="idle", message="Cancelled." if reason == "cancelled" else "")
                return None
            except (NoPenDeviceError, DevicePermissionError) as exc:
                log.error("no pen: %s", exc, extra={"event": "no_device", "session": req.request_id})
                req.finish(ok=False, error="no_device")
                self._set_state(State.IDLE, screen="error", message="The signature pen is not available. Please ask staff.")
                return None
            except CaptureError as exc:
                log.error("capture failed: %s", exc, extra={"event": "capture_failed", "session": req.request_id})
                continue
            finally:
                self._beat()
        req.finish(ok=False, error="device_gone")
        self._set_state(State.IDLE, screen="error", message="The signature pen is not working. Please ask staff.")
        return None

    def _identify(self, req: Request, build: Callable[[str], Any]) -> Any | None:
        """The customer's template built by ``build``; None when there is none (screen updated)."""
        self._set_state(State.IDENTIFY, screen="identify")
        try:
            template = build(req.customer)
        except TemplateError as exc:
            log.error("template unusable: %s", exc, extra={"event": "template_error", "session": req.request_id})
            template = None
        if template is None:
            req.finish(ok=False, error="not_enrolled")
            self._set_state(State.IDLE, screen="error", message="No signature on file for this customer. Please ask staff.")
        return template

    def _do_verify(self, req: Request) -> None:
        template = self._identify(req, self._template)
        if template is None:
            return
        sig = self._capture(req, {"screen": "sign", "title": "Please sign", "source": req.source})
        if sig is None:
            return
        t_pen_up = time.perf_counter()   # the signature is complete: the clock of the budget starts
        self._set_state(State.VERIFY, screen="verify")
        outcome = verify(self.verifier, template, req.customer, sig.trajectory, req.request_id, req.source)
        self._report(req, outcome, t_pen_up)

    def _paper_template(self, customer: str) -> Any | None:
        return self._cached_template(self._paper_templates, customer, lambda: self.paper.build_from_pad)

    def _paper_picture(self, req: Request) -> Any | None:
        """The signature found on a photo (or the request's scan); None when abandoned (screen updated)."""
        from firmware_host.camera import CameraError, FrameRejected
        from models.image_preprocess import NoInkError
        from models.signature_finder import PictureError, find_signature, read_picture

        if req.image is not None:
            try:
                return find_signature(read_picture(req.image))
            except (PictureError, NoInkError, OSError) as exc:
                log.info("scan refused: %s", exc, extra={"event": "paper_refused", "session": req.request_id})
                req.finish(ok=False, error="no_signature_on_scan", message=str(exc))
                self._set_state(State.IDLE, screen="error", message=f"The scan cannot be used: {exc}")
                return None
        attempts = self.config.paper.attempts
        hint = ""
        for attempt in range(1, attempts + 1):
            if self._cancel.is_set():
                req.finish(ok=False, error="cancelled")
                self._set_state(State.IDLE, screen="idle", message="Cancelled.")
                return None
            self._set_state(State.CAPTURE, screen="paper", title="Hold the signed paper under the camera",
                            attempt=attempt, attempts=attempts, message=hint)
            self._beat()
            try:
                return find_signature(self.camera.capture().frame)
            except FrameRejected as exc:
                hint, code = exc.message, exc.reason.value
            except (PictureError, NoInkError) as exc:
                hint, code = f"{exc}. Show the signature to the camera.", "no_signature"
            except CameraError as exc:
                log.error("camera failed: %s", exc, extra={"event": "camera_failed", "session": req.request_id})
                req.finish(ok=False, error="camera_gone")
                self._set_state(State.IDLE, screen="error", message="The camera is not working. Please ask staff.")
                return None
            log.info("photo refused", extra={"event": "paper_refused", "session": req.request_id, "reason": code,
                                             "attempt": attempt})
            self.bus.publish({"type": "notice", "message": hint})
        req.finish(ok=False, error="no_usable_photo", message=hint)
        self._set_state(State.IDLE, screen="error", message=f"No usable photo of the signature. {hint}")
        return None

    def _do_verify_paper(self, req: Request) -> None:
        from models.image_preprocess import NoInkError

        template = self._identify(req, self._paper_template)
        if template is None:
            return
        picture = self._paper_picture(req)
        if picture is None:
            return
        t_found = time.perf_counter()   # the photo is taken and the signature found: the budget's clock
        self._set_state(State.VERIFY, screen="verify")
        try:
            pv = self.paper.verify(template, picture)
        except NoInkError as exc:
            req.finish(ok=False, error="no_signature", message=str(exc))
            self._set_state(State.IDLE, screen="error", message=f"No signature found: {exc}")
            return
        outcome = VerificationOutcome(req.customer, req.request_id, pv.verdict,
                                      (time.perf_counter() - t_found) * 1e3, req.source)
        self._report(req, outcome, t_found, mode="offline", versions=self.paper.model_versions(),
                     explanations=pv.explanations)

    def _show_decision(self, outcome: VerificationOutcome, explanations: tuple[str, ...] = ()) -> None:
        v = outcome.verdict
        self.state = State.DECISION
        if v.decision != "APPROVED" and self.config.ui.customer_decision == "wait_for_staff":
            # The bank's choice: the customer is not told "suspicious" (nor the score or aspects);
            # staff see the decision centrally.
            self.bus.publish({"type": "screen", "screen": "decision", "state": "decision", "decision": "WAIT",
                              "show_s": self.config.ui.show_decision_s})
            return
        self.bus.publish({
            "type": "screen", "screen": "decision", "state": "decision", "decision": v.decision,
            "match_rate": round(v.match_rate * 100), "too_similar": v.too_similar,
            "aspects": [{"code": a.code, "label": a.label, "ok": a.ok, "similarity": round(a.similarity * 100)}
                        for a in v.aspects],
            "explanations": list(explanations), "show_s": self.config.ui.show_decision_s,
        })

    def _report(self, req: Request, outcome: VerificationOutcome, t_pen_up: float, *, mode: str = "online",
                versions: dict[str, str] | None = None, explanations: tuple[str, ...] = ()) -> None:
        """Record the decision durably (sealed into the outbox), then show it.

        ``t_pen_up``: when the signature was complete (the pen lifted, or the photo's signature
        found). The order matters: a decision the outbox could not store (full disk, broken
        database) is never shown as final; the customer is asked to wait for staff, the request
        ends with ``error="not_recorded"`` and the kiosk's status counts it for staff."""
        v = outcome.verdict
        self._set_state(State.REPORT, screen="verify")
        record = {
            "decision": v.decision, "score": round(v.match_rate, 4), "reasons": v.reasons,
            "model_versions": versions if versions is not None else self.verifier.model_versions(),
            "timings_ms": {"verify": round(outcome.verify_ms, 2),
                           "pen_up_to_report": round((time.perf_counter() - t_pen_up) * 1e3, 2)},
            "subject": req.customer, "session_id": req.request_id, "mode": mode,
        }
        seq = None
        if self._link is not None:
            from kiosk.link import LinkError

            try:
                seq = self._link.publish_decision(record)
            except LinkError as exc:
                self._not_recorded(req, outcome, str(exc))
                return
        latency = (time.perf_counter() - t_pen_up) * 1e3
        self._show_decision(outcome, explanations=explanations)
        self.latencies_ms.append(latency)
        self.decisions += 1
        log.info("decision %s", v.decision, extra={
            "event": "decision", "session": req.request_id, "source": req.source, "decision": v.decision,
            "match_rate": round(v.match_rate, 3), "reasons": ",".join(v.reasons), "seq": seq,
            "latency_ms": round(latency, 2)})
        req.finish(ok=True, decision=v.decision, match_rate=v.match_rate, distance=v.distance, reasons=v.reasons,
                   seq=seq, latency_ms=latency, recorded=self._link is not None)
        self.state = State.IDLE
        self.notifier.status("idle")

    def _not_recorded(self, req: Request, outcome: VerificationOutcome, why: str) -> None:
        """The decision could not be stored: it has no result. Staff see it in the status."""
        with self._templates_lock:
            self.unrecorded.append(req.request_id)
        log.error("decision could not be recorded; not shown as final: %s", why,
                  extra={"event": "report_failed", "session": req.request_id})
        self._set_state(State.IDLE, screen="error", title="Not recorded",
                        message="This check could not be recorded, so it has no result. Please ask staff.")
        req.finish(ok=False, error="not_recorded", decision=outcome.verdict.decision, recorded=False)

    def _do_enroll(self, req: Request) -> None:
        assert self.store is not None
        existing = self.store.get(req.customer)
        if req.mode == "new" and existing is not None:
            req.finish(ok=False, error="already_enrolled")
            self._set_state(State.IDLE, screen="error", message="This customer is already enrolled (use Replace or Add).")
            return
        if req.mode == "add" and existing is None:
            req.finish(ok=False, error="not_enrolled")
            self._set_state(State.IDLE, screen="error", message="No signature on file to add to. Enroll first.")
            return
        p = self.config.policy
        with self._templates_lock:
            vcfg = getattr(self.verifier, "config", None)
        session = EnrollmentSession(req.customer, req.mode, p.enrollment(), p.max_enroll_attempts,
                                    vcfg if isinstance(vcfg, ClassicConfig) else ClassicConfig(),
                                    session_id=req.request_id,
                                    seed=list(existing.references) if req.mode == "add" and existing else [])
        refusals: list[dict[str, str]] = []
        last: dict[str, Any] = {}
        while not session.complete:
            if session.exhausted:
                req.finish(ok=False, error="too_many_refusals", refusals=refusals)
                self._set_state(State.IDLE, screen="error", message="Enrollment stopped: too many signatures refused. Please ask staff.")
                return
            prompt = {"screen": "enroll", "title": f"Signature {len(session.accepted) + 1} of {p.references}",
                      "count": len(session.accepted), "needed": p.references, **last}
            sig = self._capture(req, prompt)
            if sig is None:
                return
            result = session.add(sig.trajectory)
            if result.accepted:
                last = {"saved": result.label}
                log.info("enrollment sample accepted", extra={"event": "enroll_sample", "session": req.request_id,
                                                              "count": result.count, "needed": result.needed})
            else:
                rs = [{"code": r.code, "message": r.message} for r in result.refusals]
                refusals.extend(rs)
                last = {"refused": rs}
                log.info("enrollment sample refused", extra={"event": "enroll_refused", "session": req.request_id,
                                                             "codes": ",".join(r.code for r in result.refusals)})
            self.bus.publish({"type": "enroll_sample", "accepted": result.accepted, "label": result.label,
                              "count": result.count, "needed": result.needed,
                              "refusals": [{"code": r.code, "message": r.message} for r in result.refusals]})
        refs = session.references()
        self.store.put(req.customer, refs)
        with self._templates_lock:
            self._templates.pop(req.customer, None)
            self._paper_templates.pop(req.customer, None)
        log.info("enrollment complete", extra={"event": "enrolled", "session": req.request_id, "mode": req.mode,
                                               "references": len(refs), "attempts": session.attempts})
        req.finish(ok=True, references=len(refs), attempts=session.attempts, refusals=refusals)
        self._set_state(State.IDLE, screen="enrolled", title="Thank you", message=f"{len(refs)} signatures saved.")

    def _do_delete(self, req: Request) -> None:
        assert self.store is not None
        removed = self.store.delete(req.customer)
        with self._templates_lock:
            self._templates.pop(req.customer, None)
            self._paper_templates.pop(req.customer, None)
        log.info("template deleted" if removed else "no template to delete", extra={"event": "template_deleted", "session": req.request_id})
        req.finish(ok=removed, error=None if removed else "not_enrolled")
        self._set_state(State.IDLE, screen="idle")


def _warm_sample() -> Any:
    """A small synthetic scribble, long enough for every feature (the warm-up only compiles)."""
    import numpy as np

    from models.trajectory import DeviceInfo, Trajectory

    n = 60
    t = np.linspace(0, 0.6, n)
    return Trajectory(x=np.cos(t * 9) * 10 + t * 20, y=np.sin(t * 7) * 5, pressure=np.full(n, 0.5), t=t,
                      pen_down=np.ones(n, dtype=bool),
                      device=DeviceInfo(name="warm-up", units="mm", resolution=100.0, pressure_levels=1023))


__all__ = ["Daemon", "EventBus", "NotAuditable", "Request", "RequestError", "StaffRequired", "State", "Path"]
