"""The shipped CNN-LSTM image models through the real TFLite runtime (models.offline_embed).

Golden inputs are prepared images of synthesised signatures rendered as ink (no research data in
the repository); the outputs were produced by the same runtime when the model was converted.
Real Dutch scans (shared data, test writers) check that the int8 model agrees with the float one
and that it tells writers apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

from kiosk.golden import check_golden
from models import shipped_assets
from models.image_preprocess import prepare
from models.offline_embed import DEFAULT_MODEL, ImageEmbedder, embedding_distance, l2_normalise, load_config
from models.runtime import ModelError
from models.scoring import NormalisationPrior

ASSETS = shipped_assets()
INT8 = ASSETS / "cnn_lstm_int8.tflite"
FLOAT = ASSETS / "cnn_lstm_float.tflite"


def _golden(model: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(model.with_name(model.stem + ".golden.npz")) as z:
        return z["image"], z["outputs"]


@pytest.fixture(scope="module")
def int8() -> ImageEmbedder:
    return ImageEmbedder(INT8)


@pytest.fixture(scope="module")
def flt() -> ImageEmbedder:
    return ImageEmbedder(FLOAT)


@pytest.fixture(scope="module")
def scans() -> dict[str, list[np.ndarray]]:
    """Prepared genuine scans of four Dutch test writers (six each)."""
    from tools.datasets import load_images

    ds = load_images(shared_data("offline/sigcomp-dutch-kaggle"), "sigcomp-dutch").subset("test")
    writers = sorted(w for w in ds.writers if len(ds.genuine(w)) >= 6)[:4]
    assert len(writers) == 4
    return {w: [prepare(s.image) for s in ds.genuine(w)[:6]] for w in writers}


def test_default_model_is_the_shipped_int8_one() -> None:
    assert DEFAULT_MODEL == INT8 and INT8.is_file()


@pytest.mark.parametrize("model", [INT8, FLOAT], ids=["int8", "float"])
def test_golden_vectors(model: Path) -> None:
    emb = ImageEmbedder(model)
    images, outputs = _golden(model)
    assert len(images) >= 3
    for x, want in zip(images, outputs):
        got = emb.embed(x)
        assert got.shape == (emb.config.emb_dim,) and got.dtype == np.float32
        assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-4
        # The golden file holds the model's raw output (what the update agent checks); the
        # embedding is its unit vector. int8: kernels may round one step differently across CPUs;
        # a step is ~1/100 of a unit vector.
        np.testing.assert_allclose(got, l2_normalise(want), atol=1e-4 if model == FLOAT else 0.02)


@pytest.mark.parametrize("model", [INT8, FLOAT], ids=["int8", "float"])
def test_the_update_agents_golden_check_passes_on_the_shipped_image_models(model: Path) -> None:
    # A bundle carrying the CNN-LSTM used to be refused by every kiosk ("golden input 'images'
    # matches no single model input"): its golden file did not name the model's input.
    result = check_golden(model, model.with_name(model.stem + ".golden.npz"))
    assert result.ok, result.detail


def test_int8_model_is_fully_integer_and_small(int8: ImageEmbedder) -> None:
    assert int8.model.quantised
    (d,) = int8.model.input_details
    assert np.dtype(d["dtype"]) == np.int8 and d["quantization"][0] > 0
    assert INT8.stat().st_size < 2 * 1024 * 1024


def test_config_beside_the_model(int8: ImageEmbedder) -> None:
    cfg = load_config(INT8)
    assert cfg.input_size == 128 and cfg.emb_dim == int8.model.output_detail["shape"][1]
    assert isinstance(cfg.prior, NormalisationPrior)
    assert 0 < cfg.prior.min_dist <= cfg.prior.mean_dist < 2
    assert 0.5 < cfg.threshold < 3


def test_state_is_reset_between_calls(int8: ImageEmbedder) -> None:
    """The LSTM's state must not leak from one image to the next."""
    images, _ = _golden(INT8)
    a = int8.embed(images[0])
    int8.embed(images[1])
    np.testing.assert_array_equal(int8.embed(images[0]), a)


def test_int8_agrees_with_float_on_real_scans(int8: ImageEmbedder, flt: ImageEmbedder,
                                              scans: dict[str, list[np.ndarray]]) -> None:
    cos = [float(int8.embed(x) @ flt.embed(x)) for xs in scans.values() for x in xs]
    assert np.mean(cos) > 0.95 and min(cos) > 0.85


@pytest.mark.parametrize("which", ["int8", "float"])
def test_same_writer_closer_than_another_writer(which: str, int8: ImageEmbedder, flt: ImageEmbedder,
                                                scans: dict[str, list[np.ndarray]]) -> None:
    emb = int8 if which == "int8" else flt
    e = {w: [emb.embed(x) for x in xs] for w, xs in scans.items()}
    names = sorted(e)
    same = [embedding_distance(a, b) for w in names for i, a in enumerate(e[w]) for b in e[w][i + 1:]]
    other = [embedding_distance(a, b) for i, w in enumerate(names) for v in names[i + 1:] for a in e[w] for b in e[v]]
    assert np.mean(same) < 0.8 * np.mean(other)
    # And through the template: a writer's own held-out scan scores lower than the others' scans.
    wins = 0
    for w in names:
        t = emb.build_template(e[w][:5])
        own = emb.score(t, e[w][5])
        wins += all(own < emb.score(t, e[v][5]) for v in names if v != w)
    assert wins >= 3


def test_wrong_input_shape(int8: ImageEmbedder) -> None:
    with pytest.raises(ModelError, match="prepared 128x128"):
        int8.embed(np.zeros((64, 64), np.float32))
    with pytest.raises(ModelError, match="prepared 128x128"):
        int8.embed(np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ModelError, match="finite floats"):
        int8.embed(np.zeros((128, 128), np.uint8))
    bad = np.zeros((128, 128), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ModelError, match="finite floats"):
        int8.embed(bad)
    # A (128, 128, 1) image is the same as (128, 128).
    images, _ = _golden(INT8)
    np.testing.assert_array_equal(int8.embed(images[0]), int8.embed(images[0][..., 0]))


def test_missing_model_and_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        ImageEmbedder(tmp_path / "nope.tflite")
    lone = tmp_path / "lone.tflite"
    shutil.copy(INT8, lone)
    with pytest.raises(ModelError, match="no offline model config"):
        ImageEmbedder(lone)
    (tmp_path / "lone.config.json").write_text('{"input_size": 128}')
    with pytest.raises(ModelError, match="not an offline model config"):
        ImageEmbedder(lone)


def test_incompatible_models(tmp_path: Path) -> None:
    # The pen model with an image config: its inputs are not an image.
    pen = tmp_path / "pen.tflite"
    shutil.copy(ASSETS / "tsgatr_student_int8.tflite", pen)
    shutil.copy(INT8.with_name(INT8.stem + ".config.json"), tmp_path / "pen.config.json")
    with pytest.raises(ModelError, match="input"):
        ImageEmbedder(pen)
    # A config that disagrees with the model's input size.
    other = tmp_path / "other.tflite"
    shutil.copy(INT8, other)
    cfg = INT8.with_name(INT8.stem + ".config.json").read_text().replace('"input_size": 128', '"input_size": 96')
    (tmp_path / "other.config.json").write_text(cfg)
    with pytest.raises(ModelError, match="does not match"):
        ImageEmbedder(other)
    # Not a model at all.
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    shutil.copy(INT8.with_name(INT8.stem + ".config.json"), tmp_path / "junk.config.json")
    with pytest.raises(ModelError, match="cannot load"):
        ImageEmbedder(junk)
