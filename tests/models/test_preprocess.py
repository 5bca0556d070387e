import numpy as np
import pytest

from models.preprocess import PreprocessConfig, drop_duplicates, moving_average, prepare
from models.trajectory import DeviceInfo, Trajectory, TrajectoryError

TIMED = DeviceInfo(name="t", pressure_levels=100, nominal_rate_hz=100.0)
UNTIMED = DeviceInfo(name="u", pressure_levels=100, nominal_rate_hz=100.0, time_measured=False)


def tr(x, y, t=None, down=None, device=TIMED, p=None):
    n = len(x)
    return Trajectory(
        x=x, y=y, pressure=np.full(n, 0.5) if p is None else p,
        t=np.arange(n) / 100.0 if t is None else t,
        pen_down=np.ones(n, bool) if down is None else down, device=device,
    )


def test_duplicates_with_the_same_time_go_pauses_stay():
    t = tr([0, 0, 0, 1, 2], [0, 0, 0, 1, 2], t=[0, 0, 0.01, 0.02, 0.03])
    # point 1 repeats point 0 at the same instant (a double report); point 2 is a pause: kept
    assert drop_duplicates(t).tolist() == [0, 2, 3, 4]


def test_untimed_leading_repeats_go():
    t = tr([5, 5, 5, 6, 6, 7], [1, 1, 1, 2, 2, 3], device=UNTIMED)
    # the settling repeats at the start go; a later repeat may be a pause and stays
    assert drop_duplicates(t).tolist() == [0, 3, 4, 5]


def test_pen_up_points_are_dropped_by_default_and_normalised():
    down = np.array([1, 1, 1, 0, 0, 1, 1, 1], bool)
    t = tr(np.arange(8.0) * 10, np.array([0, 1, 2, 9, 9, 3, 4, 5.0]), down=down)
    prep = prepare(t, PreprocessConfig(resample_hz=None))
    assert len(prep) == 6 and prep.stroke.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(prep.x.mean()) < 1e-12 and abs(prep.y.mean()) < 1e-12
    assert np.std(prep.y) == pytest.approx(1.0)
    kept = prepare(t, PreprocessConfig(resample_hz=None, keep_pen_up=True))
    assert len(kept) == 8 and kept.stroke.tolist()[3:5] == [-1, -1]


def test_resampling_is_per_stroke_and_uniform():
    # irregular sampling (like SUSIG's ePad): 0, 15, 25, 31 ... ms
    t = np.cumsum([0, 0.015, 0.010, 0.006, 0.016, 0.010, 0.005, 0.016, 0.010, 0.005])
    down = np.array([1] * 5 + [0] + [1] * 4, bool)
    traj = tr(np.arange(10.0), np.sin(np.arange(10.0)), t=t, down=down)
    prep = prepare(traj, PreprocessConfig(resample_hz=100.0))
    for s in (0, 1):
        ts = prep.t[prep.stroke == s]
        assert np.allclose(np.diff(ts), 0.01)
    # never interpolated across the pen-up between the strokes
    assert prep.stroke.tolist() == sorted(prep.stroke.tolist())


def test_lowpass_smooths():
    rng = np.random.default_rng(0)
    y = np.sin(np.linspace(0, 3, 200)) + rng.normal(0, 0.05, 200)
    sm = moving_average(y, 5)
    assert len(sm) == 200
    assert np.abs(np.diff(sm, 2)).mean() < np.abs(np.diff(y, 2)).mean() / 3


def test_degenerate_signatures_are_refused():
    with pytest.raises(TrajectoryError, match="no extent"):
        prepare(tr([3, 3, 3], [4, 4, 4], t=[0, 0.01, 0.02]))
    with pytest.raises(TrajectoryError, match="too few usable points"):
        prepare(tr([1, 2, 3], [1, 2, 3], down=np.array([0, 0, 1], bool)))
