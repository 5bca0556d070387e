"""A simulated evdev device: a recorded or generated stream played, in real time, into a pipe.

The live reader (``LiveDigitizer``) reads it with evdev's own C reader (``struct input_event``
bytes through ``EventIO.read``), answers its EVIOCGABS/EVIOCGKEY questions from the state the
"kernel" side has reached, and sees end-of-file when it is "unplugged". This is how the demo, a
newcomer without a tablet, and the tests drive the live capture loop itself, pen-up timeouts and
all, rather than a copy of it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from evdev import AbsInfo, InputEvent, ecodes
from evdev.eventio import EventIO

from firmware_host.events import DeviceCaps, DeviceState, DoneMarker, StreamItem, event_time

log = logging.getLogger(__name__)

#: ``struct input_event`` on 64-bit Linux: struct timeval (two longs), u16 type, u16 code, s32.
_EVENT = struct.Struct("llHHi")
_counter = itertools.count(1)


class SimulatedDigitizer(EventIO):
    """Plays ``items`` into a pipe as a kernel tablet driver would; the read end is ``fd``.

    Event timestamps are re-based onto the wall clock (CLOCK_REALTIME, what evdev uses when the
    clock cannot be switched, as on a pipe) and played at ``speed`` times real time.
    ``done_event`` is set when the stream's explicit "done" is reached, as the kiosk's button
    would. ``unplug_after`` closes the pipe after that many frames: end-of-file, like ENODEV.
    ``start_on_grab``: start playing when the reader grabs the device (its capture begins),
    so that no frame is played before anyone listens.
    """

    def __init__(self, caps: DeviceCaps, items: Sequence[StreamItem], *, speed: float = 1.0,
                 lead_in: float = 0.05, unplug_after: int | None = None,
                 close_at_end: bool = False, start_on_grab: bool = False) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.fd = r
        self._w: int | None = w
        self.path = f"simulated:{next(_counter)}"
        self.caps = replace(caps, path=self.path)
        self.name = caps.name
        self._items = list(items)
        self._speed = speed
        self._lead_in = lead_in
        self._unplug_after = unplug_after
        self._close_at_end = close_at_end
        self._start_on_grab = start_on_grab
        self._abs = {c: a.value for c, a in caps.abs.items()}
        self._keys: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.grabbed = False
        self.grab_count = 0
        self.done_event = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="sim-digitizer", daemon=True)

    # --- the InputDevice surface the live reader uses -----------------------------------
    def absinfo(self, axis_num: int) -> AbsInfo:
        a = self.caps.abs[axis_num]
        with self._lock:
            value = self._abs.get(axis_num, a.value)
        return AbsInfo(value, a.min, a.max, a.fuzz, a.flat, a.resolution)

    def active_keys(self) -> list[int]:
        with self._lock:
            return sorted(self._keys)

    def grab(self) -> None:
        if self.grabbed:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self.grabbed = True
        self.grab_count += 1
        if self._start_on_grab:
            # The customer starts signing once the kiosk is listening, not before.
            self.start()

    def ungrab(self) -> None:
        if not self.grabbed:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.grabbed = False

    def close(self) -> None:
        self._stop.set()
        self.unplug()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- the "kernel" side ----------------------------------------------------------------
    def start(self) -> "SimulatedDigitizer":
        """Start playing (again calls are harmless)."""
        if not self._thread.is_alive() and not self.finished.is_set():
            self._thread.start()
        return self

    def unplug(self) -> None:
        with self._lock:
            if self._w is not None:
                os.close(self._w)
                self._w = None

    def _apply(self, ev: InputEvent) -> None:
        if ev.type == ecodes.EV_ABS:
            self._abs[ev.code] = ev.value
        elif ev.type == ecodes.EV_KEY:
            if ev.value:
                self._keys.add(ev.code)
            else:
                self._keys.discard(ev.code)

    def _feed(self) -> None:
        try:
            self._play()
        except OSError as exc:  # the reader closed its end: nothing more to do
            log.debug("simulated digitizer stopped: %s", exc)
        finally:
            self.finished.set()
            if self._close_at_end:
                self.unplug()

    def _play(self) -> None:
        t0_stream: float | None = None
        t0_wall = time.time() + self._lead_in
        frame: list[InputEvent] = []
        frames = 0
        items = self._items
        i = 0
        while i < len(items) and not self._stop.is_set():
            item = items[i]
            i += 1
            if isinstance(item, DeviceState):
                with self._lock:  # the real state the kernel reached (e.g. after lost frames)
                    self._abs.update(item.abs)
                    self._keys = set(item.keys)
                continue
            if isinstance(item, DoneMarker):
                if t0_stream is not None:
                    self._sleep_until(t0_wall + (item.time - t0_stream) / self._speed)
                self.done_event.set()
                continue
            frame.append(item)
            if not (item.type == ecodes.EV_SYN and item.code in (ecodes.SYN_REPORT, ecodes.SYN_DROPPED)):
                continue
            if item.code == ecodes.SYN_DROPPED:
                continue  # part of the next write, with the frame tail that follows it
            t = event_time(item)
            if t0_stream is None:
                t0_stream = t
            wall = t0_wall + (t - t0_stream) / self._speed
            self._sleep_until(wall)
            # A state snapshot right after this frame is what the kernel reached by then: apply
            # it before the reader can see the SYN_REPORT and ask.
            while i < len(items) and isinstance(st := items[i], DeviceState):
                i += 1
                with self._lock:
                    self._abs.update(st.abs)
                    self._keys = set(st.keys)
            sec, usec = int(wall), int(round((wall - int(wall)) * 1e6))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            data = b"".join(_EVENT.pack(sec, usec, e.type, e.code, e.value) for e in frame)
            with self._lock:
                for e in frame:
                    self._apply(e)
                if self._w is None:
                    return
                os.write(self._w, data)  # < PIPE_BUF per frame: atomic, never a partial event
            frame = []
            frames += 1
            if self._unplug_after is not None and frames >= self._unplug_after:
                self.unplug()
                return

    def _sleep_until(self, wall: float) -> None:
        delay = wall - time.time()
        if delay > 0:
            self._stop.wait(delay)
