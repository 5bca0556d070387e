"""ISO/IEC 19794-7:2007 signature/sign time series data, full format: the record a document
examiner's tools read (the format Wacom's SDK exports).

Edition: the first, ISO/IEC 19794-7:2007, whose record starts "SDI" NUL, " 10" NUL. Its layout,
from the standard's ASN.1 module with its PER encoding instructions (published in ITU-T X.695
and in GOST R ISO/IEC 19794-7-2009, the identical national adoption), all integers big-endian:

====================  =====  ==============================================================
field                 bytes  content
====================  =====  ==============================================================
format identifier     4      ``SDI`` then 0x00
version               4      `` 10`` (space, one, zero) then 0x00
channel inclusions    2      one bit per channel, most significant first: x y z vX vY aX aY
                             t dT f s tX tY az el r (x and y always present)
channel descriptions  var.   per included channel, in that order: a preamble byte (0x80
                             scaling value present, 0x40 min, 0x20 max, 0x10 mean, 0x08
                             standard deviation, 0x04 channel constant, 0x02 linear component
                             removed), then what it announces: scaling value (2), min (2),
                             max (2), mean (2), std (2)
body optionality      1      0x80 when extended data follows the sample points, else 0
sample point count    3      number of sample points
sample points         var.   per point, per included channel: signed 16-bit for x y vX vY aX
                             aY tX tY, unsigned 16-bit for z t dT f az el r, unsigned 8-bit
                             for s
====================  =====  ==============================================================

A scaling value is 5 bits of exponent E (stored as E + 16, a PER constrained integer counted
from its lower bound -16) and 11 bits of fraction F: 2^E x (1 + F / 2048) units per physical
unit (per mm for x and y, per second for t). The 2007 edition has no record length and no
representation count: those came with the 2014 edition (version "020"), whose layout we could
not verify, so it is not written.

We write x and y (per mm when the device's resolution is known; otherwise device units without
a scaling value, divided by the smallest integer that fits 16 bits), t (the measured times from
the first sample, per second), f (the pen's raw pressure levels, min 0 and max its range, when
the device reports pressure) and s (1 while the pen touches, 0 in the air).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from models.trajectory import Trajectory
from tools.central.errors import CentralError

FORMAT_ID = b"SDI\x00"
VERSION_2007 = b" 10\x00"
CHANNELS = ("x", "y", "z", "vx", "vy", "ax", "ay", "t", "dt", "f", "s", "tx", "ty", "az", "el", "r")
SIGNED = frozenset({"x", "y", "vx", "vy", "ax", "ay", "tx", "ty"})
#: Preamble bits of a channel description.
HAS_SCALING, HAS_MIN, HAS_MAX, HAS_MEAN, HAS_STD, IS_CONSTANT, LINEAR_REMOVED = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02
EXTENDED_DATA = 0x80
MAX_POINTS = (1 << 24) - 1
#: Resolution aimed at when the device gives positions in mm already: 0.01 mm.
MM_UNITS = 100.0
#: Time resolution aimed at: 1 ms.
TIME_UNITS = 1000.0


class IsoExportError(CentralError, ValueError):
    """The samples cannot be written as a 19794-7 record (too many, no positions...)."""


def encode_scaling(value: float) -> tuple[int, float]:
    """The largest scaling value 2^E (1 + F/2048) not above ``value``: (its 16-bit word, its value)."""
    if not (math.isfinite(value) and value > 0):
        raise IsoExportError(f"a scaling value must be positive, got {value!r}")
    e = min(15, max(-16, math.floor(math.log2(value))))
    f = min(2047, max(0, math.floor((value / 2.0**e - 1.0) * 2048)))
    if 2.0**e * (1 + f / 2048) > value and f > 0:   # float rounding at a power of two
        f -= 1
    return ((e + 16) << 11) | f, decode_scaling(((e + 16) << 11) | f)


def decode_scaling(word: int) -> float:
    return 2.0 ** ((word >> 11) - 16) * (1 + (word & 0x7FF) / 2048)


@dataclass(frozen=True)
class Channel:
    """One included channel: its description and its column of sample values."""

    name: str
    values: np.ndarray
    scaling: float | None = None     # exact (representable) scaling value, units per physical unit
    minimum: int | None = None
    maximum: int | None = None
    divisor: float = 1.0             # device units per sample unit, when there is no scaling value


@dataclass(frozen=True)
class IsoRecord:
    data: bytes
    channels: tuple[Channel, ...]

    def summary(self) -> dict[str, object]:
        """What the record holds, for the case's verification file (no sample values)."""
        return {"standard": "ISO/IEC 19794-7:2007 full format", "version": VERSION_2007.decode("ascii").strip("\x00"),
                "bytes": len(self.data), "points": int(len(self.channels[0].values)),
                "channels": {c.name: {"scaling": c.scaling, "min": c.minimum, "max": c.maximum,
                                      **({"divisor": c.divisor} if c.divisor != 1.0 else {})} for c in self.channels}}


def _fit(values: np.ndarray, wanted: float, limit: int) -> tuple[int, float]:
    """Scaling (word, value) at most ``wanted`` so that every |value x scaling| fits ``limit``."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    cap = wanted if peak == 0 else min(wanted, (limit - 0.5) / peak)
    return encode_scaling(cap)


def channels_of(traj: Trajectory) -> tuple[Channel, ...]:
    """The channels we write for a trajectory, quantised (see the module docstring)."""
    n = len(traj)
    if n > MAX_POINTS:
        raise IsoExportError(f"{n} sample points exceed the format's {MAX_POINTS}")
    chans: list[Channel] = []
    xy = traj.xy_mm()
    if xy is not None:
        wanted = traj.device.resolution if traj.device.units == "device" and traj.device.resolution else MM_UNITS
        for i, name in enumerate(("x", "y")):
            word, scale = _fit(xy[:, i], wanted, 32767)
            chans.append(Channel(name, np.rint(xy[:, i] * scale).astype(np.int64), scaling=scale))
    else:   # no physical unit known: device units, made to fit 16 bits
        for name, col in (("x", traj.x), ("y", traj.y)):
            div = float(max(1, math.ceil(float(np.max(np.abs(col))) / 32767)))
            chans.append(Channel(name, np.rint(col / div).astype(np.int64), divisor=div))
    t = traj.t - traj.t[0]
    _, tscale = _fit(t, TIME_UNITS, 65535)
    chans.append(Channel("t", np.rint(t * tscale).astype(np.int64), scaling=tscale))
    levels = traj.device.pressure_levels
    if levels is not None:
        top = min(levels, 65535)
        chans.append(Channel("f", np.rint(traj.pressure * top).astype(np.int64), minimum=0, maximum=top))
    chans.append(Channel("s", traj.pen_down.astype(np.int64)))
    return tuple(chans)


def encode(channels: tuple[Channel, ...]) -> bytes:
    """The full-format record of these channels (in any order; written in the standard's)."""
    by_name = {c.name: c for c in channels}
    unknown = set(by_name) - set(CHANNELS)
    if unknown or "x" not in by_name or "y" not in by_name:
        raise IsoExportError(f"channels must include x and y and be among {CHANNELS}")
    ordered = [by_name[name] for name in CHANNELS if name in by_name]
    n = len(ordered[0].values)
    if any(len(c.values) != n for c in ordered) or n > MAX_POINTS:
        raise IsoExportError("channels differ in length or have too many points")
    inclusion = 0
    descriptions = bytearray()
    columns = []
    for c in ordered:
        inclusion |= 1 << (15 - CHANNELS.index(c.name))
        signed = c.name in SIGNED
        code = ">h" if signed else ">B" if c.name == "s" else ">H"
        lo, hi = (-32768, 32767) if signed else (0, 255) if c.name == "s" else (0, 65535)
        if c.values.size and (int(c.values.min()) < lo or int(c.values.max()) > hi):
            raise IsoExportError(f"channel {c.name} has values outside {lo}..{hi}")
        preamble = (HAS_SCALING if c.scaling is not None else 0) | (HAS_MIN if c.minimum is not None else 0) \
            | (HAS_MAX if c.maximum is not None else 0)
        descriptions.append(preamble)
        if c.scaling is not None:
            word, exact = encode_scaling(c.scaling)
            if exact != c.scaling:
                raise IsoExportError(f"channel {c.name}: scaling {c.scaling!r} is not representable")
            descriptions += struct.pack(">H", word)
        for bound in (c.minimum, c.maximum):
            if bound is not None:
                descriptions += struct.pack(code[0] + ("h" if signed else "H"), bound)
        columns.append(c.values.astype(">i2" if signed else ">u1" if c.name == "s" else ">u2"))
    points = np.empty(n, dtype=[(f"c{i}", col.dtype) for i, col in enumerate(columns)])
    for i, col in enumerate(columns):
        points[f"c{i}"] = col
    return (FORMAT_ID + VERSION_2007 + struct.pack(">H", inclusion) + bytes(descriptions)
            + bytes([0]) + n.to_bytes(3, "big") + points.tobytes())


def from_trajectory(traj: Trajectory) -> IsoRecord:
    channels = channels_of(traj)
    return IsoRecord(encode(channels), channels)
