"""Paper references: a customer enrolled from scans or photos (``models.paper``).

Real parts: the Dutch scans of the shared data, OpenCV's decoding, finder and preparation, the
shipped int8 CNN-LSTM through the TFLite runtime; photos of the scans made by ``tools.photos``
(paper, perspective, light, noise, JPEG) and found again by the signature finder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models import PaperVerifier, SignatureImage
from models._assets import OFFLINE_FUSION_FILE, PAPER_MODEL, digest
from models.fusion import offline_entry
from models.hand_features import hand_features
from models.hog import CENTRE_FILE, HogCentre, centre_bytes
from models.image_preprocess import NoInkError, from_levels, prepare
from models.offline_embed import embedding_distance
from models.paper import DUPLICATE_SIMILARITY, FUSION_ENTRY, StaleReferences, duplicate_of
from models.paper_reference import PAD_INK, PAPER, PREPARATION_VERSION, PaperReference
from models.render import render_ink
from models.runtime import ModelError
from models.signature_finder import find_signature, read_picture
from tests.shared_data import shared_data
from tools.photos import make_photo
from tools.synth import make_population

DUTCH = "offline/sigcomp-dutch-kaggle"


@pytest.fixture(scope="module")
def verifier() -> PaperVerifier:
    return PaperVerifier()


def _scan(writer: str, number: int) -> SignatureImage:
    """The writer's genuine scan ``number`` (1-12)."""
    return find_signature(read_picture(sorted((shared_data(DUTCH) / writer).glob("*.png"))[number - 1]))


def _genuine(writer: str, numbers: range) -> list[SignatureImage]:
    return [_scan(writer, n) for n in numbers]


def _forgeries(writer: str, k: int) -> list[SignatureImage]:
    files = sorted((shared_data(DUTCH) / f"{writer}_forg").glob("*.png"))[:k]
    return [find_signature(read_picture(f)) for f in files]


def test_enrolled_from_scans_genuine_pass_and_forgeries_fail(verifier: PaperVerifier) -> None:
    # Dutch test writers (ids ending 8-9 are not training writers; see tools.datasets).
    approved_genuine = approved_forged = n_genuine = n_forged = 0
    for writer in ("019", "029", "039"):
        reference_set = verifier.enroll(_genuine(writer, range(1, 6)))
        assert reference_set.size == 5
        for query in _genuine(writer, range(8, 12)):
            verdict = verifier.verify(reference_set, query)
            assert verdict.references == PAPER
            approved_genuine += verdict.approved
            n_genuine += 1
        for query in _forgeries(writer, 4):
            verdict = verifier.verify(reference_set, query)
            assert verdict.references == PAPER
            approved_forged += verdict.approved
            n_forged += 1
    assert approved_genuine >= 0.75 * n_genuine, (approved_genuine, n_genuine)
    assert approved_forged <= 0.25 * n_forged, (approved_forged, n_forged)


def test_pad_references_drawn_as_ink_say_so(verifier: PaperVerifier) -> None:
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=4)["001"]
    reference_set = verifier.enroll_pad(genuine[:5])
    assert reference_set.features.kind == PAD_INK
    assert verifier.verify(reference_set, render_ink(genuine[6])).references == PAD_INK


def _model_dir(verifier: PaperVerifier, d: Path, entries: dict, centre: bool = True) -> PaperVerifier:
    """A paper model folder with the shipped CNN-LSTM, these fusion entries and (``centre``) the
    shipped histograms' mean."""
    d.mkdir()
    for f in verifier.model_dir.glob(PAPER_MODEL.replace(".tflite", ".*")):
        shutil.copy(f, d / f.name)
    if centre:
        shutil.copy(verifier.model_dir / CENTRE_FILE, d / CENTRE_FILE)
    (d / OFFLINE_FUSION_FILE).write_text(json.dumps(entries))
    return PaperVerifier(d)


def test_the_histograms_mean_comes_from_the_fusions_folder(verifier: PaperVerifier, tmp_path: Path) -> None:
    """The fusion was fitted on histograms centred on one mean: the verifier reads the mean from
    the fusion's own folder, records its version, and refuses a folder without a usable one
    rather than scoring with a mean its fusion was not fitted on."""
    entries = json.loads((verifier.model_dir / OFFLINE_FUSION_FILE).read_text())
    copied = _model_dir(verifier, tmp_path / "copied", entries)
    assert copied.model_versions()["paper_hog_centre"] == verifier.model_versions()["paper_hog_centre"] \
        == digest(verifier.model_dir / CENTRE_FILE)
    # Another mean in the folder is the one used: the same pictures score differently.
    moved = tmp_path / "moved"
    _model_dir(verifier, moved, entries)
    (moved / CENTRE_FILE).write_bytes(centre_bytes(HogCentre(verifier.hog_centre.mean * 0.5, verifier.hog_centre.prior)))
    other = PaperVerifier(moved)
    assert other.model_versions()["paper_hog_centre"] != copied.model_versions()["paper_hog_centre"]
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=4)["001"]
    drawn = [render_ink(t) for t in genuine[:5]]
    question = render_ink(genuine[6])
    assert other.verify(other.enroll(drawn), question).distance != copied.verify(copied.enroll(drawn), question).distance
    with pytest.raises(ModelError, match=f"{CENTRE_FILE}: no usable mean descriptor.*must hold both"):
        _model_dir(verifier, tmp_path / "missing", entries, centre=False)
    (moved / CENTRE_FILE).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ModelError, match="no usable mean descriptor"):
        PaperVerifier(moved)


def test_pad_references_are_scored_with_their_own_fusion(verifier: PaperVerifier, tmp_path: Path) -> None:
    """Pad-ink references go through the ``cnn+hand+hog@pad-ink`` entry, paper references through
    ``cnn+hand+hog``; a file without the pad-ink entry scores both with the paper one; an entry of
    other parts (an older two-part fusion among them) is refused."""

    def model_dir(name: str, entries: dict) -> PaperVerifier:
        return _model_dir(verifier, tmp_path / name, entries)

    pad_entry = offline_entry(FUSION_ENTRY, pad_ink=True)
    shipped = json.loads((verifier.model_dir / OFFLINE_FUSION_FILE).read_text())
    paper_entry = shipped[FUSION_ENTRY]
    raised = model_dir("raised", {FUSION_ENTRY: paper_entry,
                                  pad_entry: {**paper_entry, "bias": paper_entry["bias"] + 1.0}})
    without = model_dir("without", {FUSION_ENTRY: paper_entry})
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=4)["001"]
    question = render_ink(genuine[6])
    pad = {v: v.verify(v.enroll_pad(genuine[:5]), question) for v in (raised, without)}
    drawn = [render_ink(t) for t in genuine[:5]]
    paper = {v: v.verify(v.enroll(drawn), question) for v in (raised, without)}
    assert pad[raised].references == PAD_INK and paper[raised].references == PAPER
    # The score is minus the fused logit: one more unit of bias is one unit less of score.
    assert pad[raised].distance == pytest.approx(pad[without].distance - 1.0)
    assert paper[raised].distance == pytest.approx(paper[without].distance)
    with pytest.raises(ModelError, match="pad-ink references fuses"):
        model_dir("bad", {FUSION_ENTRY: paper_entry, pad_entry: {**paper_entry, "names": ["cnn", "hand", "anomaly"]}})
    with pytest.raises(ModelError, match="paper references fuses cnn \\+ hand, not cnn \\+ hand \\+ hog"):
        model_dir("old", {FUSION_ENTRY: {**paper_entry, "names": ["cnn", "hand"], "weights": paper_entry["weights"][:2]}})


def test_a_part_the_fusion_leaves_out_is_not_shown_as_a_check(verifier: PaperVerifier, tmp_path: Path) -> None:
    """The aspects on screen are the parts that move the decision: a part weighted 0 by the fusion
    (``sigkiosk eval offline --fit-fusion`` leaves out what held-out writers show adds nothing)
    is not shown as a check it passed, and the score is the same as without it."""
    shipped = json.loads((verifier.model_dir / OFFLINE_FUSION_FILE).read_text())[FUSION_ENTRY]
    pad_entry = offline_entry(FUSION_ENTRY, pad_ink=True)

    def entries(hand_weight: float, cnn_weight: float = -3.0) -> dict:
        entry = {**shipped, "weights": [cnn_weight, hand_weight, -15.0], "bias": 2.0}
        return {FUSION_ENTRY: entry, pad_entry: entry}

    with_hand = _model_dir(verifier, tmp_path / "with", entries(-4.0))
    without = _model_dir(verifier, tmp_path / "without", entries(0.0))
    histograms = _model_dir(verifier, tmp_path / "histograms", entries(0.0, cnn_weight=0.0))
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=4)["001"]
    question = render_ink(genuine[6])
    shown = {v: v.verify(v.enroll([render_ink(t) for t in genuine[:5]]), question)
             for v in (with_hand, without, histograms)}
    assert {a.code for a in shown[with_hand].aspects} == {"shape", "layout", "strokes", "proportions"}
    assert {a.code for a in shown[without].aspects} == {"shape", "strokes", "proportions"}
    # The CNN weighed 0 (the shipped paper-reference entry for a day, 2026-11-29): no "shape" check.
    assert {a.code for a in shown[histograms].aspects} == {"strokes", "proportions"}
    # Weighted, the hand features' distance counts in the score; weighted 0, it does not.
    assert shown[with_hand].distance != shown[without].distance
    # A bundle whose fusion weighs every part 0 would decide without looking: refused at load
    # (models.fusion.Fusion.from_dict: parts may be weighed 0, not all of them).
    blind = {**shipped, "weights": [0.0, 0.0, 0.0], "bias": 2.0}
    with pytest.raises(ModelError, match="weights are all 0"):
        _model_dir(verifier, tmp_path / "blind", {FUSION_ENTRY: shipped, pad_entry: blind})


def test_what_is_kept_embeds_exactly_as_the_picture(verifier: PaperVerifier) -> None:
    """The stored uint8 ink image gives the int8 model the very input prepare's floats give it,
    and a set built from kept references is the set built from the pictures."""
    pictures = _genuine("039", range(1, 7))
    kept = [verifier.prepare_reference(p) for p in pictures]
    for picture, ref in zip(pictures, kept):
        assert ref.prepared.dtype == np.uint8 and ref.prepared.shape == (128, 128)
        assert ref.version == PREPARATION_VERSION
        np.testing.assert_array_equal(ref.hand, hand_features(picture))
        direct = verifier.embedder.embed(prepare(picture))
        from_kept = verifier.embedder.embed(from_levels(ref.prepared))
        assert embedding_distance(direct, from_kept) == 0.0
    a = verifier.enroll(pictures)
    b = verifier.enroll_prepared(kept)
    for x, y in zip(a.features.embeddings.references, b.features.embeddings.references):
        np.testing.assert_array_equal(x, y)
    query = _scan("039", 10)
    assert verifier.verify(a, query) == verifier.verify(b, query)


def test_the_same_sheet_twice_is_a_duplicate_and_two_signatures_are_not(verifier: PaperVerifier) -> None:
    scan = _scan("019", 1)
    ref = verifier.prepare_reference(scan)
    other = [verifier.prepare_reference(p) for p in _genuine("019", range(2, 8))]
    assert duplicate_of(ref, other) is None   # six other genuine signatures of the same writer
    assert duplicate_of(ref, [*other, verifier.prepare_reference(scan)]) == len(other)
    # The same sheet photographed (paper, perspective, light, noise, JPEG), found again in the photo.
    rng = np.random.default_rng(11)
    photo = find_signature(make_photo(scan, rng, difficulty="clean").frame)
    assert duplicate_of(verifier.prepare_reference(photo), [*other, ref]) == len(other)


def test_every_pair_of_one_writers_genuine_scans_is_below_the_duplicate_bound(verifier: PaperVerifier) -> None:
    from models.image_preprocess import prepared_similarity

    refs = [verifier.prepare_reference(p) for p in _genuine("029", range(1, 13))]
    sims = [prepared_similarity(a.prepared, b.prepared) for i, a in enumerate(refs) for b in refs[i + 1:]]
    assert max(sims) < DUPLICATE_SIMILARITY
    assert min(sims) > 0.0


def test_references_of_another_preparation_are_refused_not_compared(verifier: PaperVerifier) -> None:
    kept = [verifier.prepare_reference(p) for p in _genuine("039", range(1, 4))]
    old = [PaperReference(r.prepared, r.hand, "0") for r in kept]
    with pytest.raises(StaleReferences, match="enroll the customer from paper again"):
        verifier.enroll_prepared(old)
    small = [PaperReference(np.zeros((96, 96), np.uint8), r.hand) for r in kept]
    with pytest.raises(StaleReferences, match="input size"):
        verifier.enroll_prepared(small)


def test_a_blank_page_gives_no_reference(verifier: PaperVerifier) -> None:
    with pytest.raises(NoInkError):
        verifier.prepare_reference(SignatureImage(np.full((200, 500), 235, np.uint8)))


def test_a_kept_reference_refuses_what_is_not_one() -> None:
    with pytest.raises(ValueError, match="square uint8"):
        PaperReference(np.zeros((128, 128), np.float32), np.zeros(16))
    with pytest.raises(ValueError, match="finite"):
        PaperReference(np.zeros((128, 128), np.uint8), np.full(16, np.nan))


def test_preparation_output_is_pinned_to_its_version(verifier: PaperVerifier) -> None:
    """What a stored reference holds for one Dutch scan. If this changes, prepare() or the hand
    features changed what they produce: bump models.paper_reference.PREPARATION_VERSION (stored
    references of the old version are then refused and customers enrolled from paper again), and
    pin the new values here."""
    ref = verifier.prepare_reference(_scan("039", 1))
    assert PREPARATION_VERSION == "3"
    assert hashlib.sha256(ref.prepared.tobytes()).hexdigest()[:16] == PINNED_PREPARED
    np.testing.assert_allclose(ref.hand, PINNED_HAND, rtol=1e-6, atol=1e-9)


PINNED_PREPARED = "36c1b0a82a142c1e"
PINNED_HAND = [-0.0887281156, 4.15321519, 0.132010633, 0.45682188, 0.502587595, 0.389443994, -0.902192575, 17.004451456, 5.54505878, 0.679666595, 1, 3, 4.43974933, 2, 0.476415094, 3.27835052]
