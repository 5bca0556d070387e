"""Equal-error-rate evaluation of the paper path: signature *images* (scans, photos).

The protocol, report keys and plots are those of :mod:`tools.evaluate` (the pen path): the same
``random-refs`` draws of K references among each writer's first 10 genuine signatures, the same
questioned samples (undrawn and later genuine ones, skilled forgeries, 20 other writers' genuine
ones as random forgeries), the same DsDTW-style user normalisation (the query's min and mean
distance to the references over the references' own) and the same EER code.

Verifiers
---------
``hand``: Euclidean distance between hand-made feature vectors (:mod:`models.hand_features`), each
feature divided by its typical within-writer spread. Learning-free: a baseline for the CNN.
``cnn``: distance between CNN-LSTM embeddings (:mod:`models.offline_embed`, the device's TFLite
runtime) of the one prepared 128×128 ink image (:func:`models.image_preprocess.prepare`).
``hog``: distance between histograms of oriented gradients of the prepared ink image
(:mod:`models.hog`). Learning-free.
``cnn+hand``: both user-normalised distances, fused (the CNN and the hand-made features see
different things: the fusion beats either alone on validation and test writers).
``cnn+hand+hog``: the three, fused: the kiosk's paper score (:mod:`models.paper`), the default.

Anomaly check (``anomaly=True``): for each draw, an Isolation Forest fitted on the draw's reference
hand features scores every questioned sample (:mod:`models.anomaly`); the verifier's normalised
distance and the anomaly score are combined by a logistic fusion (:class:`models.fusion.Fusion`)
fitted on the VALIDATION writers only and stored in ``models/assets/offline_fusion.json``, one
entry per ``--verifier``, with the command that fitted it (the entries ``hand`` and ``cnn`` fuse
the verifier with the anomaly check; the kiosk reads ``cnn+hand+hog`` and its ``@pad-ink`` twin,
``models.paper.FUSION_ENTRY``; the entry's names say which parts it fuses). The report's ``components`` give each part.

Everything expensive (reading, features, embeddings) is computed once per sample, up front: a
picture with no usable ink is then an error naming the file, or, with ``skip_malformed``, a
skipped file like any other.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models._assets import OFFLINE_FUSION_FILE, shipped_assets
from models.anomaly import AnomalyModel
from models.classic import score_from_distances
from models.fusion import Fusion, load_offline_fusion, offline_entry
from models.hand_features import FEATURE_NAMES, HAND_PRIOR, hand_distance, hand_features
from models.hog import (
    CENTRE_FILE,
    SHIPPED,
    HogCentre,
    HogConfig,
    centred,
    hog_distance,
    hog_turned,
    load_centre,
    shipped_centre,
)
from models.image_preprocess import NoInkError, prepare
from models.offline_embed import DEFAULT_MODEL, ImageEmbedder, embedding_distance
from models.paper import FUSION_ENTRY
from models.scoring import NormalisationPrior, pairwise, reference_stats
from tools.datasets.types import Dataset, ImageSample, MalformedFileError
from tools.evaluate import (
    DistanceProvider,
    EvalResult,
    FeatureCache,
    Scores,
    WriterPlan,
    combine_scores,
    evaluable_plans,
    make_report,
    plan,
    plan_distances,
)
from tools.evaluate_cross_media import PROTOCOLS as CROSS_MEDIA_PROTOCOLS
from tools.evaluate_cross_media import check_references, cross_media_plans, protocol_samples
from tools.fusion_cv import FusionChoice, choose_fusion

log = logging.getLogger(__name__)

VERIFIERS: tuple[str, ...] = ("hand", "cnn", "hog", "cnn+hand", "cnn+hand+hog")
#: The kiosk's paper score: the evaluator's default.
DEFAULT_VERIFIER = FUSION_ENTRY
#: random-refs (every set with forgeries) and the cross-media set's own (tools.evaluate_cross_media).
OFFLINE_PROTOCOLS: tuple[str, ...] = ("random-refs", *CROSS_MEDIA_PROTOCOLS)
ANOMALY = "anomaly"
ASSETS = shipped_assets()
DEFAULT_FUSION = ASSETS / OFFLINE_FUSION_FILE
_KINDS = ("genuine", "skilled", "random")


#: An image verifier is a provider of the one protocol (``tools.evaluate.DistanceProvider``): a
#: vector per picture, a distance between two vectors, the population prior.
OfflineProvider = DistanceProvider


@dataclass
class HandProvider:
    """The learning-free baseline: hand-made feature vectors, spread-weighted Euclidean distance."""

    prior: NormalisationPrior = HAND_PRIOR
    name: str = "hand"

    def features(self, sample: ImageSample) -> np.ndarray:
        return hand_features(sample.image)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return hand_distance(a, b)


class Prepared:
    """``prepare(sample.image)``, remembered for the last sample asked: the CNN and the gradient
    histograms read the same prepared picture, and the evaluator computes every part's features
    of one sample before the next (:func:`precompute`), so one picture is kept, not one per sample."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._picture: np.ndarray | None = None

    def __call__(self, sample: ImageSample) -> np.ndarray:
        if self._picture is None or sample.path != self._path:
            self._picture, self._path = prepare(sample.image), sample.path
        return self._picture


def _shipped_prior() -> NormalisationPrior:
    return shipped_centre().prior


@dataclass
class HogProvider:
    """Histograms of oriented gradients of the prepared ink image, as the kiosk computes them:
    centred on the shipped mean and normalised with its prior unless told otherwise
    (:meth:`centred_on` another folder's)."""

    prior: NormalisationPrior = field(default_factory=_shipped_prior)
    name: str = "hog"
    prepared: Callable[[ImageSample], np.ndarray] = field(default_factory=Prepared)
    #: The descriptor's settings: the kiosk's, or a variant ``tools.hog_variants`` compares.
    config: HogConfig = SHIPPED
    #: The mean each descriptor is centred on, as the kiosk does (``models.hog.hog_compared``);
    #: None: the histograms as they are (how ``tools.hog_variants`` compares its settings).
    centre: HogCentre | None = field(default_factory=shipped_centre)

    @classmethod
    def centred_on(cls, centre: HogCentre, prepared: Callable[[ImageSample], np.ndarray] | None = None) -> "HogProvider":
        """Centred on ``centre``'s mean and normalised with its prior, as a ``PaperVerifier``
        whose model folder holds it compares."""
        return cls(prior=centre.prior, prepared=prepared or Prepared(), centre=centre)

    def features(self, sample: ImageSample) -> np.ndarray:
        # Every turn, for references and questions alike: ``hog_distance`` reads the turns of the
        # first picture against the second as it is, as the kiosk's ``PaperVerifier`` compares.
        rows = hog_turned(self.prepared(sample), self.config)
        return rows if self.centre is None else centred(rows, self.centre.mean)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return hog_distance(a, b)


@dataclass
class CnnProvider:
    """The CNN-LSTM embedding of the prepared ink image, compared as the kiosk compares it
    (``models.offline_embed.embedding_distance``, the distance its prior was fitted with)."""

    embedder: Any
    compare: Callable[[np.ndarray, np.ndarray], float]
    name: str = "cnn"
    prepared: Callable[[ImageSample], np.ndarray] = field(default_factory=Prepared)

    @property
    def prior(self) -> NormalisationPrior:
        return self.embedder.config.prior

    def features(self, sample: ImageSample) -> np.ndarray:
        return self.embedder.embed(self.prepared(sample))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.compare(a, b)


def cnn_provider(model_path: Path | None = None, threads: int = 1,
                 prepared: Callable[[ImageSample], np.ndarray] | None = None) -> CnnProvider:
    """The CNN-LSTM verifier through the device runtime (``models.offline_embed``; any converted
    model with its config beside it). ``ModelError`` if the model is missing or unusable."""

    embedder = ImageEmbedder(Path(model_path) if model_path else DEFAULT_MODEL, threads=threads)
    return CnnProvider(embedder=embedder, compare=embedding_distance, prepared=prepared or Prepared())


def make_providers(verifier: str, model_path: Path | None = None, centre_path: Path | None = None
                   ) -> list[OfflineProvider]:
    """The providers of ``--verifier``: one, or several (``cnn+hand``, ``cnn+hand+hog``) fused by
    a stored fusion, in the order of the name. The histograms are centred on the mean at
    ``centre_path`` (the fusion's folder's, as on the kiosk; the shipped one if None):
    ``models.hog.CentreError`` if it is not usable."""
    if verifier not in VERIFIERS:
        raise ValueError(f"unknown offline verifier {verifier!r}; known: {', '.join(VERIFIERS)}")
    prepared = Prepared()   # one prepared picture for the CNN and the histograms

    def histograms() -> HogProvider:
        return HogProvider.centred_on(load_centre(centre_path) if centre_path else shipped_centre(), prepared)

    makers: dict[str, Callable[[], OfflineProvider]] = {
        "hand": HandProvider, "hog": histograms,
        "cnn": lambda: cnn_provider(model_path, prepared=prepared)}
    return [makers[part]() for part in verifier.split("+")]


def model_files(verifier: str, model_path: Path | None = None, fusion_path: Path | None = None,
                centre_path: Path | None = None) -> list[Path]:
    """The model files ``--verifier`` reads (hand: none; its prior is in the code; the histograms:
    their mean, ``centre_path`` or the shipped one), with the fusion file when the scores are
    fused by a stored fusion."""

    files: list[Path] = []
    if "cnn" in verifier:
        m = Path(model_path) if model_path else DEFAULT_MODEL
        files += [m, m.with_name(m.stem + ".config.json")]
    if "hog" in verifier:
        files.append(Path(centre_path) if centre_path else ASSETS / CENTRE_FILE)
    if fusion_path is not None:
        files.append(Path(fusion_path))
    return files


def precompute(
    dataset: Dataset[ImageSample], caches: Sequence[FeatureCache], skip_malformed: bool = False
) -> Dataset[ImageSample]:
    """Fill every cache for every sample. A picture without usable ink raises
    :class:`MalformedFileError` naming it, or with ``skip_malformed`` is left out and listed in
    the returned dataset's ``skipped``."""
    skipped = list(dataset.skipped)
    writers: dict[str, list[ImageSample]] = {}
    for w, samples in dataset.writers.items():
        kept = []
        for s in samples:
            try:
                for c in caches:
                    c(s)
            except NoInkError as e:
                err = MalformedFileError(s.path, None, f"no usable signature: {e}")
                if not skip_malformed:
                    raise err from None
                log.warning("skipped %s", err)
                skipped.append(err)
                continue
            kept.append(s)
        if kept:
            writers[w] = kept
    return Dataset(dataset.name, writers, skipped)


def score_offline(
    plans: Sequence[WriterPlan],
    provider: OfflineProvider,
    feats: Callable[[ImageSample], np.ndarray],
    hand: Callable[[ImageSample], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Scores, Scores | None]:
    """The verifier's user-normalised distances and, with ``hand``, the anomaly scores, trial for
    trial in the same order (the order of :func:`tools.evaluate.score_plans_multi`), so that
    they can be fused element-wise."""
    scores = Scores()
    anomaly = Scores() if hand is not None else None
    for n, p in enumerate(plans):
        questioned = {"genuine": p.later_genuine, "skilled": p.skilled, "random": p.random}
        d_cc, dq = plan_distances(p, feats, provider.distance)
        k = len(d_cc)
        if hand is not None:
            h_cand = np.array([hand(s) for s in p.candidates])
            h_q = {
                kind: np.array([hand(q) for q in questioned[kind]]).reshape(-1, len(FEATURE_NAMES))
                for kind in _KINDS
            }
        for draw in p.draws:
            idx = np.array(draw)
            refs_d = d_cc[np.ix_(idx, idx)]
            undrawn = sorted(set(range(k)) - set(draw)) if p.question_undrawn else []
            for kind in _KINDS:
                for row in dq[kind]:
                    scores.add(kind, p.writer, score_from_distances(row[idx], refs_d, provider.prior))
            for u in undrawn:
                scores.add("genuine", p.writer, score_from_distances(d_cc[u, idx], refs_d, provider.prior))
            if anomaly is not None:
                forest = AnomalyModel(h_cand[idx])
                for kind in _KINDS:
                    if len(h_q[kind]):
                        for v in forest.scores(h_q[kind]):
                            anomaly.add(kind, p.writer, float(v))
                if undrawn:
                    for v in forest.scores(h_cand[undrawn]):
                        anomaly.add("genuine", p.writer, float(v))
        if progress:
            progress(n + 1, len(plans))
    return scores, anomaly


@dataclass
class OfflineEvaluation:
    """What one run produced: the report, the scores it summarises, and each part's scores."""

    result: EvalResult
    parts: dict[str, Scores] = field(default_factory=dict)
    #: The fusion applied (fitted here with ``fit``), if any.
    fusion: Fusion | None = None
    #: With ``fit``: how the parts it fuses were chosen (writers held out in turn).
    choice: FusionChoice | None = None


def evaluate_offline(
    dataset: Dataset[ImageSample],
    *,
    providers: Sequence[OfflineProvider],
    protocol: str = "random-refs",
    references: int = 5,
    trials: int = 10,
    seed: int = 0,
    anomaly: bool = False,
    fusion: Fusion | None = None,
    fit: bool = False,
    skip_malformed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OfflineEvaluation:
    """EERs of one image verifier under ``protocol`` (``random-refs``, or one of the cross-media
    set's, :mod:`tools.evaluate_cross_media`); of several (and/or the anomaly check, ``anomaly``) fused by
    ``fusion``, or with ``fit`` by a fusion fitted on these very trials (only ever on
    validation writers: the figures of such a run are not a measurement), its parts chosen by
    holding each writer out in turn (:func:`tools.fusion_cv.choose_fusion`)."""
    providers = list(providers)
    if not providers:
        raise ValueError("no verifier to evaluate")
    names = tuple(pv.name for pv in providers) + ((ANOMALY,) if anomaly else ())
    if len(names) > 1 and fusion is None and not fit:
        raise ValueError(f"{' + '.join(names)} need a fusion (fit one on validate writers)")
    if fusion is not None and fusion.names != names:
        raise ValueError(f"fusion is fitted for {' + '.join(fusion.names)}, not {' + '.join(names)}")
    t0 = time.perf_counter()
    if protocol in CROSS_MEDIA_PROTOCOLS:
        check_references(protocol, references)
        dataset = protocol_samples(dataset, protocol)
    caches = [FeatureCache(pv.features) for pv in providers]
    hand: FeatureCache | None = None
    if anomaly:
        # The hand verifier's vectors are the anomaly check's: compute them once.
        same = [c for pv, c in zip(providers, caches) if isinstance(pv, HandProvider)]
        hand = same[0] if same else FeatureCache(lambda s: hand_features(s.image))
    dataset = precompute(dataset, [*caches, *([hand] if hand is not None else [])], skip_malformed)
    plans, excluded = offline_plans(dataset, protocol, references, trials, seed)
    parts: dict[str, Scores] = {}
    anom: Scores | None = None
    for i, (pv, cache) in enumerate(zip(providers, caches)):
        parts[pv.name], a = score_offline(plans, pv, cache, hand if i == 0 else None, progress if i == 0 else None)
        anom = a if i == 0 else anom
    if anom is not None:
        parts[ANOMALY] = anom
    verifier = "+".join(names)
    scores = next(iter(parts.values()))
    choice = None
    if len(parts) > 1:
        if fit:
            choice = choose_fusion(parts)
            fusion = choice.fusion
        assert fusion is not None
        scores = combine_scores(list(parts.values()), fusion.distance)
    report = make_report(dataset, protocol, references, trials, seed, verifier, parts, plans, excluded, scores, t0)
    if protocol in CROSS_MEDIA_PROTOCOLS:
        # A plan is an identity (writer, name) there: say how many of each.
        report["identities"] = len(plans)
        report["writers"] = len({p.writer.split("/")[0] for p in plans})
    return OfflineEvaluation(EvalResult(report=report, scores=scores, parts=list(parts.values())), parts, fusion, choice)


def offline_plans(
    dataset: Dataset[ImageSample], protocol: str, references: int, trials: int, seed: int
) -> tuple[list[WriterPlan], list[str]]:
    """The trials of ``protocol``: per writer (``random-refs``) or per cross-media identity."""
    if protocol not in CROSS_MEDIA_PROTOCOLS:
        return evaluable_plans(dataset, protocol, references, trials, seed)
    plans, excluded = cross_media_plans(dataset, protocol, references, trials, seed)
    if not plans:
        raise ValueError(f"no identity of {dataset.name} can be evaluated with {protocol} at K = {references}")
    return plans, excluded


def fusion_entry(verifier: str, anomaly: bool, pad_ink: bool = False) -> str:
    """The entry of ``offline_fusion.json`` for a verifier: a single verifier's entry fuses it with
    the anomaly check; several verifiers' entry (``cnn+hand``) fuses them alone, and
    ``cnn+hand+anomaly`` adds the anomaly check. ``pad_ink``: the entry for references of
    electronic ink against paper (``cnn+hand@pad-ink``)."""
    return offline_entry(f"{verifier}+{ANOMALY}" if anomaly and "+" in verifier else verifier, pad_ink)


def load_fusion(verifier: str, path: Path = DEFAULT_FUSION) -> Fusion:
    """The fusion stored for ``verifier`` in ``path`` (the kiosk's own loader; a pad-ink entry the
    file lacks is the paper one, as on the kiosk)."""
    return load_offline_fusion(path, verifier)


def save_fusion(verifier: str, fusion: Fusion, path: Path, provenance: dict[str, Any]) -> None:
    """Store ``fusion`` as ``verifier``'s entry of ``path``, keeping the other verifiers' entries."""
    path = Path(path)
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[verifier] = {"names": list(fusion.names), "weights": list(fusion.weights), "bias": fusion.bias,
                         "threshold": fusion.threshold, **provenance}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def within_writer_spread(dataset: Dataset[ImageSample]) -> np.ndarray:
    """Median over writers of each hand feature's std among the writer's genuine signatures
    (``models.hand_features.WITHIN_SPREAD`` was measured with this on the Dutch training writers:
    ``python -c "from tools.datasets import load_images; from tools.evaluate_offline import
    within_writer_spread as f; print(f(load_images(PATH, 'sigcomp-dutch').subset('train')).round(3))"``)."""
    stds = []
    for w in sorted(dataset.writers):
        g = np.array([hand_features(s.image) for s in dataset.genuine(w)])
        if len(g) >= 2:
            stds.append(g.std(axis=0, ddof=1))
    if not stds:
        raise ValueError("need writers with at least two genuine signatures")
    return np.median(np.array(stds), axis=0)


def fit_prior(dataset: Dataset[ImageSample], provider: OfflineProvider, references: int = 5,
              trials: int = 10) -> NormalisationPrior:
    """Mean within-reference min and mean distances of ``provider`` over the protocol's draws
    (give it training writers). ``HAND_PRIOR`` and the histograms' (``models.hog.HogCentre``) were fitted so on the Dutch
    training writers: ``python -c "from tools.datasets import load_images; from
    tools.evaluate_offline import fit_prior, HandProvider, HogProvider; print(fit_prior(load_images(PATH,
    'sigcomp-dutch').subset('train'), HogProvider()))"``."""

    plans, _ = plan(dataset, "random-refs", references, trials, seed=0)
    mins, means = [], []
    for p in plans:
        d = pairwise([provider.features(s) for s in p.candidates], provider.distance)
        for draw in p.draws:
            st = reference_stats(d[np.ix_(draw, draw)])
            mins.append(st.min_dist)
            means.append(st.mean_dist)
    if not mins:
        raise ValueError("no writer with enough genuine signatures to fit the prior")
    return NormalisationPrior(min_dist=round(float(np.mean(mins)), 2), mean_dist=round(float(np.mean(means)), 2))
