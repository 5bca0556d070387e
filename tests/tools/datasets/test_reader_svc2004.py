"""SVC2004 Task 2 reader on files written here to the format's specification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import Label, MalformedFileError, load_svc2004, read_svc2004_file, writer_split


def write_svc(path: Path, rows: list[list[object]], *, count: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(rows) if count is None else count
    path.write_text(f"{n}\n" + "".join(" ".join(str(v) for v in r) + "\n" for r in rows))
    return path


def rows_for(button: list[int], *, t0: int = 3_000_000) -> list[list[object]]:
    """X Y TimeStamp ButtonStatus Azimuth Altitude Pressure, timestamps starting at a large value."""
    return [[4000 + 9 * i, 7000 - 4 * i, t0 + 10 * i, b, 1200, 600, 300 * b if b else 0] for i, b in enumerate(button)]


@pytest.fixture()
def svc(tmp_path: Path) -> Path:
    root = tmp_path / "svc2004"
    write_svc(root / "U1S1.TXT", rows_for([1, 1, 0, 2, 1]))
    write_svc(root / "U1S21.TXT", rows_for([1, 1]))
    write_svc(root / "task2" / "U12S2.txt", rows_for([2, 2, 0]))  # sub-folder, lower-case suffix
    write_svc(root / "task2" / "U2S40.TXT", rows_for([1]))
    (root / "readme.txt").write_text("not a signature\n")
    return root


def test_layout_writers_labels(svc: Path) -> None:
    ds = load_svc2004(svc)
    assert list(ds.writers) == ["1", "2", "12"]
    assert [(s.label, s.index) for s in ds.writers["1"]] == [(Label.GENUINE, 1), (Label.SKILLED, 21)]
    assert ds.writers["2"][0].label is Label.SKILLED
    assert writer_split("12") == "train" and writer_split("1") == "train"


def test_button_status_above_one_is_pen_down_and_time_starts_at_zero(svc: Path) -> None:
    tr = read_svc2004_file(svc / "U1S1.TXT")
    assert tr.pen_down.tolist() == [True, True, False, True, True]
    np.testing.assert_allclose(tr.t, np.arange(5) * 0.01)
    np.testing.assert_allclose(tr.pressure[3], 600 / 1023)
    assert tr.device.pressure_levels == 1023 and tr.device.time_measured


@pytest.mark.parametrize(
    ("rows", "count", "line", "reason"),
    [
        (rows_for([1, 1, 1]), 4, 5, "declares 4 points"),
        # 50 ms back at 100 Hz (5 sample periods); up to 2 are re-timed (tests/tools/datasets/test_clock.py)
        ([*rows_for([1, 1, 1, 1, 1, 1]), [1, 2, 3_000_000, 1, 1, 1, 1]], None, 8, "backwards"),
        ([*rows_for([1]), [1, 2, 3, 1, 1, 1]], None, 3, "6 columns"),
        ([*rows_for([1]), [1, 2, "t", 1, 1, 1, 1]], None, 3, "non-numeric timestamp"),
        ([*rows_for([1]), [1, 2, 3_000_020, 1, 1, 1, 1024]], None, 3, "pressure 1024"),
    ],
)
def test_malformed(tmp_path: Path, rows: list[list[object]], count: int | None, line: int, reason: str) -> None:
    path = write_svc(tmp_path / "U3S3.TXT", rows, count=count)
    with pytest.raises(MalformedFileError) as err:
        read_svc2004_file(path)
    assert (err.value.path, err.value.line) == (path, line)
    assert reason in err.value.reason


def test_windows_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "U4S4.TXT"
    path.write_bytes(b"2\r\n1 2 100 1 0 0 5\r\n3 4 110 0 0 0 0\r\n")
    tr = read_svc2004_file(path)
    assert tr.pen_down.tolist() == [True, False] and tr.duration == pytest.approx(0.01)


def test_skip_malformed_records_the_file(svc: Path) -> None:
    bad = write_svc(svc / "U5S1.TXT", rows_for([1, 1]), count=9)
    odd = write_svc(svc / "U5S41.TXT", rows_for([1]))
    with pytest.raises(MalformedFileError):
        load_svc2004(svc)
    ds = load_svc2004(svc, skip_malformed=True)
    assert sorted(e.path for e in ds.skipped) == sorted([bad, odd])
    assert "5" not in ds.writers
