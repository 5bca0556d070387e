"""From a picture of a signature to the 128×128 ink image every offline model sees.

One function, :func:`prepare`, is called by training, evaluation and the kiosk alike; the steps are
separate pure functions (arrays in, arrays out) so tests and the hand-made features can use them.

The steps follow the seed papers: grey scale with the ITU-R BT.601 weights, median 3×3 and Gaussian
denoising, histogram equalisation, adaptive threshold, crop to the ink, aspect-preserving resize.

Why the output is *binary ink* rather than grey levels: in the Dutch scans the genuine signatures
were written with a lighter pen than the forgeries (darkest pixel ≈ 95 against ≈ 0). A model fed
grey levels learns "dark ink = forgery", which says nothing about a cheque at a bank counter; a mask
keeps shape and stroke width and drops the pen's colour. The adaptive threshold alone turns the
paper grain that equalisation amplifies into ink, so a pixel is ink only where the adaptive
threshold *and* a global Otsu cut on the denoised image agree; a pixel that passes the adaptive
threshold at half its offset is ink too when it is part of a stroke with such pixels (hysteresis:
a faint stroke on a camera photo stays one stroke).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from models.errors import VerificationError
from models.image import SignatureImage

SIZE = 128
#: Below this darkness (paper median minus the darkest 0.1 % of pixels) there is no ink on the page.
MIN_CONTRAST = 40
#: Fewer ink pixels than this (after removing specks) is not a signature.
MIN_INK_PIXELS = 40
#: Connected components smaller than this fraction of all ink (and than 6 px) are dust, not ink.
SPECK_FRACTION = 0.0015
#: An ink pixel is darker than its surroundings (the equalised picture's Gaussian-weighted mean
#: over a block) by this many grey levels; a pixel darker by half as much is ink when it is part
#: of a stroke that has such pixels (hysteresis).
ADAPTIVE_OFFSET = 10
#: Blank border kept around the ink before the resize, as a fraction of the longer side.
MARGIN = 0.04
#: Blur (pixels) before two prepared images are compared: a one-pixel shift of a thin stroke is
#: not a difference.
SIMILARITY_BLUR = 2.0


class NoInkError(VerificationError, ValueError):
    """The picture holds no signature that can be used: the message says why, for the person."""


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """uint8 grey from grey, BGR or BGRA pixels (BT.601 luma weights, as OpenCV applies them)."""
    px = np.asarray(pixels)
    if px.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {px.dtype}")
    if px.ndim == 2:
        return px
    if px.ndim == 3 and px.shape[2] == 3:
        return cv2.cvtColor(px, cv2.COLOR_BGR2GRAY)
    if px.ndim == 3 and px.shape[2] == 4:
        return cv2.cvtColor(px, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a grey or colour image, got shape {px.shape}")


def denoise(grey: np.ndarray) -> np.ndarray:
    """Median 3×3 (salt and pepper, scanner dust) then Gaussian 3×3 (sensor noise)."""
    return cv2.GaussianBlur(cv2.medianBlur(grey, 3), (3, 3), 0)


def equalise(grey: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(grey)


def grey_counts(grey: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """How many pixels of a uint8 picture (where ``mask`` is non-zero) have each grey level (256)."""
    return cv2.calcHist([grey], [0], mask, [256], [0, 256]).ravel().astype(np.int64)


def percentile_of_counts(counts: np.ndarray, q: float) -> float | None:
    """``np.percentile(values, q)`` of the grey levels counted in ``counts``, without sorting a
    picture's pixels: the order statistics are read off the cumulative counts. Exact where the
    order statistics around the percentile's position are one level, whatever the rounding of the
    position (nearly always, in a picture of many pixels); None where they are not (the caller
    computes it the slow way)."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    if n == 0:
        return None
    at = (n - 1) * q / 100.0
    ranks = np.clip(np.arange(math.floor(at) - 1, math.floor(at) + 3), 0, n - 1)
    levels = np.searchsorted(cum, ranks, side="right")
    return float(levels[0]) if (levels == levels[0]).all() else None


def grey_percentile(grey: np.ndarray, q: float, counts: np.ndarray | None = None,
                    where: np.ndarray | None = None) -> float:
    """``np.percentile(grey[where], q)`` (all of ``grey`` without ``where``) of a uint8 picture: from
    its grey-level ``counts`` (``grey_counts(grey)`` if not given) where they settle it, else
    numpy's. At q = 50 it is ``np.median``."""
    got = percentile_of_counts(grey_counts(grey) if counts is None else counts, q)
    return float(np.percentile(grey if where is None else grey[where], q)) if got is None else got


def ink_mask(grey: np.ndarray) -> np.ndarray:
    """Boolean ink mask of a grey picture (dark ink on light paper); ``NoInkError`` if it has none."""
    clean = denoise(grey)
    counts = grey_counts(clean)
    paper = grey_percentile(clean, 50.0, counts)
    darkest = grey_percentile(clean, 0.1, counts)
    if paper - darkest < MIN_CONTRAST:
        raise NoInkError(
            "no ink found: the page is blank, or the signature is too faint to read "
            f"(contrast {paper - darkest:.0f} grey levels, need {MIN_CONTRAST})"
        )
    block = max(15, (min(grey.shape) // 8) | 1)
    below = darker_than_surroundings(equalise(clean), block)
    _, otsu = cv2.threshold(clean, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    # Each temporary let go as soon as it is used: a whole scanned page passes through here, and
    # what is alive together sets a picture's peak memory (models.signature_finder.MAX_PICTURE_PIXELS).
    del clean
    dark = otsu > 0
    del otsu
    sure = below >= ADAPTIVE_OFFSET
    sure &= dark
    weak = below >= ADAPTIVE_OFFSET // 2
    weak &= dark
    del below, dark
    return _strokes(weak, sure)


def darker_than_surroundings(levelled: np.ndarray, block: int) -> np.ndarray:
    """How many grey levels each pixel is darker than the Gaussian-weighted mean of the ``block``
    around it (int16; negative where lighter). OpenCV's Gaussian adaptive threshold at offset C
    (``THRESH_BINARY_INV``) keeps exactly the pixels where this is at least C (a test holds them
    to it); computed once, it serves both offsets of the hysteresis."""
    # In float and rounded, as OpenCV's adaptive threshold computes its mean (its 8-bit blur differs
    # by one grey level here and there).
    mean = cv2.GaussianBlur(levelled.astype(np.float32), (block, block), 0,
                            borderType=cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED)
    # In place, each temporary let go when used: on a whole scanned page they count towards a
    # picture's peak memory (models.signature_finder.MAX_PICTURE_PIXELS). The same values.
    np.rint(mean, out=mean)
    below = mean.astype(np.int16)
    del mean
    below -= levelled
    return below


#: Pixels per strip of :func:`_strokes`' area count (64-bit temporaries of 512 KiB).
_AREA_STRIP_PIXELS = 1 << 16


def _strokes(weak: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Every connected piece of ``weak`` that holds some ``sure`` pixel, whole (hysteresis, as
    Canny keeps a weak edge joined to a strong one), less the specks. A faint stroke (a ballpoint's
    fast stroke on a camera photo, where the equalised paper grain around it is nearly as dark)
    passes the adaptive threshold only in dashes, and the signature falls into many pieces with no
    loops; at half the offset the whole stroke passes, and it is kept because it joins ink that is
    certain. Grain that passes the lower offset on its own joins no certain ink and stays out. A
    speck is a piece smaller than :data:`SPECK_FRACTION` of all the ink kept and than 6 pixels."""
    n, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
    holds = np.zeros(n, dtype=bool)
    holds[labels[sure & weak]] = True
    holds[0] = False
    # Counted here: OpenCV's statistics (boxes, centroids too) took five times the labelling itself.
    # In strips of rows: bincount copies its input to 64-bit integers, for a whole page 8 bytes a
    # pixel on top of a picture's peak memory (models.signature_finder.MAX_PICTURE_PIXELS).
    areas = np.zeros(n, dtype=np.int64)
    rows = max(1, _AREA_STRIP_PIXELS // max(labels.shape[1], 1))
    for y in range(0, labels.shape[0], rows):
        areas += np.bincount(labels[y : y + rows].ravel(), minlength=n)
    keep_min = max(6.0, SPECK_FRACTION * float(areas[holds].sum()))
    return (holds & (areas >= keep_min))[labels]


def ink_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends, of the ink; ``NoInkError`` if too little."""
    ys, xs = np.nonzero(mask)
    if ys.size < MIN_INK_PIXELS:
        raise NoInkError(f"no signature found: only {ys.size} ink pixels (need {MIN_INK_PIXELS})")
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def fit_square(mask: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Crop ``mask`` to its ink and scale it, aspect kept and centred, into ``size``×``size``
    float32 in [0, 1] (1 = ink; area averaging keeps thin strokes as partial values)."""
    top, bottom, left, right = ink_box(mask)
    crop = mask[top:bottom, left:right].astype(np.float32)
    h, w = crop.shape
    side = max(h, w)
    pad = int(round(MARGIN * side))
    canvas = np.zeros((side + 2 * pad, side + 2 * pad), np.float32)
    y0, x0 = pad + (side - h) // 2, pad + (side - w) // 2
    canvas[y0 : y0 + h, x0 : x0 + w] = crop
    interp = cv2.INTER_AREA if canvas.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(canvas, (size, size), interpolation=interp)
    return np.clip(out, 0.0, 1.0)


def edges(grey: np.ndarray) -> np.ndarray:
    """Canny edges of the denoised picture (for the hand-made features that want contours)."""
    clean = denoise(grey)
    hi, _ = cv2.threshold(clean, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.Canny(clean, 0.5 * hi, hi) > 0


def prepare(image: SignatureImage | np.ndarray, size: int = SIZE) -> np.ndarray:
    """The model input for one signature picture: ``size``×``size`` float32, ink = 1, paper = 0."""
    pixels = image.pixels if isinstance(image, SignatureImage) else image
    return fit_square(ink_mask(to_grey(pixels)), size)


def to_levels(prepared: np.ndarray) -> np.ndarray:
    """``prepare``'s floats as uint8 levels (255 = ink), rounded as the runtime quantises the int8
    CNN-LSTM's input (x / float32 step of 1/255, to nearest): what the template store keeps of a
    paper reference, and what every other reader of a prepared picture (``models.hog``) reads, so
    a kept reference and a fresh picture of the same ink give the same numbers."""
    levels = np.rint(np.asarray(prepared, dtype=np.float32) / np.float32(1.0 / 255.0))
    return np.clip(levels, 0, 255).astype(np.uint8)


def from_levels(levels: np.ndarray) -> np.ndarray:
    """Kept uint8 levels back as ``prepare``'s float32 scale (the inverse of :func:`to_levels` up
    to its rounding): what the CNN-LSTM and the gradient histograms read of a kept reference."""
    return np.asarray(levels).astype(np.float32) / np.float32(255.0)


def prepared_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two prepared images are: their correlation after a ``SIMILARITY_BLUR`` blur
    (1 = the same picture). Two genuine signatures of one writer reach 0.884 at the 95th
    percentile; a photo and a scan of the same sheet about 0.99 (``sigkiosk bench camera``)."""
    x = cv2.GaussianBlur(np.asarray(a, np.float32), (0, 0), SIMILARITY_BLUR).ravel()
    y = cv2.GaussianBlur(np.asarray(b, np.float32), (0, 0), SIMILARITY_BLUR).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
