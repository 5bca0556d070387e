"""Licence-free synthetic signatures from the kinematic theory of rapid human movements.

Plamondon's sigma-lognormal model describes a pen stroke as the vector sum of overlapping
*impulses*: each one moves the pen by a distance ``D`` along a circular arc whose direction turns
from ``theta_start`` to ``theta_end``, with a speed that is a lognormal function of time::

    v(t)   = D / (sigma * sqrt(2 pi) * (t - t0)) * exp(-(ln(t - t0) - mu)^2 / (2 sigma^2))
    phi(t) = theta_start + (theta_end - theta_start) * Lambda(t)

where ``Lambda`` is the lognormal cumulative distribution (the fraction of ``D`` already covered).
Because the direction turns in proportion to the distance covered, each impulse traces an exact
circular arc and the position has a closed form (no numerical integration), which keeps a
signature at a few milliseconds.

What this module gives:

* :class:`Lognormal`, :class:`Stroke`, :class:`PenStyle`, :class:`WriterModel`: the parameters
  (frozen dataclasses; a writer's model is the "prototype" of one signature).
* :func:`random_writer`: a plausible signature-like prototype (a capital, cursive words made of
  loops, arches, ovals and descenders, sometimes a final flourish).
* :func:`genuine` / :func:`forgery`: one sample of the writer, or one skilled imitation of it.
* :func:`render`: a model sampled exactly as a tablet would report it (:data:`DEFAULT_DEVICE`).
* :func:`make_population`: writers with genuine and forged samples, deterministic from a seed.

Everything is a pure function of its arguments and a ``numpy.random.Generator``; the same seed
gives the same arrays, bit for bit. Coordinates are millimetres, y grows downwards. A signature
takes a few milliseconds (numpy only; the lognormal CDF uses a vectorised erf approximation).

Choices (and why):

* Device: 200 Hz with timestamps jittered by up to +-0.5 ms (a Wacom-like pad reporting measured
  times), 0.01 mm resolution, 10-bit pressure (raw 0..1023, the range the capture layer reports
  for the common pads and what SVC2004/MCYT-era tablets give). Any other ``DeviceInfo`` can be
  passed (rate and pressure levels are honoured; ``resolution=None`` skips quantisation).
* Prototype: x-height 3.5-5.5 mm, ascenders 2-2.6x and capitals 2.4-3.2x that; ink 3.3-5.5
  times as wide as high; impulses with ``exp(mu)`` 0.09-0.16 s (x sqrt of their size),
  ``sigma`` 0.2-0.32 and peaks ``0.55-0.8 exp(mu)`` apart (fluent, strongly overlapping
  impulses); pen-up gaps 0.12-0.45 s; total 1.6-4.8 s. Peak pen speeds 80-550 mm/s (median
  ~240, the fastest in flourishes).
* Pressure: level 35-75 % of full scale, rising over 20-70 ms after touch-down and falling over
  20-80 ms before the lift, lighter where the pen is fast for most writers.

Separation with the classic verifier (``models.classic``, 5 genuine references per writer,
5 genuine and 5 skilled-forgery queries per writer; ``make_population(20, 10, 5, seed=1)``):

=========  ==========================  ======================  ==========
skill      genuine distance (10-90 %)  forgery median (10-90)  EER
=========  ==========================  ======================  ==========
1.0        0.93 (0.80-1.16)            1.19 (1.03-1.45)        18 %
0.7        same                        1.62 (1.34-2.06)        3 %
0.3        same                        2.26 (1.89-2.74)        0 %
=========  ==========================  ======================  ==========

97 % of genuine queries score under 1.3; random forgeries (another writer's genuine samples)
score ~4.9 (EER 0 %). On 50 writers (seed 7): EER 19 % at skill 1.0, 4 % at 0.7, 1.6 % at 0.5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from models.trajectory import DeviceInfo, Trajectory

__all__ = [
    "DEFAULT_DEVICE",
    "Lognormal",
    "PenStyle",
    "Stroke",
    "WriterModel",
    "forgery",
    "genuine",
    "lognormal_fraction",
    "lognormal_speed",
    "lognormal_velocity",
    "make_population",
    "random_writer",
    "render",
    "vary_forgery",
    "vary_genuine",
    "writer_from_json",
    "writer_to_json",
]

#: The virtual tablet: 200 Hz with measured (slightly jittered) timestamps, like a Wacom pad;
#: 0.01 mm coordinate resolution (100 lines/mm); 10-bit pressure (raw 0..1023, the range the
#: capture layer reports for the common pads, normalised by 1023 in the ``Trajectory``).
DEFAULT_DEVICE = DeviceInfo(
    name="synthetic sigma-lognormal",
    units="mm",
    resolution=100.0,
    pressure_levels=1023,
    nominal_rate_hz=200.0,
    time_measured=True,
)

#: A stroke's pen-down window spans each impulse from ``exp(mu - k sigma)`` to ``exp(mu + k sigma)``
#: after its onset: outside it the speed is a few % of the peak and 99 % of ``D`` is covered.
WINDOW_SIGMAS = 2.6

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised error function (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


# The impulse formulas, written once for any broadcastable arguments: :class:`Lognormal` calls them
# with its scalars; the fitting (``tools/lognormal_fit.py``) with a column of impulses at once.


def _lognormal_z(t: np.ndarray, t0: np.ndarray | float, mu: np.ndarray | float,
                 sigma: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    dt = np.asarray(t, dtype=np.float64) - t0
    pos = dt > 0
    z = np.where(pos, (np.log(np.where(pos, dt, 1.0)) - mu) / sigma, -np.inf)
    return z, np.where(pos, dt, np.inf)


def lognormal_fraction(t: np.ndarray, t0: np.ndarray | float, mu: np.ndarray | float,
                       sigma: np.ndarray | float) -> np.ndarray:
    """``Lambda(t)``: the lognormal CDF, the fraction of ``D`` covered by ``t`` (0 before onset)."""
    z, _ = _lognormal_z(t, t0, mu, sigma)
    return 0.5 * (1.0 + _erf(np.where(np.isfinite(z), z, -40.0) / _SQRT2))


def lognormal_speed(t: np.ndarray, D: np.ndarray | float, t0: np.ndarray | float, mu: np.ndarray | float,
                    sigma: np.ndarray | float) -> np.ndarray:
    """The lognormal speed profile ``D / (sigma sqrt(2 pi) (t - t0)) exp(-z^2 / 2)`` (0 before onset)."""
    z, dt = _lognormal_z(t, t0, mu, sigma)
    live = np.isfinite(z)
    zz = np.where(live, z, 0.0)
    return np.where(live, D / (sigma * _SQRT2PI * dt) * np.exp(-0.5 * zz * zz), 0.0)


def lognormal_velocity(t: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Summed velocity ``(len(t), 2)`` of impulses given as rows ``(D, t0, mu, sigma, theta_start,
    theta_end)``: the direction turns in proportion to the distance covered (an arc)."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 6)
    if not len(p):
        return np.zeros((len(t), 2))
    D, t0, mu, sg, ts, te = (p[:, k : k + 1] for k in range(6))
    tt = np.asarray(t, dtype=np.float64)[None, :]
    s = lognormal_speed(tt, D, t0, mu, sg)
    phi = ts + (te - ts) * lognormal_fraction(tt, t0, mu, sg)
    return np.column_stack(((s * np.cos(phi)).sum(axis=0), (s * np.sin(phi)).sum(axis=0)))


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lognormal:
    """One sigma-lognormal impulse (arc form).

    ``D``: distance travelled along the arc (mm). ``t0``: onset (s, in the stroke's own clock).
    ``mu``, ``sigma``: log-time delay and log-response time; the speed peaks at
    ``t0 + exp(mu - sigma**2)``. ``theta_start``/``theta_end``: direction of motion (radians, in
    the tablet frame: x right, y down) at the start and the end of the impulse.
    """

    D: float
    t0: float
    mu: float
    sigma: float
    theta_start: float
    theta_end: float

    def __post_init__(self) -> None:
        vals = (self.D, self.t0, self.mu, self.sigma, self.theta_start, self.theta_end)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"non-finite lognormal parameter in {self}")
        if self.D < 0:
            raise ValueError(f"D must be >= 0, got {self.D}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")

    @property
    def peak_time(self) -> float:
        """When the speed is highest: the mode of the lognormal."""
        return self.t0 + math.exp(self.mu - self.sigma**2)

    def window(self, k: float = WINDOW_SIGMAS) -> tuple[float, float]:
        """The times at which the impulse starts and ends for practical purposes."""
        return self.t0 + math.exp(self.mu - k * self.sigma), self.t0 + math.exp(self.mu + k * self.sigma)

    def fraction(self, t: np.ndarray) -> np.ndarray:
        """``Lambda(t)``: the fraction of ``D`` covered by time ``t`` (0 before onset)."""
        return lognormal_fraction(t, self.t0, self.mu, self.sigma)

    def speed(self, t: np.ndarray) -> np.ndarray:
        """The analytic lognormal speed profile (mm/s)."""
        return lognormal_speed(t, self.D, self.t0, self.mu, self.sigma)

    def direction(self, t: np.ndarray) -> np.ndarray:
        return self.theta_start + (self.theta_end - self.theta_start) * self.fraction(t)

    def displacement(self, t: np.ndarray) -> np.ndarray:
        """Position relative to where the impulse started, shape ``(len(t), 2)``: an exact arc."""
        lam = self.fraction(t)
        turn = self.theta_end - self.theta_start
        if abs(turn) < 1e-9:
            s = self.D * lam
            return np.column_stack((s * math.cos(self.theta_start), s * math.sin(self.theta_start)))
        phi = self.theta_start + turn * lam
        r = self.D / turn
        return np.column_stack(
            (r * (np.sin(phi) - math.sin(self.theta_start)), r * (math.cos(self.theta_start) - np.cos(phi)))
        )


@dataclass(frozen=True)
class Stroke:
    """One pen-down stroke: where the pen lands and the impulses that move it from there.

    ``pressure_scale`` multiplies the writer's pressure level for this stroke (writers press
    differently on different parts of their signature, consistently). ``span``: the pen-down
    interval when it is known rather than implied by the impulses (a stroke fitted to a recording,
    :mod:`tools.lognormal_fit`, touches down and lifts when the recording did, while its first and
    last impulses' slow tails reach further).
    """

    start: tuple[float, float]
    impulses: tuple[Lognormal, ...]
    pressure_scale: float = 1.0
    span: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.impulses:
            raise ValueError("a stroke needs at least one impulse")
        object.__setattr__(self, "start", (float(self.start[0]), float(self.start[1])))
        object.__setattr__(self, "impulses", tuple(self.impulses))
        if self.span is not None:
            a, b = float(self.span[0]), float(self.span[1])
            if not (math.isfinite(a) and math.isfinite(b) and b > a):
                raise ValueError(f"span must be a finite interval, got {self.span}")
            object.__setattr__(self, "span", (a, b))

    def window(self, k: float = WINDOW_SIGMAS) -> tuple[float, float]:
        """Pen-down interval in the stroke's clock: ``span`` when given, else from the first
        impulse's start to the last's end."""
        if self.span is not None:
            return self.span
        w = [imp.window(k) for imp in self.impulses]
        return min(a for a, _ in w), max(b for _, b in w)

    def position(self, t: np.ndarray) -> np.ndarray:
        """Pen position (mm) at the stroke-clock times ``t``, shape ``(len(t), 2)``."""
        t = np.asarray(t, dtype=np.float64)
        xy = np.tile(np.asarray(self.start), (len(t), 1))
        for imp in self.impulses:
            xy += imp.displacement(t)
        return xy

    def params(self) -> np.ndarray:
        """The impulses as rows ``(D, t0, mu, sigma, theta_start, theta_end)``."""
        return np.array([[i.D, i.t0, i.mu, i.sigma, i.theta_start, i.theta_end] for i in self.impulses])

    def velocity(self, t: np.ndarray) -> np.ndarray:
        """The summed velocity vectors (mm/s), shape ``(len(t), 2)``."""
        return lognormal_velocity(np.asarray(t, dtype=np.float64), self.params())

    def speed(self, t: np.ndarray) -> np.ndarray:
        """Magnitude of the summed velocity vectors."""
        v = self.velocity(t)
        return np.hypot(v[:, 0], v[:, 1])


@dataclass(frozen=True)
class PenStyle:
    """How a hand uses the pen, beyond the path: pressure and tremor.

    Pressure (fraction of full scale) is ``level * stroke.pressure_scale * envelope * (1 +
    speed_gain * (v / v_mean - 1))``: the envelope rises over ``rise_s`` after touch-down and falls
    over ``fall_s`` before the lift; fast parts press less (``speed_gain`` < 0) for most writers.
    ``tremor_mm`` / ``tremor_hz``: amplitude and frequency of a hand tremor added to the pen-down
    path (zero for a fluent genuine writer; a forger drawing slowly shakes at 6-10 Hz).
    """

    pressure_level: float = 0.55
    rise_s: float = 0.04
    fall_s: float = 0.05
    speed_gain: float = -0.2
    tremor_mm: float = 0.0
    tremor_hz: float = 8.0


@dataclass(frozen=True)
class WriterModel:
    """A signature prototype: strokes, the pen-up time before each later stroke, the pen style.

    ``pen_up_s[k]`` is the time the pen spends lifted between stroke ``k`` and ``k + 1``.
    ``variability`` scales how much this writer's genuine samples vary (writers differ in
    consistency); 1.0 is typical.
    """

    strokes: tuple[Stroke, ...]
    pen_up_s: tuple[float, ...]
    style: PenStyle = field(default_factory=PenStyle)
    variability: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strokes", tuple(self.strokes))
        object.__setattr__(self, "pen_up_s", tuple(float(g) for g in self.pen_up_s))
        if not self.strokes:
            raise ValueError("a writer model needs at least one stroke")
        if len(self.pen_up_s) != len(self.strokes) - 1:
            raise ValueError(f"{len(self.strokes)} strokes need {len(self.strokes) - 1} pen-up gaps")
        if any(not (g > 0 and math.isfinite(g)) for g in self.pen_up_s):
            raise ValueError(f"pen-up gaps must be positive: {self.pen_up_s}")

    @property
    def duration(self) -> float:
        """Total time from the first touch-down to the last lift (s)."""
        return sum(b - a for a, b in (s.window() for s in self.strokes)) + sum(self.pen_up_s)


def writer_to_json(model: WriterModel) -> dict:
    """A writer model as plain JSON (impulses as ``[D, t0, mu, sigma, theta_start, theta_end]``)."""
    return {
        "strokes": [{"start": list(st.start), "pressure_scale": st.pressure_scale,
                     "impulses": st.params().tolist(), "span": list(st.span) if st.span else None}
                    for st in model.strokes],
        "pen_up_s": list(model.pen_up_s),
        "style": asdict(model.style),
        "variability": model.variability,
    }


def writer_from_json(d: dict) -> WriterModel:
    """The inverse of :func:`writer_to_json`; the dataclasses validate every value."""
    strokes = tuple(
        Stroke(start=(float(s["start"][0]), float(s["start"][1])),
               impulses=tuple(Lognormal(*(float(v) for v in row)) for row in s["impulses"]),
               pressure_scale=float(s["pressure_scale"]),
               span=(float(s["span"][0]), float(s["span"][1])) if s.get("span") else None)
        for s in d["strokes"]
    )
    return WriterModel(strokes=strokes, pen_up_s=tuple(float(g) for g in d["pen_up_s"]),
                       style=PenStyle(**{k: float(v) for k, v in d["style"].items()}),
                       variability=float(d["variability"]))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_MIN_PEN_UP_S = 0.03


def _hover_path(p0: np.ndarray, p1: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Pen-up path at fractions ``u`` in [0, 1]: a minimum-jerk move with a slight bow."""
    s = u**3 * (10.0 - 15.0 * u + 6.0 * u**2)
    d = p1 - p0
    normal = np.array([d[1], -d[0]]) * 0.08
    bow = 4.0 * u * (1.0 - u)
    return p0 + s[:, None] * d + bow[:, None] * normal


def render(model: WriterModel, rng: np.random.Generator | None = None, device: DeviceInfo = DEFAULT_DEVICE) -> Trajectory:
    """Sample ``model`` as a tablet reports it.

    The first sample is the first touch-down (t = 0); samples follow every ``1/rate`` seconds, each
    jittered by up to +-0.5 ms when ``rng`` is given (never backwards: the jitter is under a
    quarter of the period). Pen-down samples carry pressure in raw device levels (at least 1);
    between strokes the pen hovers in proximity (pressure 0, pen up) from one stroke's end to the
    next one's start. Coordinates are quantised to the device resolution, pressure to its levels.
    Without ``rng`` the result has no jitter and no random tremor phase (exactly the model).
    """
    rate = float(device.nominal_rate_hz or 200.0)
    windows = [s.window() for s in model.strokes]
    # Global start time of each stroke's pen-down window.
    starts = [0.0]
    for k in range(1, len(model.strokes)):
        a, b = windows[k - 1]
        starts.append(starts[-1] + (b - a) + max(model.pen_up_s[k - 1], _MIN_PEN_UP_S))
    total = starts[-1] + windows[-1][1] - windows[-1][0]
    n = int(math.floor(total * rate)) + 1
    t = np.arange(n, dtype=np.float64) / rate
    if rng is not None:
        jitter = rng.uniform(-0.5e-3, 0.5e-3, size=n)
        jitter[0] = 0.0
        t = np.clip(t + jitter, 0.0, total)
        t = np.maximum.accumulate(t)

    xy = np.empty((n, 2))
    p = np.zeros(n)
    down = np.zeros(n, dtype=bool)
    style = model.style
    ph = rng.uniform(0, 2 * np.pi, size=3) if (rng is not None and style.tremor_mm > 0) else np.zeros(3)
    ends = []
    for stroke, (a, b), g0 in zip(model.strokes, windows, starts):
        i0 = int(np.searchsorted(t, g0 - 1e-12, side="left"))
        i1 = int(np.searchsorted(t, g0 + (b - a) + 1e-12, side="right"))
        ts = t[i0:i1] - g0 + a  # stroke clock
        pos = stroke.position(ts)
        ends.append((stroke.position(np.array([b]))[0], i1))
        if style.tremor_mm > 0:
            tg = t[i0:i1]
            amp = style.tremor_mm * (0.75 + 0.25 * np.sin(2 * np.pi * 0.7 * tg + ph[2]))
            w = 2 * np.pi * style.tremor_hz * tg
            pos = pos + np.column_stack((amp * np.sin(w + ph[0]), amp * np.sin(w + ph[1])))
        xy[i0:i1] = pos
        down[i0:i1] = True
        # Pressure: envelope at touch-down and lift, modulated by speed.
        sp = stroke.speed(ts)
        v_mean = float(sp.mean()) if len(sp) and sp.mean() > 0 else 1.0
        env = (1.0 - np.exp(-(ts - a + 0.5 / rate) / style.rise_s)) * (1.0 - np.exp(-(b - ts + 0.5 / rate) / style.fall_s))
        mod = np.clip(1.0 + style.speed_gain * (sp / v_mean - 1.0), 0.3, 1.7)
        p[i0:i1] = style.pressure_level * stroke.pressure_scale * env * mod
    # Hover between strokes.
    for k in range(len(model.strokes) - 1):
        i_end = ends[k][1]
        i_next = int(np.searchsorted(t, starts[k + 1] - 1e-12, side="left"))
        if i_next <= i_end:
            continue
        g_end = starts[k] + windows[k][1] - windows[k][0]
        u = (t[i_end:i_next] - g_end) / (starts[k + 1] - g_end)
        p1 = np.asarray(model.strokes[k + 1].start)
        xy[i_end:i_next] = _hover_path(ends[k][0], p1, np.clip(u, 0.0, 1.0))

    levels = device.pressure_levels
    if levels is not None:
        raw = np.where(down, np.clip(np.rint(p * levels), 1, levels), 0.0)
    else:
        raw = down.astype(np.float64)
    if device.resolution is not None:
        xy = np.rint(xy * device.resolution) / device.resolution
    return Trajectory.from_samples(xy[:, 0], xy[:, 1], raw, device=device, t=t, pen_down=down)


# --------------------------------------------------------------------------------------------
# Prototype (writer) generation
# --------------------------------------------------------------------------------------------

# A plan is built in "math" coordinates (y up, baseline at 0) where cursive is easier to think
# about (loops turn counter-clockwise: positive curvature), then flipped to the tablet frame.


@dataclass
class _Step:
    dx: float  # horizontal move, in units of the x-height
    y: float  # target height, in units of the x-height
    curv: float  # turn of the direction along the impulse (radians, math frame)


def _primitive(kind: str, rng: np.random.Generator, asc: float) -> list[_Step]:
    u = rng.uniform
    if kind == "loop":  # l, b, h, k: tall loop turning left at the top
        return [_Step(u(0.45, 0.8), asc * u(0.9, 1.05), u(1.0, 1.7)), _Step(u(-0.25, 0.05), u(-0.05, 0.08), u(0.3, 0.8))]
    if kind == "eloop":  # e: small loop
        return [_Step(u(0.45, 0.7), u(0.85, 1.1), u(1.1, 1.8)), _Step(u(-0.15, 0.1), u(-0.05, 0.08), u(0.5, 1.0))]
    if kind == "arch":  # n, m: arches turning right at the top
        return [_Step(u(0.25, 0.45), u(0.9, 1.1), -u(0.8, 1.5)), _Step(u(0.2, 0.4), u(-0.05, 0.05), u(-0.3, 0.3))]
    if kind == "garland":  # u, w: cups turning right at the bottom
        return [_Step(u(0.3, 0.5), u(0.85, 1.05), u(-0.2, 0.4)), _Step(u(0.0, 0.2), u(-0.05, 0.05), u(0.6, 1.2))]
    if kind == "oval":  # a, o, d: come to the top, round down to the left, back up the right
        return [
            _Step(u(0.4, 0.6), u(0.9, 1.1), u(0.2, 0.6)),
            _Step(u(-0.55, -0.35), u(-0.05, 0.05), u(1.4, 2.0)),
            _Step(u(0.5, 0.8), u(0.85, 1.05), u(0.5, 1.0)),
            _Step(u(0.05, 0.2), u(-0.05, 0.05), u(0.2, 0.6)),
        ]
    if kind == "descender":  # g, y, j: down below the baseline, loop back up to the left
        return [
            _Step(u(0.3, 0.5), u(0.85, 1.05), u(0.2, 0.6)),
            _Step(u(-0.15, 0.05), -u(0.9, 1.3), u(-0.3, 0.2)),
            _Step(u(0.35, 0.6), u(0.1, 0.4), -u(1.6, 2.3)),
        ]
    raise ValueError(kind)


_KINDS = ("loop", "eloop", "arch", "garland", "oval", "descender")
_KIND_P = np.array([0.2, 0.2, 0.2, 0.15, 0.15, 0.1])


def _capital(rng: np.random.Generator, cap: float) -> list[_Step]:
    u = rng.uniform
    form = int(rng.integers(0, 3))
    if form == 0:  # a big loop up, down the stem, then a bowl
        return [
            _Step(u(0.6, 1.2), cap * u(0.95, 1.05), u(0.8, 1.4)),
            _Step(u(-0.4, 0.0), u(-0.1, 0.1), u(0.0, 0.5)),
            _Step(u(0.8, 1.4), cap * u(0.45, 0.7), -u(1.4, 2.2)),
            _Step(u(-0.2, 0.3), u(0.1, 0.4), -u(0.6, 1.4)),
        ]
    if form == 1:  # a tall stem with a looped top swinging right
        return [
            _Step(u(0.2, 0.5), cap * u(0.95, 1.05), u(-0.4, 0.2)),
            _Step(u(0.6, 1.1), cap * u(0.6, 0.8), -u(1.5, 2.3)),
            _Step(u(-0.8, -0.3), u(0.0, 0.2), -u(0.2, 0.8)),
        ]
    # a large oval capital (O, C, G, Q)
    return [
        _Step(u(0.4, 0.8), cap * u(0.9, 1.05), u(0.1, 0.5)),
        _Step(u(-1.0, -0.6), cap * u(0.3, 0.5), u(1.2, 1.8)),
        _Step(u(0.7, 1.1), u(-0.05, 0.1), u(1.0, 1.6)),
        _Step(u(0.4, 0.7), cap * u(0.4, 0.6), u(0.6, 1.2)),
    ]


def _flourish(rng: np.random.Generator, width: float) -> list[_Step]:
    """An underline swinging back left and then right under the name (widths in x-heights)."""
    u = rng.uniform
    return [
        _Step(-u(0.25, 0.45) * width, -u(0.8, 1.4), -u(0.3, 0.9)),
        _Step(u(0.6, 0.9) * width, -u(0.9, 1.6), u(-0.3, 0.3)),
        _Step(u(0.05, 0.15) * width, -u(0.4, 1.0), u(0.6, 1.4)),
    ]


def _arc_impulse(p: np.ndarray, q: np.ndarray, curv: float) -> tuple[float, float, float]:
    """(D, theta_start, theta_end) of the circular arc from p to q turning by ``curv`` radians."""
    d = q - p
    chord = float(np.hypot(d[0], d[1]))
    alpha = math.atan2(d[1], d[0])
    half = 0.5 * curv
    length = chord * (half / math.sin(half)) if abs(half) > 1e-6 else chord
    return max(length, 1e-3), alpha - half, alpha + half


@dataclass
class _Plan:
    """Random draws of a prototype, before its horizontal scale is fixed."""

    strokes: list[tuple[np.ndarray, list[float]]]  # targets (n+1, 2) in x-heights, curvatures
    timing: list[list[tuple[float, float, float]]]  # per impulse: (T = exp(mu), sigma, spacing ratio)
    x_height: float
    pen_up_s: list[float]
    pressure_scale: list[float]


def _make_plan(rng: np.random.Generator, n_strokes: int) -> _Plan:
    asc = rng.uniform(2.0, 2.6)
    cap = rng.uniform(2.4, 3.2)
    x_height = rng.uniform(3.5, 5.5)
    flourish = n_strokes >= 3 and rng.random() < 0.5 or n_strokes >= 4 and rng.random() < 0.4
    n_words = n_strokes - (1 if flourish else 0)
    strokes: list[tuple[np.ndarray, list[float]]] = []
    x = 0.0
    for w in range(n_words):
        n_imp = int(rng.integers(3 if w else 5, 13))
        steps: list[_Step] = _capital(rng, cap) if w == 0 else []
        if w > 0 and rng.random() < 0.5:
            steps += _capital(rng, cap * rng.uniform(0.7, 0.9))
        while len(steps) < n_imp:
            steps += _primitive(str(rng.choice(_KINDS, p=_KIND_P)), rng, asc)
        steps = steps[: max(n_imp, 3)]
        pts = [np.array([x, rng.uniform(-0.05, 0.1)])]
        for s in steps:
            pts.append(np.array([pts[-1][0] + s.dx, s.y]))
        strokes.append((np.array(pts), [s.curv for s in steps]))
        x = pts[-1][0] + rng.uniform(0.6, 1.6)  # the space to the next word
    if flourish:
        last = strokes[-1][0][-1]
        width = max(last[0], 2.0)
        steps = _flourish(rng, width)
        pts = [np.array([last[0] + rng.uniform(-0.3, 0.4), last[1] + rng.uniform(-0.3, 0.3)])]
        for s in steps:
            pts.append(np.array([pts[-1][0] + s.dx, s.y]))
        strokes.append((np.array(pts), [s.curv for s in steps]))

    base_T = rng.uniform(0.09, 0.16)
    base_sigma = rng.uniform(0.2, 0.32)
    overlap = rng.uniform(0.55, 0.8)
    timing = []
    for stroke_pts, _ in strokes:
        seg = np.hypot(*np.diff(stroke_pts, axis=0).T)
        tt = []
        for L in seg:
            T = base_T * (0.8 + 0.25 * min(L, 3.0)) ** 0.5 * rng.uniform(0.9, 1.1)
            tt.append((T, base_sigma * rng.uniform(0.85, 1.15), overlap * rng.uniform(0.85, 1.15)))
        timing.append(tt)
    return _Plan(
        strokes=strokes,
        timing=timing,
        x_height=x_height,
        pen_up_s=[float(rng.uniform(0.12, 0.45)) for _ in range(len(strokes) - 1)],
        pressure_scale=[float(rng.uniform(0.85, 1.15)) for _ in strokes],
    )


def _build(plan: _Plan, xscale: float, tscale: float, style: PenStyle, variability: float) -> WriterModel:
    h = plan.x_height
    strokes = []
    for (pts, curvs), timing, pscale in zip(plan.strokes, plan.timing, plan.pressure_scale):
        pm = pts * np.array([xscale * h, h])  # mm, math frame
        imps = []
        t_peak = 0.0
        for k, (curv, (T, sigma, ratio)) in enumerate(zip(curvs, timing)):
            D, th0, th1 = _arc_impulse(pm[k], pm[k + 1], curv)
            T *= tscale
            mu = math.log(T)
            if k:
                t_peak += ratio * T
            t0 = t_peak - math.exp(mu - sigma**2)
            # Flip to the tablet frame (y down): angles change sign.
            imps.append(Lognormal(D=D, t0=t0, mu=mu, sigma=sigma, theta_start=-th0, theta_end=-th1))
        strokes.append(Stroke(start=(float(pm[0, 0]), float(-pm[0, 1])), impulses=tuple(imps), pressure_scale=pscale))
    return WriterModel(
        strokes=tuple(strokes),
        pen_up_s=tuple(g * tscale for g in plan.pen_up_s),
        style=style,
        variability=variability,
    )


def _ink_extent(model: WriterModel) -> tuple[float, float]:
    """Width and height (mm) of the pen-down path's bounding box."""
    pts = []
    for s in model.strokes:
        a, b = s.window()
        pts.append(s.position(np.linspace(a, b, 120)))
    xy = np.concatenate(pts)
    span = xy.max(axis=0) - xy.min(axis=0)
    return float(span[0]), float(span[1])


def random_writer(rng: np.random.Generator, *, n_strokes: int | None = None) -> WriterModel:
    """A plausible signature prototype.

    2-5 strokes (``n_strokes`` to fix it) of 3-12 impulses each: the first starts with a capital,
    the words are cursive primitives (tall and small loops, arches, cups, ovals, descenders), and
    about half the signatures of three or more strokes end with an underline flourish. The
    horizontal scale is adjusted so that the ink is 3-6 times as wide as it is high, and the timing
    so that the whole signature lasts 1.5-5 s.
    """
    if n_strokes is None:
        n_strokes = int(rng.integers(2, 6))
    if not 1 <= n_strokes <= 8:
        raise ValueError(f"n_strokes must be in 1..8, got {n_strokes}")
    plan = _make_plan(rng, n_strokes)
    style = PenStyle(
        pressure_level=float(rng.uniform(0.35, 0.75)),
        rise_s=float(rng.uniform(0.02, 0.07)),
        fall_s=float(rng.uniform(0.02, 0.08)),
        speed_gain=float(rng.uniform(-0.45, 0.15)),
    )
    variability = float(rng.uniform(0.7, 1.3))
    aspect = float(rng.uniform(3.3, 5.5))
    xscale = 1.0
    model = _build(plan, xscale, 1.0, style, variability)
    for _ in range(4):
        w, hgt = _ink_extent(model)
        ratio = aspect / max(w / max(hgt, 1e-6), 1e-6)
        if abs(ratio - 1.0) < 0.03:
            break
        xscale *= ratio
        model = _build(plan, xscale, 1.0, style, variability)
    dur = model.duration
    target = min(max(dur, 1.6), 4.8)
    if abs(target - dur) > 1e-9:
        model = _build(plan, xscale, target / dur, style, variability)
    return model


# --------------------------------------------------------------------------------------------
# Variation: genuine samples and forgeries
# --------------------------------------------------------------------------------------------


def _transform(
    model: WriterModel,
    *,
    time_scale: float,
    size: float,
    rotation: float,
    offset: tuple[float, float],
) -> WriterModel:
    """The same signature written slower/faster, larger/smaller, rotated and moved (shape-exact)."""
    c, s = math.cos(rotation), math.sin(rotation)
    lt = math.log(time_scale)
    strokes = []
    for st in model.strokes:
        x, y = st.start
        start = (size * (c * x - s * y) + offset[0], size * (s * x + c * y) + offset[1])
        imps = tuple(
            replace(i, D=i.D * size, t0=i.t0 * time_scale, mu=i.mu + lt,
                    theta_start=i.theta_start + rotation, theta_end=i.theta_end + rotation)
            for i in st.impulses
        )
        span = (st.span[0] * time_scale, st.span[1] * time_scale) if st.span else None
        strokes.append(replace(st, start=start, impulses=imps, span=span))
    return replace(model, strokes=tuple(strokes), pen_up_s=tuple(g * time_scale for g in model.pen_up_s))


def _jitter_stroke(st: Stroke, rng: np.random.Generator, *, d: float, t0: float, mu: float, sigma: float,
                   theta: float, start_mm: float) -> Stroke:
    n = len(st.impulses)
    dD = rng.normal(0, d, n)
    dt0 = rng.normal(0, t0, n)
    dmu = rng.normal(0, mu, n)
    ds = rng.normal(0, sigma, n)
    dth = rng.normal(0, theta, (n, 2))
    imps = tuple(
        replace(
            i,
            D=i.D * math.exp(dD[k]),
            t0=i.t0 + dt0[k] * math.exp(i.mu),
            mu=i.mu + dmu[k],
            sigma=i.sigma * math.exp(ds[k]),
            theta_start=i.theta_start + dth[k, 0],
            theta_end=i.theta_end + dth[k, 1],
        )
        for k, i in enumerate(st.impulses)
    )
    start = (st.start[0] + rng.normal(0, start_mm), st.start[1] + rng.normal(0, start_mm))
    return replace(st, start=start, impulses=imps)


def vary_genuine(model: WriterModel, rng: np.random.Generator) -> WriterModel:
    """The parameters of one genuine sample: the writer's own natural variation.

    Per impulse, scaled by ``v = model.variability * exp(N(0, 0.3))`` (a writer is steadier on some
    days than on others): D x exp(N(0, 4 v %)), onset shifted by N(0, 4 v %) of the impulse's
    time scale ``exp(mu)``, mu + N(0, 0.04 v), sigma x exp(N(0, 4 v %)), each angle + N(0, 0.04 v)
    rad; stroke starts move by N(0, 0.3 v) mm. Globally (shape-exact): time x U(0.9, 1.1), size x
    U(0.92, 1.08), rotation U(-3, 3) degrees, offset U(-5, 5) mm; pen-up times x exp(N(0, 10 v
    %)) and per-stroke pressure x exp(N(0, 5 %)).
    """
    # Some days a writer is less steady: each sample's own spread varies around the writer's.
    v = model.variability * math.exp(rng.normal(0.0, 0.3))
    strokes = tuple(
        replace(
            _jitter_stroke(st, rng, d=0.04 * v, t0=0.04 * v, mu=0.04 * v, sigma=0.04 * v, theta=0.04 * v, start_mm=0.3 * v),
            pressure_scale=st.pressure_scale * math.exp(rng.normal(0, 0.05)),
        )
        for st in model.strokes
    )
    gaps = tuple(g * math.exp(rng.normal(0, 0.1 * v)) for g in model.pen_up_s)
    m = replace(model, strokes=strokes, pen_up_s=gaps)
    return _transform(
        m,
        time_scale=float(rng.uniform(0.9, 1.1)),
        size=float(rng.uniform(0.92, 1.08)),
        rotation=math.radians(float(rng.uniform(-3, 3))),
        offset=(float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5))),
    )


def _split(imp: Lognormal, rng: np.random.Generator, pause: float) -> tuple[Lognormal, Lognormal]:
    """Two shorter impulses tracing the same arc, the second after a hesitation."""
    f = float(rng.uniform(0.35, 0.65))
    mid = imp.theta_start + f * (imp.theta_end - imp.theta_start)
    T = math.exp(imp.mu)
    mu1 = imp.mu + 0.5 * math.log(f)
    mu2 = imp.mu + 0.5 * math.log(1 - f)
    a = replace(imp, D=imp.D * f, mu=mu1, theta_end=mid)
    gap = (0.45 + pause) * T
    b = replace(imp, D=imp.D * (1 - f), t0=a.peak_time + gap - math.exp(mu2 - imp.sigma**2), mu=mu2, theta_start=mid)
    return a, b


@dataclass(frozen=True)
class _Forger:
    """Magnitudes of a forger's departures from the writer (see :func:`vary_forgery`)."""

    slow: float
    d: float
    timing: float
    sigma: float
    theta: float
    start_mm: float
    p_split: float
    pause: float
    overlap_loss: float
    tremor_mm: float
    pressure_copy: float = 0.0
    gap_factor: float = 1.6

    @classmethod
    def of_skill(cls, skill: float) -> "_Forger":
        u = 1.0 - skill
        return cls(
            slow=1.3 + 0.6 * u,
            d=0.04 + 0.06 * u,
            timing=0.06 + 0.06 * u,
            sigma=0.06 + 0.06 * u,
            theta=0.05 + 0.08 * u,
            start_mm=0.4 + 1.0 * u,
            p_split=0.1 + 0.4 * u,
            pause=0.3 + 0.7 * u,
            overlap_loss=0.2 + 0.6 * u,
            tremor_mm=0.02 + 0.1 * u,
            pressure_copy=0.3 + 0.5 * skill,
        )


def vary_forgery(model: WriterModel, rng: np.random.Generator, skill: float = 0.7) -> WriterModel:
    """The parameters of one skilled imitation of ``model`` by a forger of the given ``skill``.

    The forger copies the shape from the static image but not the dynamics. With ``u = 1 - skill``
    (the magnitudes are in :meth:`_Forger.of_skill`):

    * shape noise larger than a genuine writer's: angles N(0, 0.05 + 0.08 u) rad, D 4 + 6 u %,
      onsets and mu 6 + 6 u %, stroke starts 0.4 + 1.0 u mm; size, rotation and offset like a
      genuine sample's but wider;
    * slower: the whole signature takes ``1.3 + 0.6 u`` (-0.05/+0.1) times the writer's time;
    * hesitant: each impulse is split, with probability ``0.1 + 0.4 u``, into two shorter ones
      along the same arc with a pause between, and successive impulses overlap less (a drawn,
      not written, line), so the speed profile has more, lower peaks;
    * a 6-10 Hz hand tremor of ``0.02 + 0.1 u`` mm;
    * pressure, which the image does not show: the forger's own habits, drawn towards the
      writer's in proportion ``0.3 + 0.5 skill`` (a good forger guesses it from the ink).

    Calibrated against the classic verifier (:mod:`models.classic`, 5 references): skill 1.0
    gives a skilled-forgery EER near 20 %, 0.7 near 4 %, 0.5 under 2 % (see the module docstring).
    """
    if not 0.0 <= skill <= 1.0:
        raise ValueError(f"skill must be in 0..1, got {skill}")
    return _forge(model, rng, _Forger.of_skill(skill))


def _forge(model: WriterModel, rng: np.random.Generator, f: _Forger) -> WriterModel:
    slow = f.slow + float(rng.uniform(-0.05, 0.1))
    strokes = []
    for st in model.strokes:
        js = _jitter_stroke(st, rng, d=f.d, t0=f.timing, mu=f.timing, sigma=f.sigma,
                            theta=f.theta, start_mm=f.start_mm)
        imps: list[Lognormal] = []
        shift = 0.0
        for i in js.impulses:
            i = replace(i, t0=i.t0 + shift)
            if rng.random() < f.p_split:
                a, b = _split(i, rng, pause=float(rng.uniform(0.1, 0.5)) * f.pause)
                delay = b.peak_time - i.peak_time
                imps += [a, b]
                shift += max(delay, 0.0)
            else:
                imps.append(i)
            # Less overlap between successive impulses: the forger checks the model as they go.
            shift += float(rng.uniform(0.05, 0.25)) * f.overlap_loss * math.exp(i.mu)
        # Pressure is not in the image: the forger presses their own way, drawn towards the
        # writer's as far as the ink trace lets them guess it.
        c = f.pressure_copy
        pscale = c * st.pressure_scale + (1 - c) * float(rng.uniform(0.8, 1.2))
        # A known pen-down interval grows by the hesitations' delay.
        span = (js.span[0], js.span[1] + shift) if js.span else None
        strokes.append(replace(js, impulses=tuple(imps), pressure_scale=pscale, span=span))
    w = model.style
    c = f.pressure_copy
    style = PenStyle(
        pressure_level=c * w.pressure_level + (1 - c) * float(rng.uniform(0.4, 0.85)),
        rise_s=c * w.rise_s + (1 - c) * float(rng.uniform(0.03, 0.12)),
        fall_s=c * w.fall_s + (1 - c) * float(rng.uniform(0.03, 0.12)),
        speed_gain=c * w.speed_gain + (1 - c) * float(rng.uniform(-0.3, 0.3)),
        tremor_mm=f.tremor_mm,
        tremor_hz=float(rng.uniform(6.0, 10.0)),
    )
    gaps = tuple(g * float(rng.uniform(1.0, f.gap_factor)) for g in model.pen_up_s)
    m = replace(model, strokes=tuple(strokes), pen_up_s=gaps, style=style)
    # ``slow`` is the whole signature's duration relative to the writer's: the hesitations above
    # already take part of it; the rest is a uniformly slower hand (never faster than 1.1x).
    hesitation = m.duration / model.duration
    return _transform(
        m,
        time_scale=max(slow / hesitation, 1.1),
        size=float(rng.uniform(0.9, 1.1)),
        rotation=math.radians(float(rng.uniform(-4, 4))),
        offset=(float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5))),
    )


def genuine(model: WriterModel, rng: np.random.Generator, device: DeviceInfo = DEFAULT_DEVICE) -> Trajectory:
    """A new genuine sample of the writer: never identical to another, clearly the same signature."""
    return render(vary_genuine(model, rng), rng, device)


def forgery(model: WriterModel, rng: np.random.Generator, skill: float = 0.7, device: DeviceInfo = DEFAULT_DEVICE) -> Trajectory:
    """A skilled forgery of the writer's signature (``skill`` 0..1: how close the forger gets)."""
    return render(vary_forgery(model, rng, skill), rng, device)


def make_population(
    n_writers: int,
    n_genuine: int,
    n_forgeries: int,
    seed: int,
    *,
    skill: float = 0.7,
    device: DeviceInfo = DEFAULT_DEVICE,
) -> dict[str, tuple[list[Trajectory], list[Trajectory]]]:
    """Writers ``"001"``, ``"002"``, ... each with ``n_genuine`` genuine samples and ``n_forgeries``
    skilled forgeries (of the given ``skill``).

    Writer ``i`` draws from its own stream (``SeedSequence([seed, i])``), and genuine samples and
    forgeries from separate sub-streams, so a writer's samples do not depend on how many writers or
    forgeries were asked for.
    """
    if min(n_writers, n_genuine, n_forgeries) < 0:
        raise ValueError("counts must be >= 0")
    out: dict[str, tuple[list[Trajectory], list[Trajectory]]] = {}
    for i in range(n_writers):
        s_model, s_gen, s_forg = np.random.SeedSequence([seed, i]).spawn(3)
        model = random_writer(np.random.default_rng(s_model))
        rg, rf = np.random.default_rng(s_gen), np.random.default_rng(s_forg)
        gen = [genuine(model, rg, device) for _ in range(n_genuine)]
        forg = [forgery(model, rf, skill, device) for _ in range(n_forgeries)]
        out[f"{i + 1:03d}"] = (gen, forg)
    return out
