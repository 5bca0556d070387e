"""Calibrated fusion of user-normalised distances into one match rate in [0, 1].

``p(genuine) = σ(b + Σ w_i · log d_i)`` over the verifiers' user-normalised distances d_i (about 1
for a typical genuine signature, larger for forgeries), fitted on *validation* writers (never the
reported test writers) and stored as JSON beside the model. Every weight is kept ≤ 0, so the score
can only fall when any distance grows: a forgery can never win by looking *less* like the
references to one of the verifiers.

Two fitters produce this one form: :func:`fit_fusion` (a free logistic regression) and, for the
shipped pen fusion, ``tools.train.fusion_fit.fit_mixing`` (one mixing weight on scaled log
distances chosen by a conservative rule over writers, then calibrated): with a few dozen
validation writers a free regression over their thousands of correlated trials over-fits them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models._assets import FUSED_SCORE_FILE, FUSION_FILE

if TYPE_CHECKING:
    from models.match_score import ScoreModel

_FLOOR = 1e-6


@dataclass(frozen=True)
class Fusion:
    names: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    #: Match rate at or above which the kiosk approves (the global EER point on validation writers).
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if len(self.names) != len(self.weights):
            raise ValueError("one weight per verifier")
        if not all(math.isfinite(v) for v in (*self.weights, self.bias, self.threshold)):
            # json reads Infinity and NaN: an infinite bias approved every query (found by a review).
            raise ValueError("fusion weights, bias and threshold must be finite numbers")
        if any(w > 0 for w in self.weights):
            raise ValueError("fusion weights must be <= 0 (a larger distance never raises the score)")

    def logit(self, distances: np.ndarray) -> float:
        d = np.maximum(np.asarray(distances, dtype=np.float64), _FLOOR)
        if d.shape != (len(self.weights),):
            raise ValueError(f"expected {len(self.weights)} distances ({', '.join(self.names)}), got {d.shape}")
        return float(self.bias + np.dot(self.weights, np.log(d)))

    def match_rate(self, distances: np.ndarray) -> float:
        """The calibrated probability that the signature is genuine, in [0, 1]."""
        z = self.logit(distances)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def distance(self, distances: np.ndarray) -> float:
        """A distance-like fused value (lower is more genuine) for EER: minus the logit."""
        return -self.logit(distances)

    def save(self, path: Path) -> None:
        d = asdict(self)
        d["names"], d["weights"] = list(self.names), list(self.weights)
        Path(path).write_text(json.dumps(d, indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Fusion":
        fusion = cls(names=tuple(d["names"]), weights=tuple(float(w) for w in d["weights"]),
                     bias=float(d["bias"]), threshold=float(d.get("threshold", 0.5)))
        if not any(w < 0 for w in fusion.weights):
            # Every weight 0: the score ignores the signature (a hand-edited file of it approved
            # everyone; found by a review). The paper verifier refuses the same.
            raise ValueError("fusion weights are all 0: the score would not look at the signature")
        return fusion

    @classmethod
    def load(cls, path: Path) -> "Fusion":
        return cls.from_dict(json.loads(Path(path).read_text()))


def fused_model_file(model_dir: Path) -> Path:
    """The fused pen verifier's fusion in a model folder: ``fused_score.json`` (the match score
    with the learned distance) where there is one, else ``fusion.json`` (the two distances alone:
    an update bundle built before the fused score)."""
    score = Path(model_dir) / FUSED_SCORE_FILE
    return score if score.is_file() else Path(model_dir) / FUSION_FILE


def load_fused(path: Path) -> Fusion | ScoreModel:
    """A fused pen verifier's fusion file, by its content: a fused score model (the match-score
    format, which must take the learned distance) or a two-distance :class:`Fusion`. ``ValueError``
    (or ``KeyError`` / ``TypeError`` for a file missing fields) for anything else."""
    from models.match_score import FORMAT, ScoreModel

    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if isinstance(d, dict) and d.get("format") == FORMAT:
        model = ScoreModel.from_dict(d)
        if not model.uses_learned:
            raise ValueError(f"{path} takes no learned distance")
        return model
    return Fusion.from_dict(d)


#: The suffix of an ``offline_fusion.json`` entry fitted for references of electronic ink (a pad
#: enrollment drawn as ink) against a paper question, e.g. ``cnn+hand@pad-ink``: across media the
#: hand-made features measure the pen more than the writer, and a fusion fitted on paper against
#: paper leans on them.
PAD_INK_SUFFIX = "@pad-ink"


def offline_entry(verifier: str, pad_ink: bool = False) -> str:
    """The entry name of ``verifier``'s fusion for paper references, or for pad-ink ones."""
    return verifier + PAD_INK_SUFFIX if pad_ink else verifier


def load_offline_fusion(path: Path, verifier: str) -> Fusion:
    """The fusion of ``verifier`` + anomaly check from a file of one entry per image verifier
    (``offline_fusion.json``, written by ``sigkiosk eval offline --fit-fusion``). A pad-ink entry
    (``cnn+hand@pad-ink``) the file does not have is the verifier's own (a file of before the
    pad-ink entries)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"offline fusion file not found: {path} (fit one with --fit-fusion on validate writers)")
    entries = json.loads(path.read_text())
    if verifier not in entries and verifier.endswith(PAD_INK_SUFFIX):
        verifier = verifier.removesuffix(PAD_INK_SUFFIX)
    if verifier not in entries:
        raise ValueError(f"{path} has no fusion for {verifier!r} (it has: {', '.join(entries) or 'none'}); "
                         "fit one with --fit-fusion on validate writers")
    return Fusion.from_dict(entries[verifier])


def fit_fusion(names: tuple[str, ...], genuine: np.ndarray, impostor: np.ndarray) -> Fusion:
    """Logistic regression on log distances; rows are trials, columns verifiers.

    Classes are weighted equally (forgeries outnumber genuine trials); a weight that comes out
    positive (a verifier that adds nothing) is set to 0 and the rest refitted.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.log(np.maximum(np.vstack([genuine, impostor]), _FLOOR))
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    active = list(range(X.shape[1]))
    while True:
        lr = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000)
        lr.fit(X[:, active], y)
        w = lr.coef_[0]
        if (w <= 0).all() or len(active) == 1:
            break
        active = [a for a, wi in zip(active, w) if wi <= 0] or active[:1]
    weights = np.zeros(X.shape[1])
    weights[active] = np.minimum(w, 0.0)
    fusion = Fusion(names=tuple(names), weights=tuple(float(v) for v in weights), bias=float(lr.intercept_[0]))
    # Threshold at the validation EER point of the fused score.
    from_scores = np.array([fusion.match_rate(r) for r in np.vstack([genuine, impostor])])
    g, i = from_scores[: len(genuine)], from_scores[len(genuine):]
    cands = np.unique(from_scores)
    gaps = [abs(np.mean(g < t) - np.mean(i >= t)) for t in cands]
    thr = float(cands[int(np.argmin(gaps))]) if len(cands) else 0.5
    return Fusion(fusion.names, fusion.weights, fusion.bias, threshold=thr)
