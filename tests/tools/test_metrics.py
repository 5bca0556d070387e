import numpy as np
import pytest

from tools.metrics import equal_error_rate, error_curve, frr_at_far, user_mean_eer


def test_separable_scores_have_zero_eer():
    eer, thr = equal_error_rate([1, 2, 3], [4, 5, 6])
    assert eer == 0.0 and 3 <= thr < 4


def test_identical_distributions_have_half_eer():
    x = np.arange(100.0)
    assert equal_error_rate(x, x)[0] == pytest.approx(0.5)


def test_known_overlap():
    # genuine 0..9, impostor 5..14: at threshold 4.5..5 nothing of the impostors is accepted and
    # 5 of 10 genuine are rejected; the curves cross at 25 %.
    g = np.arange(10.0)
    i = np.arange(5.0, 15.0)
    assert equal_error_rate(g, i)[0] == pytest.approx(0.25)


def test_gaussian_eer_matches_theory():
    rng = np.random.default_rng(0)
    g = rng.normal(0, 1, 200_000)
    i = rng.normal(2, 1, 200_000)
    # Equal variances: the EER is Phi(-d/2) with d = 2, i.e. 15.87 %
    assert equal_error_rate(g, i)[0] == pytest.approx(0.1587, abs=0.003)


def test_frr_at_far():
    g = np.arange(100.0)  # genuine 0..99
    i = np.arange(50.0, 150.0)  # impostor 50..149: FAR <= 1 % allows accepting only score 50
    assert frr_at_far(g, i, 0.01) == pytest.approx(0.49)
    assert frr_at_far(g, i, 0.0) == pytest.approx(0.50)


def test_error_curve_is_monotone():
    rng = np.random.default_rng(1)
    c = error_curve(rng.normal(size=50), rng.normal(1, size=60))
    assert (np.diff(c.far) >= 0).all() and (np.diff(c.frr) <= 0).all()
    assert c.far[0] == 0 and c.frr[0] == 1 and c.far[-1] == 1 and c.frr[-1] == 0


def test_user_mean_differs_from_global():
    # Each user separable on their own, but the thresholds differ: global EER > 0.
    users = {"a": (np.array([1.0, 2.0]), np.array([3.0, 4.0])), "b": (np.array([5.0, 6.0]), np.array([7.0, 8.0]))}
    assert user_mean_eer(users) == 0.0
    g = np.concatenate([u[0] for u in users.values()])
    i = np.concatenate([u[1] for u in users.values()])
    assert equal_error_rate(g, i)[0] > 0.2


def test_bad_scores():
    with pytest.raises(ValueError, match="need genuine and impostor"):
        equal_error_rate([], [1])
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate([np.nan], [1])
