"""Device augmentation for training: a recorded signature as a random other pad would report it.

The pad properties are drawn here; every change is one of :mod:`models.device_variants`' pure
transforms (the same ones the cross-device yardstick measures with), and the result goes through
the device's own preprocessing and featurisation (:func:`models.learned.resampled_points`) like any
signature: there is one code path from a pad's samples to the model input.

Drawn per signature (ranges in :class:`DeviceAugment`): a small rotation and slant, an aspect
change and a coarser coordinate grid; a sampling rate of 75-200 Hz; timestamp jitter; point
dropout; pressure quantised to 256-8192 levels through a response curve, or no pressure at all;
sometimes no timestamps (the nominal rate assumed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.device_variants import (
    dropped,
    jittered_time,
    quantised_pressure,
    resampled,
    transformed,
    without_pressure,
    without_time,
)
from models.trajectory import Trajectory

if TYPE_CHECKING:
    from models.learned import LearnedConfig
    from tools.train.data import Corpus

#: Pressure resolutions of pads on sale (raw levels).
PRESSURE_LEVELS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class DeviceAugment:
    """Ranges of the drawn pad properties (each uniform unless said otherwise)."""

    rate_hz: tuple[float, float] = (75.0, 200.0)
    rotation_deg: float = 5.0  # +-
    slant_deg: float = 8.0  # +-
    aspect: float = 0.1  # x stretched by exp(U(-a, a))
    grid_frac: float = 0.004  # coordinate grid up to this fraction of the ink height
    jitter_periods: float = 0.2  # timestamp jitter up to this fraction of a sample period
    dropout: float = 0.05  # share of points lost, up to
    gamma: float = 0.5  # pressure response exponent exp(U(-g, g))
    p_no_pressure: float = 0.15
    p_no_time: float = 0.1

    def to_json(self) -> dict:
        return asdict(self)


def augment(traj: Trajectory, rng: np.random.Generator, cfg: DeviceAugment = DeviceAugment()) -> Trajectory:
    """One random pad's report of ``traj`` (see the module docstring). Deterministic in ``rng``."""
    u = rng.uniform
    h = float(np.ptp(traj.y[traj.pen_down])) if traj.pen_down.any() else float(np.ptp(traj.y))
    grid = u(0.0, cfg.grid_frac) * h if h > 0 else None
    out = transformed(traj, rotation_deg=u(-cfg.rotation_deg, cfg.rotation_deg),
                      slant_deg=u(-cfg.slant_deg, cfg.slant_deg), aspect=float(np.exp(u(-cfg.aspect, cfg.aspect))),
                      grid=grid if grid and grid > 0 else None)
    rate = float(u(*cfg.rate_hz))
    out = resampled(out, rate)
    out = jittered_time(out, u(-cfg.jitter_periods, cfg.jitter_periods, size=len(out)) / rate)
    out = dropped(out, u(0.0, 1.0, size=len(out)) >= u(0.0, cfg.dropout))
    if not out.device.has_pressure or rng.random() < cfg.p_no_pressure:
        out = without_pressure(out)
    else:
        out = quantised_pressure(out, int(rng.choice(PRESSURE_LEVELS)), float(np.exp(u(-cfg.gamma, cfg.gamma))))
    if rng.random() < cfg.p_no_time:
        out = without_time(out, rate)
    return out


#: Split of the augmented copies: only the triplet sampler reaches them (through ``Corpus.variants``).
AUGMENTED_SPLIT = "augmented"


def add_augmented(corpus: Corpus, items: list[tuple[int, Trajectory]], copies: int, cfg: DeviceAugment,
                  lc: LearnedConfig, seed: int) -> int:
    """Append ``copies`` augmented versions of each ``(corpus index, trajectory)`` to ``corpus``
    and record them in ``corpus.variants[index]``. Returns how many were added."""
    from models.learned import resampled_points
    from models.trajectory import TrajectoryError
    from tools.train.data import Signature
    from tools.train.loop import progress

    added = 0
    bar = progress(len(items), "device augmentation")
    for i, traj in items:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 29, i]))
        src = corpus.signatures[i]
        for c in range(copies):
            try:
                pts = resampled_points(augment(traj, rng, cfg), lc)
            except (TrajectoryError, ValueError):
                continue
            corpus.variants.setdefault(i, []).append(len(corpus.signatures))
            corpus.signatures.append(Signature(key=f"{src.key}~{c}", writer=src.writer, genuine=src.genuine,
                                               split=AUGMENTED_SPLIT, session=src.session, points=pts))
            added += 1
        bar.update(1)
    bar.close()
    return added


def real_training_items(corpus: Corpus) -> list[tuple[int, Trajectory]]:
    """(corpus index, trajectory) of every signature of the real training writers."""
    from tools.train.data import sample_key

    index = {s.key: i for i, s in enumerate(corpus.signatures) if s.split == "train"}
    out = []
    for fmt, ds in corpus.datasets.items():
        root = corpus.roots[fmt]
        for ss in ds.writers.values():
            for s in ss:
                i = index.get(sample_key(fmt, root, s))
                if i is not None:
                    out.append((i, s.trajectory))
    return out
