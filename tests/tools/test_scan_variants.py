"""Scanner variants of the paper path's measurement: each transform does what it says, and the
kiosk's scan path keeps real signature crops whole."""

from __future__ import annotations

import numpy as np
import pytest

from models.image_preprocess import prepare, prepared_similarity
from tests.shared_data import shared_data
from tools.datasets import load_images
from tools.scan_variants import (
    VARIANTS,
    audit_finder,
    bilevel,
    grey_paper,
    light_pen,
    main,
    of_split,
    rescaled,
    turned,
    uneven_light,
    varied,
)


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    p = np.full((120, 300), 255, np.uint8)
    p[50:58, 30:270] = 0          # a stroke
    p[20:100, 140:146] = 60
    return p


def test_every_variant_gives_grey_uint8_pixels(page: np.ndarray) -> None:
    for name, variant in VARIANTS.items():
        out = variant(page, np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.ndim == 2, name


def test_each_variant_changes_the_scan_the_way_it_says(page: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    assert rescaled(0.5)(page, rng).shape == (60, 150)
    assert rescaled(2.0)(page, rng).shape == (240, 600)
    assert set(np.unique(bilevel(page, rng))) <= {0, 255}
    grey = grey_paper(200.0, 6.0)(page, rng)
    assert abs(float(np.median(grey)) - 200.0) < 3 and grey.std() > 0
    assert light_pen(140.0)(page, rng).min() == 140
    assert turned(3.0)(page, rng).shape == page.shape
    lit = uneven_light(0.55, 0.85)(page, rng)
    assert lit[-1, 0] < 0.6 * 255 and lit[-1, -1] == 255


def test_the_kiosk_path_keeps_real_signature_crops_whole() -> None:
    ds = of_split(load_images(shared_data("offline/sigcomp-dutch-kaggle"), "sigcomp-dutch"), "train", max_writers=2)
    through = varied(ds, VARIANTS["as scanned"], kiosk_path=True)
    assert not through.skipped
    for w, samples in ds.writers.items():
        for a, b in zip(samples, through.writers[w]):
            assert b.image.source == "scan: whole picture"
            assert prepared_similarity(prepare(a.image), prepare(b.image)) > 0.97


def test_the_finder_audit_counts_what_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    r = audit_finder(shared_data("offline"), max_pictures=4)
    assert r.pictures == 8 and r.refused == {} and r.found == {"scan: whole picture": 8}
    assert main(["--data", str(shared_data("offline")), "--finder", "--max-pictures", "2"]) == 0
    assert "4 pictures; refused 0" in capsys.readouterr().out
