"""Reading one signature image file: the shared step of the offline readers.

The bytes are decoded by the kiosk's own :func:`models.signature_finder.decode_picture`: a file
cut short (PNG without its end chunk, JPEG without its end marker), an empty file or a picture
larger than any scan we expect is refused before OpenCV hands back a half-white signature, and the
evaluator reads a file exactly as the kiosk reads a scan.
"""

from __future__ import annotations

from pathlib import Path

from models.image import SignatureImage, SignatureImageError
from models.image_preprocess import to_grey
from models.signature_finder import UnreadablePictureError, decode_picture
from tools.datasets.types import MalformedFileError


def read_signature_image(path: Path) -> SignatureImage:
    """Decode ``path`` to an 8-bit grey :class:`SignatureImage`; ``MalformedFileError`` if it cannot."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MalformedFileError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        pixels = to_grey(decode_picture(data, path.name))
    except UnreadablePictureError as exc:
        raise MalformedFileError(path, None, str(exc).removeprefix(f"{path.name}: ")) from None
    try:
        return SignatureImage(pixels, source=str(path))
    except SignatureImageError as exc:
        raise MalformedFileError(path, None, f"unusable image: {exc}") from None
