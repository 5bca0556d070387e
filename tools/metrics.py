"""Verification error rates as pure functions of score arrays.

Convention: a score is a *distance*: a sample is accepted when its score is at most the threshold.
False acceptance (FAR) counts impostor scores accepted; false rejection (FRR) genuine scores
rejected. Rates are fractions in 0..1; the evaluator reports percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorCurve:
    """FAR and FRR at every distinct threshold (ascending), from 'accept nothing' to 'accept all'."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def _check(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ValueError(f"need genuine and impostor scores, got {g.size} and {i.size}")
    if np.isnan(g).any() or np.isnan(i).any():
        raise ValueError("scores contain NaN")
    return g, i


def error_curve(genuine: np.ndarray, impostor: np.ndarray) -> ErrorCurve:
    g, i = _check(genuine, impostor)
    thr = np.unique(np.concatenate((g, i)))
    gs, is_ = np.sort(g), np.sort(i)
    far = np.searchsorted(is_, thr, side="right") / is_.size
    frr = 1.0 - np.searchsorted(gs, thr, side="right") / gs.size
    # Prepend the threshold below every score: nothing accepted.
    thr = np.concatenate(([-np.inf], thr))
    far = np.concatenate(([0.0], far))
    frr = np.concatenate(([1.0], frr))
    return ErrorCurve(thresholds=thr, far=far, frr=frr)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """The EER and a threshold that attains it.

    FAR rises and FRR falls as the threshold grows; between the last threshold where FRR > FAR
    and the next one the two curves cross. The EER is where the straight lines joining those two
    operating points meet (the usual convex interpolation), so it is exact for separable scores
    (0) and for identical distributions (0.5).
    """
    c = error_curve(genuine, impostor)
    diff = c.frr - c.far
    k = int(np.flatnonzero(diff > 0)[-1]) if (diff > 0).any() else 0
    if k + 1 >= len(diff):
        return float(c.frr[k]), float(c.thresholds[k])
    d0, d1 = diff[k], diff[k + 1]
    a = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = (1 - a) * c.far[k] + a * c.far[k + 1]
    # The accepting threshold at the crossing: the upper point's when it is past half-way.
    thr = c.thresholds[k + 1]
    return float(eer), float(thr)


def frr_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float = 0.01) -> float:
    """FRR at the most permissive threshold whose FAR does not exceed ``far``."""
    c = error_curve(genuine, impostor)
    ok = np.flatnonzero(c.far <= far)
    return float(c.frr[ok[-1]])


def user_mean_eer(per_user: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over users of each user's own EER (their own threshold: not deployable, for reference)."""
    eers = [equal_error_rate(g, i)[0] for g, i in per_user.values() if len(g) and len(i)]
    if not eers:
        raise ValueError("no user has both genuine and impostor scores")
    return float(np.mean(eers))
