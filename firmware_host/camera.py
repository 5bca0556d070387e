"""The kiosk camera: one good still of a paper signature from a V4L2 device, or from a recording.

Every source goes through ``cv2.VideoCapture``, so a recording exercises the same code as the
device: a V4L2 camera by index (``0``) or path (``/dev/video0``), a video file (``.avi``, ``.mp4``),
one image file (a stream of one frame), or a folder of numbered images (``frame_0000.png`` ...,
OpenCV's image-sequence reader; :mod:`tools.photos` writes such folders).

A capture warms up once after opening (auto-exposure needs a few frames: :data:`WARMUP_S` of
frames at the source's frame rate are discarded), grabs ``frames`` frames and keeps the sharpest
(variance of the Laplacian), then refuses a frame the signature cannot be read from
(:class:`FrameRejected`, with a :class:`Reason` code and a message the person can act on).

A source that stops delivering mid-capture (the camera was unplugged, the recording ended) is a
:class:`CameraError` for that capture only: the device is released, and the next capture opens it
again, so plugging the camera back in is all it takes. This module imports nothing of ours.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from firmware_host.errors import CaptureError
from models.image_preprocess import grey_counts, grey_percentile

log = logging.getLogger(__name__)

#: Auto-exposure and white balance of USB webcams settle within 5-15 frames (0.2-0.5 s at 30 fps).
WARMUP_S = 0.5
#: Frames grabbed per capture, the sharpest kept: hand shake comes and goes within a few frames.
FRAMES = 5
#: Frame rate assumed when the source does not report one (V4L2 devices that answer 0).
DEFAULT_FPS = 30.0
#: Quality is judged on a copy this wide, so thresholds do not depend on the camera's resolution.
ANALYSIS_WIDTH = 640
#: Too dark: the paper (the brightest tenth of the frame) is below this grey level. Chosen from the
#: ink: the Dutch scans' light genuine pens reflect ~40 % of the paper's light, so at a paper level
#: L the ink is 0.6 L darker, under the 40 grey levels the ink mask needs when L < 65.
MIN_PAPER_LEVEL = 65
#: Too bright: the paper is clipped (its level, the 90th percentile, at CLIPPED_LEVEL or more)
#: AND nothing in the frame is darker than WASHED_OUT_LEVEL in its darkest 0.2 %: the ink is
#: washed out. A scan's white paper clips too, but its ink stays dark (the Dutch scans' lightest
#: genuine pens are at 95-140), so a scan replayed through the camera passes.
CLIPPED_LEVEL = 250
WASHED_OUT_LEVEL = 170
#: Blurred: variance of the Laplacian (after a 3x3 Gaussian, so sensor noise does not pass for
#: detail; scaled to a white paper level) on the ANALYSIS_WIDTH copy below this. Measured on
#: generated photos of Dutch training writers (tools.photos, 10 per kind): usable frames (slight
#: defocus, 2-4 px shake, dim light) gave 24-122, frames blurred past reading (defocus sigma
#: 5-8 px, shake 22-34 px) gave 1-3; 8 is the geometric middle of the gap.
MIN_SHARPNESS = 8.0

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_NUMBERED = re.compile(r"^(?P<stem>.*?)(?P<num>\d+)$")


class CameraError(CaptureError, RuntimeError):
    """The camera could not be opened or stopped delivering frames; the next capture retries."""


class Reason(str, enum.Enum):
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    BLURRED = "blurred"


_ADVICE = {
    Reason.TOO_DARK: "too dark: turn on the desk light or move the paper into the light",
    Reason.TOO_BRIGHT: "too bright: the paper is washed out; move it out of direct sunlight or away from the lamp",
    Reason.BLURRED: "blurred: hold the paper still and flat, about 20-40 cm from the camera, and wait a moment",
}


@dataclass(frozen=True)
class Capture:
    """The frame a capture kept, and how it was judged and obtained."""

    frame: np.ndarray  # BGR uint8
    sharpness: float  # variance of the Laplacian (see MIN_SHARPNESS)
    brightness: float  # mean grey level, 0-255
    paper_level: float  # 90th percentile grey level (see MIN_PAPER_LEVEL)
    index: int  # which frame of the capture was kept (0-based)
    frames: int  # how many were grabbed
    open_s: float  # time spent opening the source in this capture (0 when it was open)
    warmup_s: float  # time spent discarding warm-up frames
    grab_s: float  # time spent grabbing the frames
    total_s: float


class FrameRejected(CaptureError):
    """The best frame of a capture cannot be read: ``reason`` for programs, ``message`` for people."""

    def __init__(self, reason: Reason, message: str, capture: Capture | None = None) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.capture = capture


@dataclass(frozen=True)
class FrameQuality:
    sharpness: float
    brightness: float
    paper_level: float
    clipped: float
    darkest: float


def measure(frame: np.ndarray) -> FrameQuality:
    """Sharpness and exposure figures of one frame (8-bit BGR or grey, as :func:`_as_bgr` makes
    every frame the camera gives), on the ANALYSIS_WIDTH copy."""
    if frame.dtype != np.uint8:
        # Its levels are 0-255 (the judge's limits are); the grey-level count reads no others.
        raise CameraError(f"a frame to judge has 8-bit levels, got {frame.dtype}")
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if w > ANALYSIS_WIDTH:
        grey = cv2.resize(grey, (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))), interpolation=cv2.INTER_AREA)
    # Both percentiles read off one count of the grey levels (numpy's where the count cannot settle
    # them): two sorts of the frame were a fifth of judging it.
    counts = grey_counts(grey)
    paper = grey_percentile(grey, 90.0, counts)
    lap = cv2.Laplacian(cv2.GaussianBlur(grey, (3, 3), 0), cv2.CV_32F)
    # Scaled as if the paper were white: detail, not light, decides "blurred" (a dim but sharp
    # frame is refused as dark, or not at all).
    sharp = float(lap.var()) * (255.0 / max(paper, 1.0)) ** 2
    return FrameQuality(
        sharpness=sharp,
        brightness=float(grey.mean()),
        paper_level=paper,
        clipped=float((grey >= CLIPPED_LEVEL).mean()),
        darkest=grey_percentile(grey, 0.2, counts),
    )


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """OpenCV's image reader hands grey and 16-bit or alpha pictures back as they are stored."""
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 / 65535.0) if frame.dtype == np.uint16 else frame.astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def judge(q: FrameQuality) -> Reason | None:
    """Why a frame cannot be used, or None. Exposure first: a dark frame is also a soft one."""
    if q.paper_level < MIN_PAPER_LEVEL:
        return Reason.TOO_DARK
    if q.paper_level >= CLIPPED_LEVEL and q.darkest > WASHED_OUT_LEVEL:
        return Reason.TOO_BRIGHT
    if q.sharpness < MIN_SHARPNESS:
        return Reason.BLURRED
    return None


@dataclass(frozen=True)
class _Source:
    target: int | str
    api: int
    still: bool  # one image: a stream of exactly one frame
    describe: str


def _resolve(source: int | str | Path) -> _Source:
    """What to hand ``cv2.VideoCapture`` for ``source``; ``CameraError`` if it is not there."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        index = int(source)
        dev = Path(f"/dev/video{index}")
        if not dev.exists():
            raise CameraError(f"no camera {index}: {dev} does not exist ({_present()}); is the camera plugged in?")
        return _Source(index, cv2.CAP_V4L2, False, str(dev))
    path = Path(source)
    if str(path).startswith("/dev/"):
        if not path.exists():
            raise CameraError(f"no camera at {path} ({_present()}); is the camera plugged in?")
        m = re.fullmatch(r"/dev/video(\d+)", str(path))
        # The V4L2 backend opens by index; a udev symlink (/dev/v4l/by-id/...) resolves to one.
        m = m or re.fullmatch(r"/dev/video(\d+)", str(path.resolve()))
        if m is None:
            raise CameraError(f"{path} is not a V4L2 video device (/dev/videoN)")
        return _Source(int(m.group(1)), cv2.CAP_V4L2, False, str(path))
    if not path.exists():
        raise CameraError(f"camera source {path} does not exist")
    if path.is_dir():
        return _Source(_sequence_pattern(path), cv2.CAP_IMAGES, False, f"images in {path}")
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        return _Source(str(path), cv2.CAP_IMAGES, True, str(path))
    return _Source(str(path), cv2.CAP_FFMPEG, False, str(path))


def _present() -> str:
    found = sorted(str(p) for p in Path("/dev").glob("video*"))
    return "present: " + ", ".join(found) if found else "no /dev/video* devices at all"


def _sequence_pattern(folder: Path) -> str:
    """The printf pattern of a folder's numbered images (``frame_%04d.png``) for OpenCV's reader."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not images:
        raise CameraError(f"no images in {folder} (expected numbered frames such as frame_0000.png)")
    m = _NUMBERED.match(images[0].stem)
    if m is None:
        raise CameraError(f"{images[0].name} in {folder} is not numbered (expected frame_0000.png, frame_0001.png, ...)")
    digits = len(m.group("num"))
    num = "%0" + str(digits) + "d" if m.group("num").startswith("0") else "%d"
    stem = m.group("stem").replace("%", "%%")
    return str(folder / f"{stem}{num}{images[0].suffix}")


class Camera:
    """A camera (or a recording of one) that takes one judged still per :meth:`capture`."""

    def __init__(
        self,
        source: int | str | Path,
        *,
        warmup_s: float = WARMUP_S,
        frames: int = FRAMES,
        resolution: tuple[int, int] | None = None,
    ) -> None:
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        if warmup_s < 0:
            raise ValueError(f"warmup_s must be >= 0, got {warmup_s}")
        self.source = source
        self.warmup_s = warmup_s
        self.frames = frames
        self.resolution = resolution
        self._cap: cv2.VideoCapture | None = None
        self._src: _Source | None = None

    def __enter__(self) -> "Camera":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def _open(self) -> tuple[float, float]:
        """Open the source and discard the warm-up frames; (open seconds, warm-up seconds)."""
        t0 = time.perf_counter()
        src = _resolve(self.source)
        cap = cv2.VideoCapture(src.target, src.api)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera {src.describe}: busy, not a camera, or not a readable video")
        if self.resolution is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.resolution[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.resolution[1])
        # Keep the driver's queue short, so a capture sees the paper now, not a second ago.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap, self._src = cap, src
        t1 = time.perf_counter()
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else DEFAULT_FPS
        # Counted in frames at the source's rate: the same wait on a device, and a recording
        # (which reads faster than real time) skips the same frames a live camera would.
        n = 0 if src.still else math.ceil(self.warmup_s * fps)
        for i in range(n):
            if not cap.grab():
                self.close()
                raise CameraError(f"camera {src.describe} stopped during warm-up (frame {i + 1} of {n}): unplugged?")
        log.info("camera %s open (%.0f fps, %d warm-up frames)", src.describe, fps, n)
        return t1 - t0, time.perf_counter() - t1

    def peek(self) -> np.ndarray:
        """The frame the camera sees now, unjudged (BGR uint8): the live preview before a photo.

        Opens the source like :meth:`capture` (same warm-up); ``CameraError`` when it cannot be
        opened or delivers nothing (released; the next call reopens it)."""
        if self._cap is None:
            self._open()
        assert self._cap is not None and self._src is not None
        src = self._src
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self.close()
            raise CameraError(f"camera {src.describe} delivered no frame for the preview: "
                              "unplugged or the recording ended")
        if src.still:
            self.close()   # a still is a finished stream: the next read starts it afresh
        return _as_bgr(frame)

    def capture(self) -> Capture:
        """Grab frames, keep the sharpest, judge it.

        ``CameraError``: the source cannot be opened or stops mid-capture (released; the next call
        reopens it). ``FrameRejected``: the kept frame is too dark, too bright or blurred.
        """
        t0 = time.perf_counter()
        open_s = warm_s = 0.0
        if self._cap is None:
            open_s, warm_s = self._open()
        assert self._cap is not None and self._src is not None
        src = self._src
        want = 1 if src.still else self.frames
        t1 = time.perf_counter()
        best: tuple[float, int, np.ndarray, FrameQuality] | None = None
        for i in range(want):
            ok, frame = self._cap.read()
            if not ok or frame is None:
                self.close()
                raise CameraError(
                    f"camera {src.describe} stopped delivering frames ({i} of {want} read): "
                    "unplugged or the recording ended; the next capture reopens it"
                )
            frame = _as_bgr(frame)
            q = measure(frame)
            if best is None or q.sharpness > best[0]:
                best = (q.sharpness, i, frame, q)
        grab_s = time.perf_counter() - t1
        if src.still:
            # A still is a finished stream: the next capture reads it afresh.
            self.close()
        assert best is not None
        _, index, frame, q = best
        cap = Capture(
            frame=frame,
            sharpness=q.sharpness,
            brightness=q.brightness,
            paper_level=q.paper_level,
            index=index,
            frames=want,
            open_s=open_s,
            warmup_s=warm_s,
            grab_s=grab_s,
            total_s=time.perf_counter() - t0,
        )
        reason = judge(q)
        if reason is not None:
            log.info("camera frame refused: %s (sharpness %.1f, paper level %.0f)", reason.value, q.sharpness, q.paper_level)
            raise FrameRejected(reason, _ADVICE[reason], cap)
        return cap
