"""The paper verifier: a photo or scan of a signature against the customer's references.

The references are whatever the kiosk holds for the customer: pen trajectories enrolled on the
pad, drawn as ink by ``models.render`` (so a pad enrollment verifies a cheque), or pictures of
paper signatures. Every picture, reference or questioned, goes through the same steps as in
training and evaluation: ``models.image_preprocess.prepare`` → the int8 CNN-LSTM embedding
(``models.offline_embed``), user-normalised like the pen path; and the hand-made features
(``models.hand_features``) checked by the customer's own Isolation Forest (``models.anomaly``).
The score is the CNN's and the hand features' user-normalised distances combined by the logistic
fusion fitted on validation writers (entry ``cnn+hand`` of ``offline_fusion.json``: the
evaluator's default verifier, so the README's figures are this score's). The Isolation Forest's
score was fitted into that fusion too and came out with weight 0 on the validation writers (it
adds nothing to the two distances there), so it does not move the decision; it explains it: its
reasons name the features that are off, in words, on the screen and in the record.

The verdict has the pen verifier's shape (``models.policy.Verdict``): the decision, a match rate
that is 0.5 exactly at the operating point, and aspects that explain it: "shape" (the embedding),
"layout" (the hand-made features' distance) and "proportions" (the anomaly check).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models._assets import shipped_assets
from models.anomaly import MIN_REFERENCES, AnomalyModel
from models.fusion import Fusion, load_offline_fusion
from models.hand_features import HAND_PRIOR, hand_distance, hand_features
from models.image import SignatureImage
from models.image_preprocess import prepare
from models.offline_embed import ImageEmbedder, embedding_distance
from models.policy import APPROVED, SUSPICIOUS, AspectCheck, Verdict, match_rate
from models.scoring import ReferenceStats, ScoredReferences, normalised_distance, pairwise, reference_stats
from models.render import render_ink
from models.runtime import ModelError
from models.trajectory import Trajectory

PAPER_MODEL = "cnn_lstm_int8.tflite"
OFFLINE_FUSION_FILE = "offline_fusion.json"
#: The fusion entry the kiosk uses (the CNN-LSTM's and the hand features' distances).
FUSION_ENTRY = "cnn+hand"
#: A query closer to a reference than this fraction of the references' own nearest-neighbour
#: distance is a copy of it (a photocopy, the same sheet shown again, a tracing).
TOO_SIMILAR_RATIO = 0.15


@dataclass(frozen=True, eq=False)
class PaperTemplate:
    embeddings: ScoredReferences
    hand: tuple[np.ndarray, ...]          # the references' hand-made feature vectors
    hand_stats: ReferenceStats
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
        self.model_dir = Path(model_dir) if model_dir is not None else shipped_assets()
        model_path = self.model_dir / PAPER_MODEL
        self.embedder = ImageEmbedder(model_path, threads=threads)
        self.anomaly = anomaly
        fusion_path = self.model_dir / OFFLINE_FUSION_FILE
        try:
            self.fusion: Fusion = load_offline_fusion(fusion_path, FUSION_ENTRY)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"paper verifier: {exc}") from None
        if self.fusion.names != ("cnn", "hand"):
            raise ModelError(f"paper verifier: {fusion_path} entry {FUSION_ENTRY!r} fuses {self.fusion.names}, "
                             "not cnn + hand")
        t = self.fusion.threshold
        if not 0.0 < t < 1.0:
            raise ModelError(f"paper verifier: fusion threshold {t} is not in (0, 1)")
        self._threshold_logit = math.log(t / (1.0 - t))
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
        fdigest = hashlib.sha256(fusion_path.read_bytes()).hexdigest()[:12]
        self._versions = {"paper": f"{PAPER_MODEL}@{digest}", "paper_fusion": fdigest,
                          "paper_threshold": f"{t:.4g}", "paper_anomaly": "on" if anomaly else "off"}

    def model_versions(self) -> dict[str, str]:
        return dict(self._versions)

    # -- templates ---------------------------------------------------------------------------
    def build(self, references: Sequence[SignatureImage]) -> PaperTemplate:
        """A template from pictures of reference signatures (scans, photos found by the finder)."""
        if not references:
            raise ValueError("no reference signatures")
        embs = [self.embedder.embed(prepare(r)) for r in references]
        tpl = self.embedder.build_template(embs)
        hand = tuple(hand_features(r) for r in references)
        fit_forest = self.anomaly and len(references) >= MIN_REFERENCES
        d = pairwise(embs, embedding_distance)
        ref_min = float(d[~np.eye(len(d), dtype=bool)].min()) if len(d) > 1 else math.inf
        return PaperTemplate(tpl, hand, reference_stats(pairwise(list(hand), hand_distance)),
                             AnomalyModel.fit(np.stack(hand)) if fit_forest else None, ref_min)

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
        feats = hand_features(image)
        d_hand = normalised_distance(np.array([hand_distance(feats, r) for r in template.hand]),
                                     template.hand_stats, HAND_PRIOR)
        # Each part against the threshold it would have alone: the CNN's own validation threshold;
        # the hand distance's is not fitted apart, so the fused operating point's share of it.
        aspects = [AspectCheck("shape", "Shape", match_rate(d_emb, cfg.threshold), d_emb <= cfg.threshold),
                   self._layout(d_hand)]
        nearest = min(embedding_distance(emb, r) for r in template.embeddings.references)
        too_similar = nearest < TOO_SIMILAR_RATIO * template.ref_min
        explanations: tuple[str, ...] = ()
        anomaly = None
        if template.anomaly is not None:
            anomaly = template.anomaly.score(feats)
            reasons = template.anomaly.reasons(feats)
            explanations = tuple(r.text for r in reasons)
            aspects.append(AspectCheck("proportions", "Proportions", 1.0 - anomaly, not reasons))
        z = self.fusion.logit(np.array([d_emb, d_hand]))
        rate = 1.0 / (1.0 + math.exp(min(700.0, max(-700.0, -(z - self._threshold_logit)))))
        approved = z >= self._threshold_logit and not too_similar
        verdict = Verdict(APPROVED if approved else SUSPICIOUS, rate, -z, tuple(aspects), too_similar)
        return PaperVerdict(verdict, explanations, anomaly)

    def _layout(self, d_hand: float) -> AspectCheck:
        # The hand distance at which the fused score sits on its threshold when the CNN's distance
        # is a typical genuine one (1): the layout aspect fails where it alone would tip the decision.
        w_cnn, w_hand = self.fusion.weights
        limit = math.exp((self._threshold_logit - self.fusion.bias) / w_hand) if w_hand < 0 else math.inf
        return AspectCheck("layout", "Layout", match_rate(d_hand, limit), d_hand <= limit)

    def warm_up(self) -> None:
        """Load the interpreter's kernels and the forest code before the first customer."""
        page = np.full((120, 360), 240, np.uint8)
        for k, y in enumerate((40, 60, 80)):
            page[y : y + 3, 40 + 20 * k : 300 - 10 * k] = 20
        img = SignatureImage(page)
        self.verify(self.build([img, img, img]), img)
