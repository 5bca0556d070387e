"""The live USB pen digitizer, through the kernel's evdev interface (``evdev`` package).

Thin I/O around ``evdev.InputDevice``: discovery, capabilities, exclusive grab, the read loop,
the SYN_DROPPED resynchronisation by ioctl, and unplug handling. Everything the events *mean* is
decided by ``firmware_host.assembler``, which the replayer and the tests drive with the same
streams.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from evdev import InputDevice, InputEvent, ecodes

from firmware_host.assembler import CaptureAssembler, CapturedSignature, PenFrame, SegmenterConfig
from firmware_host.errors import (
    CaptureError,
    DeviceGoneError,
    DevicePermissionError,
    NoPenDeviceError,
    NoSignatureError,
)
from firmware_host.events import AxisInfo, DeviceCaps, DeviceState, DoneMarker, StreamItem

log = logging.getLogger(__name__)

DEFAULT_INPUT_DIR = Path("/dev/input")
#: _IOW('E', 0xa0, int): choose the clock of event timestamps. CLOCK_MONOTONIC keeps an NTP step
#: from looking like a two-hour pen-up pause in the middle of a signature.
EVIOCSCLOCKID = 0x400445A0
#: errnos that mean the device is gone (unplugged, driver unbound).
_GONE = {errno.ENODEV, errno.ENXIO, errno.EIO, errno.EBADF}


class InputDeviceLike(Protocol):
    """What the live reader uses of ``evdev.InputDevice`` (a simulated device provides the same)."""

    @property
    def fd(self) -> int: ...
    def read(self) -> Any: ...
    def absinfo(self, axis_num: int) -> Any: ...
    def active_keys(self) -> Any: ...
    def grab(self) -> None: ...
    def ungrab(self) -> None: ...
    def close(self) -> None: ...


def caps_from_device(dev: InputDevice, path: str = "") -> DeviceCaps:
    """Read identity and capabilities (with absinfo) from an open device."""
    # evdev's annotations give every capability as an int; with absinfo=True the EV_ABS entries are
    # (code, AbsInfo) pairs.
    raw = cast("dict[int, list[Any]]", dev.capabilities(absinfo=True))
    abs_: dict[int, AxisInfo] = {}
    for code, ai in raw.get(ecodes.EV_ABS, []):
        abs_[int(code)] = AxisInfo(min=ai.min, max=ai.max, resolution=max(0, ai.resolution),
                                   fuzz=ai.fuzz, flat=ai.flat, value=ai.value)
    try:
        props = frozenset(int(p) for p in dev.input_props())
    except OSError:
        props = frozenset()
    return DeviceCaps(
        name=str(dev.name),
        abs=abs_,
        keys=frozenset(int(k) for k in raw.get(ecodes.EV_KEY, [])),
        msc=frozenset(int(m) for m in raw.get(ecodes.EV_MSC, [])),
        props=props,
        vendor=dev.info.vendor,
        product=dev.info.product,
        version=dev.info.version,
        bustype=dev.info.bustype,
        phys=str(dev.phys or ""),
        uniq=str(dev.uniq or ""),
        path=path or str(dev.path),
    )


@dataclass(frozen=True)
class DeviceSelector:
    """Which device to use, from config. Unset fields match anything.

    ``name`` and ``phys`` are shell-style patterns, case-insensitive (``"*wacom*pen*"``).
    """

    path: str | None = None
    name: str | None = None
    vendor: int | None = None
    product: int | None = None
    phys: str | None = None

    def matches(self, caps: DeviceCaps) -> bool:
        if self.path is not None and os.path.realpath(self.path) != os.path.realpath(caps.path):
            return False
        if self.name is not None and not fnmatch.fnmatch(caps.name.lower(), self.name.lower()):
            return False
        if self.vendor is not None and caps.vendor != self.vendor:
            return False
        if self.product is not None and caps.product != self.product:
            return False
        if self.phys is not None and not fnmatch.fnmatch(caps.phys.lower(), self.phys.lower()):
            return False
        return True

    def describe(self) -> str:
        """``" matching name='*wacom*'"``, or empty when the selector takes any pen."""
        parts = [f"{k}={v!r}" for k, v in self.__dict__.items() if v is not None]
        return f" matching {', '.join(parts)}" if parts else ""


@dataclass
class DeviceListing:
    devices: list[DeviceCaps] = field(default_factory=list)
    #: (path, reason) for event nodes that could not be opened.
    inaccessible: list[tuple[str, str]] = field(default_factory=list)


def list_input_devices(input_dir: Path = DEFAULT_INPUT_DIR) -> DeviceListing:
    """Every event node's capabilities; nodes we may not open are listed with the reason."""
    out = DeviceListing()
    if not input_dir.is_dir():
        return out
    for node in sorted(input_dir.glob("event*"), key=lambda p: (len(p.name), p.name)):
        try:
            dev = InputDevice(str(node), readonly=True)
        except PermissionError:
            out.inaccessible.append((str(node), "permission denied (see systemd/70-sigkiosk-digitizer.rules)"))
            continue
        except OSError as exc:
            out.inaccessible.append((str(node), exc.strerror or str(exc)))
            continue
        try:
            out.devices.append(caps_from_device(dev, str(node)))
        except OSError as exc:
            out.inaccessible.append((str(node), exc.strerror or str(exc)))
        except CaptureError as exc:
            # A device that describes itself impossibly (an axis whose minimum is above its
            # maximum): listed as unusable, so that it does not hide the pen beside it (one such
            # node made discovery, and every pen request, fail; found by a review).
            out.inaccessible.append((str(node), f"unusable: {exc}"))
        finally:
            dev.close()
    return out


def find_pen(selector: DeviceSelector | None = None, input_dir: Path = DEFAULT_INPUT_DIR) -> DeviceCaps:
    """The best pen device matching ``selector``; typed errors say why there is none."""
    selector = selector or DeviceSelector()
    listing = list_input_devices(input_dir)
    candidates = [c for c in listing.devices if selector.matches(c) and c.pen_score() > 0]
    if candidates:
        return max(candidates, key=lambda c: (c.pen_score(), -len(c.path), c.path))
    if listing.inaccessible and all("permission" in r for _, r in listing.inaccessible):
        raise DevicePermissionError(
            f"no pen device{selector.describe()} among readable devices; "
            f"{len(listing.inaccessible)} event node(s) in {input_dir} are not readable by this "
            "user: install systemd/70-sigkiosk-digitizer.rules and add the user to group sigkiosk"
        )
    raise NoPenDeviceError(
        f"no pen device{selector.describe()} in {input_dir} "
        f"({len(listing.devices)} readable device(s), none with ABS_X/ABS_Y and a pen key)"
    )


class LiveDigitizer:
    """One open evdev device, captured signature by signature.

    ``on_item`` sees every stream item the assembler sees (the recorder writes them), so a
    recording replays exactly as the live capture assembled.
    """

    def __init__(self, device: InputDeviceLike, caps: DeviceCaps,
                 config: SegmenterConfig | None = None, poll_interval: float = 0.05) -> None:
        self.device = device
        self.caps = caps
        self.config = config or SegmenterConfig()
        self.poll_interval = poll_interval
        self.clock = self._set_monotonic_clock()
        self._now: Callable[[], float] = time.monotonic if self.clock == "monotonic" else time.time

    @classmethod
    def open(cls, path: str | Path, config: SegmenterConfig | None = None) -> "LiveDigitizer":
        try:
            dev = InputDevice(str(path))
        except PermissionError:
            raise DevicePermissionError(
                f"{path}: permission denied; install systemd/70-sigkiosk-digitizer.rules "
                "and add the kiosk user to group sigkiosk"
            ) from None
        except FileNotFoundError:
            raise DeviceGoneError(f"{path}: no such device") from None
        except OSError as exc:
            if exc.errno in _GONE:
                raise DeviceGoneError(f"{path}: {exc.strerror}") from None
            raise
        return cls(dev, caps_from_device(dev, str(path)), config)

    def _set_monotonic_clock(self) -> str:
        try:
            fcntl.ioctl(self.device.fd, EVIOCSCLOCKID, struct.pack("i", time.CLOCK_MONOTONIC))
            return "monotonic"
        except OSError:
            # Kernels before 3.4, or a simulated device (a pipe): timestamps are CLOCK_REALTIME.
            return "realtime"

    def now(self) -> float:
        """The current time in the clock the kernel stamps events with."""
        return self._now()

    def read_state(self) -> DeviceState:
        """The device's current axes and keys by ioctl (EVIOCGABS, EVIOCGKEY)."""
        try:
            abs_ = {code: int(self.device.absinfo(code).value) for code in self.caps.abs}
            keys = frozenset(int(k) for k in self.device.active_keys())
        except OSError as exc:
            self._raise_if_gone(exc)
            raise
        return DeviceState(abs=abs_, keys=keys, time=self.now())

    def _raise_if_gone(self, exc: OSError) -> None:
        if exc.errno in _GONE:
            raise DeviceGoneError(f"{self.caps.path or self.caps.name}: device gone ({exc.strerror})") from None

    def _read_batch(self) -> list[InputEvent]:
        try:
            batch = list(self.device.read())
        except BlockingIOError:
            return []
        except OSError as exc:
            self._raise_if_gone(exc)
            raise
        if not batch:
            # select() said readable and read() returned nothing: end of file. A real evdev node
            # reports ENODEV instead, but both mean the device is not coming back on this fd.
            raise DeviceGoneError(f"{self.caps.path or self.caps.name}: device closed (end of file)")
        return batch

    def _drain(self, budget_s: float = 0.2) -> int:
        """Discard events queued before this capture started (previous customer, hover), for at most
        ``budget_s``: a device that writes as fast as it is read would otherwise keep this loop
        going for ever; what it sends after that is this capture's to read."""
        n = 0
        until = time.monotonic() + budget_s
        while time.monotonic() < until:
            r, _, _ = select.select([self.device.fd], [], [], 0)
            if not r:
                return n
            n += len(self._read_batch())
        return n

    def capture(
        self,
        *,
        done: threading.Event | None = None,
        cancel: threading.Event | None = None,
        on_item: Callable[[StreamItem], None] | None = None,
        on_frame: Callable[[PenFrame], None] | None = None,
        start_timeout: float | None = None,
        grab: bool = True,
    ) -> CapturedSignature:
        """Block until one signature is complete; return it.

        ``on_item`` sees every stream item (a recorder), ``on_frame`` every assembled pen frame
        (live ink: ``firmware_host.ink``).

        Raises ``NoSignatureError`` when cancelled, when done is set before any pen-down, or when
        nobody touched the pen within ``start_timeout``; ``DeviceGoneError`` on unplug (the
        points so far are discarded: a partial signature is never verified).
        """
        asm = CaptureAssembler(self.caps, self.config, on_frame)
        emit = on_item or (lambda item: None)
        grabbed = False
        if grab:
            try:
                self.device.grab()
                grabbed = True
            except OSError as exc:
                self._raise_if_gone(exc)
                # EBUSY: another process holds the grab. Capture still works; the desktop may
                # also see the pen. Say so rather than refuse the customer.
                log.warning("could not grab %s exclusively: %s", self.caps.name, exc.strerror)
        started = self.now()
        dropping = False
        try:
            stale = self._drain()
            if stale:
                log.debug("discarded %d events queued before the capture", stale)
            state = self.read_state()
            emit(state)
            asm.feed(state)
            while True:
                if cancel is not None and cancel.is_set():
                    raise NoSignatureError("capture cancelled")
                if done is not None and done.is_set():
                    marker = DoneMarker(self.now())
                    emit(marker)
                    sig = asm.feed(marker)
                    if sig is None:
                        raise NoSignatureError("done before any signature was written")
                    return sig
                r, _, _ = select.select([self.device.fd], [], [], self._wait(asm))
                if r:
                    for ev in self._read_batch():
                        emit(ev)
                        sig = asm.feed(ev)
                        if ev.type == ecodes.EV_SYN:
                            if ev.code == ecodes.SYN_DROPPED:
                                dropping = True
                            elif ev.code == ecodes.SYN_REPORT and dropping:
                                # The evdev protocol: after SYN_DROPPED, skip to the next
                                # SYN_REPORT, then read the real state by ioctl.
                                dropping = False
                                st = self.read_state()
                                emit(st)
                                asm.feed(st)
                        if sig is not None:
                            return sig
                # The deadlines on every pass, not only when no event came: a pen hovering in
                # proximity reports 100-200 times a second, and the customer timeout must still
                # fire (it did not, and the next customer waited for the watchdog).
                sig = asm.tick(self.now())
                if sig is not None:
                    return sig
                if (start_timeout is not None and not asm.segmenter.active
                        and self.now() - started > start_timeout):
                    raise NoSignatureError(f"no pen-down within {start_timeout:.1f} s")
        except DeviceGoneError:
            lost = asm.segmenter.abort()
            log.warning("digitizer gone during capture; %d point(s) of this signature discarded", lost)
            raise
        finally:
            if grabbed:
                try:
                    self.device.ungrab()
                except OSError:
                    pass  # gone or already released: nothing left to release

    def _wait(self, asm: CaptureAssembler) -> float:
        """Sleep until the next event, the signature's deadline, or the polling interval."""
        deadline = asm.segmenter.deadline()
        if deadline is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, deadline - self.now()))

    def close(self) -> None:
        try:
            self.device.close()
        except OSError:
            pass


class DigitizerService:
    """The daemon's view: a pen that may be unplugged and plugged back at any time.

    ``capture_one`` waits for a matching device (rediscovering every ``rediscover_interval``
    seconds), captures one signature, and on unplug raises ``DeviceGoneError`` for that
    signature only; the next call waits for the device to return.
    """

    #: ``firmware_host.pen_source.PenService``: which kind of pen (a replay sets "replay").
    source = "evdev"

    def __init__(self, selector: DeviceSelector | None = None, config: SegmenterConfig | None = None,
                 input_dir: Path = DEFAULT_INPUT_DIR, rediscover_interval: float = 1.0,
                 opener: Callable[[DeviceCaps], LiveDigitizer] | None = None) -> None:
        self.label = f"evdev pen{(selector or DeviceSelector()).describe()} in {input_dir}"
        self.selector = selector or DeviceSelector()
        self.config = config
        self.input_dir = input_dir
        self.rediscover_interval = rediscover_interval
        self._opener = opener or (lambda caps: LiveDigitizer.open(caps.path, self.config))
        self._finder: Callable[[], DeviceCaps] = lambda: find_pen(self.selector, self.input_dir)
        self.digitizer: LiveDigitizer | None = None

    def present(self) -> bool:
        """A matching pen is connected now: the open one still has its node, or discovery finds one."""
        dig = self.digitizer
        if dig is not None:
            path = dig.caps.path
            return not path.startswith("/") or os.path.exists(path)
        try:
            self._finder()
            return True
        except (NoPenDeviceError, DevicePermissionError, DeviceGoneError):
            return False

    def describe(self) -> str:
        return self.label

    def use_finder(self, finder: Callable[[], DeviceCaps]) -> None:
        """Replace discovery (the simulator plugs its device in here)."""
        self._finder = finder

    def wait_for_device(self, timeout: float | None = None,
                        cancel: threading.Event | None = None) -> LiveDigitizer:
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            if self.digitizer is not None:
                return self.digitizer
            try:
                caps = self._finder()
                self.digitizer = self._opener(caps)
                log.info("digitizer ready: %s (%s)", caps.name, caps.path)
                return self.digitizer
            except (NoPenDeviceError, DeviceGoneError) as exc:
                if not announced:
                    log.warning("waiting for the digitizer: %s", exc)
                    announced = True
            if cancel is not None and cancel.is_set():
                raise NoSignatureError("cancelled while waiting for the digitizer")
            if deadline is not None and time.monotonic() >= deadline:
                raise NoPenDeviceError(f"no digitizer{self.selector.describe()} "
                                       f"within {timeout:.1f} s")
            time.sleep(self.rediscover_interval)

    def capture_one(self, *, done: threading.Event | None = None, cancel: threading.Event | None = None,
                    on_item: Callable[[StreamItem], None] | None = None,
                    watch_frames: Callable[[DeviceCaps], Callable[[PenFrame], None]] | None = None,
                    device_timeout: float | None = None, start_timeout: float | None = None) -> CapturedSignature:
        """One signature from the pen, once there is one. ``watch_frames`` is called with the
        device's capabilities when the capture starts on it; what it returns sees each pen frame."""
        dig = self.wait_for_device(device_timeout, cancel)
        on_frame = watch_frames(dig.caps) if watch_frames is not None else None
        try:
            return dig.capture(done=done, cancel=cancel, on_item=on_item, on_frame=on_frame,
                               start_timeout=start_timeout)
        except DeviceGoneError:
            dig.close()
            self.digitizer = None
            raise

    def close(self) -> None:
        if self.digitizer is not None:
            self.digitizer.close()
            self.digitizer = None


__all__ = [
    "DeviceSelector", "DeviceListing", "LiveDigitizer", "DigitizerService",
    "caps_from_device", "find_pen", "list_input_devices",
]
