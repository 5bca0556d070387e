"""The one offline preprocessing function, on real scans and on pictures built to break it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.image import SignatureImage
from models.image_preprocess import (
    ADAPTIVE_OFFSET,
    SIZE,
    NoInkError,
    darker_than_surroundings,
    equalise,
    ink_mask,
    prepare,
    to_grey,
)
from tests.shared_data import shared_data


def _page(h: int = 300, w: int = 500, paper: int = 235) -> np.ndarray:
    return np.full((h, w), paper, np.uint8)


def _scribble(img: np.ndarray, ink: int = 30) -> np.ndarray:
    cv2.polylines(img, [np.array([[60, 200], [150, 80], [220, 210], [320, 90], [430, 190]], np.int32)], False, ink, 3)
    return img


def test_output_is_square_float_in_unit_range_with_ink_centred() -> None:
    out = prepare(_scribble(_page()))
    assert out.shape == (SIZE, SIZE) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.9
    ys, xs = np.nonzero(out > 0.2)
    # a wide signature fills the width and sits in the vertical middle
    assert xs.min() < 12 and xs.max() > SIZE - 12
    assert abs((ys.min() + ys.max()) / 2 - SIZE / 2) < 6


def test_same_signature_moved_on_the_page_gives_the_same_input() -> None:
    a = prepare(_scribble(_page()))
    moved = np.roll(np.roll(_scribble(_page()), 40, axis=1), -30, axis=0)
    np.testing.assert_allclose(prepare(moved), a, atol=1e-5)


def test_colour_photo_and_grey_give_the_same_result() -> None:
    grey = _scribble(_page())
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    np.testing.assert_array_equal(to_grey(bgr), grey)
    np.testing.assert_allclose(prepare(bgr), prepare(SignatureImage(grey)))


def test_pen_colour_does_not_matter() -> None:
    light, dark = prepare(_scribble(_page(), ink=120)), prepare(_scribble(_page(), ink=5))
    assert np.abs(light - dark).mean() < 0.01


@pytest.mark.parametrize(
    "pixels",
    [
        _page(),
        np.random.default_rng(0).normal(235, 4, (300, 500)).clip(0, 255).astype(np.uint8),
        _page(paper=20),
    ],
    ids=["white", "paper-grain", "black"],
)
def test_a_page_without_ink_is_refused_with_a_reason(pixels: np.ndarray) -> None:
    with pytest.raises(NoInkError, match="no ink|no signature"):
        prepare(pixels)


def test_dust_alone_is_not_a_signature() -> None:
    page = _page()
    for y, x in [(20, 30), (200, 400), (120, 250)]:
        page[y : y + 2, x : x + 2] = 0
    with pytest.raises(NoInkError):
        prepare(page)


def test_specks_beside_the_signature_do_not_move_the_crop() -> None:
    clean = _scribble(_page())
    dusty = clean.copy()
    dusty[5:7, 5:7] = 0
    dusty[290:292, 490:492] = 0
    np.testing.assert_allclose(prepare(dusty), prepare(clean), atol=1e-5)


def test_wrong_dtype_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_grey(np.zeros((20, 20), np.float32))


def test_real_scans_all_prepare_with_plausible_ink() -> None:
    from tools.datasets import load_images

    data = load_images(shared_data("offline/sigcomp-dutch-kaggle"), "sigcomp-dutch")
    samples = [s for w in sorted(data.writers) for s in data.writers[w]][::25]
    fractions = np.array([float((ink_mask(s.image.pixels)).mean()) for s in samples])
    outs = np.stack([prepare(s.image) for s in samples])
    assert outs.shape == (len(samples), SIZE, SIZE)
    # signatures cover a few percent of a tight scan: neither empty nor paper grain turned to ink
    assert 0.003 < fractions.min() and fractions.max() < 0.25


def test_a_faint_photographed_stroke_stays_one_stroke() -> None:
    """A ballpoint's fast strokes are light, and on a camera photo the adaptive threshold alone
    keeps them only in dashes. Before the hysteresis, these 12 photos of rendered ink had 2.5 pieces
    more than the ink on average (up to 15 more) and 3.2 loops fewer; now 0.1 pieces (at most 1)
    and 1.2 loops (a camera's blur still closes a small loop)."""
    from models.hand_features import describe, hand_features
    from models.render import render_ink
    from models.signature_finder import find_signature
    from tools.photos import make_photo
    from tools.synth import make_population

    pieces, loops = [], []
    for genuine, _ in make_population(n_writers=3, n_genuine=1, n_forgeries=0, seed=2026).values():
        for seed in range(4):
            rng = np.random.default_rng(seed)
            ink = render_ink(genuine[0], rng=rng)
            photo = find_signature(make_photo(ink, rng, difficulty="perspective").frame)
            on_ink, on_photo = describe(hand_features(ink)), describe(hand_features(photo))
            pieces.append(abs(on_photo["pieces"] - on_ink["pieces"]))
            loops.append(abs(on_photo["loops"] - on_ink["loops"]))
    assert max(pieces) <= 2 and np.mean(pieces) <= 0.5
    assert np.mean(loops) <= 1.5



@pytest.mark.parametrize("block", [15, 19, 41, 91])
def test_the_hysteresis_offsets_are_opencvs_adaptive_threshold(block: int) -> None:
    """One blur serves both offsets; each must keep exactly what cv2.adaptiveThreshold keeps, so
    that the certain ink is the mask the CNN-LSTM was trained on."""
    rng = np.random.default_rng(block)
    page = np.clip(_scribble(_page(360, 640)).astype(np.float64) + rng.normal(0, 18, (360, 640)), 0, 255)
    levelled = equalise(page.astype(np.uint8))
    below = darker_than_surroundings(levelled, block)
    for offset in (ADAPTIVE_OFFSET, ADAPTIVE_OFFSET // 2):
        opencv = cv2.adaptiveThreshold(levelled, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV, block,
                                       offset) > 0
        np.testing.assert_array_equal(below >= offset, opencv)


def test_percentiles_from_grey_counts_are_numpys_or_none() -> None:
    """The ink mask's paper level and darkest level, and the finder's paper test, read their
    percentiles off a picture's grey-level counts: the same float as numpy's (or None, and the
    caller asks numpy), on pictures of many pixels and of few, flat and varied."""
    from models.image_preprocess import grey_counts, grey_percentile, percentile_of_counts

    rng = np.random.default_rng(0)
    answered = 0
    for trial in range(600):
        n = int(rng.integers(1, 3000))
        levels = int(rng.integers(1, 256))
        a = (rng.integers(0, levels, size=(2, n)) if trial % 2 else
             np.minimum(255, rng.poisson(rng.uniform(1, 200), size=(2, n)))).astype(np.uint8)
        for q in (0.1, 0.2, 50.0, 90.0, float(rng.uniform(0, 100))):
            got = percentile_of_counts(grey_counts(a), q)
            if got is not None:
                answered += 1
                assert got == float(np.percentile(a, q)), (q, n, levels)
        assert grey_percentile(a, 50.0) == float(np.median(a))
    assert answered > 1000
    # A photo: the levels around each percentile settle it, and the counts answer.
    photo = cv2.GaussianBlur(rng.integers(150, 230, size=(360, 640)).astype(np.uint8), (5, 5), 0)
    assert percentile_of_counts(grey_counts(photo), 0.1) == float(np.percentile(photo, 0.1))
    assert percentile_of_counts(grey_counts(photo), 50.0) == float(np.median(photo))
    mask = np.zeros(photo.shape, np.uint8)
    mask[100:200, 100:400] = 1
    assert percentile_of_counts(grey_counts(photo, mask), 50.0) == float(np.median(photo[mask > 0]))
