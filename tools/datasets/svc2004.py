"""SVC2004 (First International Signature Verification Competition), Task 2 files.

File ``U{u}S{s}.TXT``: line 1 the point count, then rows
``X Y TimeStamp(ms) ButtonStatus Azimuth Altitude Pressure``. S1-S20 are genuine, S21-S40 skilled
forgeries of the same writer. Points with the pen lifted are recorded too: ``ButtonStatus`` is 0
then, and values above 1 occur while touching, so pen-down is ``ButtonStatus > 0`` (not ``== 1``).
Pressure runs 0..1023. Timestamps are absolute (they may start at a large value); the trajectory
counts from the first. Small backward time steps (real SVC2004 files have 8-9 ms ones) are re-timed
by the rule of :mod:`tools.datasets.clock` and counted; larger ones are refused with file and line.

Writer ids are the user number without the ``U`` and without padding ("1", "12") so that
:func:`writer_split` can use the last digit. Files may sit directly in the folder or in any
sub-folder, with ``.TXT`` in any case.

The shared data has no copy of SVC2004; this reader follows the published format.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

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

FMT = "svc2004"
LAYOUT = "U{u}S{s}.TXT files (S1-S20 genuine, S21-S40 skilled), in the folder or sub-folders"
COLUMNS = ("x", "y", "timestamp", "button", "azimuth", "altitude", "pressure")
GENUINE_MAX = 20
SAMPLES_MAX = 40
DEVICE = DeviceInfo(
    name="WACOM Intuos (SVC2004)",  # 100 Hz per the SVC2004 paper; times are measured anyway
    units="device",
    pressure_levels=1023,
    nominal_rate_hz=100.0,
    time_measured=True,
)

_NAME = re.compile(r"U(\d+)S(\d+)\.txt", re.IGNORECASE)
#: Files that are meant to be signatures (a malformed one among them is reported, not ignored).
_CANDIDATE = re.compile(r"U\d", re.IGNORECASE)


def read_svc2004_file(path: Path) -> Trajectory:
    """Parse one SVC2004 Task 2 file (time in seconds from its first point)."""
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[Trajectory, ClockRepairs]:
    lines = read_text(path).splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise MalformedFileError(path, 1, "bad header: expected the point count")
    table = parse_rows(path, lines[1:], 2, COLUMNS, expected_rows=int(lines[0]))
    rows = table.rows
    check_range(path, table, 6, "pressure", 0, DEVICE.pressure_levels or 0)
    check_range(path, table, 3, "button status", 0, float("inf"))
    t_ms, retimed = retime(path, table, rows[:, 2], "ms")
    traj = build_trajectory(
        path,
        table,
        x=rows[:, 0],
        y=rows[:, 1],
        pressure=rows[:, 6],
        t=(t_ms - t_ms[0]) / 1000.0,
        pen_down=rows[:, 3] > 0,
        device=DEVICE,
    )
    return traj, ClockRepairs(retimed_steps=retimed)


def _sample(path: Path) -> OnlineSample:
    m = _NAME.fullmatch(path.name)
    if m is None:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    user, number = int(m.group(1)), int(m.group(2))
    if not 1 <= number <= SAMPLES_MAX:
        raise MalformedFileError(path, None, f"sample number {number} outside 1..{SAMPLES_MAX}")
    label = Label.GENUINE if number <= GENUINE_MAX else Label.SKILLED
    traj, clock = _read(path)
    return OnlineSample(writer=str(user), label=label, trajectory=traj, path=path, index=number, clock=clock)


def load_svc2004(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """Every ``U*S*.TXT`` under ``folder``; other ``.txt`` files (readmes) are ignored."""
    started = time.perf_counter()
    root = require_folder(Path(folder), FMT, LAYOUT)
    paths = [p for p in files_with_suffix(root, [".txt"]) if _CANDIDATE.match(p.name)]
    if not paths:
        raise no_files_error(FMT, root, LAYOUT)
    skips = SkipLog(skip_malformed)
    return assemble(FMT, read_all(paths, _sample, skips), skips, started)
