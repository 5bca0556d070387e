"""Fit ``fusion.json`` on writers the learned model never saw: the *validation* writers.

Method (a single mixing weight, not a free logistic regression):

1. Scale: each verifier's log user-normalised distance is divided by its standard deviation over
   the validation *genuine* trials, so the two scores are comparable before mixing (for any K).
2. Mix: ``s = (1 − w)·log d_classic/σ_c + w·log d_learned/σ_l`` with ``w`` on a grid in [0, 1].
   The criterion is the validation skilled EER of ``s`` per (set, K) group, averaged with each
   group weighted by its writers with forgeries: the writer, not the trial, is the unit of
   evidence (a set with one such writer cannot tip the choice).
3. Conservative rule (the "one standard error" rule): the smallest learned weight whose
   criterion is within one standard error of the best, the standard error from a bootstrap over
   writers. The classic verifier is the incumbent; the learned one gets weight only as far as
   the validation writers show it earns it beyond their own noise (about half a point).
4. Calibrate: ``p(genuine) = σ(b − a·s)`` by a two-parameter logistic regression (genuine vs
   skilled + random, classes balanced) on the K = 5 trials (the kiosk enrolls 5 references),
   written in the unchanged ``fusion.json`` form ``σ(b + Σ w_i log d_i)``; the threshold is the
   mean of each set's K = 5 skilled-EER point (each set weighted equally, as the classic and
   match-score thresholds are).

A free logistic regression on thousands of trials treats them as independent, while they come
from a few dozen writers: it fitted the validation writers' quirks (the shipped fusion before this
rated the learned score 1.6× the classic one and lost to DTW alone on SUSIG-Visual test writers).

The trials are the evaluator's own (``random-refs``, the same draws, normalisation and questioned
samples as ``sigkiosk eval online``): every validation writer of every pen set, K = 1 **and** K = 5,
pooled into one fit, so one fusion serves every K and every device. Training writers are never
used: the student was trained on them and its distances there are optimistic, so a fusion fitted on
them would over-rate it.

Per-trial distance pairs are cached under ``.cache/fusion/`` (git-ignored), keyed by the model's and
the data's content, because the learned provider is slow on a shared CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np

from models._assets import FUSED_SCORE_FILE, FUSION_FILE
from models.classic import ClassicConfig
from models.enrollment import EnrollmentPolicy
from models.fusion import Fusion
from models.global_features import Spread
from models.learned import config_path
from models.match_score import CLASSIC, LEARNED, ScoreModel
from models.match_score import SHIPPED as SHIPPED_MATCH_SCORE
from tools.datasets import load_online
from tools.datasets.types import Dataset, OnlineSample
from tools.evaluate import (
    ClassicProvider,
    DistanceProvider,
    learned_provider,
    measure_trials,
    plan,
    score_plans_multi,
)
from tools.metrics import equal_error_rate
from tools.train.data import DEFAULT_SETS
from tools.train.score_fit import Trials, design, operating_threshold

log = logging.getLogger(__name__)

#: The pen sets whose validation writers the fusion is fitted on: every set the student trains on.
FIT_SETS: tuple[tuple[str, str], ...] = DEFAULT_SETS
FIT_KS: tuple[int, ...] = (1, 5)
#: References a kiosk enrolls: the fusion is calibrated and thresholded at it.
OPERATING_K = EnrollmentPolicy().references
KINDS: tuple[str, ...] = ("genuine", "skilled", "random")


@dataclass(frozen=True)
class TrialDistances:
    """One evaluation's trials: user-normalised distances (n × verifiers), kind and writer of each."""

    distances: np.ndarray  # (n, 2) float64: classic, learned
    kinds: np.ndarray  # (n,) str: genuine | skilled | random
    writers: np.ndarray  # (n,) str

    def of(self, kind: str) -> np.ndarray:
        return self.distances[self.kinds == kind]


def trial_distances(dataset: Dataset[OnlineSample], references: int, trials: int, providers: list[DistanceProvider],
                    seed: int = 0) -> TrialDistances:
    """The evaluator's trials of ``dataset`` (already split) as aligned distance rows."""
    plans, _ = plan(dataset, "random-refs", references, trials, seed)
    parts = score_plans_multi(plans, providers)
    rows: list[tuple[float, ...]] = []
    kinds: list[str] = []
    writers: list[str] = []
    for kind in KINDS:
        first: dict[str, list[float]] = getattr(parts[0], kind)
        for w, vals in first.items():
            cols = [getattr(p, kind)[w] for p in parts]
            rows.extend(zip(*cols))
            kinds.extend([kind] * len(vals))
            writers.extend([w] * len(vals))
    return TrialDistances(np.asarray(rows, dtype=np.float64).reshape(-1, len(providers)),
                          np.asarray(kinds), np.asarray(writers))


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: How a pen set is read (``tools.datasets.load_online``; :func:`refit` reads each set once).
Loader = Callable[[Path, str], Dataset[OnlineSample]]


def _first_forged(ds: Dataset[OnlineSample], max_writers: int | None) -> Dataset[OnlineSample]:
    """``ds`` with, given ``max_writers``, only its first writers that have skilled forgeries (a
    quick run's smoke test: few writers, but each with every kind of trial)."""
    if max_writers is None:
        return ds
    ws = [w for w in sorted(ds.writers) if ds.skilled(w)][:max_writers]
    return Dataset(name=ds.name, writers={w: ds.writers[w] for w in ws}, skipped=list(ds.skipped))


def cached_trial_distances(data_root: Path, rel: str, fmt: str, split: str, references: int, trials: int,
                           model_path: Path, cache: Path, seed: int = 0,
                           max_writers: int | None = None, load: Loader = load_online) -> TrialDistances | None:
    """:func:`trial_distances` of one set and split (its first ``max_writers`` writers with
    forgeries, if given), cached; ``None`` if no writer can be evaluated."""
    ds_path = data_root / rel
    # The model and its config (prior) decide the learned distances, the classic config (its prior
    # normalises the classic ones: a changed prior must not reuse old scores); file names and sizes
    # the data.
    listing = sorted((str(p.relative_to(ds_path)), p.stat().st_size) for p in ds_path.rglob("*") if p.is_file())
    key = hashlib.sha256(json.dumps([_sha(model_path), _sha(config_path(model_path)), repr(ClassicConfig()), listing,
                                     fmt, split, references, trials, seed, max_writers]).encode()).hexdigest()[:16]
    f = cache / f"{fmt}-{split}-k{references}-t{trials}-{key}.npz"
    if f.exists():
        z = np.load(f)
        if z["distances"].size == 0:
            return None
        return TrialDistances(z["distances"], z["kinds"], z["writers"])
    ds = _first_forged(load(ds_path, fmt).subset(split), max_writers)  # type: ignore[arg-type]
    providers: list[DistanceProvider] = [ClassicProvider(), learned_provider(model_path)]
    plans, _ = plan(ds, "random-refs", references, trials, seed)
    td = trial_distances(ds, references, trials, providers, seed) if plans else None
    cache.mkdir(parents=True, exist_ok=True)
    # An empty file remembers "no writer can be evaluated" too.
    t = td or TrialDistances(np.zeros((0, 2)), np.zeros(0, dtype=str), np.zeros(0, dtype=str))
    np.savez(f, distances=t.distances, kinds=t.kinds, writers=t.writers)
    return td


def set_trials(data_root: Path, model_path: Path | Mapping[str, Path], cache: Path, trials: int = 10,
               ks: tuple[int, ...] = FIT_KS, split: str = "validate",
               max_writers: int | None = None, load: Loader = load_online) -> dict[str, TrialDistances]:
    """Every ``split`` writer's trials (validation writers unless told), per ``"<format> K=<k>"``.
    ``model_path`` a mapping (set → learned model): each set measured with its own model, the sets
    it does not name left out (the cross-device protocol: :func:`fold_models_of`)."""
    from tools.train.loop import progress

    models = model_path if isinstance(model_path, Mapping) else {fmt: model_path for _, fmt in FIT_SETS}
    sets = [(rel, fmt) for rel, fmt in FIT_SETS if fmt in models]
    out = {}
    with progress(len(sets) * len(ks), f"fusion: {split} trials", leave=True) as bar:
        for rel, fmt in sets:
            for k in ks:
                bar.set_postfix_str(f"{fmt} K={k}")
                td = cached_trial_distances(data_root, rel, fmt, split, k, trials, models[fmt], cache,
                                            max_writers=max_writers, load=load)
                if td is not None:
                    out[f"{fmt} K={k}"] = td
                    log.info("%s K=%d %s: %d trials", fmt, k, split, len(td.kinds))
                bar.update(1)
    return out


def fold_models_of(fold_models: Mapping[str, Path]) -> dict[str, Path]:
    """The cross-device protocol's learned models: for every pen set, the student trained without
    it (``sigkiosk train online --leave-out SET``), checked to exist and to name every set once."""
    names = {fmt for _, fmt in FIT_SETS}
    if set(fold_models) != names:
        missing, unknown = sorted(names - set(fold_models)), sorted(set(fold_models) - names)
        raise ValueError("the cross-device choice needs a student per left-out pen set"
                         + (f"; missing: {', '.join(missing)}" if missing else "")
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    for fmt, path in fold_models.items():
        for f in (Path(path), config_path(Path(path))):
            if not f.is_file():
                raise FileNotFoundError(f"fold model of {fmt}: {f} not found (`sigkiosk train online --leave-out {fmt}`)")
    return {fmt: Path(path) for fmt, path in fold_models.items()}


def _fold_record(fold_models: Mapping[str, Path]) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for fmt, path in fold_models.items():
        run = path.parent / "tsgatr.run.json"
        command = json.loads(run.read_text()).get("command") if run.is_file() else None
        out[fmt] = {"model": str(path), "sha256": _sha(path), "command": command}
    return out


#: Mixing weights tried for the learned verifier (0 = classic only, 1 = learned only).
MIX_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class MixingFit:
    """The chosen fusion and how it was chosen (all on validation writers)."""

    fusion: Fusion
    mix: float  # the learned verifier's weight in the scaled log-distance mix
    best_mix: float  # the weight with the lowest criterion (before the one-SE rule)
    scales: tuple[float, float]  # σ of log distance over validation genuine trials, per verifier
    criterion: tuple[float, ...]  # writer-weighted mean skilled EER (%) per MIX_GRID point
    criterion_se: float  # bootstrap standard error of the criterion at best_mix
    groups: dict[str, dict[str, float | None]]  # per (set, K): writers and skilled EERs of classic/learned/fused

    def record(self) -> dict:
        return {
            "method": "mixing weight on scaled log distances, one-standard-error rule toward classic",
            "mix_learned": self.mix, "best_mix_learned": self.best_mix,
            "scales": list(self.scales), "grid": list(MIX_GRID),
            "criterion_skilled_eer": [round(c, 3) for c in self.criterion],
            "criterion_se": round(self.criterion_se, 3),
            "weights": list(self.fusion.weights), "bias": self.fusion.bias, "threshold": self.fusion.threshold,
            "validation": self.groups,
        }


def _eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    return 100.0 * equal_error_rate(genuine, impostor)[0]


@dataclass(frozen=True)
class _Group:
    logd: np.ndarray  # (n, 2) scaled log distances
    genuine: dict[str, np.ndarray]  # writer → row indices
    skilled: dict[str, np.ndarray]
    weight: int  # writers with skilled forgeries


def _group(td: TrialDistances, scales: np.ndarray) -> _Group:
    logd = np.log(np.maximum(td.distances, 1e-6)) / scales
    by = {kind: {str(w): np.flatnonzero((td.writers == w) & (td.kinds == kind)) for w in np.unique(td.writers)}
          for kind in ("genuine", "skilled")}
    weight = sum(1 for v in by["skilled"].values() if v.size)
    return _Group(logd, by["genuine"], by["skilled"], weight)


def _criterion(groups: list[_Group], writers: list[list[str]]) -> np.ndarray:
    """Writer-weighted mean skilled EER (%) per grid weight, over the given writers of each group."""
    total, weight = np.zeros(len(MIX_GRID)), 0.0
    for g, ws in zip(groups, writers):
        gi = np.concatenate([g.genuine[w] for w in ws])
        si = np.concatenate([g.skilled[w] for w in ws])
        if not gi.size or not si.size:
            continue  # a bootstrap draw without a forged writer: the group sits this one out
        eers = [_eer(g.logd[gi] @ (1 - m, m), g.logd[si] @ (1 - m, m)) for m in MIX_GRID]
        total += g.weight * np.asarray(eers)
        weight += g.weight
    return total / weight


def fit_mixing(parts: dict[str, TrialDistances], names: tuple[str, str] = ("classic", "learned"),
               boot: int = 200, seed: int = 0, operating_k: int = OPERATING_K) -> MixingFit:
    """The fusion of two verifiers' distances from validation trials per (set, K) group (see module
    doc). Groups are named ``"<set> K=<k>"``; the calibration and threshold use those of
    ``operating_k`` (all groups if none is)."""
    from sklearn.linear_model import LogisticRegression

    if any(td.distances.shape[1] != 2 for td in parts.values()):
        raise ValueError("the mixing fusion combines exactly two verifiers")
    genuine_log = np.log(np.maximum(np.vstack([td.of("genuine") for td in parts.values()]), 1e-6))
    if len(genuine_log) < 2:
        raise ValueError("need validation genuine trials to scale the distances")
    scales = genuine_log.std(axis=0)
    if (scales <= 0).any():
        raise ValueError(f"a verifier's validation distances do not vary: scales {scales}")
    groups = [_group(td, scales) for td in parts.values()]
    if not any(g.weight for g in groups):
        raise ValueError("no validation writer has skilled forgeries: cannot choose the fusion")
    all_writers = [sorted(g.genuine) for g in groups]
    crit = _criterion(groups, all_writers)
    best = int(np.argmin(crit))
    rng = np.random.default_rng(seed)
    reps = np.array([
        _criterion(groups, [list(rng.choice(ws, size=len(ws), replace=True)) for ws in all_writers])
        for _ in range(boot)
    ])
    se = float(reps[:, best].std())
    chosen = next(i for i in range(len(MIX_GRID)) if crit[i] <= crit[best] + se)
    mix = MIX_GRID[chosen]

    # Calibration of the mixed score: p(genuine) = σ(b − a·s), genuine vs every forgery, balanced,
    # on the trials with the kiosk's number of references. Pooled over K = 1 and 5 the threshold sat
    # where K = 1's larger distances put it: at K = 5 it let 17 % of a left-out set's skilled
    # forgeries through at 0.6 % FRR (`sigkiosk train fusion-transfer`).
    mixed = {td_name: np.log(np.maximum(td.distances, 1e-6)) / scales @ (1 - mix, mix) for td_name, td in
             parts.items()}
    at_k = [n for n in parts if n.endswith(f" K={operating_k}")] or list(parts)
    gen = np.concatenate([mixed[n][parts[n].kinds == "genuine"] for n in at_k])
    imp = np.concatenate([mixed[n][parts[n].kinds != "genuine"] for n in at_k])
    lr = LogisticRegression(C=1e4, class_weight="balanced", max_iter=1000)
    lr.fit(np.concatenate([gen, imp])[:, None], np.concatenate([np.ones(len(gen)), np.zeros(len(imp))]))
    slope, bias = -float(lr.coef_[0][0]), float(lr.intercept_[0])
    if slope <= 0:
        raise ValueError("the mixed distance does not separate genuine from forged validation trials")
    weights = (-slope * (1 - mix) / float(scales[0]), -slope * mix / float(scales[1]))
    # Operating point: the mean over sets of each set's skilled-EER threshold of the fused distance
    # (−logit), each set weighted equally as the classic and match-score thresholds are, as a match rate.
    per_set = [equal_error_rate(slope * mixed[n][parts[n].kinds == "genuine"] - bias,
                                slope * mixed[n][parts[n].kinds == "skilled"] - bias)[1]
               for n in at_k if (parts[n].kinds == "skilled").any() and (parts[n].kinds == "genuine").any()]
    dist_thr = float(np.mean(per_set)) if per_set else equal_error_rate(slope * gen - bias, slope * imp - bias)[1]
    fusion = Fusion(names=tuple(names), weights=tuple(float(w) for w in weights), bias=bias,
                    threshold=1.0 / (1.0 + math.exp(dist_thr)))

    report: dict[str, dict[str, float | None]] = {}
    for (name, td), g in zip(parts.items(), groups):
        kd = td.kinds
        fused = np.array([fusion.distance(r) for r in td.distances])
        report[name] = {
            "writers": int(len(g.genuine)), "writers_with_forgeries": g.weight,
            "classic": round(_eer(td.of("genuine")[:, 0], td.of("skilled")[:, 0]), 3) if g.weight else None,
            "learned": round(_eer(td.of("genuine")[:, 1], td.of("skilled")[:, 1]), 3) if g.weight else None,
            "fused": round(_eer(fused[kd == "genuine"], fused[kd == "skilled"]), 3) if g.weight else None,
        }
    return MixingFit(fusion=fusion, mix=mix, best_mix=MIX_GRID[best], scales=(float(scales[0]), float(scales[1])),
                     criterion=tuple(float(c) for c in crit), criterion_se=se, groups=report)


# -- the fused score: the match score with the learned distance mixed in ---------------------------


def compose_fused(match: ScoreModel, mix: float, scales: tuple[float, float]) -> ScoreModel:
    """The match score ``match`` with its classic distance input replaced by the mix of the two
    scaled log distances, back on the classic one's scale:
    ``(1 − mix)·log d_classic + mix·(σ_c/σ_l)·log d_learned``, written as two inputs (classic,
    learned) of the same model. Every other weight, the bias and the features are ``match``'s; both
    distance weights are ``match``'s classic weight times a share, so they stay <= 0 (monotone).
    The threshold is left to :func:`fit_fused_score`."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix {mix} is not in [0, 1]")
    if match.uses_learned:
        raise ValueError("the match score already takes a learned distance")
    ratio = scales[0] / scales[1]
    c0, s0, b0 = match.centre[0], match.scale[0], match.weights[0]
    # b0·((1−m)·x_c + m·r·x_l − c0)/s0 = b0(1−m)·(x_c − c0)/s0 + b0·m·(x_l − c0/r)/(s0/r)
    return ScoreModel(match.features, match.spread,
                      np.concatenate(([c0, c0 / ratio], match.centre[1:])),
                      np.concatenate(([s0, s0 / ratio], match.scale[1:])),
                      np.concatenate(([b0 * (1.0 - mix), b0 * mix], match.weights[1:])),
                      match.bias, threshold=match.threshold, distances=(CLASSIC, LEARNED))


def score_eer(model: ScoreModel, tr: Trials, kind: str = "skilled") -> float:
    """The EER (%) of ``model``'s score between ``tr``'s genuine trials and its ``kind`` ones
    (NaN without both)."""
    g, f = design(model, tr, ("genuine",))[0], design(model, tr, (kind,))[0]
    return _eer(-model.logit(g), -model.logit(f)) if len(g) and len(f) else float("nan")


def dataset_trials(ds: Dataset[OnlineSample], learned: DistanceProvider, spread: Spread,
                   references: int = OPERATING_K, trials: int = 10, seed: int = 0) -> Trials | None:
    """The evaluator's trials of ``ds`` with ``references`` references (``random-refs``): classic
    and learned user-normalised distances and the global features' deviations
    (``tools.evaluate.measure_trials``); ``None`` if no writer can be evaluated."""
    plans, _ = plan(ds, "random-refs", references, trials, seed)
    return measure_trials(plans, ClassicProvider(), spread, learned)[0] if plans else None


def fused_trials(data_root: Path, model_path: Path, spread: Spread, split: str = "validate",
                 references: int = OPERATING_K, trials: int = 10, seed: int = 0,
                 max_writers: int | None = None, load: Loader = load_online) -> dict[str, Trials]:
    """Per pen set, :func:`dataset_trials` of its ``split`` writers (the first ``max_writers``
    with forgeries, if given) with the learned model ``model_path``."""
    learned = learned_provider(model_path)
    out: dict[str, Trials] = {}
    for rel, fmt in FIT_SETS:
        ds = _first_forged(load(data_root / rel, fmt).subset(split), max_writers)  # type: ignore[arg-type]
        tr = dataset_trials(ds, learned, spread, references, trials, seed)
        if tr is not None:
            out[fmt] = tr
    return out


def fit_fused_score(match: ScoreModel, fit: MixingFit, trials_by_set: dict[str, Trials],
                    match_sha256: str | None = None) -> ScoreModel:
    """The fused verifier's model: ``match`` with the learned distance mixed in at the mixing
    fusion's weight (:func:`fit_mixing`: chosen on validation writers by the one-standard-error
    rule), at ``match``'s operating point.

    Not at the validation writers' own skilled-EER points (``trials_by_set``, recorded): the
    student was chosen on these writers (best of three runs), its distances there are far better
    than on writers it never met (SUSIG-Visual K = 5: 1.3 % against 5.7 % on test writers), so
    their EER points sit on the lenient side (logit -1.1 against the match score's -0.4). The
    mixed distance is on the classic distance's scale and a genuine signature's learned distance,
    user-normalised, is about 1 like its classic one, so the match score's threshold, chosen on
    the train + validate writers of every set, keeps the genuine side where it was."""
    fused = compose_fused(match, fit.mix, fit.scales)
    threshold = match.threshold
    _, per_set = operating_threshold(fused, trials_by_set)

    def eer(model: ScoreModel, tr: Trials) -> float | None:
        e = score_eer(model, tr)
        return None if math.isnan(e) else round(e, 3)

    record = {
        "method": "the match score's distance input mixed with the learned distance at the mixing fusion's weight, "
                  "at the match score's threshold",
        "validation_eer_point_logit_not_used": "the validation writers' own skilled-EER points (K = 5), lenient: "
                                               "the student was chosen on these writers",
        "match_score": {"command": dict(match.record).get("command"), "sha256": match_sha256},
        "mix_learned": fit.mix, "scales": list(fit.scales),
        "per_set_threshold_logit": {k: round(v, 4) for k, v in per_set.items()},
        "validation_skilled_eer": {name: {"match_score": eer(match, tr), "fused_score": eer(fused, tr)}
                                   for name, tr in trials_by_set.items()},
    }
    return replace(fused, threshold=threshold, record=record)


def refit(data_root: Path, model_path: Path, out: Path, cache: Path, trials: int = 10,
          match_path: Path | None = None, fold_models: Mapping[str, Path] | None = None,
          max_writers: int | None = None) -> dict:
    """Fit the fusion on the pooled validation trials; write ``fusion.json``, the fused score
    (``fused_score.json``: the match score ``match_path``, default the shipped one, with the learned
    distance mixed in) and ``fusion.fit.json``.

    ``fold_models`` (one per pen set, :func:`fold_models_of`): the fusion is chosen on the
    cross-device protocol instead: each set's validation writers measured with the student that
    never saw the set, as the shipped student meets a new tablet's customers. Without them each
    set's validation writers are measured with ``model_path``, which trained on the same tablets:
    in-distribution, and the learned distance looks better there than on a new pad."""
    for f in (model_path, config_path(model_path)):
        if not f.is_file():
            raise FileNotFoundError(f"learned model file {f} not found (train it with `sigkiosk train online`)")
    folds = fold_models_of(fold_models) if fold_models is not None else None
    # Each set is read once (reading is a third of a quick run's fusion), not once per K and use.
    load = cast(Loader, functools.cache(load_online))
    parts = set_trials(data_root, folds if folds is not None else model_path, cache, trials, max_writers=max_writers,
                       load=load)
    if not parts:
        raise ValueError(f"no validation writer under {data_root} can be evaluated")
    fit = fit_mixing(parts)
    match_path = match_path or SHIPPED_MATCH_SCORE
    match = ScoreModel.load(match_path)
    fused = fit_fused_score(match, fit, fused_trials(data_root, model_path, match.spread, trials=trials,
                                                     max_writers=max_writers, load=load),
                            _sha(match_path))
    out.mkdir(parents=True, exist_ok=True)
    fit.fusion.save(out / FUSION_FILE)
    fused.save(out / FUSED_SCORE_FILE)
    record = fit.record()
    record.update(model=model_path.name, trials_per_writer=trials, split="validate", ks=list(FIT_KS),
                  max_writers_per_set=max_writers,
                  operating_k=OPERATING_K,
                  sets=[fmt for _, fmt in FIT_SETS],
                  chosen_on=("cross-device: each set's validation writers measured with the student trained "
                             "without the set (fold_models)" if folds is not None else
                             f"every set's validation writers measured with {model_path.name} (in-distribution: "
                             "it trained on the same tablets)"),
                  fold_models=_fold_record(folds) if folds is not None else None,
                  fused_score={**fused.record, "threshold": fused.threshold})
    (out / "fusion.fit.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
