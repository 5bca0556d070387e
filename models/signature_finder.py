"""Finding the signature on a camera photo or a scan: the paper path's first step.

:func:`find_signature` takes a frame (grey, BGR or BGRA) and returns the signature as a
:class:`~models.image.SignatureImage` cropped to its ink, ready for
:func:`models.image_preprocess.prepare`:

1. **The sheet.** The largest convex quadrilateral that is bright like paper (Otsu on a reduced
   frame; Canny edges when the desk is as light as the paper), brighter than the ring just around
   it, stepping down to the desk across its sides and with at most one side along the picture's
   border, is the sheet; it is warped flat with
   :func:`cv2.getPerspectiveTransform` at the camera's own resolution. A scan (no paper edge, or
   the "sheet" is the whole picture) is taken whole.
2. **The light.** Uneven lighting and soft shadows are divided out (the paper level is estimated by
   a grey-level closing wider than the thickest strokes, which removes the ink, then smoothed), so
   the ink mask sees flat paper.
3. **The box.** On a form, the signature box is a rectangle of long printed lines: long horizontal
   and vertical runs of the ink mask, closed into a quadrilateral whose every side is mostly on a
   printed line along it, with corners near square and a quarter of the page's width (a loop of
   the signature's own strokes is none of these).
   If there is one, only its inside is kept (again perspective-corrected): the form's printed text
   is not the signature.
4. **The ink.** :func:`models.image_preprocess.ink_mask` (the one thresholding) finds the ink; the
   picture is cropped to it with a margin.

Errors say what to do: :class:`NoSignatureInPictureError` (a blank form, an empty sheet, a photo of a desk)
and :class:`UnreadablePictureError` (not an image, an empty or truncated file, absurd sizes). Both
are ``ValueError``. Everything here is a pure function of the pixels; :func:`decode_picture` turns
file bytes into pixels with the checks a file from outside needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.errors import VerificationError
from models.image import MAX_SIDE, MIN_SIDE, SignatureImage
from models.image_preprocess import NoInkError, grey_counts, grey_percentile, ink_box, ink_mask, to_grey
from models.picture_header import PNG_MAGIC, PictureHeaderError, read_header

#: Sheet and box search run on a copy this long (px): 4-10x fewer pixels than a 720p-1080p frame,
#: while a sheet's edge is still tens of pixels long.
DETECT_SIDE = 640
#: A sheet covers at least this fraction of the frame (a signature smaller than that is unreadable
#: at webcam resolution) and at most this much (more is the frame itself: a scan).
MIN_SHEET_FRACTION = 0.08
MAX_SHEET_FRACTION = 0.96
#: Trimmed off each side of a flattened sheet: its edge, the contact shadow and desk slivers that a
#: corner estimate one or two pixels off leaves in.
SHEET_TRIM = 0.02
#: A signature box covers at least this fraction of the page, and at least this fraction of each
#: of its four sides lies on a printed line running along that side (a long flourish is a line but
#: does not close a rectangle).
MIN_BOX_FRACTION = 0.02
MIN_BOX_OUTLINE = 0.75
#: A box is a printed rectangle, seen flat or at a slant: each corner within this many degrees of
#: square (a form turned 20 and 15 degrees away from the camera: 8-9). And it is at least this
#: fraction of the page's width: it holds a signature. The loops and crossings of a signature's
#: own strokes close many small quadrilaterals of straight-ish ink; on the shared sets' signature
#: scans the rule of the outline alone took one picture in 27 for a form and cut it down to a
#: letter's loop (README, "A scanned signature, taken whole").
MAX_BOX_CORNER_SKEW = 20.0
MIN_BOX_WIDTH = 0.25
#: With neither sheet nor box found, the picture must look like paper: at least this fraction of
#: the pixels that are not ink within 15 % of the local paper level (a desk, a face, a keyboard
#: are far below: :func:`_looks_like_paper`).
MIN_PAPER_FRACTION = 0.7
#: The printed frame's remnants are looked for this far in from each side of a warped box.
FRAME_BAND = 0.2
#: Flattened paper is at this grey level (about a white sheet under good light).
PAPER_LEVEL = 235
#: Kept around the ink in the returned crop, as a fraction of the ink's longer side.
CROP_MARGIN = 0.06


class PictureError(VerificationError, ValueError):
    """A picture could not give a signature: the message says why, for the person."""


class UnreadablePictureError(PictureError):
    """Not a picture we can read (empty, truncated, not an image, absurd size)."""


class NoSignatureInPictureError(PictureError):
    """The picture is readable but holds no signature (a blank form, an empty sheet, a desk)."""


@dataclass(frozen=True)
class _Found:
    quad: np.ndarray  # tl, tr, br, bl in the searched image's pixels
    how: str


_PNG_END = b"IEND\xaeB`\x82"

#: Working memory one picture may take: the daemon's budget is 250 MB with every path loaded
#: (DESIGN.md, "Performance budgets") and it idles at 225-228 MB with the paper path loaded, on the
#: runtime dependencies alone (README, "The appliance": `sigkiosk bench daemon`).
PICTURE_MEMORY = 22 << 20
#: Bytes per pixel at the peak of decoding a file and finding its signature. Measured (2026-11-29,
#: a 1.28 MP PNG and progressive JPEG, each in a fresh process, in the development and in the
#: runtime-only environment alike): a page whose signature box is found 7.8, a page without a box
#: (the whole picture is searched for ink) 16.6: the BGR picture (3), its grey copy (1), the
#: flattened page (1), then ink_mask over the whole page (the denoised and equalised copies, the
#: int16 differences and OpenCV's float blur with its own copy, then the connected components'
#: int32 labels). Before flatten_light worked in strips and ink_mask let its temporaries go, 17.7
#: and 17.9; before that, other wheels and allocators measured up to 21.6 here. 18 leaves a margin
#: over the worse of today's.
PEAK_BYTES_PER_PIXEL = 18
#: At most this many pixels in a picture file (1.28 MP, e.g. 1340 x 956: a 300 dpi scan of a
#: 4.5 x 3.2 inch signature area): 22 MiB at 18 bytes a pixel. The systemd unit gives OpenCV the
#: same cap (OPENCV_IO_MAX_IMAGE_PIXELS), behind this module's header check.
MAX_PICTURE_PIXELS = PICTURE_MEMORY // PEAK_BYTES_PER_PIXEL
#: At most this many bytes in a picture file (it is in memory while it is decoded): an
#: uncompressed 8-bit RGB TIFF or BMP of MAX_PICTURE_PIXELS is 4.6 MB.
MAX_PICTURE_BYTES = 8 << 20


def decode_picture(data: bytes, name: str = "picture") -> np.ndarray:
    """File bytes (PNG, JPEG, TIFF or BMP) to BGR pixels; ``UnreadablePictureError`` if not.

    The format and size are read from the header (:mod:`models.picture_header`) before OpenCV
    sees the bytes, so a picture over :data:`MAX_PICTURE_PIXELS` (or any side over ``MAX_SIDE``),
    a file over :data:`MAX_PICTURE_BYTES` and any other format are refused before they cost
    memory; a PNG without its end chunk or a JPEG without its end marker is truncated (OpenCV
    would hand back a half-grey picture).
    """
    if not data:
        raise UnreadablePictureError(f"{name}: empty file (0 bytes): take the photo or scan again")
    if len(data) > MAX_PICTURE_BYTES:
        raise UnreadablePictureError(
            f"{name}: file too large (more than {MAX_PICTURE_BYTES / 1e6:.1f} MB): "
            "save the scan as PNG or JPEG"
        )
    body = data.rstrip(b"\0")
    if data.startswith(PNG_MAGIC) and not body.endswith(_PNG_END):
        raise UnreadablePictureError(f"{name}: truncated PNG (the file is cut short): copy or scan it again")
    if data.startswith(b"\xff\xd8") and not body.endswith(b"\xff\xd9"):
        raise UnreadablePictureError(f"{name}: truncated JPEG (the file is cut short): copy or take it again")
    try:
        head = read_header(data)
    except PictureHeaderError as exc:
        # The same words as a file OpenCV fails on: callers and people see one kind of refusal.
        raise UnreadablePictureError(f"{name}: not a picture OpenCV can read (expected PNG, JPEG, TIFF, BMP): {exc}") from None
    if max(head.width, head.height) > MAX_SIDE or head.pixels > MAX_PICTURE_PIXELS:
        raise UnreadablePictureError(
            f"{name}: picture too large ({head.format} {head.width}x{head.height}, at most {MAX_SIDE} px a side "
            f"and {MAX_PICTURE_PIXELS / 1e6:.2f} megapixels): scan only the signature area at 200-300 dpi "
            "or use the camera's normal resolution"
        )
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:   # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS in the systemd unit)
        pixels = None
    if pixels is None:
        raise UnreadablePictureError(f"{name}: not a picture OpenCV can read (expected PNG, JPEG, TIFF, BMP)")
    if pixels.shape[:2] not in ((head.height, head.width), (head.width, head.height)):   # EXIF may rotate
        # The decoder saw another size than the header we checked: never pass that on.
        raise UnreadablePictureError(f"{name}: the picture's header and its data disagree on its size")
    return pixels


def read_picture(path: Path) -> np.ndarray:
    """:func:`decode_picture` of a file's bytes."""
    path = Path(path)
    try:
        # At most one byte over the limit, so that decode_picture refuses a file too large without
        # the whole of it (or an endless FIFO) first read into memory.
        with path.open("rb") as f:
            data = f.read(MAX_PICTURE_BYTES + 1)
    except OSError as exc:
        raise UnreadablePictureError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    return decode_picture(data, str(path))


def _check_frame(frame: np.ndarray) -> np.ndarray:
    px = np.asarray(frame)
    if px.dtype != np.uint8 or px.ndim not in (2, 3) or (px.ndim == 3 and px.shape[2] not in (3, 4)):
        raise UnreadablePictureError(f"expected an 8-bit grey or colour picture, got {px.dtype} of shape {px.shape}")
    h, w = px.shape[:2]
    if max(h, w) > MAX_SIDE:
        raise UnreadablePictureError(f"picture too large ({w}x{h}, at most {MAX_SIDE} px a side)")
    if min(h, w) < 4 * MIN_SIDE:
        raise UnreadablePictureError(f"picture too small ({w}x{h}) to hold a readable signature")
    return to_grey(px)


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Four points as (tl, tr, br, bl)."""
    pts = np.asarray(pts, np.float32).reshape(4, 2)
    s, d = pts.sum(1), pts[:, 1] - pts[:, 0]
    out = np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], np.float32)
    if len({tuple(p) for p in out.tolist()}) < 4:  # a diamond: fall back to angles round the centre
        c = pts.mean(0)
        ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
        out = pts[np.argsort(ang)]
        out = np.roll(out, -int(np.argmin(out.sum(1))), axis=0)
    return out


def _quad_of(contour: np.ndarray) -> np.ndarray | None:
    """The contour's convex hull simplified to four corners, or None."""
    hull = cv2.convexHull(contour)
    peri = cv2.arcLength(hull, True)
    for eps in (0.01, 0.02, 0.03, 0.045, 0.06):
        approx = cv2.approxPolyDP(hull, eps * peri, True)
        if len(approx) == 4:
            return order_corners(approx.reshape(4, 2))
        if len(approx) < 4:
            return None
    return None


def _reduce(grey: np.ndarray) -> tuple[np.ndarray, float]:
    f = min(1.0, DETECT_SIDE / max(grey.shape))
    if f >= 1.0:
        return grey, 1.0
    return cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA), f


def _find_sheet(grey: np.ndarray) -> _Found | None:
    small, f = _reduce(grey)
    area = float(small.shape[0] * small.shape[1])
    blur = cv2.GaussianBlur(small, (5, 5), 0)
    _, bright = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Close over the ink and printing so the sheet is one blob.
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    edges = cv2.dilate(cv2.Canny(blur, 30, 90), np.ones((3, 3), np.uint8))
    best: tuple[float, np.ndarray, str] | None = None
    stroke: int | None = None   # the thickest strokes' width, measured once if a step is looked for
    for how, binary, mode in (("paper", bright, cv2.RETR_EXTERNAL), ("edges", edges, cv2.RETR_LIST)):
        contours, _ = cv2.findContours(binary, mode, cv2.CHAIN_APPROX_SIMPLE)
        for c in sorted(contours, key=cv2.contourArea, reverse=True)[:5]:
            quad = _quad_of(c)
            if quad is None:
                continue
            a = cv2.contourArea(quad) / area
            if best is not None and a <= best[0]:
                continue
            if not (MIN_SHEET_FRACTION <= a <= MAX_SHEET_FRACTION) or not cv2.isContourConvex(quad.reshape(4, 1, 2)):
                continue
            if _along_border(quad, small.shape) or not _brighter_inside(blur, quad):
                continue
            if stroke is None:
                stroke = _stroke_width(blur)
            if not _steps_down(blur, quad, stroke):
                continue
            best = (a, quad, how)
    if best is None:
        return None
    return _Found(best[1] / f, best[2])


def _along_border(quad: np.ndarray, shape: tuple[int, ...], edge: float = 2.0) -> bool:
    """Two or more sides of ``quad`` run along the picture's border: the brighter part of a scan
    whose light falls off across the glass (a band along one side of the picture), not a sheet.
    One such side is a sheet partly out of view, which the kiosk still takes."""
    q = quad.astype(np.float64)
    return sum(_on_border(q[i], q[(i + 1) % 4], shape, edge) for i in range(4)) >= 2


def _on_border(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...], edge: float = 2.0) -> bool:
    """Whether the side from ``a`` to ``b`` (x, y) runs along the picture's border."""
    h, w = shape[:2]
    return any(max(abs(a[axis]), abs(b[axis])) <= edge or min(a[axis], b[axis]) >= limit - edge
               for axis, limit in ((0, w - 1), (1, h - 1)))


def _brighter_inside(grey: np.ndarray, quad: np.ndarray) -> bool:
    """Paper is the bright thing: the quad's inside is brighter than the frame around it."""
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, quad.astype(np.int32), 1)
    inside = grey_counts(grey, mask)
    outside = grey_counts(grey) - inside
    if outside.sum() < 0.02 * grey.size:
        return True
    paper = grey_percentile(grey, 50.0, inside, mask > 0)
    if paper <= grey_percentile(grey, 50.0, outside, mask == 0) + 10:
        return False
    # And brighter than what lies just around it: a sheet's edge is a step down to the desk, where
    # a loop of the signature's strokes has paper on both sides (under light that falls off across
    # a scan, the loop's inside can be brighter than the picture's darker side as a whole).
    k = _edge_reach(grey.shape)
    ring = cv2.dilate(mask, np.ones((k, k), np.uint8)) - mask
    if int(ring.sum()) < k:
        return True
    return paper > grey_percentile(grey, 50.0, grey_counts(grey, ring), ring > 0) + 10


def _steps_down(grey: np.ndarray, quad: np.ndarray, stroke: int, samples: int = 24, edge: float = 2.0) -> bool:
    """Across the quad's sides the grey steps down from inside to outside, as at a sheet's edge:
    the median, over points along every side not on the picture's border, of the level just inside
    less the level just outside is more than 10. A loop of the signature's strokes has paper on
    both sides of the chords that make its quad; under light falling off across a scan its inside
    can still be brighter than its surroundings as a whole (with the light falling to 55 % across
    them, 55 of the 1 649 Dutch scans were cut down to such a loop; 5 now)."""
    q = quad.astype(np.float64)
    centre = q.mean(axis=0)
    reach = _edge_reach(grey.shape)
    inside = np.arange(2, reach + 1, dtype=np.float64)
    # Outside from past the thickest strokes (``stroke``, :func:`_stroke_width`): a quad whose
    # sides run along strokes has the strokes just outside it, and paper past them.
    past = stroke + 2
    outside = np.arange(past, past + reach - 1, dtype=np.float64)
    steps: list[np.ndarray] = []
    for i in range(4):
        a, b = q[i], q[(i + 1) % 4]
        if _on_border(a, b, grey.shape, edge):
            continue    # the sheet goes on out of view
        along = b - a
        length = float(np.hypot(*along))
        if length < 1.0:
            continue
        normal = np.array([along[1], -along[0]]) / length
        if np.dot(normal, (a + b) / 2 - centre) < 0:
            normal = -normal        # outwards
        t = np.linspace(0.1, 0.9, samples)[:, None]
        pts = a + t * along                                   # (samples, 2)
        steps.append(_levels(grey, pts, normal, -inside) - _levels(grey, pts, normal, outside))
    if not steps:
        return True
    return float(np.median(np.concatenate(steps))) > 10.0


def _edge_reach(shape: tuple[int, ...]) -> int:
    """How far (px) either side of a sheet's edge its paper and the desk are looked at."""
    return max(5, int(round(0.04 * min(shape[:2]))))


def _levels(grey: np.ndarray, points: np.ndarray, normal: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """The median grey at ``depths`` along ``normal`` from each of ``points`` (clipped to the picture)."""
    h, w = grey.shape[:2]
    xy = points[:, None, :] + depths[None, :, None] * normal[None, None, :]
    x = np.clip(np.rint(xy[..., 0]), 0, w - 1).astype(np.intp)
    y = np.clip(np.rint(xy[..., 1]), 0, h - 1).astype(np.intp)
    return np.median(grey[y, x].astype(np.float64), axis=1)


def true_aspect(quad: np.ndarray, centre: tuple[float, float]) -> float | None:
    """Width/height of the rectangle seen as ``quad`` by a pinhole camera whose optical axis goes
    through ``centre`` (square pixels, focal length unknown), after Zhang and He, "Whiteboard
    scanning and image enhancement" (2007). None when the view is too frontal to tell the focal
    length (then the sides' lengths are right anyway) or the corners are not a rectangle's."""
    tl, tr, br, bl = (np.array([p[0] - centre[0], p[1] - centre[1], 1.0]) for p in quad.astype(np.float64))
    m1, m2, m3, m4 = tl, tr, bl, br
    k2 = np.dot(np.cross(m1, m4), m3) / np.dot(np.cross(m2, m4), m3)
    k3 = np.dot(np.cross(m1, m4), m2) / np.dot(np.cross(m3, m4), m2)
    n2, n3 = k2 * m2 - m1, k3 * m3 - m1
    if abs(n2[2]) < 1e-3 or abs(n3[2]) < 1e-3:
        return None
    f2 = -(n2[0] * n3[0] + n2[1] * n3[1]) / (n2[2] * n3[2])
    if not np.isfinite(f2) or f2 <= 0:
        return None
    a = (n2[0] ** 2 + n2[1] ** 2) / f2 + n2[2] ** 2
    b = (n3[0] ** 2 + n3[1] ** 2) / f2 + n3[2] ** 2
    if a <= 0 or b <= 0:
        return None
    return float(np.sqrt(a / b))


def _warp(grey: np.ndarray, quad: np.ndarray, trim: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    """The quad warped to a rectangle at its own resolution, ``trim`` cut off each side. With the
    camera's ``centre``, the rectangle's shape is the paper's own (:func:`true_aspect`) rather than
    the foreshortened one."""
    tl, tr, br, bl = quad.astype(np.float32)
    w = float(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    h = float(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    aspect = true_aspect(quad, centre) if centre is not None else None
    if aspect is not None and 0.5 < aspect / (w / h) < 2.0:
        # Keep the longer measured side, set the other from the true aspect.
        w, h = (w, w / aspect) if w / h >= aspect else (h * aspect, h)
    w, h = int(round(w)), int(round(h))
    if min(w, h) < 4 * MIN_SIDE:
        raise NoSignatureInPictureError(f"the paper is too small in the picture ({w}x{h} px): hold it closer to the camera")
    dx, dy = trim * w, trim * h
    dst = np.array([[-dx, -dy], [w - dx, -dy], [w - dx, h - dy], [-dx, h - dy]], np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    size = (int(round(w - 2 * dx)), int(round(h - 2 * dy)))
    return cv2.warpPerspective(grey, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _stroke_width(grey: np.ndarray) -> int:
    """About the width (px) of the picture's thickest strokes: twice the 99th percentile of the
    distance to paper over the pixels darker than their surroundings (a quarter of the shorter
    side wide: uneven light over the page is not ink), at most a quarter of that side (a large
    dark patch is not a stroke, and no closing should be wider)."""
    block = max(15, (min(grey.shape) // 4) | 1)
    dark = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 10)
    depth = cv2.distanceTransform(dark, cv2.DIST_L2, 3)
    inside = depth[dark > 0]
    if inside.size == 0:
        return 0
    return min(int(np.ceil(2.0 * float(np.percentile(inside, 99.0)))), min(grey.shape) // 4)


#: Pixels per strip of :func:`flatten_light`'s arithmetic (float32 temporaries of 256 KiB).
_FLATTEN_STRIP_PIXELS = 1 << 16


def flatten_light(grey: np.ndarray, paper: int = PAPER_LEVEL) -> np.ndarray:
    """Divide out uneven lighting: the paper level at each pixel (a grey closing wider than any
    stroke, so the ink is gone, then smoothed) is mapped to ``paper``."""
    small, f = _reduce(grey)
    # Wider than the thickest stroke, or the closing keeps the stroke and dividing by it turns its
    # middle to paper: a felt pen on a small scan (strokes 15-20 px of a 216 px crop) came out
    # hollow, and the picture was refused as not looking like paper.
    k = max(7, int(round(min(small.shape) / 25)), 2 * _stroke_width(small) + 1) | 1
    if k >= 15 and min(small.shape) >= 64:
        # The paper level varies slowly: found at half the size, the closing and its blur (whose
        # cost grows with the width) cost a sixth, which kept a camera frame's find where it was.
        small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_AREA)
        k = (k // 2) | 1
    level = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    level = cv2.GaussianBlur(level, (0, 0), k / 2)
    if level.shape != grey.shape:
        level = cv2.resize(level, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    # In strips of rows: the float32 temporaries of a whole page were the largest part of a
    # picture's peak memory (MAX_PICTURE_PIXELS); each pixel is its own sum, so strips change no value.
    out = np.empty(grey.shape, np.uint8)
    rows = max(1, _FLATTEN_STRIP_PIXELS // max(grey.shape[1], 1))
    for y in range(0, grey.shape[0], rows):
        gain = np.maximum(level[y : y + rows].astype(np.float32), 1.0)
        np.divide(paper, gain, out=gain)
        gain *= grey[y : y + rows]
        np.clip(gain, 0, 255, out=gain)
        out[y : y + rows] = gain
    return out


def _straight_runs(mask: np.ndarray, thicken: int, min_width: int, min_height: int) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal runs of ``mask`` at least ``min_width`` long and the vertical ones at least
    ``min_height`` long. Thickened first (``thicken`` px square), so a line a few degrees off the
    axis (a corner estimate slightly off) still survives an opening along the axis."""
    thick = cv2.dilate(mask, np.ones((thicken, thicken), np.uint8))
    horiz = cv2.morphologyEx(thick, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (min_width, 1)))
    vert = cv2.morphologyEx(thick, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, min_height)))
    return horiz, vert


def _find_box(page: np.ndarray) -> _Found | None:
    small, f = _reduce(page)
    try:
        mask = ink_mask(small).astype(np.uint8)
    except NoInkError:
        return None
    h, w = mask.shape
    horiz, vert = _straight_runs(mask, 5, max(w // 10, 15), max(h // 10, 10))
    lines = cv2.bitwise_or(horiz, vert)
    # The box is the hole inside the printed frame: its inner edge, untouched by the label or
    # other printing that may join the frame from outside.
    contours, hierarchy = cv2.findContours(lines, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return None
    holes = [c for c, hi in zip(contours, hierarchy[0]) if hi[3] >= 0]
    near = {"horizontal": cv2.dilate(horiz, np.ones((5, 5), np.uint8)), "vertical": cv2.dilate(vert, np.ones((5, 5), np.uint8))}
    best: tuple[float, np.ndarray] | None = None
    for c in sorted(holes, key=cv2.contourArea, reverse=True)[:6]:
        quad = _quad_of(c)
        if quad is None:
            continue
        a = cv2.contourArea(quad) / float(h * w)
        if a < MIN_BOX_FRACTION or a > 0.995 or float(np.ptp(quad[:, 0])) < MIN_BOX_WIDTH * w:
            continue
        if _corner_skew(quad) <= MAX_BOX_CORNER_SKEW and _sides_on_lines(quad, near) >= MIN_BOX_OUTLINE \
                and (best is None or a > best[0]):
            best = (a, quad)
    if best is None:
        return None
    # Past the 5x5 thickening (2 px here) and the line's anti-aliased edge.
    return _Found(_inset(best[1], 3.0) / f, "signature box")


def _corner_skew(quad: np.ndarray) -> float:
    """How far from square (degrees) the quadrilateral's least square corner is."""
    q = quad.astype(np.float64)
    worst = 0.0
    for i in range(4):
        u, v = q[i - 1] - q[i], q[(i + 1) % 4] - q[i]
        cos = abs(float(np.dot(u, v))) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-9)
        worst = max(worst, 90.0 - float(np.degrees(np.arccos(min(cos, 1.0)))))
    return worst


def _sides_on_lines(quad: np.ndarray, near: dict[str, np.ndarray]) -> float:
    """The share of the least covered side of ``quad`` that lies on a straight run along it
    (``near``'s horizontal runs for the sides closer to horizontal, else its vertical ones)."""
    worst = 1.0
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        runs = near["horizontal"] if abs(b[0] - a[0]) >= abs(b[1] - a[1]) else near["vertical"]
        side = np.zeros_like(runs)
        cv2.line(side, tuple(int(round(x)) for x in a), tuple(int(round(x)) for x in b), 1, 1)
        worst = min(worst, float((runs[side > 0] > 0).mean()))
    return worst


def _erase_frame_remnants(region: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Paper over what is left of the box's printed frame inside the warped box: long straight
    horizontal runs (a third of the width or more) near the top and bottom, vertical ones near the sides.
    A signature has no such runs; left in, a dark printed line would pull the ink threshold above a
    light pen's strokes. Also the region's ink mask when nothing was erased (the caller needs it
    next: it costs a sixth of finding a signature), else None."""
    try:
        ink = ink_mask(region)
    except NoInkError:
        return region, None
    mask = ink.astype(np.uint8)
    h, w = mask.shape
    horiz, vert = _straight_runs(mask, 3, max(w // 3, 3), max(h // 3, 3))
    band_y, band_x = int(FRAME_BAND * h), int(FRAME_BAND * w)
    horiz[band_y : h - band_y, :] = 0
    vert[:, band_x : w - band_x] = 0
    lines = cv2.dilate(cv2.bitwise_or(horiz, vert), np.ones((5, 5), np.uint8))
    if not lines.any():
        return region, ink
    out = region.copy()
    out[lines > 0] = PAPER_LEVEL
    return out, None


def _inset(quad: np.ndarray, px: float) -> np.ndarray:
    """Move each corner ``px`` towards the centre (inside the printed frame of a box)."""
    c = quad.mean(0)
    v = c - quad
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return (quad + v / np.maximum(n, 1e-6) * px * np.sqrt(2)).astype(np.float32)


def _looks_like_paper(flat: np.ndarray) -> bool:
    """Paper with a signature on it: of what is not solid ink (under half the paper level), at
    least :data:`MIN_PAPER_FRACTION` is at the paper level, and ink is at most half the picture.
    A tight crop of a felt-pen signature is up to a third ink; counting it against the paper
    refused such scans (measured on the cross-media set's paper crops: paper 62-100 % of all
    pixels, 85-100 % of those not ink; a photo of a desk, 27 %)."""
    lo, hi = 0.85 * PAPER_LEVEL, 1.15 * PAPER_LEVEL
    small, _ = _reduce(flat)
    paper = float(((small >= lo) & (small <= hi)).mean())
    ink = float((small < 0.5 * PAPER_LEVEL).mean())
    return ink <= 0.5 and paper >= MIN_PAPER_FRACTION * (1.0 - ink)


def find_signature(frame: np.ndarray) -> SignatureImage:
    """The signature on a photo or scan, perspective-corrected and cropped to its ink.

    ``source`` says what was found: ``"photo: sheet (edges), signature box"``, ``"photo: sheet
    (paper)"``, ``"scan: signature box"``, ``"scan: whole picture"``. "scan" means no paper edge
    was in view: a scan, or a close-up of a form whose box is then the rectangle rectified.
    """
    grey = _check_frame(frame)
    found: list[str] = []
    sheet = _find_sheet(grey)
    if sheet is not None:
        page = _warp(grey, sheet.quad, SHEET_TRIM, ((grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2))
        found.append(f"sheet ({sheet.how})")
    else:
        page = grey
    page = flatten_light(page)
    box = _find_box(page)
    if box is not None:
        # Without a sheet the page is the camera's own frame: the box is the rectangle to rectify.
        centre = None if sheet is not None else ((page.shape[1] - 1) / 2, (page.shape[0] - 1) / 2)
        region, mask = _erase_frame_remnants(_warp(page, box.quad, 0.0, centre))
        found.append(box.how)
    else:
        region, mask = page, None
        if sheet is None and not _looks_like_paper(page):
            raise NoSignatureInPictureError(
                "no signature found: no sheet of paper in view (all four corners must be in the picture) "
                "and no signature box, and it does not look like a scan: put the whole signed paper flat "
                "in front of the camera, on a darker surface"
            )
    where = "the signature box" if box is not None else ("the paper" if sheet is not None else "the picture")
    try:
        if mask is None:
            mask = ink_mask(region)
        top, bottom, left, right = ink_box(mask)
    except NoInkError as exc:
        raise NoSignatureInPictureError(
            f"no signature in {where}: {exc}. Is the form signed, and is the signed side towards the camera?"
        ) from None
    m = int(round(CROP_MARGIN * max(bottom - top, right - left)))
    crop = region[max(top - m, 0) : bottom + m, max(left - m, 0) : right + m]
    if min(crop.shape) < MIN_SIDE:
        # A dash or a dot, not a signature; refused here, in the words of this module's errors,
        # not as a malformed image further on.
        raise NoSignatureInPictureError(
            f"no signature in {where}: the only ink is a mark of {crop.shape[1]}x{crop.shape[0]} px, too small "
            "to be a signature. Is the form signed, and is the signed side towards the camera?"
        )
    kind = "photo" if sheet is not None else "scan"
    what = ", ".join(found) if found else "whole picture"
    return SignatureImage(np.ascontiguousarray(crop), source=f"{kind}: {what}")
