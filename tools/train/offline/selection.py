"""Validation figures, the normalisation prior and model selection, for any embedder of corpus images.

Early stopping and model selection (:func:`selection`) on the Dutch validate writers' skilled-forgery
global EER (K = 5 references, the evaluator's protocol and user normalisation:
:func:`tools.evaluate.plan`/``score_plans_multi``), the shipped model's criterion. It rests on 6
writers and moves by several points from one epoch to the next; ``--select-on dutch+rendered``
takes the mean with the ~28 rendered online validate writers' figure, which is steadier but did not
predict the Dutch test writers (README: a model it preferred by 5 points was worse on test scans;
rendered ink shares the training ink's tablets, not a new scanner or pen).
The same figures are measured on a Keras model during training (:class:`KerasEmbedder`) and on
converted models through the device runtime (:class:`TFLiteEmbedder`), so candidates and the
shipped model are compared on one criterion.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.offline_embed import ImageEmbedder, embedding_distance
from models.scoring import NormalisationPrior, reference_stats
from tools.datasets.types import Dataset, Label
from tools.evaluate import plan, score_plans_multi, summarise
from tools.train.offline.data import DUTCH, SYNTH, ImageCorpus

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RENDERED = "rendered"


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


def in_pool(writer: str, pool: str) -> bool:
    """``pool``: "sigcomp-dutch" (the scans) or "rendered" (ink rendered from any online set)."""
    scans = writer.startswith(DUTCH[1] + ":")
    if pool == RENDERED:
        return not scans and not writer.startswith(SYNTH + ":")
    return writer.startswith(pool + ":")


def split_scores(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
                 split: str = "validate", references: int = 5, trials: int = 5, pool: str = DUTCH[1]) -> Any:
    """User-normalised scores of ``split``'s writers of ``pool`` (:func:`in_pool`) with the evaluator's protocol."""
    items: dict[str, list[_Item]] = {}
    for i, (w, s) in enumerate(zip(corpus.writers, corpus.split)):
        if s == split and in_pool(w, pool):
            lab = Label.GENUINE if corpus.genuine[i] else Label.SKILLED
            items.setdefault(w, []).append(_Item(w, lab, Path(corpus.keys[i]), i))
    # _Item stands in for an image sample (the plan reads only what it has): Dataset and plan are
    # typed for the two real sample kinds.
    ds = Dataset(f"{pool}[{split}]", items)  # type: ignore[type-var]
    plans, _ = plan(ds, "random-refs", references, trials, seed=0)  # type: ignore[type-var]
    if not plans:
        raise ValueError(f"no {split} writer has enough genuine scans for K={references}")
    need = sorted({s.index for p in plans for s in p.candidates + p.later_genuine + p.skilled + p.random})
    emb = dict(zip((Path(corpus.keys[i]) for i in need), embed(need)))
    return score_plans_multi(plans, [_EmbeddingProvider(emb, prior)])[0]


def validation_eer(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
                   trials: int = 5, split: str = "validate", pool: str = DUTCH[1]) -> dict[str, float]:
    scores = split_scores(embed, corpus, prior, split, trials=trials, pool=pool)
    out: dict[str, float] = {}
    for kind in ("skilled", "random"):
        r = summarise(scores, kind)
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
        self.emb, self.corpus = ImageEmbedder(path), corpus

    def __call__(self, idx: list[int]) -> np.ndarray:
        return np.stack([self.emb.embed(x) for x in self.corpus.float_images(idx)])

