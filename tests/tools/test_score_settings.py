"""``tools.score_settings``: how the match score's global features are chosen on the cross-device
protocol's train + validate writers. The protocol itself is ``tools.cross_device``'s (tested
there on real data); here the difference to classic, its standard error and the choosing rule,
on constructed scores and rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.evaluate import Scores
from tools.score_settings import TIE, choose, difference, is_worse, prior_settings, row, settings


def _scores(rng: np.random.Generator, writers: int, skilled_shift: float) -> Scores:
    sc = Scores()
    for w in range(writers):
        for g in rng.normal(1.0, 0.1, 10):
            sc.add("genuine", f"w{w}", float(g))
        for f in rng.normal(1.0 + skilled_shift, 0.1, 10):
            sc.add("skilled", f"w{w}", float(f))
        for r in rng.normal(2.0, 0.1, 5):
            sc.add("random", f"w{w}", float(r))
    return sc


def test_a_worse_setting_shows_a_positive_difference_beyond_its_error() -> None:
    rng = np.random.default_rng(0)
    good, bad = _scores(rng, 40, 0.4), _scores(rng, 40, 0.15)
    d, se, one_trial = difference(good, bad, np.random.default_rng(1))
    assert d > 3 * se > 0 and d > one_trial
    # 400 genuine and 400 skilled trials: one moves the EER by about 50 / 400 points.
    assert one_trial == pytest.approx(0.125)
    same, se0, _ = difference(good, good, np.random.default_rng(1))
    assert same == 0.0 and se0 == 0.0
    r = row("bad", {"a": bad}, {"a": good})
    assert r["worse_than_classic"] == ["a"] and r["sets"]["a"]["vs_classic"] == pytest.approx(d, abs=1e-3)
    assert row("same", {"a": good}, {"a": good})["worse_than_classic"] == []


def test_a_change_smaller_than_one_trial_is_not_worse() -> None:
    """NFI under the held direction from rests of two points: +0.022 with a standard error of
    0.018, where one trial is 0.045 points."""
    assert not is_worse(0.022, 0.018, 0.045)
    assert is_worse(0.091, 0.027, 0.045)
    assert not is_worse(0.2, 0.3, 0.045)
    assert not is_worse(0.0, 0.0, 0.045)


def _row(name: str, total: float, worse: list[str] | None = None) -> dict:
    return {"setting": name, "skilled_sum": total, "worse_than_classic": worse or []}


def test_the_rule_skips_a_setting_worse_anywhere_and_prefers_fewer_features_within_the_tie() -> None:
    rows = [_row("ten", 18.0, ["jp"]), _row("none", 20.3), _row("one", 20.0), _row("three", 19.0)]
    counts = {"ten": 10, "none": 0, "one": 1, "three": 3}
    # "ten" has the lowest sum but is worse than classic on one set; "three" is the lowest left,
    # and "one" and "none" are not within the tie of it.
    assert choose(rows, counts) == "three"
    assert 20.0 - 19.0 > TIE
    rows[3] = _row("three", 19.9)
    assert choose(rows, counts) == "none"          # all three within 0.5 of 19.9: fewest features
    with pytest.raises(ValueError):
        choose([_row("ten", 18.0, ["jp"])], {"ten": 10})


def test_the_compared_settings_hold_the_shipped_one_and_the_one_before() -> None:
    from tools.train.score_fit import VALIDATION_CHOSEN_FEATURES, FitOptions

    labels = {s.label: s for s in settings()}
    assert labels["classic"].options is None
    shipped = [s for s in labels.values() if s.options == FitOptions()]
    assert len(shipped) == 1 and shipped[0].options is not None and shipped[0].options.features == ()
    assert any(s.options is not None and s.options.features == VALIDATION_CHOSEN_FEATURES for s in labels.values())


def test_the_prior_sweep_is_classic_at_other_strengths_and_holds_the_shipped_reference() -> None:
    from models.classic import ClassicConfig

    compared = prior_settings()
    assert compared[0].label == "classic" and compared[0].prior_strength is None
    strengths = [s.prior_strength for s in compared[1:]]
    assert all(s.options is None for s in compared) and ClassicConfig().prior.strength not in strengths


def test_the_parts_sweep_adds_what_the_shipped_distance_adds() -> None:
    """``--classic-parts`` adds a group's one-path distances to the one-path distances, trial for
    trial; with the shipped group and weight that is the shipped classic distance."""
    from dataclasses import replace

    from models.classic import ClassicConfig, classic_distance, signature_features
    from models.dtw import dtw_distance
    from tools.cross_device import Measured
    from tools.score_settings import DYNAMICS_CANDIDATES, DYNAMICS_WEIGHTS, added
    from tools.synth import make_population

    shipped = ClassicConfig()
    assert shipped.dynamics in DYNAMICS_CANDIDATES.values() and shipped.dynamics_weight in DYNAMICS_WEIGHTS
    genuine, forged = make_population(n_writers=1, n_genuine=3, n_forgeries=2, seed=2)["001"]
    feats = [signature_features(t, shipped) for t in genuine]
    qs = [signature_features(t, shipped) for t in forged]
    part = replace(shipped, features=shipped.dynamics, dynamics=())

    def matrices(dist):  # type: ignore[no-untyped-def]
        cc = np.array([[dist(a, b) for b in feats] for a in feats])
        return cc, {"skilled": np.array([[dist(q, b) for b in feats] for q in qs])}

    def cols(x: np.ndarray) -> np.ndarray:
        return x[:, shipped.dynamics_columns]

    # The tool measures the group as its own feature set: the same columns, z-scored alike.
    for t, f in zip(genuine, feats):
        np.testing.assert_array_equal(signature_features(t, part), cols(f))
    base, extra = Measured(), Measured()
    base.by_k[5] = [(None, *matrices(lambda a, b: dtw_distance(a, b, shipped.band)))]
    extra.by_k[5] = [(None, *matrices(lambda a, b: dtw_distance(cols(a), cols(b), part.band)))]
    (_, d_cc, dq), = added(base, extra, shipped.dynamics_weight).by_k[5]
    want_cc, want_q = matrices(lambda a, b: classic_distance(a, b, shipped))
    np.testing.assert_allclose(d_cc, want_cc, rtol=1e-12)
    np.testing.assert_allclose(dq["skilled"], want_q["skilled"], rtol=1e-12)


def test_the_preprocess_sweep_tries_only_unshipped_preparations_and_adds_only_measured_ones() -> None:
    from models.classic import ClassicConfig
    from tools.score_settings import ENSEMBLES, preprocess_candidates

    shipped = ClassicConfig().preprocess
    candidates = preprocess_candidates(shipped)
    assert shipped not in candidates.values() and len(set(candidates.values())) == len(candidates)
    # Each is a change to the shipped preparation: what it does not name stays shipped.
    assert candidates["low-pass 20 Hz"].smooth_jagged == shipped.smooth_jagged is not None
    assert candidates["no smoothing of jagged signatures (shipped until 2026-11-28)"].smooth_jagged is None
    assert set(ENSEMBLES) <= set(candidates) and all(w > 0 for ws in ENSEMBLES.values() for w in ws)


def test_a_dropped_time_function_is_left_out_of_the_shipped_distance_and_only_one_that_can_be() -> None:
    from models.classic import ClassicConfig
    from tools.score_settings import changed_config

    shipped = ClassicConfig()
    without = changed_config(shipped, drop=["angle"])
    assert "angle" in shipped.features and "angle" not in without.features
    assert len(without.features) == len(shipped.features) - 1
    # Everything else is the shipped distance's.
    assert (without.dynamics, without.preprocess, without.prior) == (shipped.dynamics, shipped.preprocess, shipped.prior)
    with pytest.raises(ValueError, match="dynamics"):
        changed_config(shipped, drop=["speed"])
    with pytest.raises(ValueError, match="not among"):
        changed_config(without, drop=["angle"])
    with pytest.raises(ValueError, match="not among"):
        changed_config(without, again=["angle"])


def test_a_time_function_compared_again_weighs_twice_in_the_local_distance() -> None:
    import numpy as np

    from models.classic import ClassicConfig, classic_distance
    from tools.score_settings import changed_config

    shipped = ClassicConfig(dynamics=())
    twice = changed_config(shipped, again=["cos"])
    assert twice.features == (*shipped.features, "cos")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, len(shipped.features))), rng.normal(size=(34, len(shipped.features)))
    col = shipped.features.index("cos")
    # The same as the shipped columns with cos scaled by sqrt(2) (Euclidean local distance).
    scaled_a, scaled_b = a.copy(), b.copy()
    scaled_a[:, col] *= np.sqrt(2)
    scaled_b[:, col] *= np.sqrt(2)
    got = classic_distance(np.column_stack([a, a[:, col]]), np.column_stack([b, b[:, col]]), twice)
    assert got == pytest.approx(classic_distance(scaled_a, scaled_b, shipped), rel=1e-9)
    assert got != pytest.approx(classic_distance(a, b, shipped), rel=1e-3)


def test_the_drop_flag_refuses_an_unknown_time_function_before_reading_any_data(tmp_path: Path) -> None:
    from tools.score_settings import main

    with pytest.raises(SystemExit, match="not among"):
        main([str(tmp_path / "nowhere"), "--classic-drop", "wobble"])
    with pytest.raises(SystemExit, match="not among"):
        main([str(tmp_path / "nowhere"), "--classic-again", "wobble"])
    with pytest.raises(SystemExit, match=r"--classic-band: band must be in \(0, 1\]"):
        main([str(tmp_path / "nowhere"), "--classic-band", "1.5"])
