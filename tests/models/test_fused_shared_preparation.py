"""The fused verifier prepares a questioned signature once, the learned model's way, for its classic
and learned parts: the shared points and time functions give the very numbers each part computes on
its own, and a classic part that prepares otherwise (the shipped one smooths jagged pads) prepares
its own. And what its model weighs 0 (the shipped model: the learned distance, every global
feature) is not computed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models._assets import FUSED_SCORE_FILE
from models.classic import signature_features
from models.global_features import deviations, global_features
from models.pen import FusedVerifier, make_verifier
from models.preprocess import PreprocessConfig, jaggedness, prepared_time_functions
from models.trajectory import Trajectory
from tools.benchmarks.learned import fused_model_dir
from tools.synth import make_population


def _model_dir(tmp_path: Path, learned_weight: float, duration_weight: float | None) -> Path:
    """The shipped model directory with its fused score's learned weight (and, optionally, a
    ``duration`` input) set."""
    fused_model_dir(tmp_path, learned_weight)
    if duration_weight is not None:
        d = json.loads((tmp_path / FUSED_SCORE_FILE).read_text())
        d["inputs"].append("duration")
        d["centre"].append(0.2)
        d["scale"].append(0.3)
        d["weights"].append(duration_weight)
        (tmp_path / FUSED_SCORE_FILE).write_text(json.dumps(d))
    return tmp_path


def _jagged(t: Trajectory) -> Trajectory:
    """The signature as a pad that reports jagged positions would: nudged one way, then the other,
    every 10 ms (each point the preparation's 100 Hz keeps)."""
    zigzag = np.where(np.floor(t.t / 0.01) % 2 == 0, 1.0, -1.0) * 0.01 * float(np.ptp(t.y))
    return replace(t, x=t.x + zigzag, y=t.y - zigzag)


def test_shared_preparation_changes_no_number(tmp_path: Path) -> None:
    ver = make_verifier("fused", 1.3, model_dir=_model_dir(tmp_path, -0.5, -0.4))
    assert isinstance(ver, FusedVerifier) and ver.score_model is not None
    assert ver.score_model.weighs_learned and ver.score_model.takes_globals
    genuine, forged = make_population(n_writers=1, n_genuine=7, n_forgeries=2, seed=4)["001"]
    refset = ver.enroll(genuine[:5])
    refs = refset.features_for(ver.name, ver.model_versions(), ver.build_key())
    assert refs.learned is not None and refs.globals is not None
    jagged = _jagged(genuine[6])
    # The shipped classic part smooths a jagged pad's points; the shipped student was trained on
    # them as they are, so the two parts prepare apart, and the classic features do change.
    unsmoothed = replace(ver.classic.config, preprocess=ver.learned.config.preprocess)
    assert ver.classic.config.preprocess != ver.learned.config.preprocess
    prep = prepared_time_functions(jagged, unsmoothed.preprocess).prepared
    assert jaggedness(prep.x, prep.y, prep.stroke) > ver.classic.config.preprocess.smooth_jagged
    assert not np.array_equal(signature_features(jagged, ver.classic.config),
                              signature_features(jagged, unsmoothed))
    for q in (genuine[5], forged[0], jagged):
        shared = prepared_time_functions(q, ver.learned.config.preprocess)
        assert np.array_equal(signature_features(q, unsmoothed, shared), signature_features(q, unsmoothed))
        assert np.array_equal(signature_features(q, ver.classic.config, shared),
                              signature_features(q, ver.classic.config))
        assert np.array_equal(ver.learned.embed(q, shared), ver.learned.embed(q))
        # The verdict is the one of the two parts computed apart.
        cv = ver.classic.verify_features(refs.classic, q)
        d_l = ver.learned.score(refs.learned, ver.learned.embed(q))
        x = ver.score_model.inputs(cv.distance, deviations(global_features(q), refs.globals, ver.score_model.spread),
                                   d_l)
        assert ver.verify(refset, q).distance == -float(ver.score_model.logit(x)[0])
    # The shipped classic part holds the direction where the pen rests: it takes the shared
    # points, not the shared time functions (they hold none: the learned model was trained so).
    x, y = genuine[5].x.copy(), genuine[5].y.copy()
    x[40:60], y[40:60] = x[40], y[40]
    resting = replace(genuine[5], x=x, y=y)
    held, unheld = unsmoothed, replace(unsmoothed, hold_still_direction=0)
    assert held.hold_still_direction == 2
    shared = prepared_time_functions(resting, held.preprocess)
    assert not np.array_equal(signature_features(resting, held), signature_features(resting, unheld))
    assert np.array_equal(signature_features(resting, held, shared), signature_features(resting, held))
    assert np.array_equal(signature_features(resting, unheld, shared), signature_features(resting, unheld))
    # Prepared another way, it is not used: each part prepares the signature itself.
    other = prepared_time_functions(genuine[5], PreprocessConfig(resample_hz=None))
    assert np.array_equal(signature_features(genuine[5], ver.classic.config, other),
                          signature_features(genuine[5], ver.classic.config))


def test_what_the_model_weighs_zero_is_not_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    ver = make_verifier("fused", 1.3)
    assert isinstance(ver, FusedVerifier) and ver.score_model is not None
    # The shipped fused model: the learned distance weighed 0 (README, "Does the fused operating
    # point transfer?"), no global feature.
    assert not ver.score_model.weighs_learned and not ver.score_model.takes_globals
    genuine, forged = make_population(n_writers=1, n_genuine=7, n_forgeries=2, seed=4)["001"]

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the learned model ran")

    monkeypatch.setattr(ver.learned, "embed", no_embedding)
    monkeypatch.setattr("models.pen.global_features", no_embedding)
    refset = ver.enroll(genuine[:5])
    refs = refset.features_for(ver.name, ver.model_versions(), ver.build_key())
    assert refs.learned is None and refs.globals is None
    for q in (genuine[5], forged[0]):
        # The score is the classic distance's alone: any learned distance gives the same.
        cv = ver.classic.verify_features(refs.classic, q)
        z = ver.score_model.no_globals()
        expected = [-float(ver.score_model.logit(ver.score_model.inputs(cv.distance, z, d))[0]) for d in (0.5, 3.0)]
        assert expected[0] == expected[1] == ver.verify(refset, q).distance


def test_a_model_that_weighs_the_learned_distance_refuses_a_set_without_it(tmp_path: Path) -> None:
    from models.runtime import ModelError
    from models.verification import ReferenceSet

    shipped = make_verifier("fused", 1.3)
    ver = make_verifier("fused", 1.3, model_dir=_model_dir(tmp_path, -0.5, None))
    genuine = make_population(n_writers=1, n_genuine=6, n_forgeries=0, seed=5)["001"][0]
    # Enrolled by the shipped model (no embeddings), relabelled with this model's versions: the
    # verifier says what is missing rather than scoring without it.
    forged_set = ReferenceSet(ver.name, ver.model_versions(), 5, shipped.enroll(genuine[:5]).features,
                              build=ver.build_key())
    with pytest.raises(ModelError, match="does not hold what its model needs"):
        ver.verify(forged_set, genuine[5])
