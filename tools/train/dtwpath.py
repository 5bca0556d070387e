"""The optimal warping path of banded DTW (the same band and step costs as :mod:`models.dtw`).

Training differentiates DTW through its optimal path: with the path fixed, the DTW distance is a
sum of Euclidean distances between aligned embeddings, whose gradient is the (sub)gradient of hard
DTW itself. The path is found here in numpy/numba on the current embeddings, outside the graph;
the loss then gathers the aligned pairs in TensorFlow. No soft-DTW: the training distance is the
very distance the device computes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from models.dtw import _row_range, band_width


@njit(cache=True)
def _path_kernel(a: np.ndarray, b: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    n, d = a.shape
    m = b.shape[0]
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        lo, hi = _row_range(i, n, m, w)
        for j in range(lo, hi + 1):
            s = 0.0
            for k in range(d):
                diff = a[i - 1, k] - b[j - 1, k]
                s += diff * diff
            best = acc[i - 1, j - 1]
            if acc[i - 1, j] < best:
                best = acc[i - 1, j]
            if acc[i, j - 1] < best:
                best = acc[i, j - 1]
            acc[i, j] = np.sqrt(s) + best
    pi = np.empty(n + m, np.int64)
    pj = np.empty(n + m, np.int64)
    i, j, c = n, m, 0
    while i > 0 and j > 0:
        pi[c] = i - 1
        pj[c] = j - 1
        c += 1
        diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    return pi[:c][::-1].copy(), pj[:c][::-1].copy()


def dtw_path(a: np.ndarray, b: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return _path_kernel(a, b, band_width(len(a), len(b), band))
