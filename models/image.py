"""The signature image: the one definition of a picture of a signature (scan, photo, rendered ink)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import VerificationError

#: Larger than any camera frame or 600 dpi A4 scan we expect; beyond this an input is refused
#: before it costs memory.
MAX_SIDE = 12_000
MIN_SIDE = 8


class SignatureImageError(VerificationError, ValueError):
    """An image could not be used as a signature image: the message says why."""


@dataclass(frozen=True, eq=False)
class SignatureImage:
    """An 8-bit grey image, dark ink on light paper, with where it came from.

    ``dpi`` is known for scans and rendered ink, ``None`` for camera photos.
    """

    pixels: np.ndarray
    dpi: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim != 2:
            raise SignatureImageError(f"expected a 2-D grey image, got shape {px.shape}")
        if px.dtype != np.uint8:
            raise SignatureImageError(f"expected uint8 pixels, got {px.dtype}")
        h, w = px.shape
        if min(h, w) < MIN_SIDE:
            raise SignatureImageError(f"image too small: {w}x{h} (minimum side {MIN_SIDE})")
        if max(h, w) > MAX_SIDE:
            raise SignatureImageError(f"image too large: {w}x{h} (maximum side {MAX_SIDE})")
        if self.dpi is not None and not (np.isfinite(self.dpi) and self.dpi > 0):
            raise SignatureImageError(f"dpi must be positive, got {self.dpi!r}")
        px = np.ascontiguousarray(px)
        px.setflags(write=False)
        object.__setattr__(self, "pixels", px)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape
