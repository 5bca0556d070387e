"""Calibrated fusion: monotone, bounded, stored and refitted correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.fusion import Fusion, fit_fusion


def test_match_rate_falls_when_any_distance_grows() -> None:
    f = Fusion(names=("classic", "learned"), weights=(-4.0, -2.0), bias=1.0)
    grid = np.linspace(0.2, 5.0, 25)
    for fixed in (0.5, 1.0, 3.0):
        a = [f.match_rate(np.array([d, fixed])) for d in grid]
        b = [f.match_rate(np.array([fixed, d])) for d in grid]
        assert all(x >= y for x, y in zip(a, a[1:]))
        assert all(x >= y for x, y in zip(b, b[1:]))
        assert all(0.0 <= v <= 1.0 for v in a + b)
    # distance() is monotone the other way (lower is more genuine)
    assert f.distance(np.array([0.8, 0.8])) < f.distance(np.array([2.0, 0.8]))


def test_positive_weight_refused() -> None:
    with pytest.raises(ValueError, match="<= 0"):
        Fusion(names=("a",), weights=(0.5,), bias=0.0)


def test_fit_separates_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    genuine = np.exp(rng.normal(0.0, 0.2, size=(300, 2)))
    impostor = np.exp(rng.normal(0.8, 0.3, size=(600, 2)))
    impostor[:, 1] = np.exp(rng.normal(0.0, 0.2, size=600))  # the second verifier is useless here
    f = fit_fusion(("classic", "learned"), genuine, impostor)
    assert f.weights[0] < 0 and f.weights[1] <= 0
    g = np.array([f.match_rate(r) for r in genuine])
    i = np.array([f.match_rate(r) for r in impostor])
    assert g.mean() > 0.7 and i.mean() < 0.3
    assert 0.0 < f.threshold < 1.0
    path = tmp_path / "fusion.json"
    f.save(path)
    assert Fusion.load(path) == f


def test_wrong_number_of_distances() -> None:
    f = Fusion(names=("classic", "learned"), weights=(-1.0, -1.0), bias=0.0)
    with pytest.raises(ValueError, match="expected 2"):
        f.match_rate(np.array([1.0]))
