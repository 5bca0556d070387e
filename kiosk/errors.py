"""The appliance layer's errors: one base, :class:`ApplianceError`, and names that say what happened.

Capture (``firmware_host.errors.CaptureError``), verification (``models.errors.VerificationError``)
and the central server (``tools.central.errors.CentralError``) have their own bases. These are the
kiosk daemon's: a request refused before anything happened, a staff action that cannot be audited,
a decision that could not be recorded, a request that ended early. The errors of the appliance's
other modules derive from :class:`ApplianceError` too (``ConfigError``, ``TemplateError``,
``LinkError``, ``OutboxError``, ``EnvelopeError``, ``CommandError``, ``BundleError``, ``SlotError``,
``RecordError``, ``TopicError``, ``KeyFileError``, ``GoldenFileError``, ``JSONBoundsError``, the
staff logins'), each keeping the built-in base (``ValueError`` for bad input, ``RuntimeError`` for a
failed operation) that existing ``except`` clauses catch.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of the kiosk appliance's errors."""


class RequestRefused(ApplianceError, ValueError):
    """A request was refused before anything happened (bad customer reference, busy, stopping...)."""


class KioskBusy(RequestRefused):
    """A request that may start only on an idle kiosk (the screen's, the central command) found it
    busy: a request running or queued. (The last decision still on the screen does not count.)"""


class StaffLoginRequired(RequestRefused):
    """Template management without a live operator session (``kiosk.staff``)."""


class ActionNotAuditable(RequestRefused):
    """A staff action whose audit record cannot be stored (outbox full or broken): refused."""


class CalibrationNotSaved(RequestRefused):
    """A staff revert or resume of the site calibration whose new state could not be saved (a full
    disk): nothing changed, and the audit record says it failed."""


class AuditNotRecorded(ApplianceError, RuntimeError):
    """A staff action's audit record could not be stored: the action (or login) is refused."""


class DecisionNotRecorded(ApplianceError, RuntimeError):
    """A decision could not be sealed into the outbox: it has no result and is never shown as final."""


__all__ = ["ActionNotAuditable", "ApplianceError", "AuditNotRecorded", "DecisionNotRecorded", "RequestRefused",
           "StaffLoginRequired"]
