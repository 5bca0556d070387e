"""The one decision policy: how a verifier's score becomes APPROVED or SUSPICIOUS.

Every verifier (classic and fused pen, paper) reduces a query to one distance-like score against
the customer's reference set (lower is more genuine) and a few aspect checks that explain it. The
:class:`DecisionPolicy` turns those into a :class:`Verdict`, with the same rules everywhere:

* the global threshold on the score (a distance for the classic verifier; minus the calibrated
  logit for the fused ones, so "at most the threshold" is "at least the fused probability");
* the copy check: a query much closer to a reference than the references ever are to each other
  is replayed, photocopied or traced (genuine signatures always vary); for the pen also on the
  written path, whatever the clock that drew it (``models.path_copy``);
* the rhythm rule (optional): a pace far outside the references' spread decides on its own;
* the match rate people see: 0.5 exactly at the threshold, monotone in the score.

The daemon's verifier and the evaluator's operating point (``tools.operating_point``) hold the
same policy object, so the figures the evaluator reports are the decisions the kiosk ships.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

Decision = Literal["APPROVED", "SUSPICIOUS"]
APPROVED: Final = "APPROVED"
SUSPICIOUS: Final = "SUSPICIOUS"

#: Names and labels of the aspects the pen verifiers explain a decision with.
ASPECT_LABELS = {"shape": "Shape", "speed": "Speed", "pressure": "Pressure", "rhythm": "Rhythm"}


@dataclass(frozen=True)
class AspectCheck:
    code: str          # "shape", "speed", "pressure", "rhythm"; paper: "shape", "layout", "strokes", "proportions"
    label: str         # for people
    similarity: float  # 0..1, like the match rate
    ok: bool


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    match_rate: float              # 0..1, monotone in the score; 0.5 at the threshold
    distance: float                # the score (classic: user-normalised distance, ~1 for a genuine)
    aspects: tuple[AspectCheck, ...]
    too_similar: bool = False      # a copy of a reference: replayed, photocopied or traced
    #: Why, in words for the screen (the paper verifier's anomaly check); empty when nothing is off.
    explanations: tuple[str, ...] = ()
    #: The paper verifier's anomaly score (0..1) when the customer has enough references for it.
    anomaly: float | None = None
    #: What the paper verifier compared against: ``"paper"`` (pictures) or ``"pad-ink"`` (pad
    #: references drawn as ink); None for a pen verdict.
    references: str | None = None

    @property
    def approved(self) -> bool:
        return self.decision == APPROVED

    @property
    def reasons(self) -> list[str]:
        """Short codes for the record: the aspects that look wrong (or why it is suspicious)."""
        out = [a.code for a in self.aspects if not a.ok]
        if self.too_similar:
            out.insert(0, "too_similar")
        if self.decision == SUSPICIOUS and not out:
            out.append("overall")
        return out


def _rate(x: float, clamp: float) -> float:
    # exp overflows past ~709; a NaN score is treated as far beyond the threshold (rate ~0).
    if not x <= clamp:
        x = clamp
    return 1.0 / (1.0 + math.exp(x))


def probability_score(probability: float) -> float:
    """The threshold on the score scale of a policy on a calibrated probability (minus its logit)
    that accepts a genuine-probability of at least ``probability``."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"threshold {probability} is not in (0, 1)")
    return -math.log(probability / (1.0 - probability))


def match_rate(distance: float, threshold: float, scale: float = 0.25) -> float:
    """A person-facing 0..1 rate on a distance scale: 0.5 at ``threshold``, ~0.86 a quarter below.

    Monotone, not a calibrated probability (the fused verifiers' rates are calibrated)."""
    return _rate((distance - threshold) / scale, 50.0)


#: A pen question whose written path is closer to a reference's than this fraction of the
#: references' own nearest pair is a copy (``models.path_copy``): every genuine question of the four
#: shared pen sets is further, nearly every replay closer (``python -m tools.copy_check``, README
#: "The copy check on the written path").
PATH_COPY_RATIO = 0.3
#: ... and closer than this to a signature the customer gave before: signatures of one visit (a
#: second document, a retry) are closer to each other than to references made earlier (one
#: SUSIG-Visual writer's at 0.32), and replays of one are caught nearly as often at 0.2.
SEEN_COPY_RATIO = 0.2
#: The match rate a copy (replayed, traced, photocopied) is shown and recorded at, at most.
COPY_RATE = 0.01
#: A genuine pace's distance on the rhythm check as a share of a threshold of 1 or less: the share
#: 1 has of the shipped classic line (1 / 1.28).
RHYTHM_BASE_SHARE = 1.0 / 1.28


@dataclass(frozen=True)
class DecisionPolicy:
    """Threshold, copy check, rhythm rule and match-rate mapping (see the module docstring).

    ``threshold``: accept a score at most this. ``rate_scale``/``rate_clamp``: the match rate is
    ``1 / (1 + exp((score - threshold) / rate_scale))``, its exponent clamped at ``rate_clamp``.
    ``too_similar_ratio``: a query whose nearest reference is closer than this fraction of the
    references' own nearest pair is a copy; ``path_copy_ratio`` the same on the written path, and
    ``seen_copy_ratio`` on it against signatures given before (:meth:`is_path_copy`). ``rhythm_tolerance``: how many mean deviations (log
    pen-down time) a pace may be off before the rhythm aspect fails; ``rhythm_decides``: whether
    that failure alone makes the decision SUSPICIOUS (DTW warps time away, so without it a slow,
    careful imitation of the right shape passes; forgers are slow).
    """

    threshold: float
    rate_scale: float = 0.25
    rate_clamp: float = 50.0
    too_similar_ratio: float = 0.2
    rhythm_tolerance: float = 3.0
    rhythm_decides: bool = False
    path_copy_ratio: float = PATH_COPY_RATIO
    seen_copy_ratio: float = SEEN_COPY_RATIO

    @classmethod
    def on_probability(cls, probability: float, *, too_similar_ratio: float, rhythm_tolerance: float = 3.0,
                       rhythm_decides: bool = False, path_copy_ratio: float = PATH_COPY_RATIO,
                       seen_copy_ratio: float = SEEN_COPY_RATIO) -> "DecisionPolicy":
        """A policy on a calibrated probability of a genuine signature, accepted at or above
        ``probability``: the score is minus the logit, the match rate the probability with its
        logit shifted so that it is 0.5 at the operating point."""
        return cls(threshold=probability_score(probability), rate_scale=1.0, rate_clamp=700.0,
                   too_similar_ratio=too_similar_ratio, rhythm_tolerance=rhythm_tolerance,
                   rhythm_decides=rhythm_decides, path_copy_ratio=path_copy_ratio, seen_copy_ratio=seen_copy_ratio)

    def match_rate(self, score: float) -> float:
        return _rate((score - self.threshold) / self.rate_scale, self.rate_clamp)

    def is_copy(self, nearest: float, nearest_pair: float) -> bool:
        """Whether a query at ``nearest`` from its closest reference copies it (``nearest_pair``:
        the smallest distance between two references, same measure). A query at distance 0 is a
        copy whatever the references: with two identical references the pair is 0 apart, and a
        replay of one of them passed as no copy and was APPROVED (found by a review)."""
        return nearest <= 0.0 or nearest < self.too_similar_ratio * nearest_pair

    def is_path_copy(self, nearest_ratio: float, *, earlier: bool = False) -> bool:
        """Whether a pen question whose written path comes ``nearest_ratio`` of the references'
        own nearest pair close to a reference's (``earlier``: to a signature the customer gave
        before; ``models.path_copy.nearest_ratio``) retraces it: replayed with other timing, or
        traced, which :meth:`is_copy` on a verifier's distance misses. NaN is no evidence."""
        return nearest_ratio < self.path_copy_line(earlier=earlier)

    def path_copy_line(self, *, earlier: bool = False) -> float:
        """The line of :meth:`is_path_copy`, as a share of the references' nearest pair."""
        return self.seen_copy_ratio if earlier else self.path_copy_ratio

    def rhythm(self, durations: np.ndarray, ink_time: float) -> AspectCheck:
        """The rhythm aspect: the time spent writing against the references' own spread, on a log
        scale (twice as slow and twice as fast are equally far), mapped onto the distance scale
        so that the tolerance lands on the threshold. DTW warps time away, so it is checked apart."""
        refs = np.log(np.maximum(durations, 1e-3))
        spread = max(float(np.mean(np.abs(refs - refs.mean()))) if len(refs) > 1 else 0.0, 0.08)
        z = abs(math.log(max(ink_time, 1e-3)) - float(refs.mean())) / spread
        # From a genuine pace's distance (1, below the threshold) up to the threshold at the
        # tolerance. A threshold of 1 or less (a strict classic line) has no room above 1: the
        # genuine end is then the shipped line's share of it, or the similarity ran backwards, a
        # good pace under 50 % and a failing one over (found by a review).
        base = 1.0 if self.threshold > 1.0 else self.threshold * RHYTHM_BASE_SHARE
        d = base + (self.threshold - base) * max(0.0, z - 1.0) / max(self.rhythm_tolerance - 1.0, 1e-6)
        return AspectCheck("rhythm", ASPECT_LABELS["rhythm"], match_rate(d, self.threshold), z <= self.rhythm_tolerance)

    def redecide(self, verdict: Verdict) -> Verdict:
        """``verdict`` decided again under this policy: the same score, aspects, copy check and
        explanations, another threshold or rhythm rule (the site calibration, an application
        profile). The aspects stay as the verifier judged them."""
        # references too: a paper decision under a profile was recorded as a pen one (found by a review).
        return dataclasses.replace(self.decide(verdict.distance, verdict.aspects, too_similar=verdict.too_similar,
                                               explanations=verdict.explanations, anomaly=verdict.anomaly),
                                   references=verdict.references)

    def decide(self, score: float, aspects: Sequence[AspectCheck], *, too_similar: bool,
               explanations: tuple[str, ...] = (), anomaly: float | None = None) -> Verdict:
        """The verdict on ``score``; ``aspects`` explain it and, through the rhythm rule, the
        rhythm aspect (code ``"rhythm"``) may decide."""
        rhythm = next((a for a in aspects if a.code == "rhythm"), None)
        rhythm_fails = self.rhythm_decides and rhythm is not None and not rhythm.ok
        approved = score <= self.threshold and not too_similar and not rhythm_fails
        rate = self.match_rate(score)
        if self.rhythm_decides and rhythm is not None:
            # The rate a person sees agrees with the decision: below 50% exactly when it fails.
            rate = min(rate, rhythm.similarity)
        if too_similar:
            # A copy is SUSPICIOUS: it was shown and recorded at 98-100 % (found by a review).
            rate = min(rate, COPY_RATE)
        return Verdict(APPROVED if approved else SUSPICIOUS, rate, score, tuple(aspects), too_similar,
                       explanations, anomaly)
