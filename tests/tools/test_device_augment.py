"""Device augmentation for training (tools/train/augment.py): valid pads, the drawn ranges, one code
path to the model input, determinism."""

from __future__ import annotations

import numpy as np

from models.learned import LearnedConfig, resampled_points
from models.trajectory import Trajectory
from tools import synth
from tools.train.augment import PRESSURE_LEVELS, DeviceAugment, augment


def _signature() -> Trajectory:
    return synth.render(synth.random_writer(np.random.default_rng(3)), np.random.default_rng(3))


def test_augmented_signatures_are_valid_pads_within_the_ranges() -> None:
    tr = _signature()
    rng = np.random.default_rng(0)
    rates, no_pressure, no_time, levels = [], 0, 0, set()
    for _ in range(60):
        a = augment(tr, rng)
        assert len(a.strokes()) == len(tr.strokes())  # no stroke lost or merged
        assert (np.diff(a.t) >= 0).all()
        rates.append(a.device.nominal_rate_hz)
        if not a.device.has_pressure:
            no_pressure += 1
            np.testing.assert_array_equal(a.pressure, a.pen_down.astype(float))
        else:
            levels.add(a.device.pressure_levels)
            assert a.device.pressure_levels in PRESSURE_LEVELS
        no_time += not a.device.time_measured
        # The duration follows the recording (up to resampling, jitter and a pad without time).
        if a.device.time_measured:
            assert abs(a.duration - tr.duration) < 0.1
        # One code path: the augmented pad goes through the device's own featurisation.
        pts = resampled_points(a, LearnedConfig())
        assert np.isfinite(pts.feats).all()
    assert 75.0 <= min(rates) and max(rates) <= 200.0 and max(rates) - min(rates) > 60
    assert 3 <= no_pressure <= 20 and 1 <= no_time <= 15
    assert len(levels) >= 4


def test_augmentation_is_deterministic_and_varies() -> None:
    tr = _signature()
    a = augment(tr, np.random.default_rng(5))
    b = augment(tr, np.random.default_rng(5))
    c = augment(tr, np.random.default_rng(6))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.t, b.t)
    assert len(a) != len(c) or not np.array_equal(a.x, c.x)


def test_a_pad_without_pressure_stays_without() -> None:
    from models.device_variants import without_pressure

    tr = without_pressure(_signature())
    for s in range(10):
        assert not augment(tr, np.random.default_rng(s), DeviceAugment(p_no_pressure=0.0)).device.has_pressure
