"""SigComp2011 Dutch offline signatures, as distributed on Kaggle ("sign_data"): grey PNG scans.

Documented layout: genuine ``WWW/NN_WWW.png``, forgeries ``WWW_forg/NN_FFFFWWW.png`` (FFFF the
forger, WWW the writer imitated: the sample's writer is WWW, label skilled).

The shared copy also uses a second naming for 10 writers (001-016: 239 genuine, 123 forgeries):
``WWW/WWW_NN.png`` and ``WWW_forg/FFFFWWW_NN.png``. Both are read. The writer comes from the file
name; a folder that disagrees is logged and the name wins.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tools.datasets._common import load_folder
from tools.datasets.images import read_signature_image
from tools.datasets.types import Dataset, ImageSample, Label, MalformedFileError

log = logging.getLogger(__name__)

FMT = "sigcomp-dutch"
LAYOUT = "WWW/NN_WWW.png (genuine) and WWW_forg/NN_FFFFWWW.png (forgeries of WWW)"
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_GENUINE = (re.compile(r"(?P<n>\d\d)_(?P<w>\d{3})"), re.compile(r"(?P<w>\d{3})_(?P<n>\d\d)"))
_FORGED = (re.compile(r"(?P<n>\d\d)_(?P<f>\d{4})(?P<w>\d{3})"), re.compile(r"(?P<f>\d{4})(?P<w>\d{3})_(?P<n>\d\d)"))


def _match(patterns: tuple[re.Pattern[str], ...], stem: str) -> re.Match[str] | None:
    for pat in patterns:
        if (m := pat.fullmatch(stem)) is not None:
            return m
    return None


def _sample(path: Path) -> ImageSample:
    forged_dir = path.parent.name.lower().endswith("_forg")
    m = _match(_FORGED if forged_dir else _GENUINE, path.stem)
    if m is None:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    writer = m.group("w")
    folder_writer = path.parent.name[: -len("_forg")] if forged_dir else path.parent.name
    if folder_writer != writer:
        log.warning("%s: in folder %s/ but the name says writer %s; trusting the name", path, path.parent.name, writer)
    label = Label.SKILLED if forged_dir else Label.GENUINE
    return ImageSample(writer=writer, label=label, image=read_signature_image(path), path=path, index=int(m.group("n")))


def load_sigcomp_dutch(folder: Path, *, skip_malformed: bool = False) -> Dataset[ImageSample]:
    """All images under ``folder``: genuine from ``WWW/``, skilled forgeries from ``WWW_forg/``."""
    return load_folder(folder, FMT, LAYOUT, SUFFIXES, _sample, skip_malformed=skip_malformed)
