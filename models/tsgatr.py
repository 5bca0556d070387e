"""TS-GATR in Keras (tf_keras): graph attention over two signature graphs, a GRU, gated fusion.

Off the device only (training, distillation, conversion): this is the one module of ``models/``
that imports tensorflow, and it does so when a builder is called. We use ``tf_keras`` (Keras 2)
under ``TF_USE_LEGACY_KERAS=1``: Keras 3 turns a GRU into a WHILE loop whose full-int8 calibration
crashes; with tf_keras, ``unroll=True`` and a fixed batch of 1 the converter emits plain int8 ops.

The network, after the seed paper, scaled for CPU training (sizes in :class:`TSGATRConfig`)::

    feats ─ Dense ─ h ─┬─ graph attention (k-step mask) ─┐
                       ├─ graph attention (k-NN mask)  ──┴ concat ─ Dense ─ +h ─ LN ─ FFN ─ +· ─ LN ─ g
                       └─ GRU ─ r
    gate = σ(W[g, r]);  f = gate·g + (1 − gate)·r + h          (gated fusion with a residual)
    f ─ ×valid ─ MaxPool(2) ─ GRU ─ Dense ─ embeddings (L/2, D)  (compared by DTW)

Attention is restricted to graph neighbours by an additive mask input (0 / −10, see
:mod:`models.graphs`), with learned query/key/value projections per branch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@dataclass(frozen=True)
class TSGATRConfig:
    """Sizes of one TS-GATR network (teacher or student)."""

    max_len: int = 128
    n_features: int = 14
    width: int = 64  # model width d (Dense projection, GRU branch, fusion)
    att_dim: int = 32  # query/key/value width per graph branch
    ffn: int = 128
    out_gru: int = 64
    emb_dim: int = 32
    use_graphs: bool = True
    use_gru: bool = True
    unroll: bool = False  # True for conversion to full int8 (no WHILE loop)
    batch: int | None = None  # fixed 1 for conversion

    def to_json(self) -> dict:
        return asdict(self)


def _keras() -> Any:
    import tf_keras

    return tf_keras


def build_tsgatr(cfg: TSGATRConfig, name: str = "tsgatr") -> Any:
    """The functional model: inputs ``feats, step_mask, knn_mask, valid`` → ``(L/2, emb_dim)``."""
    keras = _keras()
    import tensorflow as tf

    L, b = cfg.max_len, cfg.batch
    layers = keras.layers
    feats = keras.Input((L, cfg.n_features), batch_size=b, name="feats")
    step_mask = keras.Input((L, L), batch_size=b, name="step_mask")
    knn_mask = keras.Input((L, L), batch_size=b, name="knn_mask")
    valid = keras.Input((L, 1), batch_size=b, name="valid")

    h = layers.Dense(cfg.width, name="embed")(feats)
    h = layers.Multiply(name="embed_masked")([h, valid])

    def graph_attention(x: Any, mask: Any, tag: str) -> Any:
        q = layers.Dense(cfg.att_dim, name=f"{tag}_q")(x)
        k = layers.Dense(cfg.att_dim, name=f"{tag}_k")(x)
        v = layers.Dense(cfg.att_dim, name=f"{tag}_v")(x)
        logits = tf.matmul(q, k, transpose_b=True) * (1.0 / float(cfg.att_dim) ** 0.5)
        weights = layers.Softmax(axis=-1, name=f"{tag}_softmax")(logits + mask)
        return tf.matmul(weights, v)

    branches = []
    if cfg.use_graphs:
        a = layers.Concatenate(name="graph_concat")(
            [graph_attention(h, step_mask, "step"), graph_attention(h, knn_mask, "knn")]
        )
        a = layers.Dense(cfg.width, name="graph_out")(a)
        g = layers.LayerNormalization(name="graph_ln1")(layers.Add()([h, a]))
        ff = layers.Dense(cfg.ffn, activation="relu", name="ffn1")(g)
        ff = layers.Dense(cfg.width, name="ffn2")(ff)
        g = layers.LayerNormalization(name="graph_ln2")(layers.Add()([g, ff]))
        branches.append(g)
    if cfg.use_gru:
        r = layers.GRU(cfg.width, return_sequences=True, unroll=cfg.unroll, name="gru_branch")(h)
        branches.append(r)
    if not branches:
        raise ValueError("TS-GATR needs the graph branch, the GRU branch, or both")

    if len(branches) == 2:
        g, r = branches
        gate = layers.Dense(cfg.width, activation="sigmoid", name="gate")(layers.Concatenate()([g, r]))
        # gate·g + (1 − gate)·r == r + gate·(g − r): one multiply, int8 friendly.
        fused = layers.Add()([r, layers.Multiply()([gate, layers.Subtract()([g, r])])])
    else:
        fused = branches[0]
    f = layers.Add(name="residual")([fused, h])
    f = layers.Multiply(name="fused_masked")([f, valid])
    f = layers.MaxPooling1D(pool_size=2, strides=2, name="pool")(f)
    o = layers.GRU(cfg.out_gru, return_sequences=True, unroll=cfg.unroll, name="gru_out")(f)
    emb = layers.Dense(cfg.emb_dim, name="embedding")(o)
    return keras.Model([feats, step_mask, knn_mask, valid], emb, name=name)
