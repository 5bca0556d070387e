"""SUSIG readers on small files written here to the format's specification (no committed data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import (
    Label,
    MalformedFileError,
    load_online,
    load_susig_blind,
    load_susig_visual,
    read_susig_file,
)

HEADER = "X, Y, TStamp, Pres., EndPts"


def rows_for(n: int, *, t0: int = 0, dt: int = 10, ends: tuple[int, ...] = (), pmax: int = 200) -> list[list[int]]:
    """n synthetic points: a slanted line, pressure rising, endpts=1 at the rows in ``ends``."""
    return [[100 + 3 * i, 50 + 2 * i, t0 + dt * i, min(pmax, 10 + i), 1 if i in ends else 0] for i in range(n)]


def write_sig(path: Path, rows: list[list[object]], *, datasize: int | None = None, header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(rows) if datasize is None else datasize
    body = "\n".join(" ".join(str(v) for v in r) for r in rows)
    path.write_text(f"{header}\nDataSize: {n}\n{body}\n")
    return path


@pytest.fixture()
def visual(tmp_path: Path) -> Path:
    root = tmp_path / "VisualSubCorpus"
    for s in (1, 2):
        for n in (1, 2):
            write_sig(root / "GENUINE" / f"SESSION{s}" / f"001_{s}_{n}.sig", rows_for(6, ends=(2,)))
    write_sig(root / "GENUINE" / "SESSION1" / "002_1_1.sig", rows_for(5))  # a session-1-only writer
    write_sig(root / "FORGERY" / "001_f_1.sig", rows_for(4))
    write_sig(root / "FORGERY" / "002_f_3.sig", rows_for(4))
    return root


def test_visual_layout_sessions_labels_and_order(visual: Path) -> None:
    ds = load_susig_visual(visual)
    assert ds.name == "susig-visual"
    assert list(ds.writers) == ["001", "002"]
    assert [(s.label, s.session, s.index) for s in ds.genuine("001")] == [
        (Label.GENUINE, 1, 1), (Label.GENUINE, 1, 2), (Label.GENUINE, 2, 1), (Label.GENUINE, 2, 2)
    ]
    assert [(s.session, s.index) for s in ds.skilled("002")] == [(None, 3)]
    assert {s.session for s in ds.genuine("002")} == {1}
    assert ds.skipped == []


def test_visual_points_strokes_and_device(visual: Path) -> None:
    tr = read_susig_file(visual / "GENUINE" / "SESSION1" / "001_1_1.sig", "visual")
    assert len(tr) == 6
    assert tr.pen_down.all()  # contact points only
    assert tr.stroke_breaks == (3,)  # after the endpts=1 row at index 2
    assert [(s.start, s.stop) for s in tr.strokes()] == [(0, 3), (3, 6)]
    np.testing.assert_allclose(tr.t, np.arange(6) * 0.01)  # ms -> s
    np.testing.assert_allclose(tr.pressure, (10 + np.arange(6)) / 255)
    d = tr.device
    assert (d.name, d.units, d.pressure_levels, d.nominal_rate_hz, d.time_measured) == (
        "Interlink ePad Ink", "device", 255, 100.0, True
    )


def test_endpts_on_the_last_row_adds_no_break(tmp_path: Path) -> None:
    tr = read_susig_file(write_sig(tmp_path / "a.sig", rows_for(4, ends=(1, 3))))
    assert tr.stroke_breaks == (2,)


def test_duplicate_timestamps_are_kept(tmp_path: Path) -> None:
    rows = rows_for(5)
    rows[3][2] = rows[2][2]
    tr = read_susig_file(write_sig(tmp_path / "dup.sig", rows))
    assert len(tr) == 5 and tr.t[3] == tr.t[2]


def test_blind_layout_and_pressure_scale(tmp_path: Path) -> None:
    root = tmp_path / "BlindSubCorpus"
    for n in range(1, 9):  # some Blind writers have 8 genuine
        write_sig(root / "GENUINE" / f"017_g_{n}.sig", rows_for(3, pmax=1023))
    rows = rows_for(3)
    rows[1][3] = 1023
    write_sig(root / "FORGERY" / "017_f_2.sig", rows)
    ds = load_online(root, "susig-blind")
    assert len(ds.genuine("017")) == 8 and len(ds.skilled("017")) == 1
    assert all(s.session is None for s in ds.writers["017"])
    f = ds.skilled("017")[0].trajectory
    assert f.pressure[1] == 1.0 and f.device.pressure_levels == 1023 and f.device.name == "Wacom Graphire2"


def test_clock_jitter_and_wrap_are_repaired(tmp_path: Path) -> None:
    jitter = rows_for(6)
    jitter[3][2], jitter[4][2] = 30, 20  # one step back by one sample period, then caught up
    tr = read_susig_file(write_sig(tmp_path / "j.sig", jitter))
    # Re-timed by the general rule (tools.datasets.clock): midway between its in-order neighbours.
    assert np.all(np.diff(tr.t) > 0) and tr.t[4] == pytest.approx(0.04)
    wrap = rows_for(6, ends=(2,))
    wrap[3][2] += 4294967  # first point of a stroke stamped 2**32 us late
    tr = read_susig_file(write_sig(tmp_path / "w.sig", wrap), "blind")
    np.testing.assert_allclose(tr.t, np.arange(6) * 0.01)
    with pytest.raises(MalformedFileError) as err:
        read_susig_file(tmp_path / "w.sig", "blind", repair_clock=False)
    assert err.value.line == 2 + 5


@pytest.mark.parametrize(
    ("name", "mutate", "line", "reason"),
    [
        ("count.sig", lambda p: write_sig(p, rows_for(4), datasize=5), 7, "declares 5 points"),
        ("count_long.sig", lambda p: write_sig(p, rows_for(6), datasize=5), 8, "declares 5 points"),
        ("header.sig", lambda p: p.write_text(f"{HEADER}\nSize 3\n1 2 3 4 0\n"), 2, "DataSize"),
        ("noheader.sig", lambda p: write_sig(p, rows_for(3), header="1 2 3 4 0"), 1, "header"),
        ("text.sig", lambda p: write_sig(p, [*rows_for(2), [1, 2, "3x", 4, 0]]), 5, "non-numeric t"),
        ("cols.sig", lambda p: write_sig(p, [*rows_for(3), [1, 2, 40, 4]]), 6, "4 columns"),
        # 50 ms back at 100 Hz: more than the two sample periods re-timed as a clock glitch.
        ("back.sig", lambda p: write_sig(p, [*rows_for(6), [1, 2, 0, 4, 0]]), 9, "backwards"),
        ("pressure.sig", lambda p: write_sig(p, [*rows_for(1), [1, 2, 30, 256, 0]]), 4, "pressure 256"),
        ("endpts.sig", lambda p: write_sig(p, [*rows_for(1), [1, 2, 30, 4, 2]]), 4, "endpts"),
        ("nan.sig", lambda p: write_sig(p, [*rows_for(2), [1, "nan", 30, 4, 0]]), 5, "non-finite y"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path: Path, name: str, mutate, line: int, reason: str) -> None:
    path = tmp_path / name
    mutate(path)
    with pytest.raises(MalformedFileError) as err:
        read_susig_file(path)
    assert err.value.path == path
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_malformed_raise_by_default_and_skip_on_request(visual: Path) -> None:
    bad = write_sig(visual / "GENUINE" / "SESSION2" / "001_2_3.sig", [*rows_for(6), [1, 2, 0, 4, 0]])
    badname = write_sig(visual / "FORGERY" / "001_x_1.sig", rows_for(3))
    with pytest.raises(MalformedFileError):
        load_susig_visual(visual)
    ds = load_susig_visual(visual, skip_malformed=True)
    assert sorted(e.path for e in ds.skipped) == sorted([bad, badname])
    assert len(ds.genuine("001")) == 4 and len(ds.skilled("001")) == 1


def test_missing_or_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GENUINE/SESSION"):
        load_susig_visual(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files of the format"):
        load_susig_blind(tmp_path / "empty")
