"""The seed paper's ablations, on validation writers only: GRU only / graphs only / both, the k of
the k-NN graph and the k of the k-step graph. Each variant trains the teacher-size network with the
same seed, data and budget, and reports its best validation skilled EER (K = 5, global threshold).

And issue 13's data ablation (``--data-variants``): real only / + sigma-lognormal duplicates /
+ forgery-likes / + device augmentation, measured on the cross-device yardstick's validation writers.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

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


#: Issue 13's data ablation: name -> (synthetic duplicates per identity, forgery-likes per identity,
#: device augmentation probability). Each adds to the one before it.
DATA_VARIANTS: dict[str, tuple[int, int, float]] = {
    "real only": (0, 0, 0.0),
    "+ duplicates": (6, 0, 0.0),
    "+ forgery-like": (6, 4, 0.0),
    "+ device augmentation": (6, 4, 0.5),
}


def keras_embedder(model: Any, lc: Any) -> Any:
    """Trajectory -> embeddings with a Keras model, through the device's featurisation."""
    import tensorflow as tf

    from models.learned import featurize
    from tools.train.data import batch_inputs

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def embed(traj: Any) -> np.ndarray:
        mi = featurize(traj, lc)
        return np.asarray(fn(batch_inputs([mi])).numpy()[0, : mi.out_length], dtype=np.float64)

    return embed


def run_data_ablations(data: Path | None, work: Path, epochs: int, steps: int, batch_writers: int,
                       identities: int, json_path: Path | None, only: list[str] | None = None,
                       seed: int = 0, augment_copies: int = 2, p_synthetic: float = 0.5) -> dict[str, dict]:
    """Real only / + duplicates / + forgery-like / + device augmentation: the teacher-size network,
    same seed and budget, each measured on the cross-device yardstick's validation writers (every
    validation set x pad variant, K = 5; :mod:`tools.train.device_validation`) with its best epoch."""
    from tools.train.augment import DeviceAugment, add_augmented, real_training_items
    from tools.train.data import Corpus, InputCache
    from tools.train.device_validation import validate_embedder
    from tools.train.synthetic import SynthConfig, add_synthetic
    from tools.train.trainer import Embedder, fit_prior

    root = data or default_data_root()
    pc = default_pipeline(quick=False)
    lc = pc.learned
    base = load_corpus(root, lc, cache_dir=work / "cache")
    results: dict[str, dict] = {}
    for name, (dups, forgs, p_aug) in DATA_VARIANTS.items():
        if only and name not in only:
            continue
        corpus = Corpus(signatures=list(base.signatures), hashes=base.hashes, datasets=base.datasets,
                        roots=base.roots)
        record: dict = {}
        items: list = []
        if dups or forgs:
            synth = SynthConfig(identities=identities, duplicates=dups, forgery_like=forgs, seed=seed)
            record["synthetic"], items = add_synthetic(corpus, synth, lc, work / "synth", keep_trajectories=p_aug > 0)
        if p_aug > 0:
            record["device_augment"] = add_augmented(corpus, real_training_items(corpus) + items, augment_copies,
                                                     DeviceAugment(), lc, seed)
        tcfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, batch_writers=batch_writers, patience=epochs,
                           seed=seed, p_synthetic=p_synthetic if (dups or forgs) else 0.0, p_augment=p_aug)
        model, hist = train_metric_model(corpus, lc, pc.teacher, tcfg,
                                         desc=re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_"))
        prior = fit_prior(Embedder(model, InputCache(corpus, lc)), corpus, lc.band, n_writers=40)
        cdv = validate_embedder(keras_embedder(model, lc), prior, lc.band, root, trials=tcfg.val_trials)
        best = min(hist.epochs, key=lambda e: e["val_skilled_eer"]["mean"])
        results[name] = {"best_epoch": best["epoch"], "val_skilled_eer": best["val_skilled_eer"],
                         "cross_device_validation": cdv, **record}
        print(f"ablation {name}: cross-device validation mean {cdv['mean']:.2f} (as recorded "
              f"{cdv['recorded_mean']:.2f}); " + "  ".join(f"{s}/{v} {e:.2f}" for s, c in cdv["cells"].items()
                                                            for v, e in c.items()), flush=True)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"epochs": epochs, "steps": steps, "batch_writers": batch_writers,
                                             "identities": identities, "seed": seed, "results": results},
                                            indent=2) + "\n")
    return results
