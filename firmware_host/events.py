"""What a pen digitizer is and says: capabilities, state snapshots, and the items of a stream.

A stream, live or recorded or generated, is a sequence of ``StreamItem``: real
``evdev.InputEvent`` objects as the kernel delivers them, plus two out-of-band items the kernel
protocol needs around them: a ``DeviceState`` (what the live reader read with EVIOCGABS /
EVIOCGKEY after a SYN_DROPPED, so a replay resynchronises exactly as the live run did) and a
``DoneMarker`` (the operator pressed "done"). Keeping these in the stream is what lets the
live reader, the replayer and the tests drive one and the same assembler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from evdev import InputEvent, ecodes

from firmware_host.errors import CaptureError

#: Tool keys that mean "a pen-like tool is in proximity". The eraser end counts: a customer who
#: signs with it still signs.
TOOL_KEYS: frozenset[int] = frozenset(
    (
        ecodes.BTN_TOOL_PEN,
        ecodes.BTN_TOOL_RUBBER,
        ecodes.BTN_TOOL_BRUSH,
        ecodes.BTN_TOOL_PENCIL,
        ecodes.BTN_TOOL_AIRBRUSH,
    )
)
#: Keys whose presence marks a pen device (the issue's capability test).
PEN_KEYS: frozenset[int] = frozenset((ecodes.BTN_TOOL_PEN, ecodes.BTN_TOUCH, ecodes.BTN_STYLUS))


@dataclass(frozen=True)
class AxisInfo:
    """One absolute axis, as ``struct input_absinfo`` describes it.

    ``resolution`` is units per millimetre for ABS_X/ABS_Y (0 when the driver does not say);
    ``value`` is the axis's value when the capabilities were read.
    """

    min: int
    max: int
    resolution: int = 0
    fuzz: int = 0
    flat: int = 0
    value: int = 0

    def __post_init__(self) -> None:
        if self.max < self.min:
            raise CaptureError(f"axis range inverted: min {self.min} > max {self.max}")
        if self.resolution < 0:
            raise CaptureError(f"axis resolution must be >= 0, got {self.resolution}")


#: For codes with several kernel names, the one a reader of a recording expects.
_PREFERRED_NAMES = frozenset(("BTN_TOOL_PEN", "BTN_LEFT", "BTN_0", "BTN_TRIGGER", "BTN_SOUTH"))


def code_name(etype: int, code: int) -> str:
    """Kernel name of an event code (``ABS_X``, ``BTN_TOUCH``), or the number when unknown."""
    table = ecodes.bytype.get(etype, {})
    name = table.get(code)
    if name is None:
        return str(code)
    if isinstance(name, (list, tuple)):  # aliases, e.g. BTN_DIGI/BTN_TOOL_PEN
        preferred = [n for n in name if n in _PREFERRED_NAMES]
        name = preferred[0] if preferred else name[0]
    return str(name)


def code_from_name(name: str | int) -> int:
    """Inverse of :func:`code_name`: accepts a kernel name or a number (as str or int)."""
    if isinstance(name, int):
        return name
    if name.isdigit():
        return int(name)
    try:
        return int(ecodes.ecodes[name])
    except KeyError:
        raise CaptureError(f"unknown event code name {name!r}") from None


@dataclass(frozen=True)
class DeviceCaps:
    """Identity and capabilities of an input device: enough to assemble and to choose it."""

    name: str
    abs: dict[int, AxisInfo] = field(default_factory=dict)
    keys: frozenset[int] = frozenset()
    msc: frozenset[int] = frozenset()
    props: frozenset[int] = frozenset()
    vendor: int = 0
    product: int = 0
    version: int = 0
    bustype: int = 0
    phys: str = ""
    uniq: str = ""
    path: str = ""

    # --- what the assembler needs -------------------------------------------------------
    @property
    def has_pressure(self) -> bool:
        p = self.abs.get(ecodes.ABS_PRESSURE)
        return p is not None and p.max > p.min

    @property
    def has_touch_key(self) -> bool:
        return ecodes.BTN_TOUCH in self.keys

    @property
    def tool_keys(self) -> frozenset[int]:
        return self.keys & TOOL_KEYS

    @property
    def resolution_mm(self) -> tuple[int, int] | None:
        """(x, y) units per mm when both axes report a resolution, else None."""
        x, y = self.abs.get(ecodes.ABS_X), self.abs.get(ecodes.ABS_Y)
        if x is None or y is None or x.resolution <= 0 or y.resolution <= 0:
            return None
        return (x.resolution, y.resolution)

    # --- choosing a device --------------------------------------------------------------
    def pen_score(self) -> int:
        """How pen-like this device is: 0 = not a pen; higher is a better candidate.

        A pen needs absolute X and Y and at least one of BTN_TOOL_PEN / BTN_TOUCH / BTN_STYLUS.
        A touchpad (INPUT_PROP_POINTER, finger tool, no pen tool) also has BTN_TOUCH and ABS_X/Y;
        it scores 0 so that a laptop's touchpad is never mistaken for the signature tablet.
        """
        if ecodes.ABS_X not in self.abs or ecodes.ABS_Y not in self.abs:
            return 0
        if not (self.keys & PEN_KEYS):
            return 0
        has_pen_tool = ecodes.BTN_TOOL_PEN in self.keys
        if not has_pen_tool and ecodes.INPUT_PROP_POINTER in self.props:
            return 0
        score = 1
        if has_pen_tool:
            score += 4
        if ecodes.BTN_STYLUS in self.keys:
            score += 1
        if self.has_pressure:
            score += 2
        if self.resolution_mm is not None:
            score += 1
        return score

    def describe(self) -> list[str]:
        """Human-readable capability lines (for ``sigkiosk capture list``)."""
        lines = [
            f"name: {self.name!r}  vendor {self.vendor:04x} product {self.product:04x}"
            f"  phys {self.phys!r}" + (f"  path {self.path}" if self.path else "")
        ]
        for code in sorted(self.abs):
            a = self.abs[code]
            res = f"{a.resolution}/mm" if a.resolution else "no resolution"
            lines.append(f"  {code_name(ecodes.EV_ABS, code)}: {a.min}..{a.max} {res} fuzz {a.fuzz}")
        keys = ", ".join(code_name(ecodes.EV_KEY, k) for k in sorted(self.keys))
        lines.append(f"  keys: {keys or '(none)'}")
        if self.props:
            props = ", ".join(str(ecodes.INPUT_PROP.get(p, p)) for p in sorted(self.props))
            lines.append(f"  props: {props}")
        score = self.pen_score()
        lines.append(
            f"  pen: {'yes' if score else 'no'} (score {score}); pressure: "
            f"{'yes' if self.has_pressure else 'no'}; resolution: "
            f"{'yes' if self.resolution_mm else 'no'}"
        )
        return lines

    # --- serialisation (recordings) -----------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "product": self.product,
            "version": self.version,
            "bustype": self.bustype,
            "phys": self.phys,
            "uniq": self.uniq,
            "abs": {
                code_name(ecodes.EV_ABS, c): {
                    "min": a.min,
                    "max": a.max,
                    "resolution": a.resolution,
                    "fuzz": a.fuzz,
                    "flat": a.flat,
                    "value": a.value,
                }
                for c, a in sorted(self.abs.items())
            },
            "keys": [code_name(ecodes.EV_KEY, k) for k in sorted(self.keys)],
            "msc": [code_name(ecodes.EV_MSC, m) for m in sorted(self.msc)],
            "props": [str(ecodes.INPUT_PROP.get(p, p)) for p in sorted(self.props)],
        }

    @classmethod
    def from_json(cls, obj: Any) -> "DeviceCaps":
        """Parse :meth:`to_json` output; raises ``CaptureError`` naming the bad field."""
        if not isinstance(obj, dict):
            raise CaptureError("device capabilities must be a JSON object")
        try:
            abs_ = {
                code_from_name(k): AxisInfo(
                    min=int(v["min"]),
                    max=int(v["max"]),
                    resolution=int(v.get("resolution", 0)),
                    fuzz=int(v.get("fuzz", 0)),
                    flat=int(v.get("flat", 0)),
                    value=int(v.get("value", 0)),
                )
                for k, v in dict(obj.get("abs", {})).items()
            }
            return cls(
                name=str(obj.get("name", "unknown")),
                abs=abs_,
                keys=frozenset(code_from_name(k) for k in obj.get("keys", [])),
                msc=frozenset(code_from_name(k) for k in obj.get("msc", [])),
                props=frozenset(code_from_name(k) for k in obj.get("props", [])),
                vendor=int(obj.get("vendor", 0)),
                product=int(obj.get("product", 0)),
                version=int(obj.get("version", 0)),
                bustype=int(obj.get("bustype", 0)),
                phys=str(obj.get("phys", "")),
                uniq=str(obj.get("uniq", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CaptureError(f"bad device capabilities: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class DeviceState:
    """Current axis values and pressed keys, read from the device (EVIOCGABS, EVIOCGKEY).

    ``time`` is when it was read, in the event clock; None when unknown.
    """

    abs: dict[int, int]
    keys: frozenset[int]
    time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "abs": {code_name(ecodes.EV_ABS, c): v for c, v in sorted(self.abs.items())},
            "keys": [code_name(ecodes.EV_KEY, k) for k in sorted(self.keys)],
            "time": self.time,
        }

    @classmethod
    def from_json(cls, obj: Any) -> "DeviceState":
        if not isinstance(obj, dict):
            raise CaptureError("device state must be a JSON object")
        try:
            t = obj.get("time")
            return cls(
                abs={code_from_name(k): int(v) for k, v in dict(obj.get("abs", {})).items()},
                keys=frozenset(code_from_name(k) for k in obj.get("keys", [])),
                time=None if t is None else float(t),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise CaptureError(f"bad device state: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class DoneMarker:
    """The operator (kiosk button, CLI Enter, pad OK button) declared the signature finished."""

    time: float


StreamItem = Union[InputEvent, DeviceState, DoneMarker]


def event_time(ev: InputEvent) -> float:
    """The kernel's timestamp of an event, in seconds."""
    return ev.sec + ev.usec * 1e-6
