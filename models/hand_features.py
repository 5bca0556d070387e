"""Hand-made features of a signature picture, after the hybrid-system seed paper.

One fixed-length vector per picture, entries named by :data:`FEATURE_NAMES`: size and aspect of the
ink, ink density, curvature of the upper and lower envelopes, the ink's centroid, the baseline's
slope, the strokes' slant, contours (pieces, loops, perimeter against area) and the peaks of the
horizontal and vertical projection profiles. They feed the per-customer anomaly check
(:mod:`models.anomaly`) and the learning-free ``hand`` verifier of the offline evaluator.

The ink is the one ink mask of :mod:`models.image_preprocess` (never a second threshold), so the
features see exactly what the CNN sees. Every feature is scale-free: a scan at another dpi or a
camera photo at another distance gives the same vector. That is why size is measured in stroke
widths and not in pixels or millimetres (a photo has no dpi). All functions are pure and
deterministic; a picture without ink raises :class:`~models.image_preprocess.NoInkError`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from models.image import SignatureImage
from models.image_preprocess import denoise, edges, ink_box, ink_mask, to_grey
from models.scoring import NormalisationPrior

FEATURE_NAMES: tuple[str, ...] = (
    "aspect_ratio",  # log(width / height) of the ink's bounding box
    "size",  # log(box diagonal / stroke width): how large the signature is, in pen widths
    "ink_density",  # ink pixels / box area
    "centroid_x",  # ink centroid, 0 = left edge of the box, 1 = right edge
    "centroid_y",  # 0 = top, 1 = bottom
    "curvature_upper",  # 2nd-order coefficient of the upper envelope (> 0: arched like ∩)
    "curvature_lower",  # the same for the lower envelope (> 0: arched like ∩)
    "baseline_slope",  # degrees, > 0 rising to the right
    "slant",  # degrees from vertical of the near-vertical strokes, > 0 leaning right
    "vertical_share",  # share of edge strength on near-vertical strokes
    "pieces",  # connected pieces of ink (pen lifts, separate letters)
    "loops",  # closed loops (holes in the ink)
    "perimeter_area",  # log(perimeter² / (4π·area)): ink length in stroke widths, roughly
    "row_peaks",  # peaks of the horizontal projection (text lines, loops stacked)
    "row_peak_position",  # where the highest row peak is, 0 = top, 1 = bottom
    "column_peaks",  # peaks of the vertical projection per box height (vertical strokes)
)

#: How a bank clerk would say that a feature is higher / lower than in the references; ``{much}``
#: becomes "much " when it is far outside their range.
FEATURE_WORDS: dict[str, tuple[str, str]] = {
    "aspect_ratio": ("{much}wider and flatter than the references", "{much}narrower and taller than the references"),
    "size": ("{much}larger than the references", "{much}smaller than the references"),
    "ink_density": ("{much}more densely inked than the references", "{much}more sparsely inked than the references"),
    "centroid_x": ("weight of the ink {much}further right than in the references",
                   "weight of the ink {much}further left than in the references"),
    "centroid_y": ("weight of the ink {much}lower than in the references",
                   "weight of the ink {much}higher than in the references"),
    "curvature_upper": ("top outline {much}more arched than the references",
                        "top outline {much}flatter or hollower than the references"),
    "curvature_lower": ("bottom outline {much}more arched than the references",
                        "bottom outline {much}hollower than the references"),
    "baseline_slope": ("rises {much}more to the right than the references",
                       "falls {much}more to the right than the references"),
    "slant": ("slant differs from the references (leans {much}further right)",
              "slant differs from the references (leans {much}further left or upright)"),
    "vertical_share": ("{much}more upright strokes than the references",
                       "{much}fewer upright strokes than the references"),
    "pieces": ("{much}more separate pieces (pen lifts) than the references",
               "{much}fewer separate pieces (pen lifts) than the references"),
    "loops": ("{much}more closed loops than the references", "{much}fewer closed loops than the references"),
    "perimeter_area": ("{much}longer, more intricate strokes than the references",
                       "{much}shorter, simpler strokes than the references"),
    "row_peaks": ("{much}more stacked lines of ink than the references",
                  "{much}fewer stacked lines of ink than the references"),
    "row_peak_position": ("main body of the writing {much}lower than in the references",
                          "main body of the writing {much}higher than in the references"),
    "column_peaks": ("{much}more upright strokes side by side than the references",
                     "{much}fewer upright strokes side by side than the references"),
}

#: Typical within-writer spread (std) of each feature among genuine signatures: the median over
#: the Dutch set's TRAINING writers (ids ending 0-6) of each writer's std, rounded. It weighs the
#: features against each other in :func:`hand_distance` and floors the per-customer spread of the
#: anomaly check (five references cannot measure a spread reliably). Re-measured with
#: ``tools.evaluate_offline.within_writer_spread`` (see its docstring for the command).
WITHIN_SPREAD: tuple[float, ...] = (
    0.13, 0.07, 0.011, 0.026, 0.035, 0.09, 0.07, 2.8, 2.9, 0.039, 1.7, 2.2, 0.084, 0.29, 0.11, 0.2,
)

#: Population values of :func:`hand_distance` among one writer's references (the mean over K = 5
#: draws on the Dutch TRAINING writers, ``tools.evaluate_offline.fit_prior``): they stand in
#: for a customer's own when the references are few (user normalisation, ``models.scoring``).
HAND_PRIOR = NormalisationPrior(min_dist=5.0, mean_dist=6.6)

#: Smoothing of the projection profiles, as a fraction of the profile's length (scale-free).
_PROFILE_SIGMA = 0.03
#: A peak counts when it rises this fraction of the profile's maximum above the valleys beside it.
_PEAK_PROMINENCE = 0.2


def hand_features(image: SignatureImage | np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The feature vector (float64, ordered as :data:`FEATURE_NAMES`) of one signature picture:
    a :class:`SignatureImage` or uint8 grey/colour pixels, dark ink on light paper. ``mask``: the
    picture's ``ink_mask``, where the caller has it already (the paper verifier's prepared
    picture is cut from the same mask)."""
    pixels = image.pixels if isinstance(image, SignatureImage) else np.asarray(image)
    grey = to_grey(pixels)
    if mask is None:
        mask = ink_mask(grey)
    elif mask.shape != grey.shape or mask.dtype != np.bool_:
        raise ValueError(f"the ink mask must be the picture's, boolean {grey.shape}, got {mask.dtype} {mask.shape}")
    top, bottom, left, right = ink_box(mask)
    ink = mask[top:bottom, left:right]
    # Edges only where there is ink (a few pixels around it): paper grain is not a stroke.
    near_ink = cv2.dilate(ink.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    edge = edges(grey)[top:bottom, left:right] & near_ink
    gx, gy = _gradients(grey, (top, bottom, left, right))
    return features_from_mask(ink, edge, gx, gy)


def features_from_mask(ink: np.ndarray, edge: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The feature vector from the ink mask cropped to its box, the edges and grey-level
    gradients over the same box (the steps after the picture is read)."""
    ink = np.asarray(ink, dtype=bool)
    h, w = ink.shape
    area = float(ink.sum())
    contours, hierarchy = cv2.findContours(ink.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    perimeter = _perimeter(contours)
    stroke = _stroke(area, perimeter)
    pieces, loops = _pieces_and_loops(contours, hierarchy, stroke)
    m = cv2.moments(ink.astype(np.uint8), binaryImage=True)
    slant, vertical = _slant(edge, gx, gy)
    rows, row_pos = _peaks(ink.sum(axis=1).astype(np.float64))
    cols, _ = _peaks(ink.sum(axis=0).astype(np.float64))
    values = {
        "aspect_ratio": math.log(w / h),
        "size": math.log(math.hypot(w, h) / stroke),
        "ink_density": area / (w * h),
        "centroid_x": (m["m10"] / m["m00"] + 0.5) / w,
        "centroid_y": (m["m01"] / m["m00"] + 0.5) / h,
        "curvature_upper": _envelope_curvature(ink, upper=True),
        "curvature_lower": _envelope_curvature(ink, upper=False),
        "baseline_slope": _baseline_slope(ink),
        "slant": slant,
        "vertical_share": vertical,
        "pieces": float(pieces),
        "loops": float(loops),
        "perimeter_area": math.log(perimeter**2 / (4 * math.pi * area)),
        "row_peaks": float(rows),
        "row_peak_position": row_pos,
        # Per box height: a longer name has more upright strokes without being a different hand.
        "column_peaks": cols * h / w,
    }
    return np.array([values[n] for n in FEATURE_NAMES], dtype=np.float64)


def stroke_width(ink: np.ndarray) -> float:
    """The ink's mean stroke width in pixels (at least 1), as the ``size`` feature measures it:
    twice the ink's area over its outline's length."""
    ink = np.asarray(ink, dtype=bool)
    contours, _ = cv2.findContours(ink.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    return _stroke(float(ink.sum()), _perimeter(contours))


def _perimeter(contours) -> float:  # type: ignore[no-untyped-def]
    return float(sum(cv2.arcLength(c, True) for c in contours))


def _stroke(area: float, perimeter: float) -> float:
    # A long thin stroke of length L and width s has area L·s and perimeter about 2L.
    return max(2.0 * area / max(perimeter, 1.0), 1.0)


def describe(vector: np.ndarray) -> dict[str, float]:
    """The vector as ``{name: value}`` (for reports and tests)."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (len(FEATURE_NAMES),):
        raise ValueError(f"expected {len(FEATURE_NAMES)} hand features, got shape {v.shape}")
    return dict(zip(FEATURE_NAMES, (float(x) for x in v)))


def hand_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two feature vectors: Euclidean after dividing each feature by its typical
    within-writer spread (so that a stable feature counts more than an erratic one)."""
    return float(np.linalg.norm((np.asarray(a) - np.asarray(b)) / np.asarray(WITHIN_SPREAD)))


def _gradients(grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    top, bottom, left, right = box
    clean = denoise(grey).astype(np.float32)
    gx = cv2.Sobel(clean, cv2.CV_32F, 1, 0, ksize=3)[top:bottom, left:right]
    gy = cv2.Sobel(clean, cv2.CV_32F, 0, 1, ksize=3)[top:bottom, left:right]
    return gx, gy


def _pieces_and_loops(contours, hierarchy, stroke: float) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Outer contours are pieces, inner ones loops; a hole smaller than a pen dot is a gap in
    the ink (a light stroke), not a loop the writer drew."""
    if hierarchy is None:
        return 0, 0
    pieces = loops = 0
    for c, (_, _, _, parent) in zip(contours, hierarchy[0]):
        if parent < 0:
            pieces += 1
        elif cv2.contourArea(c) >= stroke * stroke:
            loops += 1
    return pieces, loops


def _envelope_curvature(ink: np.ndarray, upper: bool) -> float:
    """2nd-order coefficient of the top (or bottom) outline, both axes in half-widths of the box
    (so a scaled copy keeps it); > 0 when the outline is arched like ∩."""
    h, w = ink.shape
    cols = np.nonzero(ink.any(axis=0))[0]
    if cols.size < 3:
        return 0.0
    if upper:
        y = ink[:, cols].argmax(axis=0).astype(np.float64)
    else:
        y = (h - 1 - ink[::-1, cols].argmax(axis=0)).astype(np.float64)
    half = w / 2.0
    x = (cols - (w - 1) / 2.0) / half
    a = np.polyfit(x, y / half, 2)[0]
    # Image rows grow downwards: ∩ has its smallest row in the middle, a positive coefficient.
    return float(a)


def _baseline_slope(ink: np.ndarray) -> float:
    """Angle (degrees, > 0 rising to the right) of a line fitted to the ink's centre line: per
    column, the mean row of its ink, weighted by how much ink the column has."""
    counts = ink.sum(axis=0).astype(np.float64)
    cols = np.nonzero(counts)[0]
    if cols.size < 2:
        return 0.0
    rows = np.arange(ink.shape[0], dtype=np.float64)
    centre = (rows @ ink[:, cols]) / counts[cols]
    slope = np.polyfit(cols.astype(np.float64), centre, 1, w=np.sqrt(counts[cols]))[0]
    return float(math.degrees(math.atan(-slope)))


def _slant(edge: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> tuple[float, float]:
    """Slant of the near-vertical strokes (degrees from vertical, > 0 leaning right) and their
    share of the edge strength, from the orientation of the grey-level gradient on the edges.

    Arithmetic only, no arctan of each pixel: a stroke within 45° of vertical is one whose gradient
    is at least as horizontal as vertical (|gx| >= |gy|), and the mean of its axial orientation
    comes from the doubled angle's sine and cosine, which are ratios of the gradient's components.
    The Sobel gradients of a scan are often exactly diagonal (|gx| = |gy|), and numpy's float32
    arctan2 put such a pixel an ulp either side of 45° depending on the CPU's vector unit: one Dutch
    scan's slant was 5.340 on one machine and 5.289 on another (the pinned test)."""
    x = gx[edge].astype(np.float64)
    y = gy[edge].astype(np.float64)
    mag = np.hypot(x, y)
    # An edge pixel (Canny's) can have no Sobel gradient at all: it weighs nothing, and its
    # ratios below would be 0/0.
    moving = mag > 0
    x, y, mag = x[moving], y[moving], mag[moving]
    if mag.size == 0 or mag.sum() <= 0:
        return 0.0, 0.0
    near = np.abs(x) >= np.abs(y)
    share = float(mag[near].sum() / mag.sum())
    if not near.any():
        return 0.0, share
    x, y, mag = x[near], y[near], mag[near]
    # The stroke runs perpendicular to the gradient; with y flipped so that angles grow upwards,
    # its orientation is alpha = atan2(-y, x) - 90°, and orientations are axial (0° = 180°), so
    # they are averaged as 2 alpha: sin 2alpha = 2xy / r², cos 2alpha = (y² - x²) / r².
    r2 = mag * mag
    mean = 0.5 * math.degrees(math.atan2(float(mag @ (2.0 * x * y / r2)), float(mag @ ((y * y - x * x) / r2))))
    return float(90.0 - np.mod(mean, 180.0)), share


def _smooth(profile: np.ndarray) -> np.ndarray:
    sigma = max(_PROFILE_SIGMA * len(profile), 0.5)
    radius = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(np.pad(profile, radius, mode="constant"), k / k.sum(), mode="valid")


def _peaks(profile: np.ndarray) -> tuple[int, float]:
    """How many prominent peaks the smoothed profile has, and where the highest is (0..1)."""
    # Beyond the ink's box there is no ink: the ends are valleys (a line of writing at the box's
    # edge is still a peak).
    p = np.concatenate([[0.0], _smooth(profile), [0.0]])
    if p.max() <= 0:
        return 0, 0.5
    need = _PEAK_PROMINENCE * p.max()
    maxima = [i for i in range(len(p)) if (i == 0 or p[i] > p[i - 1]) and (i == len(p) - 1 or p[i] >= p[i + 1])]
    count = 0
    for i in maxima:
        # Prominence: the peak's height over the higher of the lowest points reached on each side
        # before the profile climbs above the peak again (or ends).
        left = p[: i + 1][::-1]
        right = p[i:]
        lo_left = left[: _first_above(left, p[i])].min()
        lo_right = right[: _first_above(right, p[i])].min()
        if p[i] - max(lo_left, lo_right) >= need:
            count += 1
    return count, float((int(p.argmax()) - 1 + 0.5) / len(profile))


def _first_above(seq: np.ndarray, level: float) -> int:
    above = np.nonzero(seq > level)[0]
    return int(above[0]) if above.size else len(seq)

