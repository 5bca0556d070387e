"""What every flow shares: the request it serves, how it ends early, and the small protocols
(screen, pen capture, paper capture, reporter, references) it is given instead of the daemon.

A flow is one customer's errand at the kiosk (verify with the pen, verify a signed paper, enroll,
delete). It runs on the daemon's one worker thread, returns a :class:`Finished` (the request's
result and the screen to leave up), or raises :class:`RequestEnded` when it stops early (no
signature, no template, the pen gone...): the daemon then shows the screen the exception names
and ends the request with its error. Flows never touch the link, the update agent or the HTTP
server; they see only the protocols below.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from firmware_host.assembler import CapturedSignature
from kiosk.errors import ApplianceError
from kiosk.screen_events import Event, Message, State, View
from kiosk.sessions import new_session_id
from kiosk.templates import TemplateError, TemplateUnreadable
from models.image import SignatureImage
from models.trajectory import Trajectory

log = logging.getLogger(__name__)

#: A request's result as its caller (the screen's API, tests) reads it: JSON-like values.
Result = dict[str, object]
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass
class Request:
    kind: str                   # "verify", "verify_paper", "enroll", "enroll_paper", "delete"
    customer: str
    source: str = "screen"      # "screen", "central", "api"
    mode: str = "new"           # enrollment: "new", "replace", "add"
    image: Path | None = None   # verify_paper: a scanned file instead of the camera
    images: tuple[Path, ...] = ()   # enroll_paper: scanned files instead of the camera
    request_id: str = field(default_factory=new_session_id)
    done: threading.Event = field(default_factory=threading.Event)
    result: Result = field(default_factory=dict)
    #: Who asked: the logged-in operator (enroll, delete, a verification started at the staff
    #: view), "central:ADMIN" for the central command, None for the customer's own request.
    operator: str | None = None
    profile: str | None = None           # verify: the application profile (kiosk.profiles), resolved
    staff_session: str | None = None     # ...and their login session's public id
    #: Runs before the request is reported done (the staff action's audit record).
    on_finish: Callable[[Request], None] | None = field(default=None, repr=False)

    def finish(self, **result: object) -> None:
        self.result = result
        if self.on_finish is not None:
            try:
                self.on_finish(self)
            except Exception:   # the result stands; the failure to audit it is logged
                log.exception("request finish hook failed", extra={"event": "finish_hook_failed",
                                                                   "session": self.request_id})
        self.done.set()

    def wait(self, timeout: float | None = None) -> Result:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{self.kind} request not finished within {timeout} s")
        return self.result


class RequestEnded(ApplianceError):
    """The request stops here: it ends with ``error`` (and ``result``), the kiosk goes idle
    showing ``view``. Not a fault: the customer cancelled, has no template, the pen went away..."""

    def __init__(self, error: str, view: View, **result: object) -> None:
        super().__init__(error)
        self.error = error
        self.view = view
        self.result = result


@dataclass(frozen=True)
class Finished:
    """A flow's end: the request's result, and the screen left up (None: the decision stays)."""

    result: Result
    view: View | None = None


# -- the protocols flows are given -------------------------------------------------------------
class Screen(Protocol):
    """The kiosk's screen, and the state machine it shows."""

    def enter(self, state: State, view: View | None = None) -> None:
        """The daemon is now in ``state``; the page shows ``view`` (default: the state's name)."""

    def publish(self, event: Event) -> None:
        """An event that does not change the screen (ink, a notice, an enrollment sample)."""


class PenCapture(Protocol):
    """One signature from the pen, with live ink on the screen."""

    def signature(self, session_id: str, state: State, prompt: View) -> CapturedSignature:
        """Show ``prompt`` (in ``state``) and capture; raises :class:`RequestEnded` when there is
        none (cancelled, timed out, the pen missing or gone for good)."""


class PaperCapture(Protocol):
    """The signature on a signed paper: from the camera, or a scanned file."""

    def picture(self, session_id: str, scan: Path | None,
                title: str = "Hold the signed paper under the camera") -> SignatureImage:
        """Raises :class:`RequestEnded` when no usable picture comes (each refusal is told);
        ``title``: what the screen asks for."""


class DecisionReporter(Protocol):
    """Where decisions go: sealed into the outbox for the central server, and the kiosk's counts."""

    def record_decision(self, record: Mapping[str, object]) -> int | None:
        """Store the decision durably; its outbox sequence number, None when this kiosk has no
        link. Raises ``kiosk.errors.DecisionNotRecorded`` when it cannot be stored."""

    def decision_shown(self, session_id: str, latency_ms: float) -> None:
        """The decision is recorded and on the screen, ``latency_ms`` after pen-up."""

    def decision_unrecorded(self, session_id: str) -> None:
        """The decision could not be recorded (staff see the count in the status)."""

    def record_evidence(self, session_id: str, decision_seq: int, captured: Trajectory | SignatureImage) -> int | None:
        """After the decision is recorded and shown: queue its questioned signature (pen samples or
        the paper crop) for the central server. Never raises: evidence never costs a decision."""


class References(Protocol[T_co]):
    """The customer's references as the current verifier compares them, with that verifier
    (one lookup, so a model switched meanwhile never pairs one model's features with another)."""

    def lookup(self, customer: str) -> T_co | None: ...


def identify(screen: Screen, references: References[T], customer: str, session_id: str) -> T:
    """The ``identify`` step: the customer's references; ends the request when there are none."""

    screen.enter(State.IDENTIFY, Message("identify"))
    try:
        found = references.lookup(customer)
    except TemplateUnreadable as exc:
        log.error("template unreadable: %s", exc, extra={"event": "template_error", "session": session_id})
        # Not "no signature on file": staff must know to Replace, not to enroll anew.
        raise RequestEnded("template_unreadable", Message(
            "error", message="The signatures on file for this customer cannot be read. Please ask staff.")) from None
    except TemplateError as exc:   # e.g. paper references of another preparation, and no pad ones
        log.error("template unusable: %s", exc, extra={"event": "template_error", "session": session_id})
        found = None
    if found is None:
        raise RequestEnded("not_enrolled", Message("error", message="No signature on file for this customer. "
                                                                    "Please ask staff."))
    return found
