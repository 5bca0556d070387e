"""Sigma-lognormal fitting of real signatures, and synthetic identities made from the fits.

:mod:`tools.synth` *generates* random writers from the kinematic theory; this module goes the
other way: it finds the lognormal impulses ``(D, t0, mu, sigma, theta_start, theta_end)`` that
reproduce a recorded signature, as :class:`tools.synth.Stroke` / :class:`tools.synth.WriterModel`
(the one definition of each), so that :func:`tools.synth.render` draws it again and
:func:`tools.synth.vary_genuine` / :func:`tools.synth.vary_forgery` vary it. A real signature
thereby becomes an identity of its own with as many genuine-like *duplicates* and impostor-like
*forgery-likes* as wanted (SynSig2Vec's idea), for training only.

Fitting, per pen-down stroke (training tool, numpy + scipy):

1. The stroke is resampled to 200 Hz along its measured time and its velocity is taken by central
   differences, smoothed over 15 ms (a 100 Hz pad's linear interpolation and its quantisation
   steps are not movement).
2. **Initial estimate, Robust-XZERO style**: the speed profile is cut at its valleys into
   peaks; for each peak (in time order, on the velocity left after subtracting the impulses
   already estimated) the two inflection points around the maximum give ``sigma`` from the
   asymmetry of the peak, then ``t0`` and ``mu`` from the peak's time and width, ``D`` from its
   height, and the start and end directions from the direction of motion at the inflections.
3. **Refinement**: bounded nonlinear least squares (``scipy.optimize.least_squares``, trust region,
   closed-form Jacobian) of all the stroke's parameters at once on the velocity vector, with zero
   velocity asked for 0.1 s before and after the stroke (so that no impulse draws on after the lift). While the fit is under the
   target SNR, an impulse is added where the residual speed peaks and the stroke refitted.
4. The stroke's start is the translation that best matches the measured positions.

The fit is reported as SNR in dB (what the sigma-lognormal literature reports): of the velocity,
``10 log10(sum |v|^2 / sum |v - v_fit|^2)``, and of the trajectory, the same on the positions
about their mean. Coordinates are rescaled to millimetres first (device units have no size):
the ink height becomes :data:`HEIGHT_MM`, so that :mod:`tools.synth`'s millimetre-sized
variations mean the same on every pad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import find_peaks
from scipy.special import ndtr

from models.preprocess import drop_duplicates, moving_average
from models.trajectory import DeviceInfo, Trajectory, TrajectoryError
from tools.synth import (
    DEFAULT_DEVICE,
    Lognormal,
    PenStyle,
    Stroke,
    WriterModel,
    lognormal_speed,
    lognormal_velocity,
    render,
    vary_forgery,
    vary_genuine,
)

__all__ = [
    "HEIGHT_MM",
    "SignatureFit",
    "StrokeFit",
    "duplicate",
    "fit_signature",
    "fit_stroke",
    "forgery_like",
    "snr_db",
    "synthetic_identity",
]

#: Rate the velocity is fitted at (s^-1): twice the common pads' 100 Hz, so peaks keep their shape.
FIT_HZ = 200.0
#: Width of the velocity smoothing (s): three samples at 200 Hz, one period of a 100 Hz pad.
SMOOTH_S = 0.015
#: The ink height a signature is scaled to when its pad's resolution is unknown (mm): a capital
#: and a descender of a typical signature (tools.synth's prototypes are 12-20 mm high).
HEIGHT_MM = 15.0
#: Fit until the stroke's velocity SNR reaches this (dB), adding impulses up to MAX_EXTRA.
TARGET_SNR_DB = 22.0
MAX_EXTRA = 2
#: Zero-velocity targets before and after a stroke (s) and their weight (see ``_padded``).
PAD_S = 0.1
PAD_WEIGHT = 0.5
#: Peaks lower than this fraction of the stroke's top speed are not impulses of their own.
PEAK_PROMINENCE = 0.06

_SIGMA_MIN, _SIGMA_MAX = 0.04, 0.9
_MU_MIN, _MU_MAX = math.log(0.004), math.log(3.0)


def snr_db(signal: np.ndarray, error: np.ndarray) -> float:
    """``10 log10(energy of signal / energy of error)``; +inf for an exact fit."""
    e = float(np.sum(np.square(error)))
    s = float(np.sum(np.square(signal)))
    if e <= 0:
        return math.inf
    return 10.0 * math.log10(max(s, 1e-300) / e)


# --------------------------------------------------------------------------------------------
# Initial estimate
# --------------------------------------------------------------------------------------------


def _half_roots(sigma: np.ndarray | float) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The inflection points of a lognormal speed profile, as ``ln((t - t0)) - mu + sigma^2``
    (0 at the peak): ``-sigma^2/2 -/+ sigma sqrt(sigma^2/4 + 1)``."""
    r = sigma * np.sqrt(np.square(sigma) / 4.0 + 1.0)
    return -0.5 * np.square(sigma) - r, -0.5 * np.square(sigma) + r


#: Candidate sigmas of the initial estimate. A peak's asymmetry barely depends on sigma below ~0.4
#: (the profile is almost symmetric), so sigma is chosen by how well each candidate's impulse,
#: sized by the peak's width and height, matches the peak; the refinement then tunes it.
_SIGMA_CANDIDATES = (0.12, 0.18, 0.25, 0.33, 0.42, 0.55, 0.7)


def _candidate(s_peak: float, t1: float, t3: float, t5: float, sigma: float) -> tuple[float, float, float]:
    """(D, t0, mu) of the impulse with this sigma peaking at ``t3`` with inflections ``t1``, ``t5``."""
    lo, hi = _half_roots(sigma)
    elo, ehi = math.exp(float(lo)), math.exp(float(hi))
    if t3 - t1 > 0 and t5 - t3 > 0:
        x3 = (t5 - t1) / (ehi - elo)
    elif t5 - t3 > 0:
        x3 = (t5 - t3) / (ehi - 1.0)
    else:
        x3 = max(t3 - t1, 2.0 / FIT_HZ) / (1.0 - elo)
    x3 = max(x3, 2.0 / FIT_HZ)
    D = s_peak * sigma * math.sqrt(2.0 * math.pi) * x3 * math.exp(0.5 * sigma**2)
    return D, t3 - x3, math.log(x3) + sigma**2


def _estimate(t: np.ndarray, v: np.ndarray, a: int, p: int, b: int) -> np.ndarray:
    """One impulse's parameters from the peak at ``p`` between valleys ``a`` and ``b``."""
    s = np.hypot(v[:, 0], v[:, 1])
    ds = np.gradient(s, t)
    i1 = a + int(np.argmax(ds[a : p + 1])) if p > a else p
    i5 = p + int(np.argmin(ds[p : b + 1])) if b > p else p
    t1, t3, t5 = float(t[i1]), float(t[p]), float(t[i5])
    best: tuple[float, float, float, float] | None = None
    err_best = math.inf
    window = slice(a, b + 1)
    for sigma in _SIGMA_CANDIDATES:
        D, t0, mu = _candidate(float(s[p]), t1, t3, t5, sigma)
        err = float(np.sum(np.square(s[window] - lognormal_speed(t[window], D, t0, mu, sigma))))
        if err < err_best:
            best, err_best = (D, t0, mu, sigma), err
    assert best is not None
    D, t0, mu, sigma = best
    # Directions at the two inflections, unwrapped around the peak's, extrapolated to 0 and 1 of D.
    phi = np.arctan2(v[:, 1], v[:, 0])
    ph3 = float(phi[p])
    ph1 = ph3 + float(np.angle(np.exp(1j * (phi[i1] - ph3))))
    ph5 = ph3 + float(np.angle(np.exp(1j * (phi[i5] - ph3))))
    # Lambda there: ln(t - t0) - mu = ln(t - t0) - ln(x3) - sigma^2.
    lam1 = float(ndtr((math.log(max(t1 - t0, 1e-6)) - mu) / sigma))
    lam5 = float(ndtr((math.log(max(t5 - t0, 1e-6)) - mu) / sigma))
    turn = (ph5 - ph1) / max(lam5 - lam1, 1e-3) if i5 != i1 else 0.0
    turn = float(np.clip(turn, -1.5 * math.pi, 1.5 * math.pi))
    theta_s = ph1 - turn * lam1
    return np.array([D, t0, mu, sigma, theta_s, theta_s + turn])


def _valleys(s: np.ndarray, peaks: np.ndarray) -> list[tuple[int, int, int]]:
    out = []
    for k, p in enumerate(peaks):
        a = 0 if k == 0 else int(peaks[k - 1] + np.argmin(s[peaks[k - 1] : p + 1]))
        b = len(s) - 1 if k == len(peaks) - 1 else int(p + np.argmin(s[p : peaks[k + 1] + 1]))
        out.append((a, int(p), b))
    return out


def _initial(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = np.hypot(v[:, 0], v[:, 1])
    top = float(s.max())
    peaks, _ = find_peaks(s, prominence=PEAK_PROMINENCE * top, height=0.03 * top)
    if not len(peaks):
        peaks = np.array([int(np.argmax(s))])
    rows = []
    resid = v.copy()
    for a, p, b in _valleys(s, peaks):
        # Each peak is estimated on what the earlier impulses leave (their tails overlap it).
        row = _estimate(t, resid, a, p, b)
        rows.append(row)
        resid = resid - lognormal_velocity(t, row)
    return np.array(rows)


# --------------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------------


def _bounds(n: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.tile([0.0, t[0] - 3.0, _MU_MIN, _SIGMA_MIN, -np.inf, -np.inf], n)
    hi = np.tile([np.inf, t[-1], _MU_MAX, _SIGMA_MAX, np.inf, np.inf], n)
    return lo, hi


def _velocity_jacobian(t: np.ndarray, params: np.ndarray) -> np.ndarray:
    """d(velocity)/d(parameters), shape ``(2 len(t), 6 n)``, rows ordered as the raveled
    ``(len(t), 2)`` velocity: the closed-form derivatives of the impulse formulas, which make the
    refinement ~50 times faster than finite differences."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 6)
    D, t0, mu, sg, ts, te = (p[:, k : k + 1] for k in range(6))
    x = t[None, :] - t0
    live = x > 0
    xs = np.where(live, x, 1.0)
    z = (np.log(xs) - mu) / sg
    pdf = np.where(live, np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi), 0.0)
    lam = np.where(live, ndtr(z), 0.0)
    s = D * pdf / (sg * xs)
    turn = te - ts
    phi = ts + turn * lam
    c, sn = np.cos(phi), np.sin(phi)
    # (d speed, d direction) per parameter, each (n, N).
    ds = (np.where(live, pdf / (sg * xs), 0.0), s * (1.0 + z / sg) / xs, s * z / sg, s * (z * z - 1.0) / sg,
          np.zeros_like(s), np.zeros_like(s))
    dphi = (np.zeros_like(s), turn * pdf * (-1.0 / (sg * xs)), turn * pdf * (-1.0 / sg), turn * pdf * (-z / sg),
            np.where(live, 1.0 - lam, 1.0), lam)
    n, N = p.shape[0], len(t)
    J = np.empty((N, 2, n, 6))
    for k in range(6):
        J[:, 0, :, k] = (ds[k] * c - s * sn * dphi[k]).T
        J[:, 1, :, k] = (ds[k] * sn + s * c * dphi[k]).T
    return J.reshape(2 * N, 6 * n)


def _padded(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fit's targets: the stroke's velocity, and zero velocity for PAD_S before and after it at
    weight PAD_WEIGHT. Without them an impulse may end long after the pen lifted (a large sigma's
    slow tail fits the last samples), and the rendered stroke, whose pen-down window covers every
    impulse, would draw on past where the writer stopped."""
    k = int(round(PAD_S * FIT_HZ))
    before = t[0] - np.arange(k, 0, -1) / FIT_HZ
    after = t[-1] + np.arange(1, k + 1) / FIT_HZ
    tp = np.concatenate((before, t, after))
    vp = np.concatenate((np.zeros((k, 2)), v, np.zeros((k, 2))))
    w = np.concatenate((np.full(k, PAD_WEIGHT), np.ones(len(t)), np.full(k, PAD_WEIGHT)))
    return tp, vp, w


def _refine(t: np.ndarray, v: np.ndarray, x0: np.ndarray, max_nfev: int) -> np.ndarray:
    t, v, w = _padded(t, v)
    rw = np.repeat(w, 2)  # rows of the raveled (len(t), 2) velocity
    n = len(x0)
    lo, hi = _bounds(n, t)
    span = hi - lo
    eps = np.where(np.isfinite(span), 1e-9 * np.where(np.isfinite(span), span, 1.0), 0.0)
    x = np.clip(x0.ravel(), lo + eps + 1e-12, hi - eps - 1e-12)
    scale = max(float(np.sqrt(np.mean(np.sum(v * v, axis=1)))), 1e-9)

    def residual(p: np.ndarray) -> np.ndarray:
        return ((lognormal_velocity(t, p) - v) / scale).ravel() * rw

    def jacobian(p: np.ndarray) -> np.ndarray:
        return _velocity_jacobian(t, p) * (rw / scale)[:, None]

    r = least_squares(residual, x, jac=jacobian, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=max_nfev,
                      tr_solver="exact")
    return np.asarray(r.x).reshape(n, 6)


def _add_impulse(t: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:
    resid = v - lognormal_velocity(t, params)
    s = np.hypot(resid[:, 0], resid[:, 1])
    p = int(np.argmax(s))
    lows = np.flatnonzero(s[:p] < 0.3 * s[p])
    a = int(lows[-1]) if len(lows) else 0
    highs = np.flatnonzero(s[p:] < 0.3 * s[p])
    b = p + int(highs[0]) if len(highs) else len(s) - 1
    return np.vstack([params, _estimate(t, resid, a, p, b)])


@dataclass(frozen=True)
class StrokeFit:
    """One stroke's fit: the stroke (its clock starts at the stroke's first sample), the SNRs and
    the energies they come from (so that a signature's SNR pools its strokes)."""

    stroke: Stroke
    snr_velocity_db: float
    snr_trajectory_db: float
    energy_v: tuple[float, float]  # (signal, error) of the velocity
    energy_xy: tuple[float, float]  # (signal about the stroke's mean, error) of the positions
    duration: float


def _velocity(t: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uniform 200 Hz times over the stroke and the smoothed velocity there."""
    n = max(int(math.floor((t[-1] - t[0]) * FIT_HZ)) + 1, 2)
    tn = t[0] + np.arange(n) / FIT_HZ
    keep = np.append(np.diff(t) > 0, True)
    x = np.interp(tn, t[keep], xy[keep, 0])
    y = np.interp(tn, t[keep], xy[keep, 1])
    width = int(round(SMOOTH_S * FIT_HZ)) | 1
    v = np.column_stack([moving_average(np.gradient(c, tn), width) for c in (x, y)])
    return tn, v


def _dot(t: np.ndarray, xy: np.ndarray) -> StrokeFit:
    """A stroke too short to have a speed profile (a dot): one short straight impulse."""
    d = xy[-1] - xy[0]
    D = max(float(np.hypot(d[0], d[1])), 1e-3)
    th = float(math.atan2(d[1], d[0]))
    T = max(float(t[-1] - t[0]), 0.02)
    imp = Lognormal(D=D, t0=-0.3 * T, mu=math.log(0.6 * T), sigma=0.3, theta_start=th, theta_end=th)
    st = Stroke(start=(0.0, 0.0), impulses=(imp,), span=(0.0, max(float(t[-1] - t[0]), 1.0 / FIT_HZ)))
    pos = st.position(t - t[0])
    start = np.mean(xy - pos, axis=0)
    st = replace(st, start=(float(start[0]), float(start[1])))
    err = xy - st.position(t - t[0])
    sig = xy - xy.mean(axis=0)
    ex = (float(np.sum(sig**2)), float(np.sum(err**2)))
    return StrokeFit(st, math.nan, snr_db(sig, err), (0.0, 0.0), ex, float(t[-1] - t[0]))


def fit_stroke(t: np.ndarray, xy: np.ndarray, *, target_snr_db: float = TARGET_SNR_DB,
               max_extra: int = MAX_EXTRA, max_nfev: int = 25) -> StrokeFit:
    """Fit one pen-down stroke: times ``t`` (s, increasing) and positions ``xy`` (mm, ``(n, 2)``).

    The stroke's clock starts at ``t[0]``. See the module docstring for the method."""
    t = np.asarray(t, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    if len(t) != len(xy) or xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"times {t.shape} and positions {xy.shape} do not match")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(xy))):
        raise ValueError("non-finite time or position in the stroke")
    t = t - t[0]
    if len(t) < 4 or t[-1] < 4.0 / FIT_HZ:
        return _dot(t, xy)
    tn, v = _velocity(t, xy)
    if float(np.max(np.hypot(v[:, 0], v[:, 1]))) <= 1e-9:
        return _dot(t, xy)
    params = _refine(tn, v, _initial(tn, v), max_nfev)
    snr_v = snr_db(v, v - lognormal_velocity(tn, params))
    for _ in range(max_extra):
        if snr_v >= target_snr_db:
            break
        trial = _refine(tn, v, _add_impulse(tn, v, params), max_nfev)
        snr_trial = snr_db(v, v - lognormal_velocity(tn, trial))
        if snr_trial <= snr_v + 0.2:
            break
        params, snr_v = trial, snr_trial
    imps = tuple(
        Lognormal(D=float(D), t0=float(t0), mu=float(mu), sigma=float(sg), theta_start=float(a), theta_end=float(b))
        for D, t0, mu, sg, a, b in params
        if D > 1e-6
    ) or (Lognormal(D=1e-3, t0=0.0, mu=math.log(0.05), sigma=0.3, theta_start=0.0, theta_end=0.0),)
    st = Stroke(start=(0.0, 0.0), impulses=imps, span=(0.0, float(t[-1])))
    start = np.mean(xy - st.position(t), axis=0)
    st = replace(st, start=(float(start[0]), float(start[1])))
    err_v = v - st.velocity(tn)
    err_xy = xy - st.position(t)
    sig_xy = xy - xy.mean(axis=0)
    return StrokeFit(
        stroke=st,
        snr_velocity_db=snr_db(v, err_v),
        snr_trajectory_db=snr_db(sig_xy, err_xy),
        energy_v=(float(np.sum(v**2)), float(np.sum(err_v**2))),
        energy_xy=(float(np.sum(sig_xy**2)), float(np.sum(err_xy**2))),
        duration=float(t[-1]),
    )


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureFit:
    """A recorded signature as a sigma-lognormal :class:`WriterModel` (millimetres, seconds).

    ``mm_per_unit``: how the recorded coordinates were scaled. ``snr_velocity_db`` and
    ``snr_trajectory_db`` pool the strokes' energies (dots, which have no speed profile, count in
    the trajectory SNR only)."""

    model: WriterModel
    strokes: tuple[StrokeFit, ...]
    mm_per_unit: float

    @property
    def impulses(self) -> int:
        return sum(len(s.stroke.impulses) for s in self.strokes)

    @property
    def snr_velocity_db(self) -> float:
        return _pooled(s.energy_v for s in self.strokes)

    @property
    def snr_trajectory_db(self) -> float:
        return _pooled(s.energy_xy for s in self.strokes)


def _pooled(energies: object) -> float:
    sig = err = 0.0
    for s, e in energies:  # type: ignore[attr-defined]
        sig, err = sig + s, err + e
    if err <= 0:
        return math.inf
    return 10.0 * math.log10(max(sig, 1e-300) / err)


def mm_scale(traj: Trajectory) -> float:
    """Millimetres per coordinate unit: the pad's own when known, else ink height -> HEIGHT_MM."""
    if traj.device.units == "mm":
        return 1.0
    if traj.device.resolution is not None:
        return 1.0 / traj.device.resolution
    y = traj.y[traj.pen_down] if traj.pen_down.any() else traj.y
    h = float(np.ptp(y)) if len(y) else 0.0
    if h <= 0:
        x = traj.x[traj.pen_down] if traj.pen_down.any() else traj.x
        h = float(np.ptp(x)) if len(x) else 0.0
    if h <= 0:
        raise TrajectoryError("signature has no extent: nothing to fit")
    return HEIGHT_MM / h


def fit_signature(traj: Trajectory, **kwargs: float) -> SignatureFit:
    """Fit every pen-down stroke of ``traj``; pen-up times and pressure habits come from the
    recording. Raises :class:`TrajectoryError` for a signature without ink."""
    scale = mm_scale(traj)
    keep = np.zeros(len(traj), dtype=bool)
    keep[drop_duplicates(traj)] = True
    fits: list[StrokeFit] = []
    clocks: list[float] = []
    pressures: list[float] = []
    for sl in traj.strokes():
        idx = np.arange(sl.start, sl.stop)
        idx = idx[keep[idx]]
        if not len(idx):
            continue
        t = traj.t[idx]
        xy = np.column_stack((traj.x[idx], traj.y[idx])) * scale
        fits.append(fit_stroke(t, xy, **kwargs))  # type: ignore[arg-type]
        clocks.append(float(t[0]))
        pressures.append(float(np.median(traj.pressure[idx])))
    if not fits:
        raise TrajectoryError("no pen-down stroke to fit")
    # Pen-up time between the rendered pen-down windows that puts each stroke at its recorded time.
    gaps = []
    for k in range(1, len(fits)):
        _, b_prev = fits[k - 1].stroke.window()
        a_next, _ = fits[k].stroke.window()
        gaps.append(max((clocks[k] + a_next) - (clocks[k - 1] + b_prev), 0.03))
    if traj.device.has_pressure and max(pressures) > 0:
        level = float(np.clip(np.median(pressures), 0.05, 1.0))
        scales = [float(np.clip(p / level, 0.2, 1.8)) if p > 0 else 1.0 for p in pressures]
        style = PenStyle(pressure_level=level, speed_gain=0.0)
    else:
        scales = [1.0] * len(fits)
        style = PenStyle()
    strokes = tuple(replace(f.stroke, pressure_scale=s) for f, s in zip(fits, scales))
    model = WriterModel(strokes=strokes, pen_up_s=tuple(gaps), style=style, variability=1.0)
    return SignatureFit(model=model, strokes=tuple(fits), mm_per_unit=scale)


# --------------------------------------------------------------------------------------------
# Synthetic samples from a fitted signature
# --------------------------------------------------------------------------------------------


def duplicate(model: WriterModel, rng: np.random.Generator) -> WriterModel:
    """The same person signing again: :func:`tools.synth.vary_genuine`'s intra-writer variation of
    every impulse's D, t0, mu, sigma and angles, stroke starts, pen-up times, size, rotation,
    speed (SynSig2Vec's duplicates)."""
    return vary_genuine(model, rng)


def _lift(model: WriterModel, rng: np.random.Generator, p_lift: float) -> WriterModel:
    """Extra pen-ups: a stroke of two or more impulses is, with probability ``p_lift``, cut into
    two between impulses with a hesitant lift of 0.08-0.35 s (a forger checking the model)."""
    strokes: list[Stroke] = []
    gaps: list[float] = []
    for k, st in enumerate(model.strokes):
        if k:
            gaps.append(model.pen_up_s[k - 1])
        imps = sorted(st.impulses, key=lambda i: i.t0)
        if len(imps) >= 2 and rng.random() < p_lift:
            j = int(rng.integers(1, len(imps)))
            a, b = st.window()
            # The lift comes where the next impulse peaks (inside the stroke's pen-down interval).
            cut = min(max(imps[j].peak_time, a + 0.25 * (b - a)), a + 0.75 * (b - a))
            first = replace(st, impulses=tuple(imps[:j]), span=(a, cut) if st.span else None)
            _, end = first.window()
            pen = first.position(np.array([end]))[0]
            second = replace(st, start=(0.0, 0.0), impulses=tuple(imps[j:]), span=(cut, b) if st.span else None)
            # Where the first part ended: the later impulses' progress by then is not drawn twice.
            s0 = pen - second.position(np.array([cut]))[0]
            second = replace(second, start=(float(s0[0]), float(s0[1])))
            strokes += [first, second]
            gaps.append(float(rng.uniform(0.08, 0.35)))
        else:
            strokes.append(st)
    return replace(model, strokes=tuple(strokes), pen_up_s=tuple(gaps))


def forgery_like(model: WriterModel, rng: np.random.Generator, skill: float = 0.7) -> WriterModel:
    """An imitation of the signature: :func:`tools.synth.vary_forgery` (larger shape distortion,
    slower, hesitations that split impulses, tremor, the forger's own pressure) plus extra pen-ups
    (probability ``0.1 + 0.3 (1 - skill)`` per stroke)."""
    if not 0.0 <= skill <= 1.0:
        raise ValueError(f"skill must be in 0..1, got {skill}")
    return vary_forgery(_lift(model, rng, 0.1 + 0.3 * (1.0 - skill)), rng, skill)


def synthetic_identity(
    model: WriterModel,
    rng: np.random.Generator,
    n_genuine: int,
    n_forgery: int,
    skills: tuple[float, float] = (0.5, 1.0),
    device: DeviceInfo = DEFAULT_DEVICE,
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Genuine-like duplicates and forgery-likes (skill drawn uniformly in ``skills``) of one
    fitted signature, rendered as ``device`` reports them."""
    if min(n_genuine, n_forgery) < 0:
        raise ValueError("counts must be >= 0")
    gen = [render(duplicate(model, rng), rng, device) for _ in range(n_genuine)]
    forg = [render(forgery_like(model, rng, float(rng.uniform(*skills))), rng, device) for _ in range(n_forgery)]
    return gen, forg


def classic_distances(original: Trajectory, others: Sequence[Trajectory]) -> np.ndarray:
    """The classic verifier's distance (its features, its two warping paths) from ``original`` to each."""
    from models.classic import ClassicConfig, classic_distance, signature_features

    cfg = ClassicConfig()
    ref = signature_features(original, cfg)
    return np.array([classic_distance(ref, signature_features(o, cfg), cfg) for o in others])
