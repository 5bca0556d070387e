"""Benchmark: the learned verifier on one core. Per signature: the int8 student's invoke alone,
and featurisation + invoke; then the whole fused verification of one signature against 5
references by the kiosk's ``FusedVerifier`` (classic features, distance and aspect checks, learned
embedding and 5 DTWs, global features, fused score), median and p95: with the shipped fused score,
which weighs the learned distance 0 and so never runs the student, and with the same score weighing
it (what an update that gives the student weight would cost).
The float student is timed beside the int8 one for comparison.

Signatures come from the sigma-lognormal synthesizer (no dataset needed); ``SIGKIOSK_BENCH_DATA``
may name a SUSIG-Visual folder to time real signatures instead (as in the ``verify`` benchmark).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from models import shipped_assets
from tools.benchmarks.verify import _signatures, _traj, time_verify

NAME = "learned"
ASSETS = shipped_assets()


def fused_model_dir(dest: Path, learned_weight: float) -> Path:
    """``dest`` made a model directory holding the shipped student and fused score, the score
    weighing the learned distance ``learned_weight`` (the shipped one weighs it 0, so the kiosk never
    runs the student): what this benchmark times and the tests check the student's part by."""
    from models._assets import DEFAULT_LEARNED_MODEL, FUSED_SCORE_FILE
    from models.learned import config_path

    student = ASSETS / DEFAULT_LEARNED_MODEL
    for f in (student, config_path(student)):
        shutil.copy(f, dest / f.name)
    model = json.loads((ASSETS / FUSED_SCORE_FILE).read_text())
    model["weights"][model["inputs"].index("learned")] = learned_weight
    (dest / FUSED_SCORE_FILE).write_text(json.dumps(model))
    return dest


def _ms(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def run(quick: bool = False) -> dict[str, float]:
    from models.classic import ClassicConfig
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

    # The whole fused verification against 5 references, by the kiosk's own verifier, the references
    # enrolled beforehand as the kiosk does: as shipped, and with the learned distance weighed.
    import tempfile

    from models.pen import FusedVerifier, make_verifier

    with tempfile.TemporaryDirectory() as tmp:
        weighed = fused_model_dir(Path(tmp), learned_weight=-1.0)
        for key, model_dir in (("fused", None), ("fused_weighed", weighed)):
            fused = make_verifier("fused", ClassicConfig().threshold, model_dir=model_dir)
            assert isinstance(fused, FusedVerifier) and fused.score_model is not None
            pairs = [(ti, _traj(q)) for ti, (_, qs) in enumerate(writers) for q in qs]
            lat = time_verify(fused, writers, pairs, reps)
            out[f"{key}_5refs_median_ms"], out[f"{key}_5refs_p95_ms"] = _ms(lat)
            out["runs"] = float(len(lat))
            what = ("the int8 student weighed" if fused.score_model.weighs_learned
                    else "as shipped: the learned distance weighed 0, the student not run")
            print(f"learned: fused verification vs 5 references (FusedVerifier.verify: classic + aspects + fused "
                  f"score, {what}): median {out[f'{key}_5refs_median_ms']:.2f} ms, "
                  f"p95 {out[f'{key}_5refs_p95_ms']:.2f} ms over {len(lat)} runs, "
                  f"one thread on a {os.cpu_count()}-core machine")
    return out
