"""Isolation Forest (Liu, Ting and Zhou, 2008) in numpy, for the kiosk's per-customer anomaly check.

Why not scikit-learn's: ``import sklearn`` alone adds about 85 MB of resident memory (it pulls in
SciPy, joblib, threadpoolctl), which took the daemon from about 200 MB to 286 MB, over its 250 MB
budget; the forest a kiosk fits on five reference vectors is a few dozen lines. The algorithm is
the paper's and scikit-learn's (the tests check that both rank the same points alike):

* each tree grows on ``max_samples`` points drawn without replacement, to depth
  ``ceil(log2(max_samples))``; a node splits on a feature drawn among those that are not constant
  there, at a threshold drawn uniformly between their minimum and maximum (``x <= t`` goes left);
* a point's path length is its leaf's depth plus ``c(n)`` for the ``n`` training points left
  there (the average depth of an unbuilt subtree); its anomaly score is
  ``s = 2 ** (-E[path length] / c(max_samples))``: about 0.5 or less for a point like the training
  points, towards 1 for an isolated one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: int | np.ndarray) -> np.ndarray:
    """``c(n)``: the average path length of an unsuccessful search in a binary search tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class _Tree:
    # Flat arrays, node 0 the root; a leaf has feature -1.
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    depth: np.ndarray
    size: np.ndarray


def _grow(x: np.ndarray, rng: np.random.Generator, max_depth: int) -> _Tree:
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    depth: list[int] = []
    size: list[int] = []
    stack: list[tuple[int, np.ndarray, int]] = []

    def new(rows: np.ndarray, d: int) -> int:
        feature.append(-1)
        threshold.append(0.0)
        left.append(-1)
        right.append(-1)
        depth.append(d)
        size.append(len(rows))
        stack.append((len(feature) - 1, rows, d))
        return len(feature) - 1

    new(np.arange(len(x)), 0)
    while stack:
        node, rows, d = stack.pop()
        if d >= max_depth or len(rows) <= 1:
            continue
        pts = x[rows]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        usable = np.flatnonzero(hi > lo)
        if usable.size == 0:
            continue
        f = int(usable[rng.integers(usable.size)])
        t = float(rng.uniform(lo[f], hi[f]))
        go_left = pts[:, f] <= t
        feature[node], threshold[node] = f, t
        left[node] = new(rows[go_left], d + 1)
        right[node] = new(rows[~go_left], d + 1)
    return _Tree(np.array(feature), np.array(threshold), np.array(left), np.array(right), np.array(depth),
                 np.array(size))


@dataclass(frozen=True)
class _Packed:
    """All trees' nodes in flat arrays (each tree's children offset to the whole forest's index),
    for walking every tree at once: a Python loop over 100 trees took 7 ms of a paper verification
    of about 30, and six small arrays a tree took a cached customer's forest to about 0.2 MB.
    ``length``: a leaf's path length, ``depth + c(size)``."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    length: np.ndarray


def _pack(forest: list[_Tree]) -> _Packed:
    starts = np.cumsum([0] + [len(t.feature) for t in forest[:-1]]).astype(np.int64)
    # A leaf's children stay -1; a walk never reads them.
    return _Packed(
        roots=starts,
        feature=np.concatenate([t.feature for t in forest]),
        threshold=np.concatenate([t.threshold for t in forest]),
        left=np.concatenate([np.where(t.left >= 0, t.left + s, -1) for t, s in zip(forest, starts)]),
        right=np.concatenate([np.where(t.right >= 0, t.right + s, -1) for t, s in zip(forest, starts)]),
        length=np.concatenate([t.depth + average_path_length(t.size) for t in forest]),
    )


def _forest_path_lengths(forest: _Packed, x: np.ndarray) -> np.ndarray:
    """Each tree's path length of each row of ``x``: (trees, rows), the same numbers as a walk of
    each tree in turn (the same comparisons, each leaf's length computed alike)."""
    node = np.repeat(forest.roots[:, None], len(x), axis=1)
    rows = np.broadcast_to(np.arange(len(x))[None, :], node.shape)
    f = forest.feature[node]
    active = f >= 0
    while active.any():
        at, r, fa = node[active], rows[active], f[active]
        node[active] = np.where(x[r, fa] <= forest.threshold[at], forest.left[at], forest.right[at])
        f = forest.feature[node]
        active = f >= 0
    return forest.length[node]


class IsolationForest:
    """``fit`` on the rows of ``x``; ``score`` rows in (0, 1] (higher = more isolated)."""

    def __init__(self, trees: int = 100, max_samples: int = 256, seed: int = 0) -> None:
        if trees < 1 or max_samples < 2:
            raise ValueError("need at least one tree and two samples per tree")
        self.trees = trees
        self.max_samples = max_samples
        self.seed = seed
        self._forest: _Packed | None = None
        self._psi = 0

    def fit(self, x: np.ndarray) -> "IsolationForest":
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(f"expected at least 2 finite rows to fit, got shape {x.shape}")
        rng = np.random.default_rng(self.seed)
        self._psi = min(self.max_samples, len(x))
        max_depth = math.ceil(math.log2(self._psi))
        self._forest = _pack([
            _grow(x[rng.choice(len(x), size=self._psi, replace=False)], rng, max_depth) for _ in range(self.trees)
        ])
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if self._forest is None:
            raise RuntimeError("fit the forest first")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        mean_path = np.mean(_forest_path_lengths(self._forest, x), axis=0)
        return np.power(2.0, -mean_path / float(average_path_length(self._psi)))
