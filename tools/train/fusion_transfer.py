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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.fusion import Fusion
from tools.metrics import equal_error_rate
from tools.train.fusion_fit import FIT_KS, FIT_SETS, TrialDistances, fit_mixing, set_trials


def _eer(td: TrialDistances, col: np.ndarray) -> float:
    g, s = col[td.kinds == "genuine"], col[td.kinds == "skilled"]
    return round(100.0 * equal_error_rate(g, s)[0], 2) if g.size and s.size else float("nan")


def operating_point(td: TrialDistances, fusion: Fusion, threshold: float) -> dict[str, float]:
    """FRR and skilled FAR (%) of the fused match rate at ``threshold`` over ``td``'s trials."""
    rate = np.array([fusion.match_rate(r) for r in td.distances])
    g, s = rate[td.kinds == "genuine"], rate[td.kinds == "skilled"]
    return {"frr": round(100.0 * float(np.mean(g < threshold)), 1) if g.size else float("nan"),
            "far_skilled": round(100.0 * float(np.mean(s >= threshold)), 1) if s.size else float("nan")}


def leave_one_set_out(data_root: Path, model_path: Path, shipped: Fusion, cache: Path, trials: int = 10,
                      ks: tuple[int, ...] = (1, 5)) -> dict:
    """The report: one entry per left-out set with forgeries in its test writers (module doc)."""
    val_trials = set_trials(data_root, model_path, cache, trials, FIT_KS)
    test_trials = set_trials(data_root, model_path, cache, trials, ks, split="test")
    val = {fmt: {n: td for n, td in val_trials.items() if n.startswith(f"{fmt} K=")} for _, fmt in FIT_SETS}
    test = {fmt: {k: test_trials[f"{fmt} K={k}"] for k in ks if f"{fmt} K={k}" in test_trials}
            for _, fmt in FIT_SETS}
    return {"model": model_path.name, "shipped_fusion": {"weights": list(shipped.weights), "bias": shipped.bias,
                                                         "threshold": shipped.threshold},
            "trials_per_writer": trials, "split": "test", "sets": transfer_rows(val, test, shipped)}


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
