import math

import numpy as np
import pytest

from models.dtw import band_width, dtw_cells, dtw_distance, dtw_distances


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


@pytest.mark.parametrize("n, m, band", [(40, 40, 0.2), (33, 57, 0.15), (60, 21, 0.1), (1, 9, 0.2), (12, 1, 1.0)])
def test_column_groups_in_one_pass_are_the_separate_distances_bit_for_bit(n, m, band):
    # The classic verifier's five groups (overlapping, one out of column order) and a repeated column.
    rng = np.random.default_rng(n * 7 + m)
    a, b = rng.normal(size=(n, 14)), rng.normal(size=(m, 14)) * 1.3
    groups = [tuple(range(14)), (5, 12, 11), (0, 1, 7, 8, 9, 10), (3, 4, 5, 11, 12), (2, 13), (6, 6)]
    got = dtw_distances(a, b, groups, band)
    want = [dtw_distance(a[:, list(g)], b[:, list(g)], band) for g in groups]
    assert got.tolist() == want  # equal floats, not approximately
    assert got[0] == pytest.approx(plain_dtw(a, b, band_width(n, m, band)))


def test_column_groups_are_checked_before_the_unchecked_kernel_runs():
    a, b = np.zeros((5, 3)), np.zeros((6, 3))
    for groups, message in [([(0, 3)], "not a list of columns of a 3-column"), ([(-1,)], "3-column"),
                            ([()], "empty"), ([], "no column groups"), ([(0.5,)], "not a list of column numbers"),
                            ([("1",)], "not a list of column numbers")]:
        with pytest.raises(ValueError, match=message):
            dtw_distances(a, b, groups)
    with pytest.raises(ValueError, match="sequences must be"):
        dtw_distances(np.zeros((5, 2)), np.zeros((5, 3)), [(0,)])
    with pytest.raises(ValueError, match="empty"):
        dtw_distances(np.zeros((0, 2)), np.zeros((5, 2)), [(0,)])
    assert dtw_distances(a, b, [np.array([2, 0])]).tolist() == [0.0]  # numpy integers are columns too


_CACHE_PROBE = """
import json, sys
import numpy as np
from models.dtw import _group_kernel, dtw_distances, group_kernel_dir
groups = ((0, 1, 2), (2, 0))
a = np.arange(24.0).reshape(8, 3) % 5
got = dtw_distances(a, a[::-1] * 0.5, groups, 0.2)
stats = _group_kernel(groups).stats
print(json.dumps({"d": got.tolist(), "hits": sum(stats.cache_hits.values()), "dir": str(group_kernel_dir())}))
"""


def _probe(env: dict[str, str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_column_group_kernel_is_cached_on_disk_and_only_its_own_source_runs(tmp_path):
    from pathlib import Path

    from models.dtw import group_kernel_source

    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    first = _probe(env)
    folder = Path(first["dir"])
    assert folder == tmp_path / "numba" / "sigkiosk-dtw-groups"
    (source,) = folder.glob("groups_*.py")
    assert source.read_text() == group_kernel_source(((0, 1, 2), (2, 0)))
    second = _probe(env)
    assert first["hits"] == 0 and second["hits"] == 1          # the next process loads the machine code
    assert second["d"] == first["d"]
    # A module in the folder that is not what models.dtw writes is replaced before it is imported.
    source.write_text(source.read_text() + "\nraise SystemExit('tampered module ran')\n")
    third = _probe(env)
    assert third["d"] == first["d"]
    assert source.read_text() == group_kernel_source(((0, 1, 2), (2, 0)))


def test_a_column_group_kernel_without_a_writable_cache_is_compiled_in_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = _probe({"NUMBA_CACHE_DIR": str(blocker)})
    assert result["hits"] == 0 and len(result["d"]) == 2 and all(math.isfinite(x) for x in result["d"])
    a = np.arange(24.0).reshape(8, 3) % 5
    assert result["d"] == [dtw_distance(a[:, list(g)], (a[::-1] * 0.5)[:, list(g)], 0.2) for g in ((0, 1, 2), (2, 0))]
