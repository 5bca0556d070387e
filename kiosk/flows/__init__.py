"""The kiosk's flows: what one customer does at the kiosk, given small protocols instead of the
daemon (``kiosk.flows.base``): verify with the pen, verify a signed paper, enroll (on the pad, or from
paper: ``kiosk.flows.enroll_paper``), delete."""

from kiosk.flows.base import Finished, Request, RequestEnded
from kiosk.flows.enroll import Delete, Enroll
from kiosk.flows.references import Caches, Enrolled, ReferenceCache
from kiosk.flows.verify import VerifyPaper, VerifyPen

__all__ = ["Caches", "Delete", "Enroll", "Enrolled", "Finished", "ReferenceCache", "Request", "RequestEnded",
           "VerifyPaper", "VerifyPen"]
