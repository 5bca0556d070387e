"""What the kiosk's screen is told: typed events, and the bus that fans them out to the pages.

The daemon and its flows publish these dataclasses; :meth:`EventBus.publish` turns each into the
JSON object the page reads (``kiosk/ui/static/app.js``: ``type`` ``screen``, ``ink_start``,
``ink``, ``notice``, ``enroll_sample``, ``preview``, ``checked_picture``), once, and every subscriber (the screen server's
``/events`` stream, tests) gets that object. The wire form is the contract with the page; the
classes are the contract with the code that decides what to show.

A screen change is a ``ScreenChange``: the daemon's :class:`State` and a *view*, one of
``Message`` (idle, identify, verify, error, enrolled...), ``SignPrompt``, ``EnrollPrompt``,
``PaperPrompt``, ``DecisionShown`` or ``DecisionWithheld``.
"""

from __future__ import annotations

import base64
import enum
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Union

from firmware_host.ink import InkPoint

#: A JSON value as the page reads it.
Json = Union[None, bool, int, float, str, list["Json"], dict[str, "Json"]]
JsonObject = dict[str, Json]


class State(str, enum.Enum):
    """The appliance's state machine (``kiosk.daemon``): shown on the page, told to systemd."""

    STARTING = "starting"
    IDLE = "idle"
    IDENTIFY = "identify"
    CAPTURE = "capture"
    VERIFY = "verify"
    DECISION = "decision"
    REPORT = "report"
    ENROLL = "enroll"
    STOPPED = "stopped"


def _fields(**kv: Json) -> JsonObject:
    """The given fields, less those that are None (the page treats absent and null alike)."""
    return {k: v for k, v in kv.items() if v is not None}


# -- views: what one screen shows ------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """A screen with at most a title and a message: idle, identify, verify, error, enrolled..."""

    screen: str
    title: str | None = None
    message: str | None = None

    def fields(self) -> JsonObject:
        return _fields(title=self.title, message=self.message)


@dataclass(frozen=True)
class SignPrompt:
    """Sign on the pad (a verification); ``source``: who asked (screen, central, api)."""

    title: str
    source: str
    screen = "sign"

    def fields(self) -> JsonObject:
        return {"title": self.title, "source": self.source}


@dataclass(frozen=True)
class RefusalView:
    code: str
    message: str

    def to_json(self) -> JsonObject:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class EnrollPrompt:
    """Sign reference ``count + 1`` of ``needed``; with what became of the previous one."""

    title: str
    count: int
    needed: int
    saved: str | None = None                           # "Save (n/N)": the previous one was kept
    refused: tuple[RefusalView, ...] | None = None     # ...or why it was not
    screen = "enroll"

    def fields(self) -> JsonObject:
        return _fields(title=self.title, count=self.count, needed=self.needed, saved=self.saved,
                       refused=None if self.refused is None else [r.to_json() for r in self.refused])


@dataclass(frozen=True)
class PaperPrompt:
    """Hold the signed paper under the camera (photo ``attempt`` of ``attempts``), taken in
    ``countdown_s`` seconds (the page counts down; ``message``: why the previous photo was refused)."""

    title: str
    attempt: int
    attempts: int
    message: str
    countdown_s: float = 0.0
    screen = "paper"

    def fields(self) -> JsonObject:
        return {"title": self.title, "attempt": self.attempt, "attempts": self.attempts, "message": self.message,
                "countdown_s": self.countdown_s}


@dataclass(frozen=True)
class AspectView:
    code: str
    label: str
    ok: bool
    similarity: int       # percent

    def to_json(self) -> JsonObject:
        return {"code": self.code, "label": self.label, "ok": self.ok, "similarity": self.similarity}


@dataclass(frozen=True)
class DecisionShown:
    """The verdict, for the customer: decision, match rate (percent), aspects, explanations."""

    decision: str
    match_rate: int
    too_similar: bool
    aspects: tuple[AspectView, ...]
    explanations: tuple[str, ...]
    show_s: float
    #: False only on a bench kiosk (``[kiosk] unrecorded``): the screen says nothing records it.
    recorded: bool = True
    screen = "decision"

    def fields(self) -> JsonObject:
        return {"decision": self.decision, "match_rate": self.match_rate, "too_similar": self.too_similar,
                "aspects": [a.to_json() for a in self.aspects], "explanations": list(self.explanations),
                "show_s": self.show_s, "recorded": self.recorded}


@dataclass(frozen=True)
class DecisionWithheld:
    """``[ui] customer_decision = "wait_for_staff"``: no verdict, score or aspects for the customer."""

    show_s: float
    recorded: bool = True   # as DecisionShown's
    screen = "decision"

    def fields(self) -> JsonObject:
        return {"decision": "WAIT", "show_s": self.show_s, "recorded": self.recorded}


View = Union[Message, SignPrompt, EnrollPrompt, PaperPrompt, DecisionShown, DecisionWithheld]


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScreenChange:
    """The page shows ``view``; the daemon is in ``state``."""

    state: State
    view: View

    def to_json(self) -> JsonObject:
        return {"type": "screen", "screen": self.view.screen, "state": self.state.value, **self.view.fields()}


@dataclass(frozen=True)
class InkStart:
    """A capture started on a pad of this width/height: clear the pad."""

    aspect: float

    def to_json(self) -> JsonObject:
        return {"type": "ink_start", "aspect": round(self.aspect, 4)}


@dataclass(frozen=True)
class Ink:
    """Live ink: points normalised to the pad (``firmware_host.ink``)."""

    points: tuple[InkPoint, ...]
    aspect: float

    def to_json(self) -> JsonObject:
        return {"type": "ink", "points": [[p.x, p.y, p.pressure, 1 if p.down else 0] for p in self.points],
                "aspect": round(self.aspect, 4)}


@dataclass(frozen=True)
class Notice:
    """A line for the customer while the screen stays (the pen was unplugged, a photo refused)."""

    message: str

    def to_json(self) -> JsonObject:
        return {"type": "notice", "message": self.message}


@dataclass(frozen=True)
class EnrollSample:
    """One enrollment sample was accepted ("Save (n/N)") or refused with reasons."""

    accepted: bool
    label: str
    count: int
    needed: int
    refusals: tuple[RefusalView, ...]

    def to_json(self) -> JsonObject:
        return {"type": "enroll_sample", "accepted": self.accepted, "label": self.label, "count": self.count,
                "needed": self.needed, "refusals": [r.to_json() for r in self.refusals]}


@dataclass(frozen=True)
class PaperPreview:
    """What the camera sees now, so the customer can aim the paper: a small JPEG.

    A picture of a signature is biometric data: it goes only to the kiosk's own screen (the
    ``/events`` stream, which needs the per-boot screen secret), the bus does not keep it for a
    page that connects later, and it is never logged (``repr`` leaves the bytes out)."""

    jpeg: bytes = field(repr=False)
    width: int
    height: int

    def to_json(self) -> JsonObject:
        return {"type": "preview", "jpeg": base64.b64encode(self.jpeg).decode("ascii"),
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class CheckedPicture:
    """The signature a paper decision was made on (as found on the photo or scan), shown with the
    decision so the customer sees what was checked: a small JPEG.

    Biometric, like :class:`PaperPreview`: only to the kiosk's own screen, not kept by the bus for a
    page that connects later (it is not a screen change), never logged. Sent only when the
    decision itself is shown to the customer."""

    jpeg: bytes = field(repr=False)
    width: int
    height: int

    def to_json(self) -> JsonObject:
        return {"type": "checked_picture", "jpeg": base64.b64encode(self.jpeg).decode("ascii"),
                "width": self.width, "height": self.height}


Event = Union[ScreenChange, InkStart, Ink, Notice, EnrollSample, PaperPreview, CheckedPicture]


class _Refusal(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


def refusal_views(refusals: Sequence[_Refusal]) -> tuple[RefusalView, ...]:
    """Why samples were refused (``models.enrollment.Refusal``), for the page."""
    return tuple(RefusalView(r.code, r.message) for r in refusals)


class EventBus:
    """Fan-out of screen events to every connected page (and tests). Never blocks the daemon.

    Subscribers get the wire form (``to_json()``), made once per event; ``screen`` is the last
    screen change's, so a page that connects late sees the current screen."""

    def __init__(self) -> None:
        self._subs: list[queue.Queue[JsonObject]] = []
        self._lock = threading.Lock()
        self.screen: JsonObject = ScreenChange(State.STARTING, Message("starting")).to_json()

    def subscribe(self) -> queue.Queue[JsonObject]:
        q: queue.Queue[JsonObject] = queue.Queue(maxsize=2000)
        with self._lock:
            self._subs.append(q)
            q.put_nowait(self.screen)
        return q

    def unsubscribe(self, q: queue.Queue[JsonObject]) -> None:
        with self._lock:
            if q in self._subs:
                self._subs.remove(q)

    def remember(self, event: ScreenChange) -> None:
        """What a page that subscribes from now on is shown first, without changing what the pages
        already open show (a decision stays up on them for its time)."""
        with self._lock:
            self.screen = event.to_json()

    def publish(self, event: Event) -> None:
        wire = event.to_json()
        with self._lock:
            if isinstance(event, ScreenChange):
                self.screen = wire
            for q in self._subs:
                try:
                    q.put_nowait(wire)
                except queue.Full:
                    pass   # a stuck page loses ink, never the daemon's time


__all__ = ["AspectView", "CheckedPicture", "DecisionShown", "DecisionWithheld", "EnrollPrompt", "EnrollSample", "Event", "EventBus",
           "Ink", "InkStart", "JsonObject", "Message", "Notice", "PaperPreview", "PaperPrompt", "RefusalView",
           "ScreenChange", "SignPrompt", "State", "View", "refusal_views"]
