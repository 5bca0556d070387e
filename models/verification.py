"""The verifier contract: ``enroll(references) -> ReferenceSet``, ``verify(reference_set, query) -> Verdict``.

One contract for every verifier, generic in what is questioned: a pen verifier is a
``Verifier[Trajectory]`` (:class:`PenVerifier`), the paper verifier a ``Verifier[SignatureImage]``.
A :class:`ReferenceSet` is what enrollment produced: the verifier's own features of the
customer's references, with the verifier and model versions that built them; a verifier refuses a
set another model built (:class:`models.errors.ReferenceSetMismatch`), so features of two models
are never compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from models.errors import ReferenceSetMismatch
from models.policy import DecisionPolicy, Verdict
from models.trajectory import Trajectory

Q = TypeVar("Q", contravariant=True)
F = TypeVar("F")


@dataclass(frozen=True, eq=False)
class ReferenceSet(Generic[F]):
    """One customer's enrolled references as a verifier compares them.

    ``features`` belong to the verifier that built the set (opaque to everyone else);
    ``model_versions`` are that verifier's :meth:`Verifier.model_versions` at enrollment.
    Built by :meth:`Verifier.enroll` only; it holds features, never the raw references."""

    verifier: str
    model_versions: Mapping[str, str]
    size: int
    features: F = field(repr=False)
    #: The building verifier's whole configuration, digested (``build_key``): the versions name the
    #: settings a decision reports, not every one the features depend on.
    build: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_versions", MappingProxyType(dict(self.model_versions)))

    def features_for(self, verifier: str, model_versions: Mapping[str, str], build: str = "") -> F:
        """The features, if this set was built by ``verifier`` at ``model_versions`` with the
        configuration digested in ``build``. (A verifier with another prior or feature set but the
        same version string used the set, and a forgery one verifier refused another approved;
        found by a review.)"""
        if verifier != self.verifier or dict(model_versions) != dict(self.model_versions):
            raise ReferenceSetMismatch(
                f"reference set built by {self.verifier} {dict(self.model_versions)}, "
                f"not by {verifier} {dict(model_versions)}: enroll the references again with this verifier")
        if build != self.build:
            raise ReferenceSetMismatch(
                f"reference set built by {self.verifier} with another configuration ({self.build or 'none'}, "
                f"not {build or 'none'}): enroll the references again with this verifier")
        return self.features


def build_key(config: object) -> str:
    """A digest of a verifier's configuration (a frozen dataclass: its repr names every field)."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


class Verifier(Protocol[Q]):
    """What every verifier offers (pen: ``Verifier[Trajectory]``, paper: ``Verifier[SignatureImage]``)."""

    @property
    def name(self) -> str: ...
    @property
    def policy(self) -> DecisionPolicy: ...
    def model_versions(self) -> dict[str, str]: ...
    def enroll(self, references: Sequence[Q]) -> ReferenceSet[Any]: ...
    def verify(self, reference_set: ReferenceSet[Any], query: Q) -> Verdict: ...


class PenVerifier(Verifier[Trajectory], Protocol):
    """A pen verifier (classic or fused): what the daemon needs of one."""

    def warm_up(self, sample: Trajectory) -> None: ...
