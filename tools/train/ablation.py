"""The seed paper's ablations, on validation writers only: GRU only / graphs only / both, the k of
the k-NN graph and the k of the k-step graph. Each variant trains the teacher-size network with the
same seed, data and budget, and reports its best validation skilled EER (K = 5, global threshold).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

from tools.train.data import default_data_root, load_corpus
from tools.train.pipeline import default_pipeline
from tools.train.trainer import TrainConfig, train_metric_model

log = logging.getLogger(__name__)

#: name → (use_graphs, use_gru, k_nn, k_step)
VARIANTS: dict[str, tuple[bool, bool, int, int]] = {
    "both (k_nn 16, k_step 2)": (True, True, 16, 2),
    "GRU only": (False, True, 16, 2),
    "graphs only": (True, False, 16, 2),
    "k_nn 8": (True, True, 8, 2),
    "k_nn 32": (True, True, 32, 2),
    "k_step 1": (True, True, 16, 1),
    "k_step 4": (True, True, 16, 4),
}


def run_ablations(data: Path | None, work: Path, epochs: int, steps: int, json_path: Path | None,
                  only: list[str] | None = None) -> dict[str, dict]:
    pc = default_pipeline(quick=False)
    corpus = load_corpus(data or default_data_root(), pc.learned, cache_dir=work / "cache")
    tcfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, patience=epochs)
    results: dict[str, dict] = {}
    for name, (graphs, gru, k_nn, k_step) in VARIANTS.items():
        if only and name not in only:
            continue
        lc = replace(pc.learned, k_nn=k_nn, k_step=k_step)
        mcfg = replace(pc.teacher, use_graphs=graphs, use_gru=gru)
        # Keras scope names allow no spaces or parentheses.
        _, hist = train_metric_model(corpus, lc, mcfg, tcfg, desc=re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_"))
        best = min(hist.epochs, key=lambda e: e["val_skilled_eer"]["mean"])
        results[name] = {"best_epoch": best["epoch"], "val_skilled_eer": best["val_skilled_eer"]}
        print(f"ablation {name}: " + "  ".join(f"{k} {v:.2f}" for k, v in best["val_skilled_eer"].items()),
              flush=True)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"epochs": epochs, "steps": steps, "results": results}, indent=2) + "\n")
    return results
