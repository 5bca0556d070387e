import math

import numpy as np
import pytest

from models.dtw import band_width, dtw_cells, dtw_distance


def plain_dtw(a, b, w=None):
    """Textbook DTW (full matrix, optional Sakoe-Chiba band on the scaled diagonal)."""
    n, m = len(a), len(b)
    D = np.full((n + 1, m + 1), np.inf)
    D[0, 0] = 0
    big = max(n, m) - 1
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if w is not None and not (
                n == 1 or m == 1 or abs((i - 1) / (n - 1) - (j - 1) / (m - 1)) <= w / big + 1e-12
            ):
                continue
            cost = np.linalg.norm(a[i - 1] - b[j - 1])
            D[i, j] = cost + min(D[i - 1, j - 1], D[i - 1, j], D[i, j - 1])
    return D[n, m] / (n + m)


@pytest.mark.parametrize("n, m", [(30, 30), (25, 40), (40, 23), (1, 5), (7, 1), (3, 60)])
def test_full_band_equals_plain_dtw(n, m):
    rng = np.random.default_rng(n * 100 + m)
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    assert dtw_distance(a, b, band=1.0) == pytest.approx(plain_dtw(a, b))


@pytest.mark.parametrize("n, m, band", [(50, 50, 0.1), (45, 60, 0.15), (80, 30, 0.05), (30, 80, 0.05), (5, 90, 0.01)])
def test_banded_equals_plain_dtw_with_the_same_band(n, m, band):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(m, 4))
    w = band_width(n, m, band)
    got = dtw_distance(a, b, band=band)
    assert math.isfinite(got)
    assert got == pytest.approx(plain_dtw(a, b, w))
    assert got >= plain_dtw(a, b) - 1e-12  # a band can only make the best path worse
    assert dtw_cells(a, b, band) < n * m


def test_identity_symmetry_and_warping_invariance():
    rng = np.random.default_rng(1)
    a = np.cumsum(rng.normal(size=(60, 2)), axis=0)
    b = np.repeat(a, 2, axis=0)  # the same path, sampled twice as slowly
    assert dtw_distance(a, a) == 0.0
    assert dtw_distance(a, b, band=1.0) == pytest.approx(0.0)
    c = rng.normal(size=(70, 2))
    assert dtw_distance(a, c) == pytest.approx(dtw_distance(c, a))


def test_early_abandoning():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + 2.0
    exact = dtw_distance(a, b)
    assert dtw_distance(a, b, bound=exact * 1.01) == pytest.approx(exact)
    assert dtw_distance(a, b, bound=exact * 0.5) == math.inf


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="sequences must be"):
        dtw_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="empty"):
        dtw_distance(np.zeros((0, 2)), np.zeros((5, 2)))
