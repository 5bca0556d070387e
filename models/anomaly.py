"""Per-customer anomaly check on hand-made features: an Isolation Forest (:mod:`models.iforest`)
fitted on the customer's own K reference signatures, after the hybrid-system seed paper.

A questioned signature gets an anomaly score in [0, 1] (higher = more unlike the references) and
*reasons*: the few features furthest outside the references' range, in a bank clerk's words
("larger than the references", "slant differs from the references").

Each customer's features are standardised by the references' own mean and spread; with K = 5 a
spread can come out near zero for a feature the customer happened to repeat exactly, so it is
floored at a fraction of the population's typical within-writer spread
(:data:`models.hand_features.WITHIN_SPREAD`).

The template store keeps the reference *feature vectors*, never a fitted forest: a pickled model
is code execution on load (anyone who can write the store could run code in the kiosk), and the
forest is cheap to refit. The forest's seed is fixed, so refitting from the stored vectors gives
the identical forest and the identical scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.hand_features import FEATURE_NAMES, FEATURE_WORDS, WITHIN_SPREAD
from models.iforest import IsolationForest

#: Fewer references than this cannot describe a customer's variation at all.
MIN_REFERENCES = 3
SEED = 20_240_517
TREES = 100
#: The per-customer spread is at least this fraction of the population's within-writer spread.
SPREAD_FLOOR = 0.5
#: A feature is named as a reason when it lies this many (floored) spreads outside the references'
#: range. Chosen on the Dutch TRAINING writers (K = 5, the first five genuine as references): at 3
#: a reason is given for 24 % of later genuine signatures and 82 % of skilled forgeries (at 1:
#: 82 % and 99 %, a reason for nearly every genuine signature, which a clerk would learn to ignore;
#: validation writers: 14 % and 81 %). Sixteen features checked at once: one of them often strays.
REASON_MARGIN = 3.0
#: ... and called "much" different beyond this many.
MUCH_MARGIN = 6.0


@dataclass(frozen=True)
class Reason:
    """One feature of a questioned signature outside its references' range."""

    feature: str
    value: float
    low: float
    high: float
    #: How far outside [low, high], in the customer's (floored) spreads; > 0.
    excess: float
    text: str


class AnomalyModel:
    """The forest of one customer. Build it with :meth:`fit`; it is never stored (see module doc)."""

    def __init__(
        self,
        references: np.ndarray,
        names: tuple[str, ...] = FEATURE_NAMES,
        floor: np.ndarray | tuple[float, ...] | None = None,
        seed: int = SEED,
        trees: int = TREES,
    ) -> None:
        refs = np.asarray(references, dtype=np.float64)
        if refs.ndim != 2:
            raise ValueError(f"expected a K x F matrix of reference features, got shape {refs.shape}")
        if refs.shape[0] < MIN_REFERENCES:
            raise ValueError(
                f"the anomaly check needs at least {MIN_REFERENCES} reference signatures, got {refs.shape[0]}"
            )
        if refs.shape[1] != len(names):
            raise ValueError(f"expected {len(names)} features ({', '.join(names)}), got {refs.shape[1]}")
        if not np.isfinite(refs).all():
            raise ValueError("reference features must be finite numbers")
        if floor is None and names != FEATURE_NAMES:
            raise ValueError("a floor for the spread is needed for features other than the hand features")
        base = np.asarray(WITHIN_SPREAD if floor is None else floor, dtype=np.float64)
        self.names = names
        self.references = refs.copy()
        self.centre = refs.mean(axis=0)
        self.spread = np.maximum(refs.std(axis=0, ddof=1), SPREAD_FLOOR * base)
        self.low = refs.min(axis=0)
        self.high = refs.max(axis=0)
        self._forest = IsolationForest(trees=trees, max_samples=refs.shape[0], seed=seed).fit(self._standardise(refs))

    @classmethod
    def fit(cls, references: np.ndarray, **kwargs: object) -> "AnomalyModel":
        return cls(references, **kwargs)  # type: ignore[arg-type]

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(x, dtype=np.float64)) - self.centre) / self.spread

    def _check(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float64)
        if q.shape[-1] != len(self.names) or q.ndim > 2:
            raise ValueError(f"expected {len(self.names)} features per query, got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("query features must be finite numbers")
        return q

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Anomaly scores in [0, 1] of several queries (rows)."""
        q = self._check(queries)
        # The paper's s = 2^(-E[path length] / c(K)): in (0, 1], about 0.5 or less for a point
        # like the references, towards 1 for an isolated one.
        return np.clip(self._forest.score(self._standardise(q)), 0.0, 1.0)

    def score(self, query: np.ndarray) -> float:
        """Anomaly score in [0, 1] of one query feature vector (higher = more anomalous)."""
        return float(self.scores(np.atleast_2d(self._check(query)))[0])

    def reasons(self, query: np.ndarray, most: int = 3) -> list[Reason]:
        """The features (at most ``most``) furthest outside the references' range, furthest first;
        empty when every feature lies within a spread of that range."""
        q = self._check(query).reshape(-1)
        above = (q - self.high) / self.spread
        below = (self.low - q) / self.spread
        excess = np.maximum(np.maximum(above, below), 0.0)
        order = [int(i) for i in np.argsort(-excess, kind="stable") if excess[i] >= REASON_MARGIN][:most]
        out = []
        for i in order:
            name = self.names[i]
            higher, lower = FEATURE_WORDS.get(name, (f"{name} {{much}}higher", f"{name} {{much}}lower"))
            words = (higher if above[i] > 0 else lower).format(much="much " if excess[i] >= MUCH_MARGIN else "")
            out.append(Reason(name, float(q[i]), float(self.low[i]), float(self.high[i]), float(excess[i]), words))
        return out
