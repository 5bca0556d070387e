"""The offline embedding network in Keras (tf_keras): convolutions read the ink, an LSTM reads the
feature map column by column, a dense layer gives the writer embedding.

Off the device only (training and conversion), like :mod:`models.tsgatr`: tensorflow is imported
when the builder is called; the device runs the converted model through :mod:`models.runtime`
(see :mod:`models.offline_embed`). We use ``tf_keras`` under ``TF_USE_LEGACY_KERAS=1``: on this
toolchain only the Keras 2 LSTM with a fixed batch of 1 converts to the fused full-int8
``UNIDIRECTIONAL_SEQUENCE_LSTM`` op.

After the first seed paper (a CNN front end whose last feature map is read as a left-to-right
sequence by an LSTM), scaled to train on two CPU cores::

    prepared ink 128×128×1 ─ [Conv3×3 ─ BN ─ ReLU ─ MaxPool2]×4 ─ 8×8×C feature map
      ─ columns left to right: 8 steps of (8·C) ─ Dense (per column) ─ LSTM ─ Dense ─ embedding (D)

Reading columns as time follows the writing direction, so the LSTM sees the signature's parts in
the order they were (mostly) written. The embedding is *not* normalised inside the model:
``L2Normalize`` would need a reduce + rsqrt in int8; the runtime normalises in numpy instead.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

#: The Keras input name; the runtime finds the converted tensor by it (``serving_default_image:0``).
INPUT_NAME = "image"


@dataclass(frozen=True)
class CnnLstmConfig:
    """Sizes of the network. ``size``: the prepared image's side (``models.image_preprocess.SIZE``)."""

    size: int = 128
    filters: tuple[int, ...] = (16, 32, 48, 64)
    column_dim: int = 64  # each feature-map column projected to this before the LSTM
    lstm_units: int = 64
    emb_dim: int = 64
    dropout: float = 0.0  # on the column features during training (nothing on the device)

    @property
    def columns(self) -> int:
        return self.size // 2 ** len(self.filters)

    def to_json(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CnnLstmConfig":
        return cls(**{"dropout": 0.0, **d, "filters": tuple(int(f) for f in d["filters"])})


def build_cnn_lstm(cfg: CnnLstmConfig = CnnLstmConfig(), batch: int | None = None, name: str = "cnn_lstm") -> Any:
    """The embedding network: (batch, size, size, 1) ink in, (batch, emb_dim) embedding out.

    ``batch=1`` for conversion (the fused int8 LSTM needs a fixed batch); ``None`` for training.
    """
    import tf_keras as keras

    layers = keras.layers
    if cfg.size % 2 ** len(cfg.filters):
        raise ValueError(f"size {cfg.size} is not divisible by 2^{len(cfg.filters)} (one pooling per block)")
    image = layers.Input((cfg.size, cfg.size, 1), batch_size=batch, name=INPUT_NAME)
    h = image
    for i, f in enumerate(cfg.filters):
        # No bias before BN (BN has its own shift); BN folds into the convolution on conversion.
        h = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(h)
        h = layers.BatchNormalization(name=f"bn{i + 1}")(h)
        h = layers.ReLU(name=f"relu{i + 1}")(h)
        h = layers.MaxPooling2D(2, name=f"pool{i + 1}")(h)
    n = cfg.columns
    # (rows, cols, C) → (cols, rows, C) → (cols, rows·C): one LSTM step per column, left to right.
    h = layers.Permute((2, 1, 3), name="columns_first")(h)
    h = layers.Reshape((n, n * cfg.filters[-1]), name="column_sequence")(h)
    h = layers.Dense(cfg.column_dim, activation="relu", name="column_proj")(h)
    if cfg.dropout > 0:
        h = layers.Dropout(cfg.dropout, name="column_dropout")(h)
    h = layers.LSTM(cfg.lstm_units, name="lstm")(h)
    emb = layers.Dense(cfg.emb_dim, name="embedding")(h)
    return keras.Model(image, emb, name=name)
