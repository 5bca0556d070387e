"""The pen verifiers: a signature written on the pad against the customer's reference set.

The classic verifier (``models.classic``) is the base of the others; :class:`FusedVerifier`
(learned TFLite model + classic + the signature's global features, ``models.match_score``'s
fused model; ``[verifier] kind = "fused"``) is the same
:class:`models.verification.PenVerifier` and is swapped in when the model-update agent installs a
bundle; the daemon then enrolls every cached customer again from the stored reference
trajectories, and a reference set built by another model is refused, so features of two
different models are never compared.

The verdict carries a match rate for people and per-aspect checks - shape, speed, pressure,
rhythm - that say *why*. The decision itself is the overall score against the one global
threshold (:class:`models.policy.DecisionPolicy`); the aspects explain it, they do not vote
(except rhythm, when the policy's rhythm rule is on).

This module imports numpy, numba (DTW) and :mod:`models.runtime` only: no TensorFlow, no
scikit-learn on the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models._assets import DEFAULT_LEARNED_MODEL, FUSED_SCORE_FILE, digest, shipped_assets
from models.classic import (
    ClassicConfig,
    build_template,
    build_template_with_groups,
    classic_distance,
    comparable,
    score_query_with_groups,
    signature_features,
)
from models.global_features import deviations, global_features
from models.path_copy import MIN_PATH_REFERENCES, copy_print, nearest_ratio, print_pairs
from models.policy import ASPECT_LABELS, PATH_COPY_RATIO, AspectCheck, DecisionPolicy, Verdict, match_rate
from models.preprocess import PreparedSignature, PreprocessConfig, prepare, prepared_time_functions
from models.runtime import ModelError
from models.scoring import ReferenceStats, ScoredReferences, normalised_distance, reference_stats
from models.trajectory import Trajectory
from models.verification import PenVerifier, ReferenceSet, build_key

#: The band every classic model version was built with before versions named it: a config with
#: another band says "-band" in its version. A literal, not ``models.dtw.DEFAULT_BAND``, so that
#: changing DTW's default can never give a new distance an old version's name.
UNNAMED_BAND = 0.15

#: What the decision says when a pad changed since enrollment and pressure was compared on neither
#: side (``models.classic.comparable``).
PRESSURE_NOT_MEASURED = "Pressure was not compared: none was measured for this signature, though the references have it."
PRESSURE_NOT_IN_REFERENCES = "Pressure was not compared: the references were signed without it."
#: The pad's own points, as the copy check's second path takes them (``models.path_copy``): not
#: resampled in time, not smoothed.
AS_SAMPLED = PreprocessConfig(resample_hz=None)
#: What the decision says when the written path retraces a reference's (``models.path_copy``) and
#: the verifier's own distance did not already call it a copy.
RETRACES_A_REFERENCE = ("The signature retraces one of the customer's references point for point, "
                        "whatever its pace: a replayed recording or a tracing, not a new signature.")
#: ... and when it retraces a signature the customer gave this kiosk before (``seen``).
RETRACES_AN_EARLIER = ("The signature retraces one the customer gave at this kiosk before, point for point, "
                       "whatever its pace: a replayed recording, not a new signature.")

#: Which time functions speak for which aspect (names from ``models.features.FEATURE_NAMES``).
ASPECT_FEATURES: dict[str, tuple[str, ...]] = {
    "shape": ("x", "y", "cos", "sin", "dangle", "log_radius"),
    "speed": ("dx", "dy", "speed", "acceleration", "centripetal"),
    "pressure": ("pressure", "dpressure"),
}


@dataclass(frozen=True, eq=False)
class ClassicFeatures:
    """What the classic verifier keeps of a customer's references."""

    references: ScoredReferences                    # all time functions, DTW-compared
    aspect_stats: dict[str, ReferenceStats]         # per aspect, DTW on its columns alone
    durations: np.ndarray                           # reference pen-down times (rhythm)
    prints: tuple[np.ndarray, ...]                  # written paths (models.path_copy.copy_print), the copy check's
    print_pairs: np.ndarray                         # their nearest pair, per kind of path


@dataclass(frozen=True, eq=False)
class FusedFeatures:
    classic: ClassicFeatures
    #: The learned model's embeddings; None when the model weighs the learned distance 0.
    learned: ScoredReferences | None
    #: K x global features; None unless the fused score model takes some.
    globals: np.ndarray | None = None


class ClassicVerifier:
    """DTW on normalised time functions, user-normalised (``models.classic``); no model files."""

    name = "classic"

    def __init__(self, config: ClassicConfig | None = None, *, too_similar_ratio: float = 0.2,
                 rhythm_tolerance: float = 3.0, rhythm_decides: bool = False,
                 path_copy_ratio: float = PATH_COPY_RATIO) -> None:
        self.config = config or ClassicConfig()
        # The threshold is the classic config's (one definition, shared with the evaluator).
        self.policy = DecisionPolicy(self.config.threshold, too_similar_ratio=too_similar_ratio,
                                     rhythm_tolerance=rhythm_tolerance, rhythm_decides=rhythm_decides,
                                     path_copy_ratio=path_copy_ratio)

    def model_versions(self) -> dict[str, str]:
        p = self.policy
        # "2": the distance has two warping paths (2026-11-27); "-rest2": the direction is held
        # where the pen rests two points or more (2026-11-27); "-jag0.6": jagged signatures are
        # smoothed to 0.6 (2026-11-28); "-band0.2": the warping paths' band is not UNNAMED_BAND
        # (0.2 since 2026-11-28); "-np1.138": distances between signatures without pressure are
        # scaled (ClassicConfig.no_pressure_scale, since 2026-11-29; 1 before, unnamed). A reference
        # set or a site's LOO scores built otherwise hold distances on another scale and are built
        # again.
        classic = "2" if self.config.two_paths else "1"
        if self.config.hold_still_direction:
            classic += f"-rest{self.config.hold_still_direction}"
        if self.config.preprocess.smooth_jagged is not None:
            classic += f"-jag{self.config.preprocess.smooth_jagged:g}"
        if self.config.band != UNNAMED_BAND:
            classic += f"-band{self.config.band:g}"
        if self.config.no_pressure_scale != 1.0:
            classic += f"-np{self.config.no_pressure_scale:g}"
        return {"classic": classic,
                "threshold": f"{p.threshold:g}",
                "rhythm": f"{p.rhythm_tolerance:g}" if p.rhythm_decides else "off"}

    def _aspect_groups(self) -> dict[str, tuple[int, ...]]:
        """Each aspect's columns among the compared features (aspects with none are left out)."""
        names = self.config.features
        groups = {aspect: tuple(i for i, n in enumerate(names) if n in wanted)
                  for aspect, wanted in ASPECT_FEATURES.items()}
        return {aspect: cols for aspect, cols in groups.items() if cols}

    def build_key(self) -> str:
        """What a reference set it builds must be built with (``ReferenceSet.build``)."""
        return build_key(self.config)

    def enroll(self, references: Sequence[Trajectory]) -> ReferenceSet[ClassicFeatures]:
        return ReferenceSet(self.name, self.model_versions(), len(references), self.features(references),
                            build=self.build_key())

    def features(self, references: Sequence[Trajectory]) -> ClassicFeatures:
        """The classic features of ``references`` (the fused verifier keeps them inside its own)."""
        feats = [signature_features(r, self.config) for r in references]
        aspects = self._aspect_groups()
        tpl, parts = build_template_with_groups(feats, self.config, list(aspects.values()))
        aspect_stats = {a: reference_stats(d) for a, d in zip(aspects, parts)}
        prints = tuple(self.print_of(f, r) for f, r in zip(feats, references))
        return ClassicFeatures(tpl, aspect_stats, np.array([r.ink_time for r in references]), prints,
                               print_pairs(prints))

    def print_of(self, features: np.ndarray, traj: Trajectory) -> np.ndarray:
        """The written paths the copy check compares (``models.path_copy.copy_print``): through the
        positions of ``features`` (:func:`signature_features` of ``traj``; prepared anew when the
        config compares no positions) and through the pad's own points."""
        names = self.config.features
        if "x" in names and "y" in names:
            compared = features[:, [names.index("x"), names.index("y")]]
        else:
            prep = prepare(traj, self.config.preprocess)
            compared = np.stack([prep.x, prep.y], axis=1)
        own = prepare(traj, AS_SAMPLED)
        return copy_print(compared, np.stack([own.x, own.y], axis=1))

    def copy_print(self, query: Trajectory) -> np.ndarray:
        """What the copy check compares of ``query`` (:meth:`print_of`): what a kiosk keeps of a
        signature to tell a replay of it later (``verify(..., seen=...)``)."""
        return self.print_of(signature_features(query, self.config), query)

    def verify(self, reference_set: ReferenceSet[ClassicFeatures], query: Trajectory, *,
               seen: Sequence[np.ndarray] = ()) -> Verdict:
        """``seen``: :meth:`copy_print` of signatures the customer gave before (not references):
        a question that retraces one is a copy too."""
        return self.verify_features(reference_set.features_for(self.name, self.model_versions(), self.build_key()),
                                    query, seen=seen)

    def verify_features(self, refs: ClassicFeatures, query: Trajectory,
                        shared: PreparedSignature | None = None, *, seen: Sequence[np.ndarray] = ()) -> Verdict:
        cfg = self.config
        feats = signature_features(query, cfg, shared)
        template = refs.references
        # A pad changed since enrollment is compared on what both pads measure (without this a
        # pressure-less question against pressure references let 13 % of SUSIG-Visual's skilled
        # forgeries through, where 7 % pass when both lack it). References that must drop their
        # pressure have their own distances measured again: 10 DTWs at K = 5.
        question_lacks = cfg.lacks_pressure(feats)
        feats, dropped = comparable(feats, template.references, cfg)
        if dropped is not None:
            template = build_template(dropped, cfg)
        unpressed = cfg.lacks_pressure(feats)   # compared without pressure
        explanations: tuple[str, ...] = ()
        if unpressed and not (question_lacks and dropped is None):
            # Pressure set aside because one side has none: staff should know the pad changed.
            explanations = (PRESSURE_NOT_MEASURED if question_lacks else PRESSURE_NOT_IN_REFERENCES,)
        aspects = self._aspect_groups()
        score, parts = score_query_with_groups(template, feats, cfg, list(aspects.values()))
        checks = []
        for aspect, dists in zip(aspects, parts):
            if aspect == "pressure" and unpressed:
                # A pad without a pressure sensor gets no "Pressure" check (it would always
                # match, on nothing).
                continue
            d = normalised_distance(dists, refs.aspect_stats[aspect], cfg.prior)
            checks.append(AspectCheck(aspect, ASPECT_LABELS[aspect], match_rate(d, cfg.threshold), d <= cfg.threshold))
        checks.append(self.policy.rhythm(refs.durations, query.ink_time))
        too_similar = self.policy.is_copy(min(score.ref_distances), template.nearest_pair)
        # On the written path too: a reference replayed at another pace or sampling rate is as far
        # as a genuine signature on the time functions (README, "The copy check on the written path").
        why = None if too_similar else self.path_copy_reason(feats, query, refs.prints, refs.print_pairs, seen)
        if why is not None:
            too_similar = True
            explanations = (*explanations, why)
        return self.policy.decide(score.distance, checks, too_similar=too_similar, explanations=explanations)

    def path_copy_reason(self, features: np.ndarray, query: Trajectory, prints: Sequence[np.ndarray],
                         pairs: np.ndarray, seen: Sequence[np.ndarray] = ()) -> str | None:
        """Why ``query`` (``features``: its :func:`signature_features`) is a copy on its written
        paths (``RETRACES_A_REFERENCE``, ``RETRACES_AN_EARLIER``), against the references'
        ``prints`` and their ``pairs`` (``models.path_copy.print_pairs``) and the prints ``seen``
        before; None when it is not, or with too few references to tell. Only whether it is under
        the line matters: a path past it is abandoned early. A signature given before is measured
        on the references' spread too (how far apart this customer's genuine signatures always
        are), against a stricter line (``DecisionPolicy.seen_copy_ratio``)."""
        if len(prints) < MIN_PATH_REFERENCES:
            return None
        p = self.policy
        qprint = self.print_of(features, query)
        for against, earlier, why in ((prints, False, RETRACES_A_REFERENCE), (seen, True, RETRACES_AN_EARLIER)):
            line = p.path_copy_line(earlier=earlier)
            if len(against) and p.is_path_copy(nearest_ratio(qprint, against, pairs, line), earlier=earlier):
                return why
        return None

    def warm_up(self, sample: Trajectory) -> None:
        """Compile the JIT kernels before the first customer (numba compiles on first call; the
        kernel of each set of column groups once per process, about a second or two here): the
        verifier's, and the classic distance's alone, which the enrollment check takes."""
        self.verify(self.enroll([sample, sample]), sample)
        feats = signature_features(sample, self.config)
        classic_distance(feats, feats, self.config)


class OnClassic:
    """A pen verifier whose score takes the classic verifier's distance as an input (fused,
    match-score): it enrolls with the classic config, keeps the classic copy check and rhythm rule
    on its own operating point, and names the classic part in its versions."""

    classic: ClassicVerifier
    _versions: dict[str, str]

    def _policy_at(self, threshold: float) -> DecisionPolicy:
        """The classic part's copy check and rhythm rule, on this verifier's probability threshold."""
        cp = self.classic.policy
        return DecisionPolicy.on_probability(threshold, too_similar_ratio=cp.too_similar_ratio,
                                             rhythm_tolerance=cp.rhythm_tolerance, rhythm_decides=cp.rhythm_decides,
                                             path_copy_ratio=cp.path_copy_ratio, seen_copy_ratio=cp.seen_copy_ratio)

    @property
    def config(self) -> ClassicConfig:
        """The classic config (enrollment's consistency checks use it)."""
        return self.classic.config

    def copy_print(self, query: Trajectory) -> np.ndarray:
        """The classic part's (:meth:`ClassicVerifier.copy_print`)."""
        return self.classic.copy_print(query)

    def model_versions(self) -> dict[str, str]:
        # The classic distance is an input: its prior and features are part of the model.
        cv = self.classic.model_versions()
        return {**self._versions, "classic": cv["classic"], "rhythm": cv["rhythm"]}


class FusedVerifier(OnClassic):
    """Learned (TFLite embeddings + DTW) and classic verifiers, and the signature's global
    features, fused into one calibrated probability.

    The model is ``fused_score.json`` (``models.match_score.ScoreModel`` with the learned distance
    as an input beside the classic one: the match score with the learned verifier mixed in,
    ``tools/train/fusion_fit.py``). A model directory without one (an update bundle built before
    it) fuses the two distances alone with its ``fusion.json`` (``models.fusion``), as it did.
    The classic part is the :class:`ClassicVerifier` itself: its features, its distance, its
    aspect checks (which explain, as before), its copy check (``too_similar``) and optional
    rhythm rule.

    ``Verdict.match_rate`` keeps its meaning (0.5 exactly at the operating point): it is the
    calibrated probability with its logit shifted by the operating point's; ``Verdict.distance``
    is the fused distance (minus the calibrated logit; lower is more genuine).
    """

    name = "fused"

    def __init__(self, model_dir: Path, classic: ClassicVerifier | None = None, *, threads: int = 1,
                 model_file: str | None = None, versions: Mapping[str, str] | None = None) -> None:
        from models.fusion import Fusion, fused_model_file, load_fused
        from models.learned import LearnedVerifier, config_path
        from models.match_score import ScoreModel

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelError(f"fused verifier: model directory not found: {self.model_dir}")
        model_path = self.model_dir / model_file if model_file else _pick_model(self.model_dir)
        fusion_path = fused_model_file(self.model_dir)
        for p in (model_path, config_path(model_path), fusion_path):
            if not p.is_file():
                raise ModelError(f"fused verifier: {p.name} missing in {self.model_dir}")
        try:
            loaded = load_fused(fusion_path)
            # Each file holds its own form: a fused score is never read as a two-distance fusion.
            if (fusion_path.name == FUSED_SCORE_FILE) != isinstance(loaded, ScoreModel):
                raise ValueError(f"{fusion_path.name} does not hold the form its name says")
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"fused verifier: {fusion_path} is not a valid fusion: {exc}") from None
        self.score_model: ScoreModel | None = loaded if isinstance(loaded, ScoreModel) else None
        self.fusion: Fusion | None = loaded if isinstance(loaded, Fusion) else None
        threshold = loaded.threshold
        if self.fusion is not None and set(self.fusion.names) != {"classic", "learned"}:
            raise ModelError(f"fused verifier: {fusion_path} fuses {self.fusion.names}, not classic + learned")
        try:
            self.learned = LearnedVerifier(model_path, threads=threads)
        except (ValueError, KeyError, TypeError, OSError) as exc:   # a bad config beside the model
            raise ModelError(f"fused verifier: cannot load {model_path}: {exc}") from None
        self.model_path = model_path
        self.classic = classic or ClassicVerifier()
        #: The operating point: the probability at or above which a signature is approved.
        self.threshold = threshold
        try:
            self.policy = self._policy_at(threshold)
        except ValueError as exc:
            raise ModelError(f"fused verifier: fusion {exc}") from None
        self._versions = {"fused": "2" if self.score_model is not None else "1",
                          "learned": f"{model_path.name}@{digest(model_path)}",
                          "fusion": digest(fusion_path), "fused_threshold": f"{threshold:.4g}",
                          **{k: str(v) for k, v in (versions or {}).items()}}

    @property
    def _needs_learned(self) -> bool:
        return self.score_model is None or self.score_model.weighs_learned

    @property
    def _needs_globals(self) -> bool:
        return self.score_model is not None and self.score_model.takes_globals

    def enroll(self, references: Sequence[Trajectory]) -> ReferenceSet[FusedFeatures]:
        # What the model weighs 0 is not computed (the shipped fused model weighs the learned
        # distance 0 and takes no global feature: it decides as the match score does).
        learned = self.learned.build_template([self.learned.embed(r) for r in references]) \
            if self._needs_learned else None
        globs = np.array([global_features(r) for r in references]) if self._needs_globals else None
        return ReferenceSet(self.name, self.model_versions(), len(references),
                            FusedFeatures(self.classic.features(references), learned, globs), build=self.build_key())

    def build_key(self) -> str:
        """The classic part's configuration and the learned model's (``ReferenceSet.build``)."""
        return build_key((self.classic.config, self.learned.config))

    def verify(self, reference_set: ReferenceSet[FusedFeatures], query: Trajectory, *,
               seen: Sequence[np.ndarray] = ()) -> Verdict:
        refs = reference_set.features_for(self.name, self.model_versions(), self.build_key())
        # The learned model's preparation, prepared once: the classic part takes its points too when
        # it prepares the same way (since 2026-11-28 it smooths jagged pads, which the shipped
        # student was not trained on, and prepares its own).
        shared = prepared_time_functions(query, self.learned.config.preprocess) if self._needs_learned else None
        cv = self.classic.verify_features(refs.classic, query, shared, seen=seen)
        if self._needs_learned != (refs.learned is not None) or self._needs_globals != (refs.globals is not None):
            # Cannot pass features_for (the fusion's digest is a version); kept for mypy.
            raise ModelError("fused verifier: reference set does not hold what its model needs")
        # A distance weighed 0 moves nothing: any value stands in for it.
        d_learned = 1.0 if refs.learned is None else self.learned.score(refs.learned, self.learned.embed(query, shared))
        if self.score_model is not None:
            z_globals = self.score_model.no_globals() if refs.globals is None else \
                deviations(global_features(query), refs.globals, self.score_model.spread)
            z = float(self.score_model.logit(self.score_model.inputs(cv.distance, z_globals, d_learned))[0])
        else:
            assert self.fusion is not None
            by_name = {"classic": cv.distance, "learned": d_learned}
            z = self.fusion.logit(np.array([by_name[n] for n in self.fusion.names]))
        return self.policy.decide(-z, cv.aspects, too_similar=cv.too_similar, explanations=cv.explanations)

    def warm_up(self, sample: Trajectory) -> None:
        self.classic.warm_up(sample)
        self.verify(self.enroll([sample, sample]), sample)


def _pick_model(model_dir: Path) -> Path:
    if (model_dir / DEFAULT_LEARNED_MODEL).is_file():
        return model_dir / DEFAULT_LEARNED_MODEL
    found = sorted(model_dir.glob("*.tflite"))
    if len(found) == 1:
        return found[0]
    raise ModelError(f"fused verifier: expected {DEFAULT_LEARNED_MODEL} or exactly one .tflite in {model_dir}, "
                     f"found {[p.name for p in found]}")


def make_verifier(kind: str, threshold: float, rhythm_tolerance: float = 3.0, rhythm_decides: bool = False, *,
                  model_dir: Path | None = None, versions: Mapping[str, str] | None = None) -> PenVerifier:
    """The pen verifier of ``[verifier] kind``, as the daemon builds it (the evaluator's operating
    point builds it here too). ``fused`` loads its learned model and fusion from ``model_dir``
    (default: the shipped assets), ``match-score`` its ``match_score.json`` (the shipped one if
    ``model_dir`` has none); a missing or broken model raises ``models.runtime.ModelError``.
    ``versions`` (the installed bundle's) are added to its ``model_versions()``; the classic
    verifier has no model files and ignores both."""
    classic = ClassicVerifier(ClassicConfig(threshold=threshold), rhythm_tolerance=rhythm_tolerance,
                              rhythm_decides=rhythm_decides)
    if kind == "classic":
        return classic
    if kind == "fused":
        return FusedVerifier(Path(model_dir) if model_dir is not None else shipped_assets(), classic, versions=versions)
    if kind == "match-score":
        # The classic verifier plus the match score (models.match_verifier, which imports this module).
        from models.match_verifier import MATCH_SCORE_FILE, MatchScoreVerifier

        # A model directory (an update bundle's slot) that carries no match_score.json leaves the
        # shipped one in force: a bundle of the learned model does not concern the match score.
        # The verifier's model_versions() name the file's digest either way.
        own = Path(model_dir) / MATCH_SCORE_FILE if model_dir is not None else None
        return MatchScoreVerifier(classic, own if own is not None and own.exists() else None, versions=versions)
    raise ValueError(f"unknown verifier kind {kind!r}")


__all__ = ["ASPECT_FEATURES", "ClassicFeatures", "ClassicVerifier", "FusedFeatures", "FusedVerifier", "make_verifier"]
