"""The learned metric over the gradient histograms (measured, not shipped): it learns which
directions tell impostors from genuine pairs, on constructed writers it was not fitted on; and
a short run on real scans measures it beside the plain distance, on train and validate writers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.shared_data import shared_data
from tools.hog_metric import fit_metric, main

OFFLINE = shared_data("offline")


def _writers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` constructed writers in 20 values: a writer's signatures differ a lot in values 0-4
    (how they happen to sign) and little elsewhere; a forgery differs as much in 0-4 and, in
    values 5-9, by what the forger gets wrong. Rows, genuine pairs and impostor pairs."""
    rows: list[np.ndarray] = []
    genuine: list[tuple[int, int]] = []
    impostor: list[tuple[int, int]] = []
    for _ in range(n):
        mean = rng.normal(size=20)
        base = len(rows)
        for _ in range(4):
            noise = np.r_[3.0 * rng.normal(size=5), 0.1 * rng.normal(size=15)]
            rows.append(mean + noise)
        forged = len(rows)
        for _ in range(2):
            noise = np.r_[3.0 * rng.normal(size=5), rng.normal(size=5), 0.1 * rng.normal(size=10)]
            rows.append(mean + noise)
        genuine += [(base + i, base + j) for i in range(4) for j in range(i + 1, 4)]
        impostor += [(forged + f, base + i) for f in range(2) for i in range(4)]
    return np.array(rows), np.array(genuine), np.array(impostor)


def _separation(rows: np.ndarray, genuine: np.ndarray, impostor: np.ndarray, w: np.ndarray | None) -> float:
    """How often an impostor pair is farther apart than a genuine pair (1: always)."""
    z = rows if w is None else rows @ w
    g = np.linalg.norm(z[genuine[:, 0]] - z[genuine[:, 1]], axis=1)
    i = np.linalg.norm(z[impostor[:, 0]] - z[impostor[:, 1]], axis=1)
    return float((i[:, None] > g[None, :]).mean())


def test_the_metric_weighs_what_tells_forgeries_apart_on_writers_it_never_saw() -> None:
    rng = np.random.default_rng(3)
    learn_rows, learn_g, learn_i = _writers(rng, 60)
    w = fit_metric(learn_rows, learn_g, learn_i, dims=20, shrink=0.1)
    assert w.shape == (20, 20) and w.dtype == np.float32
    rows, genuine, impostor = _writers(rng, 40)
    plain, learnt = _separation(rows, genuine, impostor, None), _separation(rows, genuine, impostor, w)
    assert plain < 0.7 and learnt > 0.95, (plain, learnt)
    # As far apart on average as the plain descriptors, for the genuine pairs it learnt from.
    d = learn_rows[learn_g[:, 0]] - learn_rows[learn_g[:, 1]]
    assert np.linalg.norm(d @ w, axis=1).mean() == pytest.approx(np.linalg.norm(d, axis=1).mean(), rel=1e-4)


def test_fewer_components_than_values_and_bad_settings_refused() -> None:
    rows, genuine, impostor = _writers(np.random.default_rng(4), 30)
    assert fit_metric(rows, genuine, impostor, dims=8, shrink=0.5).shape == (20, 8)
    with pytest.raises(ValueError):
        fit_metric(rows, genuine, impostor, dims=8, shrink=1.5)
    with pytest.raises(ValueError):
        fit_metric(rows, genuine[:1], impostor, dims=8, shrink=0.5)


def test_a_short_run_on_real_scans_leaves_each_set_out(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(OFFLINE), "--protocol", "leave-one-set-out", "--max-writers", "3", "--dims", "32"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " left out, " in line]
    assert [line.split(",")[0].strip() for line in lines] == ["dutch left out"] * 2 + ["cross-media left out"] * 2
    eers = [[float(e) for e in re.findall(r"K=\d\s+(\d+\.\d+)", line)] for line in lines]
    assert [len(e) for e in eers] == [1, 1, 2, 2]
    assert all(0.0 <= e <= 100.0 for row in eers for e in row)
