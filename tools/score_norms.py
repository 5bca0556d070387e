"""How the classic distances are normalised per customer: the shipped rule against the others
compared, on the cross-device protocol's train + validate writers; never a test writer.

The shipped rule (``models.scoring.normalised_distance``, after DsDTW) divides the question's
nearest and mean distance to the references by the same statistics measured among the
references, each pulled towards the population's like ``strength`` pairs, and averages the two
ratios. Compared here, each fitted per fold exactly as the shipped one (every statistic's
population value the mean over the other sets' K = 5 draws, each set weighted equally):

* other weights of the nearest and the mean ratio;
* the reference statistics raised to a power below or above 1 (normalising part of the way, or
  beyond);
* a third ratio: the farthest reference, the two nearest, the median, or the references' medoid
  (the one closest to the others);
* each reference's distance divided by that reference's own spread among the others;
* a **cohort** (T-norm): the question and each reference are also compared with one genuine
  signature of each of ``--cohort`` other customers of the same set (what a kiosk holds of its
  enrolled customers), and the score is divided by, or lowered by, how far the question is from
  strangers against how far the references are.

The same measure as ``tools.score_settings``: skilled EER (and random, after the slash) of each
left-out set's train + validate writers (K = 5, 10 draws), the difference to the shipped rule
with its standard error over writers. The shipped rule was the lowest sum (README, "Tuning the
classic verifier").

    python -m tools.score_norms ../shared/data/online [--json FILE]     # about 9 min here
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.classic import ClassicConfig
from tools.cross_device import FIT_K, Measured, MemoClassic, fit_sets, measure_distances, population_statistics
from tools.datasets import OnlineSample
from tools.evaluate import Scores, WriterPlan
from tools.score_settings import format_row, row

#: The per-customer statistics every rule may read, in this order: each reference's nearest,
#: mean and farthest distance to the others and the mean of its two nearest, averaged over the
#: references; the median of all their distances; the medoid's mean distance to the others.
STATISTICS: tuple[str, ...] = ("nearest", "mean", "farthest", "two nearest", "median", "medoid")
COHORT = 20


def reference_statistics(ref_distances: np.ndarray) -> np.ndarray:
    """:data:`STATISTICS` of a K x K matrix of distances among one customer's references (K >= 2)."""
    d = np.asarray(ref_distances, dtype=np.float64)
    k = len(d)
    off = d[~np.eye(k, dtype=bool)].reshape(k, k - 1)
    two = np.sort(off, axis=1)[:, :2]
    return np.array([off.min(1).mean(), off.mean(1).mean(), off.max(1).mean(), two.mean(),
                     float(np.median(off)), off.mean(1).min()])


@dataclass(frozen=True)
class Question:
    """What a rule reads of one trial: the question's distances to the references, the customer's
    statistics pulled towards the population's, the references' own distances, and (with a
    cohort) the question's and each reference's mean distance to strangers."""

    to_refs: np.ndarray
    stats: np.ndarray
    refs: np.ndarray
    to_cohort: np.ndarray
    refs_to_cohort: np.ndarray

    def stat(self, name: str) -> float:
        return float(self.stats[STATISTICS.index(name)])

    @property
    def shipped(self) -> float:
        return 0.5 * (self.to_refs.min() / self.stat("nearest") + self.to_refs.mean() / self.stat("mean"))

    @property
    def strangers(self) -> float:
        """How far the question is from strangers against how far its references are."""
        return float(self.to_cohort.mean() / self.refs_to_cohort.mean())


def _own_spread(x: Question) -> float:
    k = len(x.refs)
    off = x.refs[~np.eye(k, dtype=bool)].reshape(k, k - 1)
    w = (k - 1) / (k - 1 + 3.0)  # each reference's k - 1 pairs against a prior of 3
    nearest = w * off.min(1) + (1 - w) * x.stat("nearest")
    mean = w * off.mean(1) + (1 - w) * x.stat("mean")
    return float(0.5 * ((x.to_refs / nearest).min() + (x.to_refs / mean).mean()))


def _mixed(a: float) -> Callable[[Question], float]:
    return lambda x: a * x.to_refs.min() / x.stat("nearest") + (1 - a) * x.to_refs.mean() / x.stat("mean")


def _power(g: float) -> Callable[[Question], float]:
    return lambda x: 0.5 * (x.to_refs.min() / x.stat("nearest") ** g + x.to_refs.mean() / x.stat("mean") ** g)


def _third(name: str, value: Callable[[Question], float]) -> Callable[[Question], float]:
    return lambda x: (2 * x.shipped + value(x) / x.stat(name)) / 3


def _medoid(x: Question) -> float:
    k = len(x.refs)
    return float(x.to_refs[int(np.argmin(x.refs.sum(1) / (k - 1)))])


#: Every rule compared, the shipped one first.
RULES: dict[str, Callable[[Question], float]] = {
    "nearest and mean, halves (shipped)": lambda x: x.shipped,
    **{f"nearest {a:g}, mean {1 - a:g}": _mixed(a) for a in (0.0, 0.25, 0.75, 1.0)},
    **{f"statistics to the power {g:g}": _power(g) for g in (0.5, 0.75, 1.25)},
    "+ a third: the farthest": _third("farthest", lambda x: float(x.to_refs.max())),
    "+ a third: the two nearest": _third("two nearest", lambda x: float(np.sort(x.to_refs)[:2].mean())),
    "+ a third: the median": _third("median", lambda x: float(np.median(x.to_refs))),
    "+ a third: the medoid": _third("medoid", _medoid),
    "each reference by its own spread": _own_spread,
    "cohort: divided by the strangers' ratio": lambda x: x.shipped / x.strangers,
    "cohort: divided by its square root": lambda x: x.shipped / np.sqrt(x.strangers),
    "cohort: less a quarter of the strangers' ratio": lambda x: x.shipped - 0.25 * x.strangers,
    "cohort: less half of it": lambda x: x.shipped - 0.5 * x.strangers,
}


@dataclass
class Cohort:
    """Per writer plan: each candidate's and each questioned sample's distances to the cohort."""

    candidates: list[np.ndarray]
    questioned: dict[str, list[np.ndarray]]


def cohorts(measured: Measured, provider: MemoClassic, size: int, rng: np.random.Generator) -> list[Cohort]:
    """Each writer's cohort: the last candidate reference of ``size`` other writers of the set
    (never the writer, nor a random forgery's own writer for that question)."""
    plans: list[WriterPlan[OnlineSample]] = [p for p, _, _ in measured.by_k[FIT_K]]
    pool = {p.writer: provider.features(p.candidates[-1]) for p in plans}
    out = []
    for p in plans:
        others = [w for w in sorted(pool) if w != p.writer]
        chosen = {w: pool[w] for w in (others[i] for i in rng.choice(len(others), size=min(size, len(others)),
                                                                      replace=False))}
        out.append(Cohort([_to_cohort(provider, s, chosen) for s in p.candidates],
                          {"genuine": [_to_cohort(provider, s, chosen) for s in p.later_genuine],
                           "skilled": [_to_cohort(provider, s, chosen) for s in p.skilled],
                           "random": [_to_cohort(provider, s, chosen, s.writer) for s in p.random]}))
    return out


def _to_cohort(provider: MemoClassic, sample: OnlineSample, cohort: Mapping[str, np.ndarray],
               exclude: str | None = None) -> np.ndarray:
    f = provider.features(sample)
    return np.array([provider.distance(f, c) for w, c in sorted(cohort.items()) if w != exclude])


def population(measured: Mapping[str, Measured]) -> np.ndarray:
    """The population's statistics: ``tools.cross_device.fit_prior``'s rule for every statistic."""
    return population_statistics(measured.values(), reference_statistics)


def rule_scores(measured: Measured, cohort: list[Cohort], prior: np.ndarray, rule: Callable[[Question], float],
                strength: float) -> Scores:
    """One left-out set's trials scored by ``rule``, as ``tools.evaluate.score_plan`` scores them."""
    out = Scores()
    for (p, d_cc, dq), c in zip(measured.by_k[FIT_K], cohort, strict=True):
        for draw in p.draws:
            idx = np.array(draw)
            refs = d_cc[np.ix_(idx, idx)]
            pairs = len(idx) * (len(idx) - 1) / 2
            w = pairs / (pairs + strength)
            stats = w * reference_statistics(refs) + (1 - w) * prior
            refs_far = np.array([c.candidates[i].mean() for i in idx])
            for kind in ("genuine", "skilled", "random"):
                for r, far in zip(dq[kind], c.questioned[kind], strict=True):
                    out.add(kind, p.writer, rule(Question(r[idx], stats, refs, far, refs_far)))
            if p.question_undrawn:
                for u in sorted(set(range(len(d_cc))) - set(draw)):
                    out.add("genuine", p.writer, rule(Question(d_cc[u, idx], stats, refs, c.candidates[u], refs_far)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.score_norms", description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared online folder")
    ap.add_argument("--cohort", type=int, default=COHORT, help="strangers in each customer's cohort")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    config = ClassicConfig()
    measured: dict[str, Measured] = {}
    cohort: dict[str, list[Cohort]] = {}
    rng = np.random.default_rng(1)
    for name, _, ds in fit_sets(args.data):
        print(f"{name}: distances of {len(ds.writers)} train+validate writers and their cohorts",
              file=sys.stderr, flush=True)
        provider = MemoClassic(config)
        measured[name] = measure_distances(ds, [FIT_K], 10, 0, provider)
        cohort[name] = cohorts(measured[name], provider, args.cohort, rng)
    priors = {n: population({o: m for o, m in measured.items() if o != n}) for n in measured}
    strength = config.prior.strength
    rows, base = [], None
    for label, rule in RULES.items():
        scores = {n: rule_scores(m, cohort[n], priors[n], rule, strength) for n, m in measured.items()}
        base = base or scores
        rows.append(row(label, scores, base))
        print(format_row(rows[-1]), flush=True)
    print(f"(skilled / random EER %, K = 5; in brackets skilled minus the shipped rule's ± its standard error "
          f"over writers; cohorts of {args.cohort}; {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
