"""Banded dynamic time warping, compiled with numba.

The kernel runs in two rolling rows, restricted to a Sakoe-Chiba band around the (length-scaled)
diagonal, and abandons early once every cell of a row exceeds a bound: when a query is compared
with several references only the best few distances matter. numba compiles it once per process
(and caches the machine code on disk beside the module, or in ``NUMBA_CACHE_DIR`` on a read-only
system).

:func:`dtw_distances` aligns the same two sequences on several groups of their columns at once,
each group on its own warping path (the classic verifier's distance takes two, its aspect checks
three more): one pass over the band, each column's squared difference computed once for every
group, the groups' recurrences side by side. Its kernel is written out for the groups it is given
(straight-line sums the compiler keeps in registers; a loop over index arrays was no faster than
separate calls) as a small module in numba's cache folder, so that its machine code is cached on
disk like the kernel above.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import operator
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

log = logging.getLogger(__name__)

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


def _sequences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, d) and (m, d) float64 C-contiguous arrays, or a ValueError saying what is wrong."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"sequences must be (n, d) and (m, d), got {a.shape} and {b.shape}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("cannot align an empty sequence")
    return a, b


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
    a, b = _sequences(a, b)
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


def dtw_distances(
    a: np.ndarray,
    b: np.ndarray,
    groups: Sequence[Sequence[int]],
    band: float = DEFAULT_BAND,
) -> np.ndarray:
    """DTW distances of ``a`` and ``b`` on each group of their columns, each on its own warping
    path, in one pass: ``out[g]`` is, bit for bit, ``dtw_distance(a[:, groups[g]], b[:, groups[g]],
    band)`` (the same sums in the same order), at about half the time of the separate calls for
    the classic verifier's five groups. No early abandoning: every group runs to the end."""
    a, b = _sequences(a, b)
    key = _group_key(groups, a.shape[1])
    raw = _group_kernel(key)(a, b, band_width(len(a), len(b), band))
    return np.asarray(raw / (len(a) + len(b)), dtype=np.float64)


def _group_key(groups: Sequence[Sequence[int]], d: int) -> tuple[tuple[int, ...], ...]:
    """The groups as plain ints, checked: the generated kernel indexes columns unchecked."""
    key = []
    for g in groups:
        try:
            cols = tuple(operator.index(c) for c in g)
        except TypeError:
            raise ValueError(f"column group {g!r} is not a list of column numbers") from None
        if not cols:
            raise ValueError("a column group is empty")
        if not all(0 <= c < d for c in cols):
            raise ValueError(f"column group {list(cols)} is not a list of columns of a {d}-column sequence")
        key.append(cols)
    if not key:
        raise ValueError("no column groups")
    return tuple(key)


_GROUP_MODULE = '''"""Written by models.dtw for the column groups {groups}: rewritten whenever it differs from what
models.dtw writes, never edited."""

import math

import numpy as np
from numba import njit

from models.dtw import _row_range


@njit(cache={cache}, nogil=True)
def kernel(a, b, w):
    n = a.shape[0]
    m = b.shape[0]
    inf = np.inf
    prev = np.full((m + 1, {G}), inf)
    curr = np.full((m + 1, {G}), inf)
    prev[0, :] = 0.0
    plo, phi = 0, 0
    for i in range(1, n + 1):
        lo, hi = _row_range(i, n, m, w)
        for j in range(min(lo, plo) - 1 if i > 1 else 0, max(hi, phi) + 1):
            for g in range({G}):
                curr[j, g] = inf
        for j in range(lo, hi + 1):
{squares}
{steps}
        prev, curr = curr, prev
        plo, phi = lo, hi
    return prev[m].copy()
'''

_GROUP_STEP = """            best = prev[j - 1, {g}]
            if prev[j, {g}] < best:
                best = prev[j, {g}]
            if curr[j - 1, {g}] < best:
                best = curr[j - 1, {g}]
            curr[j, {g}] = math.sqrt({total}) + best"""

_Kernel = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def group_kernel_source(groups: tuple[tuple[int, ...], ...], *, cache: bool = True) -> str:
    """The module :func:`dtw_distances` compiles for ``groups`` (checked ints: nothing else
    reaches the source), its machine code cached on disk by numba or not. Each sum starts at 0.0
    and adds its columns in the group's order, as _dtw_kernel's loop does, so the distances are
    the same floating-point numbers."""
    used = sorted({c for g in groups for c in g})
    squares = "\n".join(f"            e{c} = a[i - 1, {c}] - b[j - 1, {c}]\n            s{c} = e{c} * e{c}" for c in used)
    steps = "\n".join(_GROUP_STEP.format(g=gi, total=" + ".join(["0.0", *(f"s{c}" for c in g)]))
                      for gi, g in enumerate(groups))
    return _GROUP_MODULE.format(groups=groups, cache=cache, G=len(groups), squares=squares, steps=steps)


def group_kernel_dir() -> Path:
    """Where the generated modules (and, beside them, numba's cache of their machine code) live:
    under ``NUMBA_CACHE_DIR`` when it is set (the systemd unit sets it), else beside this module
    as numba's own cache is."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    return Path(root) / "sigkiosk-dtw-groups" if root else Path(__file__).resolve().parent / "__pycache__" / "dtw-groups"


@functools.lru_cache(maxsize=16)
def _group_kernel(groups: tuple[tuple[int, ...], ...]) -> _Kernel:
    # Written to a file so that numba can cache the machine code on disk, as it does
    # _dtw_kernel's: compiling takes a second or two here, paid once per machine, not per start.
    # A file that differs from the source (stale, damaged or tampered with) is replaced before it
    # is imported, so only what this function wrote runs; the file is not rewritten when it is
    # already right, because numba's cache is keyed on its modification time.
    source = group_kernel_source(groups)
    name = "groups_" + hashlib.sha256(source.encode()).hexdigest()[:20]
    folder = group_kernel_dir()
    path = folder / f"{name}.py"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != source.encode():
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(f"models._dtw_{name}", path)
        if spec is None or spec.loader is None:
            raise OSError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs: numba's cache finds the kernel's module again by this name.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except OSError as exc:
        # Nowhere to write (a read-only system without NUMBA_CACHE_DIR): compiled for this process.
        log.warning("DTW column-group kernel not cached on disk (%s); compiling it in memory", exc)
        namespace: dict[str, Any] = {}
        exec(compile(group_kernel_source(groups, cache=False), "<dtw groups>", "exec"),
             namespace)  # noqa: S102 - the source is group_kernel_source's: integers only
        kernel: _Kernel = namespace["kernel"]
        return kernel
    kernel = module.kernel
    return kernel


def dtw_matrix(queries: list[np.ndarray], refs: list[np.ndarray], band: float = DEFAULT_BAND) -> np.ndarray:
    """Distances of every query to every reference, shape ``(len(queries), len(refs))``."""
    out = np.empty((len(queries), len(refs)), dtype=np.float64)
    for i, q in enumerate(queries):
        for j, r in enumerate(refs):
            out[i, j] = dtw_distance(q, r, band)
    return out
