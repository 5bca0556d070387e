"""The pure assembler, driven with real ``evdev.InputEvent`` objects and kernel event codes."""

from __future__ import annotations

import numpy as np
import pytest
from capture_helpers import T0, ev, syn, tablet_caps
from evdev import ecodes as e

from firmware_host.assembler import (
    CaptureAssembler,
    EndReason,
    FrameAssembler,
    SegmenterConfig,
    assemble,
)
from firmware_host.errors import CaptureError
from firmware_host.events import AxisInfo, DeviceCaps, DeviceState, DoneMarker


def pen_in(t, x, y):
    return [ev(t, e.EV_KEY, e.BTN_TOOL_PEN, 1), ev(t, e.EV_ABS, e.ABS_X, x), ev(t, e.EV_ABS, e.ABS_Y, y), syn(t)]


def touch(t, x, y, p):
    return [ev(t, e.EV_ABS, e.ABS_X, x), ev(t, e.EV_ABS, e.ABS_Y, y), ev(t, e.EV_ABS, e.ABS_PRESSURE, p),
            ev(t, e.EV_KEY, e.BTN_TOUCH, 1), syn(t)]


def lift(t):
    return [ev(t, e.EV_ABS, e.ABS_PRESSURE, 0), ev(t, e.EV_KEY, e.BTN_TOUCH, 0), syn(t)]


def prox_out(t):
    # Wacom zeroes the axes as the pen leaves: those values must never become a point.
    return [ev(t, e.EV_ABS, e.ABS_X, 0), ev(t, e.EV_ABS, e.ABS_Y, 0),
            ev(t, e.EV_KEY, e.BTN_TOOL_PEN, 0), syn(t)]


def test_unchanged_axes_carry_forward_and_units_are_mm():
    caps = tablet_caps(resolution=200)
    stream = [
        *pen_in(0.00, 1000, 2000),
        *touch(0.01, 1000, 2000, 512),
        ev(0.02, e.EV_ABS, e.ABS_X, 1200), syn(0.02),  # only X changed
        ev(0.03, e.EV_ABS, e.ABS_PRESSURE, 1023), syn(0.03),  # only pressure changed
        *lift(0.04), *prox_out(0.05),
    ]
    sigs, stats = assemble(caps, stream, SegmenterConfig(min_pen_down_points=1))
    assert len(sigs) == 1
    tr = sigs[0].trajectory
    # Hover before the touch is trimmed, and so is the hover after the last pen-down point.
    np.testing.assert_allclose(tr.x, [5.0, 6.0, 6.0])
    np.testing.assert_allclose(tr.y, [10.0, 10.0, 10.0])
    np.testing.assert_allclose(tr.pressure, [512 / 1023, 512 / 1023, 1.0])
    np.testing.assert_allclose(tr.t, [0.0, 0.01, 0.02], atol=2e-6)
    assert tr.pen_down.tolist() == [True, True, True]
    assert tr.device.units == "mm" and tr.device.resolution == 200.0
    assert tr.device.pressure_levels == 1023 and tr.device.time_measured
    assert stats.frames == 6


def test_device_without_pressure_or_resolution_says_so():
    caps = tablet_caps(pressure=False, resolution=0)
    stream = [*pen_in(0, 10, 20), ev(0.01, e.EV_KEY, e.BTN_TOUCH, 1), syn(0.01),
              ev(0.02, e.EV_ABS, e.ABS_X, 11), syn(0.02), ev(0.03, e.EV_KEY, e.BTN_TOUCH, 0), syn(0.03)]
    (sig,), _ = assemble(caps, stream)
    tr = sig.trajectory
    assert tr.device.units == "device" and tr.device.resolution is None
    assert tr.device.pressure_levels is None and not tr.device.has_pressure
    assert tr.x.tolist() == [10.0, 11.0]
    assert tr.pressure.tolist() == [1.0, 1.0]  # the documented convention without a sensor


def test_pen_down_from_pressure_when_there_is_no_touch_key():
    caps = tablet_caps(touch=False)
    stream = [*pen_in(0, 100, 100)]
    for k, p in enumerate([0, 300, 400, 0, 0, 500, 600, 0]):
        stream += [ev(0.01 * (k + 1), e.EV_ABS, e.ABS_PRESSURE, p), ev(0.01 * (k + 1), e.EV_MSC, e.MSC_SERIAL, 1),
                   syn(0.01 * (k + 1))]
    (sig,), _ = assemble(caps, stream, SegmenterConfig(min_pen_down_points=1))
    assert sig.trajectory.pen_down.tolist() == [True, True, False, False, True, True]
    assert sig.strokes == 2


def test_proximity_out_ends_a_stroke_even_without_a_lift():
    caps = tablet_caps()
    stream = [*pen_in(0, 100, 100), *touch(0.01, 100, 100, 500), *touch(0.02, 110, 100, 500),
              ev(0.03, e.EV_KEY, e.BTN_TOOL_PEN, 0), syn(0.03),  # left while "touching"
              *pen_in(0.04, 200, 100), *touch(0.05, 200, 100, 500), *touch(0.06, 210, 100, 500)]
    (sig,), _ = assemble(caps, stream, SegmenterConfig(min_pen_down_points=1))
    tr = sig.trajectory
    assert sig.strokes == 2
    # The point after the return is pen-down right after a pen-down point: a stroke break.
    assert [s.start for s in tr.strokes()] == [0, 2]
    assert 0.0 not in tr.x.tolist()  # the zeroed prox-out axes never become a point


def test_syn_dropped_discards_partial_frame_and_resyncs_from_state():
    caps = tablet_caps(resolution=1)
    stream = [*pen_in(0, 100, 100), *touch(0.01, 100, 100, 500),
              ev(0.02, e.EV_ABS, e.ABS_X, 105),  # partial frame, then overflow
              ev(0.02, e.EV_SYN, e.SYN_DROPPED, 0),
              ev(0.02, e.EV_ABS, e.ABS_Y, 999),  # tail of a frame: must be ignored
              syn(0.02),
              DeviceState(abs={e.ABS_X: 150, e.ABS_Y: 160, e.ABS_PRESSURE: 700},
                          keys=frozenset({e.BTN_TOOL_PEN, e.BTN_TOUCH})),
              ev(0.05, e.EV_ABS, e.ABS_X, 151), syn(0.05),
              *lift(0.06)]
    (sig,), stats = assemble(caps, stream, SegmenterConfig(min_pen_down_points=1))
    tr = sig.trajectory
    assert tr.x.tolist() == [100.0, 151.0]
    assert tr.y.tolist() == [100.0, 160.0]  # from the state, not the ignored tail
    assert tr.pressure[1] == pytest.approx(700 / 1023)
    assert tr.gaps == (1,)
    assert stats.syn_dropped == 1 and stats.resyncs_from_state == 1
    assert stats.events_ignored_after_drop == 1


def test_syn_dropped_without_state_guesses_nothing():
    caps = tablet_caps(resolution=1)
    stream = [*pen_in(0, 100, 100), *touch(0.01, 100, 100, 500), *touch(0.015, 101, 100, 500),
              ev(0.02, e.EV_SYN, e.SYN_DROPPED, 0), syn(0.02),
              ev(0.03, e.EV_ABS, e.ABS_X, 120), syn(0.03),  # Y unknown: not a point
              # Position and pressure known again, contact not (no BTN_TOUCH since the drop):
              ev(0.04, e.EV_ABS, e.ABS_Y, 130), ev(0.04, e.EV_ABS, e.ABS_PRESSURE, 10), syn(0.04),
              *lift(0.05),  # now everything is known: a pen-up point
              *touch(0.06, 140, 150, 300), *touch(0.07, 141, 150, 300), *lift(0.08)]
    (sig,), stats = assemble(caps, stream, SegmenterConfig(min_pen_down_points=1))
    tr = sig.trajectory
    assert tr.x.tolist() == [100.0, 101.0, 120.0, 140.0, 141.0]
    assert tr.y.tolist() == [100.0, 100.0, 130.0, 150.0, 150.0]
    assert tr.pen_down.tolist() == [True, True, False, True, True]
    assert tr.gaps == (2,) and sig.strokes == 2
    assert stats.resyncs_without_state == 1 and stats.frames_without_position == 2


def test_pen_up_timeout_splits_signatures_and_tick_ends_an_idle_one():
    caps = tablet_caps()
    cfg = SegmenterConfig(pen_up_timeout=0.5, min_pen_down_points=1)
    stream = [*pen_in(0, 1, 1), *touch(0.01, 1, 1, 9), *touch(0.02, 2, 1, 9), *lift(0.03),
              # 0.4 s later: same signature (under the timeout)
              *touch(0.43, 3, 1, 9), *lift(0.44),
              # 1 s later: a new signature
              *touch(1.44, 4, 1, 9), *touch(1.45, 5, 1, 9), *lift(1.46)]
    asm = CaptureAssembler(caps, cfg)
    done = [s for s in (asm.feed(i) for i in stream) if s is not None]
    assert len(done) == 1 and done[0].end_reason is EndReason.PEN_UP_TIMEOUT
    assert done[0].strokes == 2 and len(done[0].trajectory) == 4
    assert done[0].ended_at == pytest.approx(done[0].started_at + 0.43 + 0.5, abs=1e-5)
    assert asm.tick(T0 + 1.46 + 0.2) is None  # not yet
    last = asm.tick(T0 + 1.46 + 0.5)
    assert last is not None and last.end_reason is EndReason.PEN_UP_TIMEOUT
    assert len(last.trajectory) == 2


def test_done_and_max_duration():
    caps = tablet_caps()
    asm = CaptureAssembler(caps, SegmenterConfig(max_duration=0.05, min_pen_down_points=1))
    stream = list(pen_in(0, 0, 0))
    for k in range(10):
        stream += touch(0.01 * k, k + 1, k, 100)
    sigs = [s for s in map(asm.feed, stream) if s is not None]
    assert len(sigs) == 1 and sigs[0].end_reason is EndReason.MAX_DURATION
    assert sigs[0].trajectory.duration <= 0.05
    # After a forced end the pen must lift before a new signature starts.
    assert not asm.segmenter.active
    assert asm.done() is None
    for item in [*lift(0.2), *touch(0.3, 5, 5, 5), *touch(0.31, 6, 5, 5)]:
        asm.feed(item)
    s = asm.feed(DoneMarker(T0 + 0.32))
    assert s is not None and s.end_reason is EndReason.DONE and len(s.trajectory) == 2


def test_too_short_signature_is_discarded_and_counted():
    caps = tablet_caps()
    sigs, stats = assemble(caps, [*pen_in(0, 1, 1), *touch(0.01, 1, 1, 9), *lift(0.02)],
                           SegmenterConfig(min_pen_down_points=2))
    assert sigs == [] and stats.discarded_short == 1


def test_time_going_backwards_keeps_the_sample():
    caps = tablet_caps()
    stream = [*pen_in(0, 1, 1), *touch(0.02, 1, 1, 9), *touch(0.01, 2, 1, 9), *touch(0.03, 3, 1, 9)]
    (sig,), stats = assemble(caps, stream)
    assert len(sig.trajectory) == 3 and stats.time_regressions == 1
    assert np.all(np.diff(sig.trajectory.t) >= 0)


def test_empty_frames_are_not_samples_and_other_events_are_frames():
    caps = tablet_caps()
    stream = [*pen_in(0, 1, 1), *touch(0.01, 1, 1, 9), syn(0.015),
              ev(0.02, e.EV_MSC, e.MSC_SERIAL, 7), syn(0.02), *lift(0.03)]
    (sig,), stats = assemble(caps, stream)
    assert len(sig.trajectory) == 2 and stats.empty_reports == 1


def test_a_device_without_xy_is_refused_with_a_clear_error():
    caps = DeviceCaps(name="keyboard", keys=frozenset({e.KEY_A}))
    with pytest.raises(CaptureError, match="no absolute X/Y"):
        FrameAssembler(caps)


def test_pen_score_prefers_pens_and_refuses_touchpads():
    pen = tablet_caps()
    touchpad = DeviceCaps(name="Touchpad", abs={e.ABS_X: AxisInfo(0, 100), e.ABS_Y: AxisInfo(0, 100)},
                          keys=frozenset({e.BTN_TOUCH, e.BTN_TOOL_FINGER, e.BTN_LEFT}),
                          props=frozenset({e.INPUT_PROP_POINTER}))
    touchscreen = DeviceCaps(name="Touchscreen", abs={e.ABS_X: AxisInfo(0, 100), e.ABS_Y: AxisInfo(0, 100)},
                             keys=frozenset({e.BTN_TOUCH}), props=frozenset({e.INPUT_PROP_DIRECT}))
    mouse = DeviceCaps(name="Mouse", keys=frozenset({e.BTN_LEFT}))
    assert pen.pen_score() > touchscreen.pen_score() > 0
    assert touchpad.pen_score() == 0 and mouse.pen_score() == 0
    assert any("pen: yes" in line for line in pen.describe())


def test_proximity_out_is_seen_after_a_drop_without_state():
    caps = tablet_caps(resolution=1)
    stream = [*pen_in(0, 100, 100), *touch(0.01, 100, 100, 500), *lift(0.02),
              ev(0.03, e.EV_SYN, e.SYN_DROPPED, 0), syn(0.03),
              *prox_out(0.04),
              # Back much later: the pen-up time must count from the prox-out, not stay open.
              *pen_in(5.0, 300, 300), *touch(5.01, 300, 300, 400), *touch(5.02, 301, 300, 400), *lift(5.03)]
    sigs, stats = assemble(caps, stream, SegmenterConfig(pen_up_timeout=1.0, min_pen_down_points=1))
    assert len(sigs) == 2 and sigs[0].end_reason is EndReason.PEN_UP_TIMEOUT
    assert sigs[0].ended_at == pytest.approx(T0 + 0.02 + 1.0, abs=1e-5)
    assert sigs[1].trajectory.x.tolist() == [300.0, 301.0]
