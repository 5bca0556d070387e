"""Featurisation of the learned verifier: the device's own preprocessing, resampling and padding."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import FEATURE_NAMES
from models.graphs import MASK_VALUE
from models.learned import LearnedConfig, featurize, resampled_points
from models.preprocess import prepare
from tools.synth import make_population


@pytest.fixture(scope="module")
def signatures() -> list:
    pop = make_population(n_writers=2, n_genuine=2, n_forgeries=0, seed=3)
    return [g for gs, _ in pop.values() for g in gs]


def test_long_signature_resampled_to_max_len(signatures: list) -> None:
    cfg = LearnedConfig(max_len=64)
    traj = signatures[0]
    assert len(prepare(traj, cfg.preprocess)) > 64  # the synthesised ones are seconds long
    mi = featurize(traj, cfg)
    assert mi.length == 64 and mi.out_length == 32
    assert mi.feats.shape == (64, len(FEATURE_NAMES))
    assert mi.valid.sum() == 64
    # z-scored per signature
    np.testing.assert_allclose(mi.feats.mean(axis=0), 0.0, atol=1e-5)


def test_short_signature_padded_and_masked(signatures: list) -> None:
    cfg = LearnedConfig(max_len=4096)
    mi = featurize(signatures[1], cfg)
    n = mi.length
    assert n < 4096
    assert (mi.valid[:n] == 1).all() and (mi.valid[n:] == 0).all()
    assert (mi.feats[n:] == 0).all()
    # Real points never attend to padding; each real row has itself plus k neighbours.
    assert (mi.knn_mask[:n, n:] == MASK_VALUE).all()
    assert ((mi.knn_mask[:n, :n] == 0).sum(axis=1) == cfg.k_nn + 1).all()
    assert ((mi.step_mask[:n, :n] == 0).sum(axis=1) <= 2 * cfg.k_step + 1).all()


def test_resampled_points_keep_stroke_order(signatures: list) -> None:
    pts = resampled_points(signatures[0], LearnedConfig(max_len=50))
    assert len(pts.x) == 50
    assert (np.diff(pts.stroke) >= 0).all()  # strokes in order, never interleaved by resampling
