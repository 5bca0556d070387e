"""The pen trajectory: the one definition every part of the appliance uses.

A trajectory is what the pen did, point by point, plus what we know about the device that
recorded it. Readers (datasets, evdev, the serial pad) build one; preprocessing, features,
models, rendering and the daemon consume it. Construction validates, so that anything holding a
``Trajectory`` can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.errors import VerificationError

#: The longest signature we accept. 100 000 points is 8 minutes at 200 Hz: anything longer is a
#: stuck pen or a corrupt file, never a signature, and would make DTW quadratic cost explode.
MAX_POINTS = 100_000

CoordinateUnits = Literal["mm", "device"]


class TrajectoryError(VerificationError, ValueError):
    """A trajectory could not be built: the message names the problem and where it is."""


@dataclass(frozen=True)
class DeviceInfo:
    """What is known about the device that recorded a trajectory.

    ``units`` says what x and y are in: ``"mm"`` when the device reported its resolution and the
    reader converted, ``"device"`` otherwise (then ``resolution`` is ``None``).
    ``resolution`` is device units per millimetre of the raw axes, when known.
    ``pressure_levels`` is the raw pressure range (e.g. 1024); ``None`` when the device has no
    pressure, in which case pressure is 1.0 while the pen is down.
    ``time_measured`` is False when timestamps were synthesised from ``nominal_rate_hz``.
    """

    name: str = "unknown"
    units: CoordinateUnits = "device"
    resolution: float | None = None
    pressure_levels: int | None = None
    nominal_rate_hz: float | None = None
    time_measured: bool = True

    def __post_init__(self) -> None:
        if self.units not in ("mm", "device"):
            raise TrajectoryError(f"units must be 'mm' or 'device', got {self.units!r}")
        if self.resolution is not None and not (np.isfinite(self.resolution) and self.resolution > 0):
            raise TrajectoryError(f"resolution must be a positive number, got {self.resolution!r}")
        if self.pressure_levels is not None and self.pressure_levels < 1:
            raise TrajectoryError(f"pressure_levels must be >= 1, got {self.pressure_levels!r}")
        if self.nominal_rate_hz is not None and not (
            np.isfinite(self.nominal_rate_hz) and self.nominal_rate_hz > 0
        ):
            raise TrajectoryError(f"nominal_rate_hz must be positive, got {self.nominal_rate_hz!r}")
        if not self.time_measured and self.nominal_rate_hz is None:
            raise TrajectoryError("time not measured: nominal_rate_hz is required to synthesise it")

    @property
    def has_pressure(self) -> bool:
        return self.pressure_levels is not None


def _column(name: str, values: object, dtype: type) -> np.ndarray:
    # A copy, made read-only below: a view of the caller's array would change with it after the
    # checks (a NaN written in later, a reference redrawn differently; found by a review).
    arr: np.ndarray = np.array(values, dtype=dtype, copy=True)
    if arr.ndim != 1:
        raise TrajectoryError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Per-point pen samples and their device.

    ``x``, ``y``: position in ``device.units`` (y grows downwards, as on a tablet or screen).
    ``pressure``: normalised to 0..1.
    ``t``: seconds from the first sample, non-decreasing.
    ``pen_down``: True where the pen touches the surface. A stroke is a maximal run of pen-down
    points; pen-up points (hover, proximity) are kept because their timing carries rhythm.
    ``gaps``: indices ``i`` where samples were lost between point ``i-1`` and ``i`` (an evdev
    SYN_DROPPED, a corrupt serial frame): the reader knows, so the trajectory says so.
    ``stroke_breaks``: indices ``i`` where a new stroke starts although points ``i-1`` and ``i``
    are both pen-down: devices that report only contact samples with an end-of-stroke flag
    (SUSIG's ``endpts``) lift the pen between two recorded points.
    """

    x: np.ndarray
    y: np.ndarray
    pressure: np.ndarray
    t: np.ndarray
    pen_down: np.ndarray
    device: DeviceInfo = field(default_factory=DeviceInfo)
    gaps: tuple[int, ...] = ()
    stroke_breaks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        cols = {
            "x": _column("x", self.x, np.float64),
            "y": _column("y", self.y, np.float64),
            "pressure": _column("pressure", self.pressure, np.float64),
            "t": _column("t", self.t, np.float64),
            "pen_down": _column("pen_down", self.pen_down, bool),
        }
        n = len(cols["x"])
        if n == 0:
            raise TrajectoryError("empty trajectory: no points")
        if n > MAX_POINTS:
            raise TrajectoryError(f"trajectory too long: {n} points (limit {MAX_POINTS})")
        for name, arr in cols.items():
            if len(arr) != n:
                raise TrajectoryError(f"column {name} has {len(arr)} points, x has {n}")
            if arr.dtype != bool:
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    raise TrajectoryError(
                        f"non-finite {name} at point {int(bad[0])} ({arr[bad[0]]!r}); "
                        f"{bad.size} such point(s)"
                    )
        back = np.flatnonzero(np.diff(cols["t"]) < 0)
        if back.size:
            i = int(back[0]) + 1
            raise TrajectoryError(
                f"time goes backwards at point {i}: {cols['t'][i - 1]:.6f} s -> {cols['t'][i]:.6f} s"
            )
        p = cols["pressure"]
        out = np.flatnonzero((p < 0.0) | (p > 1.0))
        if out.size:
            raise TrajectoryError(
                f"pressure must be normalised to 0..1; point {int(out[0])} has {p[out[0]]!r}"
            )
        for name in ("gaps", "stroke_breaks"):
            idx = tuple(sorted({int(g) for g in getattr(self, name)}))
            if any(g <= 0 or g >= n for g in idx):
                raise TrajectoryError(f"{name} indices must lie in 1..{n - 1}, got {idx}")
            object.__setattr__(self, name, idx)
        for name, arr in cols.items():
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def duration(self) -> float:
        return float(self.t[-1] - self.t[0])

    @property
    def ink_time(self) -> float:
        """Seconds with the pen down: the sum of the strokes' durations (pauses excluded)."""
        return float(sum(self.t[s.stop - 1] - self.t[s.start] for s in self.strokes()))

    def strokes(self) -> list[slice]:
        """Slices of maximal pen-down runs (split at ``stroke_breaks``), in order."""
        d = np.concatenate(([False], self.pen_down, [False])).astype(np.int8)
        edges = np.diff(d)
        starts = set(np.flatnonzero(edges == 1).tolist())
        ends = set(np.flatnonzero(edges == -1).tolist())
        for b in self.stroke_breaks:
            if self.pen_down[b] and self.pen_down[b - 1]:
                starts.add(b)
                ends.add(b)
        return [slice(s, e) for s, e in zip(sorted(starts), sorted(ends))]

    def stroke_ids(self) -> np.ndarray:
        """Per point: the index of its stroke, or -1 for pen-up points."""
        ids = np.full(len(self), -1, dtype=np.int32)
        for k, sl in enumerate(self.strokes()):
            ids[sl] = k
        return ids

    def xy_mm(self) -> np.ndarray | None:
        """Positions in millimetres, or None when the device's resolution is unknown."""
        xy = np.column_stack((self.x, self.y))
        if self.device.units == "mm":
            return xy
        if self.device.resolution is not None:
            return xy / self.device.resolution
        return None

    @classmethod
    def from_samples(
        cls,
        x: object,
        y: object,
        pressure: object,
        *,
        device: DeviceInfo,
        t: object | None = None,
        pen_down: object | None = None,
        gaps: tuple[int, ...] = (),
        stroke_breaks: tuple[int, ...] = (),
    ) -> "Trajectory":
        """Build from raw columns: ``pressure`` in raw levels (0..device.pressure_levels).

        Without ``t`` the times are synthesised from ``device.nominal_rate_hz`` (the device must
        then say ``time_measured=False``). Without ``pen_down`` the pen is down where pressure > 0
        (or everywhere when the device has no pressure).
        """
        xa = np.asarray(x, dtype=np.float64)
        if t is None:
            if device.time_measured:
                raise TrajectoryError("no timestamps given but device.time_measured is True")
            ta = np.arange(len(xa), dtype=np.float64) / float(device.nominal_rate_hz)  # type: ignore[arg-type]
        else:
            ta = np.asarray(t, dtype=np.float64)
            if ta.ndim == 1 and len(ta):
                ta = ta - ta[0]
        raw_p = np.asarray(pressure, dtype=np.float64)
        if device.pressure_levels is None:
            if pen_down is None:
                pen_down = np.ones(len(xa), dtype=bool)
            p = np.asarray(pen_down, dtype=np.float64)
        else:
            p = raw_p / float(device.pressure_levels)
            if pen_down is None:
                pen_down = raw_p > 0
        return cls(x=xa, y=y, pressure=p, t=ta, pen_down=pen_down, device=device, gaps=gaps, stroke_breaks=stroke_breaks)  # type: ignore[arg-type]
