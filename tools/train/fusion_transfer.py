"""Does the pen fusion's operating point survive a tablet it was not fitted on?

Each pen set is left out in turn: the fusion (:func:`tools.train.fusion_fit.fit_mixing`, the
shipped method) is fitted on the *other* sets' validation writers (K = 1 and 5), and the left-out
set's test writers are measured with it (the evaluator's ``random-refs`` trials): skilled EER of
classic, learned and fused, and FRR / skilled FAR of the fused match rate at the threshold fitted
without the set, beside the same at the shipped ``fusion.json`` (fitted on every set's validation
writers, the left-out set's among them).

What is not left out: the learned model itself (trained on every set's training writers; a
retraining per fold is not practical here) and the classic prior. The left-out set's *test*
writers are unseen by both, so the figures say how the fusion's weights and threshold transfer,
not how the student would do on a fifth tablet.

The fused score (the match score with the learned distance, the fused verifier's model) is measured
the same way by :func:`fused_score_rows`, with the match score refitted per fold and, with
``fold_models``, a student trained without the left-out set (``sigkiosk train online --leave-out``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.fusion import Fusion
from models.match_score import ScoreModel
from tools.metrics import equal_error_rate
from tools.train.fusion_fit import (
    FIT_KS,
    FIT_SETS,
    TrialDistances,
    compose_fused,
    dataset_trials,
    fit_mixing,
    score_eer,
    set_trials,
)
from tools.train.score_fit import Trials, design


def _eer(td: TrialDistances, col: np.ndarray) -> float:
    g, s = col[td.kinds == "genuine"], col[td.kinds == "skilled"]
    return round(100.0 * equal_error_rate(g, s)[0], 2) if g.size and s.size else float("nan")


def operating_point(td: TrialDistances, fusion: Fusion, threshold: float) -> dict[str, float]:
    """FRR and skilled FAR (%) of the fused match rate at ``threshold`` over ``td``'s trials."""
    rate = np.array([fusion.match_rate(r) for r in td.distances])
    g, s = rate[td.kinds == "genuine"], rate[td.kinds == "skilled"]
    return {"frr": round(100.0 * float(np.mean(g < threshold)), 1) if g.size else float("nan"),
            "far_skilled": round(100.0 * float(np.mean(s >= threshold)), 1) if s.size else float("nan")}


def validation_groups(data_root: Path, model_path: Path, cache: Path, trials: int) -> dict[str, dict[str, TrialDistances]]:
    """Every set's validation trials (K = 1 and 5, measured with ``model_path``), grouped by set:
    what a fold's mix is fitted on, the left-out set's groups dropped."""
    val_trials = set_trials(data_root, model_path, cache, trials, FIT_KS)
    return {fmt: {n: td for n, td in val_trials.items() if n.startswith(f"{fmt} K=")} for _, fmt in FIT_SETS}


def leave_one_set_out(data_root: Path, model_path: Path, shipped: Fusion, cache: Path, trials: int = 10,
                      ks: tuple[int, ...] = (1, 5), split: str = "test") -> dict:
    """The report: one entry per left-out set with forgeries in its ``split`` writers (module doc;
    ``validate``: where choices are made; the shipped fusion's column is then in-sample)."""
    if split not in ("test", "validate"):
        raise ValueError(f"split must be test or validate, not {split!r}")
    val = validation_groups(data_root, model_path, cache, trials)
    test_trials = set_trials(data_root, model_path, cache, trials, ks, split=split)
    test = {fmt: {k: test_trials[f"{fmt} K={k}"] for k in ks if f"{fmt} K={k}" in test_trials}
            for _, fmt in FIT_SETS}
    return {"model": model_path.name, "shipped_fusion": {"weights": list(shipped.weights), "bias": shipped.bias,
                                                         "threshold": shipped.threshold},
            "trials_per_writer": trials, "split": split, "sets": transfer_rows(val, test, shipped)}


def transfer_rows(val: dict[str, dict[str, TrialDistances]], test: dict[str, dict[int, TrialDistances]],
                  shipped: Fusion) -> list[dict]:
    """Per left-out set (a key of ``val``): the fusion fitted on the other sets' validation groups,
    measured on the set's ``test`` trials per K. Sets whose test writers have no forgeries are left out."""
    rows = []
    for fmt in val:
        fit = fit_mixing({name: td for other, parts in val.items() if other != fmt for name, td in parts.items()})
        f = fit.fusion
        row: dict = {"left_out": fmt, "mix_learned": fit.mix, "threshold": round(f.threshold, 4), "k": {}}
        for k, td in test.get(fmt, {}).items():
            if not (td.kinds == "skilled").any():
                continue
            fused = np.array([f.distance(r) for r in td.distances])
            shipped_d = np.array([shipped.distance(r) for r in td.distances])
            row["k"][k] = {
                "writers": int(len(np.unique(td.writers))),
                "eer": {"classic": _eer(td, td.distances[:, 0]), "learned": _eer(td, td.distances[:, 1]),
                        "fused": _eer(td, fused), "shipped_fusion": _eer(td, shipped_d)},
                "fitted_threshold": operating_point(td, f, f.threshold),
                "shipped_threshold": operating_point(td, shipped, shipped.threshold),
            }
        if row["k"]:
            rows.append(row)
    return rows


def format_table(report: dict) -> str:
    """One row per (left-out set, K): EERs, then FRR / skilled FAR at the fold's and the shipped threshold."""
    lines = ["| left-out set (fold's w, threshold) | K | writers | skilled EER classic / learned / fused (fold) "
             "/ fused (shipped) | fold's threshold: FRR / skilled FAR | shipped threshold: FRR / skilled FAR |",
             "|---|---:|---:|---|---|---|"]
    for row in report["sets"]:
        for i, (k, c) in enumerate(sorted(row["k"].items())):
            e, a, b = c["eer"], c["fitted_threshold"], c["shipped_threshold"]
            label = f"{row['left_out']} ({row['mix_learned']:.2f}, {row['threshold']:.3f})" if i == 0 else ""
            lines.append(f"| {label} | {k} | {c['writers']} | {e['classic']:.2f} / {e['learned']:.2f} / "
                         f"{e['fused']:.2f} / {e['shipped_fusion']:.2f} | {a['frr']:.1f} / {a['far_skilled']:.1f} | "
                         f"{b['frr']:.1f} / {b['far_skilled']:.1f} |")
    return "\n".join(lines)


# -- the fused score (the match score with the learned distance), each set left out ----------------


def _at(model: ScoreModel, tr: Trials, threshold: float) -> dict[str, float]:
    """FRR and skilled FAR (%) of ``model``'s probability at ``threshold`` over ``tr``'s trials."""
    g = model.probability(design(model, tr, ("genuine",))[0])
    f = model.probability(design(model, tr, ("skilled",))[0])
    return {"frr": round(100.0 * float(np.mean(g < threshold)), 1) if g.size else float("nan"),
            "far_skilled": round(100.0 * float(np.mean(f >= threshold)), 1) if f.size else float("nan")}


def _score_eer(model: ScoreModel, tr: Trials, kind: str = "skilled") -> float:
    return round(score_eer(model, tr, kind), 2)


def _distance_eer(tr: Trials, column: dict[str, list[float]]) -> float:
    """Skilled EER (%) of one user-normalised distance of ``tr`` (``Trials.classic`` or ``.learned``)."""
    g, f = np.asarray(column["genuine"]), np.asarray(column["skilled"])
    return round(100.0 * equal_error_rate(g, f)[0], 2) if g.size and f.size else float("nan")


def fused_score_rows(data_root: Path, model_path: Path, cache: Path, trials: int = 10, ks: tuple[int, ...] = (1, 5),
                     seed: int = 0, say: Callable[[str], None] = lambda msg: None,
                     variants: tuple[str, ...] = ("recorded",), split: str = "test",
                     fold_models: dict[str, Path] | None = None) -> list[dict]:
    """Per left-out pen set, the fused score as a fold would ship it: the match score fitted on the
    other sets' train + validate writers (``tools.cross_device.fit_match_score``, the shipped
    options and the kiosk's classic prior), the learned distance mixed in at the mix fitted on the
    other sets' validation writers (:func:`fit_mixing`), at the fold's match-score threshold; and
    the left-out set's ``split`` writers (test; validate where choices are made) measured, as
    recorded and as the pads of ``variants`` would have delivered them
    (``tools.cross_device.VARIANTS`` keys; those that change the set): skilled
    EER (and random) of classic, learned, the fold's match score and fused score on the same
    trials, FRR / skilled FAR of the two scores at the fold's threshold. Not left out: the student
    (trained on every set's training writers) and the classic prior; unless ``fold_models`` names
    a student per left-out set (``sigkiosk train online --leave-out SET``, which never saw it), in
    which case only those sets are measured, each with its own student (mix and trials)."""
    from models.classic import ClassicConfig
    from tools.cross_device import (
        FIT_K,
        SETS,
        VARIANTS,
        device_variant,
        fit_match_score,
        fit_sets,
        measure_distances,
    )
    from tools.evaluate import globals_cache, learned_provider

    prior = ClassicConfig().prior
    unknown = set(fold_models or {}) - {name for name, _, _ in SETS}
    if unknown:
        raise ValueError(f"fold models for unknown set(s) {sorted(unknown)}")
    shared_val = validation_groups(data_root, model_path, cache, trials) if not fold_models else None
    fit_data, loaded = {}, {}
    for name, loaded[name], ds in fit_sets(data_root / "online"):
        say(f"{name}: classic distances of {len(ds.writers)} train+validate writers (the fold match scores)")
        fit_data[name] = measure_distances(ds, [FIT_K], trials, seed)
    globals_of = globals_cache()
    rows = []
    for name, _, fmt in SETS:
        if fold_models and name not in fold_models:
            continue
        student = fold_models[name] if fold_models else model_path
        learned = learned_provider(student)
        val = shared_val if shared_val is not None else validation_groups(data_root, student, cache, trials)
        others = [o for o in fit_data if o != name]
        match = fit_match_score({o: fit_data[o] for o in others}, prior, globals_of,
                                record={"left_out": name, "fitted_on": others})
        mixing = fit_mixing({n: td for o, parts in val.items() if o != fmt for n, td in parts.items()})
        measured = loaded[name].subset(split)  # type: ignore[arg-type]
        device = next(s.trajectory.device for ss in loaded[name].writers.values() for s in ss)
        for v in VARIANTS:
            if v.key not in variants or not v.applies(device):
                continue
            ds = device_variant(measured, v)
            test: dict[int, Trials] = {}
            for k in ks:
                say(f"{name} left out [{v.name}]: {split} trials, K = {k} (classic, learned, global features)")
                tr = dataset_trials(ds, learned, match.spread, references=k, trials=trials, seed=seed)
                if tr is not None:
                    test[k] = tr
            row = fused_fold(name, match, mixing.mix, mixing.scales, test)
            if row["k"]:
                rows.append({**row, "pad": v.name, "student": str(student)})
    return rows


def fused_fold(name: str, match: ScoreModel, mix: float, scales: tuple[float, float],
               test: dict[int, Trials]) -> dict:
    """One fold's row: the fused score composed from the fold's match score and mix, at the fold's
    match-score threshold, and both measured on the left-out set's trials per K (those with skilled
    forgeries)."""
    fused = replace(compose_fused(match, mix, scales), threshold=match.threshold)
    row: dict = {"left_out": name, "mix_learned": mix, "threshold": round(match.threshold, 4), "k": {}}
    for k, tr in sorted(test.items()):
        if not tr.classic["skilled"]:
            continue
        row["k"][k] = {
            "writers": len(set(tr.writer["genuine"])),
            "eer": {"classic": _distance_eer(tr, tr.classic), "learned": _distance_eer(tr, tr.learned),
                    "match_score": _score_eer(match, tr), "fused_score": _score_eer(fused, tr)},
            "random_eer": {"match_score": _score_eer(match, tr, "random"),
                           "fused_score": _score_eer(fused, tr, "random")},
            "match_score_at_threshold": _at(match, tr, match.threshold),
            "fused_score_at_threshold": _at(fused, tr, fused.threshold),
        }
    return row


def format_fused_table(rows: list[dict]) -> str:
    """One row per (left-out set, K): the fold's match score and fused score on the same trials."""
    lines = ["| left-out set (fold's w, threshold) | pad | K | writers | skilled EER classic / learned / match "
             "score / fused score | random EER match score / fused score | fold's threshold, match score: FRR / "
             "skilled FAR | fold's threshold, fused score: FRR / skilled FAR |",
             "|---|---|---:|---:|---|---|---|---|"]
    last = None
    for row in rows:
        for i, (k, c) in enumerate(sorted(row["k"].items())):
            e, r, a, b = c["eer"], c["random_eer"], c["match_score_at_threshold"], c["fused_score_at_threshold"]
            label = f"{row['left_out']} ({row['mix_learned']:.2f}, {row['threshold']:.3f})"
            label, last = ("" if label == last else label), label
            pad = row.get("pad", "as recorded") if i == 0 else ""
            lines.append(f"| {label} | {pad} | {k} | {c['writers']} | {e['classic']:.2f} / {e['learned']:.2f} / "
                         f"{e['match_score']:.2f} / {e['fused_score']:.2f} | "
                         f"{r['match_score']:.2f} / {r['fused_score']:.2f} | {a['frr']:.1f} / {a['far_skilled']:.1f} | "
                         f"{b['frr']:.1f} / {b['far_skilled']:.1f} |")
    return "\n".join(lines)
