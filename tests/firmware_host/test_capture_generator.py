"""Trajectory → kernel events → reader: the round trip, and the kernel's habits in the stream."""

from __future__ import annotations

import numpy as np
import pytest
from capture_helpers import synthetic_signature
from evdev import InputEvent
from evdev import ecodes as e
from shared_data import shared_data

from firmware_host.assembler import assemble
from firmware_host.errors import CaptureError
from firmware_host.events import DeviceState
from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.roundtrip import roundtrip

OPTION_SETS = {
    "default": GeneratorOptions(),
    "hover": GeneratorOptions(hover_frames=4),
    "no-msc": GeneratorOptions(msc_serial=False),
    "jitter": GeneratorOptions(jitter_us=300, seed=3),
    "drops": GeneratorOptions(drop_frames=(25, 60), drop_length=4),
    "drop-no-state": GeneratorOptions(drop_frames=(30,), drop_state=False),
    "no-pressure": GeneratorOptions(with_pressure=False),
    "no-touch-key": GeneratorOptions(with_touch_key=False),
    "no-tool-key": GeneratorOptions(with_tool_key=False),
    "res-200": GeneratorOptions(resolution=200),
}


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
@pytest.mark.parametrize("variant", ["hover-between", "stroke-breaks", "device-units"])
def test_round_trip_synthetic(name, variant):
    traj = synthetic_signature(
        seed=7, stroke_breaks=variant == "stroke-breaks", units="device" if variant == "device-units" else "mm")
    r = roundtrip(traj, OPTION_SETS[name])
    assert r.ok, r.problems
    assert r.strokes == len(traj.strokes())
    if OPTION_SETS[name].drop_frames:
        assert r.points < len(traj)


def test_round_trip_without_resolution_gives_device_units():
    traj = synthetic_signature(seed=2, units="device")
    stream = trajectory_to_events(traj, GeneratorOptions(resolution=0))
    (sig,), _ = assemble(stream.caps, stream.items)
    assert sig.trajectory.device.units == "device" and sig.trajectory.device.resolution is None
    assert roundtrip(traj, GeneratorOptions(resolution=0)).ok


def test_stream_follows_kernel_habits():
    traj = synthetic_signature(seed=1, stroke_breaks=True)
    stream = trajectory_to_events(traj, GeneratorOptions(hover_frames=2))
    evs = [i for i in stream.items if isinstance(i, InputEvent)]
    assert isinstance(stream.items[0], DeviceState)  # the capture-start snapshot
    frames: list[list[InputEvent]] = [[]]
    for x in evs:
        frames[-1].append(x)
        if x.type == e.EV_SYN and x.code == e.SYN_REPORT:
            frames.append([])
    assert frames.pop() == []  # every event belongs to a frame closed by SYN_REPORT
    state: dict[tuple[int, int], int] = {}
    for f in frames:
        assert len(f) >= 2  # the input core never delivers a lone SYN_REPORT
        assert len({(x.sec, x.usec) for x in f}) == 1  # one timestamp per frame
        for x in f[:-1]:
            if x.type in (e.EV_ABS, e.EV_KEY):
                assert state.get((x.type, x.code)) != x.value, "unchanged value sent"
                state[(x.type, x.code)] = x.value
            if x.type == e.EV_ABS:
                a = stream.caps.abs[x.code]
                assert a.min <= x.value <= a.max and isinstance(x.value, int)
    tools = [x.value for x in evs if x.type == e.EV_KEY and x.code == e.BTN_TOOL_PEN]
    assert tools == [1, 0]  # one proximity-in, one proximity-out
    touches = [x.value for x in evs if x.type == e.EV_KEY and x.code == e.BTN_TOUCH]
    assert touches == [1, 0] * len(traj.strokes())


def test_dropped_frames_are_reported_as_lost():
    traj = synthetic_signature(seed=4)
    stream = trajectory_to_events(traj, GeneratorOptions(drop_frames=(10,), drop_length=2))
    assert stream.lost_points == [10, 11, 12]
    assert sum(1 for i in stream.items if isinstance(i, InputEvent) and i.code == e.SYN_DROPPED
               and i.type == e.EV_SYN) == 1


def test_generator_refuses_what_it_cannot_express():
    traj = synthetic_signature(seed=4)
    with pytest.raises(CaptureError, match="resolution"):
        trajectory_to_events(traj, GeneratorOptions(resolution=0))
    with pytest.raises(CaptureError, match="pen state"):
        trajectory_to_events(traj, GeneratorOptions(with_touch_key=False, with_pressure=False))


def test_round_trip_on_susig_test_writers_sample():
    from tools.datasets import load_online

    ds = load_online(shared_data("online/susig/VisualSubCorpus"), "susig-visual").subset("test")
    writers = sorted(ds.writers)[:3]
    samples = [s for w in writers for s in ds.writers[w][::4]]
    assert len(samples) >= 10
    checked = 0
    for s in samples:
        results = [roundtrip(s.trajectory, opts) for opts in
                   (GeneratorOptions(hover_frames=2), GeneratorOptions(drop_frames=(40,), jitter_us=100))]
        for r in results:
            assert r.ok, (s.path.name, r.problems)
            checked += 1
        assert results[0].strokes == len(s.trajectory.strokes())
        assert results[0].points == len(s.trajectory) + len(s.trajectory.stroke_breaks)
    assert checked == 2 * len(samples)
    # SUSIG coordinates are integer device units: they come back exactly.
    r = roundtrip(samples[0].trajectory)
    assert r.max_xy_error == 0.0 and r.max_p_error < 0.5 / 255 + 1e-12
    assert np.isfinite(r.max_t_error) and r.max_t_error <= 1e-6


def test_a_pad_without_pressure_reaches_the_verifier_as_one():
    """Kernel events of a pad with no ABS_PRESSURE, read by the real reader: the classic verifier
    sees signatures without pressure, so their distances get the no-pressure scale and the
    verdict no "Pressure" check (it would always match, on nothing)."""
    from dataclasses import replace

    from models.classic import ClassicConfig, classic_distance, signature_features
    from models.pen import ClassicVerifier

    def read(seed: int, with_pressure: bool):
        traj = synthetic_signature(seed=seed)
        stream = trajectory_to_events(traj, GeneratorOptions(with_pressure=with_pressure))
        (sig,), _ = assemble(stream.caps, stream.items)
        return sig.trajectory

    bare = [read(s, False) for s in range(6)]
    assert not any(t.device.has_pressure for t in bare)
    cfg = ClassicConfig()
    a, b = (signature_features(t, cfg) for t in bare[:2])
    assert cfg.lacks_pressure(a) and cfg.lacks_pressure(b)
    unscaled = classic_distance(a, b, replace(cfg, no_pressure_scale=1.0))
    assert classic_distance(a, b, cfg) == pytest.approx(cfg.no_pressure_scale * unscaled)
    ver = ClassicVerifier()
    assert "pressure" not in [x.code for x in ver.verify(ver.enroll(bare[:5]), bare[5]).aspects]
    with_p = [read(s, True) for s in range(6)]
    assert not cfg.lacks_pressure(signature_features(with_p[0], cfg))
    assert "pressure" in [x.code for x in ver.verify(ver.enroll(with_p[:5]), with_p[5]).aspects]
