import numpy as np
import pytest

from models.trajectory import MAX_POINTS, DeviceInfo, Trajectory, TrajectoryError

DEV = DeviceInfo(name="test", pressure_levels=1024, nominal_rate_hz=100.0)


def make(n=10, **over):
    cols = dict(
        x=np.arange(n, dtype=float),
        y=np.zeros(n),
        pressure=np.full(n, 0.5),
        t=np.arange(n) / 100.0,
        pen_down=np.ones(n, bool),
        device=DEV,
    )
    cols.update(over)
    return Trajectory(**cols)


def test_valid_trajectory_is_read_only():
    tr = make()
    assert len(tr) == 10 and tr.duration == pytest.approx(0.09)
    with pytest.raises(ValueError):
        tr.x[0] = 5.0


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(x=[0.0, np.nan, 1.0], y=[0, 0, 0], pressure=[0, 0, 0], t=[0, 1, 2], pen_down=[1, 1, 1]), "non-finite x at point 1"),
        (dict(t=np.array([0.0, 0.01, 0.005] + [0.02] * 7)), "time goes backwards at point 2"),
        (dict(pressure=np.full(10, 1.5)), "pressure must be normalised"),
        (dict(y=np.zeros(9)), "column y has 9 points"),
        (dict(x=[], y=[], pressure=[], t=[], pen_down=[]), "empty trajectory"),
        (dict(t=np.full(10, np.inf)), "non-finite t"),
    ],
)
def test_invalid_input_names_the_problem(over, message):
    with pytest.raises(TrajectoryError, match=message):
        make(**over)


def test_absurdly_long_input_is_refused():
    n = MAX_POINTS + 1
    with pytest.raises(TrajectoryError, match="too long"):
        make(n=n)


def test_strokes_from_pen_state_and_breaks():
    down = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], bool)
    tr = make(pen_down=down, stroke_breaks=(7,))
    assert [(s.start, s.stop) for s in tr.strokes()] == [(0, 3), (5, 7), (7, 10)]
    assert tr.stroke_ids().tolist() == [0, 0, 0, -1, -1, 1, 1, 2, 2, 2]


def test_gap_indices_are_validated():
    with pytest.raises(TrajectoryError, match="gaps indices"):
        make(gaps=(0,))
    assert make(gaps=(3, 3, 2)).gaps == (2, 3)


def test_from_samples_synthesises_time_and_normalises_pressure():
    dev = DeviceInfo(name="nfi", pressure_levels=1024, nominal_rate_hz=200.0, time_measured=False)
    tr = Trajectory.from_samples([0, 1, 2, 3], [0, 0, 0, 0], [0, 512, 1024, 0], device=dev)
    assert np.allclose(tr.t, [0, 0.005, 0.01, 0.015])
    assert np.allclose(tr.pressure, [0, 0.5, 1.0, 0])
    assert tr.pen_down.tolist() == [False, True, True, False]


def test_from_samples_without_time_needs_a_nominal_rate():
    with pytest.raises(TrajectoryError, match="no timestamps"):
        Trajectory.from_samples([0, 1], [0, 1], [1, 1], device=DEV)
    with pytest.raises(TrajectoryError, match="nominal_rate_hz is required"):
        DeviceInfo(time_measured=False)


def test_device_without_pressure_reports_pen_down_as_full_pressure():
    dev = DeviceInfo(name="mouse-like", pressure_levels=None)
    tr = Trajectory.from_samples([0, 1, 2], [0, 1, 2], [0, 0, 0], device=dev, t=[0, 0.01, 0.02], pen_down=[1, 1, 0])
    assert not dev.has_pressure
    assert tr.pressure.tolist() == [1.0, 1.0, 0.0]


def test_millimetres_from_resolution():
    dev = DeviceInfo(units="device", resolution=100.0, pressure_levels=1)
    tr = Trajectory.from_samples([0, 200], [100, 300], [1, 1], device=dev, t=[0, 0.01])
    assert np.allclose(tr.xy_mm(), [[0, 1], [2, 3]])
    assert make().xy_mm() is None


def test_ink_time_sums_strokes_and_skips_pauses():
    down = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], bool)  # strokes 0-2 and 5-9 at 100 Hz
    assert make(pen_down=down).ink_time == pytest.approx(0.02 + 0.04)
