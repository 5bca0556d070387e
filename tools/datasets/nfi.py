"""SigComp2009 NFI online part: ``.hwr`` files from a Wacom A4 tablet with an inking pen.

File: line 1 ``NAME N`` (in the shared copy NAME is the placeholder ``ABCDE-012_345_678`` in every
file, so it is not checked against the file name), then N rows of 5 integers
``x y pressure azimuth elevation``. No timestamps: the tablet sampled at 200 Hz.

Pressure is 0..1024 while touching. The real files also hold negative sentinels (measured on the
shared copy): ``-1`` on 24 % of all points, with x/y still moving (the pen hovering in proximity),
and ``-4`` on 786 points, where the angles read 0 (pen at the edge of proximity). Both are pen-up;
we keep the points (hover timing carries rhythm) with pressure 0.

File name ``NFI-AAASSOOO.hwr``: AAA wrote it, SS is the sample number, OOO owns the signature;
genuine when AAA == OOO. The sample's writer is OOO. The ``genuines/`` and ``forgeries/`` folders
agree with the names in the shared copy, but the name is authoritative: a disagreement is logged
and the name wins.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from models.trajectory import DeviceInfo, Trajectory
from tools.datasets._common import (
    build_trajectory,
    check_range,
    load_folder,
    parse_rows,
    read_text,
)
from tools.datasets.types import Dataset, Label, MalformedFileError, OnlineSample

log = logging.getLogger(__name__)

FMT = "sigcomp2009-nfi"
LAYOUT = "genuines/ and forgeries/ holding NFI-AAASSOOO.hwr (AAA author, SS sample, OOO owner)"
COLUMNS = ("x", "y", "pressure", "azimuth", "elevation")
RATE_HZ = 200.0
DEVICE = DeviceInfo(
    name="Wacom A4 tablet, inking pen (SigComp2009 NFI)",
    units="device",
    pressure_levels=1024,
    nominal_rate_hz=RATE_HZ,
    time_measured=False,
)
#: Smallest pressure value accepted: the hover (-1) and out-of-range (-4) sentinels seen in the data.
MIN_SENTINEL = -4

_NAME = re.compile(r"NFI-(\d{3})(\d{2})(\d{3})\.hwr", re.IGNORECASE)


def read_nfi_file(path: Path) -> Trajectory:
    """Parse one NFI ``.hwr`` file; times synthesised at 200 Hz."""
    path = Path(path)
    lines = read_text(path).splitlines()
    if not lines:
        raise MalformedFileError(path, 1, "empty file: expected 'NAME N' header")
    head = lines[0].split()
    if len(head) != 2 or not head[1].isdigit():
        raise MalformedFileError(path, 1, "bad header: expected 'NAME N'")
    table = parse_rows(path, lines[1:], 2, COLUMNS, expected_rows=int(head[1]))
    rows = table.rows
    check_range(path, table, 2, "pressure", MIN_SENTINEL, DEVICE.pressure_levels or 0)
    raw_p = rows[:, 2]
    return build_trajectory(
        path,
        table,
        x=rows[:, 0],
        y=rows[:, 1],
        pressure=np.clip(raw_p, 0.0, None),
        pen_down=raw_p > 0,
        device=DEVICE,
    )


def _sample(path: Path) -> OnlineSample:
    m = _NAME.fullmatch(path.name)
    if m is None:
        raise MalformedFileError(path, None, f"file name does not follow {LAYOUT}")
    author, number, owner = m.groups()
    label = Label.GENUINE if author == owner else Label.SKILLED
    folder = path.parent.name.lower()
    if (folder == "genuines" and label is Label.SKILLED) or (folder == "forgeries" and label is Label.GENUINE):
        log.warning("%s: under %s/ but the name says %s; trusting the name", path, folder, label.value)
    traj = read_nfi_file(path)
    return OnlineSample(writer=owner, label=label, trajectory=traj, path=path, index=int(number))


def load_sigcomp2009_nfi(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """All ``.hwr`` files under ``folder`` (both sub-folders), labelled from their names."""
    return load_folder(folder, FMT, LAYOUT, [".hwr"], _sample, skip_malformed=skip_malformed)
