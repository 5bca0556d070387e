"""Benchmark: the offline (image) learned verifier on one core. Per signature image: ``prepare``
(the one offline preprocessing), the CNN-LSTM embedding alone (float and int8 models, one thread),
and one verification against 5 references (embedding + 5 distances + user normalisation); median
and p95, plus the model files' sizes.

Images are synthesised signatures (tools.synth) rendered as ink (models.render): no dataset needed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

NAME = "offline"
ASSETS = Path(__file__).resolve().parents[2] / "models" / "assets"


def _ms(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def run(quick: bool = False) -> dict[str, float]:
    from models.image_preprocess import prepare
    from models.offline_embed import ImageEmbedder
    from models.render import render_ink
    from tools.synth import make_population

    pop = make_population(n_writers=2 if quick else 6, n_genuine=6, n_forgeries=0, seed=3)
    pictures = [render_ink(t, rng=np.random.default_rng(i)) for i, (g, _) in enumerate(pop.values()) for t in g]
    reps = 2 if quick else 10
    out: dict[str, float] = {"cores": float(os.cpu_count() or 1)}

    prep = []
    for _ in range(reps):
        for p in pictures:
            t0 = time.perf_counter()
            prepare(p)
            prep.append(time.perf_counter() - t0)
    out["prepare_median_ms"], out["prepare_p95_ms"] = _ms(prep)
    print(f"offline: prepare one {pictures[0].shape[1]}x{pictures[0].shape[0]} picture: median "
          f"{out['prepare_median_ms']:.2f} ms (p95 {out['prepare_p95_ms']:.2f})")

    images = [prepare(p) for p in pictures]
    for tag in ("int8", "float"):
        path = ASSETS / f"cnn_lstm_{tag}.tflite"
        emb = ImageEmbedder(path, threads=1)
        emb.embed(images[0])  # warm-up (allocation, XNNPACK packing)
        inv = []
        for _ in range(reps):
            for x in images:
                t0 = time.perf_counter()
                emb.embed(x)
                inv.append(time.perf_counter() - t0)
        out[f"{tag}_embed_median_ms"], out[f"{tag}_embed_p95_ms"] = _ms(inv)
        out[f"{tag}_model_kib"] = path.stat().st_size / 1024
        print(f"offline: {tag} CNN-LSTM ({out[f'{tag}_model_kib']:.0f} KiB), one image, one thread: embed median "
              f"{out[f'{tag}_embed_median_ms']:.2f} ms (p95 {out[f'{tag}_embed_p95_ms']:.2f})")

    # One verification against 5 enrolled references (template built beforehand, as enrolled).
    emb = ImageEmbedder(ASSETS / "cnn_lstm_int8.tflite", threads=1)
    template = emb.build_template([emb.embed(x) for x in images[:5]])
    ver = []
    for _ in range(reps):
        for p in pictures[5:]:
            t0 = time.perf_counter()
            emb.score(template, emb.embed(prepare(p)))
            ver.append(time.perf_counter() - t0)
    out["verify_median_ms"], out["verify_p95_ms"] = _ms(ver)
    print(f"offline: verify one picture against 5 references (prepare + int8 embed + score): median "
          f"{out['verify_median_ms']:.2f} ms (p95 {out['verify_p95_ms']:.2f})")
    return out
