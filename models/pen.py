"""The verifier behind the daemon: one object with a small interface.

The default is the classic verifier (``models.classic``); :class:`FusedVerifier` (learned TFLite
model + classic, ``models.fusion``; ``[verifier] kind = "fused"``) implements the same
:class:`Verifier` protocol and is swapped in when the model-update agent installs a bundle, through
``Daemon.set_verifier`` - the daemon then rebuilds every cached template from the stored reference
trajectories, so features of two different models are never compared.

The verdict carries a match rate for people and per-aspect checks - shape, speed, pressure,
rhythm - that say *why*. The decision itself is the overall score against the one global
threshold; the aspects explain it, they do not vote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.classic import ClassicConfig, build_template, pairwise_distances, score_query, signature_features
from models.dtw import dtw_distance
from models.features import feature_indices
from models.scoring import normalised_distance, reference_stats
from models.trajectory import Trajectory

APPROVED = "APPROVED"
SUSPICIOUS = "SUSPICIOUS"

#: Which time functions speak for which aspect (names from ``models.features.FEATURE_NAMES``).
ASPECT_FEATURES: dict[str, tuple[str, ...]] = {
    "shape": ("x", "y", "cos", "sin", "dangle", "log_radius"),
    "speed": ("dx", "dy", "speed", "acceleration", "centripetal"),
    "pressure": ("pressure", "dpressure"),
}
ASPECT_LABELS = {"shape": "Shape", "speed": "Speed", "pressure": "Pressure", "rhythm": "Rhythm"}


@dataclass(frozen=True)
class AspectCheck:
    code: str          # "shape", "speed", "pressure", "rhythm"
    label: str         # for people
    similarity: float  # 0..1, like the match rate
    ok: bool


@dataclass(frozen=True)
class Verdict:
    decision: str                  # APPROVED or SUSPICIOUS
    match_rate: float              # 0..1, monotone in the distance; 0.5 at the threshold
    distance: float                # user-normalised distance (classic: ~1 for a typical genuine)
    aspects: tuple[AspectCheck, ...]
    too_similar: bool = False      # a copy of a reference: replayed or traced

    @property
    def reasons(self) -> list[str]:
        """Short codes for the record: the aspects that look wrong (or why it is suspicious)."""
        out = [a.code for a in self.aspects if not a.ok]
        if self.too_similar:
            out.insert(0, "too_similar")
        if self.decision == SUSPICIOUS and not out:
            out.append("overall")
        return out


class Verifier(Protocol):
    """What the daemon needs of a verifier (classic today, fused later)."""

    name: str

    def model_versions(self) -> dict[str, str]: ...
    def build(self, references: Sequence[Trajectory]) -> Any: ...
    def verify(self, template: Any, query: Trajectory) -> Verdict: ...
    def warm_up(self, sample: Trajectory) -> None: ...


def match_rate(distance: float, threshold: float, scale: float = 0.25) -> float:
    """A person-facing 0..1 rate: 0.5 at the threshold, ~0.86 at a typical genuine (distance 1).

    Monotone, not a calibrated probability (calibration comes with the fused model).
    """
    z = (distance - threshold) / scale
    return 1.0 / (1.0 + math.exp(min(50.0, z)))


@dataclass(frozen=True, eq=False)
class ClassicTemplate:
    template: Any                                   # models.classic.Template
    aspect_refs: dict[str, tuple[np.ndarray, ...]]  # per aspect, each reference's columns
    aspect_stats: dict[str, Any]
    durations: np.ndarray                           # reference pen-down times (rhythm)
    ref_min: float                                  # smallest raw distance between two references


@dataclass
class ClassicVerifier:
    config: ClassicConfig = field(default_factory=ClassicConfig)
    #: A query whose nearest reference is closer than this fraction of the references' own
    #: nearest-neighbour distance is a copy (replay, tracing): genuine signatures always vary.
    too_similar_ratio: float = 0.2
    rhythm_tolerance: float = 3.0
    #: Whether a pace far outside the references' spread makes the decision SUSPICIOUS on its
    #: own. DTW warps time away, so without it a slow, careful imitation of the right shape
    #: passes; forgers are slow (on the synthesizer's imitations it halves the forgeries let through).
    rhythm_decides: bool = False
    name: str = "classic"

    def model_versions(self) -> dict[str, str]:
        return {"classic": "1", "threshold": f"{self.config.threshold:g}",
                "rhythm": f"{self.rhythm_tolerance:g}" if self.rhythm_decides else "off"}

    def _aspect_cols(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        names = self.config.features
        out = {}
        for aspect, wanted in ASPECT_FEATURES.items():
            cols = [i for i, n in enumerate(names) if n in wanted]
            if cols:
                out[aspect] = np.ascontiguousarray(feats[:, cols])
        return out

    def build(self, references: Sequence[Trajectory]) -> ClassicTemplate:
        feats = [signature_features(r, self.config) for r in references]
        tpl = build_template(feats, self.config)
        per = [self._aspect_cols(f) for f in feats]
        aspect_refs = {a: tuple(p[a] for p in per) for a in per[0]}
        aspect_stats = {a: reference_stats(pairwise_distances(list(rs), self.config.band)) for a, rs in aspect_refs.items()}
        d = np.asarray(tpl.ref_distances)
        ref_min = float(d[~np.eye(len(d), dtype=bool)].min()) if len(d) > 1 else math.inf
        return ClassicTemplate(tpl, aspect_refs, aspect_stats,
                               np.array([r.ink_time for r in references]), ref_min)

    def verify(self, template: ClassicTemplate, query: Trajectory) -> Verdict:
        cfg = self.config
        feats = signature_features(query, cfg)
        score = score_query(template.template, feats, cfg)
        checks = []
        for aspect, cols in self._aspect_cols(feats).items():
            dists = np.array([dtw_distance(cols, r, cfg.band) for r in template.aspect_refs[aspect]])
            d = normalised_distance(dists, template.aspect_stats[aspect], cfg.prior)
            checks.append(AspectCheck(aspect, ASPECT_LABELS[aspect], match_rate(d, cfg.threshold), d <= cfg.threshold))
        checks.append(self._rhythm(template, query))
        too_similar = min(score.ref_distances) < self.too_similar_ratio * template.ref_min
        rhythm_ok = checks[-1].ok or not self.rhythm_decides
        approved = score.distance <= cfg.threshold and not too_similar and rhythm_ok
        rate = match_rate(score.distance, cfg.threshold)
        if self.rhythm_decides:
            # The rate a person sees agrees with the decision: below 50% exactly when it fails.
            rate = min(rate, checks[-1].similarity)
        return Verdict(APPROVED if approved else SUSPICIOUS, rate, score.distance, tuple(checks), too_similar)

    def _rhythm(self, template: ClassicTemplate, query: Trajectory) -> AspectCheck:
        # The time spent writing, against the references' own spread (log scale: twice as slow
        # and twice as fast are equally far). DTW warps time away, so this is checked apart.
        refs = np.log(np.maximum(template.durations, 1e-3))
        spread = max(float(np.mean(np.abs(refs - refs.mean()))) if len(refs) > 1 else 0.0, 0.08)
        z = abs(math.log(max(query.ink_time, 1e-3)) - float(refs.mean())) / spread
        # Map z onto the distance scale of the other aspects: tolerance lands on the threshold.
        d = 1.0 + (self.config.threshold - 1.0) * max(0.0, z - 1.0) / max(self.rhythm_tolerance - 1.0, 1e-6)
        return AspectCheck("rhythm", ASPECT_LABELS["rhythm"], match_rate(d, self.config.threshold),
                           z <= self.rhythm_tolerance)

    def warm_up(self, sample: Trajectory) -> None:
        """Compile the JIT kernels before the first customer (numba compiles on first call)."""
        tpl = self.build([sample, sample])
        self.verify(tpl, sample)


#: The learned model a fused verifier loads from a model directory when there is a choice
#: (the shipped assets hold the float and teacher models beside it, for the tools).
DEFAULT_LEARNED_MODEL = "tsgatr_student_int8.tflite"
#: The shipped model directory (used when ``[verifier] model_dir`` is not set).
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "assets"
FUSION_FILE = "fusion.json"


@dataclass(frozen=True, eq=False)
class FusedTemplate:
    classic: ClassicTemplate
    learned: Any                                    # models.learned.LearnedTemplate


class FusedVerifier:
    """Learned (TFLite embeddings + DTW) and classic verifiers fused by ``models.fusion``.

    Both parts give a user-normalised distance (~1 for a typical genuine signature); the fusion
    turns them into a calibrated probability of a genuine signature and approves at or above its
    operating point (``Fusion.threshold``, the validation EER point). The classic part is the
    :class:`ClassicVerifier` itself: its template, its distance, its aspect checks (which explain,
    as before), its copy (``too_similar``) and optional rhythm rules.

    ``Verdict.match_rate`` keeps the protocol's meaning (0.5 exactly at the operating point): it is
    the calibrated probability with its logit shifted by the operating point's; ``Verdict.distance``
    is the fused distance (minus the calibrated logit; lower is more genuine).
    """

    name = "fused"

    def __init__(self, model_dir: Path, classic: ClassicVerifier | None = None, *, threads: int = 1,
                 model_file: str | None = None, versions: Mapping[str, str] | None = None) -> None:
        from models.fusion import Fusion
        from models.learned import LearnedVerifier, config_path
        from models.runtime import ModelError

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelError(f"fused verifier: model directory not found: {self.model_dir}")
        model_path = self.model_dir / model_file if model_file else _pick_model(self.model_dir)
        fusion_path = self.model_dir / FUSION_FILE
        for p in (model_path, config_path(model_path), fusion_path):
            if not p.is_file():
                raise ModelError(f"fused verifier: {p.name} missing in {self.model_dir}")
        try:
            self.fusion = Fusion.load(fusion_path)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"fused verifier: {fusion_path} is not a valid fusion: {exc}") from None
        if set(self.fusion.names) != {"classic", "learned"}:
            raise ModelError(f"fused verifier: {fusion_path} fuses {self.fusion.names}, not classic + learned")
        if not 0.0 < self.fusion.threshold < 1.0:
            raise ModelError(f"fused verifier: fusion threshold {self.fusion.threshold} is not in (0, 1)")
        try:
            self.learned = LearnedVerifier(model_path, threads=threads)
        except (ValueError, KeyError, TypeError, OSError) as exc:   # a bad config beside the model
            raise ModelError(f"fused verifier: cannot load {model_path}: {exc}") from None
        self.model_path = model_path
        self.classic = classic or ClassicVerifier()
        t = self.fusion.threshold
        self._threshold_logit = math.log(t / (1.0 - t))
        self._versions = {"fused": "1", "learned": f"{model_path.name}@{_sha256(model_path)[:12]}",
                          "fusion": _sha256(fusion_path)[:12], "fused_threshold": f"{t:.4g}",
                          **{k: str(v) for k, v in (versions or {}).items()}}

    @property
    def config(self) -> ClassicConfig:
        """The classic config (enrollment's consistency checks use it)."""
        return self.classic.config

    def model_versions(self) -> dict[str, str]:
        cv = self.classic.model_versions()
        return {**self._versions, "classic": cv["classic"], "rhythm": cv["rhythm"]}

    def build(self, references: Sequence[Trajectory]) -> FusedTemplate:
        embs = [self.learned.embed(r) for r in references]
        return FusedTemplate(self.classic.build(references), self.learned.build_template(embs))

    def verify(self, template: FusedTemplate, query: Trajectory) -> Verdict:
        cv = self.classic.verify(template.classic, query)
        d_learned = self.learned.score(template.learned, self.learned.embed(query))
        by_name = {"classic": cv.distance, "learned": d_learned}
        dists = np.array([by_name[n] for n in self.fusion.names])
        z = self.fusion.logit(dists)
        rate = 1.0 / (1.0 + math.exp(min(700.0, max(-700.0, -(z - self._threshold_logit)))))
        rhythm = next((a for a in cv.aspects if a.code == "rhythm"), None)
        rhythm_ok = rhythm is None or rhythm.ok or not self.classic.rhythm_decides
        approved = z >= self._threshold_logit and not cv.too_similar and rhythm_ok
        if self.classic.rhythm_decides and rhythm is not None:
            rate = min(rate, rhythm.similarity)
        return Verdict(APPROVED if approved else SUSPICIOUS, rate, -z, cv.aspects, cv.too_similar)

    def warm_up(self, sample: Trajectory) -> None:
        tpl = self.build([sample, sample])
        self.verify(tpl, sample)


def _pick_model(model_dir: Path) -> Path:
    from models.runtime import ModelError

    if (model_dir / DEFAULT_LEARNED_MODEL).is_file():
        return model_dir / DEFAULT_LEARNED_MODEL
    found = sorted(model_dir.glob("*.tflite"))
    if len(found) == 1:
        return found[0]
    raise ModelError(f"fused verifier: expected {DEFAULT_LEARNED_MODEL} or exactly one .tflite in {model_dir}, "
                     f"found {[p.name for p in found]}")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_verifier(kind: str, threshold: float, rhythm_tolerance: float = 3.0, rhythm_decides: bool = False, *,
                  model_dir: Path | None = None, versions: Mapping[str, str] | None = None) -> Verifier:
    """The verifier of ``[verifier] kind``. ``fused`` loads its learned model and fusion from
    ``model_dir`` (default: the shipped ``models/assets``); a missing or broken model raises
    ``models.runtime.ModelError``. ``versions`` (the installed bundle's) are added to its
    ``model_versions()``; the classic verifier has no model files and ignores both."""
    classic = ClassicVerifier(ClassicConfig(threshold=threshold), rhythm_tolerance=rhythm_tolerance,
                              rhythm_decides=rhythm_decides)
    if kind == "classic":
        return classic
    if kind == "fused":
        return FusedVerifier(Path(model_dir) if model_dir is not None else SHIPPED_MODEL_DIR, classic, versions=versions)
    raise ValueError(f"unknown verifier kind {kind!r}")


__all__ = ["APPROVED", "SUSPICIOUS", "AspectCheck", "ClassicVerifier", "FusedVerifier", "Verdict", "Verifier",
           "make_verifier", "match_rate", "feature_indices"]
