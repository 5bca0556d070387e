"""Which parts a paper fusion should fuse: chosen by leaving each validation writer out in turn.

A fusion fitted on a handful of validation writers and judged on the same writers flatters
itself: on the 6 Dutch validation writers the three-part fusion (CNN, hand features, gradient
histograms) scored 11.76 % in-sample and 13.53 % when each writer was scored by a fusion fitted
without them, behind the CNN and the histograms without the hand features (12.86 %). So :func:`choose_fusion` fits every non-empty subset of the parts
on all writers but one, scores that writer's trials with it, and pools the held-out scores of
every writer into one skilled global EER (the evaluator's headline figure). The subset with the
lowest held-out EER wins; a subset within :data:`TIE` points of it with fewer parts wins
instead (a tie is noise, and fewer parts have less to get wrong on a new scanner). The winner
is then fitted on every writer, its unused parts weighted 0, so the kiosk's fusion keeps its
form (``models.paper`` fuses the CNN, the hand features and the gradient histograms).

A "writer" is the person: a cross-media identity (``writer/name``) is held out with the rest of
its writer's names. Pure functions over the evaluator's aligned per-part scores
(:class:`tools.evaluate.Scores`); ``sigkiosk eval offline --fit-fusion`` calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from models.fusion import Fusion, fit_fusion
from tools.evaluate import Scores, combine_scores
from tools.metrics import equal_error_rate

#: Held-out EERs (percentage points) this close count as equal: the fewer parts win.
TIE = 0.1
#: Writer bootstrap draws for the standard error reported beside each figure.
BOOTSTRAP = 200
_IMPOSTORS = ("skilled", "random")


@dataclass(frozen=True)
class HeldOut:
    """One subset of parts: its skilled global EER (%) with each writer scored by a fusion fitted
    without them, the writer-bootstrap standard error of that figure, the fusion fitted on every
    writer and its EER on the same writers (in-sample, for comparison only)."""

    names: tuple[str, ...]
    eer: float
    se: float
    in_sample: float
    fitted: Fusion


@dataclass(frozen=True)
class FusionChoice:
    """The fusion to ship (every part named, unused ones weighted 0) and the figures behind it."""

    fusion: Fusion
    chosen: HeldOut
    candidates: tuple[HeldOut, ...]
    writers: int

    def record(self) -> dict[str, object]:
        """What the fusion file keeps of the choice."""
        return {
            "rule": f"lowest skilled global EER with each writer held out ({self.writers} writers); "
                    f"within {TIE} point, fewer parts",
            "chosen": list(self.chosen.names),
            "held_out_eer_percent": {"+".join(h.names): h.eer for h in self.candidates},
            "held_out_se_percent": {"+".join(h.names): h.se for h in self.candidates},
            "in_sample_eer_percent": {"+".join(h.names): h.in_sample for h in self.candidates},
        }


def person(key: str) -> str:
    """The writer a plan's key belongs to (a cross-media identity is ``writer/name``)."""
    return key.split("/")[0]


def _writers(scores: Scores) -> list[str]:
    return sorted({person(k) for k in scores.genuine})


def _select(scores: Scores, keep: set[str], keys: bool = True) -> Scores:
    out = Scores()
    for kind in ("genuine", *_IMPOSTORS):
        setattr(out, kind, {k: v for k, v in getattr(scores, kind).items() if (person(k) in keep) == keys})
    return out


def _fit(parts: Mapping[str, Scores], names: Sequence[str]) -> Fusion:
    gen = np.column_stack([Scores.pooled(parts[n].genuine) for n in names])
    imp = np.vstack([np.column_stack([Scores.pooled(getattr(parts[n], kind)) for n in names]) for kind in _IMPOSTORS])
    return fit_fusion(tuple(names), gen, imp)


def _skilled_eer(per_writer: Mapping[str, tuple[list[float], list[float]]], writers: Sequence[str]) -> float:
    g = np.concatenate([per_writer[w][0] for w in writers])
    i = np.concatenate([per_writer[w][1] for w in writers])
    return 100 * equal_error_rate(g, i)[0]


def _by_writer(scores: Scores) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for kind, slot in (("genuine", 0), ("skilled", 1)):
        for k, v in getattr(scores, kind).items():
            out.setdefault(person(k), ([], []))[slot].extend(v)
    return out


def held_out(parts: Mapping[str, Scores], names: Sequence[str], seed: int = 0) -> HeldOut:
    """``names`` fused, each writer scored by the fusion fitted on the others."""
    writers = _writers(parts[names[0]])
    if len(writers) < 2:
        raise ValueError("need at least two writers to hold one out")
    fused = Scores()
    for w in writers:
        fit = _fit({n: _select(parts[n], {w}, keys=False) for n in names}, names)
        part = combine_scores([_select(parts[n], {w}) for n in names], fit.distance)
        for kind in ("genuine", *_IMPOSTORS):
            for k, v in getattr(part, kind).items():
                getattr(fused, kind)[k] = v
    per_writer = _by_writer(fused)
    pooled = [w for w in writers if w in per_writer]
    eer = _skilled_eer(per_writer, pooled)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(BOOTSTRAP):
        draw = list(rng.choice(pooled, size=len(pooled), replace=True))
        if any(per_writer[w][1] for w in draw) and any(per_writer[w][0] for w in draw):
            boots.append(_skilled_eer(per_writer, draw))
    full = _fit(parts, names)
    in_sample = _skilled_eer(_by_writer(combine_scores([parts[n] for n in names], full.distance)), pooled)
    return HeldOut(tuple(names), round(eer, 2), round(float(np.std(boots, ddof=1)), 2), round(in_sample, 2), full)


def choose_fusion(parts: Mapping[str, Scores], seed: int = 0) -> FusionChoice:
    """Every non-empty subset of ``parts`` held out writer by writer; the winner (see the module)
    fitted on every writer, with every part of ``parts`` named and the unused ones weighted 0."""
    names = tuple(parts)
    candidates = tuple(held_out(parts, subset, seed)
                       for r in range(1, len(names) + 1) for subset in combinations(names, r))
    best = min(h.eer for h in candidates)
    chosen = min((h for h in candidates if h.eer <= best + TIE), key=lambda h: (len(h.names), h.eer))
    fit = chosen.fitted
    weights = tuple(fit.weights[fit.names.index(n)] if n in fit.names else 0.0 for n in names)
    fusion = Fusion(names, weights, fit.bias, fit.threshold)
    return FusionChoice(fusion, chosen, candidates, len(_writers(parts[names[0]])))
