"""The serial signature pad, host side (``pyserial``): protocol v1 in, signatures out.

Thin I/O around ``serial.Serial``. Packets are decoded by ``pad_protocol.PacketDecoder``
(resynchronising after garbage, counting CRC failures and lost packets); samples become the same
``PenFrame`` the evdev path produces and go through the same ``SignatureSegmenter``, so a pad
signature and a tablet signature end by the same rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import serial

from firmware_host.assembler import (
    AssemblerStats,
    CapturedSignature,
    PenFrame,
    Scale,
    SegmenterConfig,
    SignatureSegmenter,
)
from firmware_host.errors import (
    DeviceGoneError,
    DevicePermissionError,
    NoSignatureError,
    PadError,
    PadReportedError,
    PadTimeoutError,
)
from firmware_host.pad_protocol import (
    Button,
    ButtonPress,
    GetHello,
    Hello,
    Packet,
    PacketDecoder,
    PadErrorMsg,
    Sample,
    TimeUnwrapper,
    encode_message,
)
from models.trajectory import DeviceInfo

log = logging.getLogger(__name__)


#: Seconds a signature may run past its maximum length on the host's clock before the pad's clock
#: is judged faulty (a pad's crystal is off by far less than this over 30 s).
CLOCK_SLACK_S = 2.0


@dataclass(frozen=True)
class PadConfig:
    """``link_timeout``: silence tolerated while the pen touches (a pad streams while in contact)."""

    baudrate: int = 115200
    hello_timeout: float = 2.0
    link_timeout: float = 1.0
    poll_interval: float = 0.05
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)


@dataclass
class PadStats:
    samples: int = 0
    samples_before_hello: int = 0
    buttons: int = 0
    pad_errors: int = 0
    hellos: int = 0
    stale: int = 0           # samples and buttons that arrived between captures: nobody's, discarded

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def scale_for_hello(h: Hello) -> Scale:
    has_res = h.res_x > 0 and h.res_y > 0
    info = DeviceInfo(
        name=h.name or "signature pad",
        units="mm" if has_res else "device",
        resolution=float(h.res_x) if has_res else None,
        pressure_levels=h.pressure_max if h.pressure_max > 0 else None,
        nominal_rate_hz=float(h.rate_hz) if h.rate_hz > 0 else None,
    )
    return Scale(device=info, x_div=float(h.res_x or 1), y_div=float(h.res_y or 1), p_min=0,
                 p_range=h.pressure_max if h.pressure_max > 0 else None)


class SerialPad:
    """One pad on one serial port."""

    def __init__(self, port: serial.Serial, config: PadConfig | None = None) -> None:
        self.port = port
        self.config = config or PadConfig()
        self.decoder = PacketDecoder()
        self.stats = PadStats()
        self.assembler_stats = AssemblerStats()
        self.hello: Hello | None = None
        self._clock: TimeUnwrapper | None = None
        self._offset: float | None = None  # device seconds − host monotonic seconds
        self._seq = 0
        # Packets decoded but not yet handled: a read returns several packets at once, and
        # those after a HELLO or after the end of a signature belong to what comes next.
        self._pending: deque[tuple[Packet, int]] = deque()
        # Set when a capture ends: what the pad sends after it, until the next capture starts,
        # belongs to no one (the customer who just signed pressing OK late, or writing on).
        self._between = False

    @classmethod
    def open(cls, path: str, config: PadConfig | None = None) -> "SerialPad":
        config = config or PadConfig()
        try:
            port = serial.Serial(path, baudrate=config.baudrate, timeout=config.poll_interval,
                                 exclusive=True)
        except serial.SerialException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(exc.__context__, PermissionError) or "Permission denied" in str(exc) or err == 13:
                raise DevicePermissionError(
                    f"{path}: permission denied; install systemd/70-sigkiosk-digitizer.rules and "
                    "add the kiosk user to group sigkiosk") from None
            raise DeviceGoneError(f"{path}: cannot open serial port: {exc}") from None
        return cls(port, config)

    def close(self) -> None:
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass

    # --- I/O ---------------------------------------------------------------------------------
    @contextmanager
    def _port_failures(self) -> Iterator[None]:
        """A port that fails (unplugged, its driver gone) as ``DeviceGoneError``."""
        try:
            yield
        except (serial.SerialException, OSError) as exc:
            raise DeviceGoneError(f"{self.port.port}: serial port failed: {exc}") from None

    def _read(self) -> bytes:
        with self._port_failures():
            n = self.port.in_waiting
            return self.port.read(n if n > 0 else 1)

    def _waiting(self) -> int:
        with self._port_failures():
            return int(self.port.in_waiting)

    def _send(self, msg: GetHello) -> None:
        with self._port_failures():
            self.port.write(encode_message(msg, self._seq))
            self.port.flush()
        self._seq = (self._seq + 1) & 0xFF

    def _set_hello(self, h: Hello) -> None:
        self.hello = h
        self.stats.hellos += 1
        self._clock = TimeUnwrapper(h.tick_hz)
        self._offset = None
        log.info("pad: %s, protocol %d, %s, pressure %s, %d Hz", h.name, h.version,
                 f"{h.res_x}/mm" if h.res_x else "no resolution",
                 h.pressure_max or "none", h.rate_hz)

    def handshake(self, timeout: float | None = None) -> Hello:
        """Ask for HELLO and wait for it; samples that arrive first are counted and dropped."""
        timeout = self.config.hello_timeout if timeout is None else timeout
        self._send(GetHello())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pending:
                self._pending.extend(self.decoder.feed(self._read()))
            while self._pending:
                pkt, _lost = self._pending.popleft()
                m = pkt.message
                if isinstance(m, Hello):
                    self._set_hello(m)
                    return m
                if isinstance(m, Sample):
                    self.stats.samples_before_hello += 1
                elif isinstance(m, PadErrorMsg):
                    self._pad_error(m)
        raise PadTimeoutError(f"{self.port.port}: no HELLO from the pad within {timeout:.1f} s "
                              f"({self.decoder.stats.bad_packets} damaged packets, "
                              f"{self.decoder.stats.bytes_in} bytes received)")

    def _pad_error(self, m: PadErrorMsg) -> None:
        self.stats.pad_errors += 1
        if m.fatal:
            raise PadReportedError(m.code, m.message)
        log.warning("pad reported error 0x%02x: %s", m.code, m.message)

    # --- capture -----------------------------------------------------------------------------
    def capture(self, *, done: threading.Event | None = None, cancel: threading.Event | None = None,
                start_timeout: float | None = None,
                on_frame: Callable[[PenFrame], None] | None = None) -> CapturedSignature:
        """Block until one signature is complete (pen-up timeout, OK button, done, max duration).

        ``on_frame`` sees every pen frame as it arrives (live ink: ``firmware_host.ink``)."""
        if self.hello is None:
            self.handshake()
        if self._between:
            self._discard_stale()
        assert self.hello is not None and self._clock is not None
        seg = SignatureSegmenter(scale_for_hello(self.hello), self.config.segmenter, self.assembler_stats)
        started = last_rx = time.monotonic()
        touching = False
        pending_gap = False
        signing_since: float | None = None   # host time the signature began
        try:
            while True:
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    raise NoSignatureError("capture cancelled")
                # The segmenter's limits run on the pad's clock; a pad whose clock stands still
                # (or crawls) kept a signature open for hours (found by a review). On the host's
                # clock, a signature ends within its maximum length and a little more, whatever
                # the pad says.
                if not seg.active:
                    signing_since = None
                elif signing_since is None:
                    signing_since = now
                elif now - signing_since > self.config.segmenter.max_duration + CLOCK_SLACK_S:
                    raise PadTimeoutError(
                        f"{self.port.port}: the signature is still open after {now - signing_since:.0f} s on this "
                        f"computer's clock (at most {self.config.segmenter.max_duration:g} s): the pad's clock is "
                        "not keeping time")
                if done is not None and done.is_set():
                    sig = seg.done(self._device_now(now))
                    if sig is None:
                        raise NoSignatureError("done before any signature was written")
                    return sig
                if not self._pending:
                    self._set_read_timeout(seg, now)
                    self._pending.extend(self.decoder.feed(self._read()))
                now = time.monotonic()
                if not self._pending:
                    # Nothing usable arrived (silence, or only noise): time may end things.
                    dev_now = self._device_now(now)
                    if dev_now is not None:
                        sig = seg.tick(dev_now)
                        if sig is not None:
                            return sig
                    if seg.active and touching and now - last_rx > self.config.link_timeout:
                        raise PadTimeoutError(
                            f"{self.port.port}: pad silent for {now - last_rx:.2f} s with the pen down")
                    if start_timeout is not None and not seg.active and now - started > start_timeout:
                        raise NoSignatureError(f"no pen-down within {start_timeout:.1f} s")
                    continue
                last_rx = now
                while self._pending:
                    pkt, lost = self._pending.popleft()
                    m = pkt.message
                    if lost and not isinstance(m, Hello):
                        pending_gap = True
                    if isinstance(m, Sample):
                        self.stats.samples += 1
                        t = self._clock(m.device_time)
                        self._offset = t - now
                        frame = PenFrame(t, m.x, m.y, m.pressure, m.touching, m.in_range, pending_gap)
                        pending_gap = False
                        touching = m.touching
                        if on_frame is not None:
                            on_frame(frame)
                        sig = seg.feed(frame)
                        if sig is not None:
                            return sig
                    elif isinstance(m, ButtonPress):
                        self.stats.buttons += 1
                        if not m.pressed:
                            continue
                        if m.button == Button.OK:
                            sig = seg.done(self._clock(m.device_time))
                            if sig is None:
                                raise NoSignatureError("OK pressed on the pad before any signature")
                            return sig
                        if m.button == Button.CLEAR:
                            lost_pts = seg.abort()
                            log.info("pad CLEAR: %d point(s) discarded, waiting for a new signature", lost_pts)
                        elif m.button == Button.CANCEL:
                            raise NoSignatureError("cancelled on the pad")
                    elif isinstance(m, Hello):
                        # The same session is the answer to our GET_HELLO; a pad that rebooted
                        # has drawn a new one.
                        if m == self.hello:
                            continue
                        restarted = seg.active
                        self._set_hello(m)
                        if restarted:
                            raise PadError("the pad restarted (new HELLO) during the signature")
                        seg = SignatureSegmenter(scale_for_hello(m), self.config.segmenter,
                                                 self.assembler_stats)
                    elif isinstance(m, PadErrorMsg):
                        self._pad_error(m)
                # Also when packets keep coming: a pen hovering in range sends samples all the time,
                # and the customer timeout must still fire.
                if start_timeout is not None and not seg.active and time.monotonic() - started > start_timeout:
                    raise NoSignatureError(f"no pen-down within {start_timeout:.1f} s")
        except (PadError, DeviceGoneError) as exc:
            n = seg.abort()
            log.warning("pad capture failed (%s); %d point(s) discarded", type(exc).__name__, n)
            raise
        finally:
            self._between = True

    def _discard_stale(self, budget_s: float = 0.2) -> None:
        """Drop the samples and button presses that came since the last capture ended (kept, they
        made the next customer's capture end at once on a late OK, or handed them the previous
        customer's doodle as their signature); a pad restart (a new HELLO) or error among them still
        counts. For at most ``budget_s`` of reading: a pad that keeps sending is this capture's."""
        until = time.monotonic() + budget_s
        while True:
            while self._pending:
                pkt, _lost = self._pending.popleft()
                m = pkt.message
                if isinstance(m, Hello):
                    if m != self.hello:
                        self._set_hello(m)
                elif isinstance(m, PadErrorMsg):
                    self._pad_error(m)
                else:
                    self.stats.stale += 1
            if time.monotonic() >= until or self._waiting() == 0:
                break
            self._pending.extend(self.decoder.feed(self._read()))
        # A packet half received when we stopped reading would complete into this capture.
        self.decoder.drop_partial()
        if self.stats.stale:
            log.debug("pad: %d sample(s) or button press(es) since the last capture discarded", self.stats.stale)
        self._between = False

    def _set_read_timeout(self, seg: SignatureSegmenter, host_now: float) -> None:
        """Wake at the signature's deadline rather than up to a polling interval after it."""
        timeout = self.config.poll_interval
        deadline = seg.deadline()
        dev_now = self._device_now(host_now)
        if deadline is not None and dev_now is not None:
            timeout = min(timeout, max(0.0, deadline - dev_now))
        if self.port.timeout != timeout:
            self.port.timeout = timeout

    def _device_now(self, host_now: float) -> float | None:
        return None if self._offset is None else host_now + self._offset
