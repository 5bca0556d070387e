"""The capture step of the flows: the live pen (retries after an unplug, live ink) and the camera
(photo after photo until one holds a signature, each refusal told), behind
``kiosk.flows.base.PenCapture`` and ``PaperCapture``.

Photos are paced: before each one the screen counts down ``[paper] countdown_s`` over a live
preview of what the camera sees, so the customer can aim the paper and act on the previous
refusal ("turn on the desk light") before the next photo is taken."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from firmware_host.assembler import CapturedSignature, PenFrame
from firmware_host.errors import (
    CaptureError,
    DeviceGoneError,
    DevicePermissionError,
    NoPenDeviceError,
    NoSignatureError,
)
from firmware_host.events import DeviceCaps
from firmware_host.ink import InkPoint, InkTracker, pad_aspect
from firmware_host.pen_source import PenService
from kiosk.config import DeviceConfig, PaperConfig
from kiosk.flows.base import RequestEnded, Screen
from kiosk.screen_events import CheckedPicture, Ink, InkStart, Message, Notice, PaperPreview, PaperPrompt, State, View
from models.image import SignatureImage

if TYPE_CHECKING:
    import numpy as np

if TYPE_CHECKING:   # OpenCV loads only on a kiosk with [paper]
    from firmware_host.camera import Camera

log = logging.getLogger(__name__)

#: Capture retries after the pen was unplugged mid-signature (the customer signs again).
MAX_UNPLUG_RETRIES = 3
#: Live-preview frames a second during a countdown: enough to aim the paper by, light on a Pi's CPU.
PREVIEW_FPS = 4.0
#: Width of the preview picture (a JPEG of some 10-30 kB): the page shows it in a box, not full screen.
PREVIEW_WIDTH = 480
PREVIEW_JPEG_QUALITY = 70


def read_scan(path: Path) -> SignatureImage:
    """The signature on a scanned file: ``models.signature_finder.PictureError``,
    ``models.image_preprocess.NoInkError`` or ``OSError`` say why there is none."""
    from models.signature_finder import find_signature, read_picture

    return find_signature(read_picture(path))


def _small_jpeg(frame: np.ndarray) -> tuple[bytes, int, int]:
    """``frame`` at most :data:`PREVIEW_WIDTH` wide, as JPEG bytes, width and height."""
    import cv2

    h, w = frame.shape[:2]
    if w > PREVIEW_WIDTH:
        frame = cv2.resize(frame, (PREVIEW_WIDTH, max(1, round(h * PREVIEW_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the picture for the screen")
    return buf.tobytes(), int(frame.shape[1]), int(frame.shape[0])


def preview_of(frame: np.ndarray) -> PaperPreview:
    """A camera frame as the small JPEG the screen's live preview shows (never logged: biometric)."""
    return PaperPreview(*_small_jpeg(frame))


def checked_picture_of(picture: SignatureImage) -> CheckedPicture:
    """The signature a paper decision was made on, as the small JPEG the decision screen shows."""
    return CheckedPicture(*_small_jpeg(picture.pixels))


class Heartbeat(Protocol):
    """The systemd watchdog as a capture sees it (``kiosk.sdnotify.Watchdog``, or nothing)."""

    def beat(self) -> None: ...
    def busy(self, seconds: float) -> None: ...


class LivePenCapture:
    """``PenCapture`` on the digitizer service: ``cancel`` and ``done`` are the screen's buttons."""

    def __init__(self, digitizer: PenService, screen: Screen, device: DeviceConfig, heartbeat: Heartbeat,
                 *, cancel: threading.Event, done: threading.Event) -> None:
        self.digitizer = digitizer
        self.screen = screen
        self.device = device
        self.heartbeat = heartbeat
        self.cancel = cancel
        self.done = done
        self._tracker: InkTracker | None = None   # the live ink of the capture in progress

    def _ink(self, caps: DeviceCaps) -> Callable[[PenFrame], None]:
        """A capture starts on ``caps``: clear the page's pad; its frames become live ink."""
        aspect = pad_aspect(caps)

        def emit(points: tuple[InkPoint, ...]) -> None:
            self.screen.publish(Ink(points, aspect))

        tracker = self._tracker = InkTracker(caps, emit)
        self.screen.publish(InkStart(aspect))
        return tracker

    def _wait_for_pen(self, session_id: str, state: State) -> None:
        """No pen now: say so on the screen (not "Sign now" over a pen that is not there) and
        wait for one as long as for a customer; the request ends if none comes."""
        if self.digitizer.present():
            return
        log.warning("no pen connected", extra={"event": "no_pen", "session": session_id})
        self.screen.enter(state, Message("no_pen", title="No pen connected",
                                         message="Please ask staff to connect the signature pen."))
        self.heartbeat.busy(self.device.customer_timeout_s + 10.0)
        try:
            self.digitizer.wait_for_device(self.device.customer_timeout_s, self.cancel)
        except NoSignatureError:
            raise RequestEnded("cancelled", Message("idle", message="Cancelled.")) from None
        except (NoPenDeviceError, DevicePermissionError) as exc:
            log.error("no pen: %s", exc, extra={"event": "no_device", "session": session_id})
            raise RequestEnded("no_device", Message("error", title="No pen connected",
                                                    message="The signature pen is not connected. "
                                                            "Please ask staff.")) from None

    def signature(self, session_id: str, state: State, prompt: View) -> CapturedSignature:
        dev = self.device
        bound = dev.customer_timeout_s + dev.max_duration_s + dev.pen_up_timeout_s + 10.0
        for _ in range(MAX_UNPLUG_RETRIES + 1):
            self.done.clear()
            self._wait_for_pen(session_id, state)
            self.screen.enter(state, prompt)
            self.heartbeat.busy(bound + dev.customer_timeout_s)
            self._tracker = None
            try:
                sig = self.digitizer.capture_one(done=self.done, cancel=self.cancel, watch_frames=self._ink,
                                                 device_timeout=dev.customer_timeout_s,
                                                 start_timeout=dev.customer_timeout_s)
                if self._tracker is not None:
                    self._tracker.flush()
                return sig
            except DeviceGoneError:
                log.warning("pen unplugged during a signature", extra={"event": "device_gone", "session": session_id})
                self.screen.publish(Notice("The pen was disconnected. Please wait, then sign again."))
                continue
            except NoSignatureError as exc:
                reason = "cancelled" if self.cancel.is_set() else "timeout"
                log.info("no signature: %s", exc, extra={"event": "no_signature", "session": session_id, "reason": reason})
                raise RequestEnded(reason, Message("idle", message="Cancelled." if reason == "cancelled" else "")) from None
            except (NoPenDeviceError, DevicePermissionError) as exc:
                log.error("no pen: %s", exc, extra={"event": "no_device", "session": session_id})
                raise RequestEnded("no_device", Message("error", message="The signature pen is not available. "
                                                                         "Please ask staff.")) from None
            except CaptureError as exc:
                log.error("capture failed: %s", exc, extra={"event": "capture_failed", "session": session_id})
                continue
            finally:
                self.heartbeat.beat()
        raise RequestEnded("device_gone", Message("error", message="The signature pen is not working. Please ask staff."))


class CameraPaperCapture:
    """``PaperCapture`` on the camera (``[paper]``), or on a scanned file given with the request."""

    def __init__(self, camera: Camera, screen: Screen, paper: PaperConfig, heartbeat: Heartbeat, *,
                 cancel: threading.Event) -> None:
        self.camera = camera
        self.screen = screen
        self.paper = paper
        self.heartbeat = heartbeat
        self.cancel = cancel

    def picture(self, session_id: str, scan: Path | None,
                title: str = "Hold the signed paper under the camera") -> SignatureImage:
        from firmware_host.camera import CameraError, FrameRejected
        from models.image_preprocess import NoInkError
        from models.signature_finder import PictureError, find_signature

        if scan is not None:
            try:
                return read_scan(scan)
            except (PictureError, NoInkError, OSError) as exc:
                log.info("scan refused: %s", exc, extra={"event": "paper_refused", "session": session_id})
                raise RequestEnded("no_signature_on_scan", Message("error", message=f"The scan cannot be used: {exc}"),
                                   message=str(exc)) from None
        attempts = self.paper.attempts
        hint = ""
        for attempt in range(1, attempts + 1):
            if self.cancel.is_set():
                raise RequestEnded("cancelled", Message("idle", message="Cancelled."))
            self.screen.enter(State.CAPTURE, PaperPrompt(title, attempt, attempts, hint, self.paper.countdown_s))
            self._count_down(session_id)
            self.heartbeat.beat()
            try:
                return find_signature(self.camera.capture().frame)
            except FrameRejected as exc:
                hint, code = exc.message, exc.reason.value
                if exc.capture is not None and self.paper.preview:
                    # The refused photo stays on screen with its advice until the next preview.
                    self.screen.publish(preview_of(exc.capture.frame))
            except (PictureError, NoInkError) as exc:
                hint, code = f"{exc}. Show the signature to the camera.", "no_signature"
            except CameraError as exc:
                log.error("camera failed: %s", exc, extra={"event": "camera_failed", "session": session_id})
                raise RequestEnded("camera_gone", Message("error", message="The camera is not working. "
                                                                           "Please ask staff.")) from None
            log.info("photo refused", extra={"event": "paper_refused", "session": session_id, "reason": code,
                                             "attempt": attempt})
            self.screen.publish(Notice(hint))
        raise RequestEnded("no_usable_photo", Message("error", message=f"No usable photo of the signature. {hint}"),
                           message=hint)

    def _count_down(self, session_id: str) -> None:
        """Wait ``[paper] countdown_s`` (the page counts it down), sending the live preview; the
        Cancel button ends the wait at once. A camera that fails here is left to the photo, which
        reports it (``camera_gone``)."""
        from firmware_host.camera import CameraError

        end = time.monotonic() + self.paper.countdown_s
        previewing = self.paper.preview
        while True:
            if self.cancel.is_set():
                raise RequestEnded("cancelled", Message("idle", message="Cancelled."))
            left = end - time.monotonic()
            if left <= 0:
                return
            if previewing:
                try:
                    self.screen.publish(preview_of(self.camera.peek()))
                except (CameraError, ValueError) as exc:
                    previewing = False
                    log.info("camera preview stopped: %s", exc, extra={"event": "preview_failed", "session": session_id})
            self.heartbeat.beat()
            self.cancel.wait(min(1.0 / PREVIEW_FPS, max(0.0, end - time.monotonic())))
