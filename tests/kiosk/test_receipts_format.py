"""The receipt message format (kiosk.receipts): exact round trip, anything else refused whole."""

from __future__ import annotations

import pytest

from kiosk import receipts
from kiosk.receipts import MAX_PER_MESSAGE, Receipt, ReceiptError


def test_round_trip_and_chunking() -> None:
    items = [Receipt(2**51 + i, i.to_bytes(16, "big")) for i in range(MAX_PER_MESSAGE + 3)]
    messages = receipts.encode(items)
    assert len(messages) == 2 and receipts.encode([]) == []
    assert [r for m in messages for r in receipts.decode(m)] == items


@pytest.mark.parametrize("data", [
    b"", b"SR", b"SR\x01\x00\x00",                                  # too short; no entries
    b"XX\x01\x00\x01" + bytes(24),                                  # bad magic
    b"SR\x02\x00\x01" + bytes(24),                                  # unknown version
    b"SR\x01\x00\x01" + bytes(23), b"SR\x01\x00\x01" + bytes(25),   # truncated; a trailing byte
    b"SR\x01\x04\x01" + bytes(24 * 1025),                           # more entries than allowed
    b"SR\x01\x00\x01" + (2**63).to_bytes(8, "big") + bytes(16),    # a sequence no store holds (a review:
])                                                                 # it left the outbox's transaction open)
def test_anything_but_the_format_is_refused(data: bytes) -> None:
    with pytest.raises(ReceiptError):
        receipts.decode(data)


def test_a_receipt_is_checked_when_made() -> None:
    with pytest.raises(ReceiptError):
        Receipt(-1, bytes(16))
    with pytest.raises(ReceiptError):
        Receipt(1, bytes(15))
