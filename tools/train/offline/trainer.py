"""Training of the CNN-LSTM image embedding (tf_keras, CPU).

Loss, on the L2-normalised embedding of P writers × K genuine images (+ some of each writer's
skilled forgeries, which are only ever negatives):

* writer classification by a cosine-softmax head (scale 16), dropped after training;
* batch-hard triplet loss (hardest positive, hardest negative per anchor, margin ``margin``);
  a writer's own skilled forgeries are in its batch, so they are often the hardest negatives, and
  so are the other writers' versions of a cross-media name (:class:`BatchSampler`), while an
  identity's paper picture against its ink pictures is often the hardest positive.

A "writer" is a class: a writer of the Dutch or the online sets, or a cross-media (writer, name)
identity.

Each batch image is augmented (:mod:`tools.train.offline.augment`). After every epoch the model is
judged by :func:`tools.train.offline.selection.selection`; the best epoch's weights are kept, with
early stopping after ``patience`` epochs without improvement or when the time budget is spent.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.cnn_lstm import CnnLstmConfig, build_cnn_lstm
from tools.train.loop import History, progress, set_seeds
from tools.train.offline.augment import augment
from tools.train.offline.data import PAPER, ImageCorpus, identity_text
from tools.train.offline.selection import KerasEmbedder, fit_prior, selection

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@dataclass(frozen=True)
class OfflineTrainConfig:
    epochs: int = 40
    steps_per_epoch: int = 80
    writers_per_batch: int = 12
    genuine_per_writer: int = 4
    forgeries_per_writer: int = 1
    lr: float = 1e-3
    #: Cosine decay of the learning rate to 5 % over ``epochs × steps_per_epoch`` steps.
    lr_decay: bool = False
    margin: float = 0.3
    softmax_scale: float = 16.0
    w_softmax: float = 1.0
    patience: int = 6
    seed: int = 0
    val_trials: int = 5
    #: Stop after this many minutes of training (the best epoch so far is kept).
    time_budget_min: float | None = None
    #: Probability of :func:`tools.train.offline.augment.blur_rethreshold` in the augmentation.
    p_blur: float = 0.0
    #: Cross-media identities of one same name in each batch (besides ``writers_per_batch``), when
    #: the corpus has them: each other's hard negatives.
    same_name_per_batch: int = 6
    #: Of ``writers_per_batch``, at least this many writers with real scans (paper, real
    #: forgeries): drawn uniformly, the 45 Dutch training writers are about 2 of 12 beside the
    #: writers of rendered ink.
    scans_per_batch: int = 0
    #: Model selection (:func:`tools.train.offline.selection.selection`): "dutch" (the Dutch validate
    #: writers' skilled EER) or its mean with the cross-media validate writers' pad-to-paper figure
    #: and/or that of ink rendered from the online sets' validate writers, e.g. "dutch+cross-media".
    select_on: str = "dutch"

    def to_json(self) -> dict:
        return asdict(self)


class BatchSampler:
    """P writers × K genuine images, plus up to F of each writer's skilled forgeries; and, where the
    corpus has cross-media identities, ``same_name_per_batch`` identities who wrote one same name
    (each with its paper and ink pictures: the hard positives), so that the other writers' versions
    of that name are in the batch as the hard negatives."""

    def __init__(self, corpus: ImageCorpus, cfg: OfflineTrainConfig, rng: np.random.Generator) -> None:
        self.groups = {w: gf for w, gf in corpus.by_writer("train").items() if len(gf[0]) >= 2}
        self.names = sorted(self.groups)
        self.cls = {w: i for i, w in enumerate(self.names)}
        self.writers = [w for w in self.names if identity_text(w) is None]
        scans = {w for w, m in zip(corpus.writers, corpus.medium) if m == PAPER}
        self.scan_writers = [w for w in self.writers if w in scans]
        self.same_text: dict[int, list[str]] = {}
        for w in self.names:
            if (t := identity_text(w)) is not None:
                self.same_text.setdefault(t, []).append(w)
        self.texts = sorted(t for t, ws in self.same_text.items() if len(ws) >= 2)
        self.cfg, self.rng = cfg, rng

    def _pick(self, pool: list[str], n: int) -> list[str]:
        return [pool[int(i)] for i in self.rng.choice(len(pool), size=min(n, len(pool)), replace=False)]

    def batch(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(indices, writer class (−1 for a forgery), triplet label (forgeries get their own))."""
        c = self.cfg
        chosen = self._pick(self.scan_writers, c.scans_per_batch) if c.scans_per_batch else []
        chosen += self._pick([w for w in self.writers if w not in chosen], c.writers_per_batch - len(chosen))
        if self.texts and c.same_name_per_batch:
            text = self.texts[int(self.rng.integers(len(self.texts)))]
            chosen += self._pick(self.same_text[text], c.same_name_per_batch)
        idx, cls, lab = [], [], []
        for w in chosen:
            wi = self.cls[w]
            g, f = self.groups[w]
            k = min(c.genuine_per_writer, len(g))
            idx += [g[int(j)] for j in self.rng.choice(len(g), size=k, replace=False)]
            cls += [wi] * k
            lab += [wi] * k
            if f and c.forgeries_per_writer:
                nf = min(c.forgeries_per_writer, len(f))
                idx += [f[int(j)] for j in self.rng.choice(len(f), size=nf, replace=False)]
                cls += [-1] * nf
                lab += [-1 - wi] * nf
        return idx, np.array(cls, np.int32), np.array(lab, np.int32)


def batch_hard_triplet(tf: Any, u: Any, labels: Any, margin: float) -> Any:
    """Mean over genuine anchors of relu(hardest positive − hardest negative + margin)."""
    d = tf.sqrt(tf.maximum(2.0 - 2.0 * tf.matmul(u, u, transpose_b=True), 1e-12))
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(u)[0], dtype=tf.bool)
    pos = tf.logical_and(same, tf.logical_not(eye))
    hardest_pos = tf.reduce_max(tf.where(pos, d, tf.zeros_like(d)), axis=1)
    hardest_neg = tf.reduce_min(tf.where(same, tf.fill(tf.shape(d), 4.0), d), axis=1)
    anchor = tf.cast(labels >= 0, tf.float32)
    loss = tf.nn.relu(hardest_pos - hardest_neg + margin) * anchor
    return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(anchor), 1.0)


def train(corpus: ImageCorpus, net: CnnLstmConfig, cfg: OfflineTrainConfig) -> tuple[Any, History]:
    import tensorflow as tf
    import tf_keras as keras

    set_seeds(cfg.seed)
    model = build_cnn_lstm(net)
    rng = np.random.default_rng(cfg.seed)
    sampler = BatchSampler(corpus, cfg, rng)
    n_cls = len(sampler.names)
    w_cls = tf.Variable(keras.initializers.GlorotUniform(seed=cfg.seed)((net.emb_dim, n_cls)), name="writer_head")
    lr: Any = cfg.lr
    if cfg.lr_decay:
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr, cfg.epochs * cfg.steps_per_epoch, alpha=0.05)
    opt = keras.optimizers.Adam(lr)
    variables = model.trainable_variables + [w_cls]
    print(f"training on {len(sampler.writers)} writers and {n_cls - len(sampler.writers)} cross-media identities "
          f"({sum(len(g) for g, _ in sampler.groups.values())} genuine images)", flush=True)

    @tf.function
    def step(x: Any, cls: Any, lab: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            e = model(x, training=True)
            u = tf.math.l2_normalize(e, axis=1)
            trip = batch_hard_triplet(tf, u, lab, cfg.margin)
            # Cosine softmax over training writers: forgeries (cls −1) carry no class.
            logits = cfg.softmax_scale * tf.matmul(u, tf.math.l2_normalize(w_cls, axis=0))
            keep = cls >= 0
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(cls, 0), logits)
            ce = tf.reduce_sum(tf.where(keep, ce, 0.0)) / tf.maximum(tf.reduce_sum(tf.cast(keep, tf.float32)), 1.0)
            loss = trip + cfg.w_softmax * ce
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 5.0)
        opt.apply_gradients(zip(grads, variables))
        return trip, ce

    embed = KerasEmbedder(model, corpus)
    hist = History()
    best = model.get_weights()
    bad = 0
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        trips, ces = [], []
        bar = progress(cfg.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        for _ in range(cfg.steps_per_epoch):
            idx, cls, lab = sampler.batch()
            x = np.stack([augment(im, rng, cfg.p_blur) for im in corpus.float_images(idx)])[..., None]
            t, c = step(x, cls, lab)
            trips.append(float(t))
            ces.append(float(c))
            bar.update(1)
            bar.set_postfix(triplet=f"{np.mean(trips[-20:]):.3f}", ce=f"{np.mean(ces[-20:]):.3f}")
        bar.close()
        prior = fit_prior(embed, corpus, seed=epoch)
        sel = selection(embed, corpus, prior, cfg.val_trials, cfg.select_on)
        val = sel["dutch"]
        rec = {"epoch": epoch + 1, "triplet": round(float(np.mean(trips)), 4), "ce": round(float(np.mean(ces)), 4),
               "val": val, "seconds": round(time.perf_counter() - t0, 1)}
        others = [p for p in sel if p not in ("dutch", "criterion")]
        for pool in others:
            rec["val_" + pool.replace("-", "_")] = sel[pool]
        rec["criterion"] = sel["criterion"]
        hist.epochs.append(rec)
        others_txt = "".join(f", {p} {sel[p]['skilled_eer_global']:.2f} %" for p in others)
        print(f"epoch {epoch + 1}: triplet {rec['triplet']:.3f} ce {rec['ce']:.3f}  validation skilled EER "
              f"Dutch {val['skilled_eer_global']:.2f} %{others_txt} -> criterion {sel['criterion']:.2f}"
              f"  ({rec['seconds']} s)", flush=True)
        if sel["criterion"] < hist.best_val_eer:
            hist.best_val_eer, hist.best_epoch = sel["criterion"], epoch + 1
            best = model.get_weights()
            bad = 0
        else:
            bad += 1
            if bad >= cfg.patience:
                print(f"early stop (best epoch {hist.best_epoch})", flush=True)
                break
        if cfg.time_budget_min is not None and time.perf_counter() - t_start > 60 * cfg.time_budget_min:
            print(f"time budget of {cfg.time_budget_min} min spent (best epoch {hist.best_epoch})", flush=True)
            break
    model.set_weights(best)
    return model, hist
