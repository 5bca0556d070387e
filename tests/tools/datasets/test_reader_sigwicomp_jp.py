"""SigWiComp2013 Japanese ``.HWR`` reader on files written here to the format's specification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import Label, MalformedFileError, load_sigwicomp2013_jp, read_sigwicomp_jp_file
from tools.datasets.sigwicomp_jp import RATE_HZ


def write_jp(path: Path, rows: list[tuple[object, object, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x} {y} {p}\n" for x, y, p in rows))
    return path


# Leading repeats of the first point (pen resting), a stroke, a pen-up, another stroke.
ROWS = [(800, 500, 0)] * 4 + [(810, 505, 30), (820, 510, 100), (830, 515, 0), (840, 520, 0), (850, 525, 60)]


@pytest.fixture()
def jp(tmp_path: Path) -> Path:
    root = tmp_path / "sigwicomp2013-jp"
    for n in (1, 2):
        write_jp(root / "Genuine" / "000" / f"{n:02d}_000.HWR", ROWS)
        write_jp(root / "Forged" / "000" / f"{n:02d}_003_000.HWR", ROWS)  # writer 003 forging 000
    write_jp(root / "Genuine" / "010" / "01_010.HWR", ROWS)
    return root


def test_layout_labels_and_order(jp: Path) -> None:
    ds = load_sigwicomp2013_jp(jp)
    assert list(ds.writers) == ["000", "010"]
    assert [(s.label, s.index) for s in ds.writers["000"]] == [
        (Label.GENUINE, 1), (Label.SKILLED, 1), (Label.GENUINE, 2), (Label.SKILLED, 2)
    ]
    assert ds.skilled("010") == []


def test_leading_repeats_kept_pen_state_and_time(jp: Path) -> None:
    tr = read_sigwicomp_jp_file(jp / "Genuine" / "000" / "01_000.HWR")
    assert len(tr) == len(ROWS)  # repeats are not this reader's business
    assert tr.pen_down.tolist() == [False] * 4 + [True, True, False, False, True]
    assert len(tr.strokes()) == 2
    np.testing.assert_allclose(tr.t, np.arange(len(ROWS)) / RATE_HZ)
    assert tr.pressure.max() == 1.0
    d = tr.device
    assert (d.pressure_levels, d.nominal_rate_hz, d.time_measured) == (100, 200.0, False)


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        ([(1, 2, 3), (1, "y", 3)], 2, "non-numeric y"),
        ([(1, 2, 3), (1, 2, "3 4")], 2, "4 columns"),
        ([(1, 2, 3), (1, 2, 101)], 2, "pressure 101"),
    ],
)
def test_malformed(tmp_path: Path, rows: list[tuple[object, object, object]], line: int, reason: str) -> None:
    path = write_jp(tmp_path / "01_001.HWR", rows)
    with pytest.raises(MalformedFileError) as err:
        read_sigwicomp_jp_file(path)
    assert (err.value.path, err.value.line) == (path, line)
    assert reason in err.value.reason


def test_empty_file_and_skip(jp: Path) -> None:
    empty = jp / "Genuine" / "010" / "02_010.HWR"
    empty.write_text("")
    with pytest.raises(MalformedFileError, match="02_010.HWR:1: no data rows"):
        load_sigwicomp2013_jp(jp)
    ds = load_sigwicomp2013_jp(jp, skip_malformed=True)
    assert [e.path for e in ds.skipped] == [empty]
    assert len(ds.writers["010"]) == 1
