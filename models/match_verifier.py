"""The match-score pen verifier: the classic verifier's DTW distance and the signature's global
features, one calibrated probability (``models.match_score``), decided by the one policy.

It is the classic verifier plus a dot product: the same features, distance, aspect checks (which
explain the decision), copy check and optional rhythm rule (``models.pen.ClassicVerifier``), and
beside the classic features each reference's global features (``models.global_features``). The
decision is the policy's on the calibrated probability (``DecisionPolicy.on_probability``: the
score is minus the logit, approved at or above the model's operating point).

Numpy only on top of the classic verifier; the model is a small JSON file
(``models/assets/match_score.json``), fitted off the device by ``tools/train/score_fit.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models._assets import digest
from models.global_features import global_features
from models.match_score import SHIPPED, ScoreModel
from models.pen import ClassicFeatures, ClassicVerifier, OnClassic
from models.policy import Verdict
from models.runtime import ModelError
from models.trajectory import Trajectory
from models.verification import ReferenceSet

#: The model's file name in a model directory (``[verifier] model_dir``, an update bundle).
MATCH_SCORE_FILE = SHIPPED.name


@dataclass(frozen=True, eq=False)
class MatchFeatures:
    classic: ClassicFeatures
    #: K x global features, one row per reference; None when the model takes none.
    globals: np.ndarray | None


class MatchScoreVerifier(OnClassic):
    """``[verifier] kind = "match-score"``: see the module docstring."""

    name = "match-score"

    def __init__(self, classic: ClassicVerifier | None = None, model_path: Path | None = None, *,
                 versions: Mapping[str, str] | None = None) -> None:
        path = Path(model_path) if model_path is not None else SHIPPED
        try:
            self.model = ScoreModel.load(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"match-score verifier: cannot load {path}: {exc}") from None
        self.model_path = path
        self.classic = classic or ClassicVerifier()
        self.policy = self._policy_at(self.model.threshold)
        self._versions = {"match_score": digest(path), "match_threshold": f"{self.model.threshold:.4g}",
                          **{k: str(v) for k, v in (versions or {}).items()}}

    def enroll(self, references: Sequence[Trajectory]) -> ReferenceSet[MatchFeatures]:
        globs = np.array([global_features(r) for r in references]) if self.model.takes_globals else None
        return ReferenceSet(self.name, self.model_versions(), len(references),
                            MatchFeatures(self.classic.features(references), globs), build=self.build_key())

    def build_key(self) -> str:
        """The classic part's configuration (``ReferenceSet.build``)."""
        return self.classic.build_key()

    def probability(self, features: MatchFeatures, query: Trajectory, classic_distance: float) -> float:
        if not self.model.takes_globals:
            return self.model.score(classic_distance, None, None)
        if features.globals is None:   # cannot pass features_for (the model's digest is a version)
            raise ModelError("match-score verifier: reference set lacks the global features its model needs")
        return self.model.score(classic_distance, global_features(query), features.globals)

    def verify(self, reference_set: ReferenceSet[MatchFeatures], query: Trajectory, *,
               seen: Sequence[np.ndarray] = ()) -> Verdict:
        refs = reference_set.features_for(self.name, self.model_versions(), self.build_key())
        cv = self.classic.verify_features(refs.classic, query, seen=seen)
        p = self.probability(refs, query, cv.distance)
        # Minus the logit, from the probability clamped away from 0 and 1 so it stays finite.
        p = min(max(p, 1e-15), 1.0 - 1e-15)
        return self.policy.decide(-math.log(p / (1.0 - p)), cv.aspects, too_similar=cv.too_similar,
                                  explanations=cv.explanations)

    def warm_up(self, sample: Trajectory) -> None:
        self.classic.warm_up(sample)
        self.verify(self.enroll([sample, sample]), sample)
