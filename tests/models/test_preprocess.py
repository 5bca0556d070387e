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


def test_an_untimed_pad_is_resampled_at_its_nominal_rate_only_when_asked():
    """``resample_untimed``: a 200 Hz pad that sends no timestamps is resampled like a timed one,
    at the times its nominal rate implies (every other point at 100 Hz); by default its own
    samples stay."""
    fast = DeviceInfo(name="u200", pressure_levels=100, nominal_rate_hz=200.0, time_measured=False)
    down = np.array([1] * 21 + [0] * 3 + [1] * 11, bool)
    traj = Trajectory.from_samples(np.arange(35.0), np.cos(np.arange(35.0) / 5), pressure=np.full(35, 0.5),
                                   pen_down=down, device=fast)
    assert len(prepare(traj)) == 32
    halved = prepare(traj, PreprocessConfig(resample_untimed=True))
    assert halved.stroke.tolist() == [0] * 11 + [1] * 6
    assert np.allclose(np.diff(halved.t[halved.stroke == 0]), 0.01)
    # x was the sample index: at 100 Hz every other one, before normalisation
    np.testing.assert_allclose(np.diff(halved.x[halved.stroke == 0]), np.diff(halved.x)[0])


def test_the_lowpass_smooths_each_stroke_on_its_own_at_the_rate_the_points_are_at():
    """A jump between two strokes is not averaged into either; an untimed 200 Hz pad's window
    (11 points at 20 Hz) spans as much time as a 100 Hz pad's (5), so it smooths the same
    points harder."""
    rng = np.random.default_rng(0)
    x = np.r_[np.zeros(30), np.full(30, 100.0)]
    y = np.r_[np.sin(np.arange(30) / 4), np.cos(np.arange(30) / 4)] + rng.normal(0, 0.1, 60)
    down = np.ones(60, bool)
    down[30] = False
    roughness = {}
    for rate in (100.0, 200.0):
        device = DeviceInfo(name=f"u{rate:g}", pressure_levels=100, nominal_rate_hz=rate, time_measured=False)
        prep = prepare(tr(x, y, down=down, device=device), PreprocessConfig(resample_hz=None, lowpass_hz=20.0))
        assert np.ptp(prep.x[prep.stroke == 0]) == 0.0 and np.ptp(prep.x[prep.stroke == 1]) == 0.0
        roughness[rate] = float(np.abs(np.diff(prep.y[prep.stroke == 0], 2)).mean())
    raw = prepare(tr(x, y, down=down, device=UNTIMED), PreprocessConfig(resample_hz=None))
    assert roughness[200.0] < roughness[100.0] < float(np.abs(np.diff(raw.y[raw.stroke == 0], 2)).mean())


def test_a_jagged_pad_is_smoothed_to_the_limit_and_a_smooth_one_is_left_alone():
    """``smooth_jagged``: jaggedness is the second difference over the first, per stroke; a circle
    drawn evenly is smooth (about the angle per step), the same circle with every other point
    pushed out is jagged, and the narrowest window that brings it under the limit is used."""
    from models.preprocess import jaggedness, smoothed_to

    a = np.linspace(0, 2 * np.pi, 200)
    x, y, s = np.cos(a), np.sin(a), np.zeros(200, np.int32)
    assert jaggedness(x, y, s) == pytest.approx(a[1], rel=0.01)
    assert jaggedness(np.arange(10.0), np.zeros(10), np.zeros(10, np.int32)) == 0.0
    bumpy = 1.0 + 0.02 * (np.arange(200) % 2)
    jx, jy = x * bumpy, y * bumpy
    assert jaggedness(jx, jy, s) > 1.0
    p = np.full(200, 0.5)
    same = smoothed_to(x, y, p, s, 0.5)
    assert all(u is v for u, v in zip(same, (x, y, p)))
    sx, sy, sp = smoothed_to(jx, jy, p, s, 0.5)
    assert jaggedness(sx, sy, s) <= 0.5 and np.allclose(sp, 0.5)
    widths = [w for w in range(3, 12, 2) if jaggedness(moving_average(jx, w), moving_average(jy, w), s) <= 0.5]
    assert widths and np.allclose(sx, moving_average(jx, widths[0]), rtol=0, atol=1e-12)
    # A stroke is never averaged with the next: two strokes far apart keep their own places.
    two = np.r_[np.zeros(100, np.int32), np.ones(100, np.int32)]
    tx = np.r_[jx[:100], jx[100:] + 50.0]
    sx2, _, _ = smoothed_to(tx, jy, p, two, 0.5)
    assert sx2[:100].max() < 2.0 and sx2[100:].min() > 47.0
    # Through prepare: the option changes a jagged pad's points and not an even one's.
    even = tr(x * 100, y * 100)
    jagged = tr(jx * 100, jy * 100)
    cfg = PreprocessConfig(resample_hz=None, smooth_jagged=0.5)
    assert np.array_equal(prepare(even, cfg).x, prepare(even, PreprocessConfig(resample_hz=None)).x)
    assert not np.allclose(prepare(jagged, cfg).x, prepare(jagged, PreprocessConfig(resample_hz=None)).x)


def test_strokes_are_averaged_and_measured_at_once_as_one_by_one():
    """The smoothing averages every stroke at once (a kanji signature has dozens): the same as
    :func:`moving_average` stroke by stroke, its window narrowed on short strokes, for strokes of
    every length from 1 point; and jaggedness is the per-stroke definition's."""
    from models.preprocess import _averaged_by_stroke, equal_runs, jaggedness

    rng = np.random.default_rng(5)
    lengths = list(range(1, 16)) + [40, 2, 1, 7]
    stroke = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
    v = rng.normal(size=len(stroke)).cumsum()
    for width in range(1, 14):
        one_by_one = np.concatenate([moving_average(v[sl], width) for sl in equal_runs(stroke)])
        np.testing.assert_allclose(_averaged_by_stroke(v, stroke, width), one_by_one, rtol=0, atol=1e-12)
    x, y = rng.normal(size=(2, len(stroke))).cumsum(axis=1)
    x[stroke == 16], y[stroke == 16] = 3.0, 1.0  # 40 points that never move have no pace: not counted
    by_stroke = []
    for sl in equal_runs(stroke):
        step = np.hypot(np.diff(x[sl]), np.diff(y[sl])).mean() if sl.stop - sl.start >= 5 else 0.0
        if step > 0:
            by_stroke.append(np.hypot(np.diff(x[sl], 2), np.diff(y[sl], 2)).mean() / step)
    assert jaggedness(x, y, stroke) == pytest.approx(float(np.median(by_stroke)), rel=1e-12)
    assert jaggedness(x[:4], y[:4], stroke[:4]) == 0.0


def test_settings_that_cannot_prepare_are_refused():
    for bad in ({"resample_hz": 0.0}, {"lowpass_hz": -5.0}, {"smooth_jagged": float("nan")}, {"smooth_jagged": 0.0}):
        with pytest.raises(ValueError):
            PreprocessConfig(**bad)
    assert PreprocessConfig(resample_hz=None).resample_hz is None
