"""The cross-device yardstick: the pen verifier measured on a tablet it was not tuned on.

``sigkiosk eval cross-device DATA_DIR`` (DATA_DIR: the shared ``online`` folder). Each shared pen
set is left out in turn. Everything the verifier fits is fitted on the *other* sets' train and
validate writers; then the left-out set's test writers (``--split validate``: its validation
writers, which is where verifier choices are to be made from now on) are measured:

* skilled and random EER, global and user-mean, with K = 1 and K = 5 references (the evaluator's
  ``random-refs`` protocol: ``tools.evaluate``; its distances, draws and metrics);
* FRR and skilled FAR of the kiosk's own verifier (``kiosk.verifier``) at the threshold that would
  ship, i.e. the one fitted without the set, and beside it at the shipped one
  (``tools.operating_point.measure``: 5 references, the next 10 genuine and all forgeries);

on the set as recorded and on **device variants** of its test writers (``models.device_variants``):
pressure removed; timestamps removed and the nominal rate assumed; resampled to 75 and 200 Hz.
Kiosk pads differ from the tuning tablets in exactly these ways. A variant that would not change a
set is left out (no timestamps to remove from NFI and the Japanese set, which have none; 200 Hz
where the set already is 200 Hz).

What is fitted, for the classic verifier (the kiosk's default):

* the user-normalisation prior: the mean within-reference statistics over K = 5 draws of the
  other sets' writers (each set weighted equally);
* the global threshold: the mean over the other sets of each set's pooled skilled-EER threshold
  at K = 5 (each set weighted equally; the shipped one, ``ClassicConfig.threshold``, is the same
  rule applied to all four sets);
* the no-pressure scale (``ClassicConfig.no_pressure_scale``): how much shorter the other sets'
  reference distances are with their pressure removed (:func:`fit_no_pressure_scale`), so that
  the prior and threshold keep their meaning on a pad without pressure.

Not refitted per fold: the feature set, the second warping path, band and preprocessing (chosen
on the train and validate writers of all four sets), and the learned model and fusion (trained on
all four sets' train writers; retraining per fold is not practical here). Their figures are therefore not part of
this yardstick yet: ``verifier: classic`` in the report.

Distances are computed once per (set, variant) and reused by every draw and both K (a memo on
the pair of feature arrays); the fit rescores stored distances with the fitted prior.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from models import path_copy
from models.classic import ClassicConfig, score_from_distances
from models.device_variants import resampled, without_pressure, without_time
from models.global_features import deviations
from models.match_score import ScoreModel
from models.pen import ClassicVerifier, make_verifier
from models.scoring import NormalisationPrior, reference_stats
from models.trajectory import DeviceInfo, Trajectory
from tools.datasets import Dataset, OnlineSample, load_online, writer_split
from tools.evaluate import (
    ClassicProvider,
    FeatureCache,
    Scores,
    WriterPlan,
    add_match_scores,
    globals_cache,
    plan,
    plan_distances,
    score_plan,
    summarise,
)
from tools.operating_point import OperatingPoint, measure
from tools.train.data import DEFAULT_SETS
from tools.train.score_fit import FitOptions, Trials, fit, fold_spread, plan_trials

log = logging.getLogger(__name__)

#: The shared pen sets: (name, folder under DATA_DIR, reader format).
#: The one list of them is the training's (``tools.train.data.DEFAULT_SETS``, under the data root).
SETS: tuple[tuple[str, str, str], ...] = tuple(
    (fmt, str(Path(rel).relative_to("online")), fmt) for rel, fmt in DEFAULT_SETS)
REFERENCES: tuple[int, ...] = (1, 5)
#: K of the fit and of the operating point: what a kiosk enrols.
FIT_K = 5
SHIPPED_THRESHOLD = ClassicConfig().threshold


@dataclass(frozen=True)
class Variant:
    """A pad that differs from the recording one: ``transform`` turns a recorded signature into
    what it would have delivered; ``applies`` says whether it changes a set recorded on ``device``."""

    key: str
    name: str
    transform: Callable[[Trajectory], Trajectory] | None
    applies: Callable[[DeviceInfo], bool]


NO_PRESSURE = Variant("no-pressure", "no pressure", without_pressure, lambda d: d.has_pressure)
VARIANTS: tuple[Variant, ...] = (
    Variant("recorded", "as recorded", None, lambda d: True),
    NO_PRESSURE,
    Variant("no-time", "no time, rate assumed", without_time, lambda d: d.time_measured),
    Variant("75hz", "75 Hz", partial(resampled, rate_hz=75.0), lambda d: True),
    Variant("200hz", "200 Hz", partial(resampled, rate_hz=200.0), lambda d: d.nominal_rate_hz != 200.0),
)


class MemoClassic:
    """The classic provider with features cached per sample and each DTW distance computed once
    per pair of feature arrays (K = 1 and K = 5 plans question the same samples)."""

    name = "classic"

    def __init__(self, config: ClassicConfig = ClassicConfig()) -> None:
        self._inner = ClassicProvider(config)
        self.config = config
        self.prior = config.prior
        self.features = FeatureCache(self._inner.features)
        self._memo: dict[tuple[int, int], float] = {}

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        key = (id(a), id(b)) if id(a) <= id(b) else (id(b), id(a))
        d = self._memo.get(key)
        if d is None:
            d = self._memo[key] = self._inner.distance(a, b)
        return d


@dataclass
class Measured:
    """One writer group's distances for each K: (plan, candidate x candidate, questioned x candidate)."""

    by_k: dict[int, list[tuple[WriterPlan, np.ndarray, dict[str, np.ndarray]]]] = field(default_factory=dict)

    def scores(self, k: int, prior: NormalisationPrior) -> Scores:
        out = Scores()
        for p, d_cc, dq in self.by_k[k]:
            score_plan(p, d_cc, dq, prior, out)
        return out


def measure_distances(dataset: Dataset[OnlineSample], ks: Sequence[int], trials: int, seed: int,
                      provider: MemoClassic | None = None) -> Measured:
    """Every distance the draws of ``ks`` references need (``provider``: pass one to reuse its
    features and distances afterwards, as the match score's operating point does)."""
    provider = provider or MemoClassic()
    out = Measured()
    for k in ks:
        plans, excluded = plan(dataset, "random-refs", k, trials, seed)
        for e in excluded:
            log.info("%s K=%d: writer left out: %s", dataset.name, k, e)
        out.by_k[k] = [(p, *plan_distances(p, provider.features, provider.distance)) for p in plans]
    return out


def population_statistics(measured: Iterable[Measured], statistics: Callable[[np.ndarray], np.ndarray],
                          k: int = FIT_K) -> np.ndarray:
    """``statistics`` of each draw's K x K reference distances, averaged over every draw of a set,
    then over the sets (a set without draws counts for nothing), rounded to 4 places."""
    per_set = []
    for m in measured:
        stats = [statistics(d_cc[np.ix_(draw, draw)]) for p, d_cc, _ in m.by_k[k] for draw in p.draws]
        if stats:
            per_set.append(np.mean(np.asarray(stats, dtype=np.float64), axis=0))
    if not per_set:
        raise ValueError("no writer to fit the normalisation prior on")
    return np.asarray(np.round(np.mean(np.array(per_set), axis=0), 4), dtype=np.float64)


def _min_and_mean(ref_distances: np.ndarray) -> np.ndarray:
    st = reference_stats(ref_distances)
    return np.array([st.min_dist, st.mean_dist])


def fit_prior(measured: Sequence[Measured], k: int = FIT_K) -> NormalisationPrior:
    """Mean within-reference statistics over every draw, per set, then the sets' mean."""
    a = population_statistics(measured, _min_and_mean, k)
    # The statistics are fitted; how strongly they count is the kiosk's (ClassicConfig).
    return NormalisationPrior(float(a[0]), float(a[1]), strength=ClassicConfig().prior.strength)


def fit_classic(measured: Mapping[str, Measured]) -> tuple[NormalisationPrior, float, dict[str, float]]:
    """What a fold fits of the classic verifier on ``measured`` (its training sets): the prior
    (:func:`fit_prior`) and the global threshold, the mean of each set's pooled skilled-EER
    threshold at K = 5 with that prior; and those per-set thresholds. On all four sets it is what
    ``ClassicConfig`` ships (``python -m tools.train.score_fit`` prints it)."""
    prior = fit_prior(list(measured.values()))
    per_set = {}
    for name, m in measured.items():
        s = summarise(m.scores(FIT_K, prior), "skilled")
        if s is not None:
            per_set[name] = float(s["threshold_global"])
    if not per_set:
        raise ValueError(f"no skilled forgeries among the writers of {', '.join(measured)}")
    return prior, float(np.mean(list(per_set.values()))), per_set


def fit_no_pressure_scale(recorded: Sequence[Measured], without: Sequence[Measured]) -> float:
    """What ``ClassicConfig.no_pressure_scale`` a fold fits: the population's reference statistics
    (:func:`population_statistics`, min and mean) as recorded over the same writers' without
    pressure (``without`` measured with ``no_pressure_scale=1``), the two ratios' mean."""
    a = population_statistics(recorded, _min_and_mean)
    b = population_statistics(without, _min_and_mean)
    return round(float(np.mean(a / b)), 3)


#: The classic configuration that measures distances without pressure as DTW gives them.
UNSCALED = ClassicConfig(no_pressure_scale=1.0)


def measure_without_pressure(dataset: Dataset[OnlineSample], trials: int, seed: int) -> Measured | None:
    """``dataset``'s K = 5 distances with its pressure removed, unscaled (what
    :func:`fit_no_pressure_scale` takes); None for a set recorded without pressure."""
    if not any(s.trajectory.device.has_pressure for ss in dataset.writers.values() for s in ss):
        return None
    return measure_distances(device_variant(dataset, NO_PRESSURE), [FIT_K], trials, seed, MemoClassic(UNSCALED))


def pick_writers(dataset: Dataset[OnlineSample], splits: set[str], limit: int | None) -> Dataset[OnlineSample]:
    """The writers of ``splits``; with ``limit``, the first ones that have skilled forgeries."""
    ws = [w for w in dataset.writers if writer_split(w) in splits]
    if limit is not None:
        ws = [w for w in ws if dataset.skilled(w)][:limit]
    return Dataset(name=f"{dataset.name}[{'+'.join(sorted(splits))}]", writers={w: dataset.writers[w] for w in ws},
                   skipped=list(dataset.skipped))


def fit_sets(data_dir: Path, names: Collection[str] | None = None, limit: int | None = None,
             reading: Callable[[str], None] = lambda name: None
             ) -> Iterator[tuple[str, Dataset[OnlineSample], Dataset[OnlineSample]]]:
    """Each shared pen set (those in ``names``, if given; ``reading`` told each name before it is
    read) as read, and its train + validate writers (``limit``: :func:`pick_writers`'): what a fold
    fits on, and the rest of what it measures."""
    for name, folder, fmt in SETS:
        if names is None or name in names:
            reading(name)
            loaded = load_online(Path(data_dir) / folder, fmt)
            yield name, loaded, pick_writers(loaded, {"train", "validate"}, limit)


def device_variant(dataset: Dataset[OnlineSample], variant: Variant) -> Dataset[OnlineSample]:
    if variant.transform is None:
        return dataset
    return Dataset(
        name=f"{dataset.name} [{variant.name}]",
        writers={w: [replace(s, trajectory=variant.transform(s.trajectory)) for s in ss] for w, ss in dataset.writers.items()},
        skipped=list(dataset.skipped),
    )


def _eer_entry(scores: Scores) -> dict[str, dict[str, float] | None]:
    out: dict[str, dict[str, float] | None] = {}
    for kind in ("skilled", "random"):
        s = summarise(scores, kind)
        out[kind] = None if s is None else {k: s[k] for k in ("eer_global", "eer_user_mean", "frr_at_far_1", "writers")}
    return out


def _op_entry(op: OperatingPoint, threshold: float) -> dict[str, float | int]:
    return {
        "threshold": round(threshold, 4),
        "frr": round(100 * op.frr, 2),
        "skilled_far": round(100 * op.skilled_far, 2),
        "genuine": op.genuine,
        "rejected": op.rejected,
        "forgeries": op.forged,
        "accepted": op.accepted,
    }


# -- the match score (models.match_score) -----------------------------------------------------------

#: ``classic``: the classic verifier alone. ``match-score``: the classic verifier and, beside it on
#: the same trials, the match score fitted per fold on the other sets (``tools/train/score_fit.py``).
VERIFIERS: tuple[str, ...] = ("classic", "match-score")


def fit_match_score(fit_data: dict[str, Measured], prior: NormalisationPrior, globals_of: FeatureCache,
                    options: FitOptions | None = None, record: dict | None = None) -> ScoreModel:
    """The match score fitted on ``fit_data``'s sets (K = 5 trials), the classic distances
    normalised with ``prior``; the population spread of the global features from the same
    writers' genuine signatures."""
    options = options or FitOptions()
    spread = fold_spread(
        ([np.array([globals_of(s) for s in p.candidates + p.later_genuine]) for p, _, _ in m.by_k[FIT_K]]
         for m in fit_data.values()),
        options.spread_strength, options.spread_floor)
    trials = {}
    for name, m in fit_data.items():
        tr = trials[name] = Trials()
        for p, d_cc, dq in m.by_k[FIT_K]:
            plan_trials(p, d_cc, dq, prior, globals_of, spread, tr)
    return fit(trials, spread, options, record)


def match_scores(m: Measured, k: int, prior: NormalisationPrior, model: ScoreModel, globals_of: FeatureCache) -> Scores:
    """The match score of every trial of ``m`` with ``k`` references, as a distance-like score
    (minus the logit: lower is more genuine), trial for trial like ``Measured.scores``."""
    tr = Trials()
    for p, d_cc, dq in m.by_k[k]:
        plan_trials(p, d_cc, dq, prior, globals_of, model.spread, tr)
    out = Scores()
    add_match_scores(tr, model, out)
    return out


@dataclass
class KioskTrials:
    """The operating point's questioned signatures (``tools.operating_point.measure``'s choice),
    each with its classic distance, its global-feature deviations and whether the copy check
    fires, from stored distances."""

    distance: dict[str, list[float]] = field(default_factory=lambda: {"genuine": [], "skilled": []})
    z: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"genuine": [], "skilled": []})
    copy: dict[str, list[bool]] = field(default_factory=lambda: {"genuine": [], "skilled": []})

    def classic_op(self, threshold: float) -> OperatingPoint:
        ok = {k: (np.array(self.distance[k]) <= threshold) & ~np.array(self.copy[k], dtype=bool) for k in self.distance}
        return _op(ok)

    def score_op(self, model: ScoreModel, threshold: float) -> OperatingPoint:
        ok = {}
        for k in self.distance:
            if not self.distance[k]:
                ok[k] = np.zeros(0, dtype=bool)
                continue
            prob = model.probability(model.inputs(np.array(self.distance[k]), np.array(self.z[k])))
            ok[k] = (prob >= threshold) & ~np.array(self.copy[k], dtype=bool)
        return _op(ok)


def _op(accepted: dict[str, np.ndarray]) -> OperatingPoint:
    g, f = accepted["genuine"], accepted["skilled"]
    return OperatingPoint(genuine=len(g), rejected=int((~g).sum()), forged=len(f), accepted=int(f.sum()))


def kiosk_trials(dataset: Dataset[OnlineSample], provider: MemoClassic, prior: NormalisationPrior,
                 globals_of: FeatureCache, model: ScoreModel, references: int = FIT_K, questioned: int = 10,
                 ) -> KioskTrials:
    """What ``tools.operating_point.measure`` questions, scored from ``provider``'s distances
    (the same references, questioned signatures, normalisation and copy checks, the distance's
    and the written path's, as the kiosk's classic verifier; tested to give its figures)."""
    classic = ClassicVerifier(provider.config)
    policy = classic.policy
    print_of = FeatureCache(lambda s: classic.print_of(provider.features(s), s.trajectory))
    out = KioskTrials()
    for w in sorted(dataset.writers):
        g = dataset.genuine(w)
        refs = [s for s in g if s.session in (None, 1)][:references]
        if len(refs) < references:
            continue
        rf = [provider.features(s) for s in refs]
        d_rr = np.array([[provider.distance(a, b) if i != j else 0.0 for j, b in enumerate(rf)]
                         for i, a in enumerate(rf)])
        nearest_pair = float(d_rr[~np.eye(len(rf), dtype=bool)].min()) if len(rf) > 1 else np.inf
        ref_prints = [print_of(s) for s in refs]
        pairs = path_copy.print_pairs(ref_prints)
        rg = np.array([globals_of(s) for s in refs])
        for kind, qs in (("genuine", [s for s in g if s not in refs][:questioned]), ("skilled", dataset.skilled(w))):
            for q in qs:
                qf = provider.features(q)
                d = np.array([provider.distance(qf, r) for r in rf])
                out.distance[kind].append(score_from_distances(d, d_rr, prior))
                out.z[kind].append(deviations(globals_of(q), rg, model.spread))
                out.copy[kind].append(policy.is_copy(float(d.min()), nearest_pair) or
                                      classic.path_copy_reason(qf, q.trajectory, ref_prints, pairs) is not None)
    return out


#: Which writers of the left-out set are measured. ``validate`` and ``train+validate`` are where
#: choices are made: a fold fits nothing on the left-out set, so all its writers but the test
#: writers are unseen by the fold and none of them is reported. ``train+validate`` has about ten
#: times the validate writers (SUSIG-Visual 85 against 9, the Japanese set 9 against 1): a choice
#: is then not decided by one trial of one writer.
SPLITS: tuple[str, ...] = ("test", "validate", "train+validate")


@dataclass(frozen=True)
class Options:
    split: str = "test"
    trials: int = 10
    seed: int = 0
    #: Few writers per set (a smoke test of the whole protocol in about a minute).
    quick: bool = False
    sets: tuple[str, ...] = tuple(name for name, _, _ in SETS)
    variants: tuple[str, ...] = tuple(v.key for v in VARIANTS)
    verifier: str = "classic"
    #: How the match score is fitted per fold (``--verifier match-score``).
    score: FitOptions = field(default_factory=FitOptions)

    @property
    def fit_limit(self) -> int | None:
        return 3 if self.quick else None

    @property
    def measure_limit(self) -> int | None:
        # Two, not one: random forgeries are other measured writers' signatures.
        return 2 if self.quick else None


def run(data_dir: Path, options: Options = Options(), progress: Callable[[str], None] | None = None) -> dict:
    """The whole yardstick as a JSON-able report (see :func:`format_table`)."""
    started = time.perf_counter()
    say = progress or (lambda msg: None)
    unknown = set(options.sets) - {n for n, _, _ in SETS}
    if unknown:
        raise ValueError(f"unknown set(s) {sorted(unknown)}; known: {', '.join(n for n, _, _ in SETS)}")
    bad = set(options.variants) - {v.key for v in VARIANTS}
    if bad:
        raise ValueError(f"unknown variant(s) {sorted(bad)}; known: {', '.join(v.key for v in VARIANTS)}")
    if options.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    if options.verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {options.verifier!r}; known: {', '.join(VERIFIERS)}")
    scored = options.verifier == "match-score"
    sets = [(n, f, fmt) for n, f, fmt in SETS if n in options.sets]
    if len(sets) < 2:
        raise ValueError("leaving one set out needs at least two sets")

    def elapsed() -> str:
        return f"[{time.perf_counter() - started:6.1f} s]"

    loaded: dict[str, Dataset[OnlineSample]] = {}
    fit_data: dict[str, Measured] = {}
    # The same writers without pressure, for the fold's no_pressure_scale (sets that have pressure).
    fit_bare: dict[str, Measured] = {}
    fit_globals = globals_cache()
    for name, loaded[name], fit_ds in fit_sets(data_dir, options.sets, options.fit_limit,
                                               reading=lambda n: say(f"{elapsed()} {n}: reading")):
        say(f"{elapsed()} {name}: distances of {len(fit_ds.writers)} train+validate writers (for the fit)")
        fit_data[name] = measure_distances(fit_ds, [FIT_K], options.trials, options.seed)
        if NO_PRESSURE.key in options.variants:
            say(f"{elapsed()} {name}: the same without pressure (for the fit)")
            without = measure_without_pressure(fit_ds, options.trials, options.seed)
            if without is not None:
                fit_bare[name] = without

    # The prior changes the scores and so each set's EER threshold: both are fitted per fold,
    # from the stored distances of the fold's training sets.
    results = []
    for name, _, _ in sets:
        others = [o for o, _, _ in sets if o != name]
        prior, threshold, per_set_thr = fit_classic({o: fit_data[o] for o in others})
        bare = [o for o in others if o in fit_bare]
        # Without a fitted one (no set with pressure to fit it on) the shipped scale stands.
        scale = (fit_no_pressure_scale([fit_data[o] for o in bare], [fit_bare[o] for o in bare]) if bare
                 else ClassicConfig().no_pressure_scale)
        fold_config = ClassicConfig(threshold=threshold, prior=prior, no_pressure_scale=scale)
        say(f"{elapsed()} {name} left out: threshold {threshold:.4f}, prior "
            f"({prior.min_dist:.3f}, {prior.mean_dist:.3f}) and no-pressure scale {scale:.3f} "
            f"fitted on {', '.join(others)}")
        model = None
        if scored:
            model = fit_match_score({o: fit_data[o] for o in others}, prior, fit_globals, options.score,
                                    record={"left_out": name, "fitted_on": others})
            say(f"{elapsed()} {name} left out: match score fitted on {', '.join(others)}, "
                f"threshold {model.threshold:.3f}")
        target = pick_writers(loaded[name], set(options.split.split("+")), options.measure_limit)
        device = next(s.trajectory.device for ss in target.writers.values() for s in ss)
        shipped_verifier = make_verifier("classic", SHIPPED_THRESHOLD)
        fitted_verifier = ClassicVerifier(fold_config)
        rows = []
        for variant in VARIANTS:
            if variant.key not in options.variants or not variant.applies(device):
                continue
            say(f"{elapsed()} {name} [{variant.name}]: {len(target.writers)} {options.split} writers")
            ds = device_variant(target, variant)
            provider = MemoClassic(fold_config)
            m = measure_distances(ds, REFERENCES, options.trials, options.seed, provider)
            row: dict = {
                "variant": variant.name,
                "key": variant.key,
                "eer": {f"k{k}": _eer_entry(m.scores(k, prior)) for k in REFERENCES},
                "operating_point": {
                    "fitted": _op_entry(measure(ds, fitted_verifier, FIT_K), threshold),
                    "shipped": _op_entry(measure(ds, shipped_verifier, FIT_K), SHIPPED_THRESHOLD),
                },
            }
            if model is not None:
                g = globals_cache()
                kt = kiosk_trials(ds, provider, prior, g, model, FIT_K)
                row["match_score"] = {
                    "eer": {f"k{k}": _eer_entry(match_scores(m, k, prior, model, g)) for k in REFERENCES},
                    "operating_point": {
                        "fitted": _op_entry(kt.score_op(model, model.threshold), model.threshold),
                        "even_odds": _op_entry(kt.score_op(model, 0.5), 0.5),
                        # The classic verifier's fitted point from the same stored distances: equal
                        # to operating_point.fitted (tested), so the two verifiers are measured alike.
                        "classic_check": _op_entry(kt.classic_op(threshold), threshold),
                    },
                }
            rows.append(row)
        results.append({
            "left_out": name,
            "device": device.name,
            "writers": len(target.writers),
            "measured_writers": sorted(target.writers),
            "writers_with_forgeries": sum(1 for w in target.writers if target.skilled(w)),
            "fitted": {
                "on": {o: len(next(iter(fit_data[o].by_k.values()))) for o in others},
                "prior": {"min_dist": prior.min_dist, "mean_dist": prior.mean_dist},
                "threshold": round(threshold, 4),
                "per_set_threshold": per_set_thr,
                "no_pressure_scale": scale if bare else None,
                **({"match_score": {
                    "threshold": round(model.threshold, 4),
                    "weights": dict(zip(model.input_names, (round(float(w), 4) for w in model.weights)))}}
                   if model is not None else {}),
            },
            "clock_repairs": target.clock_repairs(),
            "variants": rows,
        })
    return {
        "protocol": {
            "name": "cross-device (leave one set out)",
            "verifier": options.verifier,
            "measured_on": f"{options.split} writers of the left-out set",
            "fitted_on": "train+validate writers of the other sets",
            "references": list(REFERENCES),
            "operating_point_references": FIT_K,
            "trials": options.trials,
            "seed": options.seed,
            "quick": options.quick,
            "shipped_threshold": SHIPPED_THRESHOLD,
            **({"match_score": {"features": list(options.score.features), "l2": options.score.l2,
                                "random_weight": options.score.random_weight,
                                "spread_strength": options.score.spread_strength,
                                "spread_floor": options.score.spread_floor}} if scored else {}),
        },
        "sets": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _cell(entry: dict | None, key: str) -> str:
    return "–" if entry is None else f"{entry[key]:.2f}"


def format_table(report: dict) -> str:
    """One Markdown table: a row per (left-out set, device variant)."""
    head = ("| left-out set (writers) | pad | skilled K=1 global / user-mean | skilled K=5 global / user-mean "
            "| random K=1 global / user-mean | random K=5 global / user-mean "
            f"| fitted threshold: FRR / skilled FAR | shipped {SHIPPED_THRESHOLD:.2f}: FRR / skilled FAR |")
    lines = [head, "|" + "---|" * 8]
    for s in report["sets"]:
        for i, row in enumerate(s["variants"]):
            e = row["eer"]
            cells = []
            for kind in ("skilled", "random"):
                for k in ("k1", "k5"):
                    r = e[k][kind]
                    cells.append(f"{_cell(r, 'eer_global')} / {_cell(r, 'eer_user_mean')}")
            fit, ship = row["operating_point"]["fitted"], row["operating_point"]["shipped"]
            label = f"{s['left_out']} ({s['writers']}; thr {s['fitted']['threshold']:.3f})" if i == 0 else ""
            lines.append(
                f"| {label} | {row['variant']} | " + " | ".join(cells)
                + f" | {fit['frr']:.1f} / {fit['skilled_far']:.1f} | {ship['frr']:.1f} / {ship['skilled_far']:.1f} |"
            )
    return "\n".join(lines)


def format_match_table(report: dict) -> str:
    """The match score beside the classic verifier, trial for trial: a row per (left-out set,
    device variant); each cell "classic → match score"."""
    head = ("| left-out set (writers; score threshold) | pad | skilled K=1 global | skilled K=5 global "
            "| skilled K=5 user-mean | random K=5 global | fitted threshold: FRR / skilled FAR "
            "| score at 0.5: FRR / skilled FAR |")
    lines = [head, "|" + "---|" * 8]

    def pair(c: dict | None, m: dict | None, key: str) -> str:
        return f"{_cell(c, key)} → {_cell(m, key)}"

    for s in report["sets"]:
        for i, row in enumerate(s["variants"]):
            ms = row.get("match_score")
            if ms is None:
                continue
            c, m = row["eer"], ms["eer"]
            fit_c = row["operating_point"]["fitted"]
            fit_m, even = ms["operating_point"]["fitted"], ms["operating_point"]["even_odds"]
            label = f"{s['left_out']} ({s['writers']}; {s['fitted']['match_score']['threshold']:.3f})" if i == 0 else ""
            lines.append(
                f"| {label} | {row['variant']} "
                f"| {pair(c['k1']['skilled'], m['k1']['skilled'], 'eer_global')} "
                f"| {pair(c['k5']['skilled'], m['k5']['skilled'], 'eer_global')} "
                f"| {pair(c['k5']['skilled'], m['k5']['skilled'], 'eer_user_mean')} "
                f"| {pair(c['k5']['random'], m['k5']['random'], 'eer_global')} "
                f"| {fit_c['frr']:.1f} / {fit_c['skilled_far']:.1f} → {fit_m['frr']:.1f} / {fit_m['skilled_far']:.1f} "
                f"| {even['frr']:.1f} / {even['skilled_far']:.1f} |"
            )
    return "\n".join(lines)


def main_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
