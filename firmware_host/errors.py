"""Typed errors of the capture layer.

Every failure the pen-capture code can report is one of these, so that the daemon can tell a
bad signature (ask the customer to sign again) from a bad device (wait for it to come back) from
a bug. Messages name what went wrong and where, never a coordinate: raw pen data is biometric.

:class:`CaptureError` is the capture layer's one base: the camera's errors
(``firmware_host.camera.CameraError``, ``FrameRejected``) derive from it too, so a caller catches
every capture failure, pen or paper, with one type.
"""

from __future__ import annotations

from pathlib import Path


class CaptureError(Exception):
    """Base of every error raised by ``firmware_host`` capture, pen or camera."""


class EventStreamError(CaptureError):
    """An input event stream is malformed beyond what the assembler tolerates."""


class NoSignatureError(CaptureError):
    """A stream ended, or was cancelled, before any pen-down point was captured."""


class DeviceError(CaptureError):
    """A digitizer could not be used (not found, not a pen, no permission)."""


class NoPenDeviceError(DeviceError):
    """No input device matched the selector or had pen capabilities."""


class DevicePermissionError(DeviceError):
    """The device exists but this user may not open it: see the udev rule in ``systemd/``."""


class DeviceGoneError(DeviceError):
    """The device disappeared (ENODEV) while it was in use, e.g. unplugged mid-signature."""


class RecordingFormatError(CaptureError):
    """A recording file does not follow the documented format (names file and line)."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class PadError(CaptureError):
    """Base of serial signature pad errors."""


class PadProtocolError(PadError):
    """A frame from the pad could not be decoded (bad COBS, CRC, length or type)."""


class PadTimeoutError(PadError):
    """The pad did not answer (no hello, or silence while a signature was in progress)."""


class PadReportedError(PadError):
    """The pad itself sent an error frame with a fatal code."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"pad reported error 0x{code:02x}: {message}")
