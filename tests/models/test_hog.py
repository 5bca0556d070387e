"""The oriented-gradient histograms of the prepared ink: the same ink gives the same vector wherever
it sits and however it was kept; strokes that run another way give a far one; a faint rim or a
blank picture is not ink."""

import math
import zipfile

import cv2
import numpy as np
import pytest

from models.errors import VerificationError
from models.hog import (
    SHIPPED,
    CentreError,
    HogCentre,
    HogConfig,
    centre_bytes,
    centred,
    hog_compared,
    hog_descriptor,
    hog_distance,
    hog_turned,
    load_centre,
    shipped_centre,
)
from models.image import SignatureImage
from models.image_preprocess import NoInkError, prepare, to_levels
from tests.models.test_hand_features import draw, signature_strokes, transform


def test_a_unit_vector_of_fixed_length() -> None:
    """Three framings × (7×15 + 3×7 blocks) × 4 cells × 18 directions, float32."""
    v = hog_descriptor(prepare(SignatureImage(draw(signature_strokes()))))
    assert v.shape == (27216,) == (SHIPPED.length,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert np.all(v >= 0.0)


def test_other_settings_go_through_the_same_code_and_bad_ones_are_refused() -> None:
    """The variants ``tools.hog_variants`` compares: the box framing alone with 9 unsigned bins
    (the descriptor shipped before) is a unit vector of its own length; settings that cannot
    make a descriptor are refused."""
    picture = prepare(SignatureImage(draw(signature_strokes())))
    box = HogConfig(framings=(("box", 0.0),), bins=9, signed=False)
    v = hog_descriptor(picture, box)
    assert v.shape == (4536,) == (box.length,) and np.linalg.norm(v) == pytest.approx(1.0)
    root = hog_descriptor(picture, HogConfig(block_norm="hellinger"))
    assert root.shape == (SHIPPED.length,) and np.all(np.isfinite(root))
    # Without blocks: each cell's 18 directions once (3 framings × (8×16 + 4×8) cells), a unit vector.
    cells = hog_descriptor(picture, HogConfig(block_norm="none"))
    assert cells.shape == (8640,) == (HogConfig(block_norm="none").length,)
    assert np.linalg.norm(cells) == pytest.approx(1.0) and np.all(cells >= 0.0)
    for bad in ({"framings": (("ring", 1.0),)}, {"framings": (("moments", 0.0),)}, {"framings": ()},
                {"bins": 1}, {"blur": 0.0}, {"block_norm": "l1"}, {"scales": ((8, 64, 8),)},
                {"scales": ((56, 101, 7),)}):
        with pytest.raises(ValueError):
            HogConfig(**bad)  # type: ignore[arg-type]


def _compared(prepared: np.ndarray) -> np.ndarray:
    """The picture as it is, as the kiosk compares it (centred on the shipped mean)."""
    return hog_compared(prepared)[0]


def test_where_the_ink_sits_and_how_it_was_kept_do_not_matter() -> None:
    """A picture shifted on the paper, scanned larger, or kept as the template store's uint8 levels
    gives (nearly) the vector of the original: closer than a writer's two nearest genuine signatures
    typically are (the prior's ``min_dist``). Compared as the kiosk compares them (centred)."""
    base = prepare(SignatureImage(draw(signature_strokes())))
    v = _compared(base)
    shifted = _compared(prepare(SignatureImage(draw(transform(signature_strokes(), np.eye(2), (40.0, 30.0)),
                                                          canvas=(360, 600)))))
    larger = _compared(prepare(SignatureImage(draw(signature_strokes(), scale=1.6))))
    kept = _compared(to_levels(base))  # as PaperVerifier.prepare_reference keeps it
    assert hog_distance(v, kept) == 0.0
    # Not 0: prepare resamples a shifted scan's ink a little differently, and the moment frames
    # sit at the ink's (sub-pixel) centroid.
    assert hog_distance(v, shifted) < 0.15 * shipped_centre().prior.min_dist
    assert hog_distance(v, larger) < 0.6 * shipped_centre().prior.min_dist


def test_strokes_that_run_another_way_are_far() -> None:
    """Slanted 25 degrees, the same strokes move the vector more than twice as far as a thicker
    pen does (the slant beyond a writer's references' typical nearest distance, the pen within
    it), and a different signature is farther still. Compared as the kiosk compares them."""
    strokes = signature_strokes()
    v = _compared(prepare(SignatureImage(draw(strokes))))
    shear = math.tan(math.radians(25))
    slanted = _compared(prepare(SignatureImage(draw(transform(strokes, [[1.0, -shear], [0.0, 1.0]])))))
    thicker = _compared(prepare(SignatureImage(cv2.erode(draw(strokes), np.ones((3, 3), np.uint8)))))
    t = np.linspace(0, 1, 200)
    other = [np.column_stack([40 + 380 * t, 80 + 90 * t]), np.column_stack([40 + 380 * t, 170 - 90 * t])]
    crossed = _compared(prepare(SignatureImage(draw(other))))
    assert hog_distance(v, thicker) < shipped_centre().prior.min_dist < hog_distance(v, slanted)
    assert hog_distance(v, slanted) > 2.0 * hog_distance(v, thicker)
    assert hog_distance(v, slanted) < hog_distance(v, crossed)
    assert hog_distance(v, v) == 0.0 and hog_distance(v, crossed) <= 2.0


def test_no_ink_is_an_error_and_other_arrays_are_refused() -> None:
    with pytest.raises(NoInkError):
        hog_descriptor(np.zeros((128, 128), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        hog_descriptor(np.ones((4, 4, 3), np.float32))
    # Levels of another integer type would be misread as floats (all ink): refused.
    with pytest.raises(ValueError, match="uint8"):
        hog_descriptor(np.full((128, 128), 200, np.int64))


def test_floats_are_read_as_the_store_keeps_them() -> None:
    """Every float picture gives the vector of its kept levels, also where rounding x * 255 and
    the store's x / (1/255) differ (0.5: 127 or 128; 0.1 at the ink level itself)."""
    base = prepare(SignatureImage(draw(signature_strokes())))
    tricky = base.copy()
    tricky[base > 0.5] = 0.5
    tricky[(base > 0) & (base < 0.2)] = 0.1
    for picture in (base, tricky):
        assert hog_distance(hog_descriptor(picture), hog_descriptor(to_levels(picture))) == 0.0


def test_strokes_finer_than_a_pixel_still_give_their_directions() -> None:
    """A very wide signature of fine strokes: ``prepare`` accepts it with every prepared pixel
    under the ink level (0.1). Its box is then what is at least half its darkest, not refused."""
    faint = prepare(SignatureImage(draw(signature_strokes()))) * 0.08
    v = hog_descriptor(faint)
    assert np.all(np.isfinite(v)) and np.linalg.norm(v) == pytest.approx(1.0)
    assert hog_distance(v, hog_descriptor(prepare(SignatureImage(draw(signature_strokes()))))) < shipped_centre().prior.min_dist


def test_ink_without_edges_is_far_from_every_signature() -> None:
    """A hostile or degenerate picture whose ink fills its own box (a dot, a straight bar) has no
    edge inside the box frame, whose histograms are then zero; the moment frames see its outline.
    Its vector is finite, never NaN, no longer than a signature's, and farther from a real
    signature than a writer's references typically are from each other."""
    v = hog_descriptor(prepare(SignatureImage(draw(signature_strokes()))))
    for shape in ((slice(60, 61), slice(60, 61)), (slice(60, 62), slice(10, 120)), (slice(5, 120), slice(60, 63)),
                  (slice(0, 128), slice(0, 128))):   # a dot, two bars, a picture that is all ink
        picture = np.zeros((128, 128), np.float32)
        picture[shape] = 1.0
        blank = hog_descriptor(picture)
        assert np.all(np.isfinite(blank)) and 0.0 < np.linalg.norm(blank) <= 1.0
        assert hog_distance(v, blank) > shipped_centre().prior.mean_dist


def test_a_turned_picture_is_compared_by_its_closest_turn() -> None:
    """``hog_turned``: row 0 is the picture as it is; the same strokes written 4 degrees turned
    are far from the original as they are, and close by the turn that undoes it (closer than
    the original is to a turn the wrong way); a picture is at distance 0 from its own turns."""
    config = HogConfig(framings=SHIPPED.framings, turns=(0.0, -4.0, 4.0))
    base = prepare(SignatureImage(draw(signature_strokes())))
    a = math.radians(4.0)
    # image coordinates, y down: this matrix turns the strokes clockwise on the page
    turned_page = prepare(SignatureImage(draw(transform(signature_strokes(), [[math.cos(a), -math.sin(a)],
                                                                               [math.sin(a), math.cos(a)]]))))
    rows = hog_turned(turned_page, config)
    assert rows.shape == (3, SHIPPED.length) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], hog_descriptor(turned_page, config))
    upright = hog_descriptor(base, config)
    as_is = hog_distance(rows[0], upright)
    each = [hog_distance(r, upright) for r in rows]
    assert hog_distance(rows, upright) == min(each)
    # the strokes were turned clockwise on the page: the counter-clockwise turn (+4) undoes it
    assert each[2] < 0.6 * as_is and each[1] > as_is
    # the second argument is read as it is, whether given as rows or as one descriptor
    assert hog_distance(rows, hog_turned(base, config)) == hog_distance(rows, upright)
    assert hog_distance(hog_turned(base, config), upright) == 0.0
    for bad in ((), (3.0, 0.0), (0.0, 60.0)):
        with pytest.raises(ValueError, match="turns"):
            HogConfig(turns=bad)


def test_a_turn_loses_no_ink() -> None:
    """Turned about its centroid on a grown canvas, ink in the prepared square's corners stays in."""
    from models.hog import _turn

    corners = np.zeros((128, 128), np.float32)
    for y, x in ((2, 2), (2, 125), (125, 2), (125, 125), (64, 64)):
        corners[y - 2 : y + 3, x - 2 : x + 3] = 1.0
    for degrees in (-30.0, -5.0, 5.0, 30.0):
        out = _turn(corners, degrees)
        assert out.sum() == pytest.approx(corners.sum(), rel=0.02)
        assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0.0


def test_a_slant_leans_the_strokes_right_loses_no_ink_and_adds_rows() -> None:
    """``HogConfig.shears``: the picture is also described slanted about its centroid, after its
    turns; a positive slant moves the top of an upright bar right and its foot left."""
    from models.hog import _shear

    bar = np.zeros((128, 128), np.float32)
    bar[20:108, 62:66] = 1.0
    for degrees in (-12.0, 5.0, 12.0):
        out = _shear(bar, degrees)
        assert out.sum() == pytest.approx(bar.sum(), rel=0.02)
        assert out[:, 0].max() == out[:, -1].max() == 0.0
        top, foot = (float(np.average(np.arange(out.shape[1]), weights=out[r])) for r in (22, 105))
        assert (top > foot) == (degrees > 0) and abs(top - foot) == pytest.approx(
            83 * math.tan(math.radians(abs(degrees))), abs=1.5)
    config = HogConfig(framings=SHIPPED.framings, turns=(0.0, 2.0), shears=(-5.0, 5.0))
    picture = prepare(SignatureImage(draw(signature_strokes())))
    rows = hog_turned(picture, config)
    assert rows.shape == (4, SHIPPED.length)
    np.testing.assert_array_equal(rows[:2], hog_turned(picture, HogConfig(framings=SHIPPED.framings, turns=(0.0, 2.0))))
    for bad in ((0.0,), (45.0,)):
        with pytest.raises(ValueError, match="shears"):
            HogConfig(shears=bad)


def test_local_binary_patterns_beside_the_gradients_add_their_squared_distance() -> None:
    """``HogConfig.texture``: each frame's uniform local binary patterns near ink, per cell, are
    appended so that squared distances add, (gradients' + texture × patterns') / (1 + texture);
    0 leaves the descriptor as it was."""
    from models.hog import _lbp

    config = HogConfig(framings=SHIPPED.framings, texture=0.5)
    plain = HogConfig(framings=SHIPPED.framings)
    a, b = (prepare(SignatureImage(draw(s))) for s in (signature_strokes(), transform(
        signature_strokes(), [[1.0, -0.3], [0.0, 1.0]])))
    va, vb = hog_descriptor(a, config), hog_descriptor(b, config)
    assert va.shape == (config.length,) == (plain.length + 3 * (32 + 8) * 59,)
    assert np.linalg.norm(va) == pytest.approx(1.0, abs=1e-5)
    ga, gb = hog_descriptor(a, plain), hog_descriptor(b, plain)
    np.testing.assert_allclose(va[: plain.length] * np.sqrt(1.5), ga, atol=1e-6)
    patterns = float(np.linalg.norm(va[plain.length:] - vb[plain.length:])) ** 2 * 1.5 / 0.5
    assert hog_distance(va, vb) ** 2 == pytest.approx((hog_distance(ga, gb) ** 2 + 0.5 * patterns) / 1.5, rel=1e-4)
    assert patterns > 0.01
    # A straight bar's patterns: edges and ends only, none of the codes a crossing makes.
    bar = np.zeros((64, 128), np.float32)
    bar[30:34, 20:108] = 1.0
    cross = bar.copy()
    cross[8:56, 62:66] = 1.0
    blur = cv2.GaussianBlur
    assert np.linalg.norm(_lbp(blur(bar, (0, 0), 0.8), 16) - _lbp(blur(cross, (0, 0), 0.8), 16)) > 0.5
    assert np.all(_lbp(np.zeros((64, 128), np.float32), 16) == 0.0)
    for bad in ({"texture": -1.0}, {"texture": float("nan")}, {"texture": 1.0, "texture_cell": 12},
                {"texture": 1.0, "texture_cell": 1}):
        with pytest.raises(ValueError, match="texture"):
            HogConfig(**bad)  # type: ignore[arg-type]


def _brute_force_cells(magnitude: np.ndarray, position: np.ndarray, cell: int, ch: int, cw: int,
                       nbins: int) -> np.ndarray:
    """Trilinear votes, one pixel at a time (what ``_interpolated_cells`` computes separably)."""
    out = np.zeros((ch, cw, nbins))
    for y in range(magnitude.shape[0]):
        for x in range(magnitude.shape[1]):
            b = position[y, x] - 0.5
            b0 = math.floor(b)
            cy, cx = (y + 0.5) / cell - 0.5, (x + 0.5) / cell - 0.5
            y0, x0 = math.floor(cy), math.floor(cx)
            for yy, wy in ((y0, 1 - (cy - y0)), (y0 + 1, cy - y0)):
                for xx, wx in ((x0, 1 - (cx - x0)), (x0 + 1, cx - x0)):
                    for bb, wb in ((b0 % nbins, 1 - (b - b0)), ((b0 + 1) % nbins, b - b0)):
                        out[min(max(yy, 0), ch - 1), min(max(xx, 0), cw - 1), bb] += magnitude[y, x] * wy * wx * wb
    return out


def test_interpolated_votes_are_shared_by_distance_and_none_is_lost() -> None:
    """``HogConfig.interpolate``: each pixel's vote goes to its two nearest direction bins (around
    the circle) and its four nearest cells by distance, the edge cells taking what falls outside;
    every vote counts whole. A stroke moved by a pixel then moves the histograms less than with
    whole votes."""
    from models.hog import _interpolated_cells

    rng = np.random.default_rng(3)
    magnitude, position = rng.random((16, 24)), rng.random((16, 24)) * 6
    cells = _interpolated_cells(magnitude, position, 4, 4, 6, 6)
    np.testing.assert_allclose(cells, _brute_force_cells(magnitude, position, 4, 4, 6, 6), atol=1e-12)
    assert cells.sum() == pytest.approx(magnitude.sum())
    # A direction at a bin's centre goes to that bin alone; halfway between bins 5 and 0, half each.
    one = np.zeros((8, 8))
    one[1, 1] = 1.0   # nearer cell 0's centre than any other: all of it there
    assert _interpolated_cells(one, np.full((8, 8), 2.5), 4, 2, 2, 6)[0, 0].tolist() == [0, 0, 1, 0, 0, 0]
    halves = _interpolated_cells(one, np.full((8, 8), 0.0), 4, 2, 2, 6)[0, 0]
    assert halves.tolist() == [0.5, 0, 0, 0, 0, 0.5]

    interpolated = HogConfig(framings=SHIPPED.framings, interpolate=True)
    picture = prepare(SignatureImage(draw(signature_strokes())))
    v = hog_descriptor(picture, interpolated)
    assert v.shape == (SHIPPED.length,) and np.linalg.norm(v) == pytest.approx(1.0)
    # One of two bars drawn 3 pixels lower (the box around them unchanged): with shared votes the
    # histograms move less.
    bars = np.zeros((64, 128), np.float32)
    bars[40:44, 10:118] = 1.0
    upper = np.zeros_like(bars)
    upper[20:24, 10:118] = 1.0
    whole, shared = HogConfig(framings=(("box", 0.0),)), HogConfig(framings=(("box", 0.0),), interpolate=True)
    moved = [hog_distance(hog_descriptor(bars + upper, c), hog_descriptor(bars + np.roll(upper, 3, axis=0), c))
             for c in (whole, shared)]
    assert 0.0 < moved[1] < 0.8 * moved[0]


def test_the_kiosk_compares_each_turn_less_the_shipped_mean_at_unit_length() -> None:
    """``hog_compared`` is ``hog_turned`` centred on the shipped mean: each row the descriptor
    less the mean, at unit length. The mean of unit descriptors of many pictures is shorter than
    one, non-negative, and read-only once loaded."""
    centre = shipped_centre().mean
    assert centre.shape == (SHIPPED.length,) and centre.dtype == np.float32 and not centre.flags.writeable
    with pytest.raises(ValueError):
        centre.flags.writeable = True     # no caller can change the mean for the whole process
    assert np.all(centre >= 0.0) and 0.3 < np.linalg.norm(centre) < 1.0
    picture = prepare(SignatureImage(draw(signature_strokes())))
    rows = hog_compared(picture)
    turned = hog_turned(picture)
    expected = (turned - centre) / np.linalg.norm(turned - centre, axis=1, keepdims=True)
    assert rows.shape == turned.shape and rows.dtype == np.float32
    assert np.allclose(rows, expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    # What every signature shares is gone: the centred rows lean away from the mean, not along it.
    assert float(rows[0] @ centre) < float(turned[0] @ centre)
    # A row that is the centre itself stays zero (no division by nothing).
    assert not np.any(centred(centre[None, :], centre)) and np.isfinite(centred(centre, centre)).all()


def test_a_mean_that_is_missing_unreadable_or_not_the_descriptors_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Whatever is in the file, ``load_centre`` returns a usable mean and prior or raises
    ``CentreError`` naming the file: never another exception, and nothing large is read."""
    prior = np.array([0.8, 0.9])
    ok = np.full(SHIPPED.length, 0.01, np.float32)
    good = tmp_path / "good.npz"
    good.write_bytes(centre_bytes(HogCentre(ok, shipped_centre().prior)))
    loaded = load_centre(good)
    assert loaded.mean.shape == (SHIPPED.length,) and loaded.prior == shipped_centre().prior
    np.savez(tmp_path / "short.npz", mean=np.zeros(100, np.float32), prior=prior)
    np.savez(tmp_path / "nan.npz", mean=np.full(SHIPPED.length, np.nan, np.float32), prior=prior)
    np.savez(tmp_path / "complex.npz", mean=ok.astype(np.complex64), prior=prior)
    np.savez(tmp_path / "strings.npz", mean=ok.astype(str), prior=prior)
    np.savez(tmp_path / "structured.npz", mean=np.zeros(SHIPPED.length, dtype=[("a", "f4"), ("b", "f4")]), prior=prior)
    np.savez(tmp_path / "other.npz", values=ok, prior=prior)
    np.savez(tmp_path / "no-prior.npz", mean=ok)
    np.savez(tmp_path / "bad-prior.npz", mean=ok, prior=np.array([-1.0, 0.9]))
    np.savez(tmp_path / "nan-prior.npz", mean=ok, prior=np.array([np.nan, 0.9]))
    np.save(tmp_path / "bare.npy", ok)
    (tmp_path / "bare.npz").write_bytes((tmp_path / "bare.npy").read_bytes())   # an .npy named .npz
    (tmp_path / "text.npz").write_text("not a mean")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 a zip's first bytes, then nothing")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "pickled.npz", mean=np.array([{"mean": 1}], dtype=object), prior=prior)
    # A small file that declares a huge array: refused before anything is read.
    with zipfile.ZipFile(tmp_path / "huge.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("mean.npy", b"\0" * (64 << 20))
        z.writestr("prior.npy", b"")
    assert (tmp_path / "huge.npz").stat().st_size < 1 << 20
    names = ("missing.npz", "short.npz", "nan.npz", "complex.npz", "strings.npz", "structured.npz", "other.npz",
             "no-prior.npz", "bad-prior.npz", "nan-prior.npz", "bare.npz", "text.npz", "broken.npz", "empty.npz",
             "pickled.npz", "huge.npz")
    for name in names:
        with pytest.raises(CentreError) as err:
            load_centre(tmp_path / name)
        assert isinstance(err.value, VerificationError) and name in str(err.value)
    with pytest.raises(CentreError, match="more than a mean descriptor's"):
        load_centre(tmp_path / "huge.npz")
