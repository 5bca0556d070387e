"""Benchmark: the offline (image) learned verifier on one core. Per signature image: ``prepare``
(the one offline preprocessing), the CNN-LSTM embedding alone (float and int8 models, one thread),
the gradient histograms of a prepared picture (``models.hog``), and the kiosk's whole paper path from a camera frame to the score (judge the frame, find the
signature, verify it against 5 references with ``models.PaperVerifier``) pinned to one core;
median and p95, plus the model files' sizes.

Images are synthesised signatures (tools.synth) rendered as ink (models.render): no dataset needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models import shipped_assets
from models.offline_embed import ImageEmbedder
from tools.synth import make_population

NAME = "offline"
ASSETS = shipped_assets()


def _ms(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def _timed(step: Callable[[Any], object], items: Sequence[Any], reps: int) -> tuple[float, float]:
    """Median and p95 (ms) of ``step`` on each item, ``reps`` times over."""
    took = []
    for _ in range(reps):
        for item in items:
            t0 = time.perf_counter()
            step(item)
            took.append(time.perf_counter() - t0)
    return _ms(took)


def run(quick: bool = False) -> dict[str, float]:
    from models.image_preprocess import prepare
    from models.render import render_ink

    pop = make_population(n_writers=2 if quick else 6, n_genuine=6, n_forgeries=0, seed=3)
    pictures = [render_ink(t, rng=np.random.default_rng(i)) for i, (g, _) in enumerate(pop.values()) for t in g]
    reps = 2 if quick else 10
    out: dict[str, float] = {"cores": float(os.cpu_count() or 1)}

    out["prepare_median_ms"], out["prepare_p95_ms"] = _timed(prepare, pictures, reps)
    print(f"offline: prepare one {pictures[0].shape[1]}x{pictures[0].shape[0]} picture: median "
          f"{out['prepare_median_ms']:.2f} ms (p95 {out['prepare_p95_ms']:.2f})")

    images = [prepare(p) for p in pictures]
    for tag in ("int8", "float"):
        path = ASSETS / f"cnn_lstm_{tag}.tflite"
        emb = ImageEmbedder(path, threads=1)
        emb.embed(images[0])  # warm-up (allocation, XNNPACK packing)
        out[f"{tag}_embed_median_ms"], out[f"{tag}_embed_p95_ms"] = _timed(emb.embed, images, reps)
        out[f"{tag}_model_kib"] = path.stat().st_size / 1024
        print(f"offline: {tag} CNN-LSTM ({out[f'{tag}_model_kib']:.0f} KiB), one image, one thread: embed median "
              f"{out[f'{tag}_embed_median_ms']:.2f} ms (p95 {out[f'{tag}_embed_p95_ms']:.2f})")

    from models.hog import SHIPPED, hog_compared, hog_descriptor

    out["hog_median_ms"], out["hog_p95_ms"] = _timed(hog_descriptor, images, reps)
    # What the kiosk computes of a question: every turn, centred.
    out["hog_turned_median_ms"], out["hog_turned_p95_ms"] = _timed(hog_compared, images, reps)
    print(f"offline: gradient histograms of one prepared picture: median {out['hog_median_ms']:.2f} ms "
          f"(p95 {out['hog_p95_ms']:.2f}); a question's {len(SHIPPED.turns)} turns, centred: median "
          f"{out['hog_turned_median_ms']:.2f} ms (p95 {out['hog_turned_p95_ms']:.2f})")

    out.update(_frame_to_score(pop, reps=1 if quick else 3))
    return out


def _frame_to_score(pop: dict, reps: int) -> dict[str, float]:
    """The kiosk's whole paper path on one core: a camera frame is judged (exposure, sharpness),
    the signature found and rectified, then verified by ``models.PaperVerifier`` (prepare,
    int8 embedding, hand features, the customer's Isolation Forest, the fusion) against 5 pad
    references drawn as ink; the template is built beforehand, as at enrollment. The references are
    drawn again at a question's pen width when a question first needs that width
    (``models.pen_width``): each frame is verified once first, and those that drew a width are
    timed apart ("new width"); then every frame is timed (the frame-to-score figures)."""
    import cv2

    from firmware_host.camera import judge, measure
    from models.paper import PaperVerifier
    from models.render import render_ink
    from models.signature_finder import find_signature
    from tools.photos import make_photo

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = cv2.getNumThreads()
    templates: list[Any] = []
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    cv2.setNumThreads(1)
    try:
        verifier = PaperVerifier(threads=1)
        found, verify, total, new_width = [], [], [], []
        for w, (genuine, _) in enumerate(pop.values()):
            template = verifier.enroll_pad(genuine[:5])
            templates.append(template)
            rng = np.random.default_rng(w)
            frames = [make_photo(render_ink(t, rng=rng), rng, difficulty=d).frame
                      for t in genuine[5:] for d in ("clean", "perspective")]
            # First, each frame once: the references are drawn at the pen widths these questions
            # need (timed: what a customer's first cheque at a new width costs).
            pad = template.features.pad
            for frame in frames:
                # Every width ever drawn (``drawn`` keeps a few: its length stops growing).
                widths = len(pad.hands) if pad is not None else 0
                t0 = time.perf_counter()
                if judge(measure(frame)) is None:
                    verifier.verify(template, find_signature(frame))
                    if pad is not None and len(pad.hands) > widths:
                        new_width.append(time.perf_counter() - t0)
            for _ in range(reps):
                for frame in frames:
                    t0 = time.perf_counter()
                    if judge(measure(frame)) is not None:
                        continue
                    picture = find_signature(frame)
                    t1 = time.perf_counter()
                    verifier.verify(template, picture)
                    t2 = time.perf_counter()
                    found.append(t1 - t0)
                    verify.append(t2 - t1)
                    total.append(t2 - t0)
        held = [t.nbytes() / 2**20 for t in templates]
        widest = _widest_set(verifier)
    finally:
        cv2.setNumThreads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    out: dict[str, float] = {}
    out["paper_set_mib_median"], out["paper_set_mib_max"] = float(np.median(held)), float(max(held))
    out["paper_set_widest_mib"] = widest
    out["frame_find_median_ms"], out["frame_find_p95_ms"] = _ms(found)
    out["paper_verify_median_ms"], out["paper_verify_p95_ms"] = _ms(verify)
    out["frame_to_score_median_ms"], out["frame_to_score_p95_ms"] = _ms(total)
    out["frames"] = float(len(total))
    out["frame_to_score_new_width_median_ms"], out["frame_to_score_new_width_p95_ms"] = _ms(new_width or [0.0])
    out["new_width_frames"] = float(len(new_width))
    print(f"offline: 1280x720 camera frame to score, one core ({len(total)} frames): median "
          f"{out['frame_to_score_median_ms']:.1f} ms (p95 {out['frame_to_score_p95_ms']:.1f}); of which judge + "
          f"find {out['frame_find_median_ms']:.1f} ms, verify against 5 references (prepare, int8 embed, hand "
          f"features, gradient histograms, anomaly, fusion) {out['paper_verify_median_ms']:.1f} ms; the first time, {len(new_width)} frame(s) "
          f"needed the references drawn at a new pen width: median {out['frame_to_score_new_width_median_ms']:.1f} ms")
    from kiosk.flows.references import MAX_BYTES, MAX_SETS
    print(f"offline: a paper reference set in the kiosk's cache (ReferenceSet.nbytes), 5 pad references after "
          f"those frames: median {out['paper_set_mib_median']:.2f} MiB, largest {out['paper_set_mib_max']:.2f}; "
          f"10 pad references drawn at every width a customer keeps: {widest:.2f} MiB (the cache: at most "
          f"{MAX_SETS} sets and {MAX_BYTES / 2**20:.0f} MiB)")
    return out


def _widest_set(verifier: Any) -> float:
    """MiB held by the largest paper set a customer can have: the most pad references a template
    takes, drawn at the default width and the most others kept, by questions written with pens
    ever broader."""
    from kiosk.flows.enroll import MAX_REFERENCES
    from models.paper import MAX_KEPT_WIDTHS
    from models.render import render_ink

    genuine = next(iter(make_population(n_writers=1, n_genuine=MAX_REFERENCES + 1, n_forgeries=0,
                                        seed=11).values()))[0]
    template = verifier.enroll_pad(genuine[:MAX_REFERENCES])
    pad = template.features.pad
    for pen in (0.35, 0.5, 0.8, 1.0, 1.3):
        verifier.verify(template, render_ink(genuine[-1], pen_width_mm=pen))
    if pad is None or len(pad.drawn) != 1 + MAX_KEPT_WIDTHS:
        raise RuntimeError("the widest paper set was not drawn at every width a customer keeps")
    return template.nbytes() / 2**20
