"""What an integrator (or a stored template) can hand the ``models`` library that must not turn
into APPROVED, unbounded work, or a verdict that changes afterwards. Each case was found by a
review of the public API on 2026-11-29 and failed on the code before."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from models import PenVerifier
from models.classic import ClassicConfig, signature_features
from models.enrollment import check_consistency
from models.fusion import Fusion
from models.pen import make_verifier
from models.trajectory import Trajectory, TrajectoryError
from tools.synth import make_population


@pytest.fixture(scope="module")
def genuine() -> list[Trajectory]:
    return list(make_population(n_writers=1, n_genuine=6, n_forgeries=0, seed=77)["001"][0])


def test_a_replayed_reference_is_a_copy_even_when_the_references_repeat(genuine: list[Trajectory]) -> None:
    """Two identical references are 0 apart, and the copy check (a query much closer to a
    reference than the references are to each other) then caught no copy: a replay of a
    reference came back APPROVED at distance 0."""
    v: PenVerifier = make_verifier("classic", 0.0)
    refs = v.enroll([genuine[0], genuine[0], genuine[1]])
    replay = v.verify(refs, genuine[0])
    assert replay.decision == "SUSPICIOUS" and replay.too_similar
    fresh = v.verify(refs, genuine[4])
    assert not fresh.too_similar
    # And the kiosk's enrollment refuses the same signature given twice.
    cfg = ClassicConfig()
    feats = signature_features(genuine[0], cfg)
    refusal = check_consistency(feats, [signature_features(genuine[1], cfg), feats.copy()], config=cfg)
    assert refusal is not None and refusal.code == "duplicate"


@pytest.mark.parametrize("field,value", [("bias", float("inf")), ("bias", float("nan")), ("weights", (float("nan"),)),
                                         ("threshold", float("-inf"))])
def test_a_fusion_with_a_non_finite_number_is_refused(field: str, value: object) -> None:
    """json reads Infinity and NaN: an infinite bias approved every query."""
    good = Fusion(("classic",), (-1.0,), 2.0)
    with pytest.raises(ValueError, match="finite"):
        dataclasses.replace(good, **{field: value})


def test_a_signature_whose_time_span_is_absurd_is_refused_quickly(genuine: list[Trajectory]) -> None:
    """The resampling makes points from the time span: two points 10 000 s apart made a million,
    10^12 s apart a MemoryError."""
    v = make_verifier("classic", 0.0)
    refs = v.enroll(genuine[:5])
    for span in (1e4, 1e12):
        g = genuine[5]
        t = np.linspace(0.0, span, len(g))
        started = time.perf_counter()
        with pytest.raises(TrajectoryError, match="last"):
            v.verify(refs, dataclasses.replace(g, t=t))
        assert time.perf_counter() - started < 1.0


def test_a_trajectory_does_not_change_with_the_callers_arrays(genuine: list[Trajectory]) -> None:
    """It kept a view of the caller's arrays: a NaN written into them after the checks reached it."""
    g = genuine[0]
    x = g.x.copy()
    t = dataclasses.replace(g, x=x)
    x[3] = np.nan
    assert np.isfinite(t.x).all()
    assert not t.x.flags.writeable


def test_a_reference_set_of_another_configuration_is_refused(genuine: list[Trajectory]) -> None:
    """The version string names the settings a decision reports, not every one the features
    depend on: a verifier with another prior and dynamics weight used the set, and a forgery one
    verifier refused (2.017) the other approved (0.773)."""
    from models.pen import ClassicVerifier
    from models.verification import ReferenceSetMismatch

    base = ClassicVerifier()
    other = ClassicVerifier(dataclasses.replace(base.config, dynamics_weight=base.config.dynamics_weight * 2))
    assert other.model_versions() == base.model_versions()
    refs = base.enroll(genuine[:5])
    with pytest.raises(ReferenceSetMismatch, match="another configuration"):
        other.verify(refs, genuine[5])
    assert base.verify(refs, genuine[5]).decision in ("APPROVED", "SUSPICIOUS")
