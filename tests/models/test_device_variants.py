"""Device variants: what another pad would have recorded, on constructed trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from models.classic import signature_features
from models.device_variants import resampled, without_pressure, without_time
from models.trajectory import DeviceInfo, Trajectory

PAD = DeviceInfo(name="pad", pressure_levels=1023, nominal_rate_hz=100.0)


def contact_only(rate: float = 100.0) -> Trajectory:
    """Two strokes of contact-only samples (SUSIG-like): a break between them, a 0.3 s lift."""
    t1 = np.arange(40) / rate
    t2 = 0.7 + np.arange(30) / rate
    t = np.concatenate([t1, t2])
    x = np.concatenate([10 * t1, 5 + 8 * (t2 - 0.7)])
    y = np.concatenate([3 * t1 ** 2, 2 + np.sin(8 * (t2 - 0.7))])
    p = np.concatenate([np.linspace(0.2, 0.9, 40), np.linspace(0.8, 0.3, 30)])
    return Trajectory(x=x, y=y, pressure=p, t=t, pen_down=np.ones(70, bool), device=PAD, stroke_breaks=(40,))


def with_hover() -> Trajectory:
    """A stroke, hover points while lifted, a second stroke (a Wacom-like pad reporting proximity)."""
    n = 60
    t = np.arange(n) / 100.0
    down = np.ones(n, bool)
    down[25:35] = False
    p = np.where(down, 0.5, 0.0)
    return Trajectory(x=np.cos(t * 5), y=np.sin(t * 3), pressure=p, t=t, pen_down=down, device=PAD)


def test_without_pressure_keeps_everything_but_pressure() -> None:
    tr = with_hover()
    v = without_pressure(tr)
    assert v.device.pressure_levels is None and not v.device.has_pressure
    np.testing.assert_array_equal(v.pressure, tr.pen_down.astype(float))
    for name in ("x", "y", "t", "pen_down"):
        np.testing.assert_array_equal(getattr(v, name), getattr(tr, name))
    assert tr.pressure[0] == 0.5  # the input is untouched
    assert np.isfinite(signature_features(v)).all()  # a constant pressure column is no problem


def test_without_time_assumes_the_nominal_rate() -> None:
    tr = contact_only()
    v = without_time(tr)
    assert not v.device.time_measured and v.device.nominal_rate_hz == 100.0
    np.testing.assert_allclose(v.t, np.arange(70) / 100.0)  # the 0.3 s lift is gone
    assert tr.duration == pytest.approx(0.99)
    assert without_time(tr, 150.0).t[-1] == pytest.approx(69 / 150.0)
    with pytest.raises(ValueError):
        without_time(tr, -1.0)


@pytest.mark.parametrize("rate", [75.0, 200.0])
def test_resampled_keeps_strokes_durations_and_the_path(rate: float) -> None:
    tr = contact_only()
    v = resampled(tr, rate)
    assert v.device.nominal_rate_hz == rate and v.device.time_measured
    strokes = v.strokes()
    assert len(strokes) == 2 and v.stroke_breaks == (strokes[1].start,)
    for new, old in zip(strokes, tr.strokes()):
        # Each stroke lasts as long as it did, to within one new sample period.
        d_new = v.t[new.stop - 1] - v.t[new.start]
        d_old = tr.t[old.stop - 1] - tr.t[old.start]
        assert d_old - 1 / rate - 1e-9 <= d_new <= d_old + 1e-9
        assert np.allclose(np.diff(v.t[new]), 1 / rate)
    # The lift between the strokes is kept, and nothing is drawn across it.
    gap = v.t[strokes[1].start] - v.t[strokes[0].stop - 1]
    assert gap >= 0.3 - 1e-9
    # Points lie on the recorded path: the first stroke is x = 10 t.
    first = strokes[0]
    np.testing.assert_allclose(v.x[first], 10 * v.t[first], atol=1e-9)
    expected = (int(np.floor(0.39 * rate + 1e-9)) + 1) + (int(np.floor(0.29 * rate + 1e-9)) + 1)
    assert len(v) == expected
    assert np.isfinite(signature_features(v)).all()


def test_resampled_keeps_hover_runs_apart_and_short_strokes() -> None:
    v = resampled(with_hover(), 75.0)
    assert [bool(v.pen_down[s.start]) for s in v.strokes()] == [True, True]
    assert (~v.pen_down).any() and (v.pressure[~v.pen_down] == 0).all()
    blip = Trajectory(x=[0, 1, 2, 5, 6], y=[0, 1, 0, 5, 5], pressure=[0.5] * 5, t=[0, 0.01, 0.02, 0.2, 0.205],
                      pen_down=[True, True, True, True, True], device=PAD, stroke_breaks=(3,))
    short = resampled(blip, 75.0)
    assert len(short.strokes()) == 2  # a stroke shorter than one period keeps one point


def test_resampled_pad_without_timestamps_gets_times_at_the_new_rate() -> None:
    dev = DeviceInfo(name="nfi-like", pressure_levels=1024, nominal_rate_hz=200.0, time_measured=False)
    tr = Trajectory.from_samples(np.arange(100.0), np.zeros(100), np.full(100, 500), device=dev)
    v = resampled(tr, 75.0)
    assert not v.device.time_measured
    np.testing.assert_allclose(v.t, np.arange(len(v)) / 75.0)
    assert len(v) == int(np.floor(99 / 200 * 75 + 1e-9)) + 1
    with pytest.raises(ValueError):
        resampled(tr, 0.0)


# ---------------------------------------------------------------------------------------------
# The pad properties device augmentation draws (tools/train/augment.py)
# ---------------------------------------------------------------------------------------------


def test_quantised_pressure_has_the_pads_steps_and_curve() -> None:
    from models.device_variants import quantised_pressure

    tr = contact_only()
    v = quantised_pressure(tr, 256)
    assert v.device.pressure_levels == 256
    np.testing.assert_allclose(v.pressure * 256, np.rint(v.pressure * 256), atol=1e-9)
    assert np.abs(v.pressure - tr.pressure).max() <= 0.5 / 256 + 1e-12
    soft = quantised_pressure(tr, 8192, gamma=0.5)
    assert (soft.pressure >= tr.pressure - 1e-4).all() and soft.pressure.mean() > tr.pressure.mean()
    hover = with_hover()
    hv = quantised_pressure(hover, 512, 2.0)
    assert (hv.pressure[~hover.pen_down] == 0).all() and (hv.pressure[hover.pen_down] >= 1 / 512).all()
    assert quantised_pressure(without_pressure(tr), 256) .device.pressure_levels is None
    for bad in ((0, 1.0), (256, 0.0), (256, float("nan"))):
        with pytest.raises(ValueError):
            quantised_pressure(tr, *bad)


def test_transformed_rotates_slants_and_stretches_about_the_centre() -> None:
    from models.device_variants import transformed

    tr = contact_only()
    same = transformed(tr)
    np.testing.assert_allclose(same.x, tr.x, atol=1e-12)
    rot = transformed(tr, rotation_deg=90.0)
    cx, cy = tr.x.mean(), tr.y.mean()
    np.testing.assert_allclose(rot.x - cx, -(tr.y - cy), atol=1e-9)
    np.testing.assert_allclose(rot.y - cy, tr.x - cx, atol=1e-9)
    wide = transformed(tr, aspect=1.2)
    assert np.ptp(wide.x) == pytest.approx(1.2 * np.ptp(tr.x))
    np.testing.assert_allclose(wide.y, tr.y, atol=1e-12)
    coarse = transformed(tr, grid=0.5)
    np.testing.assert_allclose(coarse.x / 0.5, np.rint(coarse.x / 0.5), atol=1e-9)
    for name in ("t", "pen_down", "pressure"):
        np.testing.assert_array_equal(getattr(rot, name), getattr(tr, name))
    assert rot.stroke_breaks == tr.stroke_breaks
    with pytest.raises(ValueError):
        transformed(tr, aspect=0.0)


def test_jittered_time_stays_monotone() -> None:
    from models.device_variants import jittered_time

    tr = contact_only()
    rng = np.random.default_rng(0)
    v = jittered_time(tr, rng.uniform(-0.02, 0.02, len(tr)))  # larger than a period: must still be valid
    assert v.t[0] == 0 and (np.diff(v.t) >= 0).all()
    assert not np.array_equal(v.t, tr.t)
    with pytest.raises(ValueError):
        jittered_time(tr, np.zeros(3))


def test_dropped_keeps_every_stroke_and_reindexes_breaks() -> None:
    from models.device_variants import dropped

    tr = contact_only()
    keep = np.random.default_rng(1).uniform(size=len(tr)) > 0.5
    v = dropped(tr, keep)
    assert len(v) < len(tr)
    assert len(v.strokes()) == len(tr.strokes()) == 2
    assert v.stroke_breaks == (int(keep[:40].sum() + (0 if keep[0] else 1) + (0 if keep[39] else 1)),)
    # The first and last point of each stroke survive: the path's ends do not move.
    for a, b in zip(tr.strokes(), v.strokes()):
        assert (tr.x[a.start], tr.x[a.stop - 1]) == (v.x[b.start], v.x[b.stop - 1])
    hover = with_hover()
    hv = dropped(hover, np.zeros(len(hover), bool))
    assert len(hv.strokes()) == 2 and len(hv) == 6  # two points per run: stroke, hover, stroke
    with pytest.raises(ValueError):
        dropped(tr, np.ones(3, bool))
