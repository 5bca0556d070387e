"""``sigkiosk train offline``: the writer-independent CNN-LSTM image embedding, float and int8 TFLite.

Data. Every picture goes through :func:`models.image_preprocess.prepare` (the device's own code)
once; the 128×128 ink images are cached as ``.npz`` (uint8, ink = 255) under ``--cache``
(default ``~/.cache/sigkiosk/offline``, never the repository), keyed by the data's file hashes
and the preprocessing source. Sources: the Dutch scans' *training* writers and, where
:mod:`models.render` is available, ink rendered from the online sets' training writers (far more
writers; random pen width per signature) and, on request (``--synthetic N``), sigma-lognormal
writers of :mod:`tools.synth` rendered the same way. Validation: the Dutch *validate* writers
(scans, as on the device) and, for model selection, ink rendered from the online sets' *validate*
writers (cached like the training ink). Test writers are never read here.

Augmentation is applied to the *prepared* 128×128 image (so the cache stays valid): small
rotation (±5°), scale (0.9–1.08), translation (±5 px), and a stroke-width change (grey dilate or
erode, 2×2) with probability 0.3; optionally (``--blur P``) a Gaussian blur and a new binary cut
at a random level, as another scanner's optics or threshold would give.

Loss, on the L2-normalised embedding of P writers × K genuine images (+ some of each writer's
skilled forgeries, which are only ever negatives):

* writer classification by a cosine-softmax head (scale 16), dropped after training;
* batch-hard triplet loss (hardest positive, hardest negative per anchor, margin ``margin``);
  a writer's own skilled forgeries are in its batch, so they are often the hardest negatives.

Early stopping and model selection (:func:`selection`) on the Dutch validate writers' skilled-forgery
global EER (K = 5 references, the evaluator's protocol and user normalisation:
:func:`tools.evaluate.plan`/``score_plans_multi``), the shipped model's criterion. It rests on 6
writers and moves by several points from one epoch to the next; ``--select-on dutch+rendered``
takes the mean with the ~28 rendered online validate writers' figure, which is steadier but did not
predict the Dutch test writers (README: a model it preferred by 5 points was worse on test scans;
rendered ink shares the training ink's tablets, not a new scanner or pen).
:func:`score_models` gives the same figures for converted models (``--score``), so candidates and
the shipped model are compared on one criterion.
Then conversion (:mod:`tools.train.convert`), the normalisation prior fitted on training writers
and the global threshold chosen on validation writers, both through the device runtime, golden
vectors (synthesised signatures, no research data), and a run record ``cnn_lstm.run.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.cnn_lstm import INPUT_NAME, CnnLstmConfig
from models.image_preprocess import SIZE, NoInkError, prepare
from models.offline_embed import OfflineConfig, embedding_distance
from models.scoring import NormalisationPrior, reference_stats
from tools.datasets.types import Label, writer_split
from tools.train.loop import History, progress, set_seeds

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
log = logging.getLogger(__name__)

DUTCH = ("offline/sigcomp-dutch-kaggle", "sigcomp-dutch")
FLOAT_NAME = "cnn_lstm_float"
INT8_NAME = "cnn_lstm_int8"
RECORD_NAME = "cnn_lstm.run.json"
DEFAULT_CACHE = Path.home() / ".cache" / "sigkiosk" / "offline"


# --------------------------------------------------------------------------------------------- data


@dataclass
class ImageCorpus:
    """Prepared images and their labels. ``images``: (N, S, S) uint8, ink = 255."""

    images: np.ndarray
    keys: list[str]  # "<format>:<relative path>": names a sample in logs without biometrics
    writers: list[str]  # "<format>:<writer id>" (ids repeat across sets)
    genuine: np.ndarray  # (N,) bool
    split: list[str]
    hashes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def float_images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        return self.images[np.asarray(idx)].astype(np.float32) / 255.0

    def by_writer(self, split: str, source: str | None = None) -> dict[str, tuple[list[int], list[int]]]:
        """writer → (genuine indices, skilled indices) in ``split`` (optionally one source format)."""
        out: dict[str, tuple[list[int], list[int]]] = {}
        for i, (w, s) in enumerate(zip(self.writers, self.split)):
            if s != split or (source is not None and not w.startswith(source + ":")):
                continue
            g, f = out.setdefault(w, ([], []))
            (g if self.genuine[i] else f).append(i)
        return out

    @staticmethod
    def concat(parts: list["ImageCorpus"]) -> "ImageCorpus":
        parts = [p for p in parts if len(p)]
        return ImageCorpus(
            images=np.concatenate([p.images for p in parts]) if parts else np.zeros((0, SIZE, SIZE), np.uint8),
            keys=[k for p in parts for k in p.keys],
            writers=[w for p in parts for w in p.writers],
            genuine=np.concatenate([p.genuine for p in parts]) if parts else np.zeros(0, bool),
            split=[s for p in parts for s in p.split],
            hashes={k: v for p in parts for k, v in p.hashes.items()},
        )


def _prepare_source_hash() -> str:
    """The preprocessing code is part of the cache key: changing ``prepare`` invalidates the cache."""
    import models.image_preprocess as ip

    return hashlib.sha256(Path(ip.__file__).read_bytes()).hexdigest()[:12]


def _pick_writers(writers: list[str], splits: tuple[str, ...], max_writers: int | None) -> list[str]:
    per: dict[str, list[str]] = {}
    for w in sorted(writers):
        if writer_split(w) in splits:
            per.setdefault(writer_split(w), []).append(w)
    return sorted(w for ws in per.values() for w in (ws if max_writers is None else ws[:max_writers]))


def _save(path: Path, c: ImageCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=c.images, keys=np.array(c.keys), writers=np.array(c.writers),
                        genuine=c.genuine, split=np.array(c.split))
    tmp.replace(path)


def _load(path: Path, hashes: dict[str, str]) -> ImageCorpus:
    z = np.load(path)
    return ImageCorpus(z["images"], [str(k) for k in z["keys"]], [str(w) for w in z["writers"]],
                       z["genuine"].astype(bool), [str(s) for s in z["split"]], hashes)


class _Prepared:
    """Prepared images accumulated one picture at a time (a picture without usable ink is logged by
    its key and skipped), then one :class:`ImageCorpus`."""

    def __init__(self, skip: tuple[type[Exception], ...]) -> None:
        self.skip = skip
        self.images: list[np.ndarray] = []
        self.keys: list[str] = []
        self.writers: list[str] = []
        self.genuine: list[bool] = []
        self.split: list[str] = []

    def add(self, key: str, picture: Callable[[], Any], writer: str, genuine: bool, split: str) -> None:
        try:
            x = prepare(picture())
        except self.skip as e:
            log.warning("%s: skipped (%s)", key, e)
            return
        self.images.append(np.rint(x * 255).astype(np.uint8))
        self.keys.append(key)
        self.writers.append(writer)
        self.genuine.append(genuine)
        self.split.append(split)

    def corpus(self, hashes: dict[str, str]) -> ImageCorpus:
        return ImageCorpus(np.stack(self.images), self.keys, self.writers, np.array(self.genuine), self.split, hashes)


def load_scans(data_root: Path, cache: Path, splits: tuple[str, ...], max_writers: int | None) -> ImageCorpus:
    """The Dutch scans of ``splits``' writers, prepared (cached)."""
    from tools.datasets import load_images
    from tools.train.data import files_hash

    rel, fmt = DUTCH
    root = data_root / rel
    digest = files_hash(root)
    ds = load_images(root, fmt)
    writers = _pick_writers(list(ds.writers), splits, max_writers)
    tag = hashlib.sha256(f"{digest}{_prepare_source_hash()}{SIZE}{writers}".encode()).hexdigest()[:16]
    path = cache / f"{fmt}-{tag}.npz"
    if path.exists():
        return _load(path, {fmt: digest})
    acc = _Prepared(skip=(NoInkError,))
    samples = [s for w in writers for s in ds.writers[w]]
    bar = progress(len(samples), f"prepare {fmt}")
    for s in samples:
        acc.add(f"{fmt}:{s.path.relative_to(root)}", lambda s=s: s.image, f"{fmt}:{s.writer}",
                s.label is Label.GENUINE, writer_split(s.writer))
        bar.update(1)
    bar.close()
    c = acc.corpus({fmt: digest})
    _save(path, c)
    return c


def load_rendered(data_root: Path, cache: Path, max_writers: int | None, seed: int,
                  split: str = "train") -> ImageCorpus:
    """Ink rendered from the online sets' ``split`` writers (genuine and skilled), prepared (cached)."""
    from tools.datasets import load_online
    from tools.train.data import DEFAULT_SETS, files_hash

    parts = []
    for rel, fmt in DEFAULT_SETS:
        root = data_root / rel
        digest = files_hash(root)
        ds = load_online(root, fmt, skip_malformed=True)
        writers = _pick_writers(list(ds.writers), (split,), max_writers)
        # The training files keep their old key (and name), so the existing cache stays valid.
        suffix = "r1" if split == "train" else f"r1{split}"
        tag = hashlib.sha256(f"{digest}{_prepare_source_hash()}{SIZE}{writers}{seed}{suffix}".encode()).hexdigest()[:16]
        path = cache / f"rendered-{fmt}-{tag}.npz" if split == "train" else cache / f"rendered-{split}-{fmt}-{tag}.npz"
        if path.exists():
            parts.append(_load(path, {fmt: digest}))
            continue
        acc = _Prepared(skip=(NoInkError, ValueError))
        samples = [s for w in writers for s in ds.writers[w]]
        bar = progress(len(samples), f"render {fmt}")
        for n, s in enumerate(samples):
            rng = np.random.default_rng([seed, n])
            acc.add(f"{fmt}:{s.path.relative_to(root)}", lambda s=s, rng=rng: _ink(s.trajectory, rng),
                    f"{fmt}:{s.writer}", s.label is Label.GENUINE, split)
            bar.update(1)
        bar.close()
        if not acc.images:
            continue
        c = acc.corpus({fmt: digest})
        _save(path, c)
        parts.append(c)
    return ImageCorpus.concat(parts)


SYNTH = "synth"


def _ink(traj: Any, rng: np.random.Generator) -> Any:
    """Rendered training ink: a ballpoint of random width (0.3-0.8 mm)."""
    from models.render import render_ink

    return render_ink(traj, pen_width_mm=float(rng.uniform(0.3, 0.8)), rng=rng)


def load_synthetic(cache: Path, n_writers: int, seed: int, n_genuine: int = 8, n_forgeries: int = 2) -> ImageCorpus:
    """Sigma-lognormal writers (:func:`tools.synth.make_population`) rendered as ink: extra *training*
    writers, each with genuine signatures and skilled forgeries (prepared, cached)."""
    from tools.synth import make_population

    if n_writers <= 0:
        return ImageCorpus.concat([])
    tag = hashlib.sha256(f"{_prepare_source_hash()}{SIZE}{n_writers}{n_genuine}{n_forgeries}{seed}s1"
                         .encode()).hexdigest()[:16]
    path = cache / f"synthetic-{tag}.npz"
    if path.exists():
        return _load(path, {})
    pop = make_population(n_writers=n_writers, n_genuine=n_genuine, n_forgeries=n_forgeries, seed=seed + 1000)
    acc = _Prepared(skip=(NoInkError, ValueError))
    bar = progress(n_writers, "render synthetic writers")
    for w, (g, f) in pop.items():
        for n, (tr, genuine) in enumerate([(t, True) for t in g] + [(t, False) for t in f]):
            rng = np.random.default_rng([seed, int(w), n])
            acc.add(f"{SYNTH}:{w}/{n}", lambda tr=tr, rng=rng: _ink(tr, rng), f"{SYNTH}:{w}", genuine, "train")
        bar.update(1)
    bar.close()
    c = acc.corpus({})
    _save(path, c)
    return c


def blur_rethreshold(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another scanner or pen: Gaussian blur, then a new binary cut at a random level (strokes grow
    or thin, small gaps close or open), as a different optics/threshold would give."""
    y = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.6, 1.4)))
    return (y > float(rng.uniform(0.25, 0.6))).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, p_blur: float = 0.0) -> np.ndarray:
    """One prepared image (S×S float, ink = 1), slightly rotated, scaled, shifted, thickened or thinned
    (and with probability ``p_blur`` blurred and re-thresholded)."""
    s = x.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-5, 5)), float(rng.uniform(0.9, 1.08)))
    m[:, 2] += rng.uniform(-5, 5, size=2)
    y = cv2.warpAffine(x, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.0)
    r = rng.random()
    if r < 0.15:
        y = cv2.dilate(y, np.ones((2, 2), np.uint8))
    elif r < 0.3:
        y = cv2.erode(y, np.ones((2, 2), np.uint8))
    if p_blur > 0 and rng.random() < p_blur:
        y = blur_rethreshold(y, rng)
    return y


# -------------------------------------------------------------------------------------- training


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
    #: Probability of :func:`blur_rethreshold` in the augmentation.
    p_blur: float = 0.0
    #: Model selection: "dutch" (the Dutch validate writers' skilled EER) or "dutch+rendered" (the
    #: mean of that and the skilled EER of ink rendered from the online sets' validate writers).
    select_on: str = "dutch"

    def to_json(self) -> dict:
        return asdict(self)


class BatchSampler:
    """P writers × K genuine images, plus up to F of each writer's skilled forgeries."""

    def __init__(self, corpus: ImageCorpus, cfg: OfflineTrainConfig, rng: np.random.Generator) -> None:
        self.groups = {w: gf for w, gf in corpus.by_writer("train").items() if len(gf[0]) >= 2}
        self.names = sorted(self.groups)
        self.cls = {w: i for i, w in enumerate(self.names)}
        self.cfg, self.rng = cfg, rng

    def batch(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(indices, writer class (−1 for a forgery), triplet label (forgeries get their own))."""
        c = self.cfg
        ws = self.rng.choice(len(self.names), size=min(c.writers_per_batch, len(self.names)), replace=False)
        idx, cls, lab = [], [], []
        for wi in ws:
            w = self.names[int(wi)]
            g, f = self.groups[w]
            k = min(c.genuine_per_writer, len(g))
            idx += [g[int(j)] for j in self.rng.choice(len(g), size=k, replace=False)]
            cls += [self.cls[w]] * k
            lab += [int(wi)] * k
            if f and c.forgeries_per_writer:
                nf = min(c.forgeries_per_writer, len(f))
                idx += [f[int(j)] for j in self.rng.choice(len(f), size=nf, replace=False)]
                cls += [-1] * nf
                lab += [-1 - int(wi)] * nf
        return idx, np.array(cls, np.int32), np.array(lab, np.int32)


@dataclass(frozen=True)
class _Item:
    """A questioned image for :func:`tools.evaluate.plan` (which reads labels, paths and sessions)."""

    writer: str
    label: Label
    path: Path
    index: int
    session: int | None = None
    enrollment: bool = False


@dataclass
class _EmbeddingProvider:
    """The evaluator's provider interface over precomputed unit embeddings."""

    emb: dict[Path, np.ndarray]
    prior: NormalisationPrior
    name: str = "cnn"

    def features(self, sample: _Item) -> np.ndarray:
        return self.emb[sample.path]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return embedding_distance(a, b)


def fit_prior(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, k: int = 5,
              n_writers: int = 40, seed: int = 0) -> NormalisationPrior:
    """Population reference statistics of K references, on the Dutch training writers."""
    rng = np.random.default_rng(seed)
    groups = [g for g, _ in corpus.by_writer("train", DUTCH[1]).values() if len(g) >= k]
    if not groups:
        raise ValueError("no training writer with enough genuine scans to fit the prior")
    pick = rng.choice(len(groups), size=min(n_writers, len(groups)), replace=False)
    mins, means = [], []
    for gi in pick:
        e = embed(groups[int(gi)][:k])
        d = np.array([[embedding_distance(a, b) for b in e] for a in e])
        st = reference_stats(d)
        mins.append(st.min_dist)
        means.append(st.mean_dist)
    # A floor: an untrained (quick) int8 model may map every image to the same code, and the
    # normalised distance divides by these.
    return NormalisationPrior(max(float(np.mean(mins)), 1e-6), max(float(np.mean(means)), 1e-6))


RENDERED = "rendered"


def _in_pool(writer: str, pool: str) -> bool:
    """``pool``: "sigcomp-dutch" (the scans) or "rendered" (ink rendered from any online set)."""
    scans = writer.startswith(DUTCH[1] + ":")
    if pool == RENDERED:
        return not scans and not writer.startswith(SYNTH + ":")
    return writer.startswith(pool + ":")


def split_scores(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
                 split: str = "validate", references: int = 5, trials: int = 5, pool: str = DUTCH[1]) -> Any:
    """User-normalised scores of ``split``'s writers of ``pool`` (:func:`_in_pool`) with the evaluator's protocol."""
    from tools.datasets.types import Dataset
    from tools.evaluate import plan, score_plans_multi

    items: dict[str, list[_Item]] = {}
    for i, (w, s) in enumerate(zip(corpus.writers, corpus.split)):
        if s == split and _in_pool(w, pool):
            lab = Label.GENUINE if corpus.genuine[i] else Label.SKILLED
            items.setdefault(w, []).append(_Item(w, lab, Path(corpus.keys[i]), i))
    ds = Dataset(f"{pool}[{split}]", items)  # type: ignore[arg-type]
    plans, _ = plan(ds, "random-refs", references, trials, seed=0)  # type: ignore[arg-type]
    if not plans:
        raise ValueError(f"no {split} writer has enough genuine scans for K={references}")
    need = sorted({s.index for p in plans for s in p.candidates + p.later_genuine + p.skilled + p.random})
    emb = dict(zip((Path(corpus.keys[i]) for i in need), embed(need)))
    return score_plans_multi(plans, [_EmbeddingProvider(emb, prior)])[0]


def validation_eer(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
                   trials: int = 5, split: str = "validate", pool: str = DUTCH[1]) -> dict[str, float]:
    from tools.evaluate import summarise

    scores = split_scores(embed, corpus, prior, split, trials=trials, pool=pool)
    out: dict[str, float] = {}
    for kind in ("skilled", "random"):
        r = summarise(scores, kind)  # type: ignore[arg-type]
        if r is not None:
            out[f"{kind}_eer_global"] = r["eer_global"]
            out[f"{kind}_eer_user_mean"] = r["eer_user_mean"]
            out[f"{kind}_threshold"] = r["threshold_global"]
    return out


def selection(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
              trials: int, select_on: str) -> dict:
    """The model-selection figure (lower is better) and the validation figures it comes from.

    "dutch": the Dutch validate writers' skilled-forgery global EER (K = 5). "dutch+rendered": the
    mean of that and the same EER on ink rendered from the online sets' validate writers (about
    28 writers more, a different pen and "scanner"), so that one lucky epoch on 6 writers does not
    choose the model. Both use the prior fitted on Dutch training writers, as the device does."""
    if select_on not in ("dutch", "dutch+rendered"):
        raise ValueError(f"select_on must be 'dutch' or 'dutch+rendered', not {select_on!r}")
    out: dict = {"dutch": validation_eer(embed, corpus, prior, trials)}
    out["criterion"] = out["dutch"]["skilled_eer_global"]
    if select_on == "dutch+rendered":
        out[RENDERED] = validation_eer(embed, corpus, prior, trials, pool=RENDERED)
        out["criterion"] = round(0.5 * (out["dutch"]["skilled_eer_global"] + out[RENDERED]["skilled_eer_global"]), 3)
    return out


class KerasEmbedder:
    """Unit embeddings of corpus images by a Keras model (batched; no augmentation)."""

    def __init__(self, model: Any, corpus: ImageCorpus, batch: int = 64) -> None:
        import tensorflow as tf

        self.corpus, self.batch = corpus, batch
        self._fn = tf.function(lambda x: model(x, training=False))

    def __call__(self, idx: list[int]) -> np.ndarray:
        out = []
        for s in range(0, len(idx), self.batch):
            x = self.corpus.float_images(idx[s : s + self.batch])[..., None]
            out.append(self._fn(x).numpy())
        e = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


class TFLiteEmbedder:
    """Unit embeddings of corpus images through the device runtime (:class:`ImageEmbedder`)."""

    def __init__(self, path: Path, corpus: ImageCorpus) -> None:
        from models.offline_embed import ImageEmbedder

        self.emb, self.corpus = ImageEmbedder(path), corpus

    def __call__(self, idx: list[int]) -> np.ndarray:
        return np.stack([self.emb.embed(x) for x in self.corpus.float_images(idx)])


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

    from models.cnn_lstm import build_cnn_lstm

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
    print(f"training on {n_cls} writers ({sum(len(g) for g, _ in sampler.groups.values())} genuine images)",
          flush=True)

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
        if RENDERED in sel:
            rec["val_rendered"] = sel[RENDERED]
        rec["criterion"] = sel["criterion"]
        hist.epochs.append(rec)
        rendered_txt = f", rendered {sel[RENDERED]['skilled_eer_global']:.2f} %" if RENDERED in sel else ""
        print(f"epoch {epoch + 1}: triplet {rec['triplet']:.3f} ce {rec['ce']:.3f}  validation skilled EER "
              f"Dutch {val['skilled_eer_global']:.2f} %{rendered_txt} -> criterion {sel['criterion']:.2f}"
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


# ------------------------------------------------------------------------------------ conversion


def golden_images(n: int = 3, seed: int = 11, size: int = SIZE) -> np.ndarray:
    """Prepared images of *synthesised* signatures (tools.synth) rendered as ink: no research data."""
    from models.render import render_ink
    from tools.synth import make_population

    pop = make_population(n_writers=n, n_genuine=1, n_forgeries=0, seed=seed)
    imgs = [prepare(render_ink(g[0], rng=np.random.default_rng(seed)), size) for g, _ in pop.values()]
    return np.stack(imgs[:n])[..., None].astype(np.float32)


def write_golden(model_path: Path, n: int = 3) -> Path:
    """Golden inputs and the runtime's unit embeddings of them, beside the model."""
    from models.offline_embed import ImageEmbedder

    emb = ImageEmbedder(model_path)
    ins = golden_images(n, size=emb.config.input_size)
    outs = np.stack([emb.embed(x) for x in ins])
    path = model_path.with_name(model_path.stem + ".golden.npz")
    np.savez_compressed(path, images=ins, outputs=outs.astype(np.float32))
    return path


def convert(model: Any, net: CnnLstmConfig, corpus: ImageCorpus, out: Path, seed: int, representative: int,
            val_trials: int, select_on: str = "dutch") -> dict:
    """Float and full-int8 models, each with its prior (training writers) and threshold (validation)."""
    from models.cnn_lstm import build_cnn_lstm
    from models.offline_embed import save_config
    from tools.train.convert import to_tflite

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


# ------------------------------------------------------------------------------------------ run


def load_corpus(data_root: Path, cache: Path, rendered: bool, max_writers: int | None, seed: int,
                select_on: str, synthetic: int = 0) -> ImageCorpus:
    """Training and validation images: Dutch scans, rendered online ink, synthetic writers (all cached)."""
    parts = [load_scans(data_root, cache, ("train", "validate"), max_writers)]
    if rendered:
        parts.append(load_rendered(data_root, cache, max_writers, seed))
    if select_on == "dutch+rendered":
        parts.append(load_rendered(data_root, cache, max_writers, seed, split="validate"))
    if synthetic:
        parts.append(load_synthetic(cache, synthetic, seed))
    return ImageCorpus.concat(parts)


def score_models(paths: list[Path], data_root: Path, cache: Path, trials: int = 10,
                 select_on: str = "dutch") -> dict[str, dict]:
    """The selection figures of already converted models (the shipped ones, candidates), each with the
    prior and threshold in its own config: every model judged on the same validation writers."""
    from models.offline_embed import ImageEmbedder

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
        synthetic: int = 0) -> dict:
    import tensorflow as tf

    from tools.train.pipeline import git_commit, invoked_command

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(data_root, cache, rendered, max_writers, cfg.seed, cfg.select_on, synthetic)
    n_train = len(corpus.by_writer("train"))
    print(f"data: {len(corpus)} prepared images; train writers {n_train} "
          f"(scans {len(corpus.by_writer('train', DUTCH[1]))}), validate writers {len(corpus.by_writer('validate'))}",
          flush=True)
    record: dict = {
        "command": invoked_command(),
        "git_commit": git_commit(),
        "data_sha256": corpus.hashes,
        "images": {"total": len(corpus), "train_writers": n_train,
                   "synthetic_train_writers": len([w for w in corpus.by_writer("train") if w.startswith(SYNTH + ":")]),
                   "validate_writers": len(corpus.by_writer("validate", DUTCH[1])),
                   "validate_writers_rendered": len([w for w in corpus.by_writer("validate")
                                                     if _in_pool(w, RENDERED)])},
        "network": net.to_json(),
        "train_config": cfg.to_json(),
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
