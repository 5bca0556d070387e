"""SUSIG (Kholmatov & Yanikoglu 2009): the Visual and Blind sub-corpora, ``.sig`` files.

File: line 1 a column header (``X, Y, TStamp, Pres., EndPts``), line 2 ``DataSize: N``, then N rows
``x y t(ms) pressure endpts``. The pads report contact points only, so every point is pen-down and
``endpts = 1`` marks the last point of a stroke: the next point starts a new stroke, which we record
as a ``stroke_break`` (the last row never carries the flag in the real files, and a flag there would
mean nothing).

Timestamps: the real files carry two recorder clock quirks (measured on the shared copy):

* Visual (158 of 3020 files) and Blind (1 file): a single step back of at most one sample period
  (10 ms at 100 Hz; always exactly -10 ms in Visual, -1 ms in Blind), immediately caught up by the
  next sample. It is timer jitter, not a reordered recording, and is what every reader with
  timestamps repairs by the one rule of :mod:`tools.datasets.clock` (re-timed linearly between
  its in-order neighbours, counted in ``OnlineSample.clock``; steps back of more than two sample
  periods are refused with file and line).
* Blind (4 files, 15 points): the first point of a stroke is stamped 2**32 microseconds
  (4294967 ms) late and the next point is back on time: a 32-bit microsecond counter wrapped in
  the capture software. That is not a glitch but a number to decode, peculiar to this recorder:
  :func:`decode_counter_wrap` subtracts the 2**32 us from such a single-point spike (counted too),
  before the general rule runs.

``repair_clock=False`` turns both off for anyone who wants the files as they are (then any
backward step is refused).
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from models.trajectory import DeviceInfo, Trajectory
from tools.datasets._common import (
    assemble,
    build_trajectory,
    check_range,
    files_with_suffix,
    no_files_error,
    parse_rows,
    read_all,
    read_text,
    require_folder,
    retime,
)
from tools.datasets.types import ClockRepairs, Dataset, Label, MalformedFileError, OnlineSample, SkipLog

log = logging.getLogger(__name__)

Variant = Literal["visual", "blind"]

COLUMNS = ("x", "y", "t", "pressure", "endpts")

#: The device of each sub-corpus. Resolution is not published with the files: units stay "device".
DEVICES: dict[Variant, DeviceInfo] = {
    "visual": DeviceInfo(
        name="Interlink ePad Ink", units="device", pressure_levels=255, nominal_rate_hz=100.0
    ),
    "blind": DeviceInfo(
        name="Wacom Graphire2", units="device", pressure_levels=1023, nominal_rate_hz=100.0
    ),
}

#: A 32-bit microsecond counter wrapping, in milliseconds.
WRAP_MS = 2**32 / 1000.0

_DATASIZE = re.compile(r"DataSize:\s*(\d+)\s*$", re.IGNORECASE)
_GENUINE_VISUAL = re.compile(r"(\d+)_([12])_(\d+)\.sig", re.IGNORECASE)
_GENUINE_BLIND = re.compile(r"(\d+)_g_(\d+)\.sig", re.IGNORECASE)
_FORGERY = re.compile(r"(\d+)_f_(\d+)\.sig", re.IGNORECASE)

LAYOUT: dict[Variant, str] = {
    "visual": "GENUINE/SESSION{1,2}/{user}_{session}_{n}.sig and FORGERY/{user}_f_{n}.sig",
    "blind": "GENUINE/{user}_g_{n}.sig and FORGERY/{user}_f_{n}.sig",
}


def decode_counter_wrap(t: np.ndarray) -> tuple[np.ndarray, int]:
    """Times with the 32-bit microsecond counter wraps undone, and how many there were.

    A wrap shows as a single-point spike: one sample more than half a wrap later than its
    predecessor while the next sample is back on the clock. Pure: ``t`` (ms) is not modified.
    """
    t = np.array(t, dtype=np.float64)
    spikes = np.flatnonzero(np.diff(t) > WRAP_MS / 2) + 1
    wrapped = 0
    for k in spikes:
        # Only a single-point spike whose successor is back on the clock is a wrap.
        if k + 1 < len(t) and t[k] - t[k + 1] > WRAP_MS / 2:
            t[k] -= round(WRAP_MS)
            wrapped += 1
    return t, wrapped


def read_susig_file(path: Path, variant: Variant = "visual", *, repair_clock: bool = True) -> Trajectory:
    """Parse one SUSIG ``.sig`` file into a trajectory (time in seconds from the first point)."""
    return _read(Path(path), variant, repair_clock)[0]


def _read(path: Path, variant: Variant, repair_clock: bool = True) -> tuple[Trajectory, ClockRepairs]:
    text = read_text(path)
    lines = text.splitlines()
    if len(lines) < 2:
        raise MalformedFileError(path, len(lines) + 1, "missing header: expected column names and 'DataSize: N'")
    header = lines[0].strip()
    if not header or re.fullmatch(r"[-+\d.eE\s]+", header):
        raise MalformedFileError(path, 1, "bad header: expected a column-name line")
    m = _DATASIZE.match(lines[1].strip())
    if not m:
        raise MalformedFileError(path, 2, "bad header: expected 'DataSize: N'")
    table = parse_rows(path, lines[2:], 3, COLUMNS, expected_rows=int(m.group(1)))
    rows = table.rows
    dev = DEVICES[variant]
    check_range(path, table, 3, "pressure", 0, dev.pressure_levels or 0)
    check_range(path, table, 4, "endpts", 0, 1)
    t_ms, wraps = decode_counter_wrap(rows[:, 2]) if repair_clock else (rows[:, 2], 0)
    t_ms, retimed = retime(path, table, t_ms, "ms", repair=repair_clock)
    ends = np.flatnonzero(rows[:-1, 4] == 1)
    traj = build_trajectory(
        path,
        table,
        x=rows[:, 0],
        y=rows[:, 1],
        pressure=rows[:, 3],
        t=t_ms / 1000.0,
        pen_down=np.ones(len(rows), dtype=bool),
        device=dev,
        stroke_breaks=tuple(int(i) + 1 for i in ends),
    )
    return traj, ClockRepairs(retimed_steps=retimed, counter_wraps=wraps)


def _sample(path: Path, root: Path, variant: Variant) -> OnlineSample:
    """Label, writer, session and index come from the file name (and GENUINE/FORGERY folder)."""
    top = path.relative_to(root).parts[0].upper()
    name = path.name
    session: int | None = None
    if (m := _FORGERY.fullmatch(name)) is not None:
        writer, index, label = m.group(1), int(m.group(2)), Label.SKILLED
    elif variant == "visual" and (m := _GENUINE_VISUAL.fullmatch(name)) is not None:
        writer, session, index, label = m.group(1), int(m.group(2)), int(m.group(3)), Label.GENUINE
    elif variant == "blind" and (m := _GENUINE_BLIND.fullmatch(name)) is not None:
        writer, index, label = m.group(1), int(m.group(2)), Label.GENUINE
    else:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT[variant]}")
    expected_top = "GENUINE" if label is Label.GENUINE else "FORGERY"
    if top != expected_top:
        raise MalformedFileError(path, None, f"{label.value} file name under {top}/, expected {expected_top}/")
    if session is not None and path.parent.name.upper() not in (f"SESSION{session}", expected_top):
        raise MalformedFileError(path, None, f"session {session} file under {path.parent.name}/")
    traj, clock = _read(path, variant)
    return OnlineSample(
        writer=writer, label=label, trajectory=traj, path=path, index=index, session=session, clock=clock
    )


def _load(folder: Path, variant: Variant, fmt: str, skip_malformed: bool) -> Dataset[OnlineSample]:
    started = time.perf_counter()
    root = require_folder(folder, fmt, LAYOUT[variant])
    paths = files_with_suffix(root, [".sig"])
    if not paths:
        raise no_files_error(fmt, root, LAYOUT[variant])
    skips = SkipLog(skip_malformed)
    samples = read_all(paths, partial(_sample, root=root, variant=variant), skips)
    return assemble(fmt, samples, skips, started)


def load_susig_visual(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """SUSIG ``VisualSubCorpus``: genuine in two sessions (``sample.session``), skilled forgeries."""
    return _load(Path(folder), "visual", "susig-visual", skip_malformed)


def load_susig_blind(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """SUSIG ``BlindSubCorpus``: no sessions (``session=None``)."""
    return _load(Path(folder), "blind", "susig-blind", skip_malformed)
