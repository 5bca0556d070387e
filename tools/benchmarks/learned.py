"""Benchmark: the learned verifier on one core. Per signature: the int8 student's invoke alone,
and featurisation + invoke; then the whole fused verification of one signature against 5
references (classic features and 5 DTWs, learned embedding and 5 DTWs, fusion), median and p95.
The float student is timed beside the int8 one for comparison.

Signatures come from the sigma-lognormal synthesizer (no dataset needed); ``SIGKIOSK_BENCH_DATA``
may name a SUSIG-Visual folder to time real signatures instead (as in the ``verify`` benchmark).
"""

from __future__ import annotations

import os
import time

import numpy as np

from models import shipped_assets
from models.fusion import Fusion
from tools.benchmarks.verify import _signatures, _traj

NAME = "learned"
ASSETS = shipped_assets()


def _ms(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def run(quick: bool = False) -> dict[str, float]:
    from models.classic import ClassicConfig, build_template, score_query, signature_features
    from models.learned import LearnedVerifier, featurize

    writers = _signatures(3 if quick else 10)
    reps = 2 if quick else 10
    out: dict[str, float] = {"cores": float(os.cpu_count() or 1)}
    int8 = ASSETS / "tsgatr_student_int8.tflite"
    queries = [_traj(q) for _, qs in writers for q in qs]
    for tag, path in (("int8", int8), ("float", ASSETS / "tsgatr_student_float.tflite")):
        ver = LearnedVerifier(path, threads=1)
        inputs = [featurize(q, ver.config) for q in queries]
        ver.embed_input(inputs[0])  # warm-up (allocation, XNNPACK packing)
        inv, full = [], []
        for _ in range(reps):
            for q, mi in zip(queries, inputs):
                t0 = time.perf_counter()
                ver.embed_input(mi)
                inv.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ver.embed(q)
                full.append(time.perf_counter() - t0)
        out[f"{tag}_invoke_median_ms"], out[f"{tag}_invoke_p95_ms"] = _ms(inv)
        out[f"{tag}_embed_median_ms"], out[f"{tag}_embed_p95_ms"] = _ms(full)
        print(f"learned: {tag} student, one signature: invoke median {out[f'{tag}_invoke_median_ms']:.2f} ms "
              f"(p95 {out[f'{tag}_invoke_p95_ms']:.2f}); featurise + invoke median "
              f"{out[f'{tag}_embed_median_ms']:.2f} ms (p95 {out[f'{tag}_embed_p95_ms']:.2f})")

    # The whole fused verification against 5 references (templates built beforehand, as enrolled).
    ccfg = ClassicConfig()
    ver = LearnedVerifier(int8, threads=1)
    fusion = Fusion.load(ASSETS / "fusion.json")
    templates = []
    for refs, _ in writers:
        c = build_template([signature_features(_traj(r), ccfg) for r in refs], ccfg)
        lt = ver.build_template([ver.embed(_traj(r)) for r in refs])
        templates.append((c, lt))
    pairs = [(ti, _traj(q)) for ti, (_, qs) in enumerate(writers) for q in qs]
    score_query(templates[0][0], signature_features(pairs[0][1], ccfg), ccfg)  # numba compile
    lat = []
    for _ in range(reps):
        for ti, q in pairs:
            t0 = time.perf_counter()
            dc = score_query(templates[ti][0], signature_features(q, ccfg), ccfg).distance
            dl = ver.score(templates[ti][1], ver.embed(q))
            fusion.match_rate(np.array([dc, dl]))
            lat.append(time.perf_counter() - t0)
    out["fused_5refs_median_ms"], out["fused_5refs_p95_ms"] = _ms(lat)
    out["runs"] = float(len(lat))
    print(f"learned: fused verification vs 5 references (classic + int8 learned + fusion): median "
          f"{out['fused_5refs_median_ms']:.2f} ms, p95 {out['fused_5refs_p95_ms']:.2f} ms over {len(lat)} runs, "
          f"one thread on a {os.cpu_count()}-core machine")
    return out
