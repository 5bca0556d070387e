"""Recordings of raw evdev streams: the documented file format, a writer, a reader, a replayer.

Format ``sigkiosk-evrec`` version 1 (full description in ``firmware_host/PROTOCOLS.md``): UTF-8
JSON Lines, gzip-compressed when the name ends in ``.gz``.

* line 1, the header: ``{"format": "sigkiosk-evrec", "version": 1, "device": {...},
  "clock": "monotonic", "source": "...", "recorded_at": "<ISO 8601 UTC>"}``;
* then one item per line, in the order the reader saw them:
  ``[sec, usec, type, code, value]`` an input event exactly as ``struct input_event`` carried it;
  ``{"state": {"abs": {"ABS_X": v, ...}, "keys": ["BTN_TOUCH", ...], "time": t}}`` the device
  state the live reader read by ioctl (at capture start and after each SYN_DROPPED);
  ``{"done": t}`` the operator's explicit "done".

Replaying a recording feeds the same ``CaptureAssembler`` as the live device. Recordings hold raw
pen coordinates, which are biometric data: they are written with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from evdev import InputEvent

from firmware_host.assembler import AssemblerStats, CapturedSignature, SegmenterConfig, assemble
from firmware_host.errors import CaptureError, RecordingFormatError
from firmware_host.events import DeviceCaps, DeviceState, DoneMarker, StreamItem

log = logging.getLogger(__name__)

FORMAT_NAME = "sigkiosk-evrec"
FORMAT_VERSION = 1
_INT32 = (-(2**31), 2**31 - 1)


@dataclass
class RecordingHeader:
    device: DeviceCaps
    clock: str = "monotonic"
    source: str = ""
    recorded_at: str = ""
    version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "device": self.device.to_json(),
            "clock": self.clock,
            "source": self.source,
            "recorded_at": self.recorded_at,
        }
        out.update(self.extra)
        return out


def _open_text(path: Path, mode: str, gz: bool | None = None) -> IO[str]:
    if gz if gz is not None else path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(path, mode + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def item_to_json(item: StreamItem) -> str:
    if isinstance(item, InputEvent):
        return f"[{item.sec},{item.usec},{item.type},{item.code},{item.value}]"
    if isinstance(item, DeviceState):
        return json.dumps({"state": item.to_json()}, separators=(",", ":"))
    if isinstance(item, DoneMarker):
        return json.dumps({"done": item.time})
    raise CaptureError(f"cannot record a {type(item).__name__}")


def item_from_json(obj: Any) -> StreamItem:
    """Parse one item line (already JSON-decoded). Raises CaptureError saying what is wrong."""
    if isinstance(obj, list):
        if len(obj) != 5 or not all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
            raise CaptureError("an event must be [sec, usec, type, code, value] of integers")
        sec, usec, etype, code, value = obj
        if not 0 <= usec < 1_000_000:
            raise CaptureError(f"usec out of range: {usec}")
        if not (0 <= etype <= 0xFFFF and 0 <= code <= 0xFFFF):
            raise CaptureError(f"type/code out of 16-bit range: {etype}/{code}")
        if not _INT32[0] <= value <= _INT32[1]:
            raise CaptureError(f"value out of 32-bit range: {value}")
        if not _INT32[0] <= sec <= 2**63 - 1:
            raise CaptureError(f"sec out of range: {sec}")
        return InputEvent(sec, usec, etype, code, value)
    if isinstance(obj, dict) and len(obj) == 1:
        if "state" in obj:
            return DeviceState.from_json(obj["state"])
        if "done" in obj:
            t = obj["done"]
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                raise CaptureError("done time must be a number")
            return DoneMarker(float(t))
    raise CaptureError("not an event, state or done item")


class RecordingWriter:
    """Writes a recording atomically: to a hidden temporary file, renamed on a clean close.

    A capture that fails half-way (device unplugged) leaves no half-written file behind unless
    the caller asks to keep it (``close(keep=True)``).
    """

    def __init__(self, path: Path, caps: DeviceCaps, *, source: str = "", clock: str = "monotonic",
                 extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        # 0600 from the start: the file holds biometric data.
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self._fh = _open_text(self._tmp, "w", gz=self.path.suffix == ".gz")
        self.items = 0
        header = RecordingHeader(
            device=caps,
            clock=clock,
            source=source,
            recorded_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            extra=dict(extra or {}),
        )
        self._fh.write(json.dumps(header.to_json(), separators=(",", ":")) + "\n")

    def write(self, item: StreamItem) -> None:
        self._fh.write(item_to_json(item) + "\n")
        self.items += 1

    def write_all(self, items: Iterable[StreamItem]) -> None:
        for item in items:
            self.write(item)

    def close(self, keep: bool = True) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(keep=exc_type is None)


def write_recording(path: Path, caps: DeviceCaps, items: Iterable[StreamItem], *, source: str = "",
                    clock: str = "monotonic") -> int:
    with RecordingWriter(path, caps, source=source, clock=clock) as w:
        w.write_all(items)
        return w.items


def read_header(fh: IO[str], path: Path) -> RecordingHeader:
    first = fh.readline()
    if not first:
        raise RecordingFormatError(path, 1, "empty file: no header line")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError as exc:
        raise RecordingFormatError(path, 1, f"header is not JSON: {exc.msg}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise RecordingFormatError(path, 1, f"not a {FORMAT_NAME} file (format field missing or wrong)")
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise RecordingFormatError(path, 1, f"unsupported version {version!r} (this reader knows {FORMAT_VERSION})")
    try:
        caps = DeviceCaps.from_json(obj.get("device"))
    except CaptureError as exc:
        raise RecordingFormatError(path, 1, str(exc)) from None
    known = {"format", "version", "device", "clock", "source", "recorded_at"}
    return RecordingHeader(
        device=caps,
        clock=str(obj.get("clock", "monotonic")),
        source=str(obj.get("source", "")),
        recorded_at=str(obj.get("recorded_at", "")),
        version=version,
        extra={k: v for k, v in obj.items() if k not in known},
    )


def iter_recording(path: Path) -> tuple[RecordingHeader, Iterator[StreamItem]]:
    """The header, and a lazy iterator over the items (errors name the line)."""
    path = Path(path)
    try:
        fh = _open_text(path, "r")
        header = read_header(fh, path)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordingFormatError(path, None, f"cannot read: {exc}") from None

    def items() -> Iterator[StreamItem]:
        lineno = 1
        try:
            for line in fh:
                lineno += 1
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordingFormatError(path, lineno, f"not JSON: {exc.msg}") from None
                try:
                    yield item_from_json(obj)
                except CaptureError as exc:
                    raise RecordingFormatError(path, lineno, str(exc)) from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordingFormatError(path, lineno, f"cannot read: {exc}") from None
        finally:
            fh.close()

    return header, items()


def read_recording(path: Path) -> tuple[RecordingHeader, list[StreamItem]]:
    header, items = iter_recording(path)
    return header, list(items)


def replay(path: Path, config: SegmenterConfig | None = None) -> tuple[RecordingHeader, list[CapturedSignature], AssemblerStats]:
    """Every signature in a recording, through the same assembler as the live device."""
    header, items = iter_recording(path)
    sigs, stats = assemble(header.device, items, config)
    log.info("replayed %s: %d signature(s), %d events, %d SYN_DROPPED",
             Path(path).name, len(sigs), stats.events, stats.syn_dropped)
    return header, sigs, stats
