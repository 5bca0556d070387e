"""The classic pen verifier: DTW on normalised time functions, user-normalised.

It needs no training (only a population prior for one-reference templates), is a strong baseline,
and is what the learned verifier is fused with. Evaluation, enrollment and the daemon all go
through :func:`signature_features`, :func:`build_template` and :func:`score_query`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.dtw import DEFAULT_BAND, dtw_distance
from models.features import FEATURE_NAMES, feature_indices, time_functions, zscore
from models.preprocess import PreparedSignature, PreprocessConfig, prepare
from models.scoring import NormalisationPrior, ScoredReferences, normalised_distance, pairwise, reference_stats
from models.trajectory import Trajectory

#: All time functions: on the training and validation writers of the four shared pen sets this
#: beat every subset tried (README, "Tuning the classic verifier").
DEFAULT_FEATURES: tuple[str, ...] = FEATURE_NAMES


#: How many reference pairs the population prior weighs like (``models.scoring.shrink``).
PRIOR_STRENGTH = 4.0


@dataclass(frozen=True)
class ClassicConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: tuple[str, ...] = DEFAULT_FEATURES
    band: float = DEFAULT_BAND
    #: The population's reference statistics, and how strongly a customer's own (K = 5: 10 pairs)
    #: are pulled towards them: like 4 pairs, not 2. Chosen on every writer of each left-out set
    #: its fold never saw (``python -m tools.score_settings DATA --classic-prior``): skilled EER
    #: K = 5 lower on all four sets (sum 20.37 -> 19.29 %; random 3.21 -> 2.59 %), one threshold
    #: then fits more customers.
    prior: NormalisationPrior = field(default_factory=lambda: NormalisationPrior(0.90, 1.00, strength=PRIOR_STRENGTH))
    #: Accept when the user-normalised distance is at most this (one global threshold).
    threshold: float = 1.30

    def __post_init__(self) -> None:
        feature_indices(self.features)  # validates the names
        if not 0 < self.band <= 1:
            raise ValueError(f"band must be in (0, 1], got {self.band}")


@dataclass(frozen=True)
class ClassicScore:
    """``distance`` is the user-normalised distance (lower is more genuine, ~1 typical genuine)."""

    distance: float
    ref_distances: tuple[float, ...]


def signature_features(traj: Trajectory, config: ClassicConfig = ClassicConfig(),
                       shared: PreparedSignature | None = None) -> np.ndarray:
    """The (points, features) matrix DTW compares: selected time functions, z-scored (from
    ``shared`` when it was prepared the same way)."""
    if shared is not None and shared.usable_for(config.preprocess):
        all_tf = shared.time_functions
    else:
        all_tf = time_functions(prepare(traj, config.preprocess))
    return np.ascontiguousarray(zscore(all_tf[:, feature_indices(config.features)]))


def pairwise_distances(seqs: list[np.ndarray], band: float) -> np.ndarray:
    return pairwise(seqs, lambda a, b: dtw_distance(a, b, band))


def build_template(references: list[np.ndarray], config: ClassicConfig = ClassicConfig()) -> ScoredReferences:
    """One user's references as feature sequences, with the DTW distances among them."""
    return ScoredReferences.measure(references, lambda a, b: dtw_distance(a, b, config.band))


def score_query(
    template: ScoredReferences, query: np.ndarray, config: ClassicConfig = ClassicConfig()
) -> ClassicScore:
    dists = tuple(dtw_distance(query, r, config.band) for r in template.references)
    return ClassicScore(
        distance=normalised_distance(np.array(dists), template.stats, config.prior),
        ref_distances=dists,
    )


def score_from_distances(
    query_to_refs: np.ndarray, ref_distances: np.ndarray, prior: NormalisationPrior
) -> float:
    """The same score from precomputed distances (the evaluator reuses them across trials)."""
    return normalised_distance(query_to_refs, reference_stats(ref_distances), prior)
