"""The verification flows: ``identify`` -> ``capture`` -> ``verify`` -> ``report`` -> decision.

The verifier's verdict is decided under the request's application profile (``kiosk.profiles``):
the profile's policy re-decides it, and the record says which profile and who asked.

:class:`VerifyPen` checks a signature written on the pad against the customer's pen references;
:class:`VerifyPaper` a signature on paper (a photo, or a scanned file) against the customer's
paper references when they have any, else the pen references drawn as ink (``models.paper``; the
record's ``paper_references`` says which). Both end in :func:`report`: the decision is sealed into
the outbox *before* it is shown, and one that cannot be stored is never shown as final.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from kiosk.config import UiConfig
from kiosk.errors import DecisionNotRecorded
from kiosk.flows.base import (
    DecisionReporter,
    Finished,
    PaperCapture,
    PenCapture,
    References,
    Request,
    RequestEnded,
    Screen,
    identify,
)
from kiosk.flows.capture import checked_picture_of
from kiosk.flows.references import Enrolled
from kiosk.profiles import Profiles, decide_under
from kiosk.screen_events import AspectView, CheckedPicture, DecisionShown, DecisionWithheld, Message, SignPrompt, State
from kiosk.sessions import VerificationOutcome, verify
from kiosk.templates import TemplateError, TemplateStore
from models.image import SignatureImage
from models.path_copy import MIN_PATH_REFERENCES
from models.policy import Verdict
from models.trajectory import Trajectory, TrajectoryError
from models.verification import PenVerifier, Verifier

log = logging.getLogger(__name__)


def decision_view(verdict: Verdict, ui: UiConfig, recorded: bool = True) -> DecisionShown | DecisionWithheld:
    if verdict.decision != "APPROVED" and ui.customer_decision == "wait_for_staff":
        # The bank's choice: the customer is not told "suspicious" (nor the score or aspects);
        # staff see the decision centrally.
        return DecisionWithheld(ui.show_decision_s, recorded)
    # Rounded to the side of the decision: 49.5-49.9 % showed as 50 % on a SUSPICIOUS check, the
    # figure an APPROVED one at the threshold shows (found by a review).
    shown = round(verdict.match_rate * 100)
    shown = max(shown, 50) if verdict.approved else min(shown, 49)
    return DecisionShown(verdict.decision, shown, verdict.too_similar,
                         tuple(AspectView(a.code, a.label, a.ok, round(a.similarity * 100)) for a in verdict.aspects),
                         verdict.explanations, ui.show_decision_s, recorded)


def report(req: Request, outcome: VerificationOutcome, t_pen_up: float, *, screen: Screen,
           reporter: DecisionReporter, ui: UiConfig, versions: dict[str, str], mode: str = "online",
           evidence: Trajectory | SignatureImage | None = None,
           picture: CheckedPicture | None = None) -> Finished:
    """Record the decision durably (sealed into the outbox), then show it, then queue its
    ``evidence`` (the signature it questioned) for disputes: decision first, so the decision
    never waits on the evidence nor is lost because of it.

    ``t_pen_up``: when the signature was complete (the pen lifted, or the photo's signature
    found). The order matters: a decision the outbox could not store (full disk, broken
    database) is never shown as final; the customer is asked to wait for staff, the request
    ends with ``error="not_recorded"`` and the kiosk's status counts it for staff. ``picture``: what
    a paper decision was made on, shown with the decision (never when the decision is withheld).
    The record carries the verdict's explanations whether or not the screen shows them: when the
    decision is withheld from the customer, staff read them centrally."""
    v = outcome.verdict
    screen.enter(State.REPORT, Message("verify"))
    record = {
        "decision": v.decision, "score": round(v.match_rate, 4), "reasons": v.reasons,
        "model_versions": versions,
        "timings_ms": {"verify": round(outcome.verify_ms, 2),
                       "pen_up_to_report": round((time.perf_counter() - t_pen_up) * 1e3, 2)},
        "subject": req.customer, "session_id": req.request_id, "mode": mode,
        "paper_references": v.references, "explanations": list(v.explanations),
        "profile": req.profile, "operator": req.operator,
    }
    try:
        seq = reporter.record_decision(record)
    except DecisionNotRecorded as exc:
        reporter.decision_unrecorded(req.request_id)
        log.error("decision could not be recorded; not shown as final: %s", exc,
                  extra={"event": "report_failed", "session": req.request_id})
        raise RequestEnded("not_recorded", Message("error", title="Not recorded",
                                                   message="This check could not be recorded, so it has no result. "
                                                           "Please ask staff."),
                           decision=v.decision, recorded=False) from None
    latency = (time.perf_counter() - t_pen_up) * 1e3
    # seq None: recorded nowhere, which only a bench kiosk allows (``[kiosk] unrecorded``).
    view = decision_view(v, ui, recorded=seq is not None)
    screen.enter(State.DECISION, view)
    if picture is not None and isinstance(view, DecisionShown):
        screen.publish(picture)
    reporter.decision_shown(req.request_id, latency)
    log.info("decision %s", v.decision, extra={
        "event": "decision", "session": req.request_id, "source": req.source, "decision": v.decision,
        "match_rate": round(v.match_rate, 3), "reasons": ",".join(v.reasons), "seq": seq,
        "latency_ms": round(latency, 2)})
    if evidence is not None and seq is not None:
        reporter.record_evidence(req.request_id, seq, evidence)
    return Finished({"ok": True, "decision": v.decision, "match_rate": v.match_rate, "distance": v.distance,
                     "reasons": v.reasons, "explanations": list(v.explanations), "seq": seq, "latency_ms": latency, "recorded": seq is not None,
                     "references": v.references, "profile": req.profile,
                     "threshold": versions.get("profile_threshold")})


class VerifyPen:
    """A signature on the pad against the customer's pen references, and against the signatures
    they gave this kiosk before (``store``'s seen paths): a recording of one played again is a
    copy. What is kept of a signature (its written paths) is kept once its decision is recorded,
    and only of an APPROVED one: a forgery, a caught replay or junk signed in the customer's name
    is not theirs, and 16 of them would push the customer's own out (found by a review)."""

    def __init__(self, screen: Screen, capture: PenCapture, references: References[Enrolled[PenVerifier]],
                 reporter: DecisionReporter, ui: UiConfig, profiles: Profiles, store: TemplateStore) -> None:
        self.screen = screen
        self.capture = capture
        self.references = references
        self.reporter = reporter
        self.ui = ui
        self.profiles = profiles
        self.store = store

    def _seen(self, customer: str, session: str) -> tuple[np.ndarray, ...]:
        try:
            return self.store.seen(customer)
        except Exception as exc:   # never costs the customer the verification
            # Damaged: this question is compared with the references only (the next signature
            # kept starts the file afresh).
            log.error("the customer's earlier signatures cannot be read: %s", exc,
                      extra={"event": "seen_unreadable", "session": session})
            return ()

    def _remember(self, customer: str, refs: Enrolled[PenVerifier], verdict: Verdict, traj: Trajectory,
                  session: str) -> None:
        if not verdict.approved or verdict.too_similar or refs.reference_set.size < MIN_PATH_REFERENCES:
            return   # not the customer's, or never compared (too few references for the path check)
        try:
            self.store.remember(customer, refs.verifier.copy_print(traj))
        except (TemplateError, OSError, ValueError, TrajectoryError) as exc:
            # The decision stands, recorded: only a later replay of this signature goes unnoticed.
            log.warning("the signature's path was not kept: %s", exc,
                        extra={"event": "seen_not_kept", "session": session})

    def __call__(self, req: Request) -> Finished:
        refs = identify(self.screen, self.references, req.customer, req.request_id)
        sig = self.capture.signature(req.request_id, State.CAPTURE, SignPrompt("Please sign", req.source))
        t_pen_up = time.perf_counter()   # the signature is complete: the clock of the budget starts
        self.screen.enter(State.VERIFY, Message("verify"))
        base = refs.verifier.policy   # the one its verdict is decided under (the site's threshold, if any)
        try:
            outcome = verify(refs.verifier, refs.reference_set, req.customer, sig.trajectory, req.request_id,
                             req.source, self._seen(req.customer, req.request_id))
        except TrajectoryError as exc:
            # A tap, a dot, a stroke with no extent: nothing to compare. A typed end with advice,
            # not "something went wrong" (it was an internal error before).
            log.info("signature not usable: %s", exc, extra={"event": "no_signature", "session": req.request_id,
                                                             "reason": "unusable"})
            raise RequestEnded("no_signature", Message("error", message="That was too short to check: "
                                                                        "please sign your full signature again."),
                               message=str(exc)) from None
        verdict, versions = decide_under(self.profiles.pen_policy(req.profile, base), base, outcome.verdict,
                                         refs.verifier.model_versions())
        finished = report(req, replace(outcome, verdict=verdict), t_pen_up, screen=self.screen,
                          reporter=self.reporter, ui=self.ui, versions=versions, evidence=sig.trajectory)
        self._remember(req.customer, refs, verdict, sig.trajectory, req.request_id)
        return finished


class VerifyPaper:
    """A signature on paper (camera or scan) against the customer's paper references, or their pen
    references drawn as ink."""

    def __init__(self, screen: Screen, capture: PaperCapture, references: References[Enrolled[Verifier[SignatureImage]]],
                 reporter: DecisionReporter, ui: UiConfig, profiles: Profiles) -> None:
        self.screen = screen
        self.capture = capture
        self.references = references
        self.reporter = reporter
        self.ui = ui
        self.profiles = profiles

    def __call__(self, req: Request) -> Finished:
        from models.image_preprocess import NoInkError

        refs = identify(self.screen, self.references, req.customer, req.request_id)
        picture = self.capture.picture(req.request_id, req.image)
        t_found = time.perf_counter()   # the photo is taken and the signature found: the budget's clock
        self.screen.enter(State.VERIFY, Message("verify"))
        try:
            verdict = refs.verifier.verify(refs.reference_set, picture)
        except NoInkError as exc:
            raise RequestEnded("no_signature", Message("error", message=f"No signature found: {exc}"),
                               message=str(exc)) from None
        base = refs.verifier.policy
        verdict, versions = decide_under(self.profiles.paper_policy(req.profile, base), base, verdict,
                                         refs.verifier.model_versions())
        outcome = VerificationOutcome(req.customer, req.request_id, verdict,
                                      (time.perf_counter() - t_found) * 1e3, req.source)
        return report(req, outcome, t_found, screen=self.screen, reporter=self.reporter, ui=self.ui,
                      versions=versions, mode="offline",
                      evidence=picture, picture=checked_picture_of(picture))
