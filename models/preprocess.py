"""Trajectory preprocessing shared by enrollment, verification, training and evaluation.

Everything here is a pure function of arrays or of a ``Trajectory``; the one entry point the rest
of the project calls is :func:`prepare`, configured by :class:`PreprocessConfig`, so that a feature
is never computed one way in training and another on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.trajectory import MAX_POINTS, Trajectory, TrajectoryError


@dataclass(frozen=True)
class PreprocessConfig:
    """How a trajectory becomes the points the features are computed on.

    ``keep_pen_up``: keep hover points (pen in proximity, not touching). Their timing carries
    rhythm but their positions are noisy and many devices do not report them; dropping them makes
    devices comparable.
    ``resample_hz``: resample every stroke to this uniform rate using the measured timestamps
    (``None`` keeps the device's own samples). Devices with irregular sampling (SUSIG's ePad) give
    per-sample derivatives that jitter; a uniform rate removes that.
    ``lowpass_hz``: optional low-pass cut-off (a centred moving average of matching width),
    applied after resampling, stroke by stroke; ``None`` disables it.
    ``resample_untimed``: resample a pad that sends no timestamps too, at the times its nominal
    rate implies. Not shipped: it helped the Japanese pad (which repeats its position in a third
    of its samples) and cost NFI's (``python -m tools.score_settings DATA --classic-preprocess``).
    ``smooth_jagged``: a signature whose strokes are more jagged than this (:func:`jaggedness`)
    is smoothed stroke by stroke with the narrowest moving average that brings it to this, at most
    :data:`WIDEST_SMOOTHING` points: a pad that reports jagged positions is smoothed, one that does
    not is left alone. The classic verifier smooths to 0.6 since 2026-11-28
    (``models.classic.SMOOTH_JAGGED``, chosen by ``python -m tools.score_settings DATA
    --classic-preprocess``); the default here is none, which the learned model was trained on.
    """

    keep_pen_up: bool = False
    resample_hz: float | None = 100.0
    lowpass_hz: float | None = None
    resample_untimed: bool = False
    smooth_jagged: float | None = None

    def __post_init__(self) -> None:
        for name in ("resample_hz", "lowpass_hz", "smooth_jagged"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive (or None), got {value!r}")


@dataclass(frozen=True)
class Prepared:
    """Points ready for features: float arrays plus a stroke index per point.

    ``x`` and ``y`` are centred on the centroid and divided by the signature's height (the
    standard deviation of y), so size and position on the pad do not matter; the aspect ratio is
    kept. ``p`` is pressure in 0..1. ``stroke`` numbers pen-down strokes; -1 marks pen-up points.
    """

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    t: np.ndarray
    stroke: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def drop_duplicates(traj: Trajectory) -> np.ndarray:
    """Indices of the points to keep.

    A device that reports the same sample twice (same time) or repeats its first sample while
    it settles (the SigWiComp Japanese set) adds points that say nothing. A pen resting still at
    distinct measured times is a real pause and is kept.
    """
    x, y, p, t = traj.x, traj.y, traj.pressure, traj.t
    same = np.zeros(len(x), dtype=bool)
    same[1:] = (x[1:] == x[:-1]) & (y[1:] == y[:-1]) & (p[1:] == p[:-1]) & (
        traj.pen_down[1:] == traj.pen_down[:-1]
    )
    if traj.device.time_measured:
        same[1:] &= t[1:] == t[:-1]
    else:
        # Without measured time a repeated sample cannot be told from a pause; repeats at the very
        # start (before the pen moves) are the known artefact, so only those go.
        first_move = int(np.argmax(~same[1:])) + 1 if (~same[1:]).any() else len(x)
        lead = np.zeros(len(x), dtype=bool)
        lead[1:first_move] = True
        same &= lead
    return np.flatnonzero(~same)


def _resample_segment(t: np.ndarray, cols: list[np.ndarray], hz: float) -> tuple[np.ndarray, list[np.ndarray]]:
    if len(t) < 2 or t[-1] - t[0] <= 0:
        return t, cols
    # Repeated timestamps would make interp ill-defined: keep the last sample reported at a time.
    keep = np.append(np.diff(t) > 0, True)
    t, cols = t[keep], [c[keep] for c in cols]
    n = max(2, int(np.floor((t[-1] - t[0]) * hz)) + 1)
    tn = t[0] + np.arange(n) / hz
    return tn, [np.interp(tn, t, c) for c in cols]


def moving_average(v: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with edge padding; ``width`` odd and >= 1."""
    if width <= 1 or len(v) < 3:
        return v.astype(np.float64, copy=True)
    width = min(width | 1, (len(v) // 2) * 2 + 1)
    pad = width // 2
    vp = np.pad(v, pad, mode="edge")
    c = np.cumsum(np.insert(vp, 0, 0.0))
    return (c[width:] - c[:-width]) / width


#: The widest moving average :func:`smoothed_to` uses (points).
WIDEST_SMOOTHING = 11


def equal_runs(values: np.ndarray) -> list[slice]:
    """The maximal runs of equal values, in order. On stroke ids: each stroke and each pen-up
    run, what every stroke-by-stroke computation of preprocessing and of the time functions
    walks; on a mask, its runs of True and of False."""
    bounds = _run_bounds(values)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _run_bounds(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts, then the end: one more bound than runs."""
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    return np.concatenate(([0], cuts, [len(values)]))


def _runs(stroke: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the index of its run of equal stroke ids (:func:`equal_runs`); and the runs'
    bounds (:func:`_run_bounds`): run ``r`` is ``bounds[r]:bounds[r + 1]``."""
    bounds = _run_bounds(stroke)
    return np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)), bounds


def _averaged_by_stroke(v: np.ndarray, stroke: np.ndarray, width: int) -> np.ndarray:
    """:func:`moving_average` of each stroke's run of ``v`` on its own (the same window, narrowed
    on short strokes and edge-padded, up to rounding), all strokes at once: a kanji signature has
    dozens of strokes, and a loop over them cost more than the averages. ``v`` is one series or
    several stacked (``(k, points)``: positions and pressure share the windows)."""
    v = np.asarray(v, dtype=np.float64)
    if width <= 1 or v.shape[-1] == 0:
        return v.copy()
    run, bounds = _runs(stroke)
    start, stop = bounds[run], bounds[run + 1]
    length = stop - start
    pad = (width | 1) // 2
    # moving_average's own narrowing: at most the stroke's half length, none under 3 points
    half = np.where(length < 3, 0, np.minimum(pad, length // 2))
    index = np.arange(v.shape[-1])
    total = np.zeros(v.shape)
    for offset in range(-pad, pad + 1):
        neighbour = v[..., np.clip(index + offset, start, stop - 1)]
        total += np.where(abs(offset) <= half, neighbour, 0.0)
    return total / (2 * half + 1)


def jaggedness(x: np.ndarray, y: np.ndarray, stroke: np.ndarray) -> float:
    """How jagged a signature's strokes are: per stroke of at least 5 points, the mean length of
    the second difference of the positions over that of the first (0 on a straight line at an
    even pace, larger as each step turns), the median over strokes; 0 with no such stroke."""
    if len(x) < 5:
        return 0.0
    run, bounds = _runs(stroke)
    length = np.diff(bounds)
    dx, dy = np.diff(x), np.diff(y)
    first = np.hypot(dx, dy)
    second = np.hypot(np.diff(dx), np.diff(dy))
    within1 = run[1:] == run[:-1]
    within2 = run[2:] == run[:-2]
    step = np.bincount(run[:-1][within1], weights=first[within1], minlength=len(length))
    turn = np.bincount(run[:-2][within2], weights=second[within2], minlength=len(length))
    # means over each run's n - 1 steps and n - 2 turns; a run that never moves has no pace
    keep = (length >= 5) & (step > 0)
    if not keep.any():
        return 0.0
    ratio = (turn[keep] / (length[keep] - 2)) / (step[keep] / (length[keep] - 1))
    return float(np.median(ratio))


def smoothed_to(x: np.ndarray, y: np.ndarray, p: np.ndarray, stroke: np.ndarray, limit: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and pressure averaged stroke by stroke with the narrowest odd window (from 3 to
    :data:`WIDEST_SMOOTHING` points) that makes :func:`jaggedness` at most ``limit``; unchanged if
    they already are, the widest window if none does."""
    if jaggedness(x, y, stroke) <= limit:
        return x, y, p
    points = np.stack([x, y, p])
    for width in range(3, WIDEST_SMOOTHING + 1, 2):
        sx, sy, sp = _averaged_by_stroke(points, stroke, width)
        if jaggedness(sx, sy, stroke) <= limit:
            break
    return sx, sy, sp


def prepare(traj: Trajectory, config: PreprocessConfig = PreprocessConfig()) -> Prepared:
    """Duplicates, pen-up handling, resampling, low-pass, smoothing of jagged strokes and
    normalisation, in that order."""
    keep = drop_duplicates(traj)
    stroke_all = traj.stroke_ids()[keep]
    x, y, p, t = traj.x[keep], traj.y[keep], traj.pressure[keep], traj.t[keep]
    if not config.keep_pen_up:
        down = stroke_all >= 0
        x, y, p, t, stroke_all = x[down], y[down], p[down], t[down], stroke_all[down]
    if len(x) < 2:
        raise TrajectoryError(f"too few usable points after preprocessing ({len(x)})")

    # The rate the points are resampled to (None: they stay the device's own samples).
    hz = config.resample_hz if traj.device.time_measured or config.resample_untimed else None
    if hz is not None:
        # Each stroke (and each pen-up run) is resampled on its own so that the jump between
        # strokes is never smeared into fake ink.
        runs = list(equal_runs(stroke_all))
        # The points the resampling makes come from the time span, not from the points given: two
        # points 10 000 s apart made a million, 10^12 s apart a MemoryError (found by a review).
        made = sum(float(t[sl][-1] - t[sl][0]) for sl in runs) * hz
        if made > MAX_POINTS:
            raise TrajectoryError(f"the signature's strokes last {made / hz:.0f} s in all: at {hz:g} Hz more than "
                                  f"{MAX_POINTS} points (a signature is written in seconds)")
        parts: list[tuple[np.ndarray, list[np.ndarray]]] = []
        for sl in runs:
            tn, cols = _resample_segment(t[sl], [x[sl], y[sl], p[sl]], hz)
            parts.append((tn, cols + [np.full(len(tn), stroke_all[sl.start])]))
        t = np.concatenate([pt[0] for pt in parts])
        x, y, p, stroke_all = (np.concatenate([pt[1][i] for pt in parts]) for i in range(4))
        stroke_all = stroke_all.astype(np.int32)

    if config.lowpass_hz is not None:
        rate = hz or traj.device.nominal_rate_hz or 100.0
        width = int(round(rate / config.lowpass_hz)) | 1
        # Stroke by stroke, as the resampling: a jump between strokes is not smoothed into ink.
        x, y, p = _averaged_by_stroke(np.stack([x, y, p]), stroke_all, width)

    if config.smooth_jagged is not None:
        x, y, p = smoothed_to(x, y, p, stroke_all, config.smooth_jagged)

    x = x - x.mean()
    y = y - y.mean()
    scale = float(np.std(y))
    if scale <= 0:
        scale = float(np.std(x))
    if scale <= 0:
        raise TrajectoryError("signature has no extent: all points at one position")
    x, y = x / scale, y / scale
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        # Positions near the float limit overflow their centring and spread: no pad reports them
        # (a plain ValueError escaped the verifier before; a review, 2026-11-30).
        raise TrajectoryError("positions too large to normalise")
    return Prepared(x=x, y=y, p=np.clip(p, 0.0, 1.0), t=t - t[0], stroke=stroke_all)


def prepared_time_functions(traj: Trajectory, config: PreprocessConfig = PreprocessConfig()) -> PreparedSignature:
    """A trajectory prepared with ``config`` and all its time functions (``models.features``):
    what the classic and the learned verifier both start from, computed once when a verifier
    runs both on one signature with the same preprocessing (``models.pen.FusedVerifier``)."""
    from models.features import time_functions

    prep = prepare(traj, config)
    return PreparedSignature(config, prep, time_functions(prep))


@dataclass(frozen=True, eq=False)
class PreparedSignature:
    config: PreprocessConfig
    prepared: Prepared
    time_functions: np.ndarray                      # (points, all of models.features.FEATURE_NAMES)

    def usable_for(self, config: PreprocessConfig) -> bool:
        return self.config == config
