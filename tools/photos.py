"""Generated camera "photos" of a signature on paper: for tests, the camera benchmark and augmentation.

There are no camera photos in the shared data, so the camera path is exercised on pictures built
from a real scan (or rendered ink) the way a kiosk camera would see it: the ink is laid on paper
with grain, fibres and a slight colour, optionally inside a printed signature box with a label and
other printed text around it; the sheet is put on a desk in a random perspective, lit unevenly
(gradient, vignette, a soft shadow), defocused or shaken, and goes through sensor noise and JPEG.

Everything is a pure function of its arguments and a ``numpy.random.Generator``: the same seed gives
the same frame, bit for bit. :class:`Photo` carries the ground truth (where the sheet, the box and the
placed ink ended up in the frame) so a finder can be checked against it.

Difficulties (:data:`DIFFICULTIES`): ``clean`` (the sheet nearly square to the camera, good light),
``perspective`` (tilted and rotated, a shadow), ``dark`` (a dim room: usable but noisy), ``blur``
(slight defocus or hand shake, still readable) are photos the camera path must accept;
``too_dark``, ``too_bright`` and ``too_blurred`` are frames it must refuse with a reason.

``python -m tools.photos OUT --scans DIR`` writes a set of photos (numbered PNGs, a ground-truth
JSON and an MJPG ``.avi`` of the frames) for replay through :mod:`firmware_host.camera`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.image import SignatureImage

log = logging.getLogger(__name__)

DIFFICULTIES: tuple[str, ...] = ("clean", "perspective", "dark", "blur", "too_dark", "too_bright", "too_blurred")
#: Photos the camera path must turn into a signature, and frames it must refuse.
USABLE: tuple[str, ...] = ("clean", "perspective", "dark", "blur")
REFUSED: tuple[str, ...] = ("too_dark", "too_bright", "too_blurred")
#: A common USB webcam's frame (720p).
FRAME_SIZE = (1280, 720)


@dataclass(frozen=True)
class Photo:
    """A generated BGR frame and where things are in it (corners tl, tr, br, bl, frame pixels)."""

    frame: np.ndarray
    sheet: np.ndarray
    ink: np.ndarray
    box: np.ndarray | None
    difficulty: str


@dataclass(frozen=True)
class _Look:
    """How a difficulty looks: ranges drawn uniformly."""

    rotate_deg: float
    tilt_deg: float  # the sheet's plane turned this far (at most) from facing the camera
    gain: tuple[float, float]
    shadow: float  # probability of a shadow
    defocus: tuple[float, float]  # Gaussian sigma in frame pixels
    motion: tuple[float, float]  # motion blur length in frame pixels (used half the time when > 0)
    noise: tuple[float, float]  # sensor noise sigma in grey levels


_LOOKS: dict[str, _Look] = {
    "clean": _Look(3, 6, (0.95, 1.05), 0.0, (0.0, 0.5), (0, 0), (1.0, 2.0)),
    "perspective": _Look(15, 35, (0.85, 1.05), 0.6, (0.0, 0.6), (0, 0), (1.0, 2.5)),
    "dark": _Look(6, 12, (0.40, 0.55), 0.3, (0.0, 0.6), (0, 0), (3.0, 5.0)),
    "blur": _Look(6, 12, (0.9, 1.05), 0.0, (0.9, 1.4), (2, 4), (1.0, 2.0)),
    "too_dark": _Look(6, 12, (0.06, 0.16), 0.0, (0.0, 0.6), (0, 0), (2.0, 4.0)),
    "too_bright": _Look(6, 12, (3.5, 5.5), 0.0, (0.0, 0.6), (0, 0), (1.0, 2.0)),
    "too_blurred": _Look(6, 12, (0.9, 1.05), 0.0, (5.0, 8.0), (22, 34), (1.0, 2.0)),
}


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _paper(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Off-white paper (float32 BGR 0..255) with grain and a few hundred faint fibres."""
    tint = np.array([rng.uniform(222, 240), rng.uniform(228, 244), rng.uniform(230, 248)], np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 3.0, (h, w)).astype(np.float32), (0, 0), 0.8)
    fibres = np.zeros((h, w), np.float32)
    for _ in range(int(h * w / 2500)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, n = rng.uniform(0, np.pi), rng.uniform(4, 18)
        p1 = (int(x), int(y))
        p2 = (int(x + n * np.cos(a)), int(y + n * np.sin(a)))
        cv2.line(fibres, p1, p2, float(rng.choice([-1, 1]) * rng.uniform(3, 8)), 1, cv2.LINE_AA)
    return tint[None, None, :] + (grain + fibres)[:, :, None]


def _desk(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A wood- or laminate-like desk top (float32 BGR): streaks along one axis plus fine noise."""
    base = np.array([rng.uniform(40, 110), rng.uniform(60, 130), rng.uniform(80, 160)], np.float32)
    if rng.random() < 0.3:  # grey laminate
        base[:] = base.mean()
    across = rng.random() < 0.5
    rows, cols = (w, h) if across else (h, w)
    streak: np.ndarray = rng.normal(0, 1, (max(rows // 8, 2), 4)).astype(np.float32)
    streak = cv2.resize(cv2.GaussianBlur(streak, (0, 0), 1.5), (cols, rows))
    fine = cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)).astype(np.float32), (0, 0), 1.0)
    tex = 10.0 * streak + 4.0 * fine
    desk = base[None, None, :] + tex[:, :, None] * (base / base.mean())[None, None, :]
    return np.ascontiguousarray(desk.transpose(1, 0, 2)) if across else desk


def _sheet(ink: SignatureImage, rng: np.random.Generator, with_box: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The flat sheet (float32 BGR), the ink's rectangle on it and the box's (or None)."""
    px = ink.pixels.astype(np.float32)
    ih, iw = px.shape
    paper_level = max(float(np.median(px)), 1.0)
    # How much ink covers each pixel: 0 on the scan's paper, 1 on black.
    alpha = np.clip((paper_level - px) / paper_level, 0.0, 1.0)
    if with_box:
        pad_x, pad_y = int(iw * rng.uniform(0.08, 0.18)), int(ih * rng.uniform(0.12, 0.3))
        bw, bh = iw + 2 * pad_x, ih + 2 * pad_y
        sw = int(bw / rng.uniform(0.55, 0.75))
        sh = int(max(sw / rng.uniform(1.3, 1.6), bh * 1.7))
        bx, by = int(rng.uniform(0.08, 0.92) * (sw - bw)), int(rng.uniform(0.45, 0.8) * (sh - bh))
        ix, iy = bx + pad_x, by + pad_y
    else:
        sw = int(iw / rng.uniform(0.5, 0.75))
        sh = int(max(sw / rng.uniform(1.3, 1.6), ih * 1.6))
        ix, iy = int(rng.uniform(0.2, 0.8) * (sw - iw)), int(rng.uniform(0.25, 0.75) * (sh - ih))
    sheet = _paper(sh, sw, rng)
    pen = np.array(rng.choice([[35, 30, 30], [110, 45, 25], [30, 30, 40]]), np.float32)  # black, blue, dark
    region = sheet[iy : iy + ih, ix : ix + iw]
    sheet[iy : iy + ih, ix : ix + iw] = region * (1 - alpha[:, :, None]) + pen[None, None, :] * alpha[:, :, None]
    ink_rect = np.array([[ix, iy], [ix + iw, iy], [ix + iw, iy + ih], [ix, iy + ih]], np.float32)
    box_rect = None
    if with_box:
        # Printing drawn as coverage (putText wants 8 bits), then laid on the paper in grey ink.
        cover = np.zeros((sh, sw), np.uint8)
        cv2.rectangle(cover, (bx, by), (bx + bw, by + bh), 255, int(rng.integers(2, 4)), cv2.LINE_AA)
        scale = max(sw / 1400.0, 0.45)
        cv2.putText(cover, "Signature / Handtekening", (bx, by + bh + int(40 * scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
        # Printed form text above the box: the finder must not take it for the signature.
        for k, line in enumerate(("Account holder: ______________", "Date: ____ / ____ / ______")):
            y = int(by * (0.3 + 0.3 * k))
            if y > 30 * scale:
                cv2.putText(cover, line, (int(sw * 0.07), y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
        a = (cover.astype(np.float32) / 255.0)[:, :, None]
        sheet = sheet * (1 - a) + np.float32(60.0) * a
        box_rect = np.array([[bx, by], [bx + bw, by], [bx + bw, by + bh], [bx, by + bh]], np.float32)
    return sheet, ink_rect, box_rect


def _lighting(h: int, w: int, rng: np.random.Generator, shadow: bool) -> np.ndarray:
    """A smooth multiplicative light field: gradient and vignette, optionally a soft-edged shadow."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = xx / w - 0.5, yy / h - 0.5
    a = rng.uniform(0, 2 * np.pi)
    field = 1.0 + rng.uniform(0.05, 0.18) * (np.cos(a) * xn + np.sin(a) * yn) * 2
    field *= 1.0 - rng.uniform(0.05, 0.2) * (xn**2 + yn**2) * 2
    if shadow:
        b = rng.uniform(0, 2 * np.pi)
        d = np.cos(b) * xn + np.sin(b) * yn - rng.uniform(-0.15, 0.25)
        soft = rng.uniform(0.03, 0.08)
        depth = rng.uniform(0.2, 0.4)
        field *= 1.0 - depth / (1.0 + np.exp(-d / soft))
    return field.astype(np.float32)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    n = max(int(round(length)), 1) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    dx, dy = np.cos(angle) * c, np.sin(angle) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1, cv2.LINE_AA)
    return k / k.sum()


def make_photo(
    ink: SignatureImage,
    rng: np.random.Generator,
    *,
    difficulty: str = "clean",
    box: bool | None = None,
    size: tuple[int, int] = FRAME_SIZE,
    jpeg_quality: tuple[int, int] = (70, 92),
) -> Photo:
    """A camera frame (BGR uint8, ``size`` = (width, height)) of ``ink`` on a sheet on a desk.

    ``box``: inside a printed signature box on a form (``None``: half the time).
    """
    if difficulty not in _LOOKS:
        raise ValueError(f"unknown difficulty {difficulty!r}; known: {', '.join(DIFFICULTIES)}")
    look = _LOOKS[difficulty]
    with_box = bool(rng.random() < 0.5) if box is None else box
    fw, fh = size
    sheet, ink_rect, box_rect = _sheet(ink, rng, with_box)
    sh, sw = sheet.shape[:2]

    # Where the sheet lands: a pinhole camera (focal length = frame width, a 53 degree webcam)
    # looks at the sheet tilted out of its plane and rotated in it, 55-80 % of the frame across.
    scale = rng.uniform(0.55, 0.8) * min(fw / sw, fh / sh)
    focal = float(fw)
    ax, ay = np.deg2rad(rng.uniform(-look.tilt_deg, look.tilt_deg, 2))
    az = np.deg2rad(rng.uniform(-look.rotate_deg, look.rotate_deg))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    plane = np.array([[-sw, -sh, 0], [sw, -sh, 0], [sw, sh, 0], [-sw, sh, 0]], np.float64) * 0.5
    pts = plane @ (ry @ rx @ rz).T
    dist = focal / scale

    def view_at(offset: np.ndarray) -> np.ndarray:
        p3 = pts + offset
        return np.stack([focal * p3[:, 0] / (dist + p3[:, 2]) + fw / 2, focal * p3[:, 1] / (dist + p3[:, 2]) + fh / 2], 1)

    corners = view_at(np.zeros(3))
    lo, hi = corners.min(0), corners.max(0)
    room = np.maximum(np.array([fw, fh]) - (hi - lo) - 24, 0)
    shift = (rng.uniform(0, 1, 2) * room + 12 - lo) * dist / focal  # moved in the sheet's plane
    corners = view_at(np.array([shift[0], shift[1], 0.0])).astype(np.float32)
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    h_mat = cv2.getPerspectiveTransform(src, corners.astype(np.float32))

    # Pre-blur the sheet so the shrink does not alias the grain into moire.
    sigma = max(0.0, 0.5 / scale - 0.5)
    if sigma > 0.05:
        sheet = cv2.GaussianBlur(sheet, (0, 0), sigma)
    warped = cv2.warpPerspective(sheet, h_mat, (fw, fh), flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(np.ones((sh, sw), np.float32), h_mat, (fw, fh), flags=cv2.INTER_LINEAR)
    desk = _desk(fh, fw, rng)
    # A faint contact shadow of the sheet on the desk.
    contact = cv2.GaussianBlur(cover, (0, 0), 6) * 0.25
    img = desk * (1 - contact[:, :, None])
    img = img * (1 - cover[:, :, None]) + warped * cover[:, :, None]

    img *= _lighting(fh, fw, rng, bool(rng.random() < look.shadow))[:, :, None]
    img *= _u(rng, look.gain)
    d = _u(rng, look.defocus)
    if d > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), d)
    if look.motion[1] > 0 and rng.random() < 0.5:
        img = cv2.filter2D(img, -1, _motion_kernel(_u(rng, look.motion), rng.uniform(0, np.pi)))
    img += rng.normal(0, _u(rng, look.noise), img.shape).astype(np.float32)
    frame = np.clip(img, 0, 255).astype(np.uint8)
    q = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok, "JPEG encoding of a generated frame failed"
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded is not None, "JPEG decoding of a generated frame failed"
    frame = decoded

    def project(rect: np.ndarray) -> np.ndarray:
        return cv2.perspectiveTransform(rect.reshape(1, 4, 2), h_mat).reshape(4, 2)

    return Photo(
        frame=frame,
        sheet=corners.astype(np.float32),
        ink=project(ink_rect),
        box=None if box_rect is None else project(box_rect),
        difficulty=difficulty,
    )


def make_scan(ink: SignatureImage, rng: np.random.Generator, *, box: bool = True) -> Photo:
    """The sheet as a flatbed scanner gives it: no desk, no perspective, even light, the picture's
    edges are the paper's (``sheet`` is the picture's corners)."""
    sheet, ink_rect, box_rect = _sheet(ink, rng, box)
    frame = np.clip(sheet + rng.normal(0, 1.0, sheet.shape), 0, 255).astype(np.uint8)
    h, w = frame.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    return Photo(frame=frame, sheet=corners, ink=ink_rect, box=box_rect, difficulty="scan")


def camera_view(
    ink: SignatureImage,
    rng: np.random.Generator,
    *,
    difficulty: str | None = None,
    size: tuple[int, int] = (960, 540),
) -> SignatureImage:
    """``ink`` as the kiosk sees it through the camera path (training augmentation): a usable photo
    (``difficulty`` None: one of :data:`USABLE` at random) found and cropped by
    :func:`models.signature_finder.find_signature`. Its ``PictureError`` passes through when the
    finder misses (about 1 % of usable photos, ``sigkiosk bench camera``)."""
    from models.signature_finder import find_signature

    kind = USABLE[int(rng.integers(len(USABLE)))] if difficulty is None else difficulty
    return find_signature(make_photo(ink, rng, difficulty=kind, size=size).frame)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """Frames (BGR, one size) as an MJPG ``.avi`` that ``cv2.VideoCapture`` replays."""
    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write a video at {path} (is OpenCV built with a video writer?)")
    try:
        for f in frames:
            if f.shape[:2] != (h, w):
                raise ValueError(f"all frames must be {w}x{h}, got {f.shape[1]}x{f.shape[0]}")
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    finally:
        writer.release()
    return path


def write_photos(folder: Path, photos: list[Photo], *, video: bool = True, fps: float = 15.0) -> list[Path]:
    """``frame_0000.png`` ... (a numbered sequence the camera replays), ``truth.json`` with the
    corners and difficulty of each, and ``photos.avi`` of the same frames when ``video``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    truth = []
    for i, p in enumerate(photos):
        path = folder / f"frame_{i:04d}.png"
        if not cv2.imwrite(str(path), p.frame):
            raise OSError(f"cannot write {path}")
        paths.append(path)
        truth.append({
            "file": path.name,
            "difficulty": p.difficulty,
            "sheet": p.sheet.round(2).tolist(),
            "ink": p.ink.round(2).tolist(),
            "box": None if p.box is None else p.box.round(2).tolist(),
        })
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if video and photos:
        write_video(folder / "photos.avi", [p.frame for p in photos], fps)
    return paths


def main(argv: list[str] | None = None) -> int:
    from tools.datasets import load_images

    ap = argparse.ArgumentParser(prog="python -m tools.photos", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write frame_NNNN.png, truth.json, photos.avi")
    ap.add_argument("--scans", type=Path, required=True, help="a sigcomp-dutch folder of scans")
    ap.add_argument("--n", type=int, default=20, help="how many photos")
    ap.add_argument("--difficulty", choices=DIFFICULTIES, action="append",
                    help="difficulties to cycle through (default: the usable ones)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds = load_images(args.scans, "sigcomp-dutch")
    samples = [s for w in sorted(ds.writers) for s in ds.genuine(w)]
    rng = np.random.default_rng(args.seed)
    kinds = args.difficulty or list(USABLE)
    photos = [
        make_photo(samples[int(rng.integers(len(samples)))].image, rng, difficulty=kinds[i % len(kinds)])
        for i in range(args.n)
    ]
    paths = write_photos(args.out, photos)
    log.info("wrote %d photos to %s", len(paths), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
