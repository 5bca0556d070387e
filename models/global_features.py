"""Global features of a pen signature, and how far a questioned one lies from a customer's references.

DTW compares two signatures point by point and warps time away; what it cannot see well is the
signature as a whole: how long it took, how much of that the pen was lifted, how many strokes, how
long the ink path is, how fast and how evenly it went, how hard it pressed, how wide it is against
its height. Forgers get these wrong in ways a point-by-point match forgives (a slow, careful
imitation of the right shape).

Two pure steps, arrays in and arrays out:

* :func:`global_features`: one vector per signature, entries named by :data:`FEATURE_NAMES`. Every
  entry is a ratio, a logarithm or a fraction, so it does not depend on the pad's units or where on
  the pad the customer signed. An entry the pad cannot measure (pressure on a pad without a sensor)
  is NaN.
* :func:`deviations`: a questioned signature's features against one customer's references, each
  as ``|z|``, the difference from the references' mean divided by the references' own spread. A
  customer's spread is measured on a handful of signatures (K = 5 at a kiosk, sometimes 1), so it
  is shrunk towards a population spread (:class:`Spread`, fitted on training writers) as the
  classic verifier's distances are (``models.scoring.shrink``), and never falls below a fraction of
  it: five near-identical references must not make an ordinary variation look like a forgery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.trajectory import Trajectory

FEATURE_NAMES: tuple[str, ...] = (
    "duration",        # log seconds, first to last sample
    "ink_time",        # log seconds with the pen down
    "pen_up_ratio",    # fraction of the duration with the pen lifted
    "strokes",         # log number of pen-down strokes
    "path_length",     # log ink path length / bounding-box height
    "aspect",          # log width / height of the ink's bounding box
    "mean_speed",      # log (path length / height) per second of ink
    "speed_peak",      # log 95th-percentile sample speed / mean speed
    "speed_cv",        # standard deviation / mean of the sample speeds
    "pressure_mean",   # mean pressure with the pen down (NaN without a sensor)
    "pressure_std",    # its standard deviation (NaN without a sensor)
    "centroid_x",      # ink centroid across the bounding box, 0..1
    "centroid_y",      # ink centroid down the bounding box, 0..1
    "start_x",         # first ink point across the bounding box, 0..1
    "end_x",           # last ink point across the bounding box, 0..1
    "rightward",       # fraction of ink steps going right
    "downward",        # fraction of ink steps going down
)
INDEX: dict[str, int] = {n: i for i, n in enumerate(FEATURE_NAMES)}
PRESSURE_FEATURES: tuple[str, ...] = ("pressure_mean", "pressure_std")

_MIN_TIME = 1e-3   # seconds: a log of zero time is meaningless
_TINY = 1e-9


def _ink_points(traj: Trajectory) -> tuple[list[slice], np.ndarray]:
    strokes = traj.strokes()
    if not strokes:
        raise ValueError("no pen-down point: a signature needs ink")
    idx = np.concatenate([np.arange(s.start, s.stop) for s in strokes])
    return strokes, idx


def global_features(traj: Trajectory) -> np.ndarray:
    """The signature's global features, in :data:`FEATURE_NAMES` order (NaN: not measurable)."""
    strokes, ink = _ink_points(traj)
    x, y, t, p = traj.x, traj.y, traj.t, traj.pressure
    xi, yi = x[ink], y[ink]
    width = float(xi.max() - xi.min())
    height = float(yi.max() - yi.min())
    # A signature that is a flat line (or a dot) still has a size: the larger extent, never zero.
    size = max(width, height, _TINY)
    width, height = max(width, 1e-3 * size), max(height, 1e-3 * size)

    steps, step_dt, dxs, dys = [], [], [], []
    for s in strokes:
        dx, dy, dt = np.diff(x[s]), np.diff(y[s]), np.diff(t[s])
        dxs.append(dx)
        dys.append(dy)
        steps.append(np.hypot(dx, dy))
        step_dt.append(dt)
    step = np.concatenate(steps) / height
    dt = np.concatenate(step_dt)
    dx_all, dy_all = np.concatenate(dxs), np.concatenate(dys)
    path = float(step.sum())
    duration = max(traj.duration, _MIN_TIME)
    ink_time = max(traj.ink_time, _MIN_TIME)
    timed = dt > 0
    speeds = step[timed] / dt[timed]
    mean_speed = path / ink_time
    if speeds.size and speeds.mean() > _TINY:
        speed_peak = float(np.log(max(np.percentile(speeds, 95), _TINY) / speeds.mean()))
        speed_cv = float(speeds.std() / speeds.mean())
    else:
        speed_peak = speed_cv = 0.0
    moving = (dx_all != 0) | (dy_all != 0)
    n_moving = max(int(moving.sum()), 1)

    pi = p[ink]
    has_pressure = traj.device.has_pressure and float(pi.max() - pi.min()) > 1e-6
    pressure_mean = float(pi.mean()) if has_pressure else np.nan
    pressure_std = float(pi.std()) if has_pressure else np.nan

    x0, y0 = float(xi.min()), float(yi.min())
    out = np.array([
        np.log(duration),
        np.log(ink_time),
        min(max(1.0 - ink_time / duration, 0.0), 1.0),
        np.log(len(strokes)),
        np.log(max(path, _TINY)),
        np.log(width / height),
        np.log(max(mean_speed, _TINY)),
        speed_peak,
        speed_cv,
        pressure_mean,
        pressure_std,
        (float(xi.mean()) - x0) / width,
        (float(yi.mean()) - y0) / height,
        (float(xi[0]) - x0) / width,
        (float(xi[-1]) - x0) / width,
        float(((dx_all > 0) & moving).sum()) / n_moving,
        float(((dy_all > 0) & moving).sum()) / n_moving,
    ], dtype=np.float64)
    return out


@dataclass(frozen=True)
class Spread:
    """The population's within-writer standard deviation of each feature (fitted on training
    writers' genuine signatures), and how the customer's own spread is pulled towards it.

    ``strength``: the prior counts like this many degrees of freedom of the customer's own
    variance (K references give K - 1). ``floor``: the spread never falls below this fraction of
    the population's.
    """

    sd: np.ndarray
    strength: float = 4.0
    floor: float = 0.5

    def __post_init__(self) -> None:
        sd = np.asarray(self.sd, dtype=np.float64)
        if sd.shape != (len(FEATURE_NAMES),):
            raise ValueError(f"spread needs {len(FEATURE_NAMES)} values, got shape {sd.shape}")
        if not np.all(np.isfinite(sd)) or np.any(sd <= 0):
            raise ValueError("population spreads must be finite and positive")
        if self.strength < 0 or not 0 <= self.floor <= 1:
            raise ValueError("strength must be >= 0 and floor in 0..1")
        object.__setattr__(self, "sd", sd)


def reference_spread(references: np.ndarray, spread: Spread) -> tuple[np.ndarray, np.ndarray]:
    """(mean, spread) of one customer's references (a K x features matrix): the customer's own
    standard deviation (K - 1 degrees of freedom) shrunk towards the population's, floored."""
    r = np.asarray(references, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != len(FEATURE_NAMES) or r.shape[0] < 1:
        raise ValueError(f"references must be a K x {len(FEATURE_NAMES)} matrix, got shape {r.shape}")
    k = r.shape[0]
    mean = r.mean(axis=0)
    own_var = r.var(axis=0, ddof=1) if k > 1 else np.zeros(r.shape[1])
    dof = k - 1
    denom = dof + spread.strength
    var = (dof * own_var + spread.strength * spread.sd**2) / denom if denom > 0 else spread.sd**2
    sd = np.maximum(np.sqrt(var), spread.floor * spread.sd)
    return mean, sd


def deviations(query: np.ndarray, references: np.ndarray, spread: Spread) -> np.ndarray:
    """``|z|`` of each feature of ``query`` against ``references`` (K x features); NaN where the
    query or any reference could not measure the feature."""
    q = np.asarray(query, dtype=np.float64)
    if q.shape != (len(FEATURE_NAMES),):
        raise ValueError(f"query must have {len(FEATURE_NAMES)} features, got shape {q.shape}")
    mean, sd = reference_spread(references, spread)
    return np.abs(q - mean) / sd


def population_spread(writers: Sequence[np.ndarray]) -> np.ndarray:
    """Root mean within-writer variance of each feature over ``writers`` (each an N x features
    matrix of one writer's genuine signatures, N >= 2), ignoring what a writer could not measure.
    A feature no writer measured gets 1.0 (it is never compared anyway)."""
    var_sum = np.zeros(len(FEATURE_NAMES))
    count = np.zeros(len(FEATURE_NAMES))
    for g in writers:
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] < 2:
            continue
        v = _nanvar_cols(g)
        ok = np.isfinite(v)
        var_sum[ok] += v[ok]
        count[ok] += 1
    sd = np.where(count > 0, np.sqrt(var_sum / np.maximum(count, 1)), 1.0)
    return np.maximum(sd, 1e-6)


def _nanvar_cols(g: np.ndarray) -> np.ndarray:
    out = np.full(g.shape[1], np.nan)
    for j in range(g.shape[1]):
        c = g[:, j][np.isfinite(g[:, j])]
        if len(c) >= 2:
            out[j] = c.var(ddof=1)
    return out
