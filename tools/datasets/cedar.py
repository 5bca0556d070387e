"""CEDAR offline signatures: ``original_{w}_{n}.png`` genuine, ``forgeries_{w}_{n}.png`` skilled.

Usually distributed as ``full_org/`` and ``full_forg/`` folders; any sub-folder is searched. The
shared data has no copy of CEDAR; this reader follows the published naming.
"""

from __future__ import annotations

import re
from pathlib import Path

from tools.datasets._common import load_folder
from tools.datasets.images import read_signature_image
from tools.datasets.types import Dataset, ImageSample, Label, MalformedFileError

FMT = "cedar"
LAYOUT = "original_{w}_{n}.png and forgeries_{w}_{n}.png, e.g. in full_org/ and full_forg/"
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_NAME = re.compile(r"(original|forgeries)_(\d+)_(\d+)", re.IGNORECASE)
#: Files that are meant to be signatures; other images (thumbnails, logos) are not ours to judge.
_CANDIDATE = re.compile(r"(original|forgeries)_", re.IGNORECASE)


def _sample(path: Path) -> ImageSample:
    m = _NAME.fullmatch(path.stem)
    if m is None:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    label = Label.GENUINE if m.group(1).lower() == "original" else Label.SKILLED
    return ImageSample(
        writer=str(int(m.group(2))), label=label, image=read_signature_image(path), path=path, index=int(m.group(3))
    )


def load_cedar(folder: Path, *, skip_malformed: bool = False) -> Dataset[ImageSample]:
    """Every ``original_*``/``forgeries_*`` image under ``folder``."""
    return load_folder(folder, FMT, LAYOUT, SUFFIXES, _sample, skip_malformed=skip_malformed,
                       keep=lambda p: _CANDIDATE.match(p.name) is not None)
