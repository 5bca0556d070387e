"""The classic distance's two warping paths (``models.classic.classic_distance``): every time
function on one, the dynamics again on their own, added with their weight."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.classic import DYNAMICS, ClassicConfig, build_template, classic_distance, score_query, signature_features
from models.dtw import dtw_distance
from models.features import FEATURE_NAMES
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
