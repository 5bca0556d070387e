"""Graph masks of the TS-GATR seed paper, built in numpy (on the device too).

Two graphs over the points of a (resampled) signature:

* the **k-step graph** links each point to the points at most ``k`` steps before or after it
  *within the same stroke*: local dynamics along the pen path, never across a pen lift;
* the **k-NN graph** links each point to its ``k`` nearest points by position (x, y), whatever
  their order: strokes that cross or retrace each other share context, as the ink does.

Both include the point itself. The model takes them as *additive* attention masks: 0 for a
neighbour and :data:`MASK_VALUE` otherwise. A small value (−10, not −1e9) because the int8
softmax on the device has one scale for the whole row: a huge negative would crush every real
logit to one quantisation step (DESIGN.md, on-device inference). Padding rows and columns are
masked the same way.
"""

from __future__ import annotations

import numpy as np

#: Additive mask value for "not a neighbour": exp(−10) ≈ 4.5e−5, effectively zero weight.
MASK_VALUE = -10.0


def step_adjacency(stroke: np.ndarray, k: int) -> np.ndarray:
    """Boolean (n, n): i ~ j when |i − j| ≤ k and both points lie in the same stroke."""
    stroke = np.asarray(stroke)
    n = len(stroke)
    if k < 0:
        raise ValueError(f"k-step must be >= 0, got {k}")
    idx = np.arange(n)
    near = np.abs(idx[:, None] - idx[None, :]) <= k
    return near & (stroke[:, None] == stroke[None, :])


def knn_adjacency(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Boolean (n, n): row i marks point i itself and its ``k`` nearest other points by position.

    Ties are broken by index (a stable sort), so the graph is deterministic. Not symmetric in
    general: attention reads row i as "whom point i listens to".
    """
    pts = np.column_stack((np.asarray(x, np.float64), np.asarray(y, np.float64)))
    n = len(pts)
    if k < 0:
        raise ValueError(f"k of k-NN must be >= 0, got {k}")
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, -1.0)  # self first, always included
    order = np.argsort(d2, axis=1, kind="stable")[:, : min(k + 1, n)]
    adj = np.zeros((n, n), dtype=bool)
    adj[np.arange(n)[:, None], order] = True
    return adj


def additive_mask(adj: np.ndarray, length: int) -> np.ndarray:
    """A padded (length, length) float32 mask from an (n, n) adjacency, n ≤ length.

    Padding rows get their diagonal unmasked so that their softmax stays well defined (their
    outputs are zeroed by the length mask anyway).
    """
    n = adj.shape[0]
    if n > length:
        raise ValueError(f"graph of {n} points does not fit a mask of length {length}")
    m = np.full((length, length), MASK_VALUE, dtype=np.float32)
    m[:n, :n][adj] = 0.0
    pad = np.arange(n, length)
    m[pad, pad] = 0.0
    return m
