"""What is kept of a customer's paper reference (the template store's form; numpy only).

A reference picture is kept as the prepared 128×128 ink image and its hand-made features, not as
the photo: that is all the paper verifier needs, and enough to embed it again with a new CNN-LSTM.
This module is light (no OpenCV, no runtime) so that the template store can read and write it on a
kiosk without ``[paper]``; the verifier that makes and reads these is ``models.paper``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

ReferenceKind = Literal["paper", "pad-ink"]
#: References that were pictures of paper signatures (scans, photos).
PAPER: Final = "paper"
#: References that were pad trajectories, drawn as ink (``models.render``).
PAD_INK: Final = "pad-ink"
#: What ``prepare`` and ``hand_features`` produce, as stored in a :class:`PaperReference`. Bump it
#: when either changes its output (tests/models/test_paper_references.py pins both on a Dutch
#: scan): stored references of another version are refused and the customer enrolled again.
#: "3" (2026-11-29): ``models.signature_finder`` flattens the light with a closing wider than the
#: picture's thickest strokes (it hollowed thick strokes) and no longer takes a signature's own
#: loops for a signature box, so a kept reference of a scan is what ``prepare`` makes of it.
PREPARATION_VERSION = "3"


@dataclass(frozen=True, eq=False)
class PaperReference:
    """One reference picture as it is kept: the prepared ink image (uint8, 255 = ink: the int8
    model's input step is 1/255, so the model sees what it would from ``prepare``'s floats) and
    the hand-made features of the picture. Enough to embed it with any CNN-LSTM that reads
    ``prepare``'s output; ``version`` is :data:`PREPARATION_VERSION` when it was made."""

    prepared: np.ndarray
    hand: np.ndarray
    version: str = PREPARATION_VERSION

    def __post_init__(self) -> None:
        prepared = np.asarray(self.prepared)
        hand = np.asarray(self.hand, dtype=np.float64)
        if prepared.dtype != np.uint8 or prepared.ndim != 2 or prepared.shape[0] != prepared.shape[1]:
            raise ValueError(f"a paper reference's prepared image is square uint8, got {prepared.dtype} {prepared.shape}")
        if hand.ndim != 1 or not np.all(np.isfinite(hand)):
            raise ValueError("a paper reference's hand features are one finite vector")
        object.__setattr__(self, "prepared", prepared)
        object.__setattr__(self, "hand", hand)


