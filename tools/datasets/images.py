"""Reading one signature image file: the shared step of the offline readers.

Images are decoded from bytes with ``cv2.imdecode`` (a path with non-ASCII characters still works,
and we get to look at the bytes first). OpenCV's PNG decoder can hand back a partial picture for a
file cut short, so a PNG must also end with its ``IEND`` chunk: a truncated scan is an error, not a
half-white signature.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.image import SignatureImage, SignatureImageError
from tools.datasets.types import MalformedFileError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def read_signature_image(path: Path) -> SignatureImage:
    """Decode ``path`` to an 8-bit grey :class:`SignatureImage`; ``MalformedFileError`` if it cannot."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MalformedFileError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise MalformedFileError(path, None, "empty file")
    if data.startswith(_PNG_MAGIC) and not data.rstrip(b"\0").endswith(_PNG_END):
        raise MalformedFileError(path, None, "truncated PNG (no IEND chunk at the end)")
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise MalformedFileError(path, None, "not a readable image")
    try:
        return SignatureImage(pixels, source=str(path))
    except SignatureImageError as exc:
        raise MalformedFileError(path, None, f"unusable image: {exc}") from None
