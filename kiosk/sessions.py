"""Enrollment and verification sessions over ``models/``: what one customer does at the kiosk.

Enrollment wraps ``models.enrollment.Enrollment`` (the same checks the evaluator and the demo
use): each sample is accepted ("Save (n/N)") or refused at once with reasons, and the customer
signs again. The accepted *trajectories* are kept for the encrypted template store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.classic import ClassicConfig, signature_features
from models.enrollment import Enrollment, EnrollmentPolicy, Refusal
from models.policy import Verdict
from models.trajectory import Trajectory
from models.verification import PenVerifier, ReferenceSet


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class SampleResult:
    accepted: bool
    count: int            # accepted so far
    needed: int
    refusals: tuple[Refusal, ...] = ()

    @property
    def label(self) -> str:
        return f"Save ({self.count}/{self.needed})"


@dataclass
class EnrollmentSession:
    customer: str
    mode: str                                 # "new", "replace" or "add"
    policy: EnrollmentPolicy
    max_attempts: int
    config: ClassicConfig = field(default_factory=ClassicConfig)
    session_id: str = field(default_factory=new_session_id)
    seed: list[Trajectory] = field(default_factory=list)   # existing references ("add")
    accepted: list[Trajectory] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        # Existing references count for consistency, not towards the new samples asked for.
        self._inner = Enrollment(policy=replace(self.policy, references=len(self.seed) + self.policy.references),
                                 config=self.config,
                                 accepted=[signature_features(t, self.config) for t in self.seed])

    @property
    def complete(self) -> bool:
        return len(self.accepted) >= self.policy.references

    @property
    def exhausted(self) -> bool:
        return not self.complete and self.attempts >= self.max_attempts

    def add(self, traj: Trajectory) -> SampleResult:
        self.attempts += 1
        refusals = self._inner.add(traj)
        if not refusals:
            self.accepted.append(traj)
        return SampleResult(not refusals, len(self.accepted), self.policy.references, tuple(refusals))

    def references(self) -> list[Trajectory]:
        return [*self.seed, *self.accepted]


@dataclass(frozen=True)
class VerificationOutcome:
    customer: str
    session_id: str
    verdict: Verdict
    verify_ms: float
    source: str          # "screen" or "central"


def verify(verifier: PenVerifier, reference_set: ReferenceSet[Any], customer: str, traj: Trajectory,
           session_id: str, source: str, seen: Sequence[np.ndarray] = ()) -> VerificationOutcome:
    """``seen``: the written paths of signatures the customer gave before (``TemplateStore.seen``)."""
    t0 = time.perf_counter()
    verdict = verifier.verify(reference_set, traj, seen=seen)
    return VerificationOutcome(customer, session_id, verdict, (time.perf_counter() - t0) * 1e3, source)
