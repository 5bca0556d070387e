"""Which global features the match score takes: its settings compared on the cross-device protocol,
measured on every writer of the left-out set that the fold never fitted on; never a test writer.

Each pen set is left out in turn (``tools.cross_device``): the classic prior, the match score
(``tools.train.score_fit``) and its threshold are fitted on the other three sets' train + validate
writers, and the left-out set's train + validate writers are measured (random-refs, K = 5, 10
draws): 85, 71, 62 and 9 writers, where ``--split validate`` has 9, 10, 8 and 1 and one trial
moves an EER by 0.14-0.28 points. Every DTW distance and global feature is computed once; each
setting is then fitted per fold from them in seconds.

For each setting: skilled EER (and random, after the slash) per left-out set, their sums, and the
difference to classic on the same trials with its standard error over writers (bootstrap:
writers drawn with replacement, 200 times). The rule that chose the shipped setting
(``tools.train.score_fit.CHOSEN_FEATURES``): no left-out set worse than classic by more than one
standard error (and, since 2026-11-27, by more than about one trial: a smaller change is below
what the bootstrap resolves); the lowest skilled sum; within 0.5 points of it, the fewest features.

    python -m tools.score_settings ../shared/data/online [--json FILE]     # about 12 min here

``--classic-prior`` compares instead the classic distance's own normalisation (how strongly each
customer's reference statistics are pulled towards the population's), on the same writers.

``--classic-parts`` compares the classic distance's second warping path (``models.classic``
``DYNAMICS``): one path alone, then each candidate group of time functions aligned again on its
own and added with each weight; each fold fits its own prior for each. The same rule chooses, the
group's size standing for the number of features.

    python -m tools.score_settings ../shared/data/online --classic-parts     # about 6.5 min here

``--classic-third`` does the same beside the shipped two paths: each group of
:data:`THIRD_CANDIDATES` aligned on a third path of its own, at each of :data:`THIRD_WEIGHTS`.

    python -m tools.score_settings ../shared/data/online --classic-third     # about 8 min here

``--classic-preprocess`` compares how the points are prepared (:data:`PREPROCESS_CANDIDATES`, each
a change to the shipped preparation: no smoothing of jagged signatures or another limit, resampling
pads that send no timestamps, other rates, a low-pass), the distance otherwise shipped;
then the shipped distance with a low-passed one added (:data:`ENSEMBLES`).

    python -m tools.score_settings ../shared/data/online --classic-preprocess     # about 12 min here

``--jaggedness`` prints how jagged each set's signatures are (:func:`jaggedness_shares`) and the
share the shipped preparation smooths (a few seconds a set).

``--classic-direction`` compares the direction where the pen does not move: 0 (``arctan2(0, 0)``,
shipped until 2026-11-27) against the last direction it moved in, held where the pen rests at least
1, 2 (shipped) or 3 points (:data:`HOLD_RUNS`, ``ClassicConfig.hold_still_direction``).

    python -m tools.score_settings ../shared/data/online --classic-direction     # about 12.5 min here

``--classic-drop NAME`` (repeatable) compares the shipped distance with the same distance without
those time functions (:func:`changed_config`), e.g. the raw path-tangent ``angle``, whose cut at
+-pi puts a whole turn between two neighbouring leftward steps although ``cos`` and ``sin`` carry
the same direction without one; ``--classic-again NAME`` with those compared twice on the one path.

    python -m tools.score_settings ../shared/data/online --classic-drop angle     # about 13 min here

``--classic-band FRACTION`` (repeatable) compares the shipped Sakoe-Chiba band (a fraction of the
longer signature, on both warping paths) with other widths. It chose 0.2 over 0.15 on 2026-11-28
(``models.classic.BAND``; README, "The DTW band"): 0.25-0.35 gave the same skilled EERs as each
other, 0.07 lower in sum than 0.2, for more DTW cells.

    python -m tools.score_settings ../shared/data/online --classic-band 0.25 --classic-band 0.15   # about 25 min here
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.classic import PRIOR_STRENGTH, ClassicConfig
from models.global_features import Spread, population_spread
from models.match_score import ScoreModel
from models.preprocess import PreprocessConfig, jaggedness, prepare
from models.scoring import NormalisationPrior
from tools.cross_device import (
    FIT_K,
    SETS,
    Measured,
    MemoClassic,
    fit_match_score,
    fit_prior,
    fit_sets,
    match_scores,
    measure_distances,
)
from tools.datasets import load_online
from tools.evaluate import FeatureCache, Scores, globals_cache, summarise
from tools.metrics import equal_error_rate
from tools.train.score_fit import VALIDATION_CHOSEN_FEATURES, FitOptions, Trials, fit, plan_trials

TIMING: tuple[str, ...] = ("duration", "ink_time", "pen_up_ratio", "speed_peak", "speed_cv")
BOOTSTRAP = 200
#: ``--classic-direction``: the shortest rest (still points in a row) that holds the direction.
HOLD_RUNS: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class Setting:
    label: str
    #: None: the classic distance itself (the reference every row is compared with).
    options: FitOptions | None
    #: Each set's |z| against its own writers' within-writer spread (what a kiosk could measure
    #: on its own enrolled customers) instead of the pooled population spread.
    site_spread: bool = False
    #: The classic distance with the user-normalisation prior counting like this many reference
    #: pairs (``models.scoring.NormalisationPrior.strength``; None: the shipped one).
    prior_strength: float | None = None


#: ``--classic-prior``: how strongly a customer's reference statistics are pulled towards the
#: population's (K = 5 references give 10 pairs), beside the shipped strength
#: (``models.classic.PRIOR_STRENGTH``: 6 with two warping paths; 4 with one, from 2026-11-27; 2 before).
PRIOR_STRENGTHS: tuple[float, ...] = tuple(
    v for v in (0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0) if v != PRIOR_STRENGTH)


def prior_settings() -> list[Setting]:
    return [Setting("classic", None)] + [Setting(f"classic, prior strength {v:g}", None, prior_strength=v)
                                         for v in PRIOR_STRENGTHS]


#: ``--classic-parts``: the groups of time functions tried on a second warping path, and the weights.
DYNAMICS_CANDIDATES: dict[str, tuple[str, ...]] = {
    "velocity": ("dx", "dy", "speed", "acceleration", "centripetal"),
    "speed and accelerations": ("speed", "acceleration", "centripetal"),
    "velocity and pressure change": ("dx", "dy", "speed", "acceleration", "centripetal", "dpressure"),
}
DYNAMICS_WEIGHTS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)


def added(base: Measured, part: Measured, weight: float) -> Measured:
    """``base``'s distances plus ``weight`` times ``part``'s, trial for trial (the same plans)."""
    out = Measured()
    for k, items in base.by_k.items():
        out.by_k[k] = [(p, d_cc + weight * e_cc, {kind: dq[kind] + weight * eq[kind] for kind in dq})
                       for (p, d_cc, dq), (_, e_cc, eq) in zip(items, part.by_k[k], strict=True)]
    return out


def fold_priors(measured: Mapping[str, Measured]) -> dict[str, NormalisationPrior]:
    """Each left-out set's classic prior, as its fold fits it on the other sets."""
    return {n: fit_prior([o for name, o in measured.items() if name != n]) for n in measured}


def classic_scores(measured: Mapping[str, Measured]) -> dict[str, Scores]:
    """Each left-out set's classic scores with the prior its fold fits on the other sets."""
    priors = fold_priors(measured)
    return {n: m.scores(FIT_K, priors[n]) for n, m in measured.items()}


#: ``--classic-third``: groups of time functions tried on a third warping path, beside the shipped two.
THIRD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "position": ("x", "y"),
    "pressure": ("pressure", "dpressure"),
    "direction": ("cos", "sin", "dangle"),
    "position and direction": ("x", "y", "cos", "sin"),
}
THIRD_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0)


def measure_configs(data_dir: Path, configs: Mapping[str, ClassicConfig], trials: int, seed: int
                    ) -> dict[str, dict[str, Measured]]:
    """Each classic configuration's distances on every set's train + validate writers (the same
    draws for all), by configuration, then set."""
    measured: dict[str, dict[str, Measured]] = {label: {} for label in configs}
    for name, _, ds in fit_sets(data_dir):
        print(f"{name}: distances of {len(ds.writers)} train+validate writers", file=sys.stderr, flush=True)
        for label, cfg in configs.items():
            measured[label][name] = measure_distances(ds, [FIT_K], trials, seed, MemoClassic(cfg))
    return measured


def parts_rows(data_dir: Path, trials: int = 10, seed: int = 0, base: ClassicConfig = ClassicConfig(dynamics=()),
               base_label: str = "one warping path (shipped until 2026-11-27)",
               candidates: Mapping[str, tuple[str, ...]] = DYNAMICS_CANDIDATES,
               weights: tuple[float, ...] = DYNAMICS_WEIGHTS) -> tuple[list[dict], dict[str, int]]:
    """``--classic-parts`` (and ``--classic-third``): one row per (group, weight) after ``base``
    alone, each group aligned on its own path and added; and each row's group size."""
    groups = {"base": base, **{g: replace(base, features=f, dynamics=()) for g, f in candidates.items()}}
    measured = measure_configs(data_dir, groups, trials, seed)
    first = classic_scores(measured["base"])
    rows, sizes = [row(base_label, first, first)], {}
    sizes[rows[0]["setting"]] = 0
    for g, feats in candidates.items():
        for w in weights:
            label = f"+ {w:g} x {g} ({', '.join(feats)}) on its own path"
            both = {n: added(measured["base"][n], measured[g][n], w) for n in measured[g]}
            rows.append(row(label, classic_scores(both), first))
            sizes[label] = len(feats)
            print(format_row(rows[-1]), flush=True)
    return rows, sizes


#: ``--classic-preprocess``: how the points are prepared before the time functions, each a change
#: to the shipped preparation (``ClassicConfig().preprocess``, a ``models.preprocess.PreprocessConfig``).
PREPROCESS_CANDIDATES: dict[str, dict[str, object]] = {
    "no smoothing of jagged signatures (shipped until 2026-11-28)": {"smooth_jagged": None},
    "jagged signatures smoothed to jaggedness 0.5": {"smooth_jagged": 0.5},
    "untimed pads resampled to 100 Hz at their nominal rate": {"resample_untimed": True},
    "every pad resampled to 75 Hz": {"resample_hz": 75.0, "resample_untimed": True},
    "every pad resampled to 50 Hz": {"resample_hz": 50.0, "resample_untimed": True},
    "low-pass 20 Hz": {"lowpass_hz": 20.0},
    "low-pass 35 Hz": {"lowpass_hz": 35.0},
}


def preprocess_candidates(base: PreprocessConfig) -> dict[str, PreprocessConfig]:
    """:data:`PREPROCESS_CANDIDATES` applied to ``base``."""
    return {label: replace(base, **change) for label, change in PREPROCESS_CANDIDATES.items()}  # type: ignore[arg-type]


#: Preparations whose distance is also tried added to the shipped one, and with which weights.
ENSEMBLES: dict[str, tuple[float, ...]] = {"low-pass 20 Hz": (0.5, 1.0), "low-pass 35 Hz": (0.5, 1.0)}


def changed_config(base: ClassicConfig, drop: Sequence[str] = (), again: Sequence[str] = ()) -> ClassicConfig:
    """``base`` without the time functions ``drop`` and with ``again`` compared a second time on
    the same path (each then weighs twice in the local distance). Refused where one is not
    compared; dropping one of the dynamics is refused by ``ClassicConfig`` itself (their own
    warping path needs them)."""
    missing = [n for n in (*drop, *again) if n not in base.features]
    if missing:
        raise ValueError(f"{missing} are not among the compared time functions {base.features}")
    return replace(base, features=tuple(f for f in base.features if f not in drop) + tuple(again))


def config_rows(data_dir: Path, base_label: str, variants: Mapping[str, ClassicConfig],
                ensembles: Mapping[str, tuple[float, ...]] | None = None, trials: int = 10, seed: int = 0,
                base: ClassicConfig = ClassicConfig()) -> list[dict]:
    """The classic distance of ``base`` (the first row, ``base_label``; by default the shipped
    one), then each of ``variants`` (the same protocol on another configuration), each fold its own
    prior; then each variant of ``ensembles`` added to the base distance with each of its weights."""
    measured = measure_configs(data_dir, {"base": base, **variants}, trials, seed)
    first = classic_scores(measured["base"])
    rows = [row(base_label, first, first)]
    for label in variants:
        rows.append(row(label, classic_scores(measured[label]), first))
        print(format_row(rows[-1]), flush=True)
    # Both: the base distance plus the variant's (twice the DTW).
    for label, weights in (ensembles or {}).items():
        for w in weights:
            both = {n: added(measured["base"][n], measured[label][n], w) for n in measured["base"]}
            rows.append(row(f"the shipped distance + {w:g} x the same on the {label} points", classic_scores(both), first))
            print(format_row(rows[-1]), flush=True)
    return rows


def preprocess_rows(data_dir: Path, trials: int = 10, seed: int = 0) -> list[dict]:
    """``--classic-preprocess``: the shipped classic distance, then each preparation of
    :data:`PREPROCESS_CANDIDATES` (the same distance on other points), each fold its own prior;
    then :data:`ENSEMBLES`."""
    shipped = ClassicConfig()
    variants = {label: replace(shipped, preprocess=p) for label, p in preprocess_candidates(shipped.preprocess).items()}
    return config_rows(data_dir, "the shipped preparation", variants, ENSEMBLES, trials, seed)


def jaggedness_shares(data_dir: Path, limit: float) -> dict[str, tuple[int, float, float]]:
    """``--jaggedness``: per shared pen set (every writer), how many signatures, the median
    :func:`models.preprocess.jaggedness` of their points prepared without smoothing, and the share
    (%) more jagged than ``limit``, which a preparation smoothing to ``limit`` smooths."""
    unsmoothed = replace(ClassicConfig().preprocess, smooth_jagged=None)
    out = {}
    for name, folder, fmt in SETS:
        values = []
        for samples in load_online(data_dir / folder, fmt).writers.values():
            for sample in samples:
                prep = prepare(sample.trajectory, unsmoothed)
                values.append(jaggedness(prep.x, prep.y, prep.stroke))
        v = np.array(values)
        out[name] = (len(v), float(np.median(v)), 100.0 * float(np.mean(v > limit)))
    return out


def _report(rows: list[dict], against: str, started: float, json_path: Path | None) -> None:
    """A sweep's first row (its reference), the legend, and the JSON when asked for."""
    print(format_row(rows[0]))
    print(f"(skilled / random EER %, K = 5; in brackets skilled minus {against}'s ± its standard error over "
          f"writers; {time.perf_counter() - started:.0f} s)")
    if json_path:
        json_path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


def settings() -> list[Setting]:
    ten = VALIDATION_CHOSEN_FEATURES
    out = [Setting("classic", None),
           Setting("the ten features (shipped until 2026-11-27)", FitOptions(features=ten)),
           Setting("no global feature (shipped)", FitOptions(features=()))]
    out += [Setting(f"the ten - {f}", FitOptions(features=tuple(x for x in ten if x != f))) for f in ten]
    out += [Setting(f"only {f}", FitOptions(features=(f,))) for f in ten + TIMING]
    out += [Setting("the ten + timing", FitOptions(features=ten + TIMING))]
    out += [Setting(f"the ten, l2 {v:g}", FitOptions(features=ten, l2=v)) for v in (1e-2, 3e-2)]
    out += [Setting(f"the ten, spread strength {v:g}", FitOptions(features=ten, spread_strength=v)) for v in (2.0, 12.0)]
    out += [Setting("the ten, random forgeries weight 0", FitOptions(features=ten, random_weight=0.0))]
    out += [Setting("the ten, site spread", FitOptions(features=ten), site_spread=True),
            Setting("the ten + timing, site spread", FitOptions(features=ten + TIMING), site_spread=True),
            Setting("only aspect, site spread", FitOptions(features=("aspect",)), site_spread=True)]
    return out


@dataclass
class Protocol:
    """Stored distances of every set's train + validate writers and each fold's classic prior."""

    measured: dict[str, Measured]
    priors: dict[str, NormalisationPrior]
    globals_of: FeatureCache

    @classmethod
    def measure(cls, data_dir: Path, trials: int = 10, seed: int = 0) -> Protocol:
        measured = {}
        for name, _, ds in fit_sets(data_dir):
            print(f"{name}: distances of {len(ds.writers)} train+validate writers", file=sys.stderr, flush=True)
            measured[name] = measure_distances(ds, [FIT_K], trials, seed)
        return cls(measured, fold_priors(measured), globals_cache())

    def _spread_of(self, name: str, options: FitOptions) -> Spread:
        # The writers' first five genuine signatures: what a kiosk holds of its customers.
        writers = [np.array([self.globals_of(s) for s in p.candidates[:FIT_K]])
                   for p, _, _ in self.measured[name].by_k[FIT_K]]
        return Spread(population_spread(writers), strength=options.spread_strength, floor=options.spread_floor)

    def _model(self, left_out: str, s: Setting) -> ScoreModel:
        assert s.options is not None
        others = {o: m for o, m in self.measured.items() if o != left_out}
        prior = self.priors[left_out]
        if not s.site_spread:
            return fit_match_score(others, prior, self.globals_of, s.options)
        trials: dict[str, Trials] = {}
        for o, m in others.items():
            spread, tr = self._spread_of(o, s.options), trials.setdefault(o, Trials())
            for p, d_cc, dq in m.by_k[FIT_K]:
                plan_trials(p, d_cc, dq, prior, self.globals_of, spread, tr)
        # The trials carry their own set's |z|; the model keeps the spread it meets: the left-out set's.
        return fit(trials, self._spread_of(left_out, s.options), s.options)

    def scores(self, s: Setting) -> dict[str, Scores]:
        out = {}
        for name, m in self.measured.items():
            prior = self.priors[name]
            if s.prior_strength is not None:
                prior = replace(prior, strength=s.prior_strength)
            out[name] = m.scores(FIT_K, prior) if s.options is None else \
                match_scores(m, FIT_K, prior, self._model(name, s), self.globals_of)
        return out


def _skilled_eer(sc: Scores, writers: list[str]) -> float:
    g = np.concatenate([sc.genuine[w] for w in writers])
    f = np.concatenate([sc.skilled[w] for w in writers])
    return 100.0 * equal_error_rate(g, f)[0]


def difference(base: Scores, other: Scores, rng: np.random.Generator) -> tuple[float, float, float]:
    """Skilled EER of ``other`` minus ``base`` over the writers with forgeries, its bootstrap
    standard error over those writers, and about what one trial moves that EER: half of what one
    trial of the scarcer kind moves its own rate by (the EER lies between the two rates)."""
    ws = sorted(w for w in base.genuine if base.skilled.get(w))
    d0 = _skilled_eer(other, ws) - _skilled_eer(base, ws)
    draws = [list(rng.choice(ws, len(ws))) for _ in range(BOOTSTRAP)]
    trials = min(sum(len(base.genuine[w]) for w in ws), sum(len(base.skilled[w]) for w in ws))
    return d0, float(np.std([_skilled_eer(other, d) - _skilled_eer(base, d) for d in draws])), 50.0 / max(trials, 1)


def is_worse(difference: float, se: float, one_trial: float) -> bool:
    """Worse by more than its standard error and by more than one trial. A change smaller than
    one trial is below what the bootstrap resolves: where a handful of trials moved, the standard
    error is itself a fraction of a trial (NFI: 16 writers with forgeries, one trial 0.045 points)."""
    return difference > max(se, one_trial)


def row(label: str, scores: Mapping[str, Scores], base: Mapping[str, Scores], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cells: dict[str, dict[str, float | None]] = {}
    worse = []
    for name, sc in scores.items():
        sk, rd = summarise(sc, "skilled"), summarise(sc, "random")
        d, se, one_trial = difference(base[name], sc, rng)
        cells[name] = {"skilled": sk["eer_global"] if sk else None, "random": rd["eer_global"] if rd else None,
                       "vs_classic": round(d, 3), "se": round(se, 3), "one_trial": round(one_trial, 3)}
        if is_worse(d, se, one_trial):
            worse.append(name)
    return {"setting": label, "sets": cells,
            "skilled_sum": round(sum(c["skilled"] or 0.0 for c in cells.values()), 2),
            "random_sum": round(sum(c["random"] or 0.0 for c in cells.values()), 2),
            "worse_than_classic": worse}


#: Within this many points of the lowest skilled sum, fewer features win.
TIE = 0.5


def choose(rows: list[dict], features: Mapping[str, int]) -> str:
    """The rule: among the settings worse than classic on no left-out set (by more than one
    standard error and one trial), the lowest skilled sum; within :data:`TIE` points of it, the
    fewest features (``features``: each setting's count), then the lower sum."""
    eligible = [r for r in rows if not r["worse_than_classic"] and r["setting"] in features]
    if not eligible:
        raise ValueError("no setting is worse than classic nowhere")
    best = min(r["skilled_sum"] for r in eligible)
    near = [r for r in eligible if r["skilled_sum"] <= best + TIE]
    return min(near, key=lambda r: (features[r["setting"]], r["skilled_sum"]))["setting"]


def format_row(r: dict) -> str:
    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    cells = " | ".join(f"{num(c['skilled'])} / {num(c['random'])} ({c['vs_classic']:+.2f} ± {c['se']:.2f})"
                       for c in r["sets"].values())
    worse = ", ".join(r["worse_than_classic"]) or "none"
    return f"| {r['setting']} | {cells} | {r['skilled_sum']:.2f} / {r['random_sum']:.2f} | {worse} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.score_settings", description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared online folder")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--classic-prior", action="store_true",
                    help="compare the classic distance's normalisation prior strengths instead (not shipped: "
                         "a new strength changes the distance's scale and every threshold fitted on it)")
    ap.add_argument("--classic-parts", action="store_true",
                    help="compare the classic distance's second warping path (groups and weights) instead")
    ap.add_argument("--classic-preprocess", action="store_true",
                    help="compare how the points are prepared (resampling, low-pass) instead")
    ap.add_argument("--jaggedness", action="store_true",
                    help="how jagged each set's signatures are, and the share the shipped preparation smooths, instead")
    ap.add_argument("--classic-direction", action="store_true",
                    help="compare the direction held where the pen does not move with the shipped 0 instead")
    ap.add_argument("--classic-drop", action="append", metavar="NAME", default=None,
                    help="compare the shipped distance without this time function instead (repeatable)")
    ap.add_argument("--classic-again", action="append", metavar="NAME", default=None,
                    help="compare the shipped distance with this time function compared twice instead (repeatable)")
    ap.add_argument("--classic-band", action="append", type=float, metavar="FRACTION", default=None,
                    help="compare the shipped DTW band with this one (a fraction of the longer signature; repeatable)")
    ap.add_argument("--classic-third", action="store_true",
                    help="compare a third warping path beside the shipped two (groups and weights) instead")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    if args.jaggedness:
        limit = ClassicConfig().preprocess.smooth_jagged
        if limit is None:
            raise SystemExit("--jaggedness: the shipped preparation smooths nothing")
        for name, (n, median, share) in jaggedness_shares(args.data, limit).items():
            print(f"{name}: {n} signatures, median jaggedness {median:.2f}, {share:.1f} % above {limit:g} (smoothed)")
        return 0
    if args.classic_preprocess:
        _report(preprocess_rows(args.data), "the shipped preparation", started, args.json)
        return 0
    if args.classic_direction:
        rows = config_rows(args.data, "0 where the pen does not move (shipped until 2026-11-27)",
                           {f"the last direction held where the pen rests {n} point{'s' if n > 1 else ''} or more"
                            + (" (shipped)" if n == ClassicConfig().hold_still_direction else ""):
                            ClassicConfig(hold_still_direction=n) for n in HOLD_RUNS},
                           base=ClassicConfig(hold_still_direction=0))
        _report(rows, "0", started, args.json)
        return 0
    if args.classic_drop or args.classic_again:
        drop, again = args.classic_drop or [], args.classic_again or []
        try:
            variant = changed_config(ClassicConfig(), drop, again)
        except ValueError as e:
            raise SystemExit(f"--classic-drop/--classic-again: {e}") from None
        label = "; ".join(([f"without {', '.join(drop)}"] if drop else []) + ([f"+ {', '.join(again)} again"] if again else []))
        rows = config_rows(args.data, "the shipped time functions", {label: variant})
        _report(rows, "the shipped time functions", started, args.json)
        return 0
    if args.classic_band:
        shipped = ClassicConfig()
        try:
            bands = {f"band {b:g}": replace(shipped, band=b) for b in args.classic_band}
        except ValueError as e:
            raise SystemExit(f"--classic-band: {e}") from None
        base_label = f"the shipped band {shipped.band:g}"
        rows = config_rows(args.data, base_label, bands)
        _report(rows, base_label, started, args.json)
        return 0
    if args.classic_parts or args.classic_third:
        rows, sizes = parts_rows(args.data) if args.classic_parts else parts_rows(
            args.data, base=ClassicConfig(), base_label="the shipped two paths", candidates=THIRD_CANDIDATES,
            weights=THIRD_WEIGHTS)
        _report(rows, rows[0]["setting"], started, args.json)
        print(f"chosen by the rule: {choose(rows, sizes)}")
        return 0
    proto = Protocol.measure(args.data)
    base = proto.scores(Setting("classic", None))
    names = list(proto.measured)
    print("| setting | " + " | ".join(f"{n} ({len(proto.measured[n].by_k[FIT_K])})" for n in names)
          + " | sum skilled / random | worse than classic by > 1 SE and 1 trial |")
    print("|---|" + "---|" * len(names) + "---|---|")
    rows = []
    compared = prior_settings() if args.classic_prior else settings()
    for s in compared:
        rows.append(row(s.label, proto.scores(s), base))
        print(format_row(rows[-1]), flush=True)
    print(f"(skilled / random EER %, K = 5; in brackets skilled minus classic's ± its standard error over "
          f"writers; {time.perf_counter() - started:.0f} s)")
    if not args.classic_prior:
        counts = {s.label: len(s.options.features) for s in compared if s.options is not None}
        print(f"chosen by the rule: {choose(rows, counts)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
