"""Template management flows: enroll (``new``, ``replace``, ``add``) and delete.

Enrollment runs captures until the policy's N references are accepted ("Save (n/N)"; a refused
sample is answered with reasons and the customer signs again), then writes the encrypted
template. Who may start these (a logged-in operator, the customer retyped, the audit records) is
the daemon's ``submit``; the flows only do the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kiosk.config import PolicyConfig
from kiosk.flows.base import Finished, PenCapture, Request, RequestEnded, Screen
from kiosk.screen_events import EnrollPrompt, EnrollSample, Message, State, refusal_views
from kiosk.sessions import EnrollmentSession
from kiosk.templates import StoredTemplate, TemplateError, TemplateStore
from models.classic import ClassicConfig

#: Most pen references one customer may have (two enrollments of 5): each is compared with every
#: question, so a template grown by "add" after "add" slowed every verification of that customer
#: (and the site calibration's all-pairs scoring) without bound (found by a review).
MAX_REFERENCES = 10

log = logging.getLogger(__name__)


class TemplateCache(Protocol):
    """Built reference sets kept in memory: a changed template must not be served from there."""

    def forget(self, customer: str) -> None: ...


class Enroll:
    """Enroll a customer: ``new`` (none on file), ``replace`` (all new), ``add`` (more references)."""

    def __init__(self, screen: Screen, capture: PenCapture, store: TemplateStore, cache: TemplateCache,
                 policy: PolicyConfig, features: Callable[[], ClassicConfig]) -> None:
        self.screen = screen
        self.capture = capture
        self.store = store
        self.cache = cache
        self.policy = policy
        #: The feature configuration enrollment checks consistency with (the current verifier's).
        self.features = features

    def __call__(self, req: Request) -> Finished:
        existing = stored_or_replacing(self.store, req)
        if req.mode == "new" and existing is not None:
            # Also a customer enrolled from paper only: giving them pen signatures is what Replace
            # does, which asks for the customer number again.
            raise RequestEnded("already_enrolled", Message("error", message="This customer is already enrolled "
                                                                            "(use Replace or Add)." if existing.references
                                                           else "This customer is enrolled from paper. To give them "
                                                                "pen signatures, use Replace (you will be asked for "
                                                                "the customer again)."))
        if req.mode == "add" and (existing is None or not existing.references):
            # Found by a review: "add" to a customer with paper signatures only had no pen signature
            # to check the new ones against, and does not ask for the number again: whoever stood
            # at the pen became that customer.
            raise RequestEnded("not_enrolled", Message("error", message="No pen signature on file to add to. "
                                                                        "Enroll first, or use Replace."))
        p = self.policy
        if req.mode == "add" and existing is not None and len(existing.references) + p.references > MAX_REFERENCES:
            raise RequestEnded("too_many_references", Message(
                "error", message=f"This customer has {len(existing.references)} signatures on file, and at most "
                                 f"{MAX_REFERENCES} are kept: use Replace."))
        session = EnrollmentSession(req.customer, req.mode, p.enrollment(), p.max_enroll_attempts, self.features(),
                                    session_id=req.request_id,
                                    seed=list(existing.references) if req.mode == "add" and existing else [])
        refusals: list[dict[str, str]] = []
        prompt = EnrollPrompt(f"Signature 1 of {p.references}", 0, p.references)
        while not session.complete:
            if session.exhausted:
                raise RequestEnded("too_many_refusals", Message("error", message="Enrollment stopped: too many "
                                                                                 "signatures refused. Please ask staff."),
                                   refusals=refusals)
            sig = self.capture.signature(req.request_id, State.ENROLL, prompt)
            result = session.add(sig.trajectory)
            views = refusal_views(result.refusals)
            next_title = f"Signature {len(session.accepted) + 1} of {p.references}"
            if result.accepted:
                prompt = EnrollPrompt(next_title, len(session.accepted), p.references, saved=result.label)
                log.info("enrollment sample accepted", extra={"event": "enroll_sample", "session": req.request_id,
                                                              "count": result.count, "needed": result.needed})
            else:
                refusals.extend({"code": r.code, "message": r.message} for r in views)
                prompt = EnrollPrompt(next_title, len(session.accepted), p.references, refused=views)
                log.info("enrollment sample refused", extra={"event": "enroll_refused", "session": req.request_id,
                                                             "codes": ",".join(r.code for r in result.refusals)})
            self.screen.publish(EnrollSample(result.accepted, result.label, result.count, result.needed, views))
        refs = session.references()
        try:
            self.store.put(req.customer, refs, over_unreadable=req.mode == "replace")
        finally:
            # Even when the write raised after the file changed (a directory fsync's EIO): a built
            # set of the old references must not be served again (found by a review).
            self.cache.forget(req.customer)
        log.info("enrollment complete", extra={"event": "enrolled", "session": req.request_id, "mode": req.mode,
                                               "references": len(refs), "attempts": session.attempts})
        return Finished({"ok": True, "references": len(refs), "attempts": session.attempts, "refusals": refusals},
                        Message("enrolled", title="Thank you", message=f"{len(refs)} signatures saved."))


def stored_or_replacing(store: TemplateStore, req: Request) -> StoredTemplate | None:
    """The customer's stored template; None when there is none, or when it cannot be read and the
    request is a Replace (which writes over it: the way out staff are told of). Any other request
    on an unreadable template ends, saying so (it was an internal error; found by a review)."""
    try:
        return store.get(req.customer)
    except TemplateError as exc:
        log.error("template unreadable: %s", exc, extra={"event": "template_error", "session": req.request_id})
        if req.mode == "replace":
            return None
        raise RequestEnded("template_unreadable", Message(
            "error", message="This customer's stored signatures cannot be read (damaged or changed on disk). "
                             "Use Replace to enroll them again, or Delete.")) from None


class Delete:
    """Delete a customer's template (their references and every reference set built from them)."""

    def __init__(self, store: TemplateStore, cache: TemplateCache) -> None:
        self.store = store
        self.cache = cache

    def __call__(self, req: Request) -> Finished:
        try:
            removed = self.store.delete(req.customer)
        finally:
            self.cache.forget(req.customer)   # also when the unlink happened and its fsync failed
        log.info("template deleted" if removed else "no template to delete",
                 extra={"event": "template_deleted", "session": req.request_id})
        return Finished({"ok": removed, "error": None if removed else "not_enrolled"}, Message("idle"))
