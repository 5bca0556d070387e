"""Enrollment: from N reference signatures to a template, refusing bad samples with a reason.

A refusal happens at once, sample by sample, so the person can sign again: too short, too quick
or too slow, too few points, or unlike the samples already accepted. The thresholds were set on
the genuine signatures of the shared data's training writers so that almost no genuine sample is
refused (see README, "Enrollment").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from models.classic import ClassicConfig, build_template, classic_distance, comparable, signature_features
from models.errors import VerificationError
from models.preprocess import Prepared, prepare
from models.scoring import ScoredReferences, normalised_distance, pairwise, reference_stats
from models.trajectory import Trajectory, TrajectoryError


@dataclass(frozen=True)
class EnrollmentPolicy:
    """Limits a reference sample must meet.

    ``max_ink_rate``: pen-down path length per second, in signature heights (the scale
    ``prepare`` normalises to). A scribble dashed off in a fraction of a second exceeds it.
    ``max_inconsistency``: the user-normalised distance of a new sample to those accepted before
    it, above which it is refused as unlike them (a typical genuine is about 1).
    """

    min_points: int = 40
    min_duration_s: float = 0.4
    max_duration_s: float = 60.0
    min_ink_rate: float = 1.0
    max_ink_rate: float = 250.0
    max_inconsistency: float = 2.0
    references: int = 5


@dataclass(frozen=True)
class Refusal:
    """Why one sample was refused: a stable ``code`` for software, a ``message`` for people."""

    code: str
    message: str


class EnrollmentError(VerificationError, ValueError):
    def __init__(self, refusals: list[tuple[int, Refusal]]) -> None:
        self.refusals = refusals
        super().__init__("; ".join(f"sample {i + 1}: {r.message}" for i, r in refusals))


def check_sample(traj: Trajectory, policy: EnrollmentPolicy = EnrollmentPolicy(),
                 config: ClassicConfig = ClassicConfig()) -> list[Refusal]:
    """What is wrong with one sample on its own (empty when it is usable)."""
    out: list[Refusal] = []
    down = int(np.count_nonzero(traj.pen_down))
    if down < policy.min_points:
        out.append(Refusal("too_short", f"too little ink ({down} points, need {policy.min_points}): please sign again"))
        return out
    ink_time = traj.ink_time
    if traj.duration < policy.min_duration_s:
        out.append(Refusal("too_fast", f"signed in {traj.duration:.2f} s: please sign at your usual pace"))
        return out
    if traj.duration > policy.max_duration_s:
        out.append(Refusal("too_slow", f"took {traj.duration:.0f} s: please sign at your usual pace"))
        return out
    try:
        prep = prepare(traj, config.preprocess)
    except TrajectoryError as e:
        out.append(Refusal("unusable", f"signature cannot be used ({e}): please sign again"))
        return out
    rate = _ink_length(prep) / max(ink_time, 1e-3)
    if rate > policy.max_ink_rate:
        out.append(Refusal("too_fast", "signed much faster than a signature is written: please sign at your usual pace"))
    elif rate < policy.min_ink_rate:
        out.append(Refusal("too_slow", "signed very slowly: please sign at your usual pace"))
    return out


def _ink_length(prep: Prepared) -> float:
    same = np.diff(prep.stroke) == 0
    steps = np.hypot(np.diff(prep.x), np.diff(prep.y))
    return float(steps[same].sum())


def consistency_score(new: np.ndarray, accepted: list[np.ndarray], config: ClassicConfig = ClassicConfig()) -> float:
    """A new sample's user-normalised classic distance to the samples accepted before it (about 1
    for a typical genuine signature): what :func:`check_consistency` compares with the policy."""
    if not accepted:
        raise ValueError("no accepted sample to compare with")
    # Compared as the verifier compares them (a pad changed since the first samples: on what
    # both measure).
    new, dropped = comparable(new, accepted, config)
    accepted = dropped if dropped is not None else accepted
    d_new = np.array([classic_distance(new, a, config) for a in accepted])
    stats = reference_stats(pairwise(accepted, lambda a, b: classic_distance(a, b, config)))
    return normalised_distance(d_new, stats, config.prior)


def check_consistency(new: np.ndarray, accepted: list[np.ndarray],
                      policy: EnrollmentPolicy = EnrollmentPolicy(),
                      config: ClassicConfig = ClassicConfig()) -> Refusal | None:
    """Is a new sample's shape and rhythm like the samples accepted so far? ``None`` when it is."""
    if not accepted:
        return None
    if any(a.shape == new.shape and np.array_equal(a, new) for a in accepted):
        # The same signature twice (a replayed stream): two identical references are 0 apart, and
        # the copy check, which measures against the references' own closest pair, then caught no
        # copy of them (found by a review).
        return Refusal("duplicate", "this is the same signature as one already given: please sign again")
    if consistency_score(new, accepted, config) > policy.max_inconsistency:
        return Refusal(
            "inconsistent",
            "this signature differs from your earlier ones: please sign again as you usually do",
        )
    return None


@dataclass
class Enrollment:
    """An enrollment in progress: add samples one at a time ("Save (n/N)"), then build."""

    policy: EnrollmentPolicy = field(default_factory=EnrollmentPolicy)
    config: ClassicConfig = field(default_factory=ClassicConfig)
    accepted: list[np.ndarray] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.accepted) >= self.policy.references

    def add(self, traj: Trajectory) -> list[Refusal]:
        """Accept the sample (returns no refusal) or say why not; a refused sample is not kept."""
        refusals = check_sample(traj, self.policy, self.config)
        if refusals:
            return refusals
        feats = signature_features(traj, self.config)
        r = check_consistency(feats, self.accepted, self.policy, self.config)
        if r is not None:
            return [r]
        self.accepted.append(feats)
        return []

    def template(self) -> ScoredReferences:
        if not self.complete:
            raise ValueError(f"enrollment incomplete: {len(self.accepted)}/{self.policy.references} samples")
        return build_template(self.accepted, self.config)


def enroll(trajs: list[Trajectory], policy: EnrollmentPolicy = EnrollmentPolicy(),
           config: ClassicConfig = ClassicConfig()) -> ScoredReferences:
    """All at once: every sample must pass, or ``EnrollmentError`` lists each refusal."""
    session = Enrollment(policy=replace(policy, references=len(trajs)), config=config)
    refusals = [(i, r) for i, t in enumerate(trajs) for r in session.add(t)]
    if refusals:
        raise EnrollmentError(refusals)
    return session.template()
