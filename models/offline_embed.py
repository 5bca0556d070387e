"""The offline (image) learned verifier on the device: prepared ink image → int8 CNN-LSTM → embedding.

The picture goes through :func:`models.image_preprocess.prepare` (the one offline preprocessing),
the 128×128 ink image through the converted network (:mod:`models.cnn_lstm`) by the one TFLite
wrapper, :class:`models.runtime.TFLiteModel` (which quantises the input with the model's own
parameters and resets the LSTM's state before every call). The embedding is L2-normalised here,
in numpy, not in the model (see :mod:`models.cnn_lstm`).

Two signatures are compared by the Euclidean distance of their unit embeddings (0 … 2); a query's
distances to a user's references are normalised per user with :func:`models.scoring.normalised_distance`
and the prior stored beside the model, like the pen verifiers, so one global threshold
(``config.threshold``, chosen on validation writers) serves every user.

This module imports numpy and :mod:`models` only: no tensorflow on the device.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models._assets import PAPER_MODEL, shipped_assets
from models.runtime import ModelError, TFLiteModel
from models.scoring import NormalisationPrior, ScoredReferences, normalised_distance

#: The shipped int8 model.
DEFAULT_MODEL = shipped_assets() / PAPER_MODEL
#: The model's input name (``models.cnn_lstm.INPUT_NAME``; not imported: that module is Keras).
INPUT_NAME = "image"


@dataclass(frozen=True)
class OfflineConfig:
    """What is stored beside a model as ``<stem>.config.json``.

    ``input_size``: side of the prepared image; ``emb_dim``: embedding length; ``prior``: the
    population reference statistics (fitted on training writers) for user normalisation;
    ``threshold``: the global decision threshold on the user-normalised distance (validation
    writers' skilled-forgery EER point); ``network``: the builder's sizes, for the record.
    """

    input_size: int = 128
    emb_dim: int = 64
    prior: NormalisationPrior = field(default_factory=lambda: NormalisationPrior(0.5, 0.6))
    threshold: float = 1.2
    network: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "OfflineConfig":
        return cls(
            input_size=int(d["input_size"]),
            emb_dim=int(d["emb_dim"]),
            prior=NormalisationPrior(**d["prior"]),
            threshold=float(d["threshold"]),
            network=dict(d.get("network", {})),
        )


def config_path(model_path: Path) -> Path:
    """The config is stored beside the model: ``<stem>.config.json``."""
    return Path(model_path).with_name(Path(model_path).stem + ".config.json")


def load_config(model_path: Path) -> OfflineConfig:
    p = config_path(model_path)
    if not p.is_file():
        raise ModelError(f"no offline model config beside the model: {p}")
    try:
        return OfflineConfig.from_json(json.loads(p.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{p}: not an offline model config ({e})") from e


def save_config(model_path: Path, config: OfflineConfig) -> Path:
    p = config_path(model_path)
    p.write_text(json.dumps(config.to_json(), indent=2) + "\n")
    return p


def l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    # An all-zero embedding (an int8 model saturated to its zero point) stays zero rather than NaN.
    return v / n if n > 0 else v


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two unit embeddings (0 = same direction, 2 = opposite)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class ImageEmbedder:
    """A converted CNN-LSTM (float or int8) and its config; one prepared image → unit embedding."""

    def __init__(self, model_path: Path = DEFAULT_MODEL, threads: int = 1) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"offline model file not found: {self.path}")
        self.config = load_config(self.path)
        self.model = TFLiteModel(self.path, threads=threads, input_names=(INPUT_NAME,))
        s = self.config.input_size
        (detail,) = self.model.input_details
        if tuple(detail["shape"]) != (1, s, s, 1):
            raise ModelError(
                f"{self.path}: model input shape {tuple(detail['shape'])} does not match its config's "
                f"{s}x{s} image (expected (1, {s}, {s}, 1))"
            )
        out = tuple(self.model.output_detail["shape"])
        if out != (1, self.config.emb_dim):
            raise ModelError(f"{self.path}: model output shape {out}, config says (1, {self.config.emb_dim})")

    def embed(self, prepared: np.ndarray) -> np.ndarray:
        """A prepared ``input_size``×``input_size`` ink image (ink = 1) → (D,) float32, unit length."""
        x = np.asarray(prepared)
        s = self.config.input_size
        if x.shape not in ((s, s), (s, s, 1)):
            raise ModelError(
                f"image of shape {x.shape}: the model takes a prepared {s}x{s} ink image "
                "(models.image_preprocess.prepare)"
            )
        if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
            raise ModelError("the prepared image must be finite floats in [0, 1] (ink = 1)")
        out = self.model.run({INPUT_NAME: x.reshape(s, s, 1).astype(np.float32)})
        return l2_normalise(out)

    def build_template(self, references: list[np.ndarray]) -> ScoredReferences:
        return ScoredReferences.measure([np.asarray(r, np.float32) for r in references], embedding_distance)

    def score(self, template: ScoredReferences, query: np.ndarray) -> float:
        """The user-normalised distance of a query embedding (about 1 for a genuine signature)."""
        q = np.array([embedding_distance(query, r) for r in template.references])
        return normalised_distance(q, template.stats, self.config.prior)
