"""The serial signature pad protocol, version 1: framing, checksums, messages. Pure, no I/O.

Specified in ``firmware_host/PROTOCOLS.md``; in short:

* The byte stream is a sequence of COBS-encoded packets, each between two 0x00 delimiters.
  COBS removes every zero from the packet, so a zero always means "packet boundary": after line
  noise, a reset or a host that opened the port mid-packet, the receiver is back in step at the
  next zero, losing only the damaged packet (the leading zero keeps noise *between* packets from
  spoiling the next one).
* A decoded packet is ``type u8 | seq u8 | payload | crc u16``; the CRC is CRC-16/CCITT-FALSE
  (poly 0x1021, init 0xFFFF, no reflection, check value 0x29B1) over type, seq and payload.
  Multi-byte fields are little-endian (what every MCU in question is).
* ``seq`` counts packets modulo 256 per direction, so the host sees packets it lost (a CRC failure
  is also a lost sample) and marks a gap in the trajectory.
* Pad → host: HELLO (capabilities), SAMPLE, BUTTON, ERROR. Host → pad: GET_HELLO.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from firmware_host.errors import PadProtocolError

PROTOCOL_VERSION = 1
#: Longest decoded packet (HELLO with a 32-byte name is 53 bytes + 2 CRC): a run of more
#: encoded bytes without a zero is noise, discarded without buffering it all.
MAX_PACKET = 64
MAX_ENCODED = MAX_PACKET + MAX_PACKET // 254 + 2


class MsgType(enum.IntEnum):
    HELLO = 0x01
    SAMPLE = 0x02
    BUTTON = 0x03
    ERROR = 0x04
    GET_HELLO = 0x81


class Flags(enum.IntFlag):
    TOUCH = 0x01
    IN_RANGE = 0x02
    BARREL = 0x04


class Button(enum.IntEnum):
    OK = 1
    CLEAR = 2
    CANCEL = 3


#: Error codes with this bit set are fatal: the pad cannot go on sampling.
ERROR_FATAL = 0x80

# version, x_max, y_max, res_x, res_y, p_max, tick_hz, rate_hz, session
_HELLO = struct.Struct("<BHHHHHIHH")
_SAMPLE = struct.Struct("<HHHBI")  # x, y, pressure, flags, device_time
_BUTTON = struct.Struct("<BBI")  # button, state, device_time
_ERROR = struct.Struct("<B")  # code, then UTF-8 message
_CRC = struct.Struct("<H")


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: ``crc16_ccitt(b"123456789") == 0x29B1``."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing (Cheshire & Baker 1999); the result has no zero byte."""
    out = bytearray()
    code_pos = 0
    out.append(0)
    code = 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = len(out)
                out.append(0)
                code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises PadProtocolError on an impossible encoding."""
    out = bytearray()
    i, n = 0, len(data)
    if n == 0:
        raise PadProtocolError("empty COBS packet")
    while i < n:
        code = data[i]
        if code == 0:
            raise PadProtocolError(f"zero byte inside a COBS packet at offset {i}")
        end = i + code
        if end > n:
            raise PadProtocolError(f"COBS block at offset {i} runs past the packet end")
        block = data[i + 1:end]
        if 0 in block:
            raise PadProtocolError(f"zero byte inside a COBS packet near offset {i}")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Hello:
    x_max: int
    y_max: int
    res_x: int  # units per mm, 0 = unknown
    res_y: int
    pressure_max: int  # 0 = no pressure sensor
    tick_hz: int  # device-time ticks per second
    rate_hz: int  # nominal sample rate, 0 = unknown
    name: str = "signature pad"
    version: int = PROTOCOL_VERSION
    #: Chosen at random at power-up: the same session in a later HELLO is an answer to
    #: GET_HELLO, a different one is a pad that restarted.
    session: int = 0


@dataclass(frozen=True)
class Sample:
    x: int
    y: int
    pressure: int
    flags: int
    device_time: int

    @property
    def touching(self) -> bool:
        return bool(self.flags & Flags.TOUCH)

    @property
    def in_range(self) -> bool:
        return bool(self.flags & (Flags.IN_RANGE | Flags.TOUCH))


@dataclass(frozen=True)
class ButtonPress:
    button: int
    pressed: bool
    device_time: int


@dataclass(frozen=True)
class PadErrorMsg:
    code: int
    message: str

    @property
    def fatal(self) -> bool:
        return bool(self.code & ERROR_FATAL)


@dataclass(frozen=True)
class GetHello:
    pass


Message = Hello | Sample | ButtonPress | PadErrorMsg | GetHello


@dataclass(frozen=True)
class Packet:
    seq: int
    message: Message


def encode_message(msg: Message, seq: int) -> bytes:
    """The packet bytes on the wire: 0x00 + COBS(type, seq, payload, crc) + 0x00.

    The leading zero costs one byte and ends whatever noise came before, so line noise between
    two packets never takes the next packet with it (the receiver ignores empty packets).
    """
    if isinstance(msg, Hello):
        name = msg.name.encode("utf-8")[:32]
        body = _HELLO.pack(msg.version, msg.x_max, msg.y_max, msg.res_x, msg.res_y,
                           msg.pressure_max, msg.tick_hz, msg.rate_hz, msg.session) + name
        mtype = MsgType.HELLO
    elif isinstance(msg, Sample):
        body = _SAMPLE.pack(msg.x, msg.y, msg.pressure, msg.flags, msg.device_time & 0xFFFFFFFF)
        mtype = MsgType.SAMPLE
    elif isinstance(msg, ButtonPress):
        body = _BUTTON.pack(msg.button, int(msg.pressed), msg.device_time & 0xFFFFFFFF)
        mtype = MsgType.BUTTON
    elif isinstance(msg, PadErrorMsg):
        body = _ERROR.pack(msg.code) + msg.message.encode("utf-8")[:48]
        mtype = MsgType.ERROR
    elif isinstance(msg, GetHello):
        body = b""
        mtype = MsgType.GET_HELLO
    else:
        raise TypeError(f"not a pad message: {type(msg).__name__}")
    raw = bytes((int(mtype), seq & 0xFF)) + body
    return b"\x00" + cobs_encode(raw + _CRC.pack(crc16_ccitt(raw))) + b"\x00"


class DecodeError(enum.Enum):
    COBS = "cobs"
    CRC = "crc"
    LENGTH = "length"
    TYPE = "unknown-type"
    OVERSIZE = "oversize"


def decode_packet(encoded: bytes) -> Packet:
    """One packet (without its delimiter); raises PadProtocolError with ``.kind`` set."""
    try:
        raw = cobs_decode(encoded)
    except PadProtocolError as exc:
        raise _err(DecodeError.COBS, str(exc)) from None
    if len(raw) < 4:
        raise _err(DecodeError.LENGTH, f"packet of {len(raw)} bytes is shorter than its header and CRC")
    body, (crc,) = raw[:-2], _CRC.unpack(raw[-2:])
    calc = crc16_ccitt(body)
    if crc != calc:
        raise _err(DecodeError.CRC, f"CRC mismatch: packet says 0x{crc:04x}, data gives 0x{calc:04x}")
    mtype, seq, payload = body[0], body[1], body[2:]
    try:
        if mtype == MsgType.SAMPLE:
            if len(payload) != _SAMPLE.size:
                raise _err(DecodeError.LENGTH, f"SAMPLE payload {len(payload)} bytes, expected {_SAMPLE.size}")
            return Packet(seq, Sample(*_SAMPLE.unpack(payload)))
        if mtype == MsgType.HELLO:
            if not _HELLO.size <= len(payload) <= _HELLO.size + 32:
                raise _err(DecodeError.LENGTH, f"HELLO payload {len(payload)} bytes")
            v, xm, ym, rx, ry, pm, tick, rate, session = _HELLO.unpack(payload[:_HELLO.size])
            if tick == 0:
                raise _err(DecodeError.LENGTH, "HELLO says 0 device-time ticks per second")
            name = payload[_HELLO.size:].decode("utf-8", errors="replace")
            return Packet(seq, Hello(xm, ym, rx, ry, pm, tick, rate, name, v, session))
        if mtype == MsgType.BUTTON:
            if len(payload) != _BUTTON.size:
                raise _err(DecodeError.LENGTH, f"BUTTON payload {len(payload)} bytes, expected {_BUTTON.size}")
            b, st, dt = _BUTTON.unpack(payload)
            return Packet(seq, ButtonPress(b, bool(st), dt))
        if mtype == MsgType.ERROR:
            if not 1 <= len(payload) <= 49:
                raise _err(DecodeError.LENGTH, f"ERROR payload {len(payload)} bytes")
            return Packet(seq, PadErrorMsg(payload[0], payload[1:].decode("utf-8", errors="replace")))
        if mtype == MsgType.GET_HELLO:
            if payload:
                raise _err(DecodeError.LENGTH, "GET_HELLO carries no payload")
            return Packet(seq, GetHello())
    except struct.error as exc:  # pragma: no cover - lengths are checked above
        raise _err(DecodeError.LENGTH, str(exc)) from None
    raise _err(DecodeError.TYPE, f"unknown packet type 0x{mtype:02x}")


def _err(kind: DecodeError, msg: str) -> PadProtocolError:
    e = PadProtocolError(msg)
    e.kind = kind  # type: ignore[attr-defined]
    return e


@dataclass
class DecoderStats:
    """Link-quality counters (safe to log: no coordinates)."""

    packets: int = 0
    bytes_in: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in DecodeError})
    lost_packets: int = 0  # from sequence-number jumps
    empty_delimiters: int = 0

    @property
    def crc_errors(self) -> int:
        return self.errors[DecodeError.CRC.value]

    @property
    def bad_packets(self) -> int:
        return sum(self.errors.values())


class PacketDecoder:
    """Bytes in (any chunking) → packets out; damaged packets are counted and skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self._last_seq: int | None = None
        self._session: int | None = None
        self.stats = DecoderStats()
        self.last_error: PadProtocolError | None = None

    def reset_sequence(self) -> None:
        self._last_seq = None

    def drop_partial(self) -> None:
        """Forget the bytes of a packet not yet complete (the rest of it, when it comes, fails as a
        damaged packet): what was on its way when a capture ended is nobody's."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[tuple[Packet, int]]:
        """Decode what ``data`` completes: (packet, packets lost just before it)."""
        self.stats.bytes_in += len(data)
        out: list[tuple[Packet, int]] = []
        start = 0
        while True:
            z = data.find(b"\x00", start)
            chunk = data[start:] if z < 0 else data[start:z]
            if not self._overflow:
                if len(self._buf) + len(chunk) > MAX_ENCODED:
                    self._overflow = True
                    self._buf.clear()
                else:
                    self._buf += chunk
            if z < 0:
                return out
            start = z + 1
            if self._overflow:
                self._count(_err(DecodeError.OVERSIZE, f"more than {MAX_ENCODED} bytes without a delimiter"))
                self._overflow = False
                continue
            if not self._buf:
                self.stats.empty_delimiters += 1  # idle fill or a double zero: harmless
                continue
            encoded = bytes(self._buf)
            self._buf.clear()
            try:
                pkt = decode_packet(encoded)
            except PadProtocolError as exc:
                self._count(exc)
                continue
            lost = 0
            if self._last_seq is not None:
                lost = (pkt.seq - self._last_seq - 1) & 0xFF
            self._last_seq = pkt.seq
            self.stats.packets += 1
            if isinstance(pkt.message, Hello):
                # A HELLO of the session we know answers our GET_HELLO within the stream: a jump
                # before it is packets lost like any other. A new (or the first) session is a pad
                # that restarted, its counter from 0: not lost packets; the caller sees it and decides.
                in_session = self._session is not None and pkt.message.session == self._session
                self._session = pkt.message.session
                if not in_session:
                    out.append((pkt, lost))
                    continue
            self.stats.lost_packets += lost
            out.append((pkt, lost))

    def _count(self, exc: PadProtocolError) -> None:
        self.stats.errors[exc.kind.value] += 1  # type: ignore[attr-defined]
        self.last_error = exc


class TimeUnwrapper:
    """Device time (u32 ticks that wrap) → seconds since the first sample, never backwards.

    A forward step is ``(t - last) mod 2**32``. A step of more than half the range is really a
    step backwards (a reset of the pad's clock): it counts as zero and is reported.
    """

    def __init__(self, tick_hz: int, bits: int = 32) -> None:
        self.tick_hz = tick_hz
        self._mod = 1 << bits
        self._last: int | None = None
        self._ticks = 0
        self.wraps = 0
        self.resets = 0

    def __call__(self, t: int) -> float:
        if self._last is None:
            self._last = t
            return 0.0
        step = (t - self._last) % self._mod
        if step > self._mod // 2:
            self.resets += 1
            step = 0
        elif t < self._last:
            self.wraps += 1
        self._last = t
        self._ticks += step
        return self._ticks / self.tick_hz
