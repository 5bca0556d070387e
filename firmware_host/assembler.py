"""The pure pen assembler: stream items in, pen frames and finished signatures out. No I/O.

Two layers, both used by every source (live evdev device, recording replay, generated streams,
and, for the second layer, the serial pad):

``FrameAssembler``
    Applies the kernel's evdev protocol. Events accumulate until SYN_REPORT closes a frame; the
    kernel sends only axes that changed, so the others carry forward. SYN_DROPPED means the
    client buffer overflowed: the partial frame is discarded, everything up to and including
    the next SYN_REPORT is ignored, and the state is resynchronised from a ``DeviceState``
    (what the live reader read with EVIOCGABS/EVIOCGKEY, recorded in the stream). When no state
    follows (a truncated or hand-made stream), axes and keys become *unknown* until the device
    reports them again, and frames without a known position are dropped (and counted) rather
    than guessed (contact is not inferred from pressure either: pens report BTN_TOUCH at their
    own threshold, and datasets have contact points with zero pressure).

``SignatureSegmenter``
    Turns frames into signatures: a signature starts at the first pen-down frame, keeps the
    hover (pen-up, in proximity) frames between strokes because their timing carries rhythm,
    and ends when the pen has stayed up for ``pen_up_timeout`` seconds, on an explicit done,
    or at ``max_duration``. Proximity-out ends a stroke.

``CaptureAssembler`` chains the two: ``feed(item)`` returns a finished ``CapturedSignature`` or
None, ``tick(now)`` lets an idle live reader end a signature when no events arrive at all.
"""

from __future__ import annotations

import enum
import logging
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from evdev import InputEvent, ecodes

from firmware_host.errors import CaptureError
from firmware_host.events import DeviceCaps, DeviceState, DoneMarker, StreamItem
from models.trajectory import MAX_POINTS, DeviceInfo, Trajectory

log = logging.getLogger(__name__)

_EV_SYN, _EV_KEY, _EV_ABS = ecodes.EV_SYN, ecodes.EV_KEY, ecodes.EV_ABS
_SYN_REPORT, _SYN_DROPPED = ecodes.SYN_REPORT, ecodes.SYN_DROPPED
_ABS_X, _ABS_Y, _ABS_P = ecodes.ABS_X, ecodes.ABS_Y, ecodes.ABS_PRESSURE
_BTN_TOUCH = ecodes.BTN_TOUCH


@dataclass(frozen=True, slots=True)
class PenFrame:
    """One sample of the pen, in raw device units, stamped with the event clock (seconds).

    ``in_range`` False is the proximity-out frame: it carries no usable position (drivers zero
    the axes there) and is never a point; it only tells the segmenter the stroke is over.
    ``gap_before``: samples were lost between the previous frame and this one.
    """

    t: float
    x: int
    y: int
    pressure: int
    touching: bool
    in_range: bool = True
    gap_before: bool = False


@dataclass
class AssemblerStats:
    """Counters a session reports (no coordinates: these are safe to log)."""

    events: int = 0
    frames: int = 0
    empty_reports: int = 0
    syn_dropped: int = 0
    events_ignored_after_drop: int = 0
    resyncs_from_state: int = 0
    resyncs_without_state: int = 0
    frames_without_position: int = 0  # position, pressure or contact unknown after a drop
    time_regressions: int = 0
    signatures: int = 0
    discarded_short: int = 0
    other_events: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Mode(enum.Enum):
    NORMAL = 0
    DROPPING = 1  # after SYN_DROPPED, until and including the next SYN_REPORT
    AWAIT_STATE = 2  # the drop is over: the next item should be the device's state


class FrameAssembler:
    """evdev events → ``PenFrame`` (see module docstring). Pure: no I/O, no clock."""

    def __init__(self, caps: DeviceCaps, stats: AssemblerStats | None = None) -> None:
        if _ABS_X not in caps.abs or _ABS_Y not in caps.abs:
            raise CaptureError(f"device {caps.name!r} has no absolute X/Y axes: not a pen device")
        self.caps = caps
        self.stats = stats if stats is not None else AssemblerStats()
        self._has_tool = bool(caps.tool_keys)
        self._tool_keys = caps.tool_keys
        self._has_touch = caps.has_touch_key
        self._has_pressure = caps.has_pressure
        self._p_min = caps.abs[_ABS_P].min if self._has_pressure else 0
        # Carried-forward state. None = unknown (only after a drop without a state snapshot).
        self._x: int | None = caps.abs[_ABS_X].value
        self._y: int | None = caps.abs[_ABS_Y].value
        self._p: int | None = caps.abs[_ABS_P].value if self._has_pressure else 0
        self._touch: bool | None = False
        self._tools: set[int] = set()
        self._tools_known = True
        # The frame being assembled: changes are staged so that a drop can discard them.
        self._nx: int | None = None
        self._ny: int | None = None
        self._np: int | None = None
        self._ntouch: bool | None = None
        self._ntools: dict[int, bool] = {}
        self._dirty = False
        self._mode = _Mode.NORMAL
        self._gap = False
        self._was_in_range = False

    # ------------------------------------------------------------------------------------
    def apply_state(self, state: DeviceState) -> None:
        """Set the whole state from a snapshot (start of capture, or resync after a drop)."""
        if self._mode is _Mode.AWAIT_STATE:
            self.stats.resyncs_from_state += 1
        self._mode = _Mode.NORMAL
        self._clear_pending()
        a = state.abs
        if _ABS_X in a:
            self._x = a[_ABS_X]
        if _ABS_Y in a:
            self._y = a[_ABS_Y]
        if self._has_pressure and _ABS_P in a:
            self._p = a[_ABS_P]
        self._touch = _BTN_TOUCH in state.keys
        self._tools = set(state.keys & self._tool_keys)
        self._tools_known = True

    def _clear_pending(self) -> None:
        self._nx = self._ny = self._np = None
        self._ntouch = None
        self._ntools = {}
        self._dirty = False

    def _resync_without_state(self) -> None:
        """The drop is over but nobody read the device: forget what we cannot know."""
        self.stats.resyncs_without_state += 1
        self._mode = _Mode.NORMAL
        self._x = self._y = None
        self._p = None if self._has_pressure else 0
        self._touch = None
        self._tools_known = False

    # ------------------------------------------------------------------------------------
    def feed(self, ev: InputEvent) -> PenFrame | None:
        """Take one kernel event; return a frame when a SYN_REPORT completes one."""
        self.stats.events += 1
        etype = ev.type
        mode = self._mode
        if mode is not _Mode.NORMAL:
            if mode is _Mode.AWAIT_STATE:
                self._resync_without_state()
            else:  # DROPPING: ignore up to and including the next SYN_REPORT
                if etype == _EV_SYN and ev.code == _SYN_REPORT:
                    self._mode = _Mode.AWAIT_STATE
                elif etype == _EV_SYN and ev.code == _SYN_DROPPED:
                    self.stats.syn_dropped += 1
                else:
                    self.stats.events_ignored_after_drop += 1
                return None
        if etype == _EV_ABS:
            code = ev.code
            if code == _ABS_X:
                self._nx = ev.value
            elif code == _ABS_Y:
                self._ny = ev.value
            elif code == _ABS_P:
                self._np = ev.value
            # Other axes (tilt, distance, MT) are not part of the trajectory but still make the
            # frame a real frame: the kernel delivered it, so the pen sampled.
            self._dirty = True
        elif etype == _EV_SYN:
            code = ev.code
            if code == _SYN_REPORT:
                return self._report(ev.sec + ev.usec * 1e-6)
            if code == _SYN_DROPPED:
                self.stats.syn_dropped += 1
                self._clear_pending()
                self._mode = _Mode.DROPPING
                self._gap = True
            # SYN_CONFIG / SYN_MT_REPORT: nothing to do for a single pen.
        elif etype == _EV_KEY:
            code = ev.code
            if code == _BTN_TOUCH:
                self._ntouch = ev.value != 0
            elif code in self._tool_keys:
                self._ntools[code] = ev.value != 0
            self._dirty = True
        else:
            # EV_MSC (MSC_SERIAL, MSC_TIMESTAMP) and the rest: part of the frame, no state.
            self.stats.other_events += 1
            self._dirty = True
        return None

    def _report(self, t: float) -> PenFrame | None:
        if not self._dirty:
            # The kernel never delivers an empty frame; a stream that has one is a recording
            # edited by hand or a replay artefact. It is no new sample.
            self.stats.empty_reports += 1
            return None
        # Commit the staged changes.
        if self._nx is not None:
            self._x = self._nx
        if self._ny is not None:
            self._y = self._ny
        if self._np is not None:
            self._p = self._np
        if self._ntouch is not None:
            self._touch = self._ntouch
        if self._ntools:
            for k, down in self._ntools.items():
                if down:
                    self._tools.add(k)
                else:
                    self._tools.discard(k)
            # Any tool report after an unresynchronised drop settles proximity again: a press is
            # "in range", a release leaves the (single) pen out of range.
            self._tools_known = True
        self._clear_pending()
        self.stats.frames += 1

        if self._has_tool and self._tools_known:
            in_range = bool(self._tools)
        else:
            in_range = True  # no proximity keys (or unknown after a drop): trust the axes
        p = self._p
        if self._has_touch:
            touching = bool(self._touch)  # None (unknown after a drop) is refused below
        elif self._has_pressure:
            touching = p is not None and p > self._p_min
        else:
            touching = in_range
        if not in_range:
            touching = False
        gap = self._gap
        if not in_range:
            was = self._was_in_range
            self._was_in_range = False
            if not was and not gap:
                return None  # still out of proximity: nothing new to say
            self._gap = False
            return PenFrame(t, 0, 0, 0, False, False, gap)
        x, y = self._x, self._y
        if x is None or y is None or p is None or (self._has_touch and self._touch is None):
            # After a drop nobody resynchronised: what is not known is not guessed.
            self.stats.frames_without_position += 1
            return None
        self._was_in_range = True
        self._gap = False
        return PenFrame(t, x, y, p, touching, True, gap)


class EndReason(str, enum.Enum):
    PEN_UP_TIMEOUT = "pen-up-timeout"
    DONE = "done"
    MAX_DURATION = "max-duration"
    MAX_POINTS = "max-points"
    END_OF_STREAM = "end-of-stream"


@dataclass(frozen=True)
class SegmenterConfig:
    """When a signature ends. Times are seconds of the device's event clock."""

    pen_up_timeout: float = 2.0
    max_duration: float = 30.0
    max_points: int = MAX_POINTS
    min_pen_down_points: int = 2

    def __post_init__(self) -> None:
        if not self.pen_up_timeout > 0:
            raise CaptureError(f"pen_up_timeout must be > 0, got {self.pen_up_timeout}")
        if not self.max_duration > 0:
            raise CaptureError(f"max_duration must be > 0, got {self.max_duration}")
        if not 1 <= self.max_points <= MAX_POINTS:
            raise CaptureError(f"max_points must lie in 1..{MAX_POINTS}, got {self.max_points}")
        if self.min_pen_down_points < 1:
            raise CaptureError("min_pen_down_points must be >= 1")


@dataclass(frozen=True)
class CapturedSignature:
    """One finished signature and how it was captured (counts only: safe to log)."""

    trajectory: Trajectory
    end_reason: EndReason
    started_at: float
    ended_at: float
    gaps: int
    strokes: int

    def summary(self) -> str:
        return (
            f"{len(self.trajectory)} points, {self.strokes} strokes, "
            f"{self.trajectory.duration:.2f} s, {self.gaps} gaps, ended by {self.end_reason.value}"
        )


@dataclass(frozen=True)
class Scale:
    """How raw frame values become trajectory units (built once per device)."""

    device: DeviceInfo
    x_div: float
    y_div: float
    p_min: int
    p_range: int | None  # None: no pressure axis

    @classmethod
    def for_caps(cls, caps: DeviceCaps) -> "Scale":
        res = caps.resolution_mm
        p = caps.abs.get(_ABS_P) if caps.has_pressure else None
        p_range = (p.max - p.min) if p is not None else None
        info = DeviceInfo(
            name=caps.name or "unknown",
            units="mm" if res else "device",
            resolution=float(res[0]) if res else None,
            pressure_levels=p_range,
        )
        return cls(
            device=info,
            x_div=float(res[0]) if res else 1.0,
            y_div=float(res[1]) if res else 1.0,
            p_min=p.min if p is not None else 0,
            p_range=p_range,
        )


class SignatureSegmenter:
    """``PenFrame`` → ``CapturedSignature`` (see module docstring). Pure: time comes in frames."""

    def __init__(self, scale: Scale, config: SegmenterConfig | None = None,
                 stats: AssemblerStats | None = None) -> None:
        self.scale = scale
        self.config = config or SegmenterConfig()
        self.stats = stats if stats is not None else AssemblerStats()
        self._reset()
        self._suppress = False  # after a forced end, wait for the pen to lift first

    def _reset(self) -> None:
        # array.array rather than lists: appending costs the same, and turning them into numpy
        # columns at pen-up is a zero-copy view instead of a boxed-object walk (that walk was
        # most of the capture's share of the decision latency).
        self._t = array("d")
        self._x = array("d")
        self._y = array("d")
        self._p = array("d")
        self._d = array("b")
        self._gaps: list[int] = []
        self._breaks: list[int] = []
        self._lift_t: float | None = None
        self._prox_break = False
        self._pending_gap = False
        self._last_down = -1
        self._n_down = 0

    @property
    def active(self) -> bool:
        """A signature has started (the pen touched) and has not ended yet."""
        return bool(self._t)

    def feed(self, f: PenFrame) -> CapturedSignature | None:
        done: CapturedSignature | None = None
        if self._t:
            cfg = self.config
            if self._lift_t is not None and f.t - self._lift_t >= cfg.pen_up_timeout:
                done = self._finish(EndReason.PEN_UP_TIMEOUT, self._lift_t + cfg.pen_up_timeout)
            elif f.t - self._t[0] > cfg.max_duration:
                done = self._finish(EndReason.MAX_DURATION, f.t, suppress=True)
            elif len(self._t) >= cfg.max_points:
                done = self._finish(EndReason.MAX_POINTS, f.t, suppress=True)
        if self._suppress:
            if f.touching:
                return done
            self._suppress = False
        if not f.in_range:
            if self._t:
                self._prox_break = True
                self._pending_gap = self._pending_gap or f.gap_before
                if self._lift_t is None:
                    self._lift_t = max(f.t, self._t[-1])
            return done
        if not self._t:
            if not f.touching:
                return done  # hovering before the first touch is the pen approaching
        else:
            t_prev = self._t[-1]
            if f.t < t_prev:
                # A clock stepped back (CLOCK_REALTIME under NTP) or a reordered stream: keep the
                # sample, at the previous time, rather than lose it or fail the signature.
                self.stats.time_regressions += 1
        n = len(self._t)
        t = f.t if not n or f.t >= self._t[-1] else self._t[-1]
        if n:
            if f.gap_before or self._pending_gap:
                self._gaps.append(n)
            if f.touching and self._prox_break and self._d[-1]:
                self._breaks.append(n)
        self._prox_break = False
        self._pending_gap = False
        self._t.append(t)
        self._x.append(f.x)
        self._y.append(f.y)
        self._p.append(f.pressure)
        self._d.append(f.touching)
        if f.touching:
            self._lift_t = None
            self._last_down = n
            self._n_down += 1
        elif self._lift_t is None:
            self._lift_t = t
        return done

    def deadline(self) -> float | None:
        """When (event clock) the signature in progress ends if nothing else happens, else None.

        Live readers sleep until then instead of polling, so the pen-up timeout is noticed
        on time rather than up to a polling interval late.
        """
        if not self._t:
            return None
        cfg = self.config
        end = self._t[0] + cfg.max_duration
        if self._lift_t is not None:
            end = min(end, self._lift_t + cfg.pen_up_timeout)
        return end

    def tick(self, now: float) -> CapturedSignature | None:
        """End the signature if ``now`` (event clock) is past the pen-up timeout or max duration."""
        if not self._t:
            return None
        cfg = self.config
        if self._lift_t is not None and now - self._lift_t >= cfg.pen_up_timeout:
            return self._finish(EndReason.PEN_UP_TIMEOUT, self._lift_t + cfg.pen_up_timeout)
        if now - self._t[0] >= cfg.max_duration:
            return self._finish(EndReason.MAX_DURATION, now, suppress=True)
        return None

    def done(self, now: float | None = None) -> CapturedSignature | None:
        """Explicit done: end the signature in progress (None when none was started)."""
        if not self._t:
            return None
        return self._finish(EndReason.DONE, now if now is not None else self._t[-1])

    def end_of_stream(self) -> CapturedSignature | None:
        if not self._t:
            return None
        return self._finish(EndReason.END_OF_STREAM, self._t[-1])

    def abort(self) -> int:
        """Drop the signature in progress (device gone); returns how many points were lost."""
        n = len(self._t)
        self._reset()
        return n

    def _finish(self, reason: EndReason, ended_at: float, suppress: bool = False) -> CapturedSignature | None:
        end = self._last_down + 1  # trailing hover after the last stroke is not signature
        n_down = self._n_down
        t = np.frombuffer(self._t, dtype=np.float64)[:end]
        x = np.frombuffer(self._x, dtype=np.float64)[:end]
        y = np.frombuffer(self._y, dtype=np.float64)[:end]
        p = np.frombuffer(self._p, dtype=np.float64)[:end]
        d = np.frombuffer(self._d, dtype=np.int8)[:end].astype(bool)
        gaps = tuple(g for g in self._gaps if g < end)
        breaks = tuple(b for b in self._breaks if b < end)
        self._reset()
        self._suppress = suppress
        if n_down < self.config.min_pen_down_points:
            self.stats.discarded_short += 1
            log.info("signature discarded: %d pen-down points (minimum %d)",
                     n_down, self.config.min_pen_down_points)
            return None
        sc = self.scale
        if sc.p_range is None:
            pressure = d.astype(np.float64)
        else:
            pressure = np.clip((p - sc.p_min) / float(sc.p_range), 0.0, 1.0)
        if sc.device.units == "mm":
            x = x / sc.x_div
            y = y / sc.y_div
        traj = Trajectory(x=x, y=y, pressure=pressure, t=t - t[0], pen_down=d,
                          device=sc.device, gaps=gaps, stroke_breaks=breaks)
        self.stats.signatures += 1
        return CapturedSignature(
            trajectory=traj,
            end_reason=reason,
            started_at=float(t[0]),
            ended_at=float(ended_at),
            gaps=len(gaps),
            strokes=len(traj.strokes()),
        )


class CaptureAssembler:
    """Frame assembly and segmentation for one evdev device: the code path every source uses.

    ``on_frame`` sees every assembled frame before the segmenter does (the kiosk's live ink), so
    a watcher gets the frames the signature is made of, SYN_DROPPED handling included.
    """

    def __init__(self, caps: DeviceCaps, config: SegmenterConfig | None = None,
                 on_frame: Callable[[PenFrame], None] | None = None) -> None:
        self.stats = AssemblerStats()
        self.frames = FrameAssembler(caps, self.stats)
        self.segmenter = SignatureSegmenter(Scale.for_caps(caps), config, self.stats)
        self._on_frame = on_frame

    def feed(self, item: StreamItem) -> CapturedSignature | None:
        if isinstance(item, InputEvent):
            frame = self.frames.feed(item)
            if frame is None:
                return None
            if self._on_frame is not None:
                self._on_frame(frame)
            return self.segmenter.feed(frame)
        if isinstance(item, DeviceState):
            self.frames.apply_state(item)
            return None
        if isinstance(item, DoneMarker):
            return self.segmenter.done(item.time)
        raise CaptureError(f"not a stream item: {type(item).__name__}")

    def tick(self, now: float) -> CapturedSignature | None:
        return self.segmenter.tick(now)

    def done(self, now: float | None = None) -> CapturedSignature | None:
        return self.segmenter.done(now)

    def end_of_stream(self) -> CapturedSignature | None:
        return self.segmenter.end_of_stream()


def assemble(caps: DeviceCaps, items: Iterable[StreamItem],
             config: SegmenterConfig | None = None) -> tuple[list[CapturedSignature], AssemblerStats]:
    """All signatures in a finite stream (a recording, a generated stream), and the counters."""
    asm = CaptureAssembler(caps, config)
    out: list[CapturedSignature] = []
    for item in items:
        sig = asm.feed(item)
        if sig is not None:
            out.append(sig)
    last = asm.end_of_stream()
    if last is not None:
        out.append(last)
    return out, asm.stats
