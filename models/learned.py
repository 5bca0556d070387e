"""The learned pen verifier on the device: trajectory → model input → embeddings → DTW.

A trajectory goes through the same :func:`~models.preprocess.prepare` and
:func:`~models.features.time_functions` as the classic verifier. The time functions are computed
at the device's full (resampled 100 Hz) rate, so derivatives keep their detail, and then the
sequence is **resampled** (never split) to at most ``max_len`` points by linear interpolation
along the point index: a fixed-size model input, and a signature keeps its whole shape in one
window. Shorter signatures are padded; the length mask and the graph masks ignore the padding.
The model's output is a sequence of ``ceil(n / 2)`` embeddings (stride-2 pooling), compared by the
same banded DTW as the classic verifier and normalised per user the same way.

This module imports numpy and :mod:`models.runtime` only: no tensorflow on the device.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.dtw import dtw_distance
from models.features import FEATURE_NAMES, feature_indices, time_functions, zscore
from models.graphs import additive_mask, knn_adjacency, step_adjacency
from models.preprocess import PreparedSignature, PreprocessConfig, prepare
from models.scoring import NormalisationPrior, ScoredReferences, normalised_distance
from models.trajectory import Trajectory

#: Input names shared by the Keras builder, the converter and the runtime wrapper.
INPUT_NAMES: tuple[str, ...] = ("feats", "step_mask", "knn_mask", "valid")


@dataclass(frozen=True)
class LearnedConfig:
    """How a trajectory becomes model input, and how embeddings are compared.

    ``max_len``: points after resampling (the model's fixed input length). 128 keeps a signature's
    shape (SUSIG's median is ~400 points at 100 Hz) while a CPU-only training run stays short.
    ``k_step``/``k_nn``: the two graphs (see :mod:`models.graphs`); k_nn scaled to the shorter
    sequence (the seed's 20–35 is for full-rate sequences).
    ``band``: DTW band on the embedding sequences; ``prior``: the one-reference population prior
    (fitted on training writers by the training tool).
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: tuple[str, ...] = FEATURE_NAMES
    max_len: int = 128
    k_step: int = 2
    k_nn: int = 16
    band: float = 0.15
    prior: NormalisationPrior = field(default_factory=lambda: NormalisationPrior(0.90, 1.00))

    def to_json(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "LearnedConfig":
        return cls(
            preprocess=PreprocessConfig(**d["preprocess"]),
            features=tuple(d["features"]),
            max_len=int(d["max_len"]),
            k_step=int(d["k_step"]),
            k_nn=int(d["k_nn"]),
            band=float(d["band"]),
            prior=NormalisationPrior(**d["prior"]),
        )


@dataclass(frozen=True)
class ModelInput:
    """One signature as the model takes it (batch dimension added by :meth:`batch`)."""

    feats: np.ndarray  # (L, F) float32, z-scored time functions, zero padding
    step_mask: np.ndarray  # (L, L) float32 additive
    knn_mask: np.ndarray  # (L, L) float32 additive
    valid: np.ndarray  # (L, 1) float32, 1 for a real point
    length: int  # real points (≤ L)

    @property
    def out_length(self) -> int:
        """Embeddings that belong to real points after stride-2 pooling."""
        return (self.length + 1) // 2

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feats": self.feats, "step_mask": self.step_mask, "knn_mask": self.knn_mask, "valid": self.valid}


def _resample_index(n: int, max_len: int) -> np.ndarray | None:
    return None if n <= max_len else np.linspace(0.0, n - 1.0, max_len)


@dataclass(frozen=True)
class Points:
    """A signature resampled to at most ``max_len`` points: z-scored time functions, positions
    (for the k-NN graph) and stroke ids (for the k-step graph). Training caches these."""

    feats: np.ndarray  # (n, F)
    x: np.ndarray
    y: np.ndarray
    stroke: np.ndarray


def resampled_points(traj: Trajectory, config: LearnedConfig = LearnedConfig(),
                     shared: PreparedSignature | None = None) -> Points:
    if shared is not None and shared.usable_for(config.preprocess):
        prep, tf_all = shared.prepared, shared.time_functions[:, feature_indices(config.features)]
    else:
        prep = prepare(traj, config.preprocess)
        tf_all = time_functions(prep)[:, feature_indices(config.features)]
    x, y, stroke = prep.x, prep.y, prep.stroke
    pos = _resample_index(len(prep), config.max_len)
    if pos is not None:
        base = np.arange(len(prep), dtype=np.float64)
        tf_all = np.column_stack([np.interp(pos, base, c) for c in tf_all.T])
        x, y = np.interp(pos, base, x), np.interp(pos, base, y)
        stroke = stroke[np.rint(pos).astype(np.intp)]
    return Points(feats=zscore(tf_all).astype(np.float32), x=x, y=y, stroke=np.asarray(stroke))


def model_input(pts: Points, config: LearnedConfig = LearnedConfig()) -> ModelInput:
    """Pad to ``max_len`` and build the two graph masks."""
    n, L = len(pts.x), config.max_len
    feats = np.zeros((L, pts.feats.shape[1]), dtype=np.float32)
    feats[:n] = pts.feats
    valid = np.zeros((L, 1), dtype=np.float32)
    valid[:n] = 1.0
    return ModelInput(
        feats=feats,
        step_mask=additive_mask(step_adjacency(pts.stroke, config.k_step), L),
        knn_mask=additive_mask(knn_adjacency(pts.x, pts.y, config.k_nn), L),
        valid=valid,
        length=n,
    )


def featurize(traj: Trajectory, config: LearnedConfig = LearnedConfig(),
              shared: PreparedSignature | None = None) -> ModelInput:
    """The model input of a trajectory: time functions, resampled, z-scored, with its graphs."""
    return model_input(resampled_points(traj, config, shared), config)


class LearnedVerifier:
    """Embeds signatures with a TFLite model and scores them like the classic verifier does."""

    def __init__(self, model_path: Path, config: LearnedConfig | None = None, threads: int = 1) -> None:
        from models.runtime import TFLiteModel

        self.model = TFLiteModel(model_path, threads=threads)
        self.config = config or load_config(Path(model_path))

    def embed_input(self, inp: ModelInput) -> np.ndarray:
        out = self.model.run(inp.arrays())
        return np.ascontiguousarray(out[: inp.out_length], dtype=np.float64)

    def embed(self, traj: Trajectory, shared: PreparedSignature | None = None) -> np.ndarray:
        return self.embed_input(featurize(traj, self.config, shared))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return dtw_distance(a, b, self.config.band)

    def build_template(self, references: list[np.ndarray]) -> ScoredReferences:
        return ScoredReferences.measure(references, self.distance)

    def score(self, template: ScoredReferences, query: np.ndarray) -> float:
        q = np.array([self.distance(query, r) for r in template.references])
        return normalised_distance(q, template.stats, self.config.prior)


def config_path(model_path: Path) -> Path:
    """The learned config is stored beside the model: ``<stem>.config.json``."""
    return model_path.with_name(model_path.stem + ".config.json")


def load_config(model_path: Path) -> LearnedConfig:
    p = config_path(model_path)
    if not p.exists():
        raise FileNotFoundError(f"no learned config beside the model: {p}")
    return LearnedConfig.from_json(json.loads(p.read_text()))
