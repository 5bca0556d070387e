"""Rendered ink: a pen trajectory drawn as the ink it would leave, ready for the image models."""

from __future__ import annotations

import numpy as np
import pytest

from models.image_preprocess import ink_mask, prepare
from models.render import RenderError, render_ink
from models.trajectory import DeviceInfo, Trajectory


def _line(pressure: float, n: int = 200, units: str = "device") -> Trajectory:
    x = np.linspace(0.0, 40.0, n)
    y = 10.0 + 5.0 * np.sin(x / 4.0)
    dev = DeviceInfo(units=units, resolution=None if units == "device" else 10.0, pressure_levels=1024)
    return Trajectory(x=x, y=y, pressure=np.full(n, pressure), t=np.arange(n) * 0.01, pen_down=np.ones(n, bool), device=dev)


def test_harder_pressure_draws_a_wider_line() -> None:
    light = ink_mask(render_ink(_line(0.1)).pixels).sum()
    hard = ink_mask(render_ink(_line(1.0)).pixels).sum()
    assert hard > 1.4 * light


def test_millimetre_trajectories_keep_their_size_at_the_dpi() -> None:
    img = render_ink(_line(0.5, units="mm"), dpi=254.0, margin_mm=0.0)
    # 40 mm at 10 px/mm, plus room for the pen's width (at most 1.25 x 0.5 mm) on each side
    assert 400 <= img.shape[1] <= 415
    ys, xs = np.nonzero(ink_mask(img.pixels))
    assert 395 <= xs.max() - xs.min() <= 410
    assert img.dpi == 254.0


def test_pen_up_moves_leave_no_ink() -> None:
    n = 300
    x = np.concatenate([np.linspace(0, 10, 100), np.linspace(10, 30, 100), np.linspace(30, 40, 100)])
    y = np.full(n, 5.0)
    y[100:200] = 30.0  # the hover goes far below the line
    down = np.ones(n, bool)
    down[100:200] = False
    traj = Trajectory(x=x, y=y, pressure=np.where(down, 0.6, 0.0), t=np.arange(n) * 0.01, pen_down=down,
                      device=DeviceInfo(pressure_levels=1024))
    mask = ink_mask(render_ink(traj, longest_side_mm=40.0, margin_mm=0.0).pixels)
    rows = np.nonzero(mask.any(axis=1))[0]
    assert rows.max() - rows.min() < 20  # one thin horizontal band: the hover was not drawn


def test_seeded_variation_is_reproducible_and_unseeded_is_pure() -> None:
    a = render_ink(_line(0.5), rng=np.random.default_rng(3)).pixels
    b = render_ink(_line(0.5), rng=np.random.default_rng(3)).pixels
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(render_ink(_line(0.5)).pixels, render_ink(_line(0.5)).pixels)


def test_rendered_ink_goes_through_the_one_preprocessing() -> None:
    out = prepare(render_ink(_line(0.7)))
    assert out.shape == (128, 128) and out.max() > 0.9


def test_nothing_to_draw_is_a_clear_error() -> None:
    t = _line(0.5)
    up = Trajectory(x=t.x, y=t.y, pressure=np.zeros(len(t)), t=t.t, pen_down=np.zeros(len(t), bool))
    with pytest.raises(RenderError, match="no pen-down"):
        render_ink(up)
