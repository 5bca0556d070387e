"""Global features on constructed trajectories whose values can be worked out by hand, and the
normalisation of a questioned signature against a customer's references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.device_variants import without_pressure
from models.global_features import (
    FEATURE_NAMES,
    INDEX,
    Spread,
    deviations,
    global_features,
    population_spread,
    reference_spread,
)
from models.trajectory import DeviceInfo, Trajectory

PAD = DeviceInfo(name="pad", pressure_levels=1023, nominal_rate_hz=100.0)


def two_strokes() -> Trajectory:
    """Stroke 1: (0,0) -> (4,0) rightwards in 4 steps of 1 over 0.4 s; 2 hover points; stroke 2:
    (4,2) -> (4,0) up the pad in 2 steps of 1, then one step back down, over 0.3 s.

    Points (x, y, t, pen):
      0..4  : x = 0..4, y = 0, t = 0.0..0.4, down, pressure 0.2 0.4 0.6 0.4 0.2
      5, 6  : hover at (4, 1), t = 0.5, 0.6
      7..9  : (4, 2) (4, 1) (4, 0), t = 0.7, 0.8, 0.9, down, pressure 0.5 0.5 0.8
      10    : (4, 1), t = 1.0, down, pressure 0.5
    """
    x = [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    y = [0, 0, 0, 0, 0, 1, 1, 2, 1, 0, 1]
    t = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    p = [0.2, 0.4, 0.6, 0.4, 0.2, 0.0, 0.0, 0.5, 0.5, 0.8, 0.5]
    down = [True] * 5 + [False] * 2 + [True] * 4
    return Trajectory(x=np.array(x, float), y=np.array(y, float), pressure=np.array(p), t=np.array(t),
                      pen_down=np.array(down), device=PAD)


def test_features_worked_out_by_hand() -> None:
    f = dict(zip(FEATURE_NAMES, global_features(two_strokes())))
    # Duration 1.0 s; ink: stroke 1 0.4 s + stroke 2 0.3 s.
    assert f["duration"] == pytest.approx(math.log(1.0))
    assert f["ink_time"] == pytest.approx(math.log(0.7))
    assert f["pen_up_ratio"] == pytest.approx(0.3)
    assert f["strokes"] == pytest.approx(math.log(2))
    # Ink box: x 0..4, y 0..2 -> width 4, height 2. Path: 4 + 3 = 7 units = 3.5 heights.
    assert f["aspect"] == pytest.approx(math.log(2.0))
    assert f["path_length"] == pytest.approx(math.log(3.5))
    assert f["mean_speed"] == pytest.approx(math.log(3.5 / 0.7))
    # Every ink step is 1 unit in 0.1 s: constant speed, no peak, no spread.
    assert f["speed_peak"] == pytest.approx(0.0, abs=1e-12)
    assert f["speed_cv"] == pytest.approx(0.0, abs=1e-12)
    ink_p = np.array([0.2, 0.4, 0.6, 0.4, 0.2, 0.5, 0.5, 0.8, 0.5])
    assert f["pressure_mean"] == pytest.approx(ink_p.mean())
    assert f["pressure_std"] == pytest.approx(ink_p.std())
    # Centroid of the 9 ink points: x = (0+1+2+3+4 + 4*4)/9 = 26/9, y = (2+1+0+1)/9 = 4/9.
    assert f["centroid_x"] == pytest.approx((26 / 9) / 4)
    assert f["centroid_y"] == pytest.approx((4 / 9) / 2)
    assert f["start_x"] == pytest.approx(0.0)
    assert f["end_x"] == pytest.approx(1.0)
    # 7 moving ink steps: 4 rightwards, 0 right in stroke 2; downwards (y grows): the last step only.
    assert f["rightward"] == pytest.approx(4 / 7)
    assert f["downward"] == pytest.approx(1 / 7)


def test_scale_and_position_do_not_matter() -> None:
    a = two_strokes()
    b = Trajectory(x=3.0 * a.x + 100, y=3.0 * a.y - 50, pressure=a.pressure, t=a.t, pen_down=a.pen_down, device=PAD)
    assert np.allclose(global_features(a), global_features(b))


def test_pressure_is_missing_without_a_sensor() -> None:
    f = global_features(without_pressure(two_strokes()))
    for name in ("pressure_mean", "pressure_std"):
        assert math.isnan(f[INDEX[name]])
    others = [i for n, i in INDEX.items() if n not in ("pressure_mean", "pressure_std")]
    assert np.all(np.isfinite(f[others]))


def test_no_ink_is_a_clear_error() -> None:
    a = two_strokes()
    hover = Trajectory(x=a.x, y=a.y, pressure=np.zeros(len(a)), t=a.t, pen_down=np.zeros(len(a), bool), device=PAD)
    with pytest.raises(ValueError, match="no pen-down point"):
        global_features(hover)


def _spread(value: float = 0.2, **kw: float) -> Spread:
    return Spread(np.full(len(FEATURE_NAMES), value), **kw)


def test_reference_spread_shrinks_towards_the_population() -> None:
    n = len(FEATURE_NAMES)
    refs = np.zeros((5, n))
    refs[:, 0] = [1.0, 2.0, 3.0, 4.0, 5.0]         # own sd (ddof 1) = sqrt(2.5)
    mean, sd = reference_spread(refs, _spread(0.2, strength=4.0, floor=0.5))
    assert mean[0] == pytest.approx(3.0)
    # (4 * 2.5 + 4 * 0.04) / 8
    assert sd[0] == pytest.approx(math.sqrt((4 * 2.5 + 4 * 0.04) / 8))
    # Identical references: the population spread weighs in, but never below its floor.
    assert sd[1] == pytest.approx(math.sqrt(4 * 0.04 / 8))
    _, sd_floor = reference_spread(refs, _spread(0.2, strength=0.5, floor=0.5))
    assert sd_floor[1] == pytest.approx(0.1)
    # One reference: the population spread alone.
    _, sd_one = reference_spread(refs[:1], _spread(0.2))
    assert np.allclose(sd_one, 0.2)


def test_deviations_are_z_in_the_customers_spread_and_nan_where_unmeasured() -> None:
    n = len(FEATURE_NAMES)
    refs = np.zeros((1, n))
    q = np.zeros(n)
    q[0], q[1] = 0.4, -0.6
    q[INDEX["pressure_mean"]] = np.nan
    z = deviations(q, refs, _spread(0.2))
    assert z[0] == pytest.approx(2.0) and z[1] == pytest.approx(3.0)
    assert math.isnan(z[INDEX["pressure_mean"]])
    with pytest.raises(ValueError, match="features"):
        deviations(q[:3], refs, _spread())


def test_population_spread_is_the_root_mean_within_writer_variance() -> None:
    n = len(FEATURE_NAMES)
    w1 = np.zeros((2, n))
    w1[:, 0] = [0.0, 2.0]                          # variance 2
    w2 = np.zeros((3, n))
    w2[:, 0] = [1.0, 2.0, 3.0]                     # variance 1
    w2[:, INDEX["pressure_std"]] = np.nan          # a writer on a pad without pressure
    w1[:, INDEX["pressure_std"]] = [0.1, 0.3]      # variance 0.02
    sd = population_spread([w1, w2])
    assert sd[0] == pytest.approx(math.sqrt(1.5))
    assert sd[INDEX["pressure_std"]] == pytest.approx(math.sqrt(0.02))
    assert sd[1] == pytest.approx(1e-6)            # constant everywhere: floored, never zero
    with pytest.raises(ValueError, match="positive"):
        Spread(np.zeros(n))
