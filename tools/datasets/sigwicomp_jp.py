"""SigWiComp2013 Japanese online signatures (training part): ``.HWR`` files of ``x y pressure``.

No header, no timestamps; pressure 0 while the pen is up. In the shared copy pressure runs 0..100
(max exactly 100, 101 distinct values), so ``pressure_levels`` is 100. Leading points often repeat
(569 of 858 files, up to 42 copies of the first point): kept as recorded, preprocessing removes
duplicates.

Sampling rate: not published with the data, so :data:`RATE_HZ` is an assumption, 200 Hz, chosen
from the data itself (shared copy, all 858 files):

* the median stroke holds 54 pen-down points: 0.27 s at 200 Hz (a plausible kanji stroke),
  0.54 s at 100 Hz (slow);
* the median pen-up gap between strokes holds 24 points, against 29 points (145 ms) in the NFI set
  whose Wacom tablet is known to sample at 200 Hz; SUSIG, timed at 100 Hz, has 178 ms gaps;
* the median file holds 3061 points: 15 s at 200 Hz, an implausible 30 s at 100 Hz;
* 19 % of consecutive points repeat the previous position, typical of a tablet that reports
  faster than a slow-moving pen changes position, not of a slow one.

The device records ``time_measured=False``, so anything that depends on absolute speed knows the
timing is synthetic.

Layout: ``Genuine/WWW/SS_WWW.HWR`` and ``Forged/WWW/SS_FFF_WWW.HWR`` (FFF the forger). The writer
is WWW from the file name (the folder agrees in the shared copy; the name wins otherwise).
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
)
from tools.datasets.types import Dataset, Label, MalformedFileError, OnlineSample, SkipLog

log = logging.getLogger(__name__)

FMT = "sigwicomp2013-jp"
LAYOUT = "Genuine/WWW/SS_WWW.HWR and Forged/WWW/SS_FFF_WWW.HWR"
COLUMNS = ("x", "y", "pressure")
#: Assumed sampling rate; see the module docstring for why 200 Hz.
RATE_HZ = 200.0
DEVICE = DeviceInfo(
    name="unknown tablet (SigWiComp2013 Japanese)",
    units="device",
    pressure_levels=100,
    nominal_rate_hz=RATE_HZ,
    time_measured=False,
)

_GENUINE = re.compile(r"(\d+)_(\d+)\.HWR", re.IGNORECASE)
_FORGED = re.compile(r"(\d+)_(\d+)_(\d+)\.HWR", re.IGNORECASE)


def read_sigwicomp_jp_file(path: Path) -> Trajectory:
    """Parse one Japanese ``.HWR`` file; times synthesised at :data:`RATE_HZ`."""
    path = Path(path)
    table = parse_rows(path, read_text(path).splitlines(), 1, COLUMNS)
    rows = table.rows
    check_range(path, table, 2, "pressure", 0, DEVICE.pressure_levels or 0)
    return build_trajectory(
        path, table, x=rows[:, 0], y=rows[:, 1], pressure=rows[:, 2], device=DEVICE
    )


def _sample(path: Path) -> OnlineSample:
    if (m := _FORGED.fullmatch(path.name)) is not None:
        number, _forger, writer = m.groups()
        label = Label.SKILLED
    elif (m := _GENUINE.fullmatch(path.name)) is not None:
        number, writer = m.groups()
        label = Label.GENUINE
    else:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    top = path.parent.parent.name.lower()
    if top not in ("genuine", "forged") or (top == "genuine") != (label is Label.GENUINE):
        raise MalformedFileError(path, None, f"{label.value} file name outside its folder ({LAYOUT})")
    if path.parent.name != writer:
        log.warning("%s: in folder %s/ but the name says writer %s; trusting the name", path, path.parent.name, writer)
    traj = read_sigwicomp_jp_file(path)
    return OnlineSample(writer=writer, label=label, trajectory=traj, path=path, index=int(number))


def load_sigwicomp2013_jp(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """All ``.HWR`` files under ``Genuine/`` and ``Forged/``."""
    started = time.perf_counter()
    root = require_folder(Path(folder), FMT, LAYOUT)
    paths = files_with_suffix(root, [".hwr"])
    if not paths:
        raise no_files_error(FMT, root, LAYOUT)
    skips = SkipLog(skip_malformed)
    return assemble(FMT, read_all(paths, _sample, skips), skips, started)
