"""A pen that a script signs with: replayed signatures behind one simulated evdev device.

``ReplayPen`` looks like one plugged-in tablet to ``LiveDigitizer`` (it is an ``InputDeviceLike``);
behind it each queued signature is its own ``SimulatedDigitizer`` - raw ``input_event`` bytes
through a pipe, read by evdev's C reader in the live read loop - started when the kiosk grabs the
pen for a capture, as a customer starts signing when the screen asks. The demo, the benchmark and
the daemon's tests drive the daemon through it, so they exercise the same capture path as a
real tablet: grab, drain, pen-up timeout, unplug.

``sign(traj, unplug_after=n)`` makes the pen vanish after ``n`` frames (end of file, as a pulled
USB cable); it comes back ``replug_after_s`` later, when discovery finds it again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from firmware_host.assembler import SegmenterConfig
from firmware_host.errors import NoPenDeviceError
from firmware_host.evdev_reader import DigitizerService, LiveDigitizer
from firmware_host.events import AxisInfo, DeviceCaps
from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.simulator import SimulatedDigitizer
from models.trajectory import DeviceInfo, Trajectory

log = logging.getLogger(__name__)

#: The simulated tablet's active area, mm (a signature pad's size) and resolution (units/mm).
AREA_MM = (160.0, 60.0)
RESOLUTION = 100


class ReplayPen:
    """One simulated tablet; ``sign()`` queues what the next customer writes on it."""

    def __init__(self, *, speed: float = 1.0, replug_after_s: float = 0.5, hover_frames: int = 3,
                 feed: Callable[[], Trajectory | None] | None = None) -> None:
        self.speed = speed
        #: Unattended: when the kiosk grabs the pen and nothing is queued, the next signature
        #: comes from here (``firmware_host.pen_source.replay_service``: recordings in a loop).
        self.feed = feed
        self.replug_after_s = replug_after_s
        self.opts = GeneratorOptions(resolution=RESOLUTION, hover_frames=hover_frames)
        probe = trajectory_to_events(_dot(), self.opts).caps
        w, h = int(AREA_MM[0] * RESOLUTION), int(AREA_MM[1] * RESOLUTION)
        abs_ = dict(probe.abs)
        for code, hi in ((0, w), (1, h)):   # ABS_X, ABS_Y
            abs_[code] = AxisInfo(min=0, max=hi, resolution=RESOLUTION)
        self.caps: DeviceCaps = dataclasses.replace(probe, abs=abs_, path="replay:pen", name="sigkiosk replay pen")
        self._lock = threading.Lock()
        self._queue: deque[SimulatedDigitizer] = deque()
        self._current = self._idle()
        self.present = True
        self.grabbed = False
        self.played = 0

    # -- the script's side -----------------------------------------------------------------
    def sign(self, traj: Trajectory, *, unplug_after: int | None = None) -> SimulatedDigitizer:
        """Queue one signature; it plays when the kiosk next listens (or now, if it listens)."""
        sim = self._simulated(traj, unplug_after)
        with self._lock:
            self._queue.append(sim)
            if self.grabbed and self._is_idle(self._current):
                self._advance()
        return sim

    def _simulated(self, traj: Trajectory, unplug_after: int | None = None) -> SimulatedDigitizer:
        items = trajectory_to_events(self._place(traj), self.opts).items
        return SimulatedDigitizer(self.caps, items, speed=self.speed, unplug_after=unplug_after)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _place(self, traj: Trajectory) -> Trajectory:
        # Centre the signature on the pad, in mm (a real signer writes inside the box).
        if traj.device.units != "mm":
            return traj
        cx = AREA_MM[0] / 2 - (float(np.min(traj.x)) + float(np.max(traj.x))) / 2
        cy = AREA_MM[1] / 2 - (float(np.min(traj.y)) + float(np.max(traj.y))) / 2
        return dataclasses.replace(traj, x=np.asarray(traj.x) + cx, y=np.asarray(traj.y) + cy)

    # -- InputDeviceLike (what LiveDigitizer uses) ------------------------------------------
    @property
    def fd(self) -> int:
        return self._current.fd

    def read(self) -> Any:
        cur = self._current
        events = list(cur.read())
        if not events and cur is self._current and not self._is_idle(cur):
            # End of file: the pen was pulled out (unplug_after) - it is gone until re-plugged.
            self.present = False
            threading.Timer(self.replug_after_s, self._replug).start()
        return events

    def absinfo(self, axis_num: int) -> Any:
        return self._current.absinfo(axis_num)

    def active_keys(self) -> list[int]:
        return self._current.active_keys()

    def grab(self) -> None:
        with self._lock:
            self.grabbed = True
            if self.feed is not None and not self._queue and (self._current.finished.is_set()
                                                               or self._is_idle(self._current)):
                traj = self.feed()
                if traj is not None:
                    self._queue.append(self._simulated(traj))
            if self._current.finished.is_set() or self._is_idle(self._current):
                self._advance()

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        """The reader let go (after an unplug); the pen object lives on."""

    # -- internals ----------------------------------------------------------------------------
    def _idle(self) -> SimulatedDigitizer:
        sim = SimulatedDigitizer(self.caps, [])
        sim.idle = True   # type: ignore[attr-defined]
        return sim

    @staticmethod
    def _is_idle(sim: SimulatedDigitizer) -> bool:
        return bool(getattr(sim, "idle", False))

    def _advance(self) -> None:
        old = self._current
        if self._queue:
            self._current = self._queue.popleft()
            self._current.start()
            self.played += 1
        elif not self._is_idle(old):
            self._current = self._idle()
        else:
            return
        old._stop.set()      # stop its feeder thread (it is finished or never started)
        threading.Timer(1.0, _close_quietly, (old,)).start()   # the reader may still hold its fd briefly

    def _replug(self) -> None:
        with self._lock:
            if self._current.finished.is_set():
                self._advance() if self._queue and self.grabbed else None
            if not self._queue or not self.grabbed:
                old, self._current = self._current, self._idle()
                threading.Timer(1.0, _close_quietly, (old,)).start()
            self.present = True

    # -- a DigitizerService wired to this pen ---------------------------------------------------
    def service(self, config: SegmenterConfig | None = None, rediscover_interval: float = 0.1,
                poll_interval: float = 0.02) -> DigitizerService:
        svc = DigitizerService(config=config, rediscover_interval=rediscover_interval,
                               opener=lambda caps: LiveDigitizer(self, self.caps, config, poll_interval=poll_interval))

        def finder() -> DeviceCaps:
            if not self.present:
                raise NoPenDeviceError("replay pen unplugged")
            return self.caps

        svc.use_finder(finder)
        svc.source = "replay"
        svc.label = "replay pen"
        return svc

    def close_all(self) -> None:
        with self._lock:
            sims = [self._current, *self._queue]
            self._queue.clear()
        for s in sims:
            _close_quietly(s)


def _close_quietly(sim: SimulatedDigitizer) -> None:
    try:
        sim.close()
    except OSError:
        pass


def _dot() -> Trajectory:
    t = np.linspace(0, 0.1, 20)
    return Trajectory(x=np.linspace(1, 2, 20), y=np.ones(20), pressure=np.full(20, 0.5), t=t,
                      pen_down=np.ones(20, dtype=bool),
                      device=dataclasses.replace(_mm_device(), name="probe"))


def _mm_device() -> Any:
    return DeviceInfo(units="mm", resolution=RESOLUTION, pressure_levels=1023)


__all__ = ["ReplayPen", "AREA_MM", "RESOLUTION", "time"]
