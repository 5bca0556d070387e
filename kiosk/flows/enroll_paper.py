"""Enroll a customer from paper: reference signatures from scanned files or camera photos.

Each picture goes the way a questioned one does (the camera's judge, the signature finder,
``prepare``), so a bad one is refused with the same advice; what is kept of a usable one is its
prepared ink image and hand-made features (``models.paper.PaperVerifier.prepare_reference``), in
the customer's encrypted template beside their pen references. The same sheet shown or scanned
twice is refused (``models.paper.duplicate_of``). Fewer than ``MIN_PAPER_REFERENCES`` usable
pictures (the new ones and, for ``add``, those on file) store nothing.

Modes as for the pen: ``new`` (a customer not enrolled at all), ``replace`` (the paper references
only; also how a customer enrolled on the pad is given paper references, since it changes what
their paper checks compare against, and it asks for the customer again) and ``add``. Who may start it (a logged-in operator) and
its audit records are the daemon's ``submit``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kiosk.flows.base import Finished, PaperCapture, Request, RequestEnded, Screen
from kiosk.flows.capture import read_scan
from kiosk.flows.enroll import TemplateCache, stored_or_replacing
from kiosk.screen_events import EnrollSample, Message, Notice, RefusalView
from kiosk.templates import TemplateStore
from models.image import SignatureImage
from models.paper_reference import PaperReference

log = logging.getLogger(__name__)

#: Most scanned files one enrollment takes (each is decoded and prepared: bounded work).
MAX_PAPER_FILES = 20
#: Most paper references one customer may have: each is compared with every question (its
#: gradient histograms, 109 KB each, are also kept per cached customer).
MAX_PAPER_REFERENCES = 20


class ReferencePreparer(Protocol):
    """What is kept of one reference picture (``models.paper.PaperVerifier``)."""

    def prepare_reference(self, picture: SignatureImage) -> PaperReference: ...


class EnrollPaper:
    """Enroll (``new``/``replace``/``add``) a customer's paper references; see the module docstring."""

    def __init__(self, screen: Screen, capture: PaperCapture, store: TemplateStore, cache: TemplateCache,
                 preparer: Callable[[], ReferencePreparer], *, max_attempts: int) -> None:
        from models.paper import MIN_PAPER_REFERENCES

        self.screen = screen
        self.capture = capture
        self.store = store
        self.cache = cache
        self.preparer = preparer
        self.minimum = MIN_PAPER_REFERENCES
        #: Photos asked for from the camera (the minimum), and the most looked at before giving up.
        self.photos = MIN_PAPER_REFERENCES
        self.max_attempts = max(max_attempts, self.photos)

    def __call__(self, req: Request) -> Finished:
        from models.image_preprocess import NoInkError
        from models.paper import duplicate_of
        from models.signature_finder import PictureError

        existing = stored_or_replacing(self.store, req)
        on_file = existing.paper if existing is not None else ()
        if req.mode == "new" and on_file:
            raise RequestEnded("already_enrolled", Message("error", message="This customer already has paper "
                                                                            "signatures on file (use Replace or Add)."))
        if req.mode == "new" and existing is not None:
            # Paper references change what this customer's paper checks compare against (their pad
            # ink until now): the change Replace makes, which asks for the customer again. Under
            # "new" a mistyped customer number gave an existing customer someone else's paper.
            raise RequestEnded("already_enrolled", Message(
                "error", message="This customer is already enrolled on the pad. To give them paper signatures, "
                                 "use Replace paper signatures (you will be asked for the customer again)."))
        if req.mode == "add" and not on_file:
            raise RequestEnded("not_enrolled", Message("error", message="No paper signature on file to add to. "
                                                                        "Enroll from paper first."))
        if req.mode == "add" and len(on_file) + (len(req.images) or self.photos) > MAX_PAPER_REFERENCES:
            raise RequestEnded("too_many_references", Message(
                "error", message=f"This customer has {len(on_file)} paper signatures on file, and at most "
                                 f"{MAX_PAPER_REFERENCES} are kept: use Replace."))
        seed = list(on_file) if req.mode == "add" else []
        preparer = self.preparer()
        accepted: list[PaperReference] = []
        refusals: list[dict[str, str]] = []
        wanted = len(req.images) if req.images else self.photos

        def consider(picture: SignatureImage, label: str) -> None:
            try:
                ref = preparer.prepare_reference(picture)
            except NoInkError as exc:
                refuse(label, "no_signature", f"{exc}")
                return
            twin = duplicate_of(ref, [*seed, *accepted])
            if twin is not None:
                refuse(label, "duplicate", "the same signature as one already taken (the same sheet twice?): "
                                           "show another signed sheet")
                return
            accepted.append(ref)
            self.screen.publish(EnrollSample(True, f"Saved ({len(accepted)}/{wanted})", len(accepted), wanted, ()))

        def refuse(label: str, code: str, message: str) -> None:
            refusals.append({"picture": label, "code": code, "message": message})
            self.screen.publish(EnrollSample(False, "", len(accepted), wanted, (RefusalView(code, message),)))
            self.screen.publish(Notice(f"Not taken: {message}"))
            log.info("paper reference refused", extra={"event": "enroll_paper_refused", "session": req.request_id,
                                                      "code": code})

        if req.images:
            for k, path in enumerate(req.images, 1):
                try:
                    picture = read_scan(Path(path))
                except (PictureError, NoInkError, OSError) as exc:
                    refuse(f"file {k}", "unusable", f"{exc}")
                    continue
                consider(picture, f"file {k}")
        else:
            looked = 0
            while len(accepted) < self.photos:
                if looked >= self.max_attempts:
                    raise RequestEnded("too_many_refusals", Message("error", message="Enrollment stopped: too many "
                                                                                     "pictures refused. Please ask staff."),
                                       refusals=refusals)
                looked += 1
                title = f"Reference signature {len(accepted) + 1} of {self.photos}: hold it under the camera"
                consider(self.capture.picture(req.request_id, None, title), f"photo {looked}")
        total = len(seed) + len(accepted)
        if not accepted or total < self.minimum:
            raise RequestEnded("too_few_references",
                               Message("error", message=f"Only {total} usable paper signatures; at least "
                                                        f"{self.minimum} are needed. Nothing was saved."),
                               refusals=refusals, references=total)
        try:
            self.store.put_paper(req.customer, [*seed, *accepted], over_unreadable=req.mode == "replace")
        finally:
            self.cache.forget(req.customer)
        log.info("paper enrollment complete", extra={"event": "enrolled_paper", "session": req.request_id,
                                                     "mode": req.mode, "references": total})
        return Finished({"ok": True, "references": total, "refusals": refusals},
                        Message("enrolled", title="Thank you", message=f"{total} paper signatures saved."))
