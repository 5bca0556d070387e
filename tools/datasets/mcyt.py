"""MCYT signatures in the "exercise" layout (an enrolment/verification split with ground truth).

Layout::

    enrollment/WWW-g-NN.txt     references: genuine, ``enrollment=True``
    verification/WWW-NN.txt     questioned: label from gt.txt
    gt.txt                      lines ``WWW-NN g|f`` (g genuine, f skilled forgery)
    users_valid.txt             the labelled writers, one id per line: only these are loaded

Rows ``t(s) x y pressure penup azimuth inclination``: time in seconds, ``penup`` nonzero while the
pen is lifted (pen-down is ``penup == 0``), pressure 0..1024. MCYT was captured on a Wacom Intuos
at 100 Hz. Small backward time steps are re-timed by the rule of :mod:`tools.datasets.clock` and
counted; larger ones are refused with file and line.

``gt.txt`` and ``users_valid.txt`` are the index of the set, not samples: a malformed line there
always raises (skipping it would silently mislabel or drop files). A verification file of a valid
writer with no gt.txt line is a malformed sample (skippable); gt lines with no file are logged.

The shared data has no copy of MCYT; this reader follows the exercise layout as specified.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from pathlib import Path

from models.trajectory import DeviceInfo, Trajectory
from tools.datasets._common import (
    assemble,
    build_trajectory,
    check_range,
    no_files_error,
    parse_rows,
    read_all,
    read_text,
    require_folder,
    retime,
)
from tools.datasets.types import ClockRepairs, Dataset, Label, MalformedFileError, OnlineSample, SkipLog

log = logging.getLogger(__name__)

FMT = "mcyt-exercise"
LAYOUT = (
    "enrollment/WWW-g-NN.txt, verification/WWW-NN.txt, gt.txt ('WWW-NN g|f' lines) "
    "and users_valid.txt (one writer id per line)"
)
COLUMNS = ("t", "x", "y", "pressure", "penup", "azimuth", "inclination")
DEVICE = DeviceInfo(
    name="Wacom Intuos (MCYT)",
    units="device",
    pressure_levels=1024,
    nominal_rate_hz=100.0,
    time_measured=True,
)

_ENROL = re.compile(r"(\w+?)-g-(\d+)\.txt", re.IGNORECASE)
_VERIFY = re.compile(r"(\w+?)-(\d+)\.txt", re.IGNORECASE)
_GT = re.compile(r"(\w+?-\d+)\s+([gf])", re.IGNORECASE)


def read_mcyt_file(path: Path) -> Trajectory:
    """Parse one MCYT exercise ``.txt`` file (time in seconds from its first point)."""
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[Trajectory, ClockRepairs]:
    table = parse_rows(path, read_text(path).splitlines(), 1, COLUMNS)
    rows = table.rows
    check_range(path, table, 3, "pressure", 0, DEVICE.pressure_levels or 0)
    t, retimed = retime(path, table, rows[:, 0], "s")
    traj = build_trajectory(
        path,
        table,
        x=rows[:, 1],
        y=rows[:, 2],
        pressure=rows[:, 3],
        t=t,
        pen_down=rows[:, 4] == 0,
        device=DEVICE,
    )
    return traj, ClockRepairs(retimed_steps=retimed)


def _read_valid_users(path: Path) -> set[str]:
    users: set[str] = set()
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 1:
            raise MalformedFileError(path, i, "expected one writer id per line")
        users.add(tok[0])
    if not users:
        raise MalformedFileError(path, None, "lists no writers")
    return users


def _read_gt(path: Path) -> dict[str, Label]:
    labels: dict[str, Label] = {}
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        m = _GT.fullmatch(line.strip())
        if m is None:
            raise MalformedFileError(path, i, "expected 'WWW-NN g' or 'WWW-NN f'")
        key, tag = m.group(1), m.group(2).lower()
        if key in labels:
            raise MalformedFileError(path, i, f"{key} listed twice")
        labels[key] = Label.GENUINE if tag == "g" else Label.SKILLED
    return labels


def _find(root: Path, name: str) -> Path:
    """A child of ``root`` matched case-insensitively (the set was made on a case-blind disk)."""
    for p in root.iterdir():
        if p.name.lower() == name.lower():
            return p
    raise ValueError(f"{FMT}: {root} has no {name} (expected layout: {LAYOUT})")


def _enrol_sample(path: Path) -> OnlineSample:
    m = _ENROL.fullmatch(path.name)
    if m is None:
        raise MalformedFileError(path, None, "enrollment file name does not follow WWW-g-NN.txt")
    traj, clock = _read(path)
    return OnlineSample(
        writer=m.group(1), label=Label.GENUINE, trajectory=traj, path=path, index=int(m.group(2)), enrollment=True,
        clock=clock,
    )


def _verify_sample(path: Path, gt: dict[str, Label], gt_path: Path) -> OnlineSample:
    m = _VERIFY.fullmatch(path.name)
    if m is None:
        raise MalformedFileError(path, None, "verification file name does not follow WWW-NN.txt")
    label = gt.get(path.stem)
    if label is None:
        raise MalformedFileError(path, None, f"no label for {path.stem} in {gt_path}")
    traj, clock = _read(path)
    return OnlineSample(writer=m.group(1), label=label, trajectory=traj, path=path, index=int(m.group(2)), clock=clock)


def _writer_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


def load_mcyt_exercise(folder: Path, *, skip_malformed: bool = False) -> Dataset[OnlineSample]:
    """Writers of ``users_valid.txt``: enrolment references and labelled questioned signatures."""
    started = time.perf_counter()
    root = require_folder(Path(folder), FMT, LAYOUT)
    enrol_dir, verify_dir = _find(root, "enrollment"), _find(root, "verification")
    gt_path, users_path = _find(root, "gt.txt"), _find(root, "users_valid.txt")
    users = _read_valid_users(users_path)
    gt = _read_gt(gt_path)
    enrol = sorted(p for p in enrol_dir.iterdir() if p.suffix.lower() == ".txt" and _writer_of(p) in users)
    verify = sorted(p for p in verify_dir.iterdir() if p.suffix.lower() == ".txt" and _writer_of(p) in users)
    if not enrol and not verify:
        raise no_files_error(FMT, root, LAYOUT)
    unused = sorted(k for k in gt if k.split("-", 1)[0] in users and not (verify_dir / f"{k}.txt").exists())
    if unused:
        log.warning("%s: %d gt.txt entries of valid writers have no file (first: %s)", FMT, len(unused), unused[0])
    skips = SkipLog(skip_malformed)
    samples = read_all(enrol, _enrol_sample, skips)
    samples += read_all(verify, partial(_verify_sample, gt=gt, gt_path=gt_path), skips)
    missing = sorted(users - {s.writer for s in samples})
    if missing:
        log.warning("%s: %d valid writer(s) have no usable file (first: %s)", FMT, len(missing), missing[0])
    return assemble(FMT, samples, skips, started)
