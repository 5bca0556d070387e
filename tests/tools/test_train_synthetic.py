"""Real + synthetic training's sampler (tools/train/trainer.py TripletSampler) on a constructed
corpus: real-only draws unchanged, the synthetic share, forgery-likes as skilled negatives, the
augmented copies swapped in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.learned import Points
from tools.train.augment import AUGMENTED_SPLIT
from tools.train.data import Corpus, Signature
from tools.train.synthetic import SYNTH_SPLIT
from tools.train.trainer import TripletSampler

ROOT = Path(__file__).resolve().parents[2]
PTS = Points(feats=np.zeros((4, 2), np.float32), x=np.zeros(4), y=np.zeros(4), stroke=np.zeros(4, np.int32))


def corpus(synthetic: bool, augmented: bool) -> Corpus:
    sigs: list[Signature] = []
    for w in range(5):
        for k in range(4):
            sigs.append(Signature(f"r{w}-{k}", f"fmt:{w}", k < 3, "train", None, PTS))
    if synthetic:
        for w in range(6):
            for k in range(5):
                sigs.append(Signature(f"synth:{w}#{k}", f"synth:{w}", k < 3, SYNTH_SPLIT, None, PTS))
    c = Corpus(signatures=sigs)
    if augmented:
        for i in range(len(sigs)):
            c.variants[i] = [len(c.signatures)]
            c.signatures.append(Signature(f"{sigs[i].key}~0", sigs[i].writer, sigs[i].genuine, AUGMENTED_SPLIT,
                                          None, PTS))
    return c


def draws(sampler: TripletSampler, n: int = 20) -> list[tuple]:
    return [tuple(map(tuple, sampler.batch(8))) for _ in range(n)]


def test_without_synthesis_the_draws_are_the_real_only_ones() -> None:
    plain = TripletSampler(corpus(False, False), "train", np.random.default_rng(3), 0.6)
    # Synthetic identities and augmented copies in the corpus change nothing while their shares are 0.
    mixed = TripletSampler(corpus(True, True), "train", np.random.default_rng(3), 0.6)
    assert draws(plain) == draws(mixed)


def test_synthetic_share_and_forgery_like_negatives() -> None:
    c = corpus(True, False)
    s = TripletSampler(c, "train", np.random.default_rng(0), p_skilled=1.0, p_synthetic=0.5)
    synth_anchor = skilled_synth = 0
    total = 0
    for _ in range(100):
        anc, pos, neg, skilled = s.batch(8)
        for a, p, n, sk in zip(anc, pos, neg, skilled):
            total += 1
            wa = c.signatures[a].writer
            assert c.signatures[p].writer == wa and c.signatures[a].genuine and c.signatures[p].genuine
            if wa.startswith("synth:"):
                synth_anchor += 1
                # Synthetic identities have forgery-likes: with p_skilled 1 the negative is one of them.
                assert sk and c.signatures[n].writer == wa and not c.signatures[n].genuine
                skilled_synth += 1
            else:
                assert c.signatures[n].split == "train"
    assert 0.4 < synth_anchor / total < 0.6 and skilled_synth == synth_anchor


def test_augmented_copies_are_swapped_in() -> None:
    c = corpus(False, True)
    s = TripletSampler(c, "train", np.random.default_rng(0), 0.6, p_augment=1.0)
    anc, pos, neg, _ = s.batch(8)
    assert all(c.signatures[i].split == AUGMENTED_SPLIT for i in anc + pos + neg)
    half = TripletSampler(c, "train", np.random.default_rng(0), 0.6, p_augment=0.5)
    idx = [i for _ in range(50) for part in half.batch(8)[:3] for i in part]
    share = np.mean([c.signatures[i].split == AUGMENTED_SPLIT for i in idx])
    assert 0.4 < share < 0.6


def test_bad_synthesis_options_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for bad in (["--synthetic-identities", "-1"], ["--forgery-like", "-2"], ["--device-augment", "1.5"],
                ["--p-synthetic", "nan"]):
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "train", "online", *bad], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr[-500:]
        assert bad[0] in proc.stderr
        assert not (tmp_path / "runs").exists()


def test_a_fold_run_names_known_sets_and_never_ships(tmp_path: Path) -> None:
    """``train online --leave-out SET`` trains a fold of the leave-one-set-out protocol: an unknown
    set, or asking to ship the fold's model, is refused before anything is written."""
    for bad, said in ((["--leave-out", "no-such-set"], "unknown set"),
                      (["--leave-out", "susig-visual", "--ship"], "never shipped")):
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "train", "online", *bad], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr[-500:]
        assert not (tmp_path / "runs").exists()
