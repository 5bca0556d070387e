"""Per-user normalisation of DTW distances, so that one global threshold works for every writer.

Writers differ in how consistently they sign: a distance that is large for a very consistent
writer is ordinary for an erratic one. As DsDTW does, the query's minimum and mean distance to the
references are divided by the same statistics measured among the references themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def pairwise(items: Sequence[T], distance: Callable[[T, T], float]) -> np.ndarray:
    """The symmetric matrix of ``distance`` between every two items (zero diagonal), each pair once."""
    k = len(items)
    d = np.zeros((k, k), dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            d[i, j] = d[j, i] = distance(items[i], items[j])
    return d


@dataclass(frozen=True)
class ReferenceStats:
    """Within-reference statistics of one user's template.

    ``min_dist``: mean over references of each one's distance to its nearest other reference.
    ``mean_dist``: mean over references of each one's mean distance to the others.
    ``pairs``: how many reference pairs they were measured on (0 with a single reference).
    """

    min_dist: float
    mean_dist: float
    pairs: int


@dataclass(frozen=True)
class NormalisationPrior:
    """Population values of the reference statistics, fitted on training writers.

    They stand in for a user's own statistics when there are too few references to measure them
    (one reference has none; two give a single noisy pair), weighted like ``strength`` pairs.
    """

    min_dist: float
    mean_dist: float
    strength: float = 2.0


def reference_stats(ref_distances: np.ndarray) -> ReferenceStats:
    """Statistics of a symmetric K x K matrix of distances among one user's references."""
    d = np.asarray(ref_distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"expected a square distance matrix, got shape {d.shape}")
    k = d.shape[0]
    if k < 2:
        return ReferenceStats(min_dist=float("nan"), mean_dist=float("nan"), pairs=0)
    off = d[~np.eye(k, dtype=bool)].reshape(k, k - 1)
    return ReferenceStats(
        min_dist=float(off.min(axis=1).mean()),
        mean_dist=float(off.mean(axis=1).mean()),
        pairs=k * (k - 1) // 2,
    )


def shrink(stats: ReferenceStats, prior: NormalisationPrior) -> tuple[float, float]:
    """The user's statistics pulled towards the population prior in proportion to the evidence."""
    if stats.pairs == 0:
        return prior.min_dist, prior.mean_dist
    w = stats.pairs / (stats.pairs + prior.strength)
    return (
        w * stats.min_dist + (1 - w) * prior.min_dist,
        w * stats.mean_dist + (1 - w) * prior.mean_dist,
    )


def normalised_distance(
    query_distances: np.ndarray, stats: ReferenceStats, prior: NormalisationPrior
) -> float:
    """The user-normalised distance of a query: about 1 for a typical genuine, larger for forgeries."""
    q = np.asarray(query_distances, dtype=np.float64)
    if q.ndim != 1 or len(q) == 0:
        raise ValueError("need the query's distance to at least one reference")
    ref_min, ref_mean = shrink(stats, prior)
    return float(0.5 * (q.min() / ref_min + q.mean() / ref_mean))


@dataclass(frozen=True, eq=False)
class ScoredReferences:
    """One user's references as a verifier compares them (feature sequences or embeddings), with
    the distances among them and their statistics. The classic, learned and image verifiers all
    keep their references in this one type; each brings its own ``distance``."""

    references: tuple[np.ndarray, ...]
    stats: ReferenceStats
    ref_distances: np.ndarray

    @classmethod
    def measure(cls, references: Sequence[np.ndarray], distance: Callable[[np.ndarray, np.ndarray], float]
                ) -> "ScoredReferences":
        if not references:
            raise ValueError("a template needs at least one reference")
        return cls.from_distances(references, pairwise(references, distance))

    @classmethod
    def from_distances(cls, references: Sequence[np.ndarray], ref_distances: np.ndarray) -> "ScoredReferences":
        """From the K x K distances among ``references``, already measured."""
        if not references:
            raise ValueError("a template needs at least one reference")
        d = np.asarray(ref_distances, dtype=np.float64)
        if d.shape != (len(references), len(references)):
            raise ValueError(f"{len(references)} references need a {len(references)} x {len(references)} "
                             f"distance matrix, got shape {d.shape}")
        return cls(tuple(references), reference_stats(d), d)

    @property
    def nearest_pair(self) -> float:
        """The smallest distance between two references (infinite with one): a query much closer
        than this to a reference is a copy of it (see ``models.policy.DecisionPolicy.is_copy``)."""
        d = self.ref_distances
        return float(d[~np.eye(len(d), dtype=bool)].min()) if len(d) > 1 else float("inf")
