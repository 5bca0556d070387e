"""SigComp2009 NFI ``.hwr`` reader on files written here to the format's specification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import Label, MalformedFileError, load_online, load_sigcomp2009_nfi, read_nfi_file


def write_hwr(path: Path, pressures: list[object], *, count: int | None = None, extra_row: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(pressures) if count is None else count
    body = "".join(f"\t {1000 + 7 * i} {2000 + 5 * i}     {p}  {900 + i}   {400 + i}\n" for i, p in enumerate(pressures))
    path.write_text(f"ABCDE-012_345_678 {n}\n{body}{extra_row or ''}")
    return path


@pytest.fixture()
def nfi(tmp_path: Path) -> Path:
    root = tmp_path / "sigcomp2009-nfi"
    write_hwr(root / "genuines" / "NFI-00101001.hwr", [0, 300, 500, 0, -1, -1, 200])
    write_hwr(root / "genuines" / "NFI-00102001.hwr", [10, 20])
    write_hwr(root / "forgeries" / "NFI-01503001.hwr", [-4, -1, 100, 1024])  # writer 015 forging 001
    write_hwr(root / "genuines" / "NFI-02001002.hwr", [5, 6])  # a forgery filed under genuines/
    write_hwr(root / "genuines" / "NFI-00202002.hwr", [5, 6])
    return root


def test_labels_and_writer_come_from_the_file_name(nfi: Path) -> None:
    ds = load_sigcomp2009_nfi(nfi)
    assert list(ds.writers) == ["001", "002"]
    assert [(s.label, s.index) for s in ds.writers["001"]] == [
        (Label.GENUINE, 1), (Label.GENUINE, 2), (Label.SKILLED, 3)
    ]
    # The folder says genuine but author 020 != owner 002: the name wins.
    assert [s.label for s in ds.writers["002"]] == [Label.SKILLED, Label.GENUINE]
    assert [s.path.name for s in ds.writers["002"]] == ["NFI-02001002.hwr", "NFI-00202002.hwr"]


def test_points_pen_state_and_synthesised_time(nfi: Path) -> None:
    tr = read_nfi_file(nfi / "genuines" / "NFI-00101001.hwr")
    assert tr.pen_down.tolist() == [False, True, True, False, False, False, True]
    np.testing.assert_allclose(tr.t, np.arange(7) / 200.0)
    np.testing.assert_allclose(tr.pressure[1], 300 / 1024)
    d = tr.device
    assert (d.pressure_levels, d.nominal_rate_hz, d.time_measured, d.units) == (1024, 200.0, False, "device")
    f = read_nfi_file(nfi / "forgeries" / "NFI-01503001.hwr")
    assert f.pressure[:2].tolist() == [0.0, 0.0] and f.pressure[3] == 1.0  # sentinels -4/-1 are pen-up


@pytest.mark.parametrize(
    ("pressures", "count", "extra", "line", "reason"),
    [
        ([1, 2, 3], 4, None, 5, "declares 4 points"),
        ([1, 2, "x"], None, None, 4, "non-numeric pressure"),
        ([1, 2], 3, "1 2 3\n", 4, "3 columns"),
        ([1, 1025], None, None, 3, "pressure 1025"),
        ([1, -5], None, None, 3, "pressure -5"),
    ],
)
def test_malformed(tmp_path: Path, pressures: list[object], count: int | None, extra: str | None, line: int, reason: str) -> None:
    path = write_hwr(tmp_path / "NFI-00101001.hwr", pressures, count=count, extra_row=extra)
    with pytest.raises(MalformedFileError) as err:
        read_nfi_file(path)
    assert (err.value.path, err.value.line) == (path, line)
    assert reason in err.value.reason


def test_bad_header_and_bad_name(nfi: Path) -> None:
    bad = nfi / "genuines" / "NFI-00103001.hwr"
    bad.write_text("just-a-name\n1 2 3 4 5\n")
    odd = write_hwr(nfi / "forgeries" / "NFI-1.hwr", [1])
    with pytest.raises(MalformedFileError, match=r"NFI-00103001.hwr:1: bad header"):
        read_nfi_file(bad)
    with pytest.raises(MalformedFileError, match=r"NFI-1\.hwr: file name does not follow"):
        load_online(nfi, "sigcomp2009-nfi")
    ds = load_online(nfi, "sigcomp2009-nfi", skip_malformed=True)
    assert {e.path for e in ds.skipped} == {bad, odd}
    assert sum(len(v) for v in ds.writers.values()) == 5
