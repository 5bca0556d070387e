"""The format registry: the names the command line and training tools rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.datasets import IMAGE_FORMATS, ONLINE_FORMATS, load_images, load_online


def test_format_names() -> None:
    assert set(ONLINE_FORMATS) == {
        "susig-visual", "susig-blind", "sigcomp2009-nfi", "sigwicomp2013-jp", "svc2004", "mcyt-exercise"
    }
    assert set(IMAGE_FORMATS) == {"sigcomp-dutch", "cedar", "cross-media"}


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="susig-visual.*mcyt-exercise"):
        load_online(tmp_path, "susig")
    with pytest.raises(ValueError, match="sigcomp-dutch, cedar, cross-media"):
        load_images(tmp_path, "dutch")


@pytest.mark.parametrize("fmt", sorted(ONLINE_FORMATS))
def test_every_online_reader_refuses_a_missing_folder(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(FileNotFoundError, match="expected layout"):
        load_online(tmp_path / "absent", fmt)
