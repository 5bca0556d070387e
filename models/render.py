"""Ink from a pen trajectory: the picture a ballpoint would have left on paper.

Two uses. Training: the online sets have far more writers than the paper ones, and their rendered
ink is extra training data for the image model. The appliance: a customer enrolled on the pad can
later sign a paper form, and the form's photo is verified against the pad references rendered here.

The pen: width grows with pressure (a ballpoint's line widens a little as it is pressed; a device
without pressure draws the nominal width), and a fast stroke deposits less ink, so it is lighter.
Lines are drawn on a supersampled canvas with anti-aliasing and scaled down by area averaging, so
that thin strokes keep partial grey values as a scanner would record them.

Scale: trajectories in millimetres are drawn at their true size for the given dpi; most datasets
report device units of unknown size, and those are scaled so the ink's longer side is
``longest_side_mm`` (a typical signature is 40-70 mm wide).
"""

from __future__ import annotations

import cv2
import numpy as np

from models.errors import VerificationError
from models.image import SignatureImage
from models.trajectory import Trajectory

#: A signature's usual width on a form, for trajectories whose device size is unknown.
DEFAULT_LONGEST_SIDE_MM = 50.0
#: A ballpoint's line.
DEFAULT_PEN_WIDTH_MM = 0.5
_SUPERSAMPLE = 3
PAPER = 245
INK = 25


class RenderError(VerificationError, ValueError):
    """The trajectory has no ink to draw (no pen-down point)."""


def _stroke_widths(traj: Trajectory, pen_px: float) -> np.ndarray:
    p = traj.pressure if traj.device.has_pressure else np.ones(len(traj))
    # Never thinner than 40 % of the nominal line: a ballpoint leaves a line even when barely pressed.
    return pen_px * (0.4 + 0.6 * np.clip(p, 0.0, 1.0) ** 0.6)


def _darkness(xy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per point, 0.55..1: the fastest parts of a stroke are lighter."""
    if len(xy) < 2:
        return np.ones(len(xy))
    step = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    dt = np.maximum(np.diff(t), 1e-3)
    speed = np.concatenate([[0.0], step / dt])
    ref = np.percentile(speed, 90) + 1e-9
    return 1.0 - 0.45 * np.clip(speed / ref, 0.0, 1.0) ** 2


def render_ink(
    traj: Trajectory,
    *,
    dpi: float = 300.0,
    pen_width_mm: float = DEFAULT_PEN_WIDTH_MM,
    longest_side_mm: float | None = None,
    margin_mm: float = 3.0,
    rng: np.random.Generator | None = None,
) -> SignatureImage:
    """Dark ink on white paper at ``dpi``. ``rng`` adds the small variation of a real pen (ink
    darkness, width, paper grey); without it the picture is a pure function of its arguments."""
    if dpi <= 0 or pen_width_mm <= 0:
        raise ValueError("dpi and pen_width_mm must be positive")
    strokes = traj.strokes()
    if not strokes:
        raise RenderError("the trajectory has no pen-down point: nothing to draw")
    xy = np.column_stack((traj.x, traj.y)).astype(np.float64)
    down = np.concatenate([np.arange(s.start, s.stop) for s in strokes])
    lo, hi = xy[down].min(axis=0), xy[down].max(axis=0)
    px_per_mm = dpi / 25.4
    if traj.device.units == "mm" and longest_side_mm is None:
        scale = px_per_mm
    else:
        extent = float(max(hi - lo)) or 1.0
        scale = (longest_side_mm or DEFAULT_LONGEST_SIDE_MM) * px_per_mm / extent

    pen_px = pen_width_mm * px_per_mm
    paper, ink = PAPER, INK
    if rng is not None:
        pen_px *= float(rng.uniform(0.8, 1.25))
        paper = int(rng.integers(232, 252))
        ink = int(rng.integers(5, 70))
    # The pen's own width is drawn beyond the centre line: room for it on every side.
    margin = margin_mm * px_per_mm + pen_px
    w_px = int(np.ceil((hi[0] - lo[0]) * scale + 2 * margin))
    h_px = int(np.ceil((hi[1] - lo[1]) * scale + 2 * margin))
    s = _SUPERSAMPLE
    canvas = np.zeros((h_px * s, w_px * s), np.float32)
    pts = ((xy - lo) * scale + margin) * s
    widths = _stroke_widths(traj, pen_px) * s
    for sl in strokes:
        p = pts[sl]
        dark = _darkness(p, traj.t[sl])
        if len(p) == 1:
            cv2.circle(canvas, _pt(p[0]), max(1, int(round(widths[sl][0] / 2))), float(dark[0]), -1, cv2.LINE_AA)
            continue
        for i in range(1, len(p)):
            thick = max(1, int(round(0.5 * (widths[sl][i - 1] + widths[sl][i]))))
            cv2.line(canvas, _pt(p[i - 1]), _pt(p[i]), float(dark[i]), thick, cv2.LINE_AA)
    density = cv2.resize(canvas, (w_px, h_px), interpolation=cv2.INTER_AREA)
    pixels = paper - np.clip(density, 0.0, 1.0) * (paper - ink)
    return SignatureImage(np.clip(np.round(pixels), 0, 255).astype(np.uint8), dpi=dpi, source="rendered ink")


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))
