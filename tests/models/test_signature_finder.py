"""Finding the signature on photos and scans: real Dutch scans, generated photos, bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.image import MAX_SIDE, SignatureImage
from models.image_preprocess import prepare
from models.signature_finder import (
    NoSignatureInPictureError,
    UnreadablePictureError,
    decode_picture,
    find_signature,
    read_picture,
)
from tests.shared_data import shared_data
from tools.datasets.images import read_signature_image
from tools.photos import make_photo


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    from tools.benchmarks.camera import similarity

    return similarity(a, b)


@pytest.fixture(scope="module")
def scans() -> list[SignatureImage]:
    root = shared_data("offline/sigcomp-dutch-kaggle")
    # Test writers (last digit 8-9), light and dark pens.
    paths = [root / "068" / "01_068.png", root / "069" / "01_069.png", root / "049" / "01_049.png"]
    return [read_signature_image(p) for p in paths if p.exists()] or pytest.fail(f"no scans under {root}")


def test_a_scan_is_taken_whole_and_gives_the_same_model_input(scans: list[SignatureImage]) -> None:
    for scan in scans:
        found = find_signature(scan.pixels)
        assert found.source.startswith("scan")
        assert _similarity(prepare(found), prepare(scan)) > 0.97


#: Real signature scans, each a tight crop as a scanner or a notary's desk gives it, that the
#: finder once got wrong: a loop or a crossing of the signature's own strokes taken for a signature
#: box (the crop cut down to it, or refused as "paper too small" or "no signature in the box"),
#: and felt-pen crops whose thick strokes the light flattening hollowed out, refused as not paper.
CROPS_ONCE_MISREAD = [
    "sigcomp-dutch-kaggle/032_forg/01_0112032.png",
    "sigcomp-dutch-kaggle/009_forg/0201009_01.png",
    "sigcomp-dutch-kaggle/003_forg/0121003_01.png",
    "sigcomp-dutch-kaggle/044_forg/01_0211044.png",
    "cross-media-chinese/experiment/6/3.png",
    "cross-media-chinese/control/7/4.png",
    "cross-media-chinese/control/8/4.png",
    "cross-media-chinese/control/1/2.png",
]


@pytest.mark.parametrize("name", CROPS_ONCE_MISREAD)
def test_a_scanned_signature_is_taken_whole_not_cut_to_one_of_its_loops(name: str) -> None:
    scan = read_signature_image(shared_data("offline") / name)
    found = find_signature(scan.pixels)
    assert found.source == "scan: whole picture"
    # What the kiosk keeps of a scan is what the evaluator measured: the file prepared as it is.
    assert _similarity(prepare(found), prepare(scan)) > 0.97


@pytest.mark.parametrize("name", ["001/001_01.png", "004/004_04.png", "006/006_10.png", "015/015_07.png", "002/002_22.png"])
def test_light_falling_off_across_a_scan_is_not_taken_for_a_sheet(name: str) -> None:
    """The brighter part of an unevenly lit scan is a quadrilateral of bright paper too; it runs
    along the picture's border, which a sheet on a desk does not. And a loop of the strokes on the
    brighter side is brighter inside than the darker side as a whole (the last two), but not
    than the paper just around it, as a sheet is than the desk."""
    from tools.scan_variants import uneven_light

    scan = read_signature_image(shared_data("offline/sigcomp-dutch-kaggle") / name)
    found = find_signature(uneven_light(0.55, 0.85)(np.asarray(scan.pixels), np.random.default_rng(0)))
    assert found.source.startswith("scan")
    assert _similarity(prepare(found), prepare(scan)) > 0.97


@pytest.mark.parametrize("name", ["066/04_066.png", "025/01_025.png", "045/06_045.png", "063_forg/01_0119063.png",
                                  "054_forg/04_0124054.png"])
def test_a_loop_of_the_strokes_is_not_a_sheet_even_brighter_than_all_around_it(name: str) -> None:
    """Under light falling off across a scan, the inside of a loop of strokes on the bright side can
    be brighter than the whole of its surroundings, and a thick stroke fills the ring just around
    it: its quad passed for a sheet (55 of 1 649 Dutch scans were cut down to one). A sheet's edge
    steps down from paper to desk all along its sides, the loop's chords have paper on both sides
    (past the stroke)."""
    from tools.scan_variants import uneven_light

    scan = read_signature_image(shared_data("offline/sigcomp-dutch-kaggle") / name)
    found = find_signature(uneven_light(0.55, 0.85)(np.asarray(scan.pixels), np.random.default_rng(0)))
    assert found.source == "scan: whole picture"
    assert _similarity(prepare(found), prepare(scan)) > 0.9


def test_flattening_the_light_keeps_a_thick_stroke_ink() -> None:
    from models.signature_finder import PAPER_LEVEL, flatten_light

    page = np.full((216, 320), 245, np.uint8)
    page[60:80, 20:300] = 10      # a felt-pen bar, 20 px thick
    page[100:200, 150:170] = 10
    flat = flatten_light(page)
    assert flat[70, 160] < 0.3 * PAPER_LEVEL and flat[150, 160] < 0.3 * PAPER_LEVEL
    assert abs(int(flat[30, 60]) - PAPER_LEVEL) <= 3


@pytest.mark.parametrize("difficulty,box", [("clean", False), ("perspective", True), ("perspective", False), ("dark", True)])
def test_photos_are_found_flattened_and_match_the_scan(scans: list[SignatureImage], difficulty: str, box: bool) -> None:
    rng = np.random.default_rng(7)
    for scan in scans[:2]:
        photo = make_photo(scan, rng, difficulty=difficulty, box=box)
        found = find_signature(photo.frame)
        assert found.source.startswith("photo: sheet")
        assert ("signature box" in found.source) == box
        # 0.85: about the 95th percentile of two genuine signatures of one writer (bench camera).
        assert _similarity(prepare(found), prepare(scan)) > 0.85


def test_the_form_printing_outside_the_box_is_not_taken(scans: list[SignatureImage]) -> None:
    photo = make_photo(scans[0], np.random.default_rng(3), difficulty="clean", box=True)
    found = find_signature(photo.frame)
    # The crop is the signature's size, not the form's: the sheet holds printed lines above it.
    h, w = scans[0].shape
    fh, fw = found.shape
    assert 0.5 < (fw / fh) / (w / h) < 2.0


def test_grey_and_colour_frames_give_the_same_answer(scans: list[SignatureImage]) -> None:
    frame = make_photo(scans[0], np.random.default_rng(4), difficulty="clean").frame
    a = prepare(find_signature(frame))
    b = prepare(find_signature(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)))
    assert _similarity(a, b) > 0.98


def _blank(h: int = 120, w: int = 360) -> SignatureImage:
    return SignatureImage(np.full((h, w), 250, np.uint8))


def test_a_blank_form_on_a_desk_has_no_signature() -> None:
    photo = make_photo(_blank(), np.random.default_rng(5), difficulty="clean", box=True)
    with pytest.raises(NoSignatureInPictureError, match="no signature in the signature box"):
        find_signature(photo.frame)


def test_a_blank_sheet_on_a_desk_has_no_signature() -> None:
    photo = make_photo(_blank(), np.random.default_rng(6), difficulty="perspective", box=False)
    with pytest.raises(NoSignatureInPictureError, match="no signature on|no signature in the paper"):
        find_signature(photo.frame)


def test_an_all_white_page_has_no_signature() -> None:
    with pytest.raises(NoSignatureInPictureError, match="no signature"):
        find_signature(np.full((700, 500), 255, np.uint8))


def test_a_dash_in_a_signature_box_is_refused_as_no_signature() -> None:
    """A mark too small for a picture (21x5 px with its margin) is refused in the finder's own
    words: the kiosk's capture flows catch those, not a malformed-image error."""
    page = np.full((400, 600), 240, np.uint8)
    cv2.rectangle(page, (100, 150), (500, 300), 30, 2)
    page[220:223, 290:310] = 20
    with pytest.raises(NoSignatureInPictureError, match="no signature in the signature box: the only ink is a mark"):
        find_signature(page)


def test_a_photo_of_a_desk_has_no_signature() -> None:
    rng = np.random.default_rng(8)
    streaks = cv2.resize(rng.normal(0, 1, (90, 4)).astype(np.float32), (1280, 720))
    desk = np.clip(100 + 25 * streaks + rng.normal(0, 6, (720, 1280)), 0, 255).astype(np.uint8)
    with pytest.raises(NoSignatureInPictureError, match="no sheet of paper in view"):
        find_signature(desk)


def _png(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return buf.tobytes()


def test_a_photo_file_round_trips(tmp_path: Path, scans: list[SignatureImage]) -> None:
    frame = make_photo(scans[0], np.random.default_rng(9), difficulty="clean").frame
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"photo{suffix}"
        cv2.imwrite(str(path), frame)
        assert find_signature(read_picture(path)).source.startswith("photo")


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty file"),
        (b"%PDF-1.4 this is not a picture", "not a picture"),
        (_png(np.full((50, 50), 200, np.uint8))[:-30], "truncated PNG"),
        (_png(np.full((10, MAX_SIDE + 1), 200, np.uint8)), "too large"),
    ],
    ids=["empty", "not-an-image", "truncated-png", "huge"],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(UnreadablePictureError, match=message):
        read_picture(path)


def test_a_truncated_jpeg_is_refused() -> None:
    ok, buf = cv2.imencode(".jpg", np.full((200, 300, 3), 180, np.uint8))
    with pytest.raises(UnreadablePictureError, match="truncated JPEG"):
        decode_picture(buf.tobytes()[: len(buf) // 2])


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnreadablePictureError, match="cannot read file"):
        read_picture(tmp_path / "nope.jpg")


@pytest.mark.parametrize(
    "pixels,message",
    [
        (np.zeros((10, MAX_SIDE + 1), np.uint8), "too large"),
        (np.zeros((12, 12), np.uint8), "too small"),
        (np.zeros((100, 100), np.float32), "8-bit"),
        (np.zeros((100, 100, 2), np.uint8), "8-bit"),
    ],
    ids=["huge", "tiny", "float", "two-channel"],
)
def test_bad_arrays_are_refused(pixels: np.ndarray, message: str) -> None:
    with pytest.raises(UnreadablePictureError, match=message):
        find_signature(pixels)


def test_the_paper_s_own_shape_is_recovered_from_a_tilted_view() -> None:
    from models.signature_finder import true_aspect

    # A 3:2 sheet turned 30 and 25 degrees away from a pinhole camera (focal 1280 px, centre
    # 640, 360). Turned about one axis only, the focal length cannot be told: None, sides kept.
    a, b = np.deg2rad(30), np.deg2rad(25)
    plane = np.array([[-150, -100, 0], [150, -100, 0], [150, 100, 0], [-150, 100, 0]], float)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    p = plane @ (ry @ rx).T + [30, -20, 900]
    quad = np.stack([1280 * p[:, 0] / p[:, 2] + 640, 1280 * p[:, 1] / p[:, 2] + 360], 1)
    seen = np.linalg.norm(quad[1] - quad[0]) / np.linalg.norm(quad[3] - quad[0])
    found = true_aspect(quad, (640, 360))
    assert found == pytest.approx(1.5, rel=0.01)
    assert abs(found - 1.5) < abs(seen - 1.5) / 5  # far closer than the foreshortened sides
    # Square to the camera there is no focal length to find: the sides are right as they are.
    assert true_aspect(np.array([[0, 0], [300, 0], [300, 200], [0, 200]], float) + 500, (640, 360)) is None


def test_a_scanned_form_is_cut_to_its_signature_box(scans: list[SignatureImage]) -> None:
    from tools.photos import make_scan

    form = make_scan(scans[1], np.random.default_rng(10), box=True)
    found = find_signature(form.frame)
    assert found.source == "scan: signature box"
    assert _similarity(prepare(found), prepare(scans[1])) > 0.85


def test_a_close_up_of_a_tilted_form_is_rectified_by_its_box(scans: list[SignatureImage]) -> None:
    """No paper edge in view (the form fills the frame): the box itself is the rectangle."""
    from tools.photos import make_scan

    form = make_scan(scans[0], np.random.default_rng(11), box=True)
    assert form.box is not None
    h, w = form.frame.shape[:2]
    # Zoomed so the box fills most of a 1280x720 frame, seen by a pinhole camera (focal 1280 px)
    # with the form turned 20 and 15 degrees away.
    x0, y0 = form.box.min(0) - 40
    x1, y1 = form.box.max(0) + 40
    src = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    a, b = np.deg2rad(20), np.deg2rad(15)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    half = (src - src.mean(0)) * 1.0
    p = np.c_[half, np.zeros(4)] @ (ry @ rx).T + [0, 0, 1280 * (x1 - x0) / 1000]
    dst = np.stack([1280 * p[:, 0] / p[:, 2] + 640, 1280 * p[:, 1] / p[:, 2] + 360], 1).astype(np.float32)
    frame = cv2.warpPerspective(form.frame, cv2.getPerspectiveTransform(src, dst), (1280, 720),
                                borderMode=cv2.BORDER_REPLICATE)
    found = find_signature(frame)
    assert found.source == "scan: signature box"
    assert _similarity(prepare(found), prepare(scans[0])) > 0.85
