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


def _path_lengths(tree: _Tree, x: np.ndarray) -> np.ndarray:
    node = np.zeros(len(x), dtype=np.int64)
    active = tree.feature[node] >= 0
    while active.any():
        idx = np.flatnonzero(active)
        f = tree.feature[node[idx]]
        goes_left = x[idx, f] <= tree.threshold[node[idx]]
        node[idx] = np.where(goes_left, tree.left[node[idx]], tree.right[node[idx]])
        active = tree.feature[node] >= 0
    return tree.depth[node] + average_path_length(tree.size[node])


class IsolationForest:
    """``fit`` on the rows of ``x``; ``score`` rows in (0, 1] (higher = more isolated)."""

    def __init__(self, trees: int = 100, max_samples: int = 256, seed: int = 0) -> None:
        if trees < 1 or max_samples < 2:
            raise ValueError("need at least one tree and two samples per tree")
        self.trees = trees
        self.max_samples = max_samples
        self.seed = seed
        self._forest: list[_Tree] = []
        self._psi = 0

    def fit(self, x: np.ndarray) -> "IsolationForest":
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(f"expected at least 2 finite rows to fit, got shape {x.shape}")
        rng = np.random.default_rng(self.seed)
        self._psi = min(self.max_samples, len(x))
        max_depth = math.ceil(math.log2(self._psi))
        self._forest = [
            _grow(x[rng.choice(len(x), size=self._psi, replace=False)], rng, max_depth) for _ in range(self.trees)
        ]
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if not self._forest:
            raise RuntimeError("fit the forest first")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        mean_path = np.mean([_path_lengths(t, x) for t in self._forest], axis=0)
        return np.power(2.0, -mean_path / float(average_path_length(self._psi)))
