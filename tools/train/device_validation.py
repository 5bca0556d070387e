"""The learned model on the cross-device yardstick's validation writers: the selection criterion of
issue 13's ablation.

For each shared pen set with validation writers with forgeries (``tools.train.data.VALIDATION_SETS``)
and each of the yardstick's device variants that applies to it (``tools.cross_device.VARIANTS``: as
recorded, no pressure, no time, 75 Hz, 200 Hz), the skilled-forgery global EER with K = 5 random
references (the evaluator's protocol, ``trials`` draws) of a converted model through the device
runtime. The criterion is the mean over every (set, variant) cell, so that a model is never chosen
on one set or one pad.

Not a leave-one-set-out figure: the learned model is trained on every set's training writers (a
retraining per fold is out of reach here); these validation writers are unseen by it, and no
model is chosen on test writers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.learned import LearnedVerifier
from models.scoring import NormalisationPrior
from models.trajectory import Trajectory
from tools.cross_device import VARIANTS, device_variant
from tools.datasets import OnlineSample, load_online
from tools.evaluate import EmbeddingProvider, plan, score_plans_multi, summarise
from tools.train.data import DEFAULT_SETS, VALIDATION_SETS


def validate_embedder(embed: Callable[[Trajectory], np.ndarray], prior: NormalisationPrior, band: float,
                      data_root: Path, trials: int = 3, references: int = 5,
                      max_writers: int | None = None) -> dict:
    """``{"cells": {set: {variant: EER %}}, "mean": ..., "recorded_mean": ...}`` of any embedding
    (a converted model through the device runtime, or a Keras model in training)."""
    cells: dict[str, dict[str, float]] = {}
    for rel, fmt in DEFAULT_SETS:
        if fmt not in VALIDATION_SETS:
            continue
        ds = load_online(data_root / rel, fmt, skip_malformed=True).subset("validate")
        if max_writers is not None:
            ds.writers = {w: ds.writers[w] for w in sorted(ds.writers)[:max_writers]}
        device = next(s.trajectory.device for ss in ds.writers.values() for s in ss)
        for variant in VARIANTS:
            if not variant.applies(device):
                continue
            vds = device_variant(ds, variant)
            plans, _ = plan(vds, "random-refs", references, trials, seed=0)
            if not plans:
                continue
            memo: dict[int, np.ndarray] = {}

            def embedding(s: OnlineSample, memo: dict[int, np.ndarray] = memo) -> np.ndarray:
                e = memo.get(id(s))
                if e is None:
                    e = memo[id(s)] = embed(s.trajectory)
                return e

            provider = EmbeddingProvider(embed=embedding, prior=prior, band=band)
            r = summarise(score_plans_multi(plans, [provider])[0], "skilled")
            if r is not None:
                cells.setdefault(fmt, {})[variant.key] = round(float(r["eer_global"]), 3)
    flat = [v for c in cells.values() for v in c.values()]
    rec = [c["recorded"] for c in cells.values() if "recorded" in c]
    return {"trials": trials, "references": references, "cells": cells,
            "mean": round(float(np.mean(flat)), 3) if flat else float("nan"),
            "recorded_mean": round(float(np.mean(rec)), 3) if rec else float("nan")}


def validate_model(model: Path, data_root: Path, trials: int = 3, references: int = 5,
                   max_writers: int | None = None) -> dict:
    """:func:`validate_embedder` of a converted model through the device runtime."""
    ver = LearnedVerifier(model, threads=1)
    out = validate_embedder(ver.embed, ver.config.prior, ver.config.band, data_root, trials, references, max_writers)
    return {"model": str(model), **out}


def main(models: list[Path], data_root: Path, trials: int, json_path: Path | None) -> dict:
    out = {str(m): validate_model(m, data_root, trials) for m in models}
    for m, r in out.items():
        print(f"{m}: mean {r['mean']:.2f} (as recorded {r['recorded_mean']:.2f})  "
              + "  ".join(f"{s}/{v} {e:.2f}" for s, c in r["cells"].items() for v, e in c.items()), flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2) + "\n")
    return out
