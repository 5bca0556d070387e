"""Live ink from assembled pen frames: normalised points, SYN_DROPPED handled by the assembler."""

from __future__ import annotations

import pytest
from capture_helpers import ev, syn, tablet_caps
from evdev import ecodes as e

from firmware_host.assembler import CaptureAssembler, SegmenterConfig
from firmware_host.events import DeviceState
from firmware_host.ink import InkPoint, InkTracker, pad_aspect


def _track(stream: list, caps=None) -> tuple[list[InkPoint], InkTracker]:
    caps = caps or tablet_caps(resolution=100)
    batches: list[tuple[InkPoint, ...]] = []
    ink = InkTracker(caps, batches.append, batch_s=1e9, clock=lambda: 0.0)
    asm = CaptureAssembler(caps, SegmenterConfig(min_pen_down_points=1), on_frame=ink)
    for item in stream:
        asm.feed(item)
    ink.flush()
    assert len(batches) == 1, "one flush, one batch"
    return list(batches[0]), ink


def _touch(t, x, y, p):
    return [ev(t, e.EV_ABS, e.ABS_X, x), ev(t, e.EV_ABS, e.ABS_Y, y), ev(t, e.EV_ABS, e.ABS_PRESSURE, p),
            ev(t, e.EV_KEY, e.BTN_TOUCH, 1), syn(t)]


def test_points_are_normalised_to_the_pad_and_proximity_out_lifts_the_pen():
    stream = [ev(0, e.EV_KEY, e.BTN_TOOL_PEN, 1), ev(0, e.EV_ABS, e.ABS_X, 3000), ev(0, e.EV_ABS, e.ABS_Y, 2000), syn(0),
              *_touch(0.01, 15000, 10000, 1023),
              # Wacom zeroes the axes as the pen leaves: that must not become a point at (0, 0).
              ev(0.02, e.EV_ABS, e.ABS_X, 0), ev(0.02, e.EV_ABS, e.ABS_Y, 0), ev(0.02, e.EV_KEY, e.BTN_TOUCH, 0),
              ev(0.02, e.EV_ABS, e.ABS_PRESSURE, 0), ev(0.02, e.EV_KEY, e.BTN_TOOL_PEN, 0), syn(0.02)]
    points, _ = _track(stream)
    assert points == [InkPoint(0.1, 0.1, 0.0, False),        # hover: seen, not drawn
                      InkPoint(0.5, 0.5, 1.0, True),
                      InkPoint(0.5, 0.5, 0.0, False)]        # out of proximity: pen up where it was


def test_syn_dropped_loses_the_damaged_frame_and_breaks_the_line():
    stream = [ev(0, e.EV_KEY, e.BTN_TOOL_PEN, 1), *_touch(0.01, 3000, 2000, 512),
              ev(0.02, e.EV_ABS, e.ABS_X, 9999),            # partial frame, then the buffer overflowed
              ev(0.02, e.EV_SYN, e.SYN_DROPPED, 0),
              ev(0.02, e.EV_ABS, e.ABS_Y, 19999), syn(0.02),  # the rest of a lost frame
              DeviceState(abs={e.ABS_X: 6000, e.ABS_Y: 4000, e.ABS_PRESSURE: 512},
                          keys=frozenset({e.BTN_TOOL_PEN, e.BTN_TOUCH})),
              ev(0.05, e.EV_ABS, e.ABS_X, 6300), syn(0.05)]
    points, _ = _track(stream)
    xs = [p.x for p in points]
    assert 9999 / 30000 not in [round(x, 4) for x in xs] and 19999 / 20000 not in [p.y for p in points]
    # The first point after the drop comes with a pen-up point in front of it: no line across the gap.
    assert points[-2:] == [InkPoint(0.21, 0.2, 0.0, False), InkPoint(0.21, 0.2, pytest.approx(512 / 1023, abs=1e-3), True)]
    assert points[0].down and points[0].x == 0.1


def test_without_a_pressure_axis_contact_is_full_pressure_and_aspect_is_in_millimetres():
    caps = tablet_caps(pressure=False, resolution=100)
    stream = [ev(0, e.EV_KEY, e.BTN_TOOL_PEN, 1), ev(0, e.EV_ABS, e.ABS_X, 300), ev(0, e.EV_ABS, e.ABS_Y, 200),
              ev(0, e.EV_KEY, e.BTN_TOUCH, 1), syn(0)]
    points, ink = _track(stream, caps)
    assert points == [InkPoint(0.01, 0.01, 1.0, True)]
    assert ink.aspect == pytest.approx(30000 / 20000) == pad_aspect(caps)
    assert ink.total == 1


def test_batches_are_handed_over_when_due():
    caps = tablet_caps()
    now = [0.0]
    batches: list[tuple[InkPoint, ...]] = []
    ink = InkTracker(caps, batches.append, batch_s=0.03, clock=lambda: now[0])
    asm = CaptureAssembler(caps, on_frame=ink)
    asm.feed(ev(0, e.EV_KEY, e.BTN_TOOL_PEN, 1))
    for i in range(5):
        now[0] = i * 0.01
        for item in _touch(i * 0.01, 100 + i, 100, 300):
            asm.feed(item)
    assert [len(b) for b in batches] == [4]   # 0.00..0.03: the fourth point made the batch due
    ink.flush()
    assert [len(b) for b in batches] == [4, 1] and ink.total == 5
