"""Site self-calibration: a kiosk moves its threshold towards a target FRR from its own customers.

The shipped threshold was chosen on other writers and other tablets (the cross-device table). A
kiosk knows, with no forgery at all, how its own customers' genuine signatures score: each
enrolled reference questioned against the customer's *other* references (leave-one-out, LOO).
:func:`propose` turns those genuine scores into a threshold:

1. the ``1 - target_frr`` quantile of the LOO scores, every customer weighted equally (a customer
   with 10 references does not count twice as much as one with 5);
2. plus ``loo_offset``: a LOO score is measured with K - 1 references of the same session, a real
   query with K references on another day, so LOO scores run lower than what the kiosk will see;
   the offset is measured on training writers (``tools/site_calibration.py``, README);
3. shrunk towards the shipped threshold by the evidence: weight ``n / (n + strength)`` for ``n``
   customers (few customers' quantile is noise);
4. clamped to ``[lower, upper]`` (set by the bank), and not moved at all below ``min_customers``.

Genuine scores say nothing about forgeries, so the bounds are what keeps FAR in check: the
calibration only trades within a range the bank accepted. It never changes features or reference
sets: :class:`SiteThreshold` wraps a verifier and re-decides its verdict with the same
:class:`models.policy.DecisionPolicy` at another threshold, so the copy check, rhythm rule and
match-rate mapping stay the verifier's.

Pure and numpy-only; the kiosk keeps the scores, applies and reports the move (``kiosk.calibration``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.policy import DecisionPolicy, Verdict
from models.trajectory import Trajectory
from models.verification import PenVerifier, ReferenceSet

#: Fewest references a customer needs for LOO scores: K - 1 >= 2 left to normalise against.
MIN_REFERENCES = 3


def loo_scores(verifier: PenVerifier, references: Sequence[Trajectory]) -> np.ndarray:
    """Each reference's score (``Verdict.distance``: the policy's own scale, lower is more genuine)
    questioned against the other references, enrolled with ``verifier``. Empty with fewer than
    :data:`MIN_REFERENCES` references."""
    refs = list(references)
    if len(refs) < MIN_REFERENCES:
        return np.zeros(0)
    out = []
    for i, q in enumerate(refs):
        others = refs[:i] + refs[i + 1:]
        out.append(verifier.verify(verifier.enroll(others), q).distance)
    return np.array(out, dtype=np.float64)


@dataclass(frozen=True)
class CalibrationSettings:
    """What the bank allows (``[calibration]`` of the kiosk; see the module docstring)."""

    target_frr: float
    lower: float
    upper: float
    min_customers: int = 10
    strength: float = 10.0     # pseudo-customers at the shipped threshold (the shrinkage)
    loo_offset: float = 0.0    # added to the LOO quantile (LOO scores run low; measured)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_frr < 0.5:
            raise ValueError(f"target_frr must be in (0, 0.5), got {self.target_frr}")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)) or self.lower > self.upper:
            raise ValueError(f"bounds [{self.lower}, {self.upper}] are not an interval")
        if self.min_customers < 1:
            raise ValueError(f"min_customers must be at least 1, got {self.min_customers}")
        if self.strength < 0 or not math.isfinite(self.loo_offset):
            raise ValueError("strength must be >= 0 and loo_offset finite")


@dataclass(frozen=True)
class Calibration:
    """A proposed threshold and why: ``moved`` is False when it stays the shipped one."""

    threshold: float
    shipped: float
    customers: int
    scores: int
    quantile: float | None     # the LOO quantile at the target (before offset, shrinkage, bounds)
    weight: float              # the shrinkage weight given to the site's quantile
    clamped: bool
    reason: str                # "calibrated", "too_few_customers", "clamped"

    @property
    def moved(self) -> bool:
        return self.threshold != self.shipped

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def weighted_quantile(groups: Sequence[np.ndarray], q: float) -> float:
    """The ``q`` quantile of the pooled values, each group's values weighing 1 in total."""
    vals = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups])
    w = np.concatenate([np.full(len(g), 1.0 / len(g)) for g in groups])
    order = np.argsort(vals, kind="stable")
    vals, w = vals[order], w[order]
    cdf = np.cumsum(w) / w.sum()
    # The smallest value whose share at or below it reaches q (a step function, like FRR itself).
    return float(vals[min(int(np.searchsorted(cdf, q - 1e-12)), len(vals) - 1)])


def propose(scores: Mapping[str, np.ndarray] | Sequence[np.ndarray], shipped: float,
            settings: CalibrationSettings) -> Calibration:
    """The threshold a site with these customers' LOO genuine ``scores`` would run (see the
    module docstring); ``shipped`` is the verifier's own. Non-finite scores are dropped."""
    groups = list(scores.values()) if isinstance(scores, Mapping) else list(scores)
    groups = [a[np.isfinite(a)] for a in (np.asarray(g, dtype=np.float64) for g in groups)]
    groups = [g for g in groups if len(g)]
    n = len(groups)
    total = int(sum(len(g) for g in groups))
    if n < settings.min_customers:
        return Calibration(shipped, shipped, n, total, None, 0.0, False, "too_few_customers")
    q = weighted_quantile(groups, 1.0 - settings.target_frr)
    weight = n / (n + settings.strength)
    raw = shipped + weight * (q + settings.loo_offset - shipped)
    thr = min(max(raw, settings.lower), settings.upper)
    clamped = thr != raw
    return Calibration(round(thr, 6), shipped, n, total, q, weight, clamped, "clamped" if clamped else "calibrated")


class SiteThreshold:
    """A pen verifier decided at a site's threshold: the wrapped verifier's verdict, decided again
    by its own policy with only the threshold changed. Reference sets are the wrapped verifier's
    (``enroll`` and the set checks are its own), so moving the threshold never rebuilds them.
    :meth:`set_threshold` takes effect from the next verification (one attribute assignment)."""

    def __init__(self, inner: PenVerifier, threshold: float | None = None) -> None:
        self.inner = inner
        self.shipped = inner.policy.threshold
        self._policy = inner.policy if threshold is None else dataclasses.replace(inner.policy, threshold=threshold)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def policy(self) -> DecisionPolicy:
        return self._policy

    @property
    def threshold(self) -> float:
        return self._policy.threshold

    def set_threshold(self, threshold: float) -> None:
        self._policy = dataclasses.replace(self.inner.policy, threshold=float(threshold))

    def __getattr__(self, name: str) -> Any:
        # What else callers read of a verifier (config, classic, model_path...) is the inner one's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def model_versions(self) -> dict[str, str]:
        v = self.inner.model_versions()
        if self._policy.threshold != self.shipped:
            # Every decision record says which threshold decided it.
            v["site_threshold"] = f"{self._policy.threshold:.4g}"
        return v

    def enroll(self, references: Sequence[Trajectory]) -> ReferenceSet[Any]:
        return self.inner.enroll(references)

    def copy_print(self, query: Trajectory) -> np.ndarray:
        return self.inner.copy_print(query)

    def verify(self, reference_set: ReferenceSet[Any], query: Trajectory, *,
               seen: Sequence[np.ndarray] = ()) -> Verdict:
        v = self.inner.verify(reference_set, query, seen=seen)
        policy = self._policy
        if policy.threshold == self.shipped:
            return v
        return policy.redecide(v)

    def warm_up(self, sample: Trajectory) -> None:
        self.inner.warm_up(sample)


__all__ = ["MIN_REFERENCES", "Calibration", "CalibrationSettings", "SiteThreshold", "loo_scores", "propose",
           "weighted_quantile"]
