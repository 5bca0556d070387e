"""Per-point time functions of a signature (after the TS-GATR seed paper), as pure functions.

Derivatives use the second-order regression of the on-line signature literature,
``d[n] = sum_{k=1..2} k (f[n+k] - f[n-k]) / (2 sum k^2)``, computed inside each stroke (edge values
repeated), so that the jump from one stroke to the next never appears as a burst of speed.
"""

from __future__ import annotations

import numpy as np

from models.preprocess import Prepared, equal_runs

FEATURE_NAMES: tuple[str, ...] = (
    "x",
    "y",
    "pressure",
    "dx",
    "dy",
    "speed",
    "angle",
    "cos",
    "sin",
    "dangle",
    "log_radius",
    "centripetal",
    "acceleration",
    "dpressure",
)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_EPS = 1e-6


def feature_indices(names: tuple[str, ...]) -> np.ndarray:
    unknown = [n for n in names if n not in _INDEX]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {', '.join(FEATURE_NAMES)}")
    return np.array([_INDEX[n] for n in names], dtype=np.intp)


def regression_derivative(f: np.ndarray) -> np.ndarray:
    """Second-order regression derivative of a 1-D series, per sample, with edge padding."""
    f = np.asarray(f, dtype=np.float64)
    if len(f) < 2:
        return np.zeros_like(f)
    fp = np.pad(f, 2, mode="edge")
    return ((fp[3:-1] - fp[1:-3]) + 2.0 * (fp[4:] - fp[:-4])) / 10.0


def segmented_derivative(f: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    out = np.empty(len(f), dtype=np.float64)
    for sl in equal_runs(stroke):
        out[sl] = regression_derivative(f[sl])
    return out


def _segmented_unwrap(theta: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    out = np.empty_like(theta)
    for sl in equal_runs(stroke):
        out[sl] = np.unwrap(theta[sl])
    return out


#: Slower than this (signature heights per sample) the pen rests, and a smaller component of its
#: velocity is none, where the direction is held (``time_functions(hold_still=...)``): a smoothed
#: rest (a moving average of identical positions, ``models.preprocess.smoothed_to``) is still, and a
#: smoothed horizontal stroke level, only up to rounding, and the direction of a 1e-13 step is
#: noise. A pad's smallest real step is thousands of times larger.
STILL_SPEED = 1e-9


def held_direction(angle: np.ndarray, moving: np.ndarray, stroke: np.ndarray, min_run: int = 1) -> np.ndarray:
    """``angle`` where ``moving``; elsewhere the last moving point's of the same stroke (a stroke
    that starts still takes its first moving direction; one that never moves keeps its own).

    Only runs of at least ``min_run`` still points of one stroke are held: a pen at rest. A
    shorter run keeps its own angle; a single still point mid-stroke is mostly a reversal, where
    the regression derivatives on either side cancel, not a rest."""
    if min_run < 1:
        raise ValueError(f"min_run must be >= 1, got {min_run}")
    out = np.asarray(angle, dtype=np.float64).copy()
    for sl in equal_runs(stroke):
        m = np.array(moving[sl], dtype=bool)
        if min_run > 1:
            for run in equal_runs(m):
                if not m[run.start] and run.stop - run.start < min_run:
                    m[run] = True
        if not m.any() or m.all():
            continue
        last = np.maximum.accumulate(np.where(m, np.arange(len(m)), -1))
        last[last < 0] = int(np.argmax(m))
        out[sl] = out[sl][last]
    return out


def time_functions(prep: Prepared, hold_still: int = 0) -> np.ndarray:
    """All time functions, one row per point, columns in ``FEATURE_NAMES`` order.

    Where the pen does not move the direction is undefined (``arctan2(0, 0)`` is 0, rightwards);
    with ``hold_still`` (a run length, 0 for none) it is the last direction the pen moved in
    wherever it rests that many points or more (:func:`held_direction`). The classic verifier
    holds from 2 (``ClassicConfig.hold_still_direction``); the learned model was trained with 0,
    the default here."""
    s = prep.stroke
    dx = segmented_derivative(prep.x, s)
    dy = segmented_derivative(prep.y, s)
    speed = np.hypot(dx, dy)
    if hold_still:
        # The direction from the components above rounding: a pen moving left along a smoothed
        # line has dy = +-1e-17 as the additions fall, and arctan2 turns that into +-pi, a jump of
        # a whole turn between two neighbours (and between two machines' numpy builds).
        angle = np.arctan2(np.where(np.abs(dy) > STILL_SPEED, dy, 0.0), np.where(np.abs(dx) > STILL_SPEED, dx, 0.0))
        angle = held_direction(angle, speed > STILL_SPEED, s, hold_still)
    else:
        angle = np.arctan2(dy, dx)
    dangle = segmented_derivative(_segmented_unwrap(angle, s), s)
    log_radius = np.log((speed + _EPS) / (np.abs(dangle) + _EPS))
    centripetal = speed * dangle
    dspeed = segmented_derivative(speed, s)
    acceleration = np.hypot(dspeed, centripetal)
    dpressure = segmented_derivative(prep.p, s)
    return np.column_stack(
        (
            prep.x,
            prep.y,
            prep.p,
            dx,
            dy,
            speed,
            angle,
            np.cos(angle),
            np.sin(angle),
            dangle,
            log_radius,
            centripetal,
            acceleration,
            dpressure,
        )
    )


def zscore(features: np.ndarray) -> np.ndarray:
    """Each column to zero mean and unit variance over the signature; constant columns to zero."""
    mu = features.mean(axis=0)
    sd = features.std(axis=0)
    sd[sd < 1e-9] = 1.0
    return (features - mu) / sd
