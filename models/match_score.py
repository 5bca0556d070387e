"""The writer-independent match score: DTW distance and global features, one calibrated probability.

The classic verifier's user-normalised DTW distance (``models.classic``) measures how well the
questioned signature's time functions follow the references'; :mod:`models.global_features` says
how far its whole-signature figures (time, pen-up ratio, strokes, path, speed, pressure, box) lie
from the references', each in units of the customer's own spread. A small logistic model, fitted
off the device on genuine and skilled-forgery trials of training writers
(``tools/train/score_fit.py``), turns these into the probability that the signature is genuine,
calibrated for even odds: that probability is the match rate people see.

Contract (tested): every input is a distance (0 = like the references) and the probability never
rises when any of them grows: the weights are constrained to be <= 0 when fitted, and
:meth:`ScoreModel.from_dict` refuses a model that breaks this. Evaluated in numpy (a dot product
and a logistic), no scikit-learn on the device.

The shipped model (``match_score.json``) names no global feature: on the writers of each pen set
that a leave-one-set-out fold never saw, none carried over to another tablet
(``tools/score_settings.py``, README "A writer-independent score"), so the shipped probability is
the classic distance calibrated. A model fitted on a bank's own pad may name some.

Inputs, in order: ``classic`` (the log of the user-normalised DTW distance), optionally
``learned`` (the log of the learned verifier's user-normalised distance: the fused verifier's
model, ``fused_score.json``), then one per global feature named in the model (``log1p`` of its
``|z|``). A feature the pad cannot measure (pressure on a pad without a sensor) counts as the mean
of the measured global inputs of the same trial: missing evidence neither accuses nor excuses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models._assets import FUSED_SCORE_FILE
from models.global_features import FEATURE_NAMES, INDEX, Spread, deviations

FORMAT = "sigkiosk-match-score/1"
CLASSIC = "classic"
LEARNED = "learned"
_MIN_DISTANCE = 1e-3


@dataclass(frozen=True, eq=False)
class ScoreModel:
    """A fitted match-score model: which global features, their population spread, the
    standardisation and weights of the logistic, and the operating point (a probability)."""

    features: tuple[str, ...]
    spread: Spread
    centre: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    #: How it was fitted (data, writers, command, figures): kept with the weights, not used.
    record: Mapping[str, Any] = field(default_factory=dict)
    #: The distance inputs before the features: the classic one, and the learned one in the fused
    #: verifier's model.
    distances: tuple[str, ...] = (CLASSIC,)

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in INDEX]
        if unknown:
            raise ValueError(f"unknown global feature(s) {unknown}; known: {', '.join(FEATURE_NAMES)}")
        if self.distances not in ((CLASSIC,), (CLASSIC, LEARNED)):
            raise ValueError(f"distance inputs must be ({CLASSIC!r},) or ({CLASSIC!r}, {LEARNED!r}), "
                             f"not {self.distances}")
        n = len(self.distances) + len(self.features)
        for name in ("centre", "scale", "weights"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be {n} finite numbers ({' + '.join(self.distances)} + "
                                 f"{len(self.features)} features)")
            object.__setattr__(self, name, arr)
        if np.any(self.scale <= 0):
            raise ValueError("scale must be positive")
        if np.any(self.weights > 0):
            bad = [self.input_names[i] for i in np.flatnonzero(self.weights > 0)]
            raise ValueError(f"weights must be <= 0 (the score may not rise with a distance): {bad}")
        if not math.isfinite(self.bias):
            raise ValueError("bias must be finite")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold {self.threshold} is not a probability in (0, 1)")

    @property
    def input_names(self) -> tuple[str, ...]:
        return (*self.distances, *self.features)

    @property
    def uses_learned(self) -> bool:
        return LEARNED in self.distances

    @property
    def takes_globals(self) -> bool:
        """Whether any global feature is an input: without one a verifier need not measure them
        (the shipped model takes none)."""
        return bool(self.features)

    @property
    def weighs_learned(self) -> bool:
        """Whether the learned distance can move the score (a fused model fitted to weigh it 0,
        as the shipped one is, needs no embedding: any distance gives the same score)."""
        return self.uses_learned and bool(self.weights[self.distances.index(LEARNED)] != 0.0)

    def no_globals(self, rows: int = 1) -> np.ndarray:
        """Deviation rows for a model that takes no global feature (:attr:`takes_globals` false):
        :meth:`inputs` reads none of them."""
        if self.takes_globals:
            raise ValueError(f"this model takes global features {self.features}")
        return np.zeros((rows, len(FEATURE_NAMES)))

    # -- inputs -------------------------------------------------------------------------------

    def inputs(self, classic_distance: float | np.ndarray, deviation: np.ndarray,
               learned_distance: float | np.ndarray | None = None) -> np.ndarray:
        """The model's input row(s) from the classic distance(s), the learned one(s) if the model
        takes them (and only then), and the |z| vector(s) of all :data:`FEATURE_NAMES`
        (:func:`models.global_features.deviations`)."""
        d = np.atleast_1d(np.asarray(classic_distance, dtype=np.float64))
        z = np.atleast_2d(np.asarray(deviation, dtype=np.float64))
        if z.shape != (len(d), len(FEATURE_NAMES)):
            raise ValueError(f"need {len(d)} deviation rows of {len(FEATURE_NAMES)}, got shape {z.shape}")
        if (learned_distance is not None) != self.uses_learned:
            raise ValueError("this model takes a learned distance" if self.uses_learned
                             else "this model takes no learned distance")
        cols = [d]
        if learned_distance is not None:
            cols.append(np.atleast_1d(np.asarray(learned_distance, dtype=np.float64)))
            if cols[1].shape != d.shape:
                raise ValueError(f"need {len(d)} learned distances, got {cols[1].shape}")
        for name, c in zip(self.distances, cols):
            if np.any(~np.isfinite(c)) or np.any(c < 0):
                raise ValueError(f"{name} distances must be finite and >= 0")
        g = np.log1p(z[:, [INDEX[f] for f in self.features]])
        missing = ~np.isfinite(g)
        if missing.any():
            present = np.where(missing, 0.0, g)
            n = (~missing).sum(axis=1, keepdims=True)
            fill = np.where(n > 0, present.sum(axis=1, keepdims=True) / np.maximum(n, 1), 0.0)
            g = np.where(missing, fill, g)
        return np.column_stack([np.log(np.maximum(c, _MIN_DISTANCE)) for c in cols] + [g])

    # -- scores -------------------------------------------------------------------------------

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The log-odds of a genuine signature for input rows ``x`` (:meth:`inputs`)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return ((x - self.centre) / self.scale) @ self.weights + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(x), -50.0, 50.0)))

    def score(self, classic_distance: float, query: np.ndarray | None, references: np.ndarray | None,
              learned_distance: float | None = None) -> float:
        """The match probability of one questioned signature: its classic (and, for a fused
        model, learned) distance to the template and its global features against the
        references' (K x features; both ``None`` for a model that takes none)."""
        if query is None or references is None:
            z = self.no_globals()
        else:
            z = deviations(query, references, self.spread)
        return float(self.probability(self.inputs(classic_distance, z, learned_distance))[0])

    # -- files --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inputs": list(self.input_names),
            "input_transform": {**{d: "log(distance)" for d in self.distances}, "features": "log1p(|z|)"},
            "spread": {"sd": dict(zip(FEATURE_NAMES, (round(float(v), 6) for v in self.spread.sd))),
                       "strength": self.spread.strength, "floor": self.spread.floor},
            "centre": [round(float(v), 6) for v in self.centre],
            "scale": [round(float(v), 6) for v in self.scale],
            "weights": [round(float(v), 6) for v in self.weights],
            "bias": round(float(self.bias), 6),
            "threshold": round(float(self.threshold), 6),
            "record": dict(self.record),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreModel:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a match-score model (format {d.get('format')!r}, expected {FORMAT!r})")
        inputs = list(d["inputs"])
        if not inputs or inputs[0] != CLASSIC:
            raise ValueError("a match-score model's first input must be the classic distance")
        distances = (CLASSIC, LEARNED) if inputs[1:2] == [LEARNED] else (CLASSIC,)
        sp = d["spread"]
        missing = [f for f in FEATURE_NAMES if f not in sp["sd"]]
        if missing:
            raise ValueError(f"spread lacks feature(s) {missing}")
        spread = Spread(np.array([float(sp["sd"][f]) for f in FEATURE_NAMES]),
                        strength=float(sp["strength"]), floor=float(sp["floor"]))
        model = cls(features=tuple(inputs[len(distances):]), spread=spread, centre=np.array(d["centre"], dtype=float),
                    scale=np.array(d["scale"], dtype=float), weights=np.array(d["weights"], dtype=float),
                    bias=float(d["bias"]), threshold=float(d.get("threshold", 0.5)), record=d.get("record", {}),
                    distances=distances)
        if not np.any(model.weights[:len(distances)] < 0):
            # A model that weighs every distance 0 does not compare the signature with the
            # references: a hand-edited model_dir file of it approved everyone (found by a review).
            # (A fit may give it on data where no distance helps; a kiosk never reads one.)
            raise ValueError(f"weights of {', '.join(distances)} are all 0: the score would not compare the "
                             "signature with the references")
        return model

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ScoreModel:
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: incomplete match-score model: {exc!r}") from None


#: The shipped model, fitted on the train + validate writers of all four shared pen sets.
SHIPPED = Path(__file__).resolve().parent / "assets" / "match_score.json"
#: The fused verifier's model: the shipped one with the learned distance mixed into its distance
#: input (``tools/train/fusion_fit.py``), its threshold chosen on validation writers.
SHIPPED_FUSED = SHIPPED.with_name(FUSED_SCORE_FILE)
