"""``tools.score_norms``: the normalisation rules compared with the shipped one read the same
trials, and its own row is the shipped score, trial for trial, with the prior fitted as a fold
fits it; on constructed distances (the protocol itself is tested on real data in
``tests/tools/test_cross_device.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from models.classic import score_from_distances
from models.scoring import NormalisationPrior
from tools.cross_device import FIT_K, Measured, fit_prior
from tools.evaluate import WriterPlan
from tools.score_norms import RULES, STATISTICS, Cohort, population, reference_statistics, rule_scores


def _symmetric(rng: np.random.Generator, k: int) -> np.ndarray:
    a = rng.uniform(0.5, 2.0, (k, k))
    d = (a + a.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def _measured(rng: np.random.Generator, writers: int = 4) -> tuple[Measured, list[Cohort]]:
    m, cohorts = Measured(), []
    m.by_k[FIT_K] = []
    for w in range(writers):
        d_cc = _symmetric(rng, 7)
        plan = WriterPlan(writer=f"w{w}", candidates=list(range(7)), draws=[(0, 1, 2, 3, 4), (2, 3, 4, 5, 6)],
                          later_genuine=[0, 1], skilled=[0, 1, 2], random=[0])
        dq = {"genuine": rng.uniform(0.5, 2, (2, 7)), "skilled": rng.uniform(1, 3, (3, 7)),
              "random": rng.uniform(2, 4, (1, 7))}
        m.by_k[FIT_K].append((plan, d_cc, dq))
        cohorts.append(Cohort([rng.uniform(2, 4, 5) for _ in range(7)],
                              {kind: [rng.uniform(2, 4, 5) for _ in dq[kind]] for kind in dq}))
    return m, cohorts


def test_the_statistics_of_a_known_matrix() -> None:
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]])
    s = dict(zip(STATISTICS, reference_statistics(d)))
    assert s["nearest"] == pytest.approx((1 + 1 + 2) / 3)
    assert s["mean"] == pytest.approx((1.5 + 2.5 + 3.0) / 3)
    assert s["farthest"] == pytest.approx((2 + 4 + 4) / 3)
    assert s["two nearest"] == pytest.approx(s["mean"])       # K = 3: each has only two others
    assert s["median"] == pytest.approx(2.0) and s["medoid"] == pytest.approx(1.5)


def test_the_shipped_row_is_the_shipped_score_with_the_folds_prior() -> None:
    rng = np.random.default_rng(0)
    (m, cohort), (other, _) = _measured(rng), _measured(rng)
    prior_vec = population({"other": other})
    fitted = fit_prior([other])
    assert prior_vec[:2] == pytest.approx([fitted.min_dist, fitted.mean_dist])
    strength = 6.0
    mine = rule_scores(m, cohort, prior_vec, RULES["nearest and mean, halves (shipped)"], strength)
    want = m.scores(FIT_K, NormalisationPrior(fitted.min_dist, fitted.mean_dist, strength))
    for kind in ("genuine", "skilled", "random"):
        for w, values in getattr(want, kind).items():
            np.testing.assert_allclose(getattr(mine, kind)[w], values, rtol=1e-12)
    # One trial by hand: the first draw's first skilled question.
    p, d_cc, dq = m.by_k[FIT_K][0]
    idx = np.array(p.draws[0])
    assert mine.skilled["w0"][0] == pytest.approx(score_from_distances(dq["skilled"][0, idx], d_cc[np.ix_(idx, idx)],
                                                                       NormalisationPrior(*prior_vec[:2], strength)))


def test_every_rule_scores_every_trial_and_the_cohort_rules_read_the_cohort() -> None:
    rng = np.random.default_rng(1)
    m, cohort = _measured(rng)
    prior_vec = population({"m": m})
    shipped = rule_scores(m, cohort, prior_vec, RULES["nearest and mean, halves (shipped)"], 6.0)
    for label, rule in RULES.items():
        sc = rule_scores(m, cohort, prior_vec, rule, 6.0)
        for kind in ("genuine", "skilled", "random"):
            got, want = getattr(sc, kind), getattr(shipped, kind)
            assert {w: len(v) for w, v in got.items()} == {w: len(v) for w, v in want.items()}
            assert all(np.all(np.isfinite(v)) for v in got.values()), label
    # Strangers exactly as far from the question as from its references: the cohort changes nothing
    # when it divides, and lowers every score alike when it is subtracted.
    flat = [Cohort([np.full(5, 3.0)] * 7, {k: [np.full(5, 3.0)] * len(v) for k, v in c.questioned.items()})
            for c in cohort]
    divided = rule_scores(m, flat, prior_vec, RULES["cohort: divided by the strangers' ratio"], 6.0)
    lowered = rule_scores(m, flat, prior_vec, RULES["cohort: less half of it"], 6.0)
    for w, values in shipped.skilled.items():
        np.testing.assert_allclose(divided.skilled[w], values, rtol=1e-12)
        np.testing.assert_allclose(lowered.skilled[w], np.array(values) - 0.5, rtol=1e-12)
    farther = rule_scores(m, cohort, prior_vec, RULES["cohort: divided by the strangers' ratio"], 6.0)
    assert not np.allclose(farther.skilled["w0"], shipped.skilled["w0"])
