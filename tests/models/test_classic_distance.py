"""The classic distance's two warping paths (``models.classic.classic_distance``): every time
function on one, the dynamics again on their own, added with their weight."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from models.classic import DYNAMICS, ClassicConfig, build_template, classic_distance, score_query, signature_features
from models.dtw import dtw_distance
from models.features import FEATURE_NAMES
from models.trajectory import Trajectory
from tools.synth import make_population


def _pair() -> tuple[np.ndarray, np.ndarray]:
    genuine, _ = make_population(n_writers=1, n_genuine=2, n_forgeries=0, seed=3)["001"]
    cfg = ClassicConfig()
    return signature_features(genuine[0], cfg), signature_features(genuine[1], cfg)


def test_the_distance_is_one_path_plus_the_weighted_dynamics_path() -> None:
    a, b = _pair()
    cfg = ClassicConfig()
    cols = [FEATURE_NAMES.index(f) for f in DYNAMICS]
    assert list(cfg.dynamics_columns) == cols
    one = dtw_distance(a, b, cfg.band)
    apart = dtw_distance(a[:, cols], b[:, cols], cfg.band)
    assert classic_distance(a, b, cfg) == pytest.approx(one + cfg.dynamics_weight * apart, rel=1e-12)
    assert classic_distance(a, b, replace(cfg, dynamics_weight=2.5)) == pytest.approx(one + 2.5 * apart, rel=1e-12)
    # Without dynamics, or at weight 0, the one path alone.
    assert classic_distance(a, b, replace(cfg, dynamics=())) == one
    assert classic_distance(a, b, replace(cfg, dynamics_weight=0.0)) == one
    assert classic_distance(a, b, cfg) == pytest.approx(classic_distance(b, a, cfg), rel=1e-12)
    assert classic_distance(a, a, cfg) == 0.0


def test_the_template_and_query_use_it() -> None:
    genuine, forged = make_population(n_writers=1, n_genuine=6, n_forgeries=1, seed=8)["001"]
    cfg = ClassicConfig()
    refs = [signature_features(t, cfg) for t in genuine[:5]]
    tpl = build_template(refs, cfg)
    assert tpl.ref_distances[0, 1] == pytest.approx(classic_distance(refs[0], refs[1], cfg), rel=1e-12)
    q = signature_features(forged[0], cfg)
    assert score_query(tpl, q, cfg).ref_distances == tuple(classic_distance(q, r, cfg) for r in refs)


def test_the_aspect_groups_come_from_the_same_passes() -> None:
    from models.classic import build_template_with_groups, classic_distance_with_groups, score_query_with_groups

    genuine, forged = make_population(n_writers=1, n_genuine=4, n_forgeries=1, seed=5)["001"]
    cfg = ClassicConfig()
    refs = [signature_features(t, cfg) for t in genuine[:3]]
    q = signature_features(forged[0], cfg)
    groups = [(0, 1, 7), (2,)]

    def plain(x: np.ndarray, y: np.ndarray, g: tuple[int, ...]) -> float:
        return dtw_distance(x[:, list(g)], y[:, list(g)], cfg.band)

    dist, parts = classic_distance_with_groups(q, refs[0], cfg, groups)
    assert dist == classic_distance(q, refs[0], cfg)
    assert parts.tolist() == [plain(q, refs[0], g) for g in groups]
    tpl, ref_parts = build_template_with_groups(refs, cfg, groups)
    assert tpl.ref_distances.tolist() == build_template(refs, cfg).ref_distances.tolist()
    assert ref_parts.shape == (2, 3, 3) and ref_parts[1, 2, 0] == ref_parts[1, 0, 2] == plain(refs[0], refs[2], (2,))
    assert np.all(np.diagonal(ref_parts, axis1=1, axis2=2) == 0.0)
    score, q_parts = score_query_with_groups(tpl, q, cfg, groups)
    assert score == score_query(tpl, q, cfg)
    assert q_parts.tolist() == [[plain(q, r, g) for r in refs] for g in groups]
    assert score_query_with_groups(tpl, q, cfg)[1].shape == (0, 3)


def test_bad_dynamics_are_refused() -> None:
    with pytest.raises(ValueError, match="not among the compared features"):
        ClassicConfig(features=("x", "y"))
    with pytest.raises(ValueError, match="dynamics_weight"):
        ClassicConfig(dynamics_weight=-1.0)
    with pytest.raises(ValueError, match="dynamics_weight"):
        ClassicConfig(dynamics_weight=float("nan"))
    assert ClassicConfig(features=("x", "y"), dynamics=()).dynamics_columns.size == 0


def test_a_reference_set_built_with_one_path_is_not_compared_with_two() -> None:
    from models.pen import ClassicVerifier
    from models.verification import ReferenceSetMismatch

    genuine, _ = make_population(n_writers=1, n_genuine=6, n_forgeries=0, seed=9)["001"]
    one = ClassicVerifier(ClassicConfig(dynamics=()))
    two = ClassicVerifier()
    assert one.model_versions()["classic"] != two.model_versions()["classic"]
    with pytest.raises(ReferenceSetMismatch):
        two.verify(one.enroll(genuine[:5]), genuine[5])


def test_a_distance_between_two_signatures_without_pressure_is_scaled_and_no_other() -> None:
    """``ClassicConfig.no_pressure_scale``: a pad without pressure compares 12 of the 14 time
    functions; its distances are scaled back to the prior's (with pressure) scale."""
    from models.classic import NO_PRESSURE_SCALE, classic_distance_with_groups
    from models.device_variants import without_pressure

    genuine, _ = make_population(n_writers=1, n_genuine=2, n_forgeries=0, seed=3)["001"]
    assert all(t.device.has_pressure for t in genuine)
    cfg = ClassicConfig()
    bare = replace(cfg, no_pressure_scale=1.0)
    assert cfg.no_pressure_scale == NO_PRESSURE_SCALE > 1.0
    a, b = (signature_features(t, cfg) for t in genuine)
    a0, b0 = (signature_features(without_pressure(t), cfg) for t in genuine)
    assert not cfg.lacks_pressure(a) and cfg.lacks_pressure(a0) and cfg.lacks_pressure(b0)
    d0 = classic_distance(a0, b0, bare)
    assert d0 < classic_distance(a, b, bare)             # pressure no longer disagrees
    assert classic_distance(a0, b0, cfg) == pytest.approx(NO_PRESSURE_SCALE * d0, rel=1e-12)
    # With pressure on either side nothing is scaled (a pad changed between enrollment and now
    # is not made to look like a pad without pressure).
    assert classic_distance(a, b, cfg) == classic_distance(a, b, bare)
    assert classic_distance(a0, b, cfg) == classic_distance(a0, b, bare)
    assert classic_distance(a, b0, cfg) == classic_distance(a, b0, bare)
    # The aspect checks' plain DTWs are not scaled.
    groups = [(0, 1), (5,)]
    assert (classic_distance_with_groups(a0, b0, cfg, groups)[1].tolist()
            == classic_distance_with_groups(a0, b0, bare, groups)[1].tolist())
    # A pen that reports one pressure level throughout carries no pressure either: z-scored, its
    # pressure is zero up to rounding, and so is its change.
    flat = a.copy()
    flat[:, FEATURE_NAMES.index("dpressure")] = 0.0
    flat[:, FEATURE_NAMES.index("pressure")] = 1e-12
    assert cfg.lacks_pressure(flat)
    flat[:, FEATURE_NAMES.index("pressure")] = 1e-3
    assert not cfg.lacks_pressure(flat)
    # What a pad without pressure gives, from what one with pressure gave.
    np.testing.assert_allclose(cfg.pressure_dropped(a), a0, atol=1e-9)
    assert not cfg.lacks_pressure(a)
    # Features that do not compare pressure are never scaled.
    no_p = ClassicConfig(features=tuple(f for f in FEATURE_NAMES if f not in ("pressure", "dpressure")))
    x0, y0 = (signature_features(without_pressure(t), no_p) for t in genuine)
    assert not no_p.lacks_pressure(x0)
    assert classic_distance(x0, y0, no_p) == classic_distance(x0, y0, replace(no_p, no_pressure_scale=1.0))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="no_pressure_scale"):
            ClassicConfig(no_pressure_scale=bad)


def test_without_pressure_a_customers_references_lie_as_far_apart_as_the_prior_says() -> None:
    """On real pen signatures (SUSIG-Visual training writers, 5 references each), the references'
    mean distance without pressure, scaled, is nearer the same writers' with pressure than as DTW
    gives it: the prior the user normalisation leans on (fitted with pressure) keeps its meaning."""
    from shared_data import shared_data

    from models.device_variants import without_pressure
    from models.scoring import reference_stats
    from tools.datasets import load_online, writer_split

    ds = load_online(shared_data("online/susig/VisualSubCorpus"), "susig-visual")
    writers = [w for w in sorted(ds.writers) if writer_split(w) == "train"][:6]
    cfg = ClassicConfig()
    bare = replace(cfg, no_pressure_scale=1.0)

    def mean_reference_distance(transform: Callable[[Trajectory], Trajectory], config: ClassicConfig) -> float:
        means = []
        for w in writers:
            feats = [signature_features(transform(s.trajectory), config) for s in ds.genuine(w)[:5]]
            means.append(reference_stats(build_template(feats, config).ref_distances).mean_dist)
        return float(np.mean(means))

    recorded = mean_reference_distance(lambda t: t, cfg)
    unscaled = mean_reference_distance(without_pressure, bare)
    scaled = mean_reference_distance(without_pressure, cfg)
    assert scaled == pytest.approx(cfg.no_pressure_scale * unscaled, rel=1e-9)
    assert abs(scaled - recorded) < abs(unscaled - recorded)
    assert unscaled < 0.95 * recorded


def test_a_pad_without_pressure_gets_no_pressure_check_and_the_same_decision_scale() -> None:
    """On a pad without a pressure sensor the "Pressure" aspect would always match, on nothing:
    it is left out. Where question and references carry pressure it is shown."""
    from models.device_variants import without_pressure
    from models.pen import ClassicVerifier

    genuine, forged = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=4)["001"]
    ver = ClassicVerifier()
    bare = [without_pressure(t) for t in genuine]
    codes = [a.code for a in ver.verify(ver.enroll(genuine[:5]), genuine[5]).aspects]
    assert codes == ["shape", "speed", "pressure", "rhythm"]
    v0 = ver.verify(ver.enroll(bare[:5]), bare[5])
    assert [a.code for a in v0.aspects] == ["shape", "speed", "rhythm"]
    # Pressure on one side only (a pad changed since enrollment): not shown as a pressure check either.
    assert "pressure" not in [a.code for a in ver.verify(ver.enroll(genuine[:5]), bare[5]).aspects]
    assert "pressure" not in [a.code for a in ver.verify(ver.enroll(bare[:5]), genuine[5]).aspects]
    # The score is the scaled distance's: the unscaled verifier sees the same signature closer.
    unscaled = ClassicVerifier(replace(ClassicConfig(), no_pressure_scale=1.0))
    u0 = unscaled.verify(unscaled.enroll(bare[:5]), without_pressure(forged[0]))
    s0 = ver.verify(ver.enroll(bare[:5]), without_pressure(forged[0]))
    assert s0.distance > u0.distance


def test_a_pad_changed_since_enrollment_is_compared_on_what_both_measure() -> None:
    """References with pressure and a question without (a bank swapped the pad), or the other way
    round: both are compared as two signatures without pressure, so the decision means what it
    means on a pad without pressure, not "the pressure differs"."""
    from models.device_variants import without_pressure
    from models.pen import ClassicVerifier

    genuine, forged = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=6)["001"]
    ver = ClassicVerifier()
    with_p = ver.enroll(genuine[:5])
    bare = ver.enroll([without_pressure(t) for t in genuine[:5]])
    from models.pen import PRESSURE_NOT_IN_REFERENCES, PRESSURE_NOT_MEASURED

    for q in (genuine[5], forged[0]):
        both_bare = ver.verify(bare, without_pressure(q))
        assert both_bare.explanations == ver.verify(with_p, q).explanations == ()   # one pad throughout
        # Staff are told why pressure did not count (the pad changed, one way or the other).
        assert ver.verify(with_p, without_pressure(q)).explanations == (PRESSURE_NOT_MEASURED,)
        assert ver.verify(bare, q).explanations == (PRESSURE_NOT_IN_REFERENCES,)
        for mixed in (ver.verify(with_p, without_pressure(q)), ver.verify(bare, q)):
            assert mixed.distance == pytest.approx(both_bare.distance, rel=1e-9)
            assert mixed.decision == both_bare.decision
            assert [a.code for a in mixed.aspects] == ["shape", "speed", "rhythm"]
            assert [a.ok for a in mixed.aspects] == [a.ok for a in both_bare.aspects]
            assert [a.similarity for a in mixed.aspects] == pytest.approx([a.similarity for a in both_bare.aspects])
        # Against the references as they are, the missing pressure would count as a difference.
        feats = signature_features(without_pressure(q), ver.config)
        plain = score_query(with_p.features_for(ver.name, ver.model_versions(), ver.build_key()).references,
                            feats, ver.config)
        assert plain.distance != pytest.approx(both_bare.distance, rel=1e-3)
    # A reference shown again on the new pad is still a copy (the references' distances among
    # themselves were measured again, without pressure).
    assert ver.verify(with_p, without_pressure(genuine[2])).too_similar


def test_comparable_keeps_pressure_when_the_question_and_most_references_have_it() -> None:
    """``models.classic.comparable``: which side drops its pressure, and when the references must
    be measured again."""
    from models.classic import comparable
    from models.device_variants import without_pressure

    genuine, _ = make_population(n_writers=1, n_genuine=6, n_forgeries=0, seed=2)["001"]
    cfg = ClassicConfig()
    with_p = [signature_features(t, cfg) for t in genuine]
    bare = [signature_features(without_pressure(t), cfg) for t in genuine]
    q, refs = comparable(with_p[5], with_p[:5], cfg)
    assert q is with_p[5] and refs is None                        # one pad throughout
    q, refs = comparable(bare[5], bare[:5], cfg)
    assert cfg.lacks_pressure(q) and refs is None                 # one pad without pressure
    q, refs = comparable(bare[5], with_p[:5], cfg)                # the new pad lacks it
    assert cfg.lacks_pressure(q) and refs is not None and all(cfg.lacks_pressure(r) for r in refs)
    np.testing.assert_allclose(refs[0], bare[0], atol=1e-9)
    q, refs = comparable(with_p[5], bare[:5], cfg)                # the new pad has it: nothing to redo
    assert cfg.lacks_pressure(q) and refs is None
    # One reference of five without pressure (a pen that reported one level) does not take
    # pressure away from the other four; three of five do.
    q, refs = comparable(with_p[5], [bare[0], *with_p[1:5]], cfg)
    assert q is with_p[5] and refs is None
    q, refs = comparable(with_p[5], [*bare[:3], *with_p[3:5]], cfg)
    assert cfg.lacks_pressure(q) and refs is not None and all(cfg.lacks_pressure(r) for r in refs)


def test_the_enrollment_check_compares_a_pad_changed_between_samples_as_the_verifier_does() -> None:
    """Adding samples after a pad change: a new sample without pressure is measured against the
    earlier ones on what both measure, not refused for the pressure it cannot have."""
    from models.device_variants import without_pressure
    from models.enrollment import consistency_score

    genuine, _ = make_population(n_writers=1, n_genuine=6, n_forgeries=0, seed=7)["001"]
    cfg = ClassicConfig()
    with_p = [signature_features(t, cfg) for t in genuine]
    bare = [signature_features(without_pressure(t), cfg) for t in genuine]
    same_pad = consistency_score(bare[5], bare[:5], cfg)
    assert consistency_score(bare[5], with_p[:5], cfg) == pytest.approx(same_pad, rel=1e-9)
    assert consistency_score(with_p[5], bare[:5], cfg) == pytest.approx(same_pad, rel=1e-9)
    from models.scoring import normalised_distance, pairwise, reference_stats

    # Measured as it was (the missing pressure a difference), the same sample looks further off.
    unscaled = replace(cfg, no_pressure_scale=1.0)
    before = normalised_distance(np.array([classic_distance(bare[5], a, unscaled) for a in with_p[:5]]),
                                 reference_stats(pairwise(with_p[:5], lambda a, b: classic_distance(a, b, unscaled))),
                                 cfg.prior)
    assert before > same_pad
