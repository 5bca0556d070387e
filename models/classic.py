"""The classic pen verifier: DTW on normalised time functions, user-normalised.

It needs no training (only a population prior for one-reference templates), is a strong baseline,
and is what the learned verifier is fused with. Evaluation, enrollment and the daemon all go
through :func:`signature_features`, :func:`classic_distance`, :func:`build_template` and
:func:`score_query`.

The distance is two DTWs added: every time function on one warping path, and the pen's dynamics
(speed, acceleration, centripetal acceleration) again on a path of their own. One path must
compromise between where the shape of the signature aligns and where its rhythm does; the second
lets the rhythm align as it was written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.dtw import dtw_distances
from models.features import FEATURE_NAMES, feature_indices, time_functions, zscore
from models.preprocess import PreparedSignature, PreprocessConfig, prepare
from models.scoring import NormalisationPrior, ScoredReferences, normalised_distance, reference_stats
from models.trajectory import Trajectory

#: All time functions: on the training and validation writers of the four shared pen sets this
#: beat every subset tried (README, "Tuning the classic verifier").
DEFAULT_FEATURES: tuple[str, ...] = FEATURE_NAMES


#: How many reference pairs the population prior weighs like (``models.scoring.shrink``).
PRIOR_STRENGTH = 6.0

#: The time functions compared a second time on a warping path of their own, and that distance's
#: weight. Chosen on every writer of each left-out set its fold never saw (``python -m
#: tools.score_settings DATA --classic-parts``): skilled EER K = 5 sum 19.29 -> 16.71 %, random
#: 2.59 -> 2.00 %, no set worse than one path alone by more than its standard error.
DYNAMICS: tuple[str, ...] = ("speed", "acceleration", "centripetal")
DYNAMICS_WEIGHT = 1.0

#: A signature whose strokes are more jagged than this (``models.preprocess.jaggedness``) is
#: smoothed to it before its time functions are taken: a pad that reports jagged positions (the
#: Japanese set's median is 0.67, 97 % of its signatures smoothed; SUSIG's and NFI's 0.31-0.50,
#: 10-16 %: ``python -m tools.score_settings DATA --jaggedness``) is smoothed, one that does not is
#: left alone. Chosen on every writer of each left-out set its fold never saw (``python -m
#: tools.score_settings DATA --classic-preprocess``, on the direction held at rests): skilled EER
#: K = 5 sum 14.45 -> 14.17 % (the Japanese set -0.45 +- 0.24, no set worse by more than one
#: standard error and one trial); to 0.5, NFI was worse.
SMOOTH_JAGGED = 0.6

#: The Sakoe-Chiba band of both warping paths, as a fraction of the longer signature. Chosen on
#: every writer of each left-out set its fold never saw (``python -m tools.score_settings DATA
#: --classic-band F``): skilled EER K = 5 sum 14.17 -> 13.76 %, random 1.78 -> 1.60 %, every set
#: lower (each within its standard error), none worse. 0.25-0.35 gave 13.69 (within 0.5 of it, so
#: the smaller change ships): 1.3 times the DTW cells of 0.15 where 0.25 costs 1.7.
BAND = 0.2

#: A pad that reports no pressure is compared over 12 of the 14 time functions (pressure and its
#: derivative are constant, so z-scored to zero), and every distance comes out shorter: the
#: population's reference distances by 12 % on the train + validate writers of the four shared
#: pen sets (``python -m tools.train.score_fit DATA --no-pressure-scale``; per set 6-20 %). The
#: user normalisation divides by the customer's own reference distances, but the prior it is pulled
#: towards (all of it at K = 1) was measured with pressure, so without pressure every signature
#: looked closer than it was: on SUSIG-Visual's test writers the shipped threshold let 16.3 % of
#: skilled forgeries through instead of 7.9 %. Distances between two signatures that both lack
#: pressure are multiplied by this, the ratio of the prior with pressure to the prior without, so
#: that the prior and the threshold mean the same on either pad (the cross-device yardstick fits it
#: per fold: README, "Across devices").
NO_PRESSURE_SCALE = 1.138

#: The time functions a pad without pressure cannot give (``models.features.FEATURE_NAMES``).
PRESSURE_FEATURES: tuple[str, ...] = ("pressure", "dpressure")


@dataclass(frozen=True)
class ClassicConfig:
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(smooth_jagged=SMOOTH_JAGGED))
    features: tuple[str, ...] = DEFAULT_FEATURES
    band: float = BAND
    #: Columns of ``features`` also aligned on their own (the module docstring); () for one path.
    dynamics: tuple[str, ...] = DYNAMICS
    dynamics_weight: float = DYNAMICS_WEIGHT
    #: The population's reference statistics (fitted as a cross-device fold fits them, on the train
    #: + validate writers of all four shared pen sets: ``tools.cross_device.fit_prior``), and how
    #: strongly a customer's own (K = 5: 10 pairs) are pulled towards them: like 6 pairs. The
    #: strength was chosen on every writer of each left-out set its fold never saw (``python -m
    #: tools.score_settings DATA --classic-prior``): with two warping paths, skilled EER K = 5 lower
    #: on all four sets than at 4 (sum 16.71 -> 16.03 %; random 2.00 -> 1.79 %); with one path 4
    #: was lower on all four than 2 (20.37 -> 19.29 %).
    prior: NormalisationPrior = field(default_factory=lambda: NormalisationPrior(1.32, 1.50, strength=PRIOR_STRENGTH))
    #: Accept when the user-normalised distance is at most this (one global threshold): as a fold
    #: fits it, the mean of the four sets' skilled-EER thresholds on their train + validate writers
    #: (K = 5; 1.3088, 1.3170, 1.2562 and 1.2224 with the band of 0.2 since 2026-11-28: the rule
    #: gives 1.2761 and the prior (1.3244, 1.4951); before, 1.2796 and (1.325, 1.4987)).
    threshold: float = 1.28
    #: The direction where the pen rests this many points or more: the last one it moved in,
    #: rather than 0, "rightwards" (``models.features.time_functions``); 0 holds nothing. On the
    #: cross-device protocol (``python -m tools.score_settings DATA --classic-direction``) rests
    #: of 2 lowered the skilled sum 16.03 -> 14.46 (the Japanese set -1.53 +- 0.35, none worse
    #: by more than one standard error and one trial); 1 made NFI worse by two trials (its
    #: single still points are mostly reversals, not rests), 3 SUSIG-Visual by 0.04 +- 0.035.
    hold_still_direction: int = 2
    #: What a distance between two signatures without pressure is multiplied by (NO_PRESSURE_SCALE;
    #: fitted for the shipped features and paths; 1 leaves such distances as DTW gives them).
    no_pressure_scale: float = NO_PRESSURE_SCALE
    _dynamics_columns: np.ndarray = field(init=False, repr=False, compare=False)
    _pressure_columns: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        feature_indices(self.features)  # validates the names
        if not 0 < self.band <= 1:
            raise ValueError(f"band must be in (0, 1], got {self.band}")
        missing = [f for f in self.dynamics if f not in self.features]
        if missing:
            raise ValueError(f"dynamics {missing} are not among the compared features {self.features}")
        if self.hold_still_direction < 0:
            raise ValueError(f"hold_still_direction must be >= 0, got {self.hold_still_direction}")
        if not (self.dynamics_weight >= 0 and math.isfinite(self.dynamics_weight)):
            raise ValueError(f"dynamics_weight must be finite and >= 0, got {self.dynamics_weight}")
        if not (self.no_pressure_scale > 0 and math.isfinite(self.no_pressure_scale)):
            raise ValueError(f"no_pressure_scale must be finite and > 0, got {self.no_pressure_scale}")
        object.__setattr__(self, "_dynamics_columns",
                           np.array([self.features.index(f) for f in self.dynamics], dtype=np.intp))
        object.__setattr__(self, "_pressure_columns",
                           np.array([i for i, f in enumerate(self.features) if f in PRESSURE_FEATURES], dtype=np.intp))

    @property
    def two_paths(self) -> bool:
        """Whether :func:`classic_distance` adds the dynamics' own warping path."""
        return bool(self.dynamics) and self.dynamics_weight > 0

    @property
    def dynamics_columns(self) -> np.ndarray:
        """Where the dynamics are among the columns of :func:`signature_features`."""
        return self._dynamics_columns

    def lacks_pressure(self, features: np.ndarray) -> bool:
        """Whether ``features`` (:func:`signature_features`) compare pressure and it carries nothing:
        a pad without pressure, or a pen that reported one level throughout."""
        cols = self._pressure_columns
        # z-scored, a constant column is zero up to the rounding of its mean
        return cols.size > 0 and len(features) > 0 and float(np.abs(features[:, cols]).max()) < 1e-6

    def pressure_dropped(self, features: np.ndarray) -> np.ndarray:
        """``features`` as a pad without pressure gives them: pressure and its change constant,
        so z-scored to zero; every other time function is the same."""
        out = np.array(features, dtype=np.float64, copy=True)
        out[:, self._pressure_columns] = 0.0
        return out


def comparable(query: np.ndarray, references: Sequence[np.ndarray], config: ClassicConfig
               ) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """A question and references (:func:`signature_features`) on what both sides measure: with
    pressure when the question and most references carry it, otherwise all without it (a pad
    changed since enrollment, either way; a missing channel is not a difference). Returns the
    question's features and, when the references must be compared again, theirs (None: as they
    are, with the distances already measured among them)."""
    has = [not config.lacks_pressure(r) for r in references]
    if not config.lacks_pressure(query) and 2 * sum(has) > len(has):
        return query, None
    dropped = [config.pressure_dropped(r) for r in references] if any(has) else None
    return config.pressure_dropped(query), dropped


@dataclass(frozen=True)
class ClassicScore:
    """``distance`` is the user-normalised distance (lower is more genuine, ~1 typical genuine)."""

    distance: float
    ref_distances: tuple[float, ...]


def signature_features(traj: Trajectory, config: ClassicConfig = ClassicConfig(),
                       shared: PreparedSignature | None = None) -> np.ndarray:
    """The (points, features) matrix DTW compares: selected time functions, z-scored (from
    ``shared`` when it was prepared the same way)."""
    if shared is not None and not shared.usable_for(config.preprocess):
        shared = None
    if shared is not None and not config.hold_still_direction:
        all_tf = shared.time_functions
    else:
        # The shared time functions hold no direction (the learned model was trained so); the
        # prepared points are the same either way.
        prep = prepare(traj, config.preprocess) if shared is None else shared.prepared
        all_tf = time_functions(prep, hold_still=config.hold_still_direction)
    return np.ascontiguousarray(zscore(all_tf[:, feature_indices(config.features)]))


def classic_distance(a: np.ndarray, b: np.ndarray, config: ClassicConfig = ClassicConfig()) -> float:
    """The classic distance of two :func:`signature_features` matrices: DTW on every column, plus
    ``dynamics_weight`` times DTW on the dynamics columns alone (their own warping path)."""
    return classic_distance_with_groups(a, b, config)[0]


def classic_distance_with_groups(a: np.ndarray, b: np.ndarray, config: ClassicConfig = ClassicConfig(),
                                 groups: Sequence[Sequence[int]] = ()) -> tuple[float, np.ndarray]:
    """:func:`classic_distance` and plain DTW on each of ``groups`` (columns of the features, each
    on its own path: the aspect checks), all in one pass over the band
    (``models.dtw.dtw_distances``: the same numbers as separate DTWs, in about half the time).
    Between two signatures without pressure the distance is scaled by ``no_pressure_scale``
    (NO_PRESSURE_SCALE); the groups' plain DTWs are not."""
    paths: list[Sequence[int]] = [range(a.shape[1])]
    if config.two_paths:
        paths.append(config.dynamics_columns.tolist())
    d = dtw_distances(a, b, [*paths, *groups], config.band)
    dist = float(d[0])
    if config.two_paths:
        dist += config.dynamics_weight * float(d[1])
    if config.no_pressure_scale != 1.0 and config.lacks_pressure(a) and config.lacks_pressure(b):
        dist *= config.no_pressure_scale
    return dist, d[len(paths):]


def build_template(references: list[np.ndarray], config: ClassicConfig = ClassicConfig()) -> ScoredReferences:
    """One user's references as feature sequences, with the classic distances among them."""
    return build_template_with_groups(references, config)[0]


def build_template_with_groups(references: Sequence[np.ndarray], config: ClassicConfig = ClassicConfig(),
                               groups: Sequence[Sequence[int]] = ()) -> tuple[ScoredReferences, np.ndarray]:
    """:func:`build_template` and the plain DTW distances among the references on each of
    ``groups``, shape (groups, K, K), from the same passes (:func:`classic_distance_with_groups`)."""
    k = len(references)
    d = np.zeros((k, k), dtype=np.float64)
    parts = np.zeros((len(groups), k, k), dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            d[i, j], parts[:, i, j] = classic_distance_with_groups(references[i], references[j], config, groups)
            d[j, i], parts[:, j, i] = d[i, j], parts[:, i, j]
    return ScoredReferences.from_distances(references, d), parts


def score_query(
    template: ScoredReferences, query: np.ndarray, config: ClassicConfig = ClassicConfig()
) -> ClassicScore:
    return score_query_with_groups(template, query, config)[0]


def score_query_with_groups(template: ScoredReferences, query: np.ndarray, config: ClassicConfig = ClassicConfig(),
                            groups: Sequence[Sequence[int]] = ()) -> tuple[ClassicScore, np.ndarray]:
    """:func:`score_query` and the query's plain DTW distances to each reference on each of
    ``groups``, shape (groups, K), from the same passes (:func:`classic_distance_with_groups`)."""
    dists = []
    parts = np.zeros((len(groups), len(template.references)), dtype=np.float64)
    for r, ref in enumerate(template.references):
        dist, parts[:, r] = classic_distance_with_groups(query, ref, config, groups)
        dists.append(dist)
    score = ClassicScore(distance=normalised_distance(np.array(dists), template.stats, config.prior),
                         ref_distances=tuple(dists))
    return score, parts


def score_from_distances(
    query_to_refs: np.ndarray, ref_distances: np.ndarray, prior: NormalisationPrior
) -> float:
    """The same score from precomputed distances (the evaluator reuses them across trials)."""
    return normalised_distance(query_to_refs, reference_stats(ref_distances), prior)
