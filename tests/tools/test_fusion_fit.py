"""The shipped pen fusion's fitter: one mixing weight on scaled log distances, chosen over writers
with the one-standard-error rule toward the classic verifier, then calibrated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import shipped_assets
from models.fusion import Fusion
from tools.train.fusion_fit import MIX_GRID, TrialDistances, fit_mixing

ROOT = Path(__file__).resolve().parents[2]
ASSETS = shipped_assets()


def group(rng: np.random.Generator, writers: int, *, classic_gap: float, learned_gap: float,
          per_writer: int = 12, prefix: str = "w") -> TrialDistances:
    """Synthetic trials: log distances ~ N(0, 0.2) for genuine, shifted by ``*_gap`` for skilled
    forgeries (a larger gap: a better verifier), plus random forgeries far away for both."""
    rows, kinds, names = [], [], []
    for w in range(writers):
        for kind, shift in (("genuine", (0.0, 0.0)), ("skilled", (classic_gap, learned_gap)),
                            ("random", (1.5, 1.5))):
            rows.append(np.exp(rng.normal(shift, 0.2, size=(per_writer, 2))))
            kinds += [kind] * per_writer
            names += [f"{prefix}{w}"] * per_writer
    return TrialDistances(np.vstack(rows), np.array(kinds), np.array(names))


def test_useless_learned_verifier_gets_no_weight() -> None:
    rng = np.random.default_rng(0)
    parts = {f"set{i} K=5": group(rng, 10, classic_gap=0.5, learned_gap=0.0) for i in range(2)}
    fit = fit_mixing(parts, boot=40)
    assert fit.mix <= 0.1
    assert fit.fusion.weights[0] < fit.fusion.weights[1] <= 0.0


def test_clearly_better_learned_verifier_gets_most_weight() -> None:
    rng = np.random.default_rng(1)
    parts = {f"set{i} K=1": group(rng, 10, classic_gap=0.1, learned_gap=0.7) for i in range(2)}
    fit = fit_mixing(parts, boot=40)
    assert fit.mix >= 0.5
    assert fit.fusion.weights[1] < fit.fusion.weights[0] <= 0.0


def test_one_writer_cannot_tip_the_choice() -> None:
    rng = np.random.default_rng(2)
    parts = {
        "big K=5": group(rng, 12, classic_gap=0.6, learned_gap=0.2),
        # One writer on whom the learned verifier is perfect and the classic one useless, with many trials.
        "tiny K=5": group(rng, 1, classic_gap=0.0, learned_gap=1.2, per_writer=400, prefix="t"),
    }
    fit = fit_mixing(parts, boot=40)
    assert fit.mix <= 0.25


def test_one_standard_error_rule_and_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    parts = {f"set{i} K={k}": group(rng, 8, classic_gap=0.5, learned_gap=0.5) for i in range(2) for k in (1, 5)}
    fit = fit_mixing(parts, boot=40)
    crit = np.asarray(fit.criterion)
    chosen, best = MIX_GRID.index(fit.mix), MIX_GRID.index(fit.best_mix)
    assert chosen <= best and crit[chosen] <= crit[best] + fit.criterion_se
    assert crit[best] == crit.min() and fit.criterion_se > 0
    # Smaller learned weights than the chosen one are out by more than one standard error.
    assert all(c > crit[best] + fit.criterion_se for c in crit[:chosen])
    f = fit.fusion
    assert 0.0 < f.threshold < 1.0 and all(w <= 0 for w in f.weights)
    assert f.match_rate(np.array([1.0, 1.0])) > f.threshold > f.match_rate(np.array([2.0, 2.0]))
    # The stored form is the one every reader already loads.
    f.save(tmp_path / "fusion.json")
    assert Fusion.load(tmp_path / "fusion.json") == f
    rec = fit.record()
    assert rec["mix_learned"] == fit.mix and rec["weights"] == list(f.weights)
    assert set(rec["validation"]) == set(parts)


@pytest.mark.parametrize("bad, message", [
    ("three", "exactly two"),
    ("no_forgeries", "no validation writer has skilled forgeries"),
    ("constant", "do not vary"),
])
def test_bad_trials_are_refused(bad: str, message: str) -> None:
    rng = np.random.default_rng(4)
    td = group(rng, 4, classic_gap=0.5, learned_gap=0.5)
    if bad == "three":
        td = TrialDistances(np.hstack([td.distances, td.distances[:, :1]]), td.kinds, td.writers)
    elif bad == "no_forgeries":
        keep = td.kinds != "skilled"
        td = TrialDistances(td.distances[keep], td.kinds[keep], td.writers[keep])
    else:
        td = TrialDistances(np.ones_like(td.distances), td.kinds, td.writers)
    with pytest.raises(ValueError, match=message):
        fit_mixing({"x K=5": td}, boot=5)


def test_shipped_fusion_is_the_recorded_fit() -> None:
    fusion = Fusion.load(ASSETS / "fusion.json")
    rec = json.loads((ASSETS / "fusion.fit.json").read_text())
    assert rec["split"] == "validate" and rec["ks"] == [1, 5]
    assert rec["mix_learned"] in MIX_GRID and rec["mix_learned"] <= rec["best_mix_learned"]
    assert list(fusion.weights) == rec["weights"] and fusion.threshold == rec["threshold"]
    # The weights are the mixing weight over the recorded scales (one slope): the mix is what it says.
    w_c, w_l = fusion.weights
    mix = (w_l * rec["scales"][1]) / (w_c * rec["scales"][0] + w_l * rec["scales"][1])
    assert mix == pytest.approx(rec["mix_learned"])


def test_cli_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "fusion", "--model", str(tmp_path / "nope.tflite"),
         "--data", str(tmp_path), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "nope.tflite" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "fusion.json").exists()


def test_each_fold_is_fitted_without_its_left_out_set() -> None:
    """tools/train/fusion_transfer.py: where the learned verifier is clearly better on two sets and
    useless on a third, the third's fold (fitted on the other two) leans on it and the other folds
    do not see the third set's quirk; the operating point is measured at the fold's threshold."""
    from tools.train.fusion_transfer import format_table, transfer_rows

    rng = np.random.default_rng(5)
    good = {f"s{i}": {f"s{i} K=5": group(rng, 10, classic_gap=0.1, learned_gap=0.8, prefix=f"s{i}-")}
            for i in range(2)}
    odd = {"odd": {"odd K=5": group(rng, 10, classic_gap=0.8, learned_gap=0.0, prefix="o-")}}
    val = {**good, **odd}
    test = {name: {5: next(iter(parts.values()))} for name, parts in val.items()}
    shipped = Fusion(("classic", "learned"), (-1.0, -1.0), 0.0, threshold=0.5)
    rows = {r["left_out"]: r for r in transfer_rows(val, test, shipped)}
    assert rows["odd"]["mix_learned"] >= 0.5  # fitted on s0 and s1 only
    assert rows["s0"]["mix_learned"] < rows["odd"]["mix_learned"]
    odd5 = rows["odd"]["k"][5]
    # On the odd set the fold's fusion, leaning on the useless verifier, is worse than classic.
    assert odd5["eer"]["fused"] > odd5["eer"]["classic"]
    assert 0.0 <= odd5["fitted_threshold"]["frr"] <= 100.0
    assert "| odd (" in format_table({"sets": list(rows.values())})


def test_the_fused_score_is_the_match_score_on_the_mixed_distance() -> None:
    from models.global_features import FEATURE_NAMES
    from models.match_score import SHIPPED as MATCH
    from models.match_score import SHIPPED_FUSED, ScoreModel
    from tools.train.fusion_fit import compose_fused

    match = ScoreModel.load(MATCH)
    scales = (0.22, 0.20)
    rng = np.random.default_rng(0)
    d_c, d_l = np.exp(rng.normal(0.2, 0.3, (2, 50)))
    z = rng.uniform(0, 3, (50, len(FEATURE_NAMES)))
    for mix in (0.0, 0.3, 1.0):
        fused = compose_fused(match, mix, scales)
        mixed = np.exp((1 - mix) * np.log(d_c) + mix * scales[0] / scales[1] * np.log(d_l))
        np.testing.assert_allclose(fused.logit(fused.inputs(d_c, z, d_l)), match.logit(match.inputs(mixed, z)),
                                   rtol=1e-10, atol=1e-10)
        assert np.all(fused.weights <= 0)
    with pytest.raises(ValueError, match="mix"):
        compose_fused(match, 1.5, scales)
    # The shipped fused score is exactly this composition of the shipped match score, at the mix and
    # scales its record names, and at the match score's operating point.
    shipped = ScoreModel.load(SHIPPED_FUSED)
    rec = shipped.record
    again = compose_fused(match, rec["mix_learned"], tuple(rec["scales"]))
    x = shipped.inputs(d_c, z, d_l)
    np.testing.assert_allclose(shipped.logit(x), again.logit(x), atol=1e-4)
    assert shipped.threshold == pytest.approx(match.threshold, abs=1e-6)
    assert rec["mix_learned"] == json.loads((ASSETS / "fusion.fit.json").read_text())["mix_learned"]
    import hashlib

    assert rec["match_score"]["sha256"] == hashlib.sha256(MATCH.read_bytes()).hexdigest()


def test_a_fold_of_the_fused_score_is_measured_at_its_match_scores_threshold() -> None:
    """tools/train/fusion_transfer.py ``fused_fold``: constructed trials where the learned distance
    separates skilled forgeries and the classic one barely does; the fold's fused score (mixed at
    the fold's weight) beats its match score on the same trials, at the same threshold, and the
    row says what it was fitted with."""
    from models.global_features import FEATURE_NAMES
    from models.match_score import SHIPPED as MATCH
    from models.match_score import ScoreModel
    from tools.train.fusion_transfer import format_fused_table, fused_fold
    from tools.train.score_fit import Trials

    match = ScoreModel.load(MATCH)
    rng = np.random.default_rng(2)
    tr = Trials()
    for w in range(8):
        for kind, (gap_c, gap_l) in (("genuine", (0.0, 0.0)), ("skilled", (0.1, 0.9)), ("random", (1.0, 1.0))):
            for _ in range(15):
                z = np.abs(rng.normal(0.0, 1.0, len(FEATURE_NAMES)))
                tr.add(kind, f"w{w}", float(np.exp(rng.normal(gap_c, 0.2))), z, float(np.exp(rng.normal(gap_l, 0.2))))
    row = fused_fold("x", match, 0.5, (0.2, 0.2), {5: tr, 1: Trials()})
    assert list(row["k"]) == [5] and row["mix_learned"] == 0.5           # K = 1 had no forgeries: left out
    c = row["k"][5]
    assert row["threshold"] == pytest.approx(match.threshold, abs=1e-4) and c["writers"] == 8
    assert c["eer"]["fused_score"] < c["eer"]["match_score"] - 5.0
    assert c["fused_score_at_threshold"]["far_skilled"] < c["match_score_at_threshold"]["far_skilled"]
    assert "| x (0.50, " in format_fused_table([row])


def test_the_cross_device_choice_needs_a_student_per_left_out_set(tmp_path: Path) -> None:
    """``sigkiosk train fusion --fold-model SET=MODEL``: every pen set measured by the student that
    never saw it, or a clear refusal naming what is missing, before anything is measured."""
    from tools.train.fusion_fit import FIT_SETS, fold_models_of

    sets = [fmt for _, fmt in FIT_SETS]
    models = {}
    for fmt in sets:
        m = tmp_path / fmt / "student.tflite"
        m.parent.mkdir()
        m.write_bytes(b"x")
        m.with_name("student.config.json").write_text("{}")
        models[fmt] = m
    assert fold_models_of(models) == models
    with pytest.raises(ValueError, match=f"missing: {sets[-1]}"):
        fold_models_of({fmt: models[fmt] for fmt in sets[:-1]})
    with pytest.raises(ValueError, match="unknown: mcyt"):
        fold_models_of({**models, "mcyt": models[sets[0]]})
    models[sets[1]].with_name("student.config.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"fold model of {sets[1]}"):
        fold_models_of(models)
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "fusion", "--fold-model", f"{sets[0]}={models[sets[0]]}",
         "--data", str(tmp_path), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "a student per left-out pen set" in proc.stderr and "Traceback" not in proc.stderr


def test_the_shipped_mix_was_chosen_on_the_cross_device_protocol() -> None:
    """The shipped fusion's mixing weight was chosen with each set's validation writers measured
    by a student trained without that set; the record names each student by hash and command."""
    from tools.train.fusion_fit import FIT_SETS

    rec = json.loads((ASSETS / "fusion.fit.json").read_text())
    assert rec["chosen_on"].startswith("cross-device")
    folds = rec["fold_models"]
    assert set(folds) == {fmt for _, fmt in FIT_SETS}
    for fmt, fold in folds.items():
        assert len(fold["sha256"]) == 64 and f"--leave-out {fmt}" in fold["command"]
