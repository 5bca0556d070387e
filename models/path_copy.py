"""The copy check on the written path: a signature replayed with other timing is still a copy.

The first copy check (``models.policy.DecisionPolicy.is_copy``) compares the verifier's own
distance: a question much closer to a reference than the references ever are to each other. Its
time functions are resampled on the signature's clock, so a reference replayed a little faster or
slower (1 %), or as a pad sampling at another rate would have reported it, gives other points,
other derivatives and a distance as far as a genuine signature's: on SUSIG-Visual it caught 43 of
312 references replayed 1 % slower (README, "The copy check on the written path").

Here the pen-down positions are compared as a path, whatever the clock that drew it: a signature
is resampled to :data:`PATH_POINTS` points evenly spaced along its length, centred and scaled on
them (so neither the clock nor a pad's resolution moves it), and the distance of two paths is a
banded dynamic time warping whose cost is the distance from a point of one to the nearest
*segment* of the other (so that two samplings of one line are 0 apart, not half a spacing), taken
both ways and averaged. Each signature has two paths (its :func:`copy_print`): through the points
the verifier compares (resampled at 100 Hz and smoothed: a recording with jittered positions is
smoothed alike) and through the pad's own points (a recording re-timed unevenly gives exactly
those). A question is as close to a reference as the closer of the two says, each measured against
the references' own nearest pair of that kind (:func:`nearest_ratio`). A replay lies on its
reference's line and a genuine signature never does: on the four shared pen sets the closest
genuine question is well over 0.3 of its references' nearest pair away, and a replay, re-timed,
resampled, thinned or with positions disturbed, nearly always under it
(``models.policy.PATH_COPY_RATIO``; ``python -m tools.copy_check``).

Pure functions of arrays; the kernel is compiled by numba and cached on disk like the DTW's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from models.dtw import band_width

#: Points a path is resampled to along its length. 256 with the point-to-segment cost caught as
#: many replays as 1024 with a point-to-point one (README, "The copy check on the written path").
PATH_POINTS = 256
#: Half-width of the warping band, as a fraction of the path's points.
PATH_BAND = 0.1


#: The two paths of a :func:`copy_print`: through the verifier's points, through the pad's own.
PATH_KINDS: tuple[str, ...] = ("resampled", "as sampled")
#: Fewer references than this give too few pairs to know how close a customer's signatures come
#: (with two or three, genuine signatures fell under the line: a review, 2026-11-30); the path
#: check is then not made.
MIN_PATH_REFERENCES = 4


def written_path(xy: np.ndarray, points: int = PATH_POINTS) -> np.ndarray:
    """The pen-down positions ``xy`` (n, 2), in writing order, as ``points`` points evenly spaced
    along the line through them (strokes joined where the pen lifted: both sides join them
    alike), each axis centred and scaled on those points: a path that does not depend on when the
    points were sampled. A signature without extent is ``points`` zeros."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise ValueError(f"a path needs (n, 2) positions, n >= 1; got shape {xy.shape}")
    if points < 2:
        raise ValueError(f"a path needs at least 2 points, got {points}")
    if not np.all(np.isfinite(xy)):
        raise ValueError("a path's positions must be finite")
    steps = np.sqrt((np.diff(xy, axis=0) ** 2).sum(axis=1))
    along = np.concatenate(([0.0], np.cumsum(steps)))
    if not along[-1] > 0.0:
        return np.zeros((points, 2))
    u = np.linspace(0.0, along[-1], points)
    path = np.stack([np.interp(u, along, xy[:, 0]), np.interp(u, along, xy[:, 1])], axis=1)
    spread = path.std(axis=0)
    return np.ascontiguousarray((path - path.mean(axis=0)) / np.where(spread > 0.0, spread, 1.0))


def copy_print(resampled_xy: np.ndarray, sampled_xy: np.ndarray, points: int = PATH_POINTS) -> np.ndarray:
    """A signature's two paths (:data:`PATH_KINDS`), (2, points, 2): through the positions the
    verifier compares and through the pad's own pen-down positions, both in writing order."""
    return np.stack([written_path(resampled_xy, points), written_path(sampled_xy, points)])


@njit(cache=True, nogil=True)
def _segment_dtw(a: np.ndarray, b: np.ndarray, w: int, bound: float) -> float:
    """Banded DTW of the points of ``a`` against the segments of ``b`` (``b[j]`` to ``b[j + 1]``),
    the sum of the costs along the best path divided by the cells of both; ``inf`` as soon as it
    is sure to exceed ``bound`` (in the same units)."""
    n = a.shape[0]
    m = b.shape[0] - 1
    # Each segment's direction and inverse squared length, once (not once per cell).
    vx = np.empty(m)
    vy = np.empty(m)
    inv = np.empty(m)
    for j in range(m):
        vx[j] = b[j + 1, 0] - b[j, 0]
        vy[j] = b[j + 1, 1] - b[j, 1]
        length2 = vx[j] * vx[j] + vy[j] * vy[j]
        inv[j] = 1.0 / length2 if length2 > 0.0 else 0.0
    raw_bound = bound * (n + m)
    inf = np.inf
    prev = np.full(m + 1, inf)
    curr = np.full(m + 1, inf)
    prev[0] = 0.0
    for i in range(1, n + 1):
        centre = (i * m) // n
        lo = max(1, centre - w)
        hi = min(m, centre + w)
        for j in range(m + 1):
            curr[j] = inf
        px = a[i - 1, 0]
        py = a[i - 1, 1]
        row_min = inf
        for j in range(lo, hi + 1):
            ax = px - b[j - 1, 0]
            ay = py - b[j - 1, 1]
            t = (ax * vx[j - 1] + ay * vy[j - 1]) * inv[j - 1]
            if t < 0.0:
                t = 0.0
            elif t > 1.0:
                t = 1.0
            dx = ax - t * vx[j - 1]
            dy = ay - t * vy[j - 1]
            best = prev[j - 1]
            if prev[j] < best:
                best = prev[j]
            if curr[j - 1] < best:
                best = curr[j - 1]
            v = math.sqrt(dx * dx + dy * dy) + best
            curr[j] = v
            if v < row_min:
                row_min = v
        if row_min > raw_bound:
            return inf
        prev, curr = curr, prev
    return prev[m] / (n + m)


def path_distance(a: np.ndarray, b: np.ndarray, band: float = PATH_BAND, bound: float = math.inf) -> float:
    """How far apart two :func:`written_path` paths are (0 for two samplings of one line), in the
    units of their positions: the point-to-segment DTW both ways, averaged. ``inf`` once it is sure
    to exceed ``bound`` (the copy check needs no more)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != 2 or b.shape[1] != 2 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"paths must be (n, 2) with n >= 2, got {a.shape} and {b.shape}")
    # The band must span the diagonal whatever the lengths (equal for written_path's paths).
    wa = band_width(len(a), len(b) - 1, band)
    wb = band_width(len(b), len(a) - 1, band)
    # The average is under the bound only if each way is under twice the bound less the other.
    there = _segment_dtw(a, b, wa, 2.0 * bound)
    if not math.isfinite(there):
        return math.inf
    back = _segment_dtw(b, a, wb, 2.0 * bound - there)
    return float(0.5 * (there + back)) if math.isfinite(back) else math.inf


def nearest_pair(paths: Sequence[np.ndarray]) -> float:
    """The smallest :func:`path_distance` between two of ``paths`` (infinite with one)."""
    best = math.inf
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            best = min(best, path_distance(paths[i], paths[j]))
    return best


def nearest(query: np.ndarray, paths: Sequence[np.ndarray], bound: float = math.inf) -> float:
    """The :func:`path_distance` from ``query`` to the closest of ``paths`` (``inf`` when every one
    is sure to exceed ``bound``)."""
    if not paths:
        raise ValueError("no reference paths to compare with")
    best = math.inf
    for p in paths:
        best = min(best, path_distance(query, p, bound=min(bound, best)))
    return best


def print_pairs(prints: Sequence[np.ndarray]) -> np.ndarray:
    """For each kind of path, the nearest pair among the :func:`copy_print` of references."""
    return np.array([nearest_pair([p[k] for p in prints]) for k in range(len(PATH_KINDS))])


def nearest_ratio(query: np.ndarray, prints: Sequence[np.ndarray], pairs: np.ndarray,
                  bound: float = math.inf) -> float:
    """How close the :func:`copy_print` ``query`` comes to the closest of ``prints``, as a share of
    ``pairs`` (:func:`print_pairs` of the references), the smaller of the two kinds: 0 when it
    retraces one exactly, ``inf`` when every kind is sure to be at least ``bound`` (a share)."""
    if not prints:
        raise ValueError("no paths to compare with")
    best = math.inf
    for k in range(len(PATH_KINDS)):
        pair = float(pairs[k])
        d = nearest(query[k], [p[k] for p in prints], bound=min(bound, best) * pair)
        if d <= 0.0:
            return 0.0
        if math.isfinite(d) and 0.0 < pair < math.inf:
            best = min(best, d / pair)
    return best
