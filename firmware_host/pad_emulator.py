"""A signature pad's firmware, in Python: speaks protocol v1 on a file descriptor.

Used on the other end of a pseudo-terminal pair (``os.openpty``) by the tests, the demo
(``sigkiosk capture pad --emulate``) and anyone without a pad, so the host side is exercised
through a real tty, termios settings and all. It can also misbehave on purpose: line noise
between packets, corrupted packets, device time starting just before the 32-bit wrap.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from dataclasses import dataclass

import numpy as np

from firmware_host.pad_protocol import (
    Button,
    ButtonPress,
    Flags,
    GetHello,
    Hello,
    Message,
    PacketDecoder,
    PadErrorMsg,
    Sample,
    encode_message,
)
from models.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatorOptions:
    resolution: int = 20  # units/mm: a typical LCD pad (e.g. 0.05 mm per unit)
    pressure_max: int = 1023  # 0: a pad without a pressure sensor
    tick_hz: int = 1000
    rate_hz: int = 100
    time_start: int = 0  # device time of the first sample, in ticks (near 2**32 to test wrap)
    garbage_every: int = 0  # after every N-th packet, write random noise (0: never)
    garbage_max: int = 40
    corrupt_every: int = 0  # flip one byte of every N-th sample packet (0: never)
    send_ok: bool = True  # press OK after the last sample
    hover_after: int = 2
    realtime: bool = False  # pace samples by their timestamps (False: as fast as the tty takes)
    seed: int = 0
    name: str = "sigkiosk pad emulator"


@dataclass
class EmulatorReport:
    """What the emulator sent, to hold the host's counters against."""

    samples_sent: int = 0
    samples_corrupted: int = 0
    garbage_bytes: int = 0
    packets_sent: int = 0
    hellos_sent: int = 0


def trajectory_to_samples(traj: Trajectory, opts: EmulatorOptions) -> tuple[Hello, list[Sample]]:
    """Quantise a trajectory to the pad's units: mm × resolution, device units as they are."""
    xy = traj.xy_mm()
    if xy is not None and opts.resolution > 0:
        x = np.rint(xy[:, 0] * opts.resolution)
        y = np.rint(xy[:, 1] * opts.resolution)
        res = opts.resolution
    else:
        x, y, res = np.rint(traj.x), np.rint(traj.y), 0
    x = x - min(0.0, float(x.min()))
    y = y - min(0.0, float(y.min()))
    if x.max() > 0xFFFF or y.max() > 0xFFFF:
        raise ValueError("trajectory does not fit the pad's 16-bit axes at this resolution")
    p = np.rint(np.asarray(traj.pressure) * opts.pressure_max) if opts.pressure_max else np.zeros(len(x))
    ticks = np.rint(np.asarray(traj.t) * opts.tick_hz).astype(np.int64) + opts.time_start
    down = np.asarray(traj.pen_down)
    breaks = set(traj.stroke_breaks)
    samples: list[Sample] = []
    for i in range(len(traj)):
        if i in breaks and down[i] and down[i - 1]:
            # The pad lifts between two strokes: one hover sample half-way.
            mid = int((ticks[i - 1] + ticks[i]) // 2)
            samples.append(Sample(int(x[i - 1]), int(y[i - 1]), 0, int(Flags.IN_RANGE), mid & 0xFFFFFFFF))
        flags = Flags.IN_RANGE | (Flags.TOUCH if down[i] else 0)
        samples.append(Sample(int(x[i]), int(y[i]), int(p[i]), int(flags), int(ticks[i]) & 0xFFFFFFFF))
    step = max(1, opts.tick_hz // max(1, opts.rate_hz))
    last = int(ticks[-1])
    for k in range(1, opts.hover_after + 1):
        samples.append(Sample(int(x[-1]), int(y[-1]), 0, int(Flags.IN_RANGE), (last + k * step) & 0xFFFFFFFF))
    hello = Hello(x_max=int(x.max()) + 100, y_max=int(y.max()) + 100, res_x=res, res_y=res,
                  pressure_max=opts.pressure_max, tick_hz=opts.tick_hz, rate_hz=opts.rate_hz,
                  name=opts.name, session=int(np.random.default_rng(opts.seed).integers(1, 0x10000)))
    return hello, samples


class PadEmulator:
    """Writes one or more signatures as pad packets to ``fd``; answers GET_HELLO."""

    def __init__(self, fd: int, hello: Hello, opts: EmulatorOptions | None = None) -> None:
        self.fd = fd
        self.hello = hello
        self.opts = opts or EmulatorOptions()
        self.report = EmulatorReport()
        self._seq = 0
        self._rng = np.random.default_rng(self.opts.seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cmd = PacketDecoder()
        self._thread: threading.Thread | None = None

    def send(self, msg: Message, corrupt: bool = False) -> None:
        with self._lock:  # the playing thread and the command thread both send
            data = bytearray(encode_message(msg, self._seq))
            self._seq = (self._seq + 1) & 0xFF
            if corrupt:
                # Flip bits in the middle of the packet, never into a zero: the frame stays one
                # frame and its CRC fails, which is what line noise within a packet looks like.
                i = len(data) // 2
                data[i] = (data[i] ^ 0x5A) or 0x01
            self._write(bytes(data))
            self.report.packets_sent += 1
            if isinstance(msg, Hello):
                self.report.hellos_sent += 1
            n = self.report.packets_sent
            if self.opts.garbage_every and n % self.opts.garbage_every == 0:
                k = int(self._rng.integers(1, self.opts.garbage_max + 1))
                noise = self._rng.integers(0, 256, size=k, dtype=np.uint8).tobytes()
                self._write(noise)
                self.report.garbage_bytes += k

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.1)
                continue
            view = view[n:]

    def play(self, samples: list[Sample], *, hello_first: bool = True) -> EmulatorReport:
        """Send HELLO, the samples (with the configured misbehaviour), then OK."""
        if hello_first:
            self.send(self.hello)
        t0_dev: int | None = None
        t0_wall = time.monotonic()
        for k, s in enumerate(samples):
            if self._stop.is_set():
                break
            if self.opts.realtime:
                if t0_dev is None:
                    t0_dev = s.device_time
                due = t0_wall + ((s.device_time - t0_dev) & 0xFFFFFFFF) / self.opts.tick_hz
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            corrupt = bool(self.opts.corrupt_every and (k + 1) % self.opts.corrupt_every == 0)
            self.send(s, corrupt=corrupt)
            if corrupt:
                self.report.samples_corrupted += 1
            else:
                self.report.samples_sent += 1
        if self.opts.send_ok and samples:
            t = (samples[-1].device_time + 1) & 0xFFFFFFFF
            self.send(ButtonPress(int(Button.OK), True, t))
            self.send(ButtonPress(int(Button.OK), False, (t + 1) & 0xFFFFFFFF))
        return self.report

    def send_error(self, code: int, message: str) -> None:
        self.send(PadErrorMsg(code, message))

    # --- answering the host -----------------------------------------------------------------
    def serve_commands(self) -> None:
        """Answer GET_HELLO in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._serve, name="pad-emulator", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if not r:
                    continue
                data = os.read(self.fd, 256)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return  # the host closed its end
                raise
            if not data:
                return
            for pkt, _lost in self._cmd.feed(data):
                if isinstance(pkt.message, GetHello):
                    self.send(self.hello)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


@dataclass
class PtyPair:
    """A pseudo-terminal: the emulator writes ``master``; the host opens ``path`` with pyserial.

    The slave fd is held until :meth:`close` so that the master never sees EIO before the host
    has opened its end.
    """

    master: int
    slave: int
    path: str

    @classmethod
    def open(cls) -> "PtyPair":
        master, slave = os.openpty()
        return cls(master=master, slave=slave, path=os.ttyname(slave))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1
