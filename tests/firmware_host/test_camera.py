"""The camera through recordings: the same cv2.VideoCapture path a V4L2 device takes.

Frames are generated photos (tools.photos) of a drawn scribble; the recordings are real MJPG .avi
files and real image files written here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware_host.camera import Camera, CameraError, FrameRejected, Reason
from models.image import SignatureImage
from tools.photos import make_photo, write_photos, write_video

SIZE = (640, 360)


def _ink() -> SignatureImage:
    img = np.full((120, 360), 250, np.uint8)
    pts = np.array([[20, 90], [70, 20], [120, 100], [170, 25], [230, 95], [290, 30], [340, 80]], np.int32)
    cv2.polylines(img, [pts], False, 40, 3, cv2.LINE_AA)
    return SignatureImage(img)


def _frames(difficulties: list[str], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [make_photo(_ink(), rng, difficulty=d, size=SIZE).frame for d in difficulties]


@pytest.fixture(scope="module")
def clean_frames() -> list[np.ndarray]:
    return _frames(["clean"] * 4)


def test_video_replay_gives_a_judged_capture(tmp_path: Path, clean_frames: list[np.ndarray]) -> None:
    video = write_video(tmp_path / "cam.avi", clean_frames * 3, fps=10)
    with Camera(video, warmup_s=0.2, frames=3) as cam:  # 2 warm-up frames at 10 fps
        cap = cam.capture()
        assert cap.frame.shape == (SIZE[1], SIZE[0], 3) and cap.frames == 3
        assert cap.sharpness > 8 and cap.brightness > 60 and 0 <= cap.index < 3
        cam.capture()  # the stream goes on: 2 + 3 + 3 of 12 frames
        assert cam.is_open


def test_the_sharpest_frame_is_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sharp = make_photo(_ink(), rng, difficulty="clean", size=SIZE).frame
    soft = [cv2.GaussianBlur(sharp, (0, 0), s) for s in (3.0, 2.0, 1.2)]
    write_video(tmp_path / "v.avi", [soft[0], soft[1], sharp, soft[2]], fps=10)
    cap = Camera(tmp_path / "v.avi", warmup_s=0, frames=4).capture()
    assert cap.index == 2


@pytest.mark.parametrize(
    "difficulty,reason,advice",
    [("too_dark", Reason.TOO_DARK, "desk light"), ("too_bright", Reason.TOO_BRIGHT, "washed out"),
     ("too_blurred", Reason.BLURRED, "hold the paper still")],
)
def test_unusable_frames_are_refused_with_the_reason(tmp_path: Path, difficulty: str, reason: Reason, advice: str) -> None:
    write_video(tmp_path / "bad.avi", _frames([difficulty] * 3, seed=3), fps=10)
    with pytest.raises(FrameRejected) as err:
        Camera(tmp_path / "bad.avi", warmup_s=0, frames=3).capture()
    assert err.value.reason is reason and advice in err.value.message
    assert err.value.capture is not None and err.value.capture.frames == 3


def test_an_image_file_is_a_stream_of_one_frame(tmp_path: Path, clean_frames: list[np.ndarray]) -> None:
    # Numbered neighbours must not be read as more frames of this picture.
    for i, f in enumerate(clean_frames[:2]):
        cv2.imwrite(str(tmp_path / f"shot_{i:02d}.png"), f)
    cam = Camera(tmp_path / "shot_00.png", frames=5)
    for _ in range(2):  # every capture reads the picture afresh
        cap = cam.capture()
        assert cap.frames == 1 and not cam.is_open
        np.testing.assert_array_equal(cap.frame, clean_frames[0])


def test_a_folder_of_numbered_images_replays_in_order(tmp_path: Path, clean_frames: list[np.ndarray]) -> None:
    write_photos(tmp_path / "rec", [make_photo(_ink(), np.random.default_rng(i), size=SIZE) for i in range(4)], video=False)
    cam = Camera(tmp_path / "rec", warmup_s=0, frames=2)
    first, second = cam.capture(), cam.capture()
    expect = [cv2.imread(str(tmp_path / "rec" / f"frame_{i:04d}.png")) for i in range(4)]
    np.testing.assert_array_equal(first.frame, expect[first.index])
    np.testing.assert_array_equal(second.frame, expect[2 + second.index])
    with pytest.raises(CameraError, match="stopped delivering"):
        cam.capture()  # four frames are used up


def test_unplug_mid_capture_fails_that_capture_and_the_next_reopens(tmp_path: Path, clean_frames: list[np.ndarray]) -> None:
    video = tmp_path / "cam.avi"
    write_video(video, clean_frames[:2], fps=10)
    cam = Camera(video, warmup_s=0, frames=3)
    with pytest.raises(CameraError, match=r"stopped delivering frames \(2 of 3"):
        cam.capture()
    assert not cam.is_open
    gone = tmp_path / "unplugged.avi"
    shutil.move(video, gone)
    with pytest.raises(CameraError, match="does not exist"):
        cam.capture()
    write_video(video, clean_frames * 2, fps=10)  # plugged back in
    assert cam.capture().frames == 3


@pytest.mark.parametrize("source,message", [
    ("/dev/video97", "no camera at /dev/video97"),
    (97, "no camera 97"),
    ("missing.avi", "does not exist"),
])
def test_a_missing_camera_is_a_clear_error(tmp_path: Path, source: object, message: str) -> None:
    src = tmp_path / source if source == "missing.avi" else source
    with pytest.raises(CameraError, match=message):
        Camera(src).capture()  # type: ignore[arg-type]


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(CameraError, match="cannot open camera"):
        Camera(tmp_path / "notes.avi").capture()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        Camera(tmp_path / "empty").capture()


def test_real_scans_replayed_as_files_are_not_refused(tmp_path: Path) -> None:
    """White scanner paper clips like an over-exposed frame, but its ink stays dark: not "too bright"."""
    from tests.shared_data import shared_data

    root = shared_data("offline/sigcomp-dutch-kaggle")
    scans = sorted((root / "068").glob("*.png"))[:3] + sorted((root / "059_forg").glob("*.png"))[:2]
    assert scans, f"no scans under {root}"
    for path in scans:
        cap = Camera(path).capture()
        np.testing.assert_array_equal(cap.frame, cv2.imread(str(path)))


def test_a_replayed_photo_goes_on_to_the_finder(tmp_path: Path) -> None:
    """Camera replay -> finder -> prepare: the paper path's first steps, on a recording."""
    from models.image_preprocess import prepare
    from models.signature_finder import find_signature
    from tools.benchmarks.camera import similarity

    rng = np.random.default_rng(12)
    photos = [make_photo(_ink(), rng, difficulty=d, box=True) for d in ("blur", "clean", "blur")]
    write_photos(tmp_path / "rec", photos)
    cap = Camera(tmp_path / "rec" / "photos.avi", warmup_s=0, frames=3).capture()
    assert cap.index == 1  # the sharp one
    found = find_signature(cap.frame)
    assert "signature box" in found.source
    assert similarity(prepare(found), prepare(_ink())) > 0.9


def test_the_judge_reads_its_percentiles_as_numpy_does_and_only_8_bit_frames(clean_frames: list[np.ndarray]) -> None:
    from firmware_host.camera import ANALYSIS_WIDTH, measure

    frame = clean_frames[0]
    q = measure(frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    grey = cv2.resize(grey, (ANALYSIS_WIDTH, round(h * ANALYSIS_WIDTH / w)), interpolation=cv2.INTER_AREA)
    assert (q.paper_level, q.darkest) == (float(np.percentile(grey, 90)), float(np.percentile(grey, 0.2)))
    # A 16-bit frame's levels are not the judge's 0-255 (the camera converts its frames first).
    with pytest.raises(CameraError, match="8-bit"):
        measure(frame.astype(np.uint16) * 257)
