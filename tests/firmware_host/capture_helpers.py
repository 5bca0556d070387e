"""Shared builders for the capture tests: real evdev events, small synthetic signatures."""

from __future__ import annotations

import numpy as np
from evdev import InputEvent
from evdev import ecodes as e

from firmware_host.events import AxisInfo, DeviceCaps
from models.trajectory import DeviceInfo, Trajectory

T0 = 1_700_000_000.0


def ev(t: float, etype: int, code: int, value: int) -> InputEvent:
    us = int(round((T0 + t) * 1e6))
    return InputEvent(us // 1_000_000, us % 1_000_000, etype, code, value)


def syn(t: float) -> InputEvent:
    return ev(t, e.EV_SYN, e.SYN_REPORT, 0)


def tablet_caps(*, pressure: bool = True, resolution: int = 100, touch: bool = True,
                tool: bool = True, name: str = "Test Tablet Pen") -> DeviceCaps:
    abs_ = {
        e.ABS_X: AxisInfo(0, 30000, resolution),
        e.ABS_Y: AxisInfo(0, 20000, resolution),
    }
    if pressure:
        abs_[e.ABS_PRESSURE] = AxisInfo(0, 1023)
    keys = {e.BTN_STYLUS}
    if touch:
        keys.add(e.BTN_TOUCH)
    if tool:
        keys.add(e.BTN_TOOL_PEN)
    return DeviceCaps(name=name, abs=abs_, keys=frozenset(keys))


def synthetic_signature(seed: int = 0, n_strokes: int = 3, *, units: str = "mm",
                        hover_between: int = 5, stroke_breaks: bool = False,
                        rate_hz: float = 200.0) -> Trajectory:
    """A random-walk 'signature': strokes of 20–60 points, pressure in 1..1023 levels."""
    rng = np.random.default_rng(seed)
    xs: list[float] = []
    ys: list[float] = []
    ps: list[float] = []
    ts: list[float] = []
    ds: list[bool] = []
    br: list[int] = []
    t, dt = 0.0, 1.0 / rate_hz
    scale = 1.0 if units == "mm" else 100.0
    for s in range(n_strokes):
        m = int(rng.integers(20, 60))
        ang = np.cumsum(rng.normal(0, 0.3, m))
        x = (20 + 30 * s + np.cumsum(np.cos(ang)) * 0.8) * scale
        y = (30 + np.cumsum(np.sin(ang)) * 0.8) * scale
        if stroke_breaks and s > 0:
            br.append(len(xs))
        for i in range(m):
            xs.append(float(x[i]) if units == "mm" else float(round(x[i])))
            ys.append(float(y[i]) if units == "mm" else float(round(y[i])))
            ps.append(int(rng.integers(1, 1024)) / 1023)
            ts.append(t)
            ds.append(True)
            t += dt
        if not stroke_breaks and s < n_strokes - 1:
            for _ in range(hover_between):
                xs.append(xs[-1] + 0.5 * scale)
                ys.append(ys[-1])
                ps.append(0.0)
                ts.append(t)
                ds.append(False)
                t += dt
    device = DeviceInfo(name="synthetic", units=units,  # type: ignore[arg-type]
                        resolution=100.0 if units == "mm" else None, pressure_levels=1023)
    return Trajectory(x=np.array(xs), y=np.array(ys), pressure=np.array(ps), t=np.array(ts),
                      pen_down=np.array(ds), device=device, stroke_breaks=tuple(br))
