"""Benchmark: the classic pen verifier. DTW cells per second, and the time to verify one
signature against 5 references (features of the query, 5 banded DTWs, the normalised score),
median and p95 over many runs, on one core.

Signatures come from the sigma-lognormal synthesizer (200 Hz, 1.5-5 s), so the figures need no
dataset; ``SIGKIOSK_BENCH_DATA`` may name a SUSIG-Visual folder to time real signatures instead.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.trajectory import Trajectory
from tools.synth import make_population

NAME = "verify"


def _signatures(n_writers: int) -> list[tuple[list, list]]:
    data = os.environ.get("SIGKIOSK_BENCH_DATA")
    if data:
        from tools.datasets import load_online

        ds = load_online(Path(data), "susig-visual").subset("test")
        return [(ds.genuine(w)[:5], ds.genuine(w)[5:] + ds.skilled(w)) for w in sorted(ds.writers)][:n_writers]

    pop = make_population(n_writers=n_writers, n_genuine=8, n_forgeries=3, seed=7)
    return [(g[:5], g[5:] + f) for g, f in pop.values()]


def _traj(s: Any) -> Trajectory:  # dataset samples carry a trajectory; synthesized ones are trajectories
    return getattr(s, "trajectory", s)


def run(quick: bool = False) -> dict[str, float]:
    from models.classic import ClassicConfig, build_template, score_query, signature_features
    from models.dtw import dtw_cells, dtw_distance

    config = ClassicConfig()
    writers = _signatures(3 if quick else 10)
    # Compile once outside the timings (the daemon does this at start-up).
    f0 = signature_features(_traj(writers[0][0][0]), config)
    dtw_distance(f0, f0, config.band)

    templates = [build_template([signature_features(_traj(r), config) for r in refs], config) for refs, _ in writers]
    queries = [(ti, _traj(q)) for ti, (_, qs) in enumerate(writers) for q in qs]
    feats = [signature_features(q, config) for _, q in queries]

    cells = 0
    t0 = time.perf_counter()
    for (ti, _), f in zip(queries, feats):
        for r in templates[ti].references:
            dtw_distance(f, r, config.band)
            cells += dtw_cells(f, r, config.band)
    dtw_s = time.perf_counter() - t0
    # dtw_cells re-runs the kernel to count, so time the counting pass on its own and subtract.
    t0 = time.perf_counter()
    for (ti, _), f in zip(queries, feats):
        for r in templates[ti].references:
            dtw_cells(f, r, config.band)
    count_s = time.perf_counter() - t0
    cells_per_s = cells / max(dtw_s - count_s, 1e-9)

    reps = 3 if quick else 20
    lat = []
    for _ in range(reps):
        for ti, q in queries:
            t0 = time.perf_counter()
            score_query(templates[ti], signature_features(q, config), config)
            lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1e3
    points = np.array([len(f) for f in feats])
    out = {
        "cores": float(os.cpu_count() or 1),
        "dtw_cells_per_s": float(cells_per_s),
        "verify_5refs_median_ms": float(np.median(lat_ms)),
        "verify_5refs_p95_ms": float(np.percentile(lat_ms, 95)),
        "query_points_median": float(np.median(points)),
        "runs": float(len(lat_ms)),
    }
    print(f"verify: machine cores {os.cpu_count()}, one thread")
    print(f"verify: DTW {cells_per_s / 1e6:.1f} M cells/s (banded, {len(config.features)} features)")
    print(
        f"verify: one signature vs 5 references: median {out['verify_5refs_median_ms']:.2f} ms, "
        f"p95 {out['verify_5refs_p95_ms']:.2f} ms over {len(lat_ms)} runs "
        f"(query median {int(out['query_points_median'])} points after preprocessing)"
    )
    out.update(_kiosk_verifier(writers, queries, reps))
    return out


def time_verify(verifier: Any, writers: list[tuple[list, list]], queries: list[tuple[int, Trajectory]],
                reps: int) -> list[float]:
    """Seconds per ``verifier.verify`` of each (writer index, query), ``reps`` times over, each
    writer's references enrolled first as the kiosk does (after one warm-up call)."""
    templates = [verifier.enroll([_traj(r) for r in refs]) for refs, _ in writers]
    verifier.verify(templates[0], queries[0][1])  # numba compile, interpreter warm-up
    lat = []
    for _ in range(reps):
        for ti, q in queries:
            t0 = time.perf_counter()
            verifier.verify(templates[ti], q)
            lat.append(time.perf_counter() - t0)
    return lat


def _kiosk_verifier(writers: list[tuple[list, list]], queries: list[tuple[int, Trajectory]],
                    reps: int) -> dict[str, float]:
    """The kiosk's default pen verifier as the daemon calls it (``verify``: preprocessing, classic
    features, 5 classic distances, aspects, the global features its model takes, and the match score)."""
    from kiosk.config import VerifierConfig
    from tools.operating_point import kiosk_verifier

    settings = VerifierConfig()
    lat_ms = np.array(time_verify(kiosk_verifier(settings), writers, queries, reps)) * 1e3
    # Each signature's fastest run: what the code costs with the machine's noise taken out (on a
    # shared virtual machine the same code's median has moved by a factor of two between runs).
    best_ms = lat_ms.reshape(reps, len(queries)).min(axis=0)
    out = {"kiosk_verify_median_ms": float(np.median(lat_ms)), "kiosk_verify_p95_ms": float(np.percentile(lat_ms, 95)),
           "kiosk_verify_best_median_ms": float(np.median(best_ms)),
           "kiosk_verify_best_p95_ms": float(np.percentile(best_ms, 95))}
    print(f"verify: the kiosk's verifier ({settings.kind}) verify(): median {out['kiosk_verify_median_ms']:.2f} ms, "
          f"p95 {out['kiosk_verify_p95_ms']:.2f} ms over {len(lat_ms)} runs; each signature's fastest of {reps}: "
          f"median {out['kiosk_verify_best_median_ms']:.2f} ms, p95 {out['kiosk_verify_best_p95_ms']:.2f} ms "
          f"over {len(queries)} signatures")
    return out
