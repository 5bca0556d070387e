"""What another pen pad would have recorded of the same signature: pure ``Trajectory -> Trajectory``.

Kiosk pads differ from the tablets the verifier was tuned on in a few concrete ways: some report
no pressure, some no timestamps (the software then assumes the nominal rate), and they sample at
75-200 Hz. Each function here turns a recorded signature into what such a pad would have
delivered, so that the cross-device yardstick (``tools/cross_device.py``) can measure the verifier
on "the same writers, another pad", and training can use them as augmentation.

All are pure: the input is not changed; positions are moved only by :func:`transformed` (another
pad orientation, slant, aspect or resolution) and :func:`jittered_positions` (a noisy sensor, or
a replay disguised), otherwise only dropped or interpolated,
and the result is a valid ``Trajectory`` whose ``DeviceInfo`` says what the new pad knows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.trajectory import DeviceInfo, Trajectory


def without_pressure(traj: Trajectory) -> Trajectory:
    """A pad without a pressure sensor: pressure is 1.0 while the pen is down, 0 otherwise (what
    ``Trajectory.from_samples`` builds for a device with ``pressure_levels=None``)."""
    return Trajectory(
        x=traj.x,
        y=traj.y,
        pressure=traj.pen_down.astype(np.float64),
        t=traj.t,
        pen_down=traj.pen_down,
        device=replace(traj.device, pressure_levels=None, name=f"{traj.device.name} [no pressure]"),
        gaps=traj.gaps,
        stroke_breaks=traj.stroke_breaks,
    )


def without_time(traj: Trajectory, rate_hz: float | None = None) -> Trajectory:
    """A pad that sends no timestamps: the software assumes one sample every ``1 / rate_hz``
    seconds (default: the device's nominal rate, else 100 Hz), so irregular sampling and the
    time spent with the pen lifted between contact-only samples are lost."""
    rate = float(rate_hz or traj.device.nominal_rate_hz or 100.0)
    if not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
    return Trajectory(
        x=traj.x,
        y=traj.y,
        pressure=traj.pressure,
        t=np.arange(len(traj), dtype=np.float64) / rate,
        pen_down=traj.pen_down,
        device=replace(traj.device, time_measured=False, nominal_rate_hz=rate,
                       name=f"{traj.device.name} [no time, {rate:g} Hz assumed]"),
        gaps=traj.gaps,
        stroke_breaks=traj.stroke_breaks,
    )


def _segments(traj: Trajectory) -> list[tuple[int, int]]:
    """Maximal runs of one pen state, also split at ``stroke_breaks`` (a lift between two
    contact-only samples): what must never be interpolated across."""
    cuts = set((np.flatnonzero(np.diff(traj.pen_down.astype(np.int8)) != 0) + 1).tolist())
    cuts.update(traj.stroke_breaks)
    bounds = [0, *sorted(cuts), len(traj)]
    return list(zip(bounds[:-1], bounds[1:]))


def resampled(traj: Trajectory, rate_hz: float) -> Trajectory:
    """The signature as a pad sampling at ``rate_hz`` would have reported it.

    Each segment (a stroke, or a run of hover points) is sampled from its first point every
    ``1 / rate_hz`` seconds up to its last, positions and pressure interpolated linearly in time;
    a segment shorter than one period keeps one point, so no stroke vanishes. Segments are never
    joined, so a pen lift is never drawn as ink. Sample-loss marks (``gaps``) do not carry over.
    A pad without timestamps (``time_measured=False``) gets times synthesised at the new rate.
    """
    rate = float(rate_hz)
    if not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    ts: list[np.ndarray] = []
    downs: list[np.ndarray] = []
    breaks: list[int] = []
    n_out = 0
    prev_down = False
    for a, b in _segments(traj):
        t, cols = traj.t[a:b], (traj.x[a:b], traj.y[a:b], traj.pressure[a:b])
        # Repeated timestamps would make interpolation ill-defined: keep the last sample at a time.
        keep = np.append(np.diff(t) > 0, True)
        t, cols = t[keep], tuple(c[keep] for c in cols)
        tn = t[0] + np.arange(int(np.floor((t[-1] - t[0]) * rate + 1e-9)) + 1) / rate
        down = bool(traj.pen_down[a])
        if down and prev_down and n_out:
            breaks.append(n_out)  # a new stroke right after another one: keep the lift
        for out, c in zip((xs, ys, ps), cols):
            out.append(np.interp(tn, t, c))
        ts.append(tn)
        downs.append(np.full(len(tn), down))
        n_out += len(tn)
        prev_down = down
    t_new = np.concatenate(ts)
    if not traj.device.time_measured:
        t_new = np.arange(n_out, dtype=np.float64) / rate
    return Trajectory(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        pressure=np.clip(np.concatenate(ps), 0.0, 1.0),
        t=t_new - t_new[0],
        pen_down=np.concatenate(downs),
        device=replace(traj.device, nominal_rate_hz=rate, name=f"{traj.device.name} [{rate:g} Hz]"),
        stroke_breaks=tuple(breaks),
    )


def _with(traj: Trajectory, name: str, **changes: object) -> Trajectory:
    """``traj`` with some columns or device fields replaced (the rest kept), renamed ``name``."""
    cols: dict[str, object] = {"x": traj.x, "y": traj.y, "pressure": traj.pressure, "t": traj.t,
                               "pen_down": traj.pen_down, "gaps": traj.gaps, "stroke_breaks": traj.stroke_breaks}
    device = changes.pop("device", traj.device)
    assert isinstance(device, DeviceInfo)
    cols.update(changes)
    return Trajectory(device=replace(device, name=f"{traj.device.name} [{name}]"), **cols)  # type: ignore[arg-type]


def quantised_pressure(traj: Trajectory, levels: int, gamma: float = 1.0) -> Trajectory:
    """A pad with ``levels`` pressure steps and another response curve: pressure ``p ** gamma``
    (gamma < 1: a soft pen that reaches high values early), rounded to the pad's steps; a touching
    pen reports at least one step. Unchanged for a trajectory without pressure."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels!r}")
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be positive, got {gamma!r}")
    if not traj.device.has_pressure:
        return traj
    p = np.rint(np.power(traj.pressure, gamma) * levels)
    p = np.where(traj.pen_down, np.clip(p, 1, levels), 0.0) / levels
    return _with(traj, f"{levels} levels, gamma {gamma:.2g}", pressure=p,
                 device=replace(traj.device, pressure_levels=int(levels)))


def transformed(traj: Trajectory, *, rotation_deg: float = 0.0, slant_deg: float = 0.0, aspect: float = 1.0,
                grid: float | None = None) -> Trajectory:
    """The pad held or calibrated differently: rotated by ``rotation_deg``, slanted (x shifted in
    proportion to height by ``slant_deg``), x stretched by ``aspect`` relative to y, and positions
    rounded to a coarser ``grid`` (in the trajectory's units: a lower resolution)."""
    if not (np.isfinite(aspect) and aspect > 0):
        raise ValueError(f"aspect must be positive, got {aspect!r}")
    if grid is not None and not (np.isfinite(grid) and grid > 0):
        raise ValueError(f"grid must be positive, got {grid!r}")
    r, k = np.radians(rotation_deg), np.tan(np.radians(slant_deg))
    cx, cy = float(np.mean(traj.x)), float(np.mean(traj.y))
    x0, y0 = traj.x - cx, traj.y - cy
    x1 = (x0 - k * y0) * aspect  # y grows downwards: a positive slant leans the tops to the right
    x = cx + np.cos(r) * x1 - np.sin(r) * y0
    y = cy + np.sin(r) * x1 + np.cos(r) * y0
    if grid is not None:
        x, y = np.rint(x / grid) * grid, np.rint(y / grid) * grid
    return _with(traj, f"rot {rotation_deg:.2g}, slant {slant_deg:.2g}, aspect {aspect:.3g}", x=x, y=y)


def jittered_time(traj: Trajectory, offsets: np.ndarray) -> Trajectory:
    """Timestamps each moved by ``offsets`` (s, one per point; a pad's clock or a USB stack's
    latency), kept non-decreasing and starting at 0."""
    off = np.asarray(offsets, dtype=np.float64)
    if off.shape != traj.t.shape or not np.all(np.isfinite(off)):
        raise ValueError(f"need one finite offset per point ({len(traj.t)}), got shape {off.shape}")
    t = np.maximum.accumulate(traj.t + off)
    return _with(traj, "time jitter", t=t - t[0])


def jittered_positions(traj: Trajectory, offsets: np.ndarray) -> Trajectory:
    """Positions each moved by ``offsets`` ((n, 2), in the trajectory's units): a noisy sensor, or
    a recorded signature disguised before it is played again (``tools.copy_check``)."""
    off = np.asarray(offsets, dtype=np.float64)
    if off.shape != (len(traj.t), 2) or not np.all(np.isfinite(off)):
        raise ValueError(f"need one finite (dx, dy) per point ({len(traj.t)}), got shape {off.shape}")
    return _with(traj, "position jitter", x=traj.x + off[:, 0], y=traj.y + off[:, 1])


def dropped(traj: Trajectory, keep: np.ndarray) -> Trajectory:
    """The points where ``keep`` is True (a pad losing samples); the first and last point of
    every segment (stroke or hover run) are always kept, so no stroke vanishes or merges, and
    stroke breaks and gap marks are re-indexed."""
    k = np.asarray(keep, dtype=bool).copy()
    if k.shape != traj.t.shape:
        raise ValueError(f"need one flag per point ({len(traj.t)}), got shape {k.shape}")
    for a, b in _segments(traj):
        k[a] = k[b - 1] = True
    new_index = np.cumsum(k) - 1

    def moved(idx: tuple[int, ...]) -> tuple[int, ...]:
        # A mark on a dropped point moves to the next kept one.
        out = {int(new_index[i]) + (0 if k[i] else 1) for i in idx}
        return tuple(sorted(i for i in out if 0 < i < int(k.sum())))

    return _with(traj, f"{int((~k).sum())} dropped", x=traj.x[k], y=traj.y[k], pressure=traj.pressure[k],
                 t=traj.t[k], pen_down=traj.pen_down[k], gaps=moved(traj.gaps),
                 stroke_breaks=moved(traj.stroke_breaks))
