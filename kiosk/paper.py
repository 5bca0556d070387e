"""The paper verifier: a photo or scan of a signature against the customer's references.

The references are whatever the kiosk holds for the customer: pen trajectories enrolled on the
pad, drawn as ink by ``models.render`` (so a pad enrollment verifies a cheque), or pictures of
paper signatures. Every picture, reference or questioned, goes through the same steps as in
training and evaluation: ``models.image_preprocess.prepare`` → the int8 CNN-LSTM embedding
(``models.offline_embed``), user-normalised like the pen path; and the hand-made features
(``models.hand_features``) checked by the customer's own Isolation Forest (``models.anomaly``).
The two are combined by the logistic fusion fitted on validation writers
(``offline_fusion.json``, the same one ``sigkiosk eval offline --anomaly`` measures).

The verdict has the pen verifier's shape (``kiosk.verifier.Verdict``): the decision, a match rate
that is 0.5 exactly at the operating point, and aspects that explain it: "shape" (the embedding)
and "proportions" (the anomaly check, whose reasons name the features that are off, in words).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.verifier import APPROVED, SHIPPED_MODEL_DIR, SUSPICIOUS, AspectCheck, Verdict, match_rate
from models.anomaly import MIN_REFERENCES, AnomalyModel
from models.fusion import Fusion, load_offline_fusion
from models.hand_features import hand_features
from models.image import SignatureImage
from models.image_preprocess import prepare
from models.offline_embed import ImageEmbedder, ImageTemplate, embedding_distance
from models.render import render_ink
from models.runtime import ModelError
from models.trajectory import Trajectory

PAPER_MODEL = "cnn_lstm_int8.tflite"
OFFLINE_FUSION_FILE = "offline_fusion.json"
#: The fusion entry the kiosk uses (the CNN-LSTM's distance + the anomaly check).
FUSION_ENTRY = "cnn"
#: A query closer to a reference than this fraction of the references' own nearest-neighbour
#: distance is a copy of it (a photocopy, the same sheet shown again, a tracing).
TOO_SIMILAR_RATIO = 0.15


@dataclass(frozen=True, eq=False)
class PaperTemplate:
    embeddings: ImageTemplate
    anomaly: AnomalyModel | None          # None with fewer than models.anomaly.MIN_REFERENCES
    ref_min: float                        # smallest distance between two reference embeddings


@dataclass(frozen=True)
class PaperVerdict:
    verdict: Verdict
    #: The anomaly check's reasons in words for the screen (empty when nothing is off).
    explanations: tuple[str, ...]
    anomaly: float | None


class PaperVerifier:
    """Pictures of signatures against pad or paper references (see the module docstring)."""

    name = "paper"

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1, anomaly: bool = True) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else SHIPPED_MODEL_DIR
        model_path = self.model_dir / PAPER_MODEL
        self.embedder = ImageEmbedder(model_path, threads=threads)
        self.fusion: Fusion | None = None
        if anomaly:
            fusion_path = self.model_dir / OFFLINE_FUSION_FILE
            try:
                self.fusion = load_offline_fusion(fusion_path, FUSION_ENTRY)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"paper verifier: {exc}") from None
            t = self.fusion.threshold
            if not 0.0 < t < 1.0:
                raise ModelError(f"paper verifier: fusion threshold {t} is not in (0, 1)")
            self._threshold_logit = math.log(t / (1.0 - t))
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
        self._versions = {"paper": f"{PAPER_MODEL}@{digest}",
                          "paper_threshold": f"{self.embedder.config.threshold:g}",
                          "paper_anomaly": "on" if self.fusion is not None else "off"}

    def model_versions(self) -> dict[str, str]:
        return dict(self._versions)

    # -- templates ---------------------------------------------------------------------------
    def build(self, references: Sequence[SignatureImage]) -> PaperTemplate:
        """A template from pictures of reference signatures (scans, photos found by the finder)."""
        if not references:
            raise ValueError("no reference signatures")
        embs = [self.embedder.embed(prepare(r)) for r in references]
        tpl = self.embedder.build_template(embs)
        feats = np.stack([hand_features(r) for r in references]) if len(references) >= MIN_REFERENCES else None
        d = np.array([[embedding_distance(a, b) for b in embs] for a in embs])
        ref_min = float(d[~np.eye(len(d), dtype=bool)].min()) if len(d) > 1 else math.inf
        return PaperTemplate(tpl, AnomalyModel.fit(feats) if feats is not None else None, ref_min)

    def build_from_pad(self, references: Sequence[Trajectory]) -> PaperTemplate:
        """A template from pad references, drawn as the ink a pen would leave (no randomness: the
        same references always give the same template)."""
        return self.build([render_ink(t) for t in references])

    # -- verification ------------------------------------------------------------------------
    def verify(self, template: PaperTemplate, image: SignatureImage) -> PaperVerdict:
        """``image``: the signature as found on the paper (``models.signature_finder``) or a scan.
        Raises ``models.image_preprocess.NoInkError`` when it holds no usable ink."""
        cfg = self.embedder.config
        emb = self.embedder.embed(prepare(image))
        d_emb = self.embedder.score(template.embeddings, emb)
        shape = AspectCheck("shape", "Shape", match_rate(d_emb, cfg.threshold), d_emb <= cfg.threshold)
        nearest = min(embedding_distance(emb, r) for r in template.embeddings.references)
        too_similar = nearest < TOO_SIMILAR_RATIO * template.ref_min
        aspects = [shape]
        explanations: tuple[str, ...] = ()
        anomaly = None
        if self.fusion is not None and template.anomaly is not None:
            feats = hand_features(image)
            anomaly = template.anomaly.score(feats)
            reasons = template.anomaly.reasons(feats)
            explanations = tuple(r.text for r in reasons)
            aspects.append(AspectCheck("proportions", "Proportions", 1.0 - anomaly, not reasons))
            z = self.fusion.logit(np.array([d_emb, anomaly]))
            rate = 1.0 / (1.0 + math.exp(min(700.0, max(-700.0, -(z - self._threshold_logit)))))
            approved = z >= self._threshold_logit
            distance = -z
        else:
            rate, approved, distance = shape.similarity, shape.ok, d_emb
        decision = APPROVED if approved and not too_similar else SUSPICIOUS
        return PaperVerdict(Verdict(decision, rate, distance, tuple(aspects), too_similar), explanations, anomaly)

    def warm_up(self) -> None:
        """Load the interpreter's kernels and the forest code before the first customer."""
        page = np.full((120, 360), 240, np.uint8)
        for k, y in enumerate((40, 60, 80)):
            page[y : y + 3, 40 + 20 * k : 300 - 10 * k] = 20
        img = SignatureImage(page)
        self.verify(self.build([img, img, img]), img)
