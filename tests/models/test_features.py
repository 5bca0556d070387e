import numpy as np
import pytest

from models.features import FEATURE_NAMES, feature_indices, regression_derivative, time_functions, zscore
from models.preprocess import Prepared

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def prepared(x, y, p=None, stroke=None):
    n = len(x)
    return Prepared(
        x=np.asarray(x, float),
        y=np.asarray(y, float),
        p=np.full(n, 0.5) if p is None else np.asarray(p, float),
        t=np.arange(n) / 100.0,
        stroke=np.zeros(n, np.int32) if stroke is None else np.asarray(stroke, np.int32),
    )


def test_regression_derivative_by_hand():
    # f = 0,1,2,3,4 padded with edges: d[0] = ((1-0) + 2(2-0))/10 = 0.5, d[1] = ((2-0)+2(3-0))/10 = 0.8
    assert np.allclose(regression_derivative(np.arange(5.0)), [0.5, 0.8, 1.0, 0.8, 0.5])
    # f = n^2 has derivative 2n in the interior: d[3] = ((16-4) + 2(25-1))/10 = 6
    assert regression_derivative(np.arange(8.0) ** 2)[3] == pytest.approx(6.0)


def test_straight_line_at_constant_speed():
    n = 40
    f = time_functions(prepared(3.0 * np.arange(n), 4.0 * np.arange(n)))
    mid = slice(2, n - 2)  # away from the padded edges
    assert np.allclose(f[mid, COL["dx"]], 3.0) and np.allclose(f[mid, COL["dy"]], 4.0)
    assert np.allclose(f[mid, COL["speed"]], 5.0)
    assert np.allclose(f[mid, COL["cos"]], 0.6) and np.allclose(f[mid, COL["sin"]], 0.8)
    assert np.allclose(f[mid, COL["angle"]], np.arctan2(4, 3))
    assert np.allclose(f[mid, COL["dangle"]], 0.0, atol=1e-12)
    assert np.allclose(f[mid, COL["centripetal"]], 0.0, atol=1e-12)
    # A straight line has infinite curvature radius: log(v/eps) is large
    assert (f[mid, COL["log_radius"]] > 10).all()
    # a second derivative: the padded edges reach 4 samples in
    assert np.allclose(f[4:-4, COL["acceleration"]], 0.0, atol=1e-9)


def test_circle_at_constant_angular_speed():
    # Radius r, w radians per sample. Regression derivative of r*cos(w n) is
    # r*w_eff*(-sin) with w_eff = (2 sin w + 4 sin 2w)/10, so speed = r*w_eff exactly.
    r, w, n = 2.0, 0.05, 200
    k = np.arange(n)
    f = time_functions(prepared(r * np.cos(w * k), r * np.sin(w * k), p=np.linspace(0, 1, n)))
    mid = slice(5, n - 5)
    w_eff = (2 * np.sin(w) + 4 * np.sin(2 * w)) / 10
    assert np.allclose(f[mid, COL["speed"]], r * w_eff)
    assert np.allclose(f[mid, COL["dangle"]], w)  # the tangent turns w per sample
    assert np.allclose(f[mid, COL["log_radius"]], np.log(r * w_eff / w), atol=1e-4)
    assert np.allclose(f[mid, COL["centripetal"]], r * w_eff * w)
    assert np.allclose(f[mid, COL["acceleration"]], r * w_eff * w)  # speed constant: all centripetal
    assert np.allclose(f[mid, COL["dpressure"]], 1 / (n - 1))


def test_derivatives_do_not_cross_stroke_boundaries():
    x = np.r_[np.arange(10.0), 100 + np.arange(10.0)]
    f = time_functions(prepared(x, np.zeros(20), stroke=[0] * 10 + [1] * 10))
    assert f[:, COL["dx"]].max() <= 1.0 + 1e-12  # the 90-unit jump never shows as speed


def test_zscore_and_feature_selection():
    f = np.column_stack((np.arange(5.0), np.full(5, 3.0)))
    z = zscore(f)
    assert np.allclose(z[:, 0].mean(), 0) and np.allclose(z[:, 0].std(), 1)
    assert np.allclose(z[:, 1], 0)
    assert feature_indices(("x", "speed")).tolist() == [0, 5]
    with pytest.raises(ValueError, match="unknown feature"):
        feature_indices(("nope",))


def test_where_the_pen_does_not_move_the_direction_can_be_held() -> None:
    """``hold_still``: a pen that moves up, rests, then moves right keeps "up" while it rests
    (by default the resting points say 0, rightwards); a stroke that starts at rest takes its
    first direction; every other column is the same either way."""
    from models.features import FEATURE_NAMES, held_direction, time_functions
    from models.preprocess import Prepared

    y = np.r_[np.arange(10.0), np.full(8, 9.0), np.full(10, 9.0)]
    x = np.r_[np.zeros(10), np.zeros(8), np.arange(1.0, 11.0)]
    n = len(x)
    prep = Prepared(x=x, y=y, p=np.full(n, 0.5), t=np.arange(n) / 100.0, stroke=np.zeros(n, np.int32))
    plain, held = time_functions(prep), time_functions(prep, hold_still=1)
    a = FEATURE_NAMES.index("angle")
    still = plain[:, FEATURE_NAMES.index("speed")] == 0
    assert still.sum() >= 4
    assert np.allclose(plain[still, a], 0.0) and np.allclose(held[still, a], np.pi / 2)
    for name in ("x", "y", "pressure", "dx", "dy", "speed", "dpressure"):
        i = FEATURE_NAMES.index(name)
        np.testing.assert_array_equal(plain[:, i], held[:, i])
    up = np.pi / 2
    ang = np.array([0.0, 0.0, up, 0.0, 0.0, up])
    moving = np.array([False, False, True, False, False, True])
    np.testing.assert_allclose(held_direction(ang, moving, np.zeros(6, np.int32)), [up, up, up, up, up, up])
    np.testing.assert_allclose(held_direction(ang, moving, np.array([0, 0, 0, 1, 1, 1])), [up, up, up, up, up, up])
    np.testing.assert_allclose(held_direction(ang, np.zeros(6, bool), np.zeros(6, np.int32)), ang)


def test_only_rests_of_the_given_length_hold_the_direction() -> None:
    """``min_run``: a single still point (a reversal, where the derivatives cancel) keeps its own
    angle when only rests of two points or more are held; a rest of two is held; zero is refused."""
    from models.features import held_direction

    up = np.pi / 2
    ang = np.array([up, 0.0, up, up, 0.0, 0.0, up])
    moving = np.array([True, False, True, True, False, False, True])
    stroke = np.zeros(7, np.int32)
    np.testing.assert_allclose(held_direction(ang, moving, stroke), np.full(7, up))
    np.testing.assert_allclose(held_direction(ang, moving, stroke, 2), [up, 0.0, up, up, up, up, up])
    np.testing.assert_allclose(held_direction(ang, moving, stroke, 3), ang)
    # A run is counted within its stroke: one still point at a stroke's end and one at the next
    # stroke's start are two runs of one, not a rest of two.
    ends = np.array([up, up, 0.0, 0.0, up, up])
    moving_but_the_ends = np.array([True, True, False, False, True, True])
    two_strokes = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(held_direction(ends, moving_but_the_ends, two_strokes, 2), ends)
    np.testing.assert_allclose(held_direction(ends, moving_but_the_ends, two_strokes), np.full(6, up))
    with pytest.raises(ValueError, match="min_run"):
        held_direction(ang, moving, stroke, 0)


def test_a_rest_still_only_up_to_rounding_is_held() -> None:
    """A smoothed rest (the moving average of identical positions) is still only up to rounding:
    steps of 1e-13 whose directions are noise. Slower than ``STILL_SPEED`` the pen rests, and its
    direction is held as at an exact rest; a real step, however small on a pad, moves."""
    from models.features import STILL_SPEED

    y = np.r_[np.arange(10.0), np.full(8, 9.0), np.full(10, 9.0)] / 10.0
    x = np.r_[np.zeros(10), np.zeros(8), np.arange(1.0, 11.0)] / 10.0
    exact = prepared(x, y)
    rng = np.random.default_rng(0)
    rounded = prepared(x + rng.uniform(-1e-13, 1e-13, len(x)), y + rng.uniform(-1e-13, 1e-13, len(y)))
    a = COL["angle"]
    held_exact, held_rounded = time_functions(exact, hold_still=2), time_functions(rounded, hold_still=2)
    resting = time_functions(exact)[:, COL["speed"]] == 0
    assert resting.sum() >= 4 and np.allclose(held_exact[resting, a], np.pi / 2)
    np.testing.assert_allclose(held_rounded[:, a], held_exact[:, a], atol=1e-6)
    # Without the tolerance the rounded rest would point anywhere: its steps are not zero.
    assert np.all(time_functions(rounded)[resting, COL["speed"]] > 0)
    # The smallest step a pad reports, 0.01 mm on a 20 mm high signature, is far above it.
    assert 0.01 / 20 > 1e5 * STILL_SPEED


def test_a_level_stroke_level_only_up_to_rounding_points_one_way() -> None:
    """A pen moving left along a line that is level only up to rounding (a smoothed stroke: dy is
    +-1e-17 as the additions fall) points left, pi, at every point where the direction is held,
    not pi at one and -pi at the next, a whole turn apart."""
    n = 30
    x = -np.arange(n, dtype=float) / 10.0
    y = np.random.default_rng(1).choice([-1e-16, 0.0, 1e-16], n)
    held = time_functions(prepared(x, y), hold_still=2)[:, COL["angle"]]
    np.testing.assert_allclose(held, np.pi)
    # Where the direction is not held (the learned model's inputs) the angle is arctan2's own.
    assert np.ptp(time_functions(prepared(x, y))[:, COL["angle"]]) > np.pi
