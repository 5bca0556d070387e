"""Receipts: a collector tells a kiosk which of its messages are durably stored centrally.

A broker's PUBACK means the broker has the message, in memory: mosquitto writes it to disk only
at its next autosave, so a broker killed before then loses messages the kiosk already deleted. A
kiosk therefore keeps every decision, staff action and evidence record after the PUBACK, marked
sent, until a collector has stored it and says so on the kiosk's ``receipt`` topic
(``KioskTopics.receipt``); a row with no receipt after a while is sent again once a message the
kiosk published after it has been receipted (the collector stores a message once, and answers a
duplicate with its receipt again; it receipts status reports too, which keep no row).

Each entry is the message's sequence number and its receipt token (``kiosk.envelope.receipt``),
which only the sealing kiosk and the central key's holder can compute: a receipt from anyone else
matches nothing, and replaying a real one confirms only what was already stored.

Wire format (all big-endian): magic ``"SR"``, version 1 (1 byte), count (2 bytes), then count
entries of sequence number (8 bytes, below 2**63) and token (``RECEIPT_LEN`` bytes). Anything else is refused
whole: a kiosk never deletes a row on a message it could only partly read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kiosk.envelope import RECEIPT_LEN
from kiosk.errors import ApplianceError

MAGIC = b"SR"
VERSION = 1
#: Entries in one message: 24 KiB at most, far below any broker's packet limit.
MAX_PER_MESSAGE = 1024
_HEAD = struct.Struct(">2sBH")
_ITEM = struct.Struct(f">Q{RECEIPT_LEN}s")


class ReceiptError(ApplianceError, ValueError):
    """A receipt message that does not follow the format."""


@dataclass(frozen=True)
class Receipt:
    seq: int
    token: bytes

    def __post_init__(self) -> None:
        # Signed 64-bit, as every store of sequence numbers (SQLite, PostgreSQL) holds them.
        if not 0 <= self.seq < 2**63:
            raise ReceiptError(f"sequence number {self.seq} out of range")
        if len(self.token) != RECEIPT_LEN:
            raise ReceiptError(f"a receipt token is {RECEIPT_LEN} bytes, not {len(self.token)}")


def encode(receipts: Iterable[Receipt]) -> list[bytes]:
    """The messages that carry ``receipts`` (at most ``MAX_PER_MESSAGE`` each; none for none)."""
    items = list(receipts)
    return [_HEAD.pack(MAGIC, VERSION, len(chunk)) + b"".join(_ITEM.pack(r.seq, r.token) for r in chunk)
            for chunk in (items[i:i + MAX_PER_MESSAGE] for i in range(0, len(items), MAX_PER_MESSAGE))]


def decode(data: bytes) -> Sequence[Receipt]:
    """The receipts of one message; ReceiptError for anything but exactly the format above."""
    if len(data) < _HEAD.size:
        raise ReceiptError(f"a receipt message of {len(data)} bytes is too short")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ReceiptError("not a receipt message (bad magic)")
    if version != VERSION:
        raise ReceiptError(f"receipt format version {version} is not supported")
    if not 0 < count <= MAX_PER_MESSAGE:
        raise ReceiptError(f"a receipt message holds 1 to {MAX_PER_MESSAGE} entries, not {count}")
    if len(data) != _HEAD.size + count * _ITEM.size:
        raise ReceiptError(f"{len(data)} bytes do not hold exactly {count} entries")
    return [Receipt(seq, token) for seq, token in _ITEM.iter_unpack(data[_HEAD.size:])]
