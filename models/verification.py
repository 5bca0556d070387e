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
from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

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

    def nbytes(self) -> int:
        """The memory its features hold (:func:`footprint`); a paper set of pad references grows
        as questions have them drawn at other pen widths."""
        return footprint(self.features)

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


def footprint(features: object) -> int:
    """Bytes of the numpy buffers reachable from ``features`` (dataclass fields, mappings,
    sequences, plain objects' attributes), each buffer once: a view counts its whole base, which
    it keeps alive. What a cached reference set holds in memory, less Python's own objects."""
    seen: set[int] = set()
    total = 0
    todo: list[object] = [features]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen or base is obj:
                seen.add(id(base))
                total += base.nbytes
        elif is_dataclass(obj) and not isinstance(obj, type):
            todo.extend(getattr(obj, f.name) for f in fields(obj))
        elif isinstance(obj, Mapping):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            todo.extend(vars(obj).values())
    return total


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
    """A pen verifier (classic or fused): what the daemon needs of one.

    ``seen``: the :meth:`copy_print` of signatures the customer gave before (a kiosk keeps the
    latest few): a question that retraces one of them point for point is a copy, as one that
    retraces a reference is (``models.path_copy``)."""

    def verify(self, reference_set: ReferenceSet[Any], query: Trajectory, *,
               seen: Sequence[np.ndarray] = ()) -> Verdict: ...
    def copy_print(self, query: Trajectory) -> np.ndarray: ...
    def warm_up(self, sample: Trajectory) -> None: ...
