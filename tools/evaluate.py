"""Equal-error-rate evaluation of the pen verifier on a labelled dataset.

Protocols
---------
``random-refs`` (default): for each writer, ``trials`` draws of ``references`` references from the
writer's first 10 genuine signatures (of the first session, where the set has sessions). Questioned
against each draw: the writer's genuine signatures not drawn (only later sessions' ones, where the
set has sessions: a cross-session figure), all skilled forgeries of the writer, and one genuine
signature of each of 20 other writers (random forgeries; the same 20 for every draw).

``fixed-enrollment``: the set fixes the references (MCYT exercise layout: the enrollment files);
questioned: the labelled verification files and 20 other writers' enrollment signatures.

Every distance between two signatures is computed once and reused by every draw that needs it.

Verifiers: the protocol asks a :class:`DistanceProvider` for a sequence per sample and a distance
between two sequences; ``classic`` (DTW on time functions), ``learned`` (DTW on TS-GATR embeddings
from a TFLite model, through the device runtime) and ``fused`` (both, combined per trial by the
calibrated fusion) all go through the same draws, normalisation and EER code.
Global EER uses one threshold for all writers; user-mean EER averages per-writer EERs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Generic, Literal, TypeVar
from typing import Protocol as Interface

import numpy as np

from models._assets import DEFAULT_LEARNED_MODEL, shipped_assets
from models.classic import ClassicConfig, classic_distance, score_from_distances, signature_features
from models.dtw import dtw_distance
from models.fusion import fused_model_file, load_fused
from models.global_features import Spread, global_features
from models.learned import LearnedVerifier, config_path
from models.match_score import SHIPPED as SHIPPED_MATCH_SCORE
from models.match_score import ScoreModel
from models.scoring import NormalisationPrior, pairwise
from tools.datasets.types import Dataset, ImageSample, Label, OnlineSample, S
from tools.metrics import equal_error_rate, error_curve, frr_at_far, user_mean_eer
from tools.provenance import provenance
from tools.train.score_fit import KINDS, LearnedDistances, Trials, plan_trials

log = logging.getLogger(__name__)

Protocol = Literal["random-refs", "fixed-enrollment"]
PROTOCOLS: tuple[str, ...] = ("random-refs", "fixed-enrollment")
CANDIDATES = 10
RANDOM_FORGERS = 20


@dataclass
class WriterPlan(Generic[S]):
    """What one writer is tested with: candidate references, draws, and questioned samples (pen
    or image samples, ``S``: the protocol is the same)."""

    writer: str
    candidates: list[S]
    draws: list[tuple[int, ...]]
    later_genuine: list[S]
    skilled: list[S]
    random: list[S]
    #: With sessions, undrawn first-session candidates are not questioned (cross-session figure).
    question_undrawn: bool = True


@dataclass
class Scores:
    """Distance scores per writer, by kind of questioned sample."""

    genuine: dict[str, list[float]] = field(default_factory=dict)
    skilled: dict[str, list[float]] = field(default_factory=dict)
    random: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, writer: str, value: float) -> None:
        getattr(self, kind).setdefault(writer, []).append(value)

    @staticmethod
    def pooled(d: dict[str, list[float]]) -> np.ndarray:
        return np.array([v for vs in d.values() for v in vs], dtype=np.float64)


def _session(s: OnlineSample | ImageSample) -> int | None:
    """The sample's session; image sets have none (the protocol then has no cross-session part)."""
    return getattr(s, "session", None)


def _enrolled(s: OnlineSample | ImageSample) -> bool:
    return bool(getattr(s, "enrollment", False))


def _has_sessions(dataset: Dataset[OnlineSample] | Dataset[ImageSample]) -> bool:
    return any((n := _session(s)) is not None and n > 1 for ss in dataset.writers.values() for s in ss)


def plan(
    dataset: Dataset[S],
    protocol: str = "random-refs",
    references: int = 5,
    trials: int = 10,
    seed: int = 0,
) -> tuple[list[WriterPlan[S]], list[str]]:
    """Writer plans, plus the writers left out and why (too few signatures for the protocol).
    Pen and image datasets alike (the offline evaluator uses the same protocol)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if references < 1:
        raise ValueError("references must be at least 1")
    rng = np.random.default_rng(seed)
    sessions = _has_sessions(dataset)
    plans: list[WriterPlan[S]] = []
    excluded: list[str] = []
    writers = sorted(dataset.writers)
    # One genuine signature per writer that may serve as a random forgery for others.
    donors: dict[str, S] = {}
    for w in writers:
        g = [s for s in dataset.genuine(w) if _enrolled(s)] if protocol == "fixed-enrollment" else []
        g = g or dataset.genuine(w)
        if g:
            donors[w] = g[int(rng.integers(len(g)))]

    for w in writers:
        genuine = dataset.genuine(w)
        skilled = dataset.skilled(w)
        if protocol == "fixed-enrollment":
            cands = [s for s in genuine if _enrolled(s)]
            later = [s for s in genuine if not _enrolled(s)]
            if not cands:
                excluded.append(f"{w}: no enrollment signatures")
                continue
            draws = [tuple(range(len(cands)))]
            undrawn = False
        else:
            first_session = min((n for s in genuine if (n := _session(s)) is not None), default=None)
            if sessions:
                pool = [s for s in genuine if _session(s) == first_session]
                later = [s for s in genuine if _session(s) != first_session]
            else:
                pool, later = genuine, []
            cands = pool[:CANDIDATES]
            if not sessions:
                later = pool[CANDIDATES:]
            if len(cands) < references:
                excluded.append(f"{w}: {len(cands)} candidate references < {references}")
                continue
            undrawn = not sessions
            if not later and not (undrawn and len(cands) > references):
                excluded.append(f"{w}: no genuine signature left to question")
                continue
            draws = _draws(len(cands), references, trials, rng)
        others = [v for v in writers if v != w and v in donors]
        pick = rng.choice(len(others), size=min(RANDOM_FORGERS, len(others)), replace=False)
        plans.append(
            WriterPlan(
                writer=w,
                candidates=cands,
                draws=draws,
                later_genuine=later,
                skilled=skilled,
                random=[donors[others[int(k)]] for k in sorted(pick)],
                question_undrawn=undrawn,
            )
        )
    return plans, excluded


def _draws(n: int, k: int, trials: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    if k == n:
        return [tuple(range(n))]
    return [tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False))) for _ in range(trials)]


class FeatureCache:
    """Features of each sample, computed once (keyed by the sample's file path)."""

    def __init__(self, featurize: Callable[[Any], np.ndarray]) -> None:
        self._featurize = featurize
        self._cache: dict[Path, np.ndarray] = {}

    def __call__(self, s: OnlineSample | ImageSample) -> np.ndarray:
        f = self._cache.get(s.path)
        if f is None:
            f = self._cache[s.path] = self._featurize(s)
        return f


#: The kind of sample a provider reads (OnlineSample for the pen's, ImageSample for the paper's).
SampleT_contra = TypeVar("SampleT_contra", contravariant=True)


class DistanceProvider(Interface[SampleT_contra]):
    """What the protocol needs from a verifier: a sequence (or vector) per sample, a distance between
    two of them, and the population prior for user normalisation. The protocol (draws, questioned
    samples, normalisation, EER) is the same for every verifier, pen or image: a provider of one
    kind of sample is a ``DistanceProvider[OnlineSample]`` or ``DistanceProvider[ImageSample]``;
    the protocol's functions take either (``DistanceProvider`` alone)."""

    name: str

    @property
    def prior(self) -> NormalisationPrior: ...

    def features(self, sample: SampleT_contra) -> np.ndarray: ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float: ...


@dataclass
class ClassicProvider:
    """The classic verifier: DTW on z-scored time functions (``models.classic.classic_distance``)."""

    config: ClassicConfig = field(default_factory=ClassicConfig)
    name: str = "classic"

    @property
    def prior(self) -> NormalisationPrior:
        return self.config.prior

    def features(self, sample: OnlineSample) -> np.ndarray:
        return signature_features(sample.trajectory, self.config)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return classic_distance(a, b, self.config)


@dataclass
class EmbeddingProvider:
    """A learned verifier: DTW on embedding sequences from ``embed`` (a TFLite model on the
    device path, or a Keras model during training)."""

    embed: Callable[[OnlineSample], np.ndarray]
    prior: NormalisationPrior
    band: float = 0.15
    name: str = "learned"

    def features(self, sample: OnlineSample) -> np.ndarray:
        return self.embed(sample)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return dtw_distance(a, b, self.band)


#: ``match-score``: the classic verifier's distance and the global features, one calibrated
#: probability (``models.match_score``, the shipped ``match_score.json`` unless ``--model``).
VERIFIERS: tuple[str, ...] = ("classic", "learned", "fused", "match-score")
#: The shipped learned model (int8 student) and the fusion fitted on validation writers.
DEFAULT_MODEL = shipped_assets() / DEFAULT_LEARNED_MODEL


def learned_provider(model_path: Path = DEFAULT_MODEL, threads: int = 1) -> EmbeddingProvider:
    """The learned verifier through the device runtime (any converted TS-GATR model)."""

    ver = LearnedVerifier(model_path, threads=threads)
    return EmbeddingProvider(
        embed=lambda s: ver.embed(s.trajectory), prior=ver.config.prior, band=ver.config.band, name="learned"
    )


@dataclass(frozen=True)
class VerifierSetup:
    """What :func:`evaluate` needs for one ``--verifier``: the distance providers and either the
    combination of their distances (a two-distance fusion) or a score model that rescores the
    trials (the match score; the fused score, which also takes the learned distance)."""

    providers: list[DistanceProvider]
    combine: Callable[[np.ndarray], float] | None = None
    match_model: ScoreModel | None = None

    def evaluate(self, dataset: Dataset[OnlineSample], verifier: str, **kwargs: Any) -> EvalResult:
        return evaluate(dataset, providers=self.providers, combine=self.combine, match_model=self.match_model,
                        verifier=verifier, **kwargs)


def verifier_setup(verifier: str, model_path: Path | None = None, fusion_path: Path | None = None) -> VerifierSetup:
    """The setup of ``--verifier classic|learned|fused|match-score``, from the model files the
    kiosk would load: ``model_path`` is the TFLite model (learned, fused; default the shipped
    int8 student) or the match-score JSON (match-score; default the shipped one)."""
    if verifier == "classic":
        return VerifierSetup([ClassicProvider()])
    if verifier == "match-score":
        # The match score's trials are the classic ones rescored.
        return VerifierSetup([ClassicProvider()], match_model=ScoreModel.load(model_path or SHIPPED_MATCH_SCORE))
    model_path = model_path or DEFAULT_MODEL
    if verifier == "learned":
        return VerifierSetup([learned_provider(model_path)])
    if verifier == "fused":
        providers: list[DistanceProvider] = [ClassicProvider(), learned_provider(model_path)]
        fusion = load_fused(fused_file(model_path, fusion_path))
        if isinstance(fusion, ScoreModel):
            # The fused score's trials are the classic and learned ones rescored.
            return VerifierSetup(providers, match_model=fusion)
        if fusion.names != tuple(pv.name for pv in providers):
            raise ValueError(f"fusion is fitted for {fusion.names}, not classic + learned")
        return VerifierSetup(providers, combine=fusion.distance)
    raise ValueError(f"unknown verifier {verifier!r}; known: {', '.join(VERIFIERS)}")


def fused_file(model_path: Path = DEFAULT_MODEL, fusion_path: Path | None = None) -> Path:
    """The fused verifier's fusion as the kiosk finds it beside ``model_path``
    (``models.fusion.fused_model_file``), or ``fusion_path`` if given."""
    return Path(fusion_path) if fusion_path is not None else fused_model_file(Path(model_path).parent)


def plan_distances(
    p: WriterPlan, feats: Callable[[Any], np.ndarray], distance: Callable[[np.ndarray, np.ndarray], float]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every distance one writer's trials need, each computed once: candidate x candidate, and per
    kind of questioned sample (genuine, skilled, random) questioned x candidate."""
    questioned = {"genuine": p.later_genuine, "skilled": p.skilled, "random": p.random}
    cand = [feats(s) for s in p.candidates]
    dq = {
        kind: np.array([[distance(feats(q), c) for c in cand] for q in qs]).reshape(len(qs), len(cand))
        for kind, qs in questioned.items()
    }
    return pairwise(cand, distance), dq


def score_plans_multi(
    plans: Sequence[WriterPlan],
    providers: Sequence[DistanceProvider],
    progress: Callable[[int, int], None] | None = None,
) -> list[Scores]:
    """One :class:`Scores` per provider, trial for trial in the same order (so that they can be
    fused element-wise)."""
    caches = [FeatureCache(pv.features) for pv in providers]
    out = [Scores() for _ in providers]
    for n, p in enumerate(plans):
        for pv, feats, scores in zip(providers, caches, out):
            d_cc, dq = plan_distances(p, feats, pv.distance)
            score_plan(p, d_cc, dq, pv.prior, scores)
        if progress:
            progress(n + 1, len(plans))
    return out


def score_plan(
    p: WriterPlan, d_cc: np.ndarray, dq: dict[str, np.ndarray], prior: NormalisationPrior, scores: Scores
) -> None:
    """Add one writer's trials to ``scores``, from its distances (:func:`plan_distances`): every
    draw of references against every questioned sample, user-normalised with ``prior``. Apart
    from the distances so that they can be rescored with another prior (``tools.cross_device``)."""
    k = len(d_cc)
    for draw in p.draws:
        idx = np.array(draw)
        refs_d = d_cc[np.ix_(idx, idx)]
        for kind in ("genuine", "skilled", "random"):
            for row in dq[kind]:
                scores.add(kind, p.writer, score_from_distances(row[idx], refs_d, prior))
        if p.question_undrawn:
            for u in sorted(set(range(k)) - set(draw)):
                scores.add("genuine", p.writer, score_from_distances(d_cc[u, idx], refs_d, prior))


def measure_trials(
    plans: Sequence[WriterPlan],
    classic: ClassicProvider,
    spread: Spread,
    learned: DistanceProvider | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Trials, list[Scores]]:
    """Every trial of ``plans`` as a score model's input material (``Trials``: the classic
    user-normalised distance, the global features' deviations against ``spread`` and, with
    ``learned``, the learned distance), and beside them the classic and learned verifiers' own
    scores of the same trials, trial for trial."""
    feats, globals_of = FeatureCache(classic.features), globals_cache()
    learned_feats = FeatureCache(learned.features) if learned is not None else None
    trials, plain, own = Trials(), Scores(), Scores()
    for n, p in enumerate(plans):
        d_cc, dq = plan_distances(p, feats, classic.distance)
        score_plan(p, d_cc, dq, classic.prior, plain)
        ld = None
        if learned is not None and learned_feats is not None:
            l_cc, lq = plan_distances(p, learned_feats, learned.distance)
            score_plan(p, l_cc, lq, learned.prior, own)
            ld = LearnedDistances(l_cc, lq, learned.prior)
        plan_trials(p, d_cc, dq, classic.prior, globals_of, spread, trials, ld)
        if progress:
            progress(n + 1, len(plans))
    return trials, [plain] + ([own] if learned is not None else [])


def score_plans_match(
    plans: Sequence[WriterPlan],
    classic: ClassicProvider,
    model: ScoreModel,
    progress: Callable[[int, int], None] | None = None,
    learned: DistanceProvider | None = None,
) -> list[Scores]:
    """The match score of every trial (as minus its logit: lower is more genuine, so that the EER
    code treats it as a distance), the classic verifier's score of the same trials and, with
    ``learned`` (which a fused score model needs), the learned verifier's, trial for trial. The
    same arithmetic as the kiosk's ``MatchScoreVerifier`` and ``FusedVerifier``: the
    user-normalised distances and the global features' deviations from the drawn references,
    through the model."""
    if model.uses_learned and learned is None:
        raise ValueError("a fused score model needs the learned verifier's distances")
    trials, parts = measure_trials(plans, classic, model.spread, learned, progress)
    match = Scores()
    add_match_scores(trials, model, match)
    return [match, *parts]


def globals_cache() -> FeatureCache:
    """Global features per sample, computed once (keyed by file, like the DTW features)."""
    return FeatureCache(lambda s: global_features(s.trajectory))


def add_match_scores(trials: Trials, model: ScoreModel, out: Scores) -> None:
    """Each trial's match score added to ``out`` as minus its logit (lower is more genuine, so
    that the EER code treats it as a distance), in the trials' order."""
    for kind in KINDS:
        if trials.classic[kind]:
            for w, v in zip(trials.writer[kind], model.logit(trials.model_inputs(model, kind))):
                out.add(kind, w, -float(v))


def score_plans(
    plans: Sequence[WriterPlan],
    config: ClassicConfig = ClassicConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> Scores:
    """The classic verifier's scores (see :func:`score_plans_multi` for any verifier)."""
    return score_plans_multi(plans, [ClassicProvider(config)], progress)[0]


def combine_scores(parts: Sequence[Scores], combine: Callable[[np.ndarray], float]) -> Scores:
    """Element-wise combination of aligned scores: ``combine`` maps one trial's vector of
    per-verifier normalised distances to one distance-like value (lower is more genuine)."""
    out = Scores()
    for kind in ("genuine", "skilled", "random"):
        first = getattr(parts[0], kind)
        for w, vals in first.items():
            cols = [getattr(pt, kind)[w] for pt in parts]
            for i in range(len(vals)):
                out.add(kind, w, combine(np.array([c[i] for c in cols])))
    return out


def summarise(scores: Scores, kind: Literal["skilled", "random"]) -> dict[str, float] | None:
    impostor = getattr(scores, kind)
    g_all, i_all = Scores.pooled(scores.genuine), Scores.pooled(impostor)
    if g_all.size == 0 or i_all.size == 0:
        return None
    eer, thr = equal_error_rate(g_all, i_all)
    per_user = {
        w: (np.array(scores.genuine[w]), np.array(impostor[w]))
        for w in scores.genuine
        if w in impostor and scores.genuine[w] and impostor[w]
    }
    return {
        "eer_global": round(100 * eer, 3),
        "eer_user_mean": round(100 * user_mean_eer(per_user), 3),
        "frr_at_far_1": round(100 * frr_at_far(g_all, i_all, 0.01), 3),
        "threshold_global": round(thr, 6),
        "genuine_trials": int(g_all.size),
        "impostor_trials": int(i_all.size),
        "writers": len(per_user),
    }


@dataclass
class EvalResult:
    report: dict
    scores: Scores
    #: Per-verifier scores when several were fused (else the one scores object).
    parts: list[Scores] = field(default_factory=list)


def evaluate(
    dataset: Dataset[OnlineSample],
    *,
    protocol: str = "random-refs",
    references: int = 5,
    trials: int = 10,
    seed: int = 0,
    config: ClassicConfig = ClassicConfig(),
    progress: Callable[[int, int], None] | None = None,
    providers: Sequence[DistanceProvider] | None = None,
    combine: Callable[[np.ndarray], float] | None = None,
    verifier: str = "classic",
    match_model: ScoreModel | None = None,
) -> EvalResult:
    """EERs of one verifier. By default the classic one; otherwise ``providers`` (one, or several
    whose normalised distances ``combine`` fuses into one value, lower is more genuine), or with
    ``match_model`` the match score on the classic verifier's trials (the classic figures are then
    reported beside it as a component; a fused score model also takes the learned distances of
    ``providers``' learned one)."""
    t0 = time.perf_counter()
    plans, excluded = evaluable_plans(dataset, protocol, references, trials, seed)
    if match_model is not None:
        learned = next((pv for pv in providers or () if pv.name == "learned"), None)
        parts = score_plans_match(plans, ClassicProvider(config), match_model, progress, learned)
        scores = parts[0]
        report = make_report(dataset, protocol, references, trials, seed, verifier,
                             {verifier: scores}, plans, excluded, scores, t0)
        report["components"] = {name: summarise(pt, "skilled") for name, pt in zip(("classic", "learned"), parts[1:])}
        return EvalResult(report=report, scores=scores, parts=parts)
    providers = list(providers) if providers else [ClassicProvider(config)]
    parts = score_plans_multi(plans, providers, progress)
    if len(parts) > 1:
        if combine is None:
            raise ValueError("several verifiers need a combine function (fusion)")
        scores = combine_scores(parts, combine)
    else:
        scores = parts[0]
    report = make_report(dataset, protocol, references, trials, seed, verifier,
                         dict(zip((pv.name for pv in providers), parts)), plans, excluded, scores, t0)
    return EvalResult(report=report, scores=scores, parts=parts)


def evaluable_plans(
    dataset: Dataset, protocol: str, references: int, trials: int, seed: int
) -> tuple[list[WriterPlan], list[str]]:
    """:func:`plan`, refusing a dataset of which no writer can be evaluated (the others are logged)."""
    plans, excluded = plan(dataset, protocol, references, trials, seed)
    if not plans:
        raise ValueError(f"no writer of {dataset.name} can be evaluated: {'; '.join(excluded) or 'empty'}")
    for e in excluded:
        log.info("writer left out: %s", e)
    return plans, excluded


def make_report(
    dataset: Dataset, protocol: str, references: int, trials: int, seed: int, verifier: str,
    parts: dict[str, Scores], plans: Sequence[WriterPlan], excluded: list[str], scores: Scores, started: float,
) -> dict:
    """The report every evaluator writes (same keys for pen and image verifiers); ``components``
    lists each part's skilled figures when several were fused."""
    return {
        "dataset": dataset.name,
        "protocol": protocol,
        "references": references,
        "trials": trials,
        "seed": seed,
        "verifier": verifier,
        "components": {name: summarise(pt, "skilled") for name, pt in parts.items()} if len(parts) > 1 else None,
        "writers": len(plans),
        "excluded_writers": excluded,
        "skipped_files": [str(e) for e in dataset.skipped],
        "clock_repairs": dataset.clock_repairs(),
        "skilled": summarise(scores, "skilled"),
        "random": summarise(scores, "random"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def format_table(report: dict) -> str:
    head = (
        f"{report['dataset']}  protocol={report['protocol']}  K={report['references']}  "
        f"writers={report['writers']}  verifier={report.get('verifier', 'classic')}"
    )
    lines = [head, f"{'forgeries':<10} {'EER global %':>13} {'EER user-mean %':>16} {'FRR@FAR1% %':>12}"]
    for kind in ("skilled", "random"):
        r = report.get(kind)
        if r is None:
            lines.append(f"{kind:<10} {'n/a':>13} {'n/a':>16} {'n/a':>12}")
        else:
            lines.append(
                f"{kind:<10} {r['eer_global']:>13.2f} {r['eer_user_mean']:>16.2f} {r['frr_at_far_1']:>12.2f}"
            )
    for name, part in (report.get("components") or {}).items():
        if part:
            lines.append(f"  component {name:<11} skilled EER global {part['eer_global']:.2f} %  "
                         f"user-mean {part['eer_user_mean']:.2f} %")
    return "\n".join(lines)


def write_json(report: dict, path: Path, models: Sequence[Path] = ()) -> None:
    """The report as JSON, with what made it: the command, the code's commit and the SHA-256 of
    every model file used (``models``: a model, its config, the fusion), so a figure can be traced."""

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, **provenance(models)}, indent=2) + "\n")


def model_files(verifier: str, model_path: Path = DEFAULT_MODEL, fusion_path: Path | None = None) -> list[Path]:
    """The model files ``--verifier`` reads (classic: none; its settings are in the code)."""

    if verifier == "classic":
        return []
    if verifier == "match-score":
        return [Path(model_path) if Path(model_path).suffix == ".json" else SHIPPED_MATCH_SCORE]
    files = [Path(model_path), config_path(Path(model_path))]
    if verifier == "fused":
        files.append(fused_file(model_path, fusion_path))
    return files


def plot_title(report: dict) -> str:
    """What a plot shows, told apart from the other plots of the same data: the set, the writers,
    the verifier and K (the classic and the fused histograms of one set used to share a title)."""
    split = report.get("split", "all")
    writers = "all writers" if split == "all" else f"{split} writers"
    return f"{report['dataset']} ({writers}), {report.get('verifier', 'classic')} verifier, K={report['references']}"


def plot_marks(scores: Scores) -> dict[str, dict[str, float]]:
    """Per kind of impostor, the equal error rate (%) and the global threshold that attains it:
    what the plots mark (the same figures as the report's ``eer_global`` and ``threshold_global``)."""
    g = Scores.pooled(scores.genuine)
    marks = {}
    for kind in ("skilled", "random"):
        imp = Scores.pooled(getattr(scores, kind))
        if imp.size and g.size:
            eer, thr = equal_error_rate(g, imp)
            marks[kind] = {"eer": round(100 * eer, 3), "threshold": round(thr, 6)}
    return marks


def write_plots(scores: Scores, out_dir: Path, title: str) -> list[Path]:
    """A DET curve (normal-deviate axes) with each EER marked on the FAR = FRR diagonal, and score
    histograms with the global EER thresholds drawn, as PNG files. Each PNG carries its title and
    the marks (JSON) in its metadata (``Title``, ``Description``), so they can be read back."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    marks = plot_marks(scores)
    nd = NormalDist()
    # The usual DET window, 0.05 % to 60 %: rates outside it are drawn on its edge.
    lo, hi = 0.0005, 0.6
    probit = np.vectorize(lambda p: nd.inv_cdf(min(max(p, lo), hi)))
    ticks = np.array([0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    g = Scores.pooled(scores.genuine)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot(probit([lo, hi]), probit([lo, hi]), color="0.6", lw=0.8, ls=":", label="FAR = FRR")
    for kind in ("skilled", "random"):
        imp = Scores.pooled(getattr(scores, kind))
        if imp.size and g.size:
            c = error_curve(g, imp)
            (line,) = ax.plot(probit(c.far), probit(c.frr), label=f"{kind} forgeries")
            e = marks[kind]["eer"] / 100
            ax.plot(probit(e), probit(e), "o", color=line.get_color(), label=f"{kind} EER {100 * e:.2f} %")
    ax.set_xticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(probit(lo), probit(hi))
    ax.set_ylim(probit(lo), probit(hi))
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    det_title = f"DET: {title}"
    ax.set_title(det_title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    det = out_dir / "det.png"
    fig.savefig(det, dpi=110, bbox_inches="tight", metadata={"Title": det_title, "Description": json.dumps(marks)})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    everything = np.concatenate([Scores.pooled(getattr(scores, k)) for k in ("genuine", "skilled", "random")])
    # Fused values (minus a logit) go below 0; plain distances start at 0 as before.
    lo = min(0.0, float(np.percentile(everything, 0.5)))
    bins = np.linspace(lo, np.percentile(everything, 99.5), 60)
    for kind in ("genuine", "skilled", "random"):
        v = Scores.pooled(getattr(scores, kind))
        if v.size:
            ax.hist(v, bins=bins.tolist(), alpha=0.5, density=True, label=kind)
    for kind, ls in (("skilled", "--"), ("random", ":")):
        if kind in marks:
            m = marks[kind]
            ax.axvline(m["threshold"], color="k", ls=ls, lw=1,
                       label=f"{kind} EER threshold {m['threshold']:.3g} (EER {m['eer']:.2f} %)")
    ax.set_xlabel("user-normalised distance (lower is more genuine)" if lo == 0.0
                  else "fused score: minus the logit (lower is more genuine)")
    hist_title = f"Scores: {title}"
    ax.set_title(hist_title, fontsize=9)
    ax.legend(fontsize=8)
    hist = out_dir / "histogram.png"
    fig.savefig(hist, dpi=110, bbox_inches="tight", metadata={"Title": hist_title, "Description": json.dumps(marks)})
    plt.close(fig)
    return [det, hist]


def label_counts(dataset: Dataset[OnlineSample]) -> dict[str, int]:
    return {
        lbl.value: sum(1 for ss in dataset.writers.values() for s in ss if s.label is lbl) for lbl in Label
    }
