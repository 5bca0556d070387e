"""The per-customer anomaly check: outliers score higher, reasons name the feature, a refit from
stored feature vectors is the same forest, and bad references are refused clearly."""

import json

import numpy as np
import pytest

from models.anomaly import MIN_REFERENCES, AnomalyModel
from models.hand_features import FEATURE_NAMES, WITHIN_SPREAD

SPREAD = np.array(WITHIN_SPREAD)
CENTRE = np.array([0.9, 4.7, 0.1, 0.45, 0.5, 0.1, -0.1, 5.0, 10.0, 0.4, 5.0, 6.0, 4.9, 1.2, 0.5, 0.8])


def references(k: int = 5, seed: int = 3) -> np.ndarray:
    return CENTRE + np.random.default_rng(seed).normal(size=(k, len(FEATURE_NAMES))) * SPREAD


def at(feature: str, spreads: float) -> np.ndarray:
    q = references().mean(axis=0).copy()
    q[FEATURE_NAMES.index(feature)] += spreads * SPREAD[FEATURE_NAMES.index(feature)]
    return q


def test_outlier_scores_higher_than_inlier():
    model = AnomalyModel(references())
    inlier = references().mean(axis=0)
    outlier = CENTRE + 6 * SPREAD * np.where(np.arange(len(CENTRE)) % 2, 1, -1)
    s_in, s_out = model.score(inlier), model.score(outlier)
    assert 0.0 <= s_in < s_out <= 1.0
    # One feature far out is also more anomalous than none.
    assert model.score(at("slant", 8)) > s_in
    assert np.array_equal(model.scores(np.vstack([inlier, outlier])), [s_in, s_out])


@pytest.mark.parametrize(
    ("feature", "spreads", "words"),
    [
        ("size", 7, "much larger than the references"),
        ("size", -7, "much smaller than the references"),
        ("slant", 4, "slant differs from the references (leans further right)"),
        ("slant", -7, "slant differs from the references (leans much further left or upright)"),
        ("loops", 3.5, "more closed loops than the references"),
    ],
)
def test_reasons_name_the_feature_outside_the_range(feature, spreads, words):
    model = AnomalyModel(references())
    i = FEATURE_NAMES.index(feature)
    q = references().mean(axis=0)
    # ``spreads`` of the customer's spread beyond the references' highest (lowest) value.
    q[i] = (model.high[i] if spreads > 0 else model.low[i]) + spreads * model.spread[i]
    reasons = model.reasons(q)
    assert reasons and reasons[0].feature == feature
    assert reasons[0].text == words
    assert reasons[0].excess == pytest.approx(abs(spreads))
    assert not (reasons[0].low <= reasons[0].value <= reasons[0].high)


def test_no_reasons_inside_the_range_and_most_limits_them():
    model = AnomalyModel(references())
    assert model.reasons(references().mean(axis=0)) == []
    # Just outside the range is ordinary variation, not a reason to show a clerk.
    assert model.reasons(at("size", 0.0) + (model.high - model.centre) + 1.0 * model.spread) == []
    far = CENTRE + 10 * SPREAD
    assert len(model.reasons(far)) == 3
    assert len(model.reasons(far, most=5)) == 5
    ranked = [r.excess for r in model.reasons(far, most=16)]
    assert ranked == sorted(ranked, reverse=True)


def test_refit_from_stored_features_is_identical():
    refs = references()
    stored = json.dumps(refs.tolist())  # what the template store keeps: numbers, not a pickle
    again = AnomalyModel(np.array(json.loads(stored)))
    first = AnomalyModel(refs)
    queries = CENTRE + np.random.default_rng(9).normal(size=(20, len(CENTRE))) * 3 * SPREAD
    assert np.array_equal(first.scores(queries), again.scores(queries))
    assert [r.text for r in first.reasons(queries[0])] == [r.text for r in again.reasons(queries[0])]


def test_spread_is_floored_for_a_customer_who_repeats_a_feature_exactly():
    refs = references()
    refs[:, FEATURE_NAMES.index("loops")] = 4.0  # five references, all with four loops
    model = AnomalyModel(refs)
    assert model.spread[FEATURE_NAMES.index("loops")] > 0
    q = refs.mean(axis=0).copy()
    q[FEATURE_NAMES.index("loops")] = 5.0  # one loop more is ordinary, not "infinitely" anomalous
    assert model.reasons(q) == [] or model.reasons(q)[0].excess < 3


def test_bad_references_are_refused_clearly():
    with pytest.raises(ValueError, match=f"at least {MIN_REFERENCES} reference signatures, got 2"):
        AnomalyModel(references(k=2))
    with pytest.raises(ValueError, match="expected 16 features"):
        AnomalyModel(references()[:, :5])
    bad = references()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        AnomalyModel(bad)
    model = AnomalyModel(references())
    with pytest.raises(ValueError, match="expected 16 features per query"):
        model.score(np.zeros(3))
