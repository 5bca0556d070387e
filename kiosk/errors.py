"""The appliance layer's errors: one base, :class:`ApplianceError`, and names that say what happened.

Capture (``firmware_host.errors``), verification (``models.errors``) and the central server have
their own bases; these are the kiosk daemon's: a request refused before anything happened, a staff
action that cannot be audited, a decision that could not be recorded, a request that ended early.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of the kiosk appliance's errors."""


class RequestRefused(ApplianceError, ValueError):
    """A request was refused before anything happened (bad customer reference, busy, stopping...)."""


class StaffLoginRequired(RequestRefused):
    """Template management without a live operator session (``kiosk.staff``)."""


class ActionNotAuditable(RequestRefused):
    """A staff action whose audit record cannot be stored (outbox full or broken): refused."""


class AuditNotRecorded(ApplianceError, RuntimeError):
    """A staff action's audit record could not be stored: the action (or login) is refused."""


class DecisionNotRecorded(ApplianceError, RuntimeError):
    """A decision could not be sealed into the outbox: it has no result and is never shown as final."""


__all__ = ["ActionNotAuditable", "ApplianceError", "AuditNotRecorded", "DecisionNotRecorded", "RequestRefused",
           "StaffLoginRequired"]
