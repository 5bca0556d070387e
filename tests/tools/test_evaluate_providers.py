"""The evaluator's verifier abstraction: the classic path unchanged, providers aligned for fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.classic import ClassicConfig, signature_features
from tools.datasets.types import Dataset, Label, OnlineSample
from tools.evaluate import (
    ClassicProvider,
    EmbeddingProvider,
    Scores,
    combine_scores,
    evaluate,
    plan,
    score_plans,
    score_plans_multi,
)
from tools.synth import make_population


def _dataset() -> Dataset[OnlineSample]:
    pop = make_population(n_writers=4, n_genuine=8, n_forgeries=3, seed=2)
    writers = {}
    for wi, (gen, forg) in enumerate(pop.values()):
        w = f"{wi:03d}"
        ss = [OnlineSample(w, Label.GENUINE, t, Path(f"/synth/{w}/g{i}"), i) for i, t in enumerate(gen)]
        ss += [OnlineSample(w, Label.SKILLED, t, Path(f"/synth/{w}/f{i}"), i) for i, t in enumerate(forg)]
        writers[w] = ss
    return Dataset(name="synth", writers=writers)


def test_classic_provider_equals_classic_scores() -> None:
    plans, _ = plan(_dataset(), references=3, trials=2)
    a = score_plans(plans)
    b = score_plans_multi(plans, [ClassicProvider(ClassicConfig())])[0]
    for kind in ("genuine", "skilled", "random"):
        np.testing.assert_array_equal(Scores.pooled(getattr(a, kind)), Scores.pooled(getattr(b, kind)))
    assert Scores.pooled(a.skilled).mean() > Scores.pooled(a.genuine).mean()


def test_fused_scores_are_aligned_combinations() -> None:
    cfg = ClassicConfig()
    plans, _ = plan(_dataset(), references=3, trials=2)
    second = EmbeddingProvider(
        embed=lambda s: signature_features(s.trajectory, cfg)[:, :3], prior=cfg.prior, band=cfg.band, name="xyp"
    )
    parts = score_plans_multi(plans, [ClassicProvider(cfg), second])
    fused = combine_scores(parts, lambda v: float(v[0] + 10 * v[1]))
    for kind in ("genuine", "skilled", "random"):
        np.testing.assert_allclose(
            Scores.pooled(getattr(fused, kind)),
            Scores.pooled(getattr(parts[0], kind)) + 10 * Scores.pooled(getattr(parts[1], kind)),
        )
    rep = evaluate(_dataset(), references=3, trials=2, providers=[ClassicProvider(cfg), second],
                   combine=lambda v: float(v.sum()), verifier="fused").report
    assert rep["verifier"] == "fused" and set(rep["components"]) == {"classic", "xyp"}


def test_match_score_trials_are_the_kiosk_verifiers_scores() -> None:
    """``--verifier match-score`` scores each trial exactly as the kiosk's MatchScoreVerifier does
    (same classic distance, same global features against the drawn references, same model), so
    its EERs are the device's; the classic figures of the same trials come with it."""
    from models.match_score import SHIPPED, ScoreModel
    from models.match_verifier import MatchScoreVerifier
    from tools.evaluate import ClassicProvider, score_plans_match

    ds = _dataset()
    plans, _ = plan(ds, references=3, trials=2)
    model = ScoreModel.load(SHIPPED)
    match, classic = score_plans_match(plans, ClassicProvider(), model)
    plain = score_plans(plans)
    for kind in ("genuine", "skilled", "random"):
        np.testing.assert_array_equal(Scores.pooled(getattr(classic, kind)), Scores.pooled(getattr(plain, kind)))
    kiosk = MatchScoreVerifier()
    p = plans[0]
    refs = [p.candidates[i].trajectory for i in p.draws[0]]
    template = kiosk.enroll(refs)
    for kind, questioned in (("skilled", p.skilled), ("random", p.random)):
        got = getattr(match, kind)[p.writer][: len(questioned)]
        want = [kiosk.verify(template, q.trajectory).distance for q in questioned]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    rep = evaluate(ds, references=3, trials=2, match_model=model, verifier="match-score").report
    assert rep["verifier"] == "match-score" and set(rep["components"]) == {"classic"}
    assert rep["skilled"]["genuine_trials"] == rep["components"]["classic"]["genuine_trials"]


def test_fused_trials_are_the_kiosk_fused_verifiers_scores(tmp_path: Path) -> None:
    """``--verifier fused`` scores each trial as the kiosk's FusedVerifier does: the shipped fused
    score (classic and learned distances, global features) trial for trial; and a model folder
    with a two-distance fusion.json only (an older bundle) is evaluated as that fusion."""
    import shutil

    from models import shipped_assets
    from models.pen import make_verifier
    from tools.evaluate import verifier_setup

    ds = _dataset()
    plans, _ = plan(ds, references=3, trials=2)
    setup = verifier_setup("fused")
    assert setup.match_model is not None and setup.match_model.uses_learned and setup.combine is None
    result = setup.evaluate(ds, "fused", references=3, trials=2)
    assert set(result.report["components"]) == {"classic", "learned"}
    kiosk = make_verifier("fused", ClassicConfig().threshold)
    p = plans[0]
    template = kiosk.enroll([p.candidates[i].trajectory for i in p.draws[0]])
    got = result.scores.skilled[p.writer][: len(p.skilled)]
    want = [kiosk.verify(template, q.trajectory).distance for q in p.skilled]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    old = tmp_path / "bundle"
    old.mkdir()
    for name in ("tsgatr_student_int8.tflite", "tsgatr_student_int8.config.json", "fusion.json"):
        shutil.copy(shipped_assets() / name, old / name)
    legacy = verifier_setup("fused", old / "tsgatr_student_int8.tflite")
    assert legacy.match_model is None and legacy.combine is not None
