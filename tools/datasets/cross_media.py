"""Cross-media Chinese names (Luo et al., 2023): the same ten names on paper, an iPad and a phone.

Layout (8-bit grey PNG, see the shared data's README):

- ``experiment/WWW/N.png``, writers 1-100: N = 1-10 name N on **paper** (scanned), 11-20 the same
  names on an **iPad** with a stylus, 21-30 and 31-40 on a **phone** (two groups of ten, hand-held
  and lying on a table; which is which is not certain, so both are just "phone"). Writers 94 and
  100 miss one phone image each. The phone pictures of writers 92, 94 and 99 are light ink on a
  dark screen: the reader turns them to dark ink on white like every other picture.
- ``control/WWW/N.png``, writers 1-11: all on paper, N and N + 10 the same name.

Writer ids: experiment writer 7 is ``e007``, control writer 7 is ``c07``; the two groups are
different people numbered from 1 each, and the prefix keeps them apart. Every sample is GENUINE for
its writer, with ``text`` the name written (1-10) and ``medium`` what it was written on: the set has
no forgeries of anyone's own name. An identity is a (writer, name) pair (:func:`identities`); the
same name written by the other writers is a same-text impostor, close to a skilled forgery made
without practice.

Split: :func:`~tools.datasets.types.writer_split` on the id's number like every other set (last
digit 0-6 train, 7 validate, 8-9 test), so both media of a writer stay on one side: experiment
70 / 10 / 20 writers, control 8 / 1 / 2 (c07 validates; c08 and c09 test).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from models.image import SignatureImage
from tools.datasets._common import load_folder
from tools.datasets.images import read_signature_image
from tools.datasets.types import Dataset, ImageSample, Label, MalformedFileError, Medium

log = logging.getLogger(__name__)

FMT = "cross-media"
LAYOUT = "experiment/WWW/N.png (N 1-10 paper, 11-20 iPad, 21-40 phone) and control/WWW/N.png (N 1-20, paper)"
SUFFIXES = (".png", ".jpg", ".jpeg")
NAMES = 10

#: (writer, name): the unit that has genuine samples; the same name by others is its impostor.
Identity = tuple[str, int]

_NUMBER = re.compile(r"[1-9]\d{0,3}")
_GROUPS = {"experiment": ("e", 3, 40), "control": ("c", 2, 20)}


def _medium(group: str, n: int) -> Medium:
    if group == "control" or n <= NAMES:
        return Medium.PAPER
    return Medium.IPAD if n <= 2 * NAMES else Medium.PHONE


def _on_white(image: SignatureImage) -> SignatureImage:
    # 59 phone pictures (writers 92, 94 and 99, numbers 21-40) are light ink on a dark screen
    # (background grey 31): turned to dark ink on white as every other picture of every set is, or
    # no signature is found in them.
    if float(np.median(image.pixels)) >= 128:
        return image
    log.debug("%s: light ink on a dark background, inverted", image.source)
    return SignatureImage(255 - image.pixels, source=image.source)


def _sample(path: Path) -> ImageSample:
    group, folder = path.parent.parent.name, path.parent.name
    if group not in _GROUPS or not _NUMBER.fullmatch(folder) or not _NUMBER.fullmatch(path.stem):
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    prefix, width, last = _GROUPS[group]
    n = int(path.stem)
    if n > last:
        raise MalformedFileError(path, None, f"image number {n} outside 1..{last} for {group}/")
    return ImageSample(
        writer=f"{prefix}{int(folder):0{width}d}",
        label=Label.GENUINE,
        image=_on_white(read_signature_image(path)),
        path=path,
        index=n,
        medium=_medium(group, n),
        text=(n - 1) % NAMES + 1,
    )


def load_cross_media(folder: Path, *, skip_malformed: bool = False) -> Dataset[ImageSample]:
    """Every image under ``folder`` (the set's root, or its ``experiment/`` or ``control/``)."""
    return load_folder(folder, FMT, LAYOUT, SUFFIXES, _sample, skip_malformed=skip_malformed)


def identities(dataset: Dataset[ImageSample]) -> dict[Identity, list[ImageSample]]:
    """(writer, name) to that writer's samples of that name, in the dataset's order."""
    out: dict[Identity, list[ImageSample]] = {}
    for writer, samples in dataset.writers.items():
        for s in samples:
            if s.text is None:
                raise ValueError(f"{s.path}: no name number; identities() is for the cross-media set")
            out.setdefault((writer, s.text), []).append(s)
    return out
