"""Check that a trajectory survives trajectory → generated events → reader.

The generator knows which trajectory point each delivered frame came from; the reader does not.
So the reader's output is compared, point by point, with what the generator delivered: same
count, positions within the axis quantisation, pressure within one raw level, times within the
µs timestamp (plus any jitter asked for), same pen state, same strokes, gaps where samples were
dropped. Pure: used by the tests and by ``sigkiosk capture roundtrip``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_host.assembler import SegmenterConfig, assemble
from firmware_host.generator import GeneratedStream, GeneratorOptions, quantise, trajectory_to_events
from models.trajectory import Trajectory


@dataclass
class RoundTripResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    points: int = 0
    strokes: int = 0
    max_xy_error: float = 0.0
    max_p_error: float = 0.0
    max_t_error: float = 0.0


def roundtrip(traj: Trajectory, opts: GeneratorOptions | None = None,
              config: SegmenterConfig | None = None) -> RoundTripResult:
    """Generate events for ``traj``, assemble them, and compare (see module docstring)."""
    opts = opts or GeneratorOptions()
    # Stroke pauses in datasets can be long; the whole trajectory must stay one signature.
    config = config or SegmenterConfig(pen_up_timeout=max(2.0, traj.duration + 1.0),
                                       max_duration=traj.duration + 10.0, min_pen_down_points=1)
    stream = trajectory_to_events(traj, opts)
    sigs, _stats = assemble(stream.caps, stream.items, config)
    return compare(traj, stream, sigs, opts)


def compare(traj: Trajectory, stream: GeneratedStream, sigs: list, opts: GeneratorOptions) -> RoundTripResult:
    if opts.drop_frames and not opts.drop_state:
        return compare_never_wrong(traj, stream, sigs, opts)
    res = RoundTripResult(ok=False)
    src = stream.delivered
    down_orig = np.asarray(traj.pen_down)
    is_down = [s >= 0 and bool(down_orig[s]) for s in src]
    if not any(is_down):
        res.problems.append("no pen-down point was delivered")
        res.ok = len(sigs) == 0
        return res
    first = is_down.index(True)
    last = len(is_down) - 1 - is_down[::-1].index(True)
    src = src[first:last + 1]
    if len(sigs) != 1:
        res.problems.append(f"expected 1 signature, reader gave {len(sigs)}")
        return res
    out: Trajectory = sigs[0].trajectory
    res.points = len(out)
    if len(out) != len(src):
        res.problems.append(f"point count: expected {len(src)}, reader gave {len(out)}")
        return res
    idx = np.asarray(src)
    real = idx >= 0
    ri = idx[real]
    # Synthetic frames (hover, lift at stroke breaks) must come back as pen-up points.
    if np.any(np.asarray(out.pen_down)[~real]):
        res.problems.append("a generated lift/hover frame came back as pen-down")
    if not np.array_equal(np.asarray(out.pen_down)[real], down_orig[ri]):
        res.problems.append("pen state differs")
    # Position: the reader's units are mm when the device has a resolution, raw otherwise.
    rx, ry, rp, resolution, p_max = quantise(traj, opts)
    if traj.device.units == "mm":
        ex, ey = traj.x[ri], traj.y[ri]
        tol = 0.5 / resolution + 1e-9
    elif out.device.units == "mm":  # device units with known resolution: reader converts
        ex, ey = traj.x[ri] / resolution, traj.y[ri] / resolution
        tol = 0.5 / resolution + 1e-9
    else:
        ex, ey = traj.x[ri], traj.y[ri]
        tol = 0.5 + 1e-9
    err = max(float(np.max(np.abs(out.x[real] - ex), initial=0.0)),
              float(np.max(np.abs(out.y[real] - ey), initial=0.0)))
    res.max_xy_error = err
    if err > tol:
        res.problems.append(f"position error {err:.6g} exceeds quantisation {tol:.6g}")
    if p_max is not None:
        perr = float(np.max(np.abs(out.pressure[real] - traj.pressure[ri]), initial=0.0))
        res.max_p_error = perr
        if perr > 0.5 / p_max + 1e-9:
            res.problems.append(f"pressure error {perr:.6g} exceeds quantisation {0.5 / p_max:.6g}")
    # Time: relative to the first returned point.
    t0 = traj.t[src[0]] if src[0] >= 0 else None
    if t0 is not None:
        terr = float(np.max(np.abs(out.t[real] - (traj.t[ri] - t0)), initial=0.0))
        res.max_t_error = terr
        ttol = 1.01e-6 + 2 * opts.jitter_us * 1e-6
        if terr > ttol:
            res.problems.append(f"time error {terr:.3g} s exceeds {ttol:.3g} s")
    # Strokes: the same points in the same strokes. What the reader can know is what was
    # delivered: a lift lost in a SYN_DROPPED merges two strokes on any real tablet too.
    want: list[tuple[int, ...]] = []
    run: list[int] = []
    for s_idx in src:
        if s_idx >= 0 and down_orig[s_idx]:
            run.append(s_idx)
        elif run:
            want.append(tuple(run))
            run = []
    if run:
        want.append(tuple(run))
    if not stream.lost_points:
        original = [tuple(range(s.start, s.stop)) for s in traj.strokes()]
        if want != original:
            res.problems.append("generator did not deliver the trajectory's strokes")
    got = [tuple(int(idx[j]) for j in range(s.start, s.stop)) for s in out.strokes()]
    res.strokes = len(got)
    if got != want:
        res.problems.append(f"strokes differ: expected {len(want)}, reader gave {len(got)}"
                            + ("" if len(got) != len(want) else " with different points"))
    want_gaps = tuple(g - first for g in stream.delivered_after_drop if first < g <= last)
    if tuple(out.gaps) != want_gaps:
        res.problems.append(f"gaps: expected at {want_gaps}, reader marked {tuple(out.gaps)}")
    res.ok = not res.problems
    return res


def compare_never_wrong(traj: Trajectory, stream: GeneratedStream, sigs: list,
                        opts: GeneratorOptions) -> RoundTripResult:
    """For drops nobody resynchronised (no state snapshot): the reader may lose more points than
    the kernel dropped, but every point it gives must be a delivered point, exactly."""
    res = RoundTripResult(ok=False)
    rx, ry, rp, resolution, p_max = quantise(traj, opts)
    mm = traj.device.units == "mm" or (traj.device.resolution is not None and resolution > 0)
    div = float(resolution) if mm else 1.0
    j = 0
    src, times = stream.delivered, stream.delivered_t
    for sig in sigs:
        out: Trajectory = sig.trajectory
        abs_t = sig.started_at + np.asarray(out.t)
        for i in range(len(out)):
            while j < len(src) and abs(times[j] - abs_t[i]) > 2e-6:
                j += 1
            if j >= len(src):
                res.problems.append(f"point {i} matches no delivered frame")
                return res
            k = src[j]
            if k >= 0:
                if out.x[i] != rx[k] / div or out.y[i] != ry[k] / div:
                    res.problems.append(f"point {i} has a position that was never sent")
                if p_max is not None and abs(out.pressure[i] - rp[k] / p_max) > 1e-12:
                    res.problems.append(f"point {i} has a pressure that was never sent")
                if bool(out.pen_down[i]) != bool(traj.pen_down[k]):
                    res.problems.append(f"point {i} has the wrong pen state")
            j += 1
            res.points += 1
        res.strokes += len(out.strokes())
    if len(res.problems) > 3:
        res.problems = res.problems[:3] + [f"... {len(res.problems) - 3} more"]
    res.ok = not res.problems
    return res
