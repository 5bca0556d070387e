"""Site self-calibration (models.calibration) on constructed scores with known quantiles: bounded,
no move without enough customers, monotone in the target FRR, and the wrapper decides with the
verifier's own policy at the moved threshold (and exactly as the verifier at the shipped one)."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import CalibrationSettings, SiteThreshold, loo_scores, propose, weighted_quantile
from models.pen import ClassicVerifier
from models.policy import AspectCheck, DecisionPolicy, Verdict


def _site(n: int, per: int = 5, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i}": rng.uniform(0.0, 2.0 * scale, per) for i in range(n)}


def test_weighted_quantile_weighs_customers_equally() -> None:
    # One customer with 100 scores at 10 and four with one score each at 1..4: by score the 0.5
    # quantile would be 10; by customer (each weighs 1/5) it is 3.
    groups = [np.full(100, 10.0), np.array([1.0]), np.array([2.0]), np.array([3.0]), np.array([4.0])]
    assert weighted_quantile(groups, 0.5) == 3.0
    assert weighted_quantile(groups, 0.2) == 1.0
    assert weighted_quantile(groups, 0.81) == 10.0


def test_known_quantile_without_shrinkage_or_bounds() -> None:
    # 100 customers, scores 0.01..1.00 one each: the 0.95 quantile is 0.95; offset added.
    scores = [np.array([(i + 1) / 100]) for i in range(100)]
    s = CalibrationSettings(target_frr=0.05, lower=-10, upper=10, min_customers=1, strength=0.0, loo_offset=0.02)
    cal = propose(scores, 1.3, s)
    assert cal.quantile == pytest.approx(0.95)
    assert cal.threshold == pytest.approx(0.97)
    assert cal.reason == "calibrated" and cal.moved and cal.customers == 100 and cal.scores == 100


def test_shrinks_towards_shipped_by_number_of_customers() -> None:
    scores = [np.array([1.0])] * 10
    s = CalibrationSettings(target_frr=0.05, lower=-10, upper=10, min_customers=1, strength=10.0)
    # Quantile 1.0, shipped 2.0, weight 10 / (10 + 10): half-way.
    assert propose(scores, 2.0, s).threshold == pytest.approx(1.5)
    assert propose([np.array([1.0])] * 90, 2.0, s).threshold == pytest.approx(1.1)


def test_never_outside_the_bounds() -> None:
    s = CalibrationSettings(target_frr=0.03, lower=1.2, upper=1.45, min_customers=5, strength=0.0)
    for scale in (0.01, 0.3, 0.7, 1.0, 3.0, 100.0):
        for seed in range(5):
            cal = propose(_site(30, seed=seed, scale=scale), 1.3, s)
            assert 1.2 <= cal.threshold <= 1.45
    low = propose(_site(30, scale=0.01), 1.3, s)
    high = propose(_site(30, scale=100.0), 1.3, s)
    assert (low.threshold, low.reason, low.clamped) == (1.2, "clamped", True)
    assert (high.threshold, high.reason) == (1.45, "clamped")


def test_no_move_with_too_few_customers() -> None:
    s = CalibrationSettings(target_frr=0.03, lower=0.5, upper=2.0, min_customers=10, strength=0.0)
    few = propose(_site(9, scale=0.1), 1.3, s)
    assert few.threshold == 1.3 and not few.moved and few.reason == "too_few_customers" and few.quantile is None
    # Customers without any finite score do not count.
    junk = {**_site(9, scale=0.1), "x": np.array([np.nan, np.inf])}
    assert propose(junk, 1.3, s).reason == "too_few_customers"
    assert propose(_site(10, scale=0.1), 1.3, s).moved


def test_monotone_in_target_frr() -> None:
    s = dict(lower=0.0, upper=3.0, min_customers=5, strength=10.0, loo_offset=0.05)
    site = _site(40, seed=3)
    thresholds = [propose(site, 1.3, CalibrationSettings(target_frr=t, **s)).threshold
                  for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)]
    # More rejected genuine allowed: a lower (stricter) threshold, never a higher one.
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1]


def test_settings_refuse_nonsense() -> None:
    for bad in (dict(target_frr=0.0), dict(target_frr=0.6), dict(lower=2.0, upper=1.0), dict(min_customers=0)):
        kw = dict(target_frr=0.03, lower=1.0, upper=2.0) | bad
        with pytest.raises(ValueError):
            CalibrationSettings(**kw)  # type: ignore[arg-type]


class _Fixed:
    """A verifier whose verdict is a fixed score, decided by its policy."""

    name = "fixed"

    def __init__(self, score: float, threshold: float = 1.3) -> None:
        self.score = score
        self.policy = DecisionPolicy(threshold)
        self.calls = 0

    def model_versions(self) -> dict[str, str]:
        return {"fixed": "1"}

    def enroll(self, references):  # type: ignore[no-untyped-def]
        return references

    def verify(self, reference_set, query, *, seen=()) -> Verdict:  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.policy.decide(self.score, [AspectCheck("shape", "Shape", 0.5, True)], too_similar=False)

    def warm_up(self, sample) -> None:  # type: ignore[no-untyped-def]
        pass


def test_site_threshold_moves_the_decision_and_is_reversible() -> None:
    inner = _Fixed(1.35)
    v = SiteThreshold(inner)  # type: ignore[arg-type]
    assert v.shipped == 1.3 and v.threshold == 1.3
    assert not v.verify(None, None).approved  # type: ignore[arg-type]
    assert v.model_versions() == {"fixed": "1"}
    v.set_threshold(1.4)
    verdict = v.verify(None, None)  # type: ignore[arg-type]
    assert verdict.approved and verdict.match_rate > 0.5 and verdict.distance == 1.35
    assert v.policy.too_similar_ratio == inner.policy.too_similar_ratio    # only the threshold changed
    assert v.model_versions() == {"fixed": "1", "site_threshold": "1.4"}
    assert inner.policy.threshold == 1.3                                   # the verifier itself untouched
    v.set_threshold(v.shipped)
    assert not v.verify(None, None).approved and v.model_versions() == {"fixed": "1"}  # type: ignore[arg-type]


def test_loo_scores_through_the_public_verifier(writers_small) -> None:  # type: ignore[no-untyped-def]
    genuine, forgeries = writers_small
    verifier = ClassicVerifier()
    refs = list(genuine[:5])
    s = loo_scores(verifier, refs)
    assert s.shape == (5,) and np.all(np.isfinite(s))
    # Each one is the verifier's own verdict on that reference against the other four.
    assert s[2] == pytest.approx(verifier.verify(verifier.enroll(refs[:2] + refs[3:]), refs[2]).distance)
    assert len(loo_scores(verifier, refs[:2])) == 0


@pytest.fixture(scope="module")
def writers_small():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=1, n_genuine=6, n_forgeries=2, seed=7)["001"]
