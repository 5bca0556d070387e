"""Live ink: assembled pen frames -> points normalised to the pad's area, in small batches.

The kiosk draws the customer's signature while it is written. What a frame *means* (which axes
carried forward, contact, proximity, what a SYN_DROPPED destroyed) is the assembler's
(``firmware_host.assembler.FrameAssembler``); this module only turns its ``PenFrame`` objects
into points in 0..1 over the device's axis ranges, so the screen gets exactly the samples the
signature is made of and nothing decoded twice:

* a frame after lost samples (``gap_before``, a SYN_DROPPED) starts a new line: a pen-up point is
  put first, so no straight line is drawn across what was lost;
* the proximity-out frame carries no position (drivers zero the axes): it becomes a pen-up point
  at the last position;
* frames the assembler refuses (unknown position after an unresynchronised drop) never arrive.

Points are handed to ``emit`` at most every ``batch_s`` seconds (and on ``flush``), so a page
gets a few dozen messages a second rather than one per sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from evdev import ecodes

from firmware_host.assembler import PenFrame
from firmware_host.events import AxisInfo, DeviceCaps


@dataclass(frozen=True, slots=True)
class InkPoint:
    """One sample of live ink: position in 0..1 over the pad, pressure in 0..1, contact."""

    x: float
    y: float
    pressure: float
    down: bool


def _span(axis: AxisInfo | None) -> tuple[int, int]:
    """(origin, range) of an axis; a missing or degenerate one maps everything to 0."""
    if axis is None:
        return 0, 1
    return axis.min, max(axis.max - axis.min, 1)


def pad_aspect(caps: DeviceCaps) -> float:
    """Width / height of the pad's active area: in millimetres when both axes say their
    resolution, else in device units."""
    ax, ay = caps.abs.get(ecodes.ABS_X), caps.abs.get(ecodes.ABS_Y)
    _, xr = _span(ax)
    _, yr = _span(ay)
    if ax is not None and ay is not None and ax.resolution and ay.resolution:
        return (xr / ax.resolution) / (yr / ay.resolution)
    return xr / yr


class InkTracker:
    """``PenFrame`` -> batches of ``InkPoint`` for one capture on one device (see module doc)."""

    def __init__(self, caps: DeviceCaps, emit: Callable[[tuple[InkPoint, ...]], None], *,
                 batch_s: float = 0.03, clock: Callable[[], float] = time.monotonic) -> None:
        self.x0, self.xr = _span(caps.abs.get(ecodes.ABS_X))
        self.y0, self.yr = _span(caps.abs.get(ecodes.ABS_Y))
        p = caps.abs.get(ecodes.ABS_PRESSURE) if caps.has_pressure else None
        self.p0, self.pr = (p.min, p.max - p.min) if p is not None else (0, 0)
        self.aspect = pad_aspect(caps)
        self._emit = emit
        self._clock = clock
        self.batch_s = batch_s
        self._points: list[InkPoint] = []
        self._last: InkPoint | None = None
        self._last_flush = clock()
        #: Points handed to ``emit`` so far.
        self.total = 0

    def __call__(self, frame: PenFrame) -> None:
        if not frame.in_range:
            if self._last is not None:
                self._add(InkPoint(self._last.x, self._last.y, 0.0, False))
        else:
            x = round((frame.x - self.x0) / self.xr, 4)
            y = round((frame.y - self.y0) / self.yr, 4)
            if frame.gap_before and frame.touching:
                self._add(InkPoint(x, y, 0.0, False))   # samples were lost: no line across the gap
            if self.pr:
                p = min(1.0, max(0.0, (frame.pressure - self.p0) / self.pr))
            else:
                p = 1.0 if frame.touching else 0.0
            self._add(InkPoint(x, y, round(p, 3), frame.touching))
        if self._clock() - self._last_flush >= self.batch_s:
            self.flush()

    def _add(self, point: InkPoint) -> None:
        self._points.append(point)
        self._last = point

    def flush(self) -> None:
        """Hand over the points not yet emitted (the capture ended, or a batch is due)."""
        if self._points:
            batch = tuple(self._points)
            self._points = []
            self.total += len(batch)
            self._emit(batch)
        self._last_flush = self._clock()


__all__ = ["InkPoint", "InkTracker", "pad_aspect"]
