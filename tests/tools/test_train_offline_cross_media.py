"""Cross-media identities in the image training: the batches and the pad-to-paper selection figure.

A small corpus of blank images stands in for prepared pictures: what is tested is who is put in a
batch and which images the selection protocol references, questions and calls impostors, so the
embedders here map an image index to a code chosen by its labels. No TensorFlow is imported.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.scoring import NormalisationPrior
from tools.train.offline.data import INK, PAPER, ImageCorpus, identity_label, identity_text, select_pools
from tools.train.offline.selection import _plans, selection, validation_eer
from tools.train.offline.trainer import BatchSampler, OfflineTrainConfig

TEXTS = (1, 2, 3)


def corpus() -> ImageCorpus:
    """Dutch-like writers (genuine + forgeries, train and validate) and cross-media writers e001-e004
    (train) and e007, e017, e027 (validate) who each wrote names 1-3 once on paper and three times
    as ink; c07 (validate) wrote them on paper only."""
    writers, genuine, split, medium = [], [], [], []

    def add(w: str, g: bool, s: str, m: str) -> None:
        writers.append(w)
        genuine.append(g)
        split.append(s)
        medium.append(m)

    for n, s in ((1, "train"), (2, "train"), (3, "train"), (7, "validate"), (17, "validate")):
        for _ in range(6):
            add(f"sigcomp-dutch:{n:03d}", True, s, PAPER)
        for _ in range(3):
            add(f"sigcomp-dutch:{n:03d}", False, s, PAPER)
    for w, s in (("e001", "train"), ("e002", "train"), ("e003", "train"), ("e004", "train"),
                 ("e007", "validate"), ("e017", "validate"), ("e027", "validate")):
        for t in TEXTS:
            add(identity_label(w, t), True, s, PAPER)
            for _ in range(3):
                add(identity_label(w, t), True, s, INK)
    for t in TEXTS:
        add(identity_label("c07", t), True, "validate", PAPER)
        add(identity_label("c07", t), True, "validate", PAPER)
    n = len(writers)
    return ImageCorpus(np.zeros((n, 4, 4), np.uint8), [f"k/{i}.png" for i in range(n)], writers,
                       np.array(genuine), split, medium)


def test_identity_labels_round_trip_and_other_labels_have_no_text() -> None:
    assert identity_text(identity_label("e093", 10)) == 10
    assert identity_text("sigcomp-dutch:017") is None and identity_text("susig-visual:17") is None


def test_select_pools_names_the_criterion_and_refuses_others() -> None:
    assert select_pools("dutch+cross-media") == ("dutch", "cross-media")
    for bad in ("cross-media", "test", "dutch+test", "dutch+dutch"):
        with pytest.raises(ValueError, match="select_on"):
            select_pools(bad)


def test_a_batch_holds_same_name_identities_with_their_paper_and_ink() -> None:
    c = corpus()
    cfg = OfflineTrainConfig(writers_per_batch=2, genuine_per_writer=4, forgeries_per_writer=1, same_name_per_batch=3)
    sampler = BatchSampler(c, cfg, np.random.default_rng(0))
    assert len(sampler.writers) == 3 and sampler.texts == list(TEXTS)
    seen_texts = set()
    for _ in range(20):
        idx, cls, lab = sampler.batch()
        cross = [i for i in idx if identity_text(c.writers[i]) is not None]
        texts = {identity_text(c.writers[i]) for i in cross}
        owners = {c.writers[i].rsplit("/", 1)[0] for i in cross}
        assert len(texts) == 1 and len(owners) == 3   # three writers' versions of one name
        seen_texts |= texts
        for w in {c.writers[i] for i in cross}:       # each with its paper and its ink: all four
            mine = [i for i in cross if c.writers[i] == w]
            assert sorted(c.medium[i] for i in mine) == [INK, INK, INK, PAPER]
        # Each identity is a class and a triplet label of its own; only Dutch forgeries are -1.
        cross_lab = {int(lab[k]) for k, i in enumerate(idx) if i in cross}
        assert len(cross_lab) == 3 and min(cross_lab) >= 0
        assert all((cls[k] == -1) == (not c.genuine[i]) for k, i in enumerate(idx))
        assert sum(not c.genuine[i] for i in idx) == 2
    assert seen_texts == set(TEXTS)


def test_without_same_name_identities_batches_are_writers_only() -> None:
    c = corpus()
    cfg = OfflineTrainConfig(writers_per_batch=3, same_name_per_batch=0)
    idx, _, _ = BatchSampler(c, cfg, np.random.default_rng(1)).batch()
    assert all(identity_text(c.writers[i]) is None for i in idx)


def test_scans_per_batch_puts_that_many_scan_writers_in_every_batch() -> None:
    """--scans-per-batch: of the batch's writers, at least N have real scans, the rest drawn from
    all writers (no writer twice); 0 draws them all alike, as before the option."""
    base = corpus()
    extra = [f"susig-visual:{n}" for n in range(1, 7) for _ in range(5)]   # rendered ink writers
    n = len(base) + len(extra)
    c = ImageCorpus(np.zeros((n, 4, 4), np.uint8), [f"k/{i}.png" for i in range(n)], base.writers + extra,
                    np.concatenate([base.genuine, np.ones(len(extra), bool)]), base.split + ["train"] * len(extra),
                    base.medium + [INK] * len(extra))
    scans = {"sigcomp-dutch:001", "sigcomp-dutch:002", "sigcomp-dutch:003"}

    def batch_writers(scans_per_batch: int, seed: int) -> list[set[str]]:
        cfg = OfflineTrainConfig(writers_per_batch=4, same_name_per_batch=0, scans_per_batch=scans_per_batch)
        sampler = BatchSampler(c, cfg, np.random.default_rng(seed))
        assert set(sampler.scan_writers) == scans
        return [{c.writers[i] for i in sampler.batch()[0]} for _ in range(50)]

    for ws in batch_writers(2, 0):
        assert len(ws) == 4 and len(ws & scans) >= 2
    assert min(len(ws & scans) for ws in batch_writers(0, 0)) == 0   # uniform: some batches have none


def test_cross_media_protocol_references_ink_and_questions_paper() -> None:
    """Selection uses the evaluator's ink-to-paper plans (tools.evaluate_cross_media) on the corpus."""
    c = corpus()
    plans = _plans(c, "validate", "cross-media", references=5, trials=2)
    # 3 experiment writers x 3 names; the control writer has no ink to be referenced with
    assert sorted(p.writer for p in plans) == [f"e{w:03d}/{t}" for w in (7, 17, 27) for t in TEXTS]
    for p in plans:
        writer, text = p.writer.split("/")
        label = identity_label(writer, int(text))
        assert p.draws == [(0, 1, 2)]   # K = 3: every ink picture
        assert all(c.medium[s.index] == INK and c.writers[s.index] == label for s in p.candidates)
        assert [c.medium[s.index] for s in p.later_genuine] == [PAPER]
        assert all(c.writers[s.index] == label for s in p.later_genuine)
        # the same name on paper by every other validate writer (the control writer's two included)
        assert len(p.skilled) == 2 + 2
        assert all(c.medium[s.index] == PAPER and identity_text(c.writers[s.index]) == identity_text(label)
                   and c.writers[s.index] != label for s in p.skilled)
        assert all(c.split[s.index] == "validate" for s in p.candidates + p.later_genuine + p.skilled + p.random)


def _code(c: ImageCorpus, key: str) -> dict[str, np.ndarray]:
    names = sorted({label_of(c, i, key) for i in range(len(c))})
    return {n: np.eye(len(names), dtype=np.float32)[k] for k, n in enumerate(names)}


def label_of(c: ImageCorpus, i: int, key: str) -> str:
    """The label an embedder below codes image ``i`` by: its writer, or (cross-media) its name only."""
    w = c.writers[i]
    if key == "name" and (t := identity_text(w)) is not None:
        return f"name{t}"
    return w


@pytest.mark.parametrize("key, low", [("writer", True), ("name", False)])
def test_the_pad_to_paper_figure_separates_writers_and_not_names(key: str, low: bool) -> None:
    """An embedding that knows who wrote a name scores 0 % on the cross-media figure; one that only
    sees which name was written cannot tell a writer from a same-name impostor: 50 % at best."""
    c = corpus()
    codes = _code(c, key)

    def embed(idx: list[int]) -> np.ndarray:
        return np.stack([codes[label_of(c, i, key)] for i in idx])

    prior = NormalisationPrior(0.5, 0.7)
    eer = validation_eer(embed, c, prior, trials=2, pool="cross-media")["skilled_eer_global"]
    assert (eer == 0.0) if low else (eer >= 50.0)
    sel = selection(embed, c, prior, 2, "dutch+cross-media")
    assert sel["criterion"] == pytest.approx((sel["dutch"]["skilled_eer_global"] + eer) / 2, abs=1e-3)
