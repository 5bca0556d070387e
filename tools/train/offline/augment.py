"""Augmentation of a *prepared* 128×128 image (so the prepared-image cache stays valid).

Small rotation (±5°), scale (0.9–1.08), translation (±5 px), and a stroke-width change (grey
dilate or erode, 2×2) with probability 0.3; optionally (``--blur P``) a Gaussian blur and a new
binary cut at a random level, as another scanner's optics or threshold would give.
"""

from __future__ import annotations

import cv2
import numpy as np


def blur_rethreshold(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another scanner or pen: Gaussian blur, then a new binary cut at a random level (strokes grow
    or thin, small gaps close or open), as a different optics/threshold would give."""
    y = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.6, 1.4)))
    return (y > float(rng.uniform(0.25, 0.6))).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, p_blur: float = 0.0) -> np.ndarray:
    """One prepared image (S×S float, ink = 1), slightly rotated, scaled, shifted, thickened or thinned
    (and with probability ``p_blur`` blurred and re-thresholded)."""
    s = x.shape[0]
    m = np.asarray(cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-5, 5)), float(rng.uniform(0.9, 1.08))),
                   np.float64)
    m[:, 2] += rng.uniform(-5, 5, size=2)
    y = cv2.warpAffine(x, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.0)
    r = rng.random()
    if r < 0.15:
        y = cv2.dilate(y, np.ones((2, 2), np.uint8))
    elif r < 0.3:
        y = cv2.erode(y, np.ones((2, 2), np.uint8))
    if p_blur > 0 and rng.random() < p_blur:
        y = blur_rethreshold(y, rng)
    return y
