"""Conversion of the trained CNN-LSTM to float and full-int8 TFLite, through :func:`tools.train.convert.to_tflite`.

Each model gets its normalisation prior (fitted on training writers) and global threshold (chosen
on validation writers), both measured through the device runtime, and golden vectors of
*synthesised* signatures (:mod:`tools.synth`), so no research data is stored beside it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.cnn_lstm import INPUT_NAME, CnnLstmConfig, build_cnn_lstm
from models.image_preprocess import SIZE, prepare
from models.offline_embed import ImageEmbedder, OfflineConfig, save_config
from models.render import render_ink
from tools.synth import make_population
from tools.train.convert import to_tflite
from tools.train.offline.data import SYNTH, ImageCorpus
from tools.train.offline.selection import TFLiteEmbedder, fit_prior, selection, validation_eer

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

FLOAT_NAME = "cnn_lstm_float"
INT8_NAME = "cnn_lstm_int8"


def golden_images(n: int = 3, seed: int = 11, size: int = SIZE) -> np.ndarray:
    """Prepared images of *synthesised* signatures (tools.synth) rendered as ink: no research data."""
    pop = make_population(n_writers=n, n_genuine=1, n_forgeries=0, seed=seed)
    imgs = [prepare(render_ink(g[0], rng=np.random.default_rng(seed)), size) for g, _ in pop.values()]
    return np.stack(imgs[:n])[..., None].astype(np.float32)


def write_golden(model_path: Path, n: int = 3) -> Path:
    """Golden vectors beside the model, in the by-name layout the update agent checks
    (``kiosk/golden.py``): the model's input ``image`` and its raw output ``outputs``, as the device
    runtime computes them. The embedding the verifier uses is that output's unit vector."""
    emb = ImageEmbedder(model_path)
    ins = golden_images(n, size=emb.config.input_size)
    outs = np.stack([emb.model.run({INPUT_NAME: x}) for x in ins])
    path = model_path.with_name(model_path.stem + ".golden.npz")
    arrays: dict[str, np.ndarray] = {INPUT_NAME: ins, "outputs": outs.astype(np.float32)}
    # numpy's stub reads the keyword arrays as its allow_pickle flag
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def convert(model: Any, net: CnnLstmConfig, corpus: ImageCorpus, out: Path, seed: int, representative: int,
            val_trials: int, select_on: str = "dutch") -> dict:
    """Float and full-int8 models, each with its prior (training writers) and threshold (validation)."""
    dev = build_cnn_lstm(net, batch=1, name="cnn_lstm_device")
    dev.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    # Representative inputs from real writers only (scans and rendered online ink), as on the device.
    train_idx = [i for i, (s, w) in enumerate(zip(corpus.split, corpus.writers))
                 if s == "train" and not w.startswith(SYNTH + ":")]
    pick = rng.choice(train_idx, size=min(representative, len(train_idx)), replace=False)
    reps = [{INPUT_NAME: x[..., None]} for x in corpus.float_images(pick)]
    figures: dict = {}
    for name, rep in ((FLOAT_NAME, None), (INT8_NAME, reps)):
        t0 = time.perf_counter()
        path = out / f"{name}.tflite"
        path.write_bytes(to_tflite(dev, rep))
        base = OfflineConfig(input_size=net.size, emb_dim=net.emb_dim, network=net.to_json())
        save_config(path, base)
        prior = fit_prior(TFLiteEmbedder(path, corpus), corpus)
        save_config(path, replace(base, prior=prior))
        val = validation_eer(TFLiteEmbedder(path, corpus), corpus, prior, trials=val_trials)
        save_config(path, replace(base, prior=prior, threshold=float(val["skilled_threshold"])))
        write_golden(path)
        figures[name] = {"bytes": path.stat().st_size, "prior": asdict(prior), "validation": val,
                         "seconds": round(time.perf_counter() - t0, 1)}
        if select_on != "dutch":
            figures[name]["selection"] = selection(TFLiteEmbedder(path, corpus), corpus, prior, val_trials, select_on)
        print(f"{name}: {path.stat().st_size / 1024:.0f} KiB; validation skilled EER "
              f"{val['skilled_eer_global']:.2f} %, threshold {val['skilled_threshold']:.3f}", flush=True)
    return figures

