"""Validation figures, the normalisation prior and model selection, for any embedder of corpus images.

Early stopping and model selection (:func:`selection`) on skilled-forgery global EERs with the
evaluator's protocol and user normalisation (:func:`tools.evaluate.plan`/``score_plans_multi``):

* "dutch": the Dutch validate writers' scans, K = 5 random references (the shipped model's
  criterion). It rests on 6 writers and moves by several points from one epoch to the next.
* "cross-media": the cross-media set's validate writers in the kiosk's pad-to-paper case: an
  identity's (writer, name) electronic-ink pictures are its references (all of them, K = 3), its
  paper picture is questioned, and the same name on paper by the other validate writers is the
  skilled impostor (100 identities, about 10 impostors each): the evaluator's ``ink-to-paper``
  plans (:mod:`tools.evaluate_cross_media`), so selection and ``sigkiosk eval offline --format
  cross-media`` measure the same thing.
* "rendered": ink rendered from the online sets' ~28 validate writers; steadier than "dutch" but it
  did not predict the Dutch test writers (README: a model it preferred by 5 points was worse on
  test scans; rendered ink shares the training ink's tablets, not a new scanner or pen).

``--select-on`` joins them with "+"; the criterion is the mean of the chosen pools' figures.
The same figures are measured on a Keras model during training (:class:`KerasEmbedder`) and on
converted models through the device runtime (:class:`TFLiteEmbedder`), so candidates and the
shipped model are compared on one criterion.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from models.offline_embed import ImageEmbedder, embedding_distance
from models.scoring import NormalisationPrior, reference_stats
from tools.datasets.types import Dataset, ImageSample, Label, Medium
from tools.evaluate import WriterPlan, plan, score_plans_multi, summarise
from tools.evaluate_cross_media import cross_media_plans, max_references
from tools.train.offline.data import (
    CROSS_MEDIA,
    DUTCH,
    PAPER,
    RENDERED,
    SYNTH,
    ImageCorpus,
    identity_text,
    select_pools,
)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

#: The cross-media protocol selection is judged on: the kiosk's pad enrollment and a paper question.
CROSS_MEDIA_PROTOCOL = "ink-to-paper"

__all__ = ["RENDERED", "KerasEmbedder", "TFLiteEmbedder", "fit_prior", "in_pool", "selection", "split_scores",
           "validation_eer"]


@dataclass(frozen=True)
class _Item:
    """A questioned image for :func:`tools.evaluate.plan` (which reads labels, paths and sessions)
    or :func:`tools.evaluate_cross_media.cross_media_plans` (which reads the medium and the name)."""

    writer: str
    label: Label
    path: Path
    index: int
    session: int | None = None
    enrollment: bool = False
    medium: Medium = Medium.PAPER
    text: int | None = None


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
    """``pool``: "sigcomp-dutch" (the scans), "cross-media" (its identities) or "rendered" (ink
    rendered from any online set)."""
    if pool == RENDERED:
        return not any(writer.startswith(p + ":") for p in (DUTCH[1], CROSS_MEDIA[1], SYNTH))
    return writer.startswith(pool + ":")


def _plans(corpus: ImageCorpus, split: str, pool: str, references: int, trials: int) -> list[WriterPlan]:
    """The evaluator's trials for ``split``'s writers of ``pool``: K = ``references`` random
    references per writer, or for the cross-media pool its ``ink-to-paper`` protocol
    (:func:`tools.evaluate_cross_media.cross_media_plans`: every ink picture of an identity as the
    references, K = 3, its paper questioned, the other writers' paper of the same name as skilled)."""
    items: dict[str, list[_Item]] = {}
    for i, (w, s) in enumerate(zip(corpus.writers, corpus.split)):
        if s != split or not in_pool(w, pool):
            continue
        if pool == CROSS_MEDIA[1]:
            # The set's own writer and name again; the corpus keeps only paper or ink, and the
            # protocol asks only which (any device stands for ink).
            writer = w.split(":", 1)[1].rsplit("/", 1)[0]
            item = _Item(writer, Label.GENUINE, Path(corpus.keys[i]), i,
                         medium=Medium.PAPER if corpus.medium[i] == PAPER else Medium.IPAD, text=identity_text(w))
        else:
            item = _Item(w, Label.GENUINE if corpus.genuine[i] else Label.SKILLED, Path(corpus.keys[i]), i)
        items.setdefault(item.writer, []).append(item)
    # _Item stands in for an image sample (the plans read only what it has): Dataset and the plans
    # are typed for the two real sample kinds.
    ds = cast("Dataset[ImageSample]", Dataset(f"{pool}[{split}]", items))
    if pool == CROSS_MEDIA[1]:
        plans, _ = cross_media_plans(ds, CROSS_MEDIA_PROTOCOL, max_references(CROSS_MEDIA_PROTOCOL), trials, seed=0)
    else:
        plans, _ = plan(ds, "random-refs", references, trials, seed=0)
    if not plans:
        raise ValueError(f"no {split} writer of {pool} has enough genuine images for its protocol")
    return plans


def split_scores(embed: Callable[[list[int]], np.ndarray], corpus: ImageCorpus, prior: NormalisationPrior,
                 split: str = "validate", references: int = 5, trials: int = 5, pool: str = DUTCH[1]) -> Any:
    """User-normalised scores of ``split``'s writers of ``pool`` (:func:`in_pool`) with the evaluator's
    protocol (:func:`_plans`)."""
    plans = _plans(corpus, split, pool, references, trials)
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
    """The model-selection figure (lower is better) and the validation figures it comes from: the
    mean of the skilled-forgery global EERs of the pools ``select_on`` names (module docstring),
    each figure under the pool's name ("dutch", "cross-media", "rendered"). Every pool uses the
    prior fitted on Dutch training writers, as the device does."""
    pools = select_pools(select_on)
    out: dict = {"dutch": validation_eer(embed, corpus, prior, trials)}
    for pool in pools[1:]:
        out[pool] = validation_eer(embed, corpus, prior, trials, pool=pool)
    out["criterion"] = round(float(np.mean([out[p]["skilled_eer_global"] for p in pools])), 3)
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

