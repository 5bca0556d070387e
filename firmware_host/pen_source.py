"""The pen a kiosk signs on, whatever it is: an evdev tablet, a serial signature pad, or a replay.

``PenService`` is what the daemon's capture step uses (``kiosk.flows.capture.LivePenCapture``):
wait for the pen (it may be unplugged and plugged back at any time), capture one signature with
live ink, say whether a pen is there now (``present``, for "No pen connected" on the screen and in
the status). Three sources implement it:

* ``evdev``: ``firmware_host.evdev_reader.DigitizerService`` (a USB tablet through the kernel);
* ``serial``: :class:`SerialPadService`, a pad speaking protocol v1 (``pad_protocol``) on a serial
  port - the same ``SignatureSegmenter`` ends its signatures, and it is reopened (HELLO again)
  after an unplug, as the evdev tablet is rediscovered;
* ``replay``: :func:`replay_service`, recordings (``sigkiosk capture record``, ``capture synth``)
  played at real speed through ``ReplayPen``'s simulated evdev device, one signature each time the
  kiosk asks for one, so the real daemon runs without hardware.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Protocol, cast

from firmware_host.assembler import CapturedSignature, PenFrame, SegmenterConfig
from firmware_host.errors import (
    DeviceGoneError,
    DevicePermissionError,
    NoPenDeviceError,
    NoSignatureError,
    PadError,
    RecordingFormatError,
)
from firmware_host.evdev_reader import DigitizerService
from firmware_host.events import AxisInfo, DeviceCaps, StreamItem
from models.trajectory import Trajectory

log = logging.getLogger(__name__)

#: The sources ``[pen] source`` may name.
SOURCES: tuple[str, ...] = ("evdev", "serial", "replay")
#: File names a replay folder's recordings have (``sigkiosk capture record -o x.evrec[.gz]``).
RECORDING_SUFFIXES: tuple[str, ...] = (".evrec", ".evrec.gz")


class PenService(Protocol):
    """One pen for the daemon (see the module doc)."""

    source: str

    def present(self) -> bool:
        """A pen is connected now (cheap enough for a status request)."""
        ...

    def describe(self) -> str:
        """What pen this is, for the status and the log (never pen data)."""
        ...

    def wait_for_device(self, timeout: float | None = None, cancel: threading.Event | None = None) -> object:
        """Block until the pen is there; ``NoPenDeviceError`` after ``timeout``."""
        ...

    def capture_one(self, *, done: threading.Event | None = None, cancel: threading.Event | None = None,
                    on_item: Callable[[StreamItem], None] | None = None,
                    watch_frames: Callable[[DeviceCaps], Callable[[PenFrame], None]] | None = None,
                    device_timeout: float | None = None, start_timeout: float | None = None) -> CapturedSignature:
        ...

    def close(self) -> None: ...


# -- serial pad --------------------------------------------------------------------------------

def caps_for_hello(hello: object, path: str) -> DeviceCaps:
    """The pad as live ink sees it: its axis ranges and resolution from its HELLO."""
    from evdev import ecodes

    from firmware_host.pad_protocol import Hello

    assert isinstance(hello, Hello)
    abs_ = {ecodes.ABS_X: AxisInfo(0, max(hello.x_max, 1), resolution=hello.res_x),
            ecodes.ABS_Y: AxisInfo(0, max(hello.y_max, 1), resolution=hello.res_y)}
    if hello.pressure_max > 0:
        abs_[ecodes.ABS_PRESSURE] = AxisInfo(0, hello.pressure_max)
    return DeviceCaps(name=hello.name, abs=abs_, keys=frozenset({ecodes.BTN_TOUCH}), path=path)


class SerialPadService:
    """``PenService`` on a serial signature pad at ``port`` (``/dev/ttyACM0``, a by-id link).

    Opened (and HELLO exchanged) when a capture needs it; a port that is missing, or a pad that
    does not answer HELLO, is waited for like an unplugged tablet. A port that fails during a
    signature, a pad that restarts or goes silent with the pen down: the signature is discarded
    (``DeviceGoneError``: the customer signs again) and the pad is reopened for the next one.
    """

    source = "serial"

    def __init__(self, port: str, config: object | None = None, *, rediscover_interval: float = 1.0) -> None:
        from firmware_host.serial_pad import PadConfig

        self.port = str(port)
        self.config = config if isinstance(config, PadConfig) else PadConfig()
        self.rediscover_interval = rediscover_interval
        self.pad: object | None = None   # firmware_host.serial_pad.SerialPad when open

    @property
    def digitizer(self) -> object | None:
        """The open pad (the evdev service's attribute of the same meaning)."""
        return self.pad

    def present(self) -> bool:
        return self.pad is not None or Path(self.port).exists()

    def describe(self) -> str:
        return f"serial pad on {self.port}"

    def _open(self) -> object:
        from firmware_host.serial_pad import SerialPad

        pad = SerialPad.open(self.port, self.config)
        try:
            hello = pad.handshake()
        except (PadError, DeviceGoneError):
            pad.close()
            raise
        log.info("signature pad ready: %s on %s", hello.name, self.port)
        return pad

    def wait_for_device(self, timeout: float | None = None, cancel: threading.Event | None = None) -> object:
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            if self.pad is not None:
                return self.pad
            try:
                self.pad = self._open()
                return self.pad
            except (DeviceGoneError, PadError) as exc:   # no port yet, or no HELLO: not plugged (yet)
                if not announced:
                    log.warning("waiting for the signature pad: %s", exc)
                    announced = True
            if cancel is not None and cancel.is_set():
                raise NoSignatureError("cancelled while waiting for the signature pad")
            if deadline is not None and time.monotonic() >= deadline:
                raise NoPenDeviceError(f"no signature pad on {self.port} within {timeout:.1f} s")
            time.sleep(self.rediscover_interval)

    def capture_one(self, *, done: threading.Event | None = None, cancel: threading.Event | None = None,
                    on_item: Callable[[StreamItem], None] | None = None,
                    watch_frames: Callable[[DeviceCaps], Callable[[PenFrame], None]] | None = None,
                    device_timeout: float | None = None, start_timeout: float | None = None) -> CapturedSignature:
        from firmware_host.serial_pad import SerialPad

        pad = self.wait_for_device(device_timeout, cancel)
        assert isinstance(pad, SerialPad) and pad.hello is not None
        on_frame = watch_frames(caps_for_hello(pad.hello, self.port)) if watch_frames is not None else None
        try:
            return pad.capture(done=done, cancel=cancel, start_timeout=start_timeout, on_frame=on_frame)
        except (DeviceGoneError, PadError) as exc:
            # Whatever broke (cable, restart, silence), this signature is lost and the pad is
            # reopened from scratch for the next one: the same contract as an unplugged tablet.
            self.close()
            if isinstance(exc, DeviceGoneError):
                raise
            raise DeviceGoneError(f"{self.port}: {exc}") from None

    def close(self) -> None:
        from firmware_host.serial_pad import SerialPad

        pad, self.pad = self.pad, None
        if isinstance(pad, SerialPad):
            pad.close()


# -- replay --------------------------------------------------------------------------------------

def recording_files(where: Path) -> list[Path]:
    """The recordings a replay source plays: ``where`` itself, or the recordings in the folder
    ``where``, in name order. ``RecordingFormatError`` when there are none."""
    where = Path(where)
    if where.is_file():
        return [where]
    if where.is_dir():
        files = sorted(p for p in where.iterdir() if p.is_file() and p.name.endswith(RECORDING_SUFFIXES))
        if files:
            return files
        raise RecordingFormatError(where, None, f"no recordings ({' or '.join(RECORDING_SUFFIXES)}) in this "
                                   "folder; make some with `sigkiosk capture synth` or `sigkiosk capture record`")
    raise RecordingFormatError(where, None, "no such file or folder")


def recorded_signatures(files: Sequence[Path], config: SegmenterConfig | None = None) -> Iterator[Trajectory]:
    """Every signature of ``files``, in order, over and over (a replay kiosk never runs dry). A file
    that does not parse is skipped with a warning, like one without a signature; a whole pass
    without any signature ends with ``RecordingFormatError`` (before, the first cycled for ever at
    full CPU holding the pen's lock, and the second ended the generator, every later capture
    then an internal StopIteration; found by a review)."""
    from firmware_host.recording import replay

    while True:
        found = 0
        for path in files:
            try:
                _, sigs, _ = replay(path, config)
            except RecordingFormatError as exc:
                log.warning("replay: %s skipped: %s", path.name, exc.reason)
                continue
            if not sigs:
                log.warning("replay: %s holds no signature; skipped", path.name)
                continue
            for sig in sigs:
                found += 1
                log.info("replay: next signature from %s", path.name)
                yield sig.trajectory
        if not found:
            raise RecordingFormatError(files[0].parent if len(files) > 1 else files[0], None,
                                       "no signature in any of the recordings")


def replay_service(recordings: Path, config: SegmenterConfig | None = None, *, speed: float = 1.0,
                   rediscover_interval: float = 0.2) -> DigitizerService:
    """``PenService`` playing ``recordings`` (a file or a folder): each time the kiosk asks for a
    signature, the next one is written on ``ReplayPen``'s simulated tablet at ``speed`` x real time."""
    from firmware_host.recording import iter_recording
    from firmware_host.replay_pen import ReplayPen

    files = recording_files(recordings)
    for f in files:   # fail at start, not at the first customer, on a file that is not a recording
        _, items = iter_recording(f)
        gen = cast(Generator[StreamItem, None, None], items)   # iter_recording's items are a generator
        next(gen, None)   # the header and the first item parse...
        gen.close()       # ...and the file is closed again
    signatures = recorded_signatures(files, config)

    def feed() -> Trajectory:
        try:
            return next(signatures)
        except StopIteration:   # ended by the error above: each later capture says so again
            raise RecordingFormatError(files[0], None, "no signature in any of the recordings") from None

    pen = ReplayPen(speed=speed, feed=feed)
    svc = pen.service(config, rediscover_interval=rediscover_interval)
    svc.source = "replay"
    svc.label = f"replay of {len(files)} recording(s) in {recordings}"
    return svc


__all__ = ["PenService", "SerialPadService", "SOURCES", "caps_for_hello", "recording_files",
           "recorded_signatures", "replay_service", "DevicePermissionError"]
