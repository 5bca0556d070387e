"""``sigkiosk train offline --quick``: the CNN-LSTM image pipeline end to end on the shared data.

Dutch scans of a few writers, a few cross-media writers' (writer, name) identities (training and
validate), ink rendered from a few online writers (training and validate) and from three synthetic
writers, prepared and cached in a temporary folder; two tiny epochs with the blur + re-threshold
augmentation, selected on Dutch, cross-media and rendered validate writers; float and
full-int8 conversion, prior and threshold, golden vectors and the run record (about a minute on
two cores). The run is made to fail its degenerate-model gate (``--max-eer 0``) while asked to
``--ship``: it keeps its artefacts, exits 3 and ships nothing. Runs in a subprocess so that
tensorflow is never imported into the test process (the device modules are tested without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
RECORD = "cnn_lstm.run.json"


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def quick_proc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, dict[str, str]]:
    """One quick run with ``--out`` and the degenerate gate set where every model fails it
    (``--max-eer 0``), asked to ``--ship`` into a copy of the shipped models: it must write every
    artefact to its folder, say loudly that the model is degenerate, exit 3 and ship nothing."""
    from models import shipped_assets

    data = shared_data("offline/sigcomp-dutch-kaggle").parents[1]
    out = tmp_path_factory.mktemp("offline_quick")
    shutil.copytree(shipped_assets(), out / "assets-copy")
    before = hashes(out / "assets-copy")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "offline", "--quick", "--synthetic", "3", "--blur", "0.5",
         "--select-on", "dutch+cross-media+rendered", "--data", str(data),
         "--out", str(out / "assets"), "--cache", str(out / "cache"),
         "--max-eer", "0", "--ship", "--assets", str(out / "assets-copy")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return out, proc, before


@pytest.fixture(scope="module")
def quick_run(quick_proc: tuple[Path, subprocess.CompletedProcess, dict[str, str]]) -> Path:
    out, proc, _ = quick_proc
    assert proc.returncode == 3, proc.stderr[-3000:]
    return out


def test_a_degenerate_model_fails_loudly_and_is_not_shipped(
        quick_proc: tuple[Path, subprocess.CompletedProcess, dict[str, str]]) -> None:
    out, proc, before = quick_proc
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "DEGENERATE MODEL" in proc.stderr and "NOT replaced" in proc.stderr
    for name in ("cnn_lstm_float", "cnn_lstm_int8"):
        assert re.search(rf"{name}: validation skilled-forgery EER [\d.]+ % >= 0 %", proc.stderr)
    assert hashes(out / "assets-copy") == before
    rec = json.loads((out / "assets" / RECORD).read_text())
    problems = rec["checks"]["problems"]
    assert rec["checks"]["passed"] is False
    for name in ("cnn_lstm_float", "cnn_lstm_int8"):
        assert sum(p.startswith(f"{name}: validation skilled-forgery EER") for p in problems) == 1
    assert rec["checks"]["max_eer"] == 0 and "shipped_to" not in rec


def test_artefacts_and_run_record(quick_run: Path) -> None:
    assets = quick_run / "assets"
    for name in ("cnn_lstm_float", "cnn_lstm_int8"):
        assert (assets / f"{name}.tflite").stat().st_size > 1000
        cfg = json.loads((assets / f"{name}.config.json").read_text())
        assert cfg["input_size"] == 128 and cfg["emb_dim"] == 16
        assert cfg["prior"]["min_dist"] > 0 and cfg["prior"]["mean_dist"] >= cfg["prior"]["min_dist"]
    rec = json.loads((assets / "cnn_lstm.run.json").read_text())
    assert "train offline --quick" in rec["command"]
    # Scans, the cross-media set and the four online sets that were rendered, each named by its files' hash.
    assert set(rec["data_sha256"]) == {"sigcomp-dutch", "cross-media", "susig-visual", "susig-blind",
                                       "sigcomp2009-nfi", "sigwicomp2013-jp"}
    assert all(len(h) == 64 for h in rec["data_sha256"].values())
    assert len(rec["history"]) == 2 and rec["best_epoch"] in (1, 2)
    assert rec["images"]["train_writers"] > rec["images"]["validate_writers"] > 0
    assert rec["images"]["synthetic_train_writers"] == 3 and rec["images"]["validate_writers_rendered"] > 0
    # Three writers of each split who wrote on paper and on devices: ten identities each.
    assert rec["images"]["cross_media_train_identities"] == 30 and rec["cross_media_training"] is True
    assert rec["images"]["cross_media_validate_identities"] == 30
    assert "blur" in rec["augmentation"] and rec["train_config"]["select_on"] == "dutch+cross-media+rendered"
    # The selection figure is the mean of the Dutch, the cross-media and the rendered validate
    # writers' skilled EERs, and the best epoch is the one with the lowest.
    for h in rec["history"]:
        want = (h["val"]["skilled_eer_global"] + h["val_cross_media"]["skilled_eer_global"]
                + h["val_rendered"]["skilled_eer_global"]) / 3
        assert h["criterion"] == pytest.approx(want, abs=1e-3)
    assert rec["best_criterion"] == min(h["criterion"] for h in rec["history"])
    for m in rec["models"].values():
        assert 0.0 <= m["validation"]["skilled_eer_global"] <= 100.0
        assert 0.0 <= m["selection"]["criterion"] <= 100.0


def test_prepared_images_cached_outside_the_assets(quick_run: Path) -> None:
    cached = sorted((quick_run / "cache").glob("*.npz"))
    assert any(p.name.startswith("sigcomp-dutch-") for p in cached)
    assert any(p.name.startswith("rendered-") for p in cached)
    assert any(p.name.startswith("rendered-validate-") for p in cached)
    assert any(p.name.startswith("cross-media-") for p in cached)
    assert any(p.name.startswith("synthetic-") for p in cached)
    with np.load(cached[0]) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape[1:] == (128, 128)
    assert not list((quick_run / "assets").glob("*.npz")) or all(
        p.name.endswith(".golden.npz") for p in (quick_run / "assets").glob("*.npz"))


def test_quick_int8_model_loads_and_reproduces_its_golden_vectors(quick_run: Path) -> None:
    from kiosk.golden import check_golden
    from models.offline_embed import ImageEmbedder, l2_normalise

    model = quick_run / "assets" / "cnn_lstm_int8.tflite"
    emb = ImageEmbedder(model)
    assert emb.model.quantised
    golden = model.with_name(model.stem + ".golden.npz")
    with np.load(golden) as z:
        images, outputs = z["image"], z["outputs"]
    for x, want in zip(images, outputs):
        np.testing.assert_allclose(emb.embed(x), l2_normalise(want), atol=0.02)
    assert check_golden(model, golden).ok   # what a kiosk checks when the model comes in a bundle


def test_blur_rethreshold_gives_binary_ink_of_another_width() -> None:
    from tools.train.offline.augment import blur_rethreshold

    x = np.zeros((128, 128), np.float32)
    x[40:90, 60:63] = 1.0  # a 3-pixel stroke
    widths = set()
    for seed in range(20):
        y = blur_rethreshold(x, np.random.default_rng(seed))
        assert y.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
        widths.add(int(y[65].sum()))
    assert len(widths) > 1 and all(1 <= w <= 7 for w in widths)


def test_selection_rejects_an_unknown_criterion() -> None:
    from models.scoring import NormalisationPrior
    from tools.train.offline.data import ImageCorpus
    from tools.train.offline.selection import selection

    with pytest.raises(ValueError, match="select_on"):
        selection(lambda idx: np.zeros((len(idx), 4), np.float32), ImageCorpus.concat([]),
                  NormalisationPrior(0.5, 0.6), 1, "test-writers")


def test_score_names_a_missing_model() -> None:
    from tools.cli import main

    with pytest.raises(SystemExit, match="no such model"):
        main(["train", "offline", "--score", str(ROOT / "no-such-model.tflite")])


def test_offline_training_modules_load_without_tensorflow() -> None:
    """TensorFlow is imported only where a model is built, trained or converted: importing every
    module of the image training (what ``sigkiosk train offline`` and these tests load) must not
    start it (seconds, and gigabytes the data and selection code do not need)."""
    code = (
        "import sys, tools.train.offline.data, tools.train.offline.augment, tools.train.offline.selection,"
        " tools.train.offline.trainer, tools.train.offline.convert, tools.train.offline.pipeline;"
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
