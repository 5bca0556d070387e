"""Trajectory → the event stream a Linux tablet driver would emit.

This is how tests, the demo and a newcomer without a tablet drive the real capture path: any
dataset trajectory becomes integer axis events within an ``absinfo`` range, with the kernel's
habits reproduced:

* the input core drops an ABS event whose value did not change, so unchanged axes are omitted;
* a frame is closed by SYN_REPORT, all its events share one timestamp (µs resolution);
* BTN_TOOL_PEN goes to 1 when the pen enters proximity and to 0 when it leaves; BTN_TOUCH
  follows contact; pressure is zeroed at lift like Wacom and most HID pens do;
* the input core never delivers a frame that contains only SYN_REPORT, so a sample identical to
  the previous one would vanish. Wacom's driver sends MSC_SERIAL in every frame, which keeps
  such samples; ``msc_serial=True`` (default) does the same, False shows the other behaviour;
* where a trajectory's stroke ends between two pen-down points (``stroke_breaks``, e.g. SUSIG's
  end-of-stroke flag) a real tablet reports a lift frame: one is emitted half-way in time;
* optional hover frames before the first touch and after the last lift (the reader must trim
  them), optional SYN_DROPPED (the kernel's buffer overflow, with the state snapshot the live
  reader records after it), and optional timestamp jitter.

It imports only ``models.trajectory`` of ours (plus the capture layer's own stream types).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from evdev import InputEvent, ecodes

from firmware_host.errors import CaptureError
from firmware_host.events import AxisInfo, DeviceCaps, DeviceState, StreamItem
from models.trajectory import Trajectory

#: Wacom-like identity for generated devices: the numbers are not a real product's.
GENERATED_NAME = "sigkiosk generated tablet Pen"


@dataclass(frozen=True)
class GeneratorOptions:
    """How to turn a trajectory into events.

    ``resolution``: units/mm written to absinfo and used for trajectories in mm (0: report no
    resolution; then coordinates are taken as raw device units). Trajectories in device units
    with a known resolution keep their own.
    ``pressure_max``: raw pressure range when the trajectory's device does not give one; None
    together with ``with_pressure=False`` makes a device with no pressure axis.
    ``drop_frames``: frame indices (0-based, over the trajectory's points) at which the client
    buffer overflows: SYN_DROPPED, the rest of that frame, ``drop_length`` frames lost, then a
    state snapshot (unless ``drop_state=False``, as in a truncated recording).
    ``jitter_us``: each frame's timestamp moves by up to this many µs, keeping order.
    """

    resolution: int = 100
    pressure_max: int = 1023
    with_pressure: bool = True
    with_touch_key: bool = True
    with_tool_key: bool = True
    msc_serial: bool = True
    hover_frames: int = 0
    hover_step_s: float = 0.005
    drop_frames: tuple[int, ...] = ()
    drop_length: int = 3
    drop_state: bool = True
    jitter_us: int = 0
    seed: int = 0
    start_time: float = 1_700_000_000.0
    margin_units: int = 100


@dataclass
class GeneratedStream:
    """A device and what it said. ``lost_points``: trajectory indices lost to SYN_DROPPED."""

    caps: DeviceCaps
    items: list[StreamItem]
    lost_points: list[int] = field(default_factory=list)
    #: For each frame delivered to the reader while in proximity, in order: the trajectory index
    #: it came from, or -1 for a frame the generator made up (hover, the lift at a stroke break).
    delivered: list[int] = field(default_factory=list)
    #: Positions in ``delivered`` whose frame follows a SYN_DROPPED (the reader marks a gap).
    delivered_after_drop: list[int] = field(default_factory=list)
    #: The event time (seconds, as stamped) of each delivered frame.
    delivered_t: list[float] = field(default_factory=list)


def _ev(t_us: int, etype: int, code: int, value: int) -> InputEvent:
    return InputEvent(t_us // 1_000_000, t_us % 1_000_000, etype, code, int(value))


def quantise(traj: Trajectory, opts: GeneratorOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int | None]:
    """Raw integer axes for a trajectory: (x, y, pressure, resolution, pressure range)."""
    dev = traj.device
    if dev.units == "mm":
        res = opts.resolution
        if res <= 0:
            raise CaptureError("a trajectory in mm needs a resolution > 0 to become device units")
        scale = float(res)
    elif dev.resolution is not None and opts.resolution > 0:
        res, scale = int(round(dev.resolution)), 1.0
    else:
        res, scale = (opts.resolution if dev.resolution is not None else 0), 1.0
    x = np.rint(np.asarray(traj.x) * scale).astype(np.int64)
    y = np.rint(np.asarray(traj.y) * scale).astype(np.int64)
    if opts.with_pressure:
        p_max = dev.pressure_levels if dev.pressure_levels is not None else opts.pressure_max
        p = np.rint(np.asarray(traj.pressure) * p_max).astype(np.int64)
        return x, y, p, res, int(p_max)
    return x, y, np.zeros(len(x), dtype=np.int64), res, None


def trajectory_to_events(traj: Trajectory, opts: GeneratorOptions | None = None) -> GeneratedStream:
    """The kernel event stream for ``traj`` (see module docstring)."""
    opts = opts or GeneratorOptions()
    if not opts.with_touch_key and not opts.with_pressure and not bool(np.all(traj.pen_down)):
        raise CaptureError("a device with neither BTN_TOUCH nor pressure cannot express this "
                           "trajectory's pen state (it has pen-up points)")
    rng = np.random.default_rng(opts.seed)
    x, y, p, res, p_max = quantise(traj, opts)
    lim = 2**31 - 1 - opts.margin_units
    if len(x) and (np.abs(x).max() > lim or np.abs(y).max() > lim):
        raise CaptureError("trajectory coordinates do not fit a 32-bit axis at this resolution")
    lo_x, hi_x = int(min(0, x.min())), int(x.max()) + opts.margin_units
    lo_y, hi_y = int(min(0, y.min())), int(y.max()) + opts.margin_units
    abs_ = {
        ecodes.ABS_X: AxisInfo(min=lo_x, max=hi_x, resolution=res),
        ecodes.ABS_Y: AxisInfo(min=lo_y, max=hi_y, resolution=res),
    }
    if p_max is not None:
        abs_[ecodes.ABS_PRESSURE] = AxisInfo(min=0, max=p_max)
    keys = {ecodes.BTN_STYLUS}
    if opts.with_touch_key:
        keys.add(ecodes.BTN_TOUCH)
    if opts.with_tool_key:
        keys.add(ecodes.BTN_TOOL_PEN)
    caps = DeviceCaps(
        name=GENERATED_NAME,
        abs=abs_,
        keys=frozenset(keys),
        msc=frozenset({ecodes.MSC_SERIAL}) if opts.msc_serial else frozenset(),
        vendor=0x1209,  # pid.codes open-source vendor id: clearly not a real tablet
        product=0x5151,
        bustype=ecodes.BUS_USB,
        phys="generated",
    )

    # The frame list: (time s, x, y, p, touch, in_range, trajectory index or -1).
    n = len(traj)
    t = np.asarray(traj.t, dtype=np.float64)
    down = np.asarray(traj.pen_down, dtype=bool)
    breaks = set(traj.stroke_breaks)
    frames: list[tuple[float, int, int, int, bool, bool, int]] = []
    for k in range(opts.hover_frames, 0, -1):
        frames.append((t[0] - k * opts.hover_step_s, int(x[0]), int(y[0]), 0, False, True, -1))
    for i in range(n):
        if i in breaks and down[i] and down[i - 1]:
            frames.append(((t[i - 1] + t[i]) / 2, int(x[i - 1]), int(y[i - 1]), 0, False, True, -1))
        frames.append((t[i], int(x[i]), int(y[i]), int(p[i]), bool(down[i]), True, i))
    for k in range(1, opts.hover_frames + 1):
        frames.append((t[-1] + k * opts.hover_step_s, int(x[-1]), int(y[-1]), 0, False, True, -1))
    frames.append((t[-1] + (opts.hover_frames + 1) * opts.hover_step_s, 0, 0, 0, False, False, -1))

    base_us = int(round(opts.start_time * 1e6))
    times_us = [base_us + int(round(f[0] * 1e6)) for f in frames]
    if opts.jitter_us > 0:
        jit = rng.integers(-opts.jitter_us, opts.jitter_us + 1, size=len(times_us))
        prev = -(2**62)
        for k in range(len(times_us)):
            v = max(times_us[k] + int(jit[k]), prev)
            times_us[k] = prev = v

    drop_points = set(opts.drop_frames)
    drop_at = {fi for fi, f in enumerate(frames) if f[6] >= 0 and f[6] in drop_points}
    items: list[StreamItem] = []
    lost: list[int] = []
    delivered: list[int] = []
    delivered_t: list[float] = []
    after_drop: list[int] = []
    pending_gap = False
    # What the device (kernel) believes the current state is, to omit unchanged values.
    cur = {ecodes.ABS_X: 0, ecodes.ABS_Y: 0, ecodes.ABS_PRESSURE: 0}
    cur_keys: dict[int, bool] = {ecodes.BTN_TOUCH: False, ecodes.BTN_TOOL_PEN: False}
    serial = 0x5A5A
    skip = 0
    # The live reader starts every capture with the device's state (EVIOCGABS/EVIOCGKEY) so
    # that axes the kernel will not repeat are known; a generated stream does the same.
    items.append(DeviceState(abs=dict(cur) if p_max is not None else
                             {ecodes.ABS_X: 0, ecodes.ABS_Y: 0}, keys=frozenset(),
                             time=base_us * 1e-6 + float(t[0]) - 1.0))
    for fi, (_ft, fx, fy, fp, ftouch, frange, idx) in enumerate(frames):
        tu = times_us[fi]
        evs: list[InputEvent] = []
        if opts.with_tool_key and cur_keys[ecodes.BTN_TOOL_PEN] != frange:
            evs.append(_ev(tu, ecodes.EV_KEY, ecodes.BTN_TOOL_PEN, int(frange)))
            cur_keys[ecodes.BTN_TOOL_PEN] = frange
        for code, v in ((ecodes.ABS_X, fx), (ecodes.ABS_Y, fy), (ecodes.ABS_PRESSURE, fp)):
            if code == ecodes.ABS_PRESSURE and p_max is None:
                continue
            if cur[code] != v:
                evs.append(_ev(tu, ecodes.EV_ABS, code, v))
                cur[code] = v
        if opts.with_touch_key and cur_keys[ecodes.BTN_TOUCH] != ftouch:
            evs.append(_ev(tu, ecodes.EV_KEY, ecodes.BTN_TOUCH, int(ftouch)))
            cur_keys[ecodes.BTN_TOUCH] = ftouch
        if opts.msc_serial and frange:
            evs.append(_ev(tu, ecodes.EV_MSC, ecodes.MSC_SERIAL, serial))
        if skip > 0:
            # Lost in the overflow: the kernel state moved on, the client saw nothing.
            skip -= 1
            if idx >= 0:
                lost.append(idx)
            if skip == 0:
                _after_drop(items, opts, cur, cur_keys, p_max, tu)
            continue
        if fi in drop_at:
            # The overflow hits mid-frame: the client gets SYN_DROPPED and then the tail of the
            # frame, which it must ignore up to and including the SYN_REPORT.
            items.append(_ev(tu, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0))
            items.extend(evs[len(evs) // 2:])
            items.append(_ev(tu, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
            if idx >= 0:
                lost.append(idx)
            pending_gap = True
            skip = opts.drop_length
            if skip == 0:
                _after_drop(items, opts, cur, cur_keys, p_max, tu)
            continue
        if not evs:
            continue  # the input core would not deliver a lone SYN_REPORT
        if frange:
            if pending_gap:
                after_drop.append(len(delivered))
            delivered.append(idx)
            delivered_t.append(tu * 1e-6)
        pending_gap = False
        items.extend(evs)
        items.append(_ev(tu, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
    if skip > 0:
        _after_drop(items, opts, cur, cur_keys, p_max, times_us[-1])
    return GeneratedStream(caps=caps, items=items, lost_points=lost, delivered=delivered,
                           delivered_after_drop=after_drop, delivered_t=delivered_t)


def _after_drop(items: list[StreamItem], opts: GeneratorOptions, cur: dict[int, int],
                cur_keys: dict[int, bool], p_max: int | None, t_us: int) -> None:
    """What the live reader records once the drop is over: the device's state, read by ioctl."""
    if not opts.drop_state:
        return
    abs_ = {ecodes.ABS_X: cur[ecodes.ABS_X], ecodes.ABS_Y: cur[ecodes.ABS_Y]}
    if p_max is not None:
        abs_[ecodes.ABS_PRESSURE] = cur[ecodes.ABS_PRESSURE]
    keys = frozenset(k for k, v in cur_keys.items() if v)
    items.append(DeviceState(abs=abs_, keys=keys, time=t_us * 1e-6))
