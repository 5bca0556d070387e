import numpy as np
import pytest

from models.scoring import NormalisationPrior, normalised_distance, reference_stats, shrink

PRIOR = NormalisationPrior(min_dist=0.4, mean_dist=0.5, strength=2.0)


def test_reference_stats_by_hand():
    d = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], float)
    s = reference_stats(d)
    # nearest others: 1, 1, 2 -> 4/3; mean to others: 2, 1.5, 2.5 -> 2
    assert s.min_dist == pytest.approx(4 / 3) and s.mean_dist == pytest.approx(2.0) and s.pairs == 3


def test_one_reference_uses_the_prior():
    s = reference_stats(np.zeros((1, 1)))
    assert s.pairs == 0
    assert shrink(s, PRIOR) == (0.4, 0.5)
    assert normalised_distance(np.array([0.8]), s, PRIOR) == pytest.approx(0.5 * (0.8 / 0.4 + 0.8 / 0.5))


def test_shrinkage_weights_evidence():
    s = reference_stats(np.array([[0, 1.0], [1.0, 0]]))  # one pair: weight 1/3
    rmin, rmean = shrink(s, PRIOR)
    assert rmin == pytest.approx((1.0 + 2 * 0.4) / 3) and rmean == pytest.approx((1.0 + 2 * 0.5) / 3)


def test_normalisation_makes_writers_comparable():
    consistent = reference_stats(np.array([[0, 0.2, 0.2], [0.2, 0, 0.2], [0.2, 0.2, 0]]))
    erratic = reference_stats(np.array([[0, 0.8, 0.8], [0.8, 0, 0.8], [0.8, 0.8, 0]]))
    prior = NormalisationPrior(0.5, 0.5, strength=0.0)
    # The same raw distance is suspicious for the consistent writer, ordinary for the erratic one.
    assert normalised_distance(np.array([0.6, 0.7, 0.8]), consistent, prior) > 3
    assert normalised_distance(np.array([0.6, 0.7, 0.8]), erratic, prior) < 1


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        reference_stats(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least one"):
        normalised_distance(np.array([]), reference_stats(np.zeros((1, 1))), PRIOR)
