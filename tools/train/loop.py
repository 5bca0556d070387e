"""What the pen (:mod:`tools.train.trainer`) and the image (:mod:`tools.train.offline`) training
loops share: the per-epoch history with its best epoch, deterministic seeds, the progress bar."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from tqdm import tqdm


@dataclass
class History:
    """One record per epoch (losses, validation figures, seconds) and the epoch kept: the one with
    the lowest validation figure (``best_val_eer``, the training's model-selection criterion)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_eer: float = float("inf")


def set_seeds(seed: int) -> None:
    # TensorFlow is imported here, not at the top: the data and selection modules that import this
    # one are used (and tested) without loading it.
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF: determinism is best effort
        pass


def progress(total: int, desc: str, file: IO[str] | None = None, leave: bool = False) -> Any:
    """A progress bar on a terminal (stderr, or ``file``), nothing in a log or a pipe (tqdm's
    ``disable=None``: off when the stream is not a TTY). Redrawn at most twice a second; erased
    when done unless ``leave`` (each epoch prints its own summary line instead)."""
    return tqdm(total=total, desc=desc, leave=leave, mininterval=0.5, disable=None, file=file)
