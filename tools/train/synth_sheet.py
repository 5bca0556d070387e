"""``sigkiosk train synth-sheet``: how well the sigma-lognormal fit reproduces real signatures, seen
and measured. A few training writers' genuine signatures per pen set are fitted
(:mod:`tools.lognormal_fit`); the run folder gets ``synth_sheet.png`` (per row: the recording, its
reconstruction with the fit's SNR, duplicates and forgery-likes drawn from the fit) and
``synth.run.json`` (command, commit, data hashes, seed, per-signature SNR and impulses, summary).
Training writers only (validation and test writers are never fitted), and signatures of at most
``MAX_FIT_POINTS`` points, as for training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from models.trajectory import Trajectory
from tools import lognormal_fit
from tools.datasets import load_online
from tools.datasets.types import Label
from tools.provenance import git_commit, invoked_command
from tools.synth import render
from tools.train.data import DEFAULT_SETS, files_hash, sample_key
from tools.train.synthetic import MAX_FIT_POINTS


def _draw(ax: object, traj: Trajectory, title: str, color: str) -> None:
    for sl in traj.strokes():
        ax.plot(traj.x[sl], traj.y[sl], color=color, linewidth=0.8)  # type: ignore[attr-defined]
    ax.set_aspect("equal")  # type: ignore[attr-defined]
    ax.invert_yaxis()  # type: ignore[attr-defined]
    ax.axis("off")  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=6)  # type: ignore[attr-defined]


def make_sheet(data_root: Path, out: Path, per_set: int = 3, duplicates: int = 3, forgery_like: int = 2,
               seed: int = 0, sets: tuple[str, ...] | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if min(per_set, duplicates, forgery_like) < 0 or per_set == 0:
        raise ValueError("per_set must be >= 1 and the counts >= 0")
    known = {fmt for _, fmt in DEFAULT_SETS}
    if sets is not None and not set(sets) <= known:
        raise ValueError(f"unknown set(s) {sorted(set(sets) - known)}; known: {', '.join(sorted(known))}")
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, Trajectory]] = []
    hashes: dict[str, str] = {}
    for rel, fmt in DEFAULT_SETS:
        if sets is not None and fmt not in sets:
            continue
        root = data_root / rel
        ds = load_online(root, fmt, skip_malformed=True).subset("train")
        hashes[fmt] = files_hash(root)
        # The signatures training draws its identities from (tools/train/synthetic.py).
        pool = [s for w in sorted(ds.writers) for s in ds.writers[w]
                if s.label is Label.GENUINE and len(s.trajectory) <= MAX_FIT_POINTS]
        if not pool:
            continue
        for i in sorted(rng.choice(len(pool), size=min(per_set, len(pool)), replace=False).tolist()):
            rows.append((sample_key(fmt, root, pool[i]), pool[i].trajectory))
    if not rows:
        raise ValueError("no training signature to fit in the sets asked for")
    cols = 2 + duplicates + forgery_like
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 1.1 * len(rows)), squeeze=False)
    fits = []
    for r, (key, traj) in enumerate(rows):
        fit = lognormal_fit.fit_signature(traj)
        fits.append({"key": key, "points": len(traj), "strokes": len(fit.strokes), "impulses": fit.impulses,
                     "snr_velocity_db": round(fit.snr_velocity_db, 2),
                     "snr_trajectory_db": round(fit.snr_trajectory_db, 2)})
        g = np.random.default_rng(np.random.SeedSequence([seed, r]))
        _draw(axes[r, 0], traj, key.split(":")[0], "black")
        _draw(axes[r, 1], render(fit.model), f"fit {fit.snr_velocity_db:.1f} / {fit.snr_trajectory_db:.1f} dB",
              "tab:blue")
        for c in range(duplicates):
            _draw(axes[r, 2 + c], render(lognormal_fit.duplicate(fit.model, g), g), "duplicate", "tab:green")
        for c in range(forgery_like):
            skill = float(g.uniform(0.5, 1.0))
            _draw(axes[r, 2 + duplicates + c], render(lognormal_fit.forgery_like(fit.model, g, skill), g),
                  f"forgery-like (skill {skill:.2f})", "tab:red")
    fig.suptitle("recorded | sigma-lognormal fit (velocity / trajectory SNR) | duplicates | forgery-likes",
                 fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "synth_sheet.png", dpi=130)
    plt.close(fig)
    v = np.array([f["snr_velocity_db"] for f in fits])
    t = np.array([f["snr_trajectory_db"] for f in fits])

    def stats(a: np.ndarray) -> dict[str, float]:
        return {"min": round(float(a.min()), 2), "median": round(float(np.median(a)), 2),
                "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2)}

    record = {"command": invoked_command(), "git_commit": git_commit(), "data_sha256": hashes, "seed": seed,
              "fitted": len(fits), "snr": {"velocity_db": stats(v), "trajectory_db": stats(t)}, "fits": fits,
              "seconds": round(time.perf_counter() - t_start, 1)}
    (out / "synth.run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
