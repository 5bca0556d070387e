"""Pad references drawn at a paper question's pen width (``models.pen_width``, ``models.paper``).

Real parts: trajectories from the sigma-lognormal synthesizer drawn by ``models.render``, camera
photos of them made by ``tools.photos`` and found by the kiosk's finder (OpenCV), the shipped int8
CNN-LSTM through the TFLite runtime.
"""

from __future__ import annotations

import numpy as np
import pytest

import models.paper
from models import PaperVerifier
from models.hand_features import hand_features, stroke_width
from models.paper import MAX_DRAWINGS, MAX_KEPT_WIDTHS, PadInk
from models.paper_reference import PAD_INK
from models.pen_width import DEFAULT_RUNG, PEN_WIDTHS_MM, matching_rung
from models.render import render_ink
from models.signature_finder import find_signature
from models.trajectory import Trajectory
from tools.photos import make_photo
from tools.synth import make_population


@pytest.fixture(scope="module")
def writer() -> list[Trajectory]:
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=0, seed=11)["001"]
    return genuine


@pytest.fixture(scope="module")
def verifier() -> PaperVerifier:
    return PaperVerifier()


@pytest.mark.parametrize("width", [2, 4, 7, 11])
def test_stroke_width_of_constructed_strokes_is_their_width(width: int) -> None:
    # Strokes of exactly ``width`` pixels: a horizontal and a vertical bar, a ring and a slanted
    # band (each pixel within width/2 of its centre line). Only the ends and the corners of the
    # pixel grid are off.
    yy, xx = np.mgrid[0:400, 0:700].astype(np.float64)
    ink = np.zeros((400, 700), bool)
    ink[40 : 40 + width, 30:330] = True
    ink[80:380, 30 : 30 + width] = True
    ring = np.abs(np.hypot(yy - 200, xx - 500) - 120) < width / 2
    slant = (np.abs((xx - 200) - 0.5 * (yy - 100)) * 2 / np.sqrt(5) < width / 2) & (yy > 100) & (yy < 380)
    ink |= ring | slant
    assert stroke_width(ink) == pytest.approx(width, rel=0.1)


def test_stroke_width_is_at_least_a_pixel() -> None:
    ink = np.zeros((20, 20), bool)
    ink[5, 5:15] = True
    assert stroke_width(ink) >= 1.0


def test_the_rung_follows_the_pen(writer: list[Trajectory]) -> None:
    """A signature written with a pen on the ladder is matched to that pen, give or take a rung,
    starting from its drawing at the default width and drawing again where the verifier would."""
    traj = writer[5]

    def features(rung: int) -> np.ndarray:
        return hand_features(render_ink(traj, pen_width_mm=PEN_WIDTHS_MM[rung]))[None, :]

    for rung in (1, DEFAULT_RUNG, 11, 17):
        question = features(rung)[0]
        drawn = {DEFAULT_RUNG: features(DEFAULT_RUNG)}
        for _ in range(MAX_DRAWINGS):
            settled = matching_rung(drawn, question)
            if settled in drawn:
                break
            drawn[settled] = features(settled)
        assert abs(settled - rung) <= 1
        assert len(drawn) == 1 if rung == DEFAULT_RUNG else len(drawn) <= 1 + MAX_DRAWINGS


def test_the_rung_stays_on_the_ladder(writer: list[Trajectory]) -> None:
    drawn = {DEFAULT_RUNG: np.stack([hand_features(render_ink(t)) for t in writer[:5]])}
    question = hand_features(render_ink(writer[5]))
    thin, thick = question.copy(), question.copy()
    thin[1] += 10.0     # "size" in stroke widths: a hair line
    thick[1] -= 10.0    # a blot
    assert matching_rung(drawn, thin) == 0
    assert matching_rung(drawn, thick) == len(PEN_WIDTHS_MM) - 1
    with pytest.raises(ValueError):
        matching_rung(drawn, np.full_like(question, np.nan))
    with pytest.raises(ValueError):
        matching_rung({len(PEN_WIDTHS_MM): drawn[DEFAULT_RUNG]}, question)
    with pytest.raises(ValueError):
        matching_rung({}, question)


def test_references_drawn_for_a_thick_stroked_photo_match_it_better(verifier: PaperVerifier,
                                                                    writer: list[Trajectory]) -> None:
    """The kiosk's case: pad references, a genuine signature written with a broad pen and
    photographed. Drawn at the photo's stroke width, the references are closer to it (the fused
    score, and the hand features' stroke-width features) than drawn at the default width."""
    rng = np.random.default_rng(5)
    photo = find_signature(make_photo(render_ink(writer[5], pen_width_mm=1.1, rng=rng), rng,
                                      difficulty="perspective").frame)
    matched = verifier.enroll_pad(writer[:5])
    default_only = verifier.enroll_prepared([verifier.prepare_reference(render_ink(t)) for t in writer[:5]], PAD_INK)
    v_matched = verifier.verify(matched, photo)
    v_default = verifier.verify(default_only, photo)
    pad = matched.features.pad
    assert isinstance(pad, PadInk) and max(pad.drawn) > DEFAULT_RUNG + 2
    assert v_matched.distance < v_default.distance - 1.0
    # Before the gradient histograms (which read stroke directions, little the pen) the default
    # drawing was refused; with the hand features' stroke widths in the fusion it was at the edge
    # (match about 51 %); with them weighed 0 (chosen by held-out writers) it is approved too, and
    # the pen width still brings the CNN's share of the score closer. With the finder of 2026-11-29
    # the default drawing scores 94 % and the drawn one 99 %: the match rates saturate, so the gain
    # is held on the fused distance (above: -5.46 against -3.08), and the order here.
    assert v_matched.approved and v_matched.match_rate > v_default.match_rate
    q = hand_features(photo)
    wide = pad.drawn[max(pad.drawn)]
    size = 1  # "size": the ink's diagonal in stroke widths
    assert abs(np.median([h[size] for h in wide.hand]) - q[size]) < abs(
        np.median([h[size] for h in default_only.features.hand]) - q[size])


def test_each_width_is_drawn_once(verifier: PaperVerifier, writer: list[Trajectory]) -> None:
    references = verifier.enroll_pad(writer[:5])
    pad = references.features.pad
    assert pad is not None and list(pad.drawn) == [DEFAULT_RUNG] and references.features.kind == PAD_INK
    question = render_ink(writer[6], pen_width_mm=0.9)
    first = verifier.verify(references, question)
    assert 2 <= len(pad.drawn) <= 1 + MAX_DRAWINGS and max(pad.drawn) > DEFAULT_RUNG
    drawn = dict(pad.drawn)
    again = verifier.verify(references, question)
    assert pad.drawn == drawn and again == first
    assert first.references == PAD_INK


def test_a_customer_keeps_few_widths_drawn_and_decides_as_if_all_were_kept(
        verifier: PaperVerifier, writer: list[Trajectory], monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions written with many pens (a customer over the years, or someone at the counter
    filling the kiosk's memory with one customer's drawings): the pad references stay drawn at
    the default width and the most recently needed others only; a width let go is drawn again
    when needed, and every verdict is the one a kiosk keeping every drawing gives."""
    questions = [render_ink(writer[6], pen_width_mm=w) for w in (0.35, 1.3, 0.5, 1.0, 0.35)]
    everything = verifier.enroll_pad(writer[:5])
    monkeypatch.setattr(models.paper, "MAX_KEPT_WIDTHS", len(PEN_WIDTHS_MM))
    kept_all = [verifier.verify(everything, q) for q in questions]
    monkeypatch.setattr(models.paper, "MAX_KEPT_WIDTHS", 1)
    few = verifier.enroll_pad(writer[:5])
    pad = few.features.pad
    assert pad is not None
    seen = []
    for question, expected in zip(questions, kept_all):
        assert verifier.verify(few, question) == expected
        assert DEFAULT_RUNG in pad.drawn and len(pad.drawn) <= 2
        seen.append(list(pad.drawn)[-1])
    # Every width ever drawn still informs the next prediction; the first question's width was let
    # go in between and drawn again for the last.
    assert everything.features.pad is not None and set(pad.hands) == set(everything.features.pad.hands)
    assert seen[0] == seen[-1] and len(set(seen)) >= 3
    assert MAX_KEPT_WIDTHS >= MAX_DRAWINGS   # one question's drawings all stay


def test_paper_references_are_compared_as_they_are(verifier: PaperVerifier, writer: list[Trajectory]) -> None:
    pictures = [render_ink(t) for t in writer[:5]]
    references = verifier.enroll(pictures)
    assert references.features.pad is None
    verdict = verifier.verify(references, render_ink(writer[6], pen_width_mm=0.9))
    assert verdict.references == "paper"
