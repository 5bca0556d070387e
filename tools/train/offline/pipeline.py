"""One ``sigkiosk train offline`` run end to end: data, training, conversion, run record.

Artefacts in ``--out``: ``cnn_lstm_float.tflite`` and ``cnn_lstm_int8.tflite``, each with its
``.config.json`` (network, prior, threshold) and ``.golden.npz``, and the run record
``cnn_lstm.run.json`` (command, commit, data hashes, configs, per-epoch history, figures).
:func:`score_models` gives the selection figures of already converted models (``--score``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from models.cnn_lstm import CnnLstmConfig
from models.offline_embed import ImageEmbedder
from tools.provenance import git_commit, invoked_command
from tools.train.offline.convert import convert
from tools.train.offline.data import CROSS_MEDIA, DUTCH, RENDERED, SYNTH, load_corpus
from tools.train.offline.selection import TFLiteEmbedder, in_pool, selection
from tools.train.offline.trainer import OfflineTrainConfig, train

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RECORD_NAME = "cnn_lstm.run.json"


def score_models(paths: list[Path], data_root: Path, cache: Path, trials: int = 10,
                 select_on: str = "dutch") -> dict[str, dict]:
    """The selection figures of already converted models (the shipped ones, candidates), each with the
    prior and threshold in its own config: every model judged on the same validation writers."""
    corpus = load_corpus(data_root, cache, False, None, 0, select_on)
    out: dict[str, dict] = {}
    for path in paths:
        prior = ImageEmbedder(path).config.prior
        if prior is None:
            raise ValueError(f"{path}: its config has no normalisation prior; convert it with `train offline`")
        out[str(path)] = selection(TFLiteEmbedder(path, corpus), corpus, prior, trials, select_on)
    return out


def run(data_root: Path, out: Path, cache: Path, net: CnnLstmConfig, cfg: OfflineTrainConfig,
        rendered: bool = True, max_writers: int | None = None, representative: int = 200,
        synthetic: int = 0, cross_media: bool = True) -> dict:
    import tensorflow as tf

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(data_root, cache, rendered, max_writers, cfg.seed, cfg.select_on, synthetic, cross_media)
    n_train = len(corpus.by_writer("train"))
    cross = {s: corpus.by_writer(s, CROSS_MEDIA[1]) for s in ("train", "validate")}
    print(f"data: {len(corpus)} prepared images; train writers and identities {n_train} "
          f"(scans {len(corpus.by_writer('train', DUTCH[1]))}, cross-media identities {len(cross['train'])}), "
          f"validate {len(corpus.by_writer('validate'))}", flush=True)
    record: dict = {
        "command": invoked_command(),
        "git_commit": git_commit(),
        "data_sha256": corpus.hashes,
        "images": {"total": len(corpus), "train_writers": n_train,
                   "synthetic_train_writers": len([w for w in corpus.by_writer("train") if w.startswith(SYNTH + ":")]),
                   "validate_writers": len(corpus.by_writer("validate", DUTCH[1])),
                   "validate_writers_rendered": len([w for w in corpus.by_writer("validate")
                                                     if in_pool(w, RENDERED)]),
                   "cross_media_train_identities": len(cross["train"]),
                   "cross_media_validate_identities": len(cross["validate"])},
        "network": net.to_json(),
        "train_config": cfg.to_json(),
        "cross_media_training": cross_media,
        "augmentation": "on the prepared 128x128 image: rotation ±5°, scale 0.9-1.08, shift ±5 px, "
                        "2x2 dilate/erode p=0.3" + (f", Gaussian blur (sigma 0.6-1.4) + binary re-threshold "
                                                    f"(0.25-0.6) p={cfg.p_blur}" if cfg.p_blur else ""),
        "tensorflow": tf.__version__,
    }
    model, hist = train(corpus, net, cfg)
    record["history"] = hist.epochs
    record["best_epoch"] = hist.best_epoch
    record["best_criterion"] = hist.best_val_eer
    record["models"] = convert(model, net, corpus, out, cfg.seed, representative, cfg.val_trials, cfg.select_on)
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def quick_configs(seed: int = 0) -> tuple[CnnLstmConfig, OfflineTrainConfig]:
    """Tiny network and two epochs of a few steps: the pipeline end to end in about a minute."""
    net = CnnLstmConfig(filters=(8, 8, 16, 16), column_dim=16, lstm_units=16, emb_dim=16)
    cfg = OfflineTrainConfig(epochs=2, steps_per_epoch=3, writers_per_batch=3, genuine_per_writer=3, val_trials=1,
                             seed=seed)
    return net, cfg
