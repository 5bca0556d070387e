"""The one rule for small backward time steps in recorded pen files, as a pure function.

Real files of every tablet carry small clock glitches: a sample stamped a few milliseconds before
its predecessor (SUSIG Visual: 158 of 3020 files, 10 ms; SUSIG Blind: 1 ms; an SVC2004 set: 13 of
1600 files, 8-9 ms), while the recording goes on at its normal pace. Refusing those files drops
real signatures for an artefact shorter than one sample period; accepting them as they are breaks
the ``Trajectory`` invariant that time never goes backwards. So every reader with timestamps calls
:func:`retime_backward_steps`:

* The **sample period** is estimated from the file itself, robustly: the median of its positive
  time steps (repeated timestamps and the glitches do not move a median of hundreds of steps).
* A step back of at most :data:`MAX_BACK_PERIODS` (two) periods is a glitch and is **re-timed**.
  A larger one is not a glitch (a reordered, spliced or corrupt recording): it is refused, and the
  reader names the file and line.
* **How it is re-timed**: the fewest samples around the step get new times, spaced linearly
  between the nearest samples that are in order (the anchors). The sample that stepped back is
  tried alone first (anchors: its two neighbours; the SUSIG and SVC2004 pattern, where the next
  sample is back on the clock), then the sample before it alone (it was stamped late), then the
  window grows one sample at a time on each side until its anchors are in order. At the first or
  last sample of a file a missing anchor is one period beyond the window.

Why linear re-spacing rather than clamping to the previous time (what the SUSIG reader did before)
or the previous time plus an epsilon: every re-timed step is then a positive fraction of the
anchors' spacing, about half a period for the usual single glitch, so speed, acceleration and the
resampler's interpolation see an ordinary sample. A clamped (zero) step makes any per-sample speed
infinite, and an epsilon step makes it enormous; the resampler would also drop one of the two
samples sharing a time. Positions are never changed: only when a point was taken.

A 32-bit counter wrap (SUSIG Blind stamps a few stroke starts 2**32 us late) is *not* a glitch of
this kind: it is decoded by the SUSIG reader, before this rule, as what it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The largest backward step (in sample periods of the file) that is re-timed; larger ones are refused.
MAX_BACK_PERIODS = 2.0


@dataclass(frozen=True)
class Retimed:
    """Times after the rule. ``repaired``: how many backward steps the input had (each re-timed);
    ``period``: the sample period estimated from the file (``None`` with no positive step)."""

    t: np.ndarray
    repaired: int
    period: float | None


class BackwardJumpError(ValueError):
    """A backward time step too large to be a glitch. ``index``: the 0-based sample that steps back."""

    def __init__(self, index: int, back: float, period: float | None, limit_periods: float) -> None:
        self.index = index
        self.back = back
        self.period = period
        if period is None:
            why = "the file has no forward time step to measure its sample period"
        else:
            why = f"{back / period:.1f} sample periods of {period:g}; at most {limit_periods:g} are re-timed"
        super().__init__(f"time goes backwards by {back:g} ({why})")


def sample_period(t: np.ndarray) -> float | None:
    """The median positive time step, or ``None`` when time never moves forward."""
    d = np.diff(np.asarray(t, dtype=np.float64))
    pos = d[d > 0]
    return float(np.median(pos)) if pos.size else None


def retime_backward_steps(t: np.ndarray, max_back_periods: float = MAX_BACK_PERIODS) -> Retimed:
    """Re-time every backward step of at most ``max_back_periods`` sample periods (see the module
    docstring); raise :class:`BackwardJumpError` naming the first larger one. Pure: ``t`` is not
    modified; a file without backward steps comes back unchanged (a copy)."""
    t = np.asarray(t, dtype=np.float64)
    out = t.copy()
    d = np.diff(t)
    back = np.flatnonzero(d < 0) + 1
    period = sample_period(t)
    if back.size == 0:
        return Retimed(out, 0, period)
    steps = t[back - 1] - t[back]
    if period is None:
        i = int(back[0])
        raise BackwardJumpError(i, float(steps[0]), None, max_back_periods)
    # A hair of slack so that exactly two periods in decimal milliseconds is not refused by rounding.
    too_big = np.flatnonzero(steps > max_back_periods * period * (1 + 1e-9))
    if too_big.size:
        k = int(too_big[0])
        raise BackwardJumpError(int(back[k]), float(steps[k]), period, max_back_periods)
    # Each repair leaves everything up to its right anchor in order, so the first remaining
    # violation moves strictly right and the loop ends within len(t) rounds.
    while (bad := np.flatnonzero(np.diff(out) < 0)).size:
        i = int(bad[0]) + 1
        lo, hi, t_lo, t_hi = _window(out, i, period)
        a, b = lo - 1, hi + 1
        out[lo : hi + 1] = t_lo + (np.arange(lo, hi + 1) - a) * (t_hi - t_lo) / (b - a)
    return Retimed(out, int(back.size), period)


def _window(t: np.ndarray, i: int, period: float) -> tuple[int, int, float, float]:
    """The samples ``lo..hi`` to re-time for the backward step into sample ``i``, and the times of
    the anchors on either side (order of preference in the module docstring)."""
    n = len(t)
    tried = [(i, i), (i - 1, i - 1), (i - 1, i)]
    lo, hi = i - 1, i
    while lo > 0 or hi < n - 1:
        # Grow towards later samples first: a glitch is caught up by the clock afterwards.
        if hi < n - 1:
            hi += 1
            tried.append((lo, hi))
        if lo > 0:
            lo -= 1
            tried.append((lo, hi))
    for lo, hi in tried:
        a, b = lo - 1, hi + 1
        if a < 0 and b > n - 1:
            continue
        # Beyond either end of the file the anchor is one period per sample past the other one.
        t_a = float(t[a]) if a >= 0 else float(t[b]) - (b - a) * period
        t_b = float(t[b]) if b <= n - 1 else float(t[a]) + (b - a) * period
        if t_a < t_b:
            return lo, hi, t_a, t_b
    # The whole file but one end, anchored one period beyond that end, always qualifies.
    raise AssertionError("unreachable: no re-timing window")  # pragma: no cover
