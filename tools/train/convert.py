"""Conversion of a trained TS-GATR network to TFLite: float, and full int8.

The trained weights are copied into the same network rebuilt for the device: GRUs unrolled (no
WHILE loop: its full-int8 calibration crashes on this toolchain) and a fixed batch of 1. Full int8
uses a representative dataset of real training signatures' model inputs; inputs and the output are
int8 too, with their scale and zero point in the model (the runtime reads them from there).
Golden vectors come from *synthesised* signatures (tools.synth), so no research data is stored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.learned import INPUT_NAMES, LearnedConfig, ModelInput, featurize
from models.runtime import TFLiteModel
from models.tsgatr import TSGATRConfig, build_tsgatr
from tools.synth import make_population
from tools.train.runs import tf_noise_filtered

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
log = logging.getLogger(__name__)


def device_model(trained: Any, mcfg: TSGATRConfig) -> Any:
    m = build_tsgatr(replace(mcfg, unroll=True, batch=1), name=trained.name + "_device")
    m.set_weights(trained.get_weights())
    return m


def to_tflite(model: Any, representative: Iterable[ModelInput | dict[str, np.ndarray]] | None = None) -> bytes:
    """Float TFLite without ``representative``; full int8 (ops, inputs and output) with it.

    Representative samples are pen :class:`ModelInput` s or, for any other model, dicts of named
    arrays without the batch dimension (e.g. ``{"image": (128, 128, 1)}`` for the CNN-LSTM).
    """
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        reps = list(representative)

        def gen() -> Iterable[dict[str, np.ndarray]]:
            # By name: the converted model orders its inputs its own way.
            for mi in reps:
                arrs = mi if isinstance(mi, dict) else mi.arrays()
                names = tuple(arrs) if isinstance(mi, dict) else INPUT_NAMES
                yield {n: arrs[n][None].astype(np.float32) for n in names}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    # The quantiser prints a line to stderr from C++ whatever the log level (off unless -v).

    with tf_noise_filtered():
        return conv.convert()


def golden_inputs(config: LearnedConfig, n: int = 3, seed: int = 11) -> list[ModelInput]:
    """Model inputs of synthesised signatures (no research data in the repository)."""

    pop = make_population(n_writers=n, n_genuine=1, n_forgeries=0, seed=seed)
    return [featurize(g[0], config) for g, _ in pop.values()][:n]


def write_golden(model_path: Path, config: LearnedConfig, n: int = 3) -> Path:
    """Run the golden inputs through the real runtime and store inputs and outputs beside it."""

    rt = TFLiteModel(model_path)
    ins = golden_inputs(config, n)
    outs = np.stack([rt.run(mi.arrays()) for mi in ins])
    path = model_path.with_name(model_path.stem + ".golden.npz")
    np.savez_compressed(
        path,
        allow_pickle=False,
        lengths=np.array([mi.length for mi in ins]),
        outputs=outs.astype(np.float32),
        **{n_: np.stack([mi.arrays()[n_] for mi in ins]) for n_ in INPUT_NAMES},
    )
    return path
