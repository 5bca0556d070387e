"""An independent reader of ISO/IEC 19794-7:2007 full-format records, for the tests.

Written from the standard's layout (the ASN.1 module with its PER encoding instructions, as
published in ITU-T X.695 and GOST R ISO/IEC 19794-7-2009), not from the writer in
``tools.central.iso19794_7``: it shares no code with it, so a mistake in one is caught by the other.
It parses byte by byte and refuses anything it does not expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Channel order of the 16-bit inclusion field, most significant bit first (clause 7.3 of the standard).
ORDER = ["x", "y", "z", "vx", "vy", "ax", "ay", "t", "dt", "f", "s", "tx", "ty", "az", "el", "r"]
SIGNED_16 = {"x", "y", "vx", "vy", "ax", "ay", "tx", "ty"}
UNSIGNED_8 = {"s"}


class ReadError(ValueError):
    pass


@dataclass
class ChannelDescription:
    name: str
    preamble: int
    scaling_word: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    mean: int | None = None
    std: int | None = None

    @property
    def scaling(self) -> float | None:
        if self.scaling_word is None:
            return None
        exponent = (self.scaling_word >> 11) - 16      # 5 bits, counted from -16
        fraction = self.scaling_word & 0x07FF          # 11 bits
        return 2.0 ** exponent * (1 + fraction / 2048)


@dataclass
class Record:
    format_id: bytes
    version: bytes
    inclusion: int
    channels: list[ChannelDescription]
    body_flags: int
    count: int
    samples: dict[str, list[int]] = field(default_factory=dict)
    extended: bytes = b""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ReadError(f"record ends at byte {len(self.data)}, needed {self.pos + n}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        b = self.take(2)
        return b[0] << 8 | b[1]

    def s16(self) -> int:
        v = self.u16()
        return v - 65536 if v >= 32768 else v

    def u24(self) -> int:
        b = self.take(3)
        return b[0] << 16 | b[1] << 8 | b[2]


def read(data: bytes) -> Record:
    c = _Cursor(data)
    format_id, version = c.take(4), c.take(4)
    if format_id != b"SDI\x00":
        raise ReadError(f"format identifier {format_id!r}")
    if version != b" 10\x00":
        raise ReadError(f"version {version!r}")
    inclusion = c.u16()
    names = [ORDER[i] for i in range(16) if inclusion & (0x8000 >> i)]
    if names[:2] != ["x", "y"]:
        raise ReadError("x and y must be included")
    descriptions = []
    for name in names:
        d = ChannelDescription(name, c.u8())
        if d.preamble & 0x01:
            raise ReadError(f"reserved preamble bit set for {name}")
        value = c.s16 if name in SIGNED_16 else c.u16
        if d.preamble & 0x80:
            d.scaling_word = c.u16()
        if d.preamble & 0x40:
            d.minimum = value()
        if d.preamble & 0x20:
            d.maximum = value()
        if d.preamble & 0x10:
            d.mean = value()
        if d.preamble & 0x08:
            d.std = c.u16()
        descriptions.append(d)
    flags = c.u8()
    count = c.u24()
    rec = Record(format_id, version, inclusion, descriptions, flags, count, {n: [] for n in names})
    for _ in range(count):
        for name in names:
            rec.samples[name].append(c.u8() if name in UNSIGNED_8 else c.s16() if name in SIGNED_16 else c.u16())
    if flags & 0x80:
        rec.extended = c.take(c.u16())
    if c.pos != len(data):
        raise ReadError(f"{len(data) - c.pos} bytes after the record")
    return rec
