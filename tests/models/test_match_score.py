"""The match score's contract: monotone in every distance, calibrated on constructed data (its
probabilities match the frequencies), refused when a file breaks the contract; and the fit's
choices (per-set weights, operating point) on data whose answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.fusion import Fusion
from models.global_features import FEATURE_NAMES, INDEX, Spread
from models.match_score import SHIPPED, ScoreModel
from tools.train.score_fit import FitOptions, Trials, fit

SPREAD = Spread(np.full(len(FEATURE_NAMES), 0.3))
FEATS = ("aspect", "mean_speed", "pressure_mean")


def _model(weights: list[float], bias: float = 1.0) -> ScoreModel:
    n = 1 + len(FEATS)
    return ScoreModel(FEATS, SPREAD, np.zeros(n), np.ones(n), np.array(weights), bias, threshold=0.4)


def test_probability_never_rises_with_any_distance() -> None:
    m = _model([-2.0, -0.5, -1.0, 0.0])
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = float(rng.uniform(0.3, 3.0))
        z = rng.uniform(0, 5, len(FEATURE_NAMES))
        if rng.random() < 0.3:
            z[INDEX["pressure_mean"]] = np.nan        # a pad without pressure: imputed
        p0 = m.probability(m.inputs(d, z))[0]
        assert m.probability(m.inputs(d * 1.5, z))[0] <= p0
        for f in FEATS:
            z2 = z.copy()
            if not math.isnan(z2[INDEX[f]]):
                z2[INDEX[f]] += 1.0
                assert m.probability(m.inputs(d, z2))[0] <= p0 + 1e-15
    # And strictly where the weight is not zero.
    z = np.ones(len(FEATURE_NAMES))
    assert m.probability(m.inputs(2.0, z))[0] < m.probability(m.inputs(1.0, z))[0]


def test_a_missing_feature_counts_as_the_mean_of_the_present_ones() -> None:
    m = _model([-1.0, -1.0, -1.0, -1.0])
    z = np.zeros(len(FEATURE_NAMES))
    z[INDEX["aspect"]], z[INDEX["mean_speed"]], z[INDEX["pressure_mean"]] = 1.0, 3.0, np.nan
    x = m.inputs(1.0, z)[0]
    assert x[0] == pytest.approx(0.0)                   # log(1)
    assert x[1] == pytest.approx(math.log1p(1.0)) and x[2] == pytest.approx(math.log1p(3.0))
    assert x[3] == pytest.approx((math.log1p(1.0) + math.log1p(3.0)) / 2)


def test_a_model_that_does_not_compare_with_the_references_is_refused() -> None:
    """Found by a review: a hand-edited model_dir file weighing the distance 0 (and a high bias)
    loaded without complaint and approved everyone: it never looked at the references."""
    blind = _model([0.0, -0.5, 0.0, -0.25], bias=2.0)   # a fit may give it; no kiosk reads one
    with pytest.raises(ValueError, match="all 0"):
        ScoreModel.from_dict(blind.to_dict())
    with pytest.raises(ValueError, match="all 0"):
        Fusion.from_dict({"names": ["classic", "learned"], "weights": [0.0, 0.0], "bias": 2.0})
    looks = Fusion.from_dict({"names": ["classic", "learned"], "weights": [0.0, -1.0], "bias": 2.0})
    assert looks.weights == (0.0, -1.0)   # one part looks


def test_a_model_whose_score_rises_with_a_distance_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be <= 0.*mean_speed"):
        _model([-1.0, 0.0, 0.2, 0.0])
    good = _model([-1.5, -0.5, 0.0, -0.25])
    path = tmp_path / "m.json"
    good.save(path)
    back = ScoreModel.load(path)
    x = good.inputs(np.array([0.8, 1.4]), np.ones((2, len(FEATURE_NAMES))))
    assert np.allclose(back.probability(x), good.probability(x)) and back.threshold == good.threshold
    d = json.loads(path.read_text())
    d["weights"][2] = 0.3
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="must be <= 0"):
        ScoreModel.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        ScoreModel.load(path)
    d.pop("bias")
    d["weights"][2] = 0.0
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="incomplete"):
        ScoreModel.load(path)


def _gaussian_trials(rng: np.random.Generator, n: int, shift: float = 0.0) -> Trials:
    """Genuine and skilled trials whose model inputs are Gaussian with equal variances per class
    (log distance: 0 vs 0.6; log1p|z| of aspect: 1.0 vs 1.4; mean_speed carries nothing), so that
    the true probability of a genuine at even odds is exactly a logistic of the inputs."""
    tr = Trials()
    for kind, mu_d, mu_a in (("genuine", 0.0 + shift, 1.0), ("skilled", 0.6 + shift, 1.4)):
        for _ in range(n):
            z = np.full(len(FEATURE_NAMES), 0.5)
            z[INDEX["aspect"]] = math.expm1(rng.normal(mu_a, 0.2))
            z[INDEX["mean_speed"]] = math.expm1(abs(rng.normal(1.0, 0.3)))
            tr.add(kind, "w", math.exp(rng.normal(mu_d, 0.3)), z)
    return tr


def _true_probability(x: np.ndarray) -> np.ndarray:
    # log N(x; mu_g, s) - log N(x; mu_s, s), summed over the two informative inputs.
    llr = ((x[:, 0] - 0.6) ** 2 - x[:, 0] ** 2) / (2 * 0.09) \
        + ((x[:, 1] - 1.4) ** 2 - (x[:, 1] - 1.0) ** 2) / (2 * 0.04)
    return 1.0 / (1.0 + np.exp(-llr))


def test_fitted_probabilities_match_the_frequencies() -> None:
    rng = np.random.default_rng(7)
    opts = FitOptions(features=("aspect", "mean_speed"), l2=1e-6, random_weight=0.0)
    model = fit({"a": _gaussian_trials(rng, 3000)}, SPREAD, opts)
    assert model.weights[0] < 0 and model.weights[1] < 0
    held = _gaussian_trials(rng, 4000)
    xs, ys = [], []
    for kind in ("genuine", "skilled"):
        d, z = held.arrays(kind)
        xs.append(model.inputs(d, z))
        ys.append(np.full(len(d), kind == "genuine", dtype=float))
    x, y = np.vstack(xs), np.concatenate(ys)
    p = model.probability(x)
    # Reliability: in each band of predicted probability the share of genuine trials matches.
    for lo, hi in ((0.05, 0.25), (0.25, 0.45), (0.45, 0.65), (0.65, 0.85), (0.85, 0.95)):
        band = (p >= lo) & (p < hi)
        assert band.sum() > 100
        assert y[band].mean() == pytest.approx(p[band].mean(), abs=0.04)
    # And against the known answer: the true log-odds are -6.67 log d - 10 v + 14 (v = log1p|z|
    # of aspect), nothing on mean_speed; 3000 trials a class estimate them to within ~10 %.
    slope = model.weights / model.scale
    assert slope[0] == pytest.approx(-0.6 / 0.09, rel=0.1) and slope[1] == pytest.approx(-0.4 / 0.04, rel=0.1)
    assert slope[2] == pytest.approx(0.0, abs=0.5)
    assert np.abs(p - _true_probability(x[:, :2])).mean() < 0.01
    # Symmetric classes: the EER operating point lies at even odds.
    assert model.threshold == pytest.approx(0.5, abs=0.06)


def test_a_feature_that_would_raise_the_score_gets_no_weight() -> None:
    """Where forgers happen to be *closer* to the references on a feature, an unconstrained fit
    would reward distance from the references on it; the bound keeps its weight at 0."""
    rng = np.random.default_rng(3)
    tr = _gaussian_trials(rng, 1500)
    for kind, mu in (("genuine", 1.5), ("skilled", 0.5)):
        for z in tr.z[kind]:
            z[INDEX["mean_speed"]] = math.expm1(abs(rng.normal(mu, 0.2)))
    model = fit({"a": tr}, SPREAD, FitOptions(features=("aspect", "mean_speed"), l2=1e-6, random_weight=0.0))
    assert model.weights[2] == 0.0 and model.weights[0] < 0 and model.weights[1] < 0


def test_each_training_set_counts_the_same() -> None:
    """A big set and a small one whose genuine distances sit elsewhere: the fit's bias lands
    between them as if they were the same size (per-set weights), not at the big set's."""
    rng = np.random.default_rng(5)
    opts = FitOptions(features=("aspect",), l2=1e-6, random_weight=0.0)
    big, small = _gaussian_trials(rng, 2000, shift=0.0), _gaussian_trials(rng, 200, shift=0.3)
    equal = fit({"big": big, "small": _gaussian_trials(rng, 2000, shift=0.3)}, SPREAD, opts)
    weighted = fit({"big": big, "small": small}, SPREAD, opts)
    x = weighted.inputs(np.array([1.2]), np.full((1, len(FEATURE_NAMES)), 0.5))
    assert weighted.probability(x)[0] == pytest.approx(equal.probability(x)[0], abs=0.03)
    assert sorted(weighted.record["per_set_threshold_logit"]) == ["big", "small"]


def test_the_shipped_model_keeps_its_contract_and_its_record() -> None:
    m = ScoreModel.load(SHIPPED)
    assert m.input_names[0] == "classic" and np.all(m.weights <= 0) and m.weights[0] < 0
    rec = m.record
    for key in ("command", "data", "writers", "classic_prior", "options"):
        assert key in rec, key
    assert sum(rec["writers"].values()) > 100
    # The shipped file is the fit of the options the code ships (a default changed without a
    # refit would leave the README's figures describing another model).
    opts = FitOptions()
    assert m.features == opts.features and rec["features"] == list(opts.features)
    assert rec["options"] == {"l2": opts.l2, "random_weight": opts.random_weight}
    assert (m.spread.strength, m.spread.floor) == (opts.spread_strength, opts.spread_floor)


def test_a_stronger_penalty_shrinks_every_weight_towards_zero_and_keeps_the_bound() -> None:
    """The shipped penalty (``FitOptions.l2``) was raised so that the weight spreads over more
    features; on constructed data it shrinks the standardised weights, never past the bound."""
    rng = np.random.default_rng(11)
    tr = _gaussian_trials(rng, 1500)
    norms = []
    for l2 in (1e-6, 3e-3, 3e-2, 3e-1):
        m = fit({"a": tr}, SPREAD, FitOptions(features=("aspect", "mean_speed"), l2=l2, random_weight=0.0))
        assert np.all(m.weights <= 0)
        norms.append(float(np.linalg.norm(m.weights)))
    assert all(a > b for a, b in zip(norms, norms[1:])), norms


# -- the fused verifier's model: the learned distance as an input ----------------------------------

def _fused(weights: list[float], bias: float = 1.0) -> ScoreModel:
    n = 2 + len(FEATS)
    return ScoreModel(FEATS, SPREAD, np.zeros(n), np.ones(n), np.array(weights), bias, threshold=0.4,
                      distances=("classic", "learned"))


def test_a_fused_model_takes_the_learned_distance_and_never_rises_with_it(tmp_path: Path) -> None:
    m = _fused([-2.0, -1.0, -0.5, 0.0, -0.2])
    assert m.uses_learned and m.input_names[:2] == ("classic", "learned")
    z = np.ones(len(FEATURE_NAMES))
    rng = np.random.default_rng(3)
    for _ in range(100):
        d_c, d_l = rng.uniform(0.3, 3.0, 2)
        p0 = m.probability(m.inputs(d_c, z, d_l))[0]
        assert m.probability(m.inputs(d_c, z, d_l * 1.5))[0] < p0
        assert m.probability(m.inputs(d_c * 1.5, z, d_l))[0] < p0
    # Each model takes exactly the distances it was fitted on: nothing silently dropped or invented.
    with pytest.raises(ValueError, match="takes a learned distance"):
        m.inputs(1.0, z)
    with pytest.raises(ValueError, match="takes no learned distance"):
        _model([-1.0, 0.0, 0.0, 0.0]).inputs(1.0, z, 1.0)
    with pytest.raises(ValueError, match="learned distances must be finite"):
        m.inputs(1.0, z, float("nan"))
    with pytest.raises(ValueError, match="must be <= 0.*learned"):
        _fused([-1.0, 0.1, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="distance inputs"):
        ScoreModel(FEATS, SPREAD, np.zeros(5), np.ones(5), np.zeros(5), 0.0, distances=("learned", "classic"))
    # The file keeps the input: a device reading it scores it the same.
    path = tmp_path / "fused_score.json"
    m.save(path)
    back = ScoreModel.load(path)
    assert back.uses_learned and back.input_names == m.input_names
    x = m.inputs(np.array([0.8, 1.4]), np.ones((2, len(FEATURE_NAMES))), np.array([1.1, 0.7]))
    assert np.allclose(back.probability(x), m.probability(x))
