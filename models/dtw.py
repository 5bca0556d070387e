"""Banded dynamic time warping, compiled with numba.

The kernel runs in two rolling rows, restricted to a Sakoe-Chiba band around the (length-scaled)
diagonal, and abandons early once every cell of a row exceeds a bound: when a query is compared
with several references only the best few distances matter. numba compiles it once per process
(and caches the machine code on disk beside the module, or in ``NUMBA_CACHE_DIR`` on a read-only
system).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Default half-width of the band, as a fraction of the longer sequence.
DEFAULT_BAND = 0.15


@njit(cache=True, nogil=True)
def _row_range(i: int, n: int, m: int, w: int) -> tuple[int, int]:
    """Columns (1-based, inclusive) of row ``i`` inside the band.

    Cell (i, j) is inside when ``|(i-1)/(n-1) - (j-1)/(m-1)| <= w / (L-1)``, L the longer length:
    the band follows the diagonal of the rectangle and is symmetric in the two sequences, so
    d(a, b) == d(b, a). Evaluated in integers so the edges never depend on rounding.
    """
    if n == 1 or m == 1:
        return 1, m
    big = max(n, m) - 1
    a = (i - 1) * (m - 1)
    s = (w * (n - 1) * (m - 1)) // big
    lo = -((s - a) // (n - 1)) + 1  # ceil((a - s) / (n - 1)) + 1
    hi = (a + s) // (n - 1) + 1
    return max(1, lo), min(m, hi)


@njit(cache=True, nogil=True)
def _dtw_kernel(a: np.ndarray, b: np.ndarray, w: int, bound: float) -> tuple[float, int]:
    n, d = a.shape
    m = b.shape[0]
    inf = np.inf
    prev = np.full(m + 1, inf)
    curr = np.full(m + 1, inf)
    prev[0] = 0.0
    cells = 0
    plo, phi = 0, 0
    for i in range(1, n + 1):
        lo, hi = _row_range(i, n, m, w)
        # Only the cells the previous row wrote (and its left neighbour) need clearing.
        for j in range(min(lo, plo) - 1 if i > 1 else 0, max(hi, phi) + 1):
            curr[j] = inf
        row_min = inf
        for j in range(lo, hi + 1):
            acc = 0.0
            for k in range(d):
                diff = a[i - 1, k] - b[j - 1, k]
                acc += diff * diff
            cost = math.sqrt(acc)
            best = prev[j - 1]
            if prev[j] < best:
                best = prev[j]
            if curr[j - 1] < best:
                best = curr[j - 1]
            v = cost + best
            curr[j] = v
            if v < row_min:
                row_min = v
        cells += hi - lo + 1
        if row_min > bound:
            return inf, cells
        prev, curr = curr, prev
        plo, phi = lo, hi
    return float(prev[m]), cells


def band_width(n: int, m: int, band: float) -> int:
    """Half-width in cells of the longer sequence: the fraction ``band`` of it, and never so
    narrow that no warping path fits (the band must span the ratio of the two lengths)."""
    longer, shorter = max(n, m), max(1, min(n, m))
    return max(1, int(math.ceil(band * longer)), -(-longer // shorter))


def dtw_distance(
    a: np.ndarray,
    b: np.ndarray,
    band: float = DEFAULT_BAND,
    bound: float = math.inf,
) -> float:
    """DTW distance between two sequences of feature vectors, divided by ``len(a) + len(b)``.

    ``bound`` is in the same normalised units: when the distance is sure to exceed it the
    computation stops and returns ``inf``.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"sequences must be (n, d) and (m, d), got {a.shape} and {b.shape}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("cannot align an empty sequence")
    norm = len(a) + len(b)
    raw_bound = bound * norm if math.isfinite(bound) else math.inf
    dist, _ = _dtw_kernel(a, b, band_width(len(a), len(b), band), raw_bound)
    return float(dist / norm)


def dtw_cells(a: np.ndarray, b: np.ndarray, band: float = DEFAULT_BAND) -> int:
    """How many cells the banded kernel evaluates for these two sequences (for benchmarks)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    _, cells = _dtw_kernel(a, b, band_width(len(a), len(b), band), math.inf)
    return int(cells)


def dtw_matrix(queries: list[np.ndarray], refs: list[np.ndarray], band: float = DEFAULT_BAND) -> np.ndarray:
    """Distances of every query to every reference, shape ``(len(queries), len(refs))``."""
    out = np.empty((len(queries), len(refs)), dtype=np.float64)
    for i, q in enumerate(queries):
        for j, r in enumerate(refs):
            out[i, j] = dtw_distance(q, r, band)
    return out
