"""The paper verifier: a photo or scan of a signature against the customer's references.

The references are whatever the kiosk holds for the customer: pen trajectories enrolled on the
pad, drawn as ink by ``models.render`` (so a pad enrollment verifies a cheque), or pictures of
paper signatures. Pad references are drawn with the pen the question was written with, as far as
the picture tells: at the pen width that gives them the question's stroke width relative to the
signature (``models.pen_width``; a width drawn when a question first needs it, then kept for
the next, a few widths a customer: :data:`MAX_KEPT_WIDTHS`). A pad leaves no ink, so its references' stroke width says nothing about the writer; left at
a fixed pen, it told a broad pen or a camera's thicker strokes from the references, and genuine
cheques were refused for it. Every picture, reference or questioned, goes through the same steps
as in training and evaluation: ``models.image_preprocess.prepare`` → the int8 CNN-LSTM embedding
(``models.offline_embed``), user-normalised like the pen path; and the hand-made features
(``models.hand_features``) checked by the customer's own Isolation Forest (``models.anomaly``);
and the histograms of oriented gradients of the prepared ink (``models.hog``, where the strokes run
and which way). The score is the three user-normalised distances combined by a logistic fusion
fitted on validation writers, one per kind of reference: for paper references the entry
``cnn+hand+hog`` of ``offline_fusion.json`` (fitted on Dutch scans: paper against paper), for pad
references ``cnn+hand+hog@pad-ink`` (fitted on the cross-media set's electronic ink against its
paper; across media the hand-made features measure the pen more than the writer, and the paper
fusion leaned on them). Which parts a fusion weighs is chosen by holding each validation writer
out in turn (``tools.fusion_cv``): the shipped two weigh the hand features 0 (on held-out writers
they added nothing, on scans or across media); both weigh the CNN and the histograms (for a
day the paper-reference entry weighed the CNN 0 as well: with the histograms centred, late on
2026-11-29, the CNN earned its weight back held out). Both decide at the one paper threshold: the pad-ink
entry's bias is set so that the threshold is its own operating point. These are the evaluator's default verifier, so the
README's figures are this score's. The Isolation Forest's score is not in it (fitted in as
``cnn+hand+anomaly`` it came out with weight 0 for the CNN before this one, and moves the Dutch
validation EER by under half a point with this one), so it does not move the decision; it explains
it: its reasons name the features that are off, in words, on the screen and in the record.

A customer's paper references are kept as :class:`PaperReference` (the prepared 128×128 ink image
and the hand-made features), not as photos: that is all the verifier needs, and enough to embed them
again when a new CNN-LSTM is installed (the embeddings are never stored, so none goes stale). Only
a change of what ``prepare`` or ``hand_features`` produce (:data:`PREPARATION_VERSION`) needs the
pictures again: such references are refused (:class:`StaleReferences`), never compared. The
verdict says which references it compared against (``Verdict.references``: ``"paper"`` or
``"pad-ink"``).

The verdict is the pen verifiers' (``models.policy.Verdict``, decided by the same
``DecisionPolicy`` rules): the decision, a match rate that is 0.5 exactly at the operating point,
and aspects that explain it: "shape" (the embedding), "layout" (the hand-made features' distance)
and "strokes" (the oriented-gradient histograms' distance), each shown only when the fusion weighs
it, and
"proportions" (the anomaly check), with the anomaly check's reasons in words.

This module imports numpy, OpenCV and :mod:`models.runtime`: no TensorFlow on the device. The
Isolation Forest is fitted at enrollment by ``models.iforest`` (numpy), not scikit-learn.
"""


from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models._assets import OFFLINE_FUSION_FILE, PAPER_MODEL, digest, shipped_assets
from models.anomaly import MIN_REFERENCES, AnomalyModel
from models.errors import VerificationError
from models.fusion import Fusion, load_offline_fusion, offline_entry
from models.hand_features import HAND_PRIOR, hand_distance, hand_features
from models.hog import CENTRE_FILE, CentreError, hog_compared, hog_distance, load_centre
from models.image import SignatureImage
from models.image_preprocess import fit_square, from_levels, ink_mask, prepared_similarity, to_grey, to_levels
from models.offline_embed import ImageEmbedder, embedding_distance
from models.paper_reference import PAD_INK, PAPER, PREPARATION_VERSION, PaperReference, ReferenceKind
from models.pen_width import DEFAULT_RUNG, PEN_WIDTHS_MM, matching_rung
from models.policy import AspectCheck, DecisionPolicy, Verdict, match_rate
from models.render import render_ink
from models.runtime import ModelError
from models.scoring import ReferenceStats, ScoredReferences, normalised_distance, pairwise, reference_stats
from models.trajectory import Trajectory
from models.verification import ReferenceSet

#: The fusion entry the kiosk uses (the CNN-LSTM's, the hand features' and the oriented-gradient
#: histograms' distances), and the parts it must fuse, in order.
FUSED_PARTS: tuple[str, ...] = ("cnn", "hand", "hog")
FUSION_ENTRY = "+".join(FUSED_PARTS)
#: A query closer to a reference than this fraction of the references' own nearest-neighbour
#: distance is a copy of it (a photocopy, the same sheet shown again, a tracing).
TOO_SIMILAR_RATIO = 0.15

#: Most drawings of the pad references one question may cost (each corrects the pen width the
#: last one predicted; ``models.pen_width.matching_rung``).
MAX_DRAWINGS = 3
#: Most pen widths a customer's pad references are kept drawn at besides the default (the most
#: recently needed ones): each is about 0.12 MB a reference kept in the kiosk's cache, and a
#: customer's questions could otherwise have them drawn at every width of the ladder (19). A width
#: let go is drawn again when needed (the same drawing: no randomness).
MAX_KEPT_WIDTHS = MAX_DRAWINGS

#: Fewest usable pictures a customer is enrolled from on paper (the anomaly check needs as many).
MIN_PAPER_REFERENCES = MIN_REFERENCES
#: Two reference pictures at least this alike (``prepared_similarity``) are one sheet shown or
#: scanned twice. ``sigkiosk bench camera``: no pair of two genuine scans of one Dutch test writer
#: reaches it (highest 0.950 of 1 068); a generated photo of a sheet and its scan do in 87-92 % of
#: photos (median about 0.99). Lower, and a writer's steadiest genuine pairs would be refused.
DUPLICATE_SIMILARITY = 0.975


class StaleReferences(VerificationError, ValueError):
    """Paper references prepared by another version of ``prepare``/``hand_features``: the
    customer's pictures are needed again (the message says so)."""


def duplicate_of(candidate: PaperReference, accepted: Sequence[PaperReference]) -> int | None:
    """The index of the accepted reference ``candidate`` is the same sheet as, if any."""
    for i, ref in enumerate(accepted):
        if prepared_similarity(candidate.prepared, ref.prepared) >= DUPLICATE_SIMILARITY:
            return i
    return None


@dataclass(frozen=True, eq=False)
class PaperFeatures:
    """What the paper verifier keeps of a customer's references."""

    embeddings: ScoredReferences          # the CNN-LSTM's unit embeddings
    hand: tuple[np.ndarray, ...]          # the references' hand-made feature vectors
    hand_stats: ReferenceStats
    hog: tuple[np.ndarray, ...]           # the references' oriented-gradient histograms, as they are
    hog_stats: ReferenceStats
    anomaly: AnomalyModel | None          # None with fewer than models.anomaly.MIN_REFERENCES
    kind: ReferenceKind = PAPER           # what the references were: pictures, or pad ink drawn
    #: Pad references: the trajectories, drawn again at each question's pen width (these features
    #: are their drawing at the default width). None for pictures.
    pad: PadInk | None = None


@dataclass(eq=False)
class PadInk:
    """A customer's pad references and their drawings at the pen widths questions have needed
    (``models.pen_width``), by rung. A width is drawn when a question first needs it (rendering,
    preparing and embedding 5 references: about 0.2 s), then kept for the next: the default one
    always, :data:`MAX_KEPT_WIDTHS` others at most (``drawn``'s order: least recently needed first).
    ``hands``: every rung drawn so far, its references' hand features, what the next question's
    width is predicted from (a drawing let go still informs it)."""

    trajectories: tuple[Trajectory, ...]
    drawn: dict[int, PaperFeatures]
    hands: dict[int, np.ndarray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for rung, features in self.drawn.items():
            self.hands.setdefault(rung, np.stack(features.hand))

    def keep(self, rung: int, features: PaperFeatures) -> None:
        """``features`` drawn at ``rung`` are the most recently needed; the least recently needed
        drawing past :data:`MAX_KEPT_WIDTHS` (never the default) is let go. Call with ``lock`` held."""
        self.drawn.pop(rung, None)
        self.drawn[rung] = features
        self.hands.setdefault(rung, np.stack(features.hand))
        others = [k for k in self.drawn if k != DEFAULT_RUNG]
        for k in others[: max(0, len(others) - MAX_KEPT_WIDTHS)]:
            del self.drawn[k]


class PaperVerifier:
    """Pictures of signatures against pad or paper references (see the module docstring): a
    ``models.verification.Verifier[SignatureImage]``."""

    name = "paper"

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1, anomaly: bool = True) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else shipped_assets()
        model_path = self.model_dir / PAPER_MODEL
        self.embedder = ImageEmbedder(model_path, threads=threads)
        self.anomaly = anomaly
        fusion_path = self.model_dir / OFFLINE_FUSION_FILE
        try:
            #: The fusion for paper references; its threshold is the paper operating point.
            self.fusion: Fusion = load_offline_fusion(fusion_path, FUSION_ENTRY)
            #: Per kind of reference. The pad-ink entry's bias is set by the operating point's
            #: choice (``tools.paper_operating_point --choose``) so that the one threshold is the
            #: operating point of each kind: a profile's ``paper_threshold`` then means one thing.
            self.fusions: dict[ReferenceKind, Fusion] = {
                PAPER: self.fusion, PAD_INK: load_offline_fusion(fusion_path, offline_entry(FUSION_ENTRY, pad_ink=True))}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"paper verifier: {exc}") from None
        for kind, fusion in self.fusions.items():
            if fusion.names != FUSED_PARTS:
                raise ModelError(f"paper verifier: {fusion_path}'s fusion for {kind} references fuses "
                                 f"{' + '.join(fusion.names)}, not {' + '.join(FUSED_PARTS)}")
        try:
            self.policy = DecisionPolicy.on_probability(self.fusion.threshold, too_similar_ratio=TOO_SIMILAR_RATIO)
        except ValueError as exc:
            raise ModelError(f"paper verifier: fusion {exc}") from None
        # The histograms' mean and prior are read from the same folder as the fusion: the fusion's
        # weights and the threshold were fitted on distances so centred and normalised, no other.
        centre_path = self.model_dir / CENTRE_FILE
        try:
            self.hog_centre = load_centre(centre_path)
        except CentreError as exc:
            raise ModelError(f"paper verifier: {exc}; the fusion in {self.model_dir} was fitted on histograms "
                             f"centred on it, so the folder must hold both") from None
        self._versions = {"paper": f"{PAPER_MODEL}@{digest(model_path)}", "paper_fusion": digest(fusion_path),
                          "paper_hog_centre": digest(centre_path), "paper_threshold": f"{self.fusion.threshold:.4g}",
                          "paper_anomaly": "on" if anomaly else "off"}

    def model_versions(self) -> dict[str, str]:
        return dict(self._versions)

    # -- enrollment --------------------------------------------------------------------------
    def prepare_reference(self, picture: SignatureImage) -> PaperReference:
        """What is kept of one reference picture (``NoInkError`` when it holds no usable ink)."""
        # Kept as the int8 model's input levels: the shipped model sees exactly what it would from
        # prepare's floats, and so do the gradient histograms.
        prepared, hand = self._read(picture)
        return PaperReference(to_levels(prepared), hand)

    def _read(self, picture: SignatureImage | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The picture prepared for the model and its hand features, from one ink mask (each used
        to find its own: 2 ms of a verification's 25, 2026-11-29)."""
        # Grey pixels as prepare and hand_features take them (an integrator may hand either raw).
        grey = to_grey(picture.pixels if isinstance(picture, SignatureImage) else np.asarray(picture))
        mask = ink_mask(grey)
        return fit_square(mask, self.embedder.config.input_size), hand_features(grey, mask)

    def enroll(self, references: Sequence[SignatureImage]) -> ReferenceSet[PaperFeatures]:
        """A reference set from pictures of reference signatures (scans, photos found by the finder)."""
        return self.enroll_prepared([self.prepare_reference(r) for r in references], PAPER)

    def enroll_pad(self, references: Sequence[Trajectory]) -> ReferenceSet[PaperFeatures]:
        """A reference set from pad references, drawn as the ink a pen would leave (no randomness:
        the same references always give the same set): at the default pen width here, and at each
        question's own when it is verified (:meth:`verify`)."""
        trajectories = tuple(references)
        first = self._draw(trajectories, DEFAULT_RUNG)
        features = dataclasses.replace(first, pad=PadInk(trajectories, {DEFAULT_RUNG: first}))
        return ReferenceSet(self.name, self.model_versions(), len(trajectories), features)

    def _draw(self, trajectories: Sequence[Trajectory], rung: int) -> PaperFeatures:
        pen = PEN_WIDTHS_MM[rung]
        return self._features([self.prepare_reference(render_ink(t, pen_width_mm=pen)) for t in trajectories], PAD_INK)

    def _drawn_like(self, pad: PadInk, question: np.ndarray) -> PaperFeatures:
        """The pad references drawn at the pen width that gives them the question's relative
        stroke width (``question``: its hand features)."""
        with pad.lock:
            for _ in range(MAX_DRAWINGS):
                rung = matching_rung(pad.hands, question)
                if rung in pad.hands:
                    break
                pad.keep(rung, self._draw(pad.trajectories, rung))
            features = pad.drawn.get(rung)
            pad.keep(rung, self._draw(pad.trajectories, rung) if features is None else features)
            return pad.drawn[rung]

    def enroll_prepared(self, references: Sequence[PaperReference], kind: ReferenceKind = PAPER
                        ) -> ReferenceSet[PaperFeatures]:
        """A reference set from kept references (:meth:`prepare_reference`; the template store's),
        embedded by this verifier's model. ``StaleReferences`` when they were prepared by another
        :data:`PREPARATION_VERSION`."""
        return ReferenceSet(self.name, self.model_versions(), len(references), self._features(references, kind))

    def _features(self, references: Sequence[PaperReference], kind: ReferenceKind) -> PaperFeatures:
        if not references:
            raise ValueError("no reference signatures")
        stale = sorted({r.version for r in references} - {PREPARATION_VERSION})
        if stale:
            raise StaleReferences(f"the paper references were prepared by version {', '.join(stale)} of the "
                                  f"picture preparation, this kiosk runs {PREPARATION_VERSION}: enroll the customer "
                                  "from paper again")
        side = self.embedder.config.input_size
        if any(r.prepared.shape != (side, side) for r in references):
            raise StaleReferences(f"the paper references were prepared for another model's input size (this model "
                                  f"reads {side}x{side}): enroll the customer from paper again")
        embs = [self.embedder.embed(from_levels(r.prepared)) for r in references]
        hand = tuple(r.hand for r in references)
        # Each reference turned, against the others as they are (as a question is compared): the
        # references' own spread, on the question's scale. Only the upright rows are kept, copied:
        # a view kept all three turns of every reference alive in the cache (326 KB, not 109).
        turned = [hog_compared(r.prepared, self.hog_centre) for r in references]
        hog = tuple(t[0].copy() for t in turned)
        fit_forest = self.anomaly and len(references) >= MIN_REFERENCES
        return PaperFeatures(self.embedder.build_template(embs), hand, reference_stats(pairwise(list(hand), hand_distance)),
                             hog, reference_stats(pairwise(turned, hog_distance)),
                             AnomalyModel.fit(np.stack(hand)) if fit_forest else None, kind)

    # -- verification ------------------------------------------------------------------------
    def verify(self, reference_set: ReferenceSet[PaperFeatures], query: SignatureImage) -> Verdict:
        """``query``: the signature as found on the paper (``models.signature_finder``) or a scan.
        Raises ``models.image_preprocess.NoInkError`` when it holds no usable ink."""
        refs = reference_set.features_for(self.name, self.model_versions())
        prepared, feats = self._read(query)
        if refs.pad is not None:
            refs = self._drawn_like(refs.pad, feats)
        cfg = self.embedder.config
        emb = self.embedder.embed(prepared)
        d_emb = self.embedder.score(refs.embeddings, emb)
        d_hand = normalised_distance(np.array([hand_distance(feats, r) for r in refs.hand]),
                                     refs.hand_stats, HAND_PRIOR)
        q_hog = hog_compared(prepared, self.hog_centre)
        d_hog = normalised_distance(np.array([hog_distance(q_hog, r) for r in refs.hog]), refs.hog_stats,
                                    self.hog_centre.prior)
        # Each part against the threshold it would have alone: the CNN's own validation threshold;
        # the others' are not fitted apart, so the fused operating point's share of them.
        fusion = self.fusions[refs.kind]
        # A part the fusion weights 0 does not move the decision: it is not shown as a check (a
        # fusion without the CNN still uses its embedding to find copies).
        shape = (AspectCheck("shape", "Shape", match_rate(d_emb, cfg.threshold), d_emb <= cfg.threshold)
                 if fusion.weights[fusion.names.index("cnn")] < 0 else None)
        aspects = [check for check in (shape, self._part_check("layout", "Layout", fusion, "hand", d_hand),
                                       self._part_check("strokes", "Stroke directions", fusion, "hog", d_hog))
                   if check is not None]
        nearest = min(embedding_distance(emb, r) for r in refs.embeddings.references)
        too_similar = self.policy.is_copy(nearest, refs.embeddings.nearest_pair)
        explanations: tuple[str, ...] = ()
        anomaly = None
        if refs.anomaly is not None:
            anomaly = refs.anomaly.score(feats)
            reasons = refs.anomaly.reasons(feats)
            explanations = tuple(r.text for r in reasons)
            aspects.append(AspectCheck("proportions", "Proportions", 1.0 - anomaly, not reasons))
        distances = {"cnn": d_emb, "hand": d_hand, "hog": d_hog}
        z = fusion.logit(np.array([distances[part] for part in fusion.names]))
        verdict = self.policy.decide(-z, aspects, too_similar=too_similar, explanations=explanations, anomaly=anomaly)
        return dataclasses.replace(verdict, references=refs.kind)

    def _part_check(self, code: str, label: str, fusion: Fusion, part: str, distance: float) -> AspectCheck | None:
        # The part's distance at which the fused score sits on its threshold when the other parts'
        # distances are typical genuine ones (1, log 0): the aspect fails where it alone would tip
        # the decision. None for a part the fusion leaves out (weight 0).
        weight = fusion.weights[fusion.names.index(part)]
        if weight >= 0:
            return None
        limit = math.exp((-self.policy.threshold - fusion.bias) / weight)
        return AspectCheck(code, label, match_rate(distance, limit), distance <= limit)

    def warm_up(self) -> None:
        """Load the interpreter's kernels and the forest code before the first customer."""
        page = np.full((120, 360), 240, np.uint8)
        for k, y in enumerate((40, 60, 80)):
            page[y : y + 3, 40 + 20 * k : 300 - 10 * k] = 20
        img = SignatureImage(page)
        self.verify(self.enroll([img, img, img]), img)
