"""Training of the TS-GATR teacher and distillation of the student (tf_keras, CPU).

Losses, on DTW distances between embedding sequences (see :mod:`tools.train.dtwpath` for how DTW
is differentiated: through its optimal path, found on the current embeddings):

* **relative-margin triplet** (seed paper): ``relu(d(a, p) − (1 − m)·d(a, n))`` — the negative must
  be farther than the positive by a fraction ``m`` of its own distance, whatever the scale;
* **pairwise threshold**: ``relu(d(a, p) − (τ − β)) + relu((τ + β) − d(a, n))`` — genuine pairs
  below and impostor pairs above one global threshold τ, with a margin β: what a global decision
  threshold needs.

Batches hold, per writer drawn, an anchor and a positive (two genuine signatures) and a negative:
one of the writer's skilled forgeries when the writer has any (with probability ``p_skilled``),
otherwise another writer's genuine signature. Early stopping on the validation writers' mean
skilled-forgery EER (K = 5, global threshold), measured with the evaluator's own protocol.

Distillation: the student reproduces the teacher's embedding sequences (MSE over real steps) and
its DTW distances on the batch pairs, plus the two metric losses at a lower weight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.dtw import dtw_distance
from models.learned import LearnedConfig, ModelInput
from models.scoring import NormalisationPrior, reference_stats
from models.tsgatr import TSGATRConfig, build_tsgatr
from tools.datasets.types import OnlineSample
from tools.evaluate import EmbeddingProvider, plan, score_plans_multi, summarise
from tools.train.data import VALIDATION_SETS, Corpus, InputCache, batch_inputs, sample_key
from tools.train.dtwpath import dtw_path
from tools.train.loop import History, progress, set_seeds

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    steps_per_epoch: int = 60
    batch_writers: int = 8
    lr: float = 2e-3
    margin: float = 0.25
    tau: float = 1.0
    beta: float = 0.25
    w_pair: float = 0.5
    p_skilled: float = 0.6
    patience: int = 4
    seed: int = 0
    val_trials: int = 3
    # real + synthetic (issue 13): share of triplets from synthetic identities, share of signatures
    # replaced by a device-augmented copy; both 0 is the real-only training
    p_synthetic: float = 0.0
    p_augment: float = 0.0
    # distillation
    w_emb: float = 1.0
    w_dist: float = 1.0
    w_metric: float = 0.3

    def to_json(self) -> dict:
        return asdict(self)


class TripletSampler:
    """Triplets (anchor, positive, negative) of writers of one split.

    With synthetic identities in the corpus (split ``synth``, :mod:`tools.train.synthetic`) and
    ``p_synthetic`` > 0, each triplet comes from a synthetic identity with that probability (its
    random negative from another synthetic one), else from a real writer. With device-augmented
    copies (``corpus.variants``) and ``p_augment`` > 0, each chosen signature is replaced by one of
    its copies with that probability. Without either, the draws are exactly the real-only ones.
    """

    def __init__(self, corpus: Corpus, split: str, rng: np.random.Generator, p_skilled: float,
                 p_synthetic: float = 0.0, p_augment: float = 0.0) -> None:
        from tools.train.synthetic import SYNTH_SPLIT

        self.writers = {w: gf for w, gf in corpus.writers(split).items() if len(gf[0]) >= 2}
        self.names = sorted(self.writers)
        self.synth = ({w: gf for w, gf in corpus.writers(SYNTH_SPLIT).items() if len(gf[0]) >= 2}
                      if p_synthetic > 0 else {})
        self.synth_names = sorted(self.synth)
        self.variants = corpus.variants if p_augment > 0 else {}
        self.rng, self.p_skilled = rng, p_skilled
        self.p_synthetic, self.p_augment = p_synthetic, p_augment

    def _triplet(self, writers: dict[str, tuple[list[int], list[int]]], names: list[str], wi: int,
                 out: tuple[list[int], list[int], list[int], list[bool]]) -> None:
        anc, pos, neg, skilled = out
        g, f = writers[names[wi]]
        a, p = self.rng.choice(len(g), size=2, replace=False)
        anc.append(g[a])
        pos.append(g[p])
        if f and self.rng.random() < self.p_skilled:
            neg.append(f[int(self.rng.integers(len(f)))])
            skilled.append(True)
        else:
            other = names[int(self.rng.integers(len(names)))]
            while other == names[wi]:
                other = names[int(self.rng.integers(len(names)))]
            og = writers[other][0]
            neg.append(og[int(self.rng.integers(len(og)))])
            skilled.append(False)

    def _swap(self, idx: list[int]) -> list[int]:
        out = []
        for i in idx:
            copies = self.variants.get(i)
            out.append(copies[int(self.rng.integers(len(copies)))]
                       if copies and self.rng.random() < self.p_augment else i)
        return out

    def batch(self, b: int) -> tuple[list[int], list[int], list[int], list[bool]]:
        out: tuple[list[int], list[int], list[int], list[bool]] = ([], [], [], [])
        if not self.synth_names:
            ws = self.rng.choice(len(self.names), size=b, replace=len(self.names) < b)
            for wi in ws:
                self._triplet(self.writers, self.names, int(wi), out)
        else:
            for _ in range(b):
                if self.rng.random() < self.p_synthetic:
                    self._triplet(self.synth, self.synth_names, int(self.rng.integers(len(self.synth_names))), out)
                else:
                    self._triplet(self.writers, self.names, int(self.rng.integers(len(self.names))), out)
        anc, pos, neg, skilled = out
        if self.variants:
            anc, pos, neg = self._swap(anc), self._swap(pos), self._swap(neg)
        return anc, pos, neg, skilled


def pair_paths(
    emb: np.ndarray, lens: np.ndarray, pairs: list[tuple[int, int]], band: float, max_path: int
) -> dict[str, np.ndarray]:
    """Optimal paths of the pairs, padded to ``max_path`` with weight 0."""
    P = len(pairs)
    ia = np.zeros((P, max_path), np.int32)
    ib = np.zeros((P, max_path), np.int32)
    w = np.zeros((P, max_path), np.float32)
    norm = np.zeros(P, np.float32)
    for k, (a, b) in enumerate(pairs):
        na, nb = int(lens[a]), int(lens[b])
        pi, pj = dtw_path(emb[a, :na], emb[b, :nb], band)
        c = len(pi)
        ia[k, :c], ib[k, :c], w[k, :c] = pi, pj, 1.0
        norm[k] = na + nb
    return {"ia": ia, "ib": ib, "w": w, "norm": norm}


def _path_distances(tf: Any, emb: Any, a_idx: Any, b_idx: Any, paths: dict[str, Any]) -> Any:
    """DTW distances of pairs along fixed paths (differentiable in ``emb``)."""
    ea = tf.gather(emb, a_idx)  # (P, T, D)
    eb = tf.gather(emb, b_idx)
    xa = tf.gather(ea, paths["ia"], batch_dims=1)  # (P, S, D)
    xb = tf.gather(eb, paths["ib"], batch_dims=1)
    step = tf.sqrt(tf.reduce_sum(tf.square(xa - xb), axis=-1) + 1e-8)
    return tf.reduce_sum(step * paths["w"], axis=1) / paths["norm"]


def metric_losses(tf: Any, d_ap: Any, d_an: Any, cfg: TrainConfig) -> Any:
    triplet = tf.reduce_mean(tf.nn.relu(d_ap - (1.0 - cfg.margin) * d_an))
    pair = tf.reduce_mean(tf.nn.relu(d_ap - (cfg.tau - cfg.beta)) + tf.nn.relu((cfg.tau + cfg.beta) - d_an))
    return triplet + cfg.w_pair * pair


class Embedder:
    """Batched embedding of cached signatures with a Keras model (graph-compiled)."""

    def __init__(self, model: Any, inputs: InputCache, batch: int = 32) -> None:
        import tensorflow as tf

        self.model, self.inputs, self.batch = model, inputs, batch
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, idx: list[int]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for s in range(0, len(idx), self.batch):
            chunk = idx[s : s + self.batch]
            mi = [self.inputs(i) for i in chunk]
            pad = self.batch - len(mi)
            x = batch_inputs(mi + [mi[-1]] * pad)
            e = self._fn(x).numpy()
            out.extend(e[k, : m.out_length].astype(np.float64) for k, m in enumerate(mi))
        return out


def fit_prior(embed: Callable[[list[int]], list[np.ndarray]], corpus: Corpus, band: float, n_writers: int = 40,
              k: int = 5, seed: int = 0) -> NormalisationPrior:
    """Population reference statistics on training writers (for one-reference templates)."""

    rng = np.random.default_rng(seed)
    ws = [gf[0] for gf in corpus.writers("train").values() if len(gf[0]) >= k]
    pick = rng.choice(len(ws), size=min(n_writers, len(ws)), replace=False)
    mins, means = [], []
    for wi in pick:
        e = embed(ws[int(wi)][:k])
        d = np.zeros((k, k))
        for i in range(k):
            for j in range(i + 1, k):
                d[i, j] = d[j, i] = dtw_distance(e[i], e[j], band)
        st = reference_stats(d)
        mins.append(st.min_dist)
        means.append(st.mean_dist)
    return NormalisationPrior(float(np.mean(mins)), float(np.mean(means)))


def validation_eer(
    embed: Callable[[list[int]], list[np.ndarray]],
    corpus: Corpus,
    lcfg: LearnedConfig,
    prior: NormalisationPrior,
    split: str = "validate",
    references: int = 5,
    trials: int = 3,
    sets: tuple[str, ...] = VALIDATION_SETS,
) -> dict[str, float]:
    """Skilled-forgery global EER per set on ``split`` writers, with the evaluator's protocol."""

    keys = corpus.by_key()
    index = {s.key: i for i, s in enumerate(corpus.signatures)}
    out: dict[str, float] = {}
    for fmt in sets:
        if fmt not in corpus.datasets:
            continue
        ds = corpus.datasets[fmt].subset(split)  # type: ignore[arg-type]
        root = corpus.roots[fmt]
        ds.writers = {w: [s for s in ss if sample_key(fmt, root, s) in keys] for w, ss in ds.writers.items()}
        ds.writers = {w: ss for w, ss in ds.writers.items() if ss}
        plans, _ = plan(ds, "random-refs", references, trials, seed=0)
        if not plans:
            continue
        need = sorted({index[sample_key(fmt, root, s)] for p in plans
                       for s in p.candidates + p.later_genuine + p.skilled + p.random})
        emb = dict(zip(need, embed(need)))

        def embedding(s: OnlineSample, fmt: str = fmt, root: Path = root, emb: dict[int, np.ndarray] = emb) -> np.ndarray:
            return emb[index[sample_key(fmt, root, s)]]

        provider = EmbeddingProvider(embed=embedding, prior=prior, band=lcfg.band)
        r = summarise(score_plans_multi(plans, [provider])[0], "skilled")
        if r is not None:
            out[fmt] = r["eer_global"]
    out["mean"] = float(np.mean([v for k, v in out.items()])) if out else float("nan")
    return out


def train_metric_model(
    corpus: Corpus,
    lcfg: LearnedConfig,
    mcfg: TSGATRConfig,
    tcfg: TrainConfig,
    teacher: Any | None = None,
    desc: str = "teacher",
) -> tuple[Any, History]:
    """Train a TS-GATR network (the teacher; or the student when ``teacher`` is given)."""
    import tensorflow as tf

    set_seeds(tcfg.seed)
    model = build_tsgatr(mcfg, name=desc)
    opt = __import__("tf_keras").optimizers.Adam(tcfg.lr)
    inputs = InputCache(corpus, lcfg)
    sampler = TripletSampler(corpus, "train", np.random.default_rng(tcfg.seed), tcfg.p_skilled,
                             p_synthetic=tcfg.p_synthetic, p_augment=tcfg.p_augment)
    B = tcfg.batch_writers
    S = mcfg.max_len  # a path of two sequences of ≤ L/2 steps has < L cells
    a_idx = np.concatenate([np.arange(B), np.arange(B)]).astype(np.int32)
    b_idx = np.concatenate([np.arange(B, 2 * B), np.arange(2 * B, 3 * B)]).astype(np.int32)
    embed_self = Embedder(model, inputs)
    fwd = tf.function(lambda x: model(x, training=False))
    t_fwd = tf.function(lambda x: teacher(x, training=False)) if teacher is not None else None

    @tf.function
    def step(x: dict, paths: dict, valid_out: Any, t_emb: Any, t_paths: dict) -> Any:
        with tf.GradientTape() as tape:
            emb = model(x, training=True)
            d = _path_distances(tf, emb, a_idx, b_idx, paths)
            loss = metric_losses(tf, d[:B], d[B:], tcfg)
            if teacher is not None:
                loss = tcfg.w_metric * loss
                se = tf.reduce_sum(tf.square(emb - t_emb), axis=-1) * valid_out
                loss += tcfg.w_emb * tf.reduce_sum(se) / tf.reduce_sum(valid_out) / mcfg.emb_dim
                d_s = _path_distances(tf, emb, a_idx, b_idx, t_paths)
                d_t = _path_distances(tf, t_emb, a_idx, b_idx, t_paths)
                loss += tcfg.w_dist * tf.reduce_mean(tf.abs(d_s - d_t))
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 5.0)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    hist = History()
    best_weights = model.get_weights()
    bad = 0
    T = mcfg.max_len // 2
    for epoch in range(tcfg.epochs):
        t0 = time.perf_counter()
        losses = []
        bar = progress(tcfg.steps_per_epoch, f"{desc} epoch {epoch + 1}/{tcfg.epochs}")
        for _ in range(tcfg.steps_per_epoch):
            anc, pos, neg, _sk = sampler.batch(B)
            mi: list[ModelInput] = [inputs(i) for i in anc + pos + neg]
            x = batch_inputs(mi)
            lens = np.array([m.out_length for m in mi])
            valid_out = np.zeros((3 * B, T), np.float32)
            for k, n in enumerate(lens):
                valid_out[k, :n] = 1.0
            pairs = list(zip(a_idx.tolist(), b_idx.tolist()))
            emb_now = fwd(x).numpy()
            paths = pair_paths(emb_now, lens, pairs, lcfg.band, S)
            if t_fwd is not None:  # there is a teacher
                t_emb = t_fwd(x)
                t_paths = pair_paths(t_emb.numpy(), lens, pairs, lcfg.band, S)
            else:
                t_emb, t_paths = tf.zeros_like(emb_now), paths
            losses.append(float(step(x, paths, valid_out, t_emb, t_paths)))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.close()
        prior = fit_prior(embed_self, corpus, lcfg.band, n_writers=30, seed=epoch)
        val = validation_eer(embed_self, corpus, lcfg, prior, trials=tcfg.val_trials)
        rec = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), "val_skilled_eer": val,
               "seconds": round(time.perf_counter() - t0, 1)}
        hist.epochs.append(rec)
        log.info("%s %s", desc, rec)
        print(f"{desc} epoch {epoch + 1}: loss {rec['loss']:.4f}  val skilled EER "
              + "  ".join(f"{k} {v:.2f}" for k, v in val.items()) + f"  ({rec['seconds']} s)", flush=True)
        if val["mean"] < hist.best_val_eer:
            hist.best_val_eer, hist.best_epoch = val["mean"], epoch + 1
            best_weights = model.get_weights()
            bad = 0
        else:
            bad += 1
            if bad >= tcfg.patience:
                print(f"{desc}: early stop (best epoch {hist.best_epoch})", flush=True)
                break
    model.set_weights(best_weights)
    return model, hist
