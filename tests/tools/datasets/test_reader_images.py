"""Dutch (Kaggle) and CEDAR image readers on small PNGs written here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.datasets import (
    Label,
    MalformedFileError,
    Medium,
    identities,
    load_cedar,
    load_cross_media,
    load_images,
    load_sigcomp_dutch,
    read_signature_image,
)


def write_png(path: Path, shade: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((40, 90), 255, dtype=np.uint8)
    img[15:25, 10:80] = shade
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture()
def dutch(tmp_path: Path) -> Path:
    root = tmp_path / "dutch"
    write_png(root / "049" / "01_049.png")
    write_png(root / "049" / "02_049.png")
    write_png(root / "049_forg" / "01_0114049.png")  # forger 0114 imitating 049
    write_png(root / "001" / "001_03.png")  # the second naming found in the shared copy
    write_png(root / "001_forg" / "0119001_02.png")
    return root


def test_dutch_both_namings(dutch: Path) -> None:
    ds = load_sigcomp_dutch(dutch)
    assert list(ds.writers) == ["001", "049"]
    assert [(s.label, s.index) for s in ds.writers["049"]] == [(Label.GENUINE, 1), (Label.SKILLED, 1), (Label.GENUINE, 2)]
    assert [(s.label, s.index) for s in ds.writers["001"]] == [(Label.SKILLED, 2), (Label.GENUINE, 3)]
    img = ds.writers["049"][0].image
    assert img.shape == (40, 90) and img.pixels.dtype == np.uint8
    assert img.source == str(dutch / "049" / "01_049.png")


def test_truncated_and_non_image_files(dutch: Path) -> None:
    good = write_png(dutch / "049" / "03_049.png")
    data = good.read_bytes()
    trunc = dutch / "049" / "04_049.png"
    trunc.write_bytes(data[: len(data) // 2])
    junk = dutch / "049" / "05_049.png"
    junk.write_text("this is not a picture")
    for path, reason in ((trunc, "truncated"), (junk, "not a picture OpenCV can read")):
        with pytest.raises(MalformedFileError) as err:
            read_signature_image(path)
        assert err.value.path == path and err.value.line is None and reason in err.value.reason
    with pytest.raises(MalformedFileError):
        load_images(dutch, "sigcomp-dutch")
    ds = load_images(dutch, "sigcomp-dutch", skip_malformed=True)
    assert sorted(e.path for e in ds.skipped) == sorted([trunc, junk])
    assert len(ds.genuine("049")) == 3


def test_tiny_image_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "01_001.png"
    cv2.imwrite(str(path), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(MalformedFileError, match="too small"):
        read_signature_image(path)


def test_cedar_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "cedar"
    write_png(root / "full_org" / "original_1_1.png")
    write_png(root / "full_org" / "original_12_2.png")
    write_png(root / "full_forg" / "forgeries_1_3.png")
    write_png(root / "Thumbs.png")  # not a signature name: ignored
    ds = load_cedar(root)
    assert list(ds.writers) == ["1", "12"]
    assert [(s.label, s.index) for s in ds.writers["1"]] == [(Label.GENUINE, 1), (Label.SKILLED, 3)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="original_"):
        load_cedar(tmp_path / "empty")


def test_cross_media_layout_and_hostile_names(tmp_path: Path) -> None:
    root = tmp_path / "cm"
    for n in (1, 11, 21, 40):
        write_png(root / "experiment" / "7" / f"{n}.png")
    write_png(root / "control" / "7" / "3.png")
    write_png(root / "control" / "7" / "13.png")
    ds = load_cross_media(root)
    assert list(ds.writers) == ["c07", "e007"]  # same number, different people
    assert [(s.index, s.medium, s.text) for s in ds.writers["e007"]] == [
        (1, Medium.PAPER, 1), (11, Medium.IPAD, 1), (21, Medium.PHONE, 1), (40, Medium.PHONE, 10)]
    assert all(s.label is Label.GENUINE for s in ds.writers["e007"])
    assert [(s.medium, s.text) for s in ds.writers["c07"]] == [(Medium.PAPER, 3), (Medium.PAPER, 3)]
    assert sorted(identities(ds)) == [("c07", 3), ("e007", 1), ("e007", 10)]
    assert list(ds.subset("validate").writers) == ["c07", "e007"] and not ds.subset("test").writers
    dark = write_png(root / "experiment" / "8" / "22.png", shade=200)  # light ink on a dark screen
    cv2.imwrite(str(dark), 255 - cv2.imread(str(dark), cv2.IMREAD_GRAYSCALE))
    phone = load_cross_media(root).writers["e008"][0].image.pixels
    assert phone[0, 0] == 255 and phone[20, 40] == 200  # dark ink on white, as every other picture
    dark.unlink()
    bad = [root / "experiment" / "7" / "41.png", root / "control" / "7" / "21.png", root / "experiment" / "7" / "0.png",
           root / "experiment" / "x" / "1.png", root / "elsewhere" / "7" / "1.png", root / "experiment" / "7" / "01.png"]
    for path in bad:
        write_png(path)
        with pytest.raises(MalformedFileError) as err:
            load_cross_media(root)
        assert err.value.path == path
        path.unlink()
    write_png(bad[0])
    assert [e.path for e in load_cross_media(root, skip_malformed=True).skipped] == [bad[0]]
    write_png(tmp_path / "cedar" / "original_1_1.png")
    with pytest.raises(ValueError, match="no name number"):
        identities(load_cedar(tmp_path / "cedar"))
