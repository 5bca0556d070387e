"""MCYT exercise-layout reader on a small tree written here to the layout's specification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import Label, MalformedFileError, load_mcyt_exercise, read_mcyt_file


def write_mcyt(path: Path, penup: list[int], *, t_step: float = 0.01) -> Path:
    """Rows t(s) x y pressure penup azimuth inclination."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{i * t_step:.3f} {500 + 3 * i} {800 - i} {0 if u else 400 + i} {u} 900 450\n" for i, u in enumerate(penup)]
    path.write_text("".join(rows))
    return path


@pytest.fixture()
def mcyt(tmp_path: Path) -> Path:
    root = tmp_path / "mcyt"
    for w in ("0001", "0002", "0009"):
        for n in (1, 2):
            write_mcyt(root / "enrollment" / f"{w}-g-{n:02d}.txt", [0, 0, 1, 0])
        for n in (6, 7):
            write_mcyt(root / "verification" / f"{w}-{n:02d}.txt", [0, 1, 0])
    (root / "gt.txt").write_text("0001-06 g\n0001-07 f\n0002-06 f\n0002-07 g\n")
    (root / "users_valid.txt").write_text("0001\n0002\n\n")  # 0009 is not labelled: not loaded
    return root


def test_enrolment_verification_and_labels(mcyt: Path) -> None:
    ds = load_mcyt_exercise(mcyt)
    assert list(ds.writers) == ["0001", "0002"]
    got = [(s.label, s.index, s.enrollment) for s in ds.writers["0001"]]
    assert got == [(Label.GENUINE, 1, True), (Label.GENUINE, 2, True), (Label.GENUINE, 6, False), (Label.SKILLED, 7, False)]
    assert [s.label for s in ds.writers["0002"] if not s.enrollment] == [Label.SKILLED, Label.GENUINE]


def test_pen_state_and_time(mcyt: Path) -> None:
    tr = read_mcyt_file(mcyt / "enrollment" / "0001-g-01.txt")
    assert tr.pen_down.tolist() == [True, True, False, True]
    np.testing.assert_allclose(tr.t, [0.0, 0.01, 0.02, 0.03])
    assert tr.device.pressure_levels == 1024 and tr.device.time_measured


def test_verification_file_missing_from_gt_is_malformed(mcyt: Path) -> None:
    extra = write_mcyt(mcyt / "verification" / "0002-08.txt", [0, 0])
    with pytest.raises(MalformedFileError, match="no label for 0002-08"):
        load_mcyt_exercise(mcyt)
    ds = load_mcyt_exercise(mcyt, skip_malformed=True)
    assert [e.path for e in ds.skipped] == [extra]
    assert len(ds.writers["0002"]) == 4


def test_malformed_rows_and_index_files(mcyt: Path) -> None:
    back = mcyt / "enrollment" / "0001-g-03.txt"
    # 50 ms back at 100 Hz: 5 sample periods, more than the 2 re-timed as a clock glitch.
    back.write_text("".join(f"{t:.2f} 1 2 3 0 1 1\n" for t in (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.0)))
    with pytest.raises(MalformedFileError) as err:
        read_mcyt_file(back)
    assert (err.value.path, err.value.line) == (back, 7) and "backwards" in err.value.reason
    cols = mcyt / "enrollment" / "0001-g-04.txt"
    cols.write_text("0.00 1 2 3 0 1 1\n0.01 1 2 3 0 1\n")
    with pytest.raises(MalformedFileError, match=r"0001-g-04.txt:2: 6 columns"):
        read_mcyt_file(cols)
    (mcyt / "gt.txt").write_text("0001-06 g\n0001-07 maybe\n")
    with pytest.raises(MalformedFileError, match=r"gt.txt:2: expected"):
        load_mcyt_exercise(mcyt, skip_malformed=True)  # the index itself is never skipped


def test_missing_layout_parts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="users_valid.txt"):
        load_mcyt_exercise(tmp_path / "nope")
    (tmp_path / "enrollment").mkdir()
    with pytest.raises(ValueError, match="verification"):
        load_mcyt_exercise(tmp_path)
