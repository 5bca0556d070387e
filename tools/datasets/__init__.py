"""Dataset readers: one function per public benchmark layout, from a folder to labelled samples.

Each reader takes ``(folder, *, skip_malformed=False)`` and returns a :class:`Dataset`: writers
(sorted) to their samples, sorted by session and index. A file that breaks its format raises
:class:`MalformedFileError` naming the file and line; with ``skip_malformed=True`` it is logged,
recorded in ``Dataset.skipped`` and left out. ``load_online`` / ``load_images`` pick the reader by
format name, which is what the command line and the training tools use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tools.datasets.cedar import load_cedar
from tools.datasets.cross_media import identities, load_cross_media
from tools.datasets.dutch import load_sigcomp_dutch
from tools.datasets.images import read_signature_image
from tools.datasets.mcyt import load_mcyt_exercise, read_mcyt_file
from tools.datasets.nfi import load_sigcomp2009_nfi, read_nfi_file
from tools.datasets.sigwicomp_jp import load_sigwicomp2013_jp, read_sigwicomp_jp_file
from tools.datasets.susig import load_susig_blind, load_susig_visual, read_susig_file
from tools.datasets.svc2004 import load_svc2004, read_svc2004_file
from tools.datasets.types import (
    Dataset,
    ImageSample,
    Label,
    MalformedFileError,
    Medium,
    OnlineSample,
    SkipLog,
    writer_split,
)

ONLINE_FORMATS: dict[str, Callable[..., Dataset[OnlineSample]]] = {
    "susig-visual": load_susig_visual,
    "susig-blind": load_susig_blind,
    "sigcomp2009-nfi": load_sigcomp2009_nfi,
    "sigwicomp2013-jp": load_sigwicomp2013_jp,
    "svc2004": load_svc2004,
    "mcyt-exercise": load_mcyt_exercise,
}

IMAGE_FORMATS: dict[str, Callable[..., Dataset[ImageSample]]] = {
    "sigcomp-dutch": load_sigcomp_dutch,
    "cedar": load_cedar,
    "cross-media": load_cross_media,
}


def _pick(formats: dict[str, Callable[..., Dataset]], fmt: str, kind: str) -> Callable[..., Dataset]:
    try:
        return formats[fmt]
    except KeyError:
        raise ValueError(f"unknown {kind} format {fmt!r}; known: {', '.join(formats)}") from None


def load_online(path: Path, fmt: str, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """Read a pen-trajectory dataset of format ``fmt`` (a key of :data:`ONLINE_FORMATS`)."""
    return _pick(ONLINE_FORMATS, fmt, "online")(Path(path), skip_malformed=skip_malformed)


def load_images(path: Path, fmt: str, *, skip_malformed: bool = False) -> Dataset[ImageSample]:
    """Read a signature-image dataset of format ``fmt`` (a key of :data:`IMAGE_FORMATS`)."""
    return _pick(IMAGE_FORMATS, fmt, "image")(Path(path), skip_malformed=skip_malformed)


__all__ = [
    "Dataset",
    "IMAGE_FORMATS",
    "ImageSample",
    "Label",
    "MalformedFileError",
    "Medium",
    "ONLINE_FORMATS",
    "OnlineSample",
    "SkipLog",
    "identities",
    "load_cedar",
    "load_cross_media",
    "load_images",
    "load_mcyt_exercise",
    "load_online",
    "load_sigcomp2009_nfi",
    "load_sigcomp_dutch",
    "load_sigwicomp2013_jp",
    "load_susig_blind",
    "load_susig_visual",
    "load_svc2004",
    "read_mcyt_file",
    "read_nfi_file",
    "read_signature_image",
    "read_sigwicomp_jp_file",
    "read_susig_file",
    "read_svc2004_file",
    "writer_split",
]
