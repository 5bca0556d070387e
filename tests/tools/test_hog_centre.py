"""The gradient histograms' mean descriptor: fitted on training writers only, with its record;
the evaluator compares pictures centred on it as the kiosk does; and a short run on real scans
measures centring beside the plain histograms."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from models._assets import shipped_assets
from models.hog import CENTRE_FILE, SHIPPED, hog_compared, hog_descriptor, load_centre
from models.image_preprocess import prepare, to_levels
from tests.shared_data import shared_data
from tools.datasets import load_images
from tools.datasets.types import Dataset, writer_split
from tools.evaluate_offline import HogProvider, fit_prior
from tools.hog_centre import main, mean_descriptor

OFFLINE = shared_data("offline")


def test_the_shipped_centre_is_of_training_writers_only() -> None:
    """The record names only training writers (validation writers choose the fusions and the
    paper threshold; test writers nothing), the descriptor's length and enough pictures."""
    record = json.loads((shipped_assets() / "hog_centre.run.json").read_text())
    assert record["command"] == "python -m tools.hog_centre --fit"
    assert record["descriptor_length"] == SHIPPED.length
    writers = [w for ws in record["writers"].values() for w in ws]
    assert len(writers) > 100 and all(writer_split(w) == "train" for w in writers)
    assert record["pictures"] > 4000 and set(record["data_sha256"]) == {"dutch", "cross-media"}
    # The record is of this very file, and names the prior the file holds.
    shipped = shipped_assets() / CENTRE_FILE
    assert record["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    centre = load_centre(shipped)
    assert centre.mean.shape == (SHIPPED.length,)
    assert [centre.prior.min_dist, centre.prior.mean_dist] == record["prior"]


def test_a_quick_fit_is_the_mean_of_the_training_writers_pictures(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(OFFLINE), "--fit", "--max-writers", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "hog_centre.run.json").read_text())
    assert record["command"].endswith("--fit --max-writers 2 --out " + str(tmp_path))
    dutch = load_images(OFFLINE / "sigcomp-dutch-kaggle", "sigcomp-dutch")
    assert record["writers"]["dutch"] == ["001", "002"]    # the first two training writers; 003 also trains
    rows = [hog_descriptor(to_levels(prepare(s.image))) for w in record["writers"]["dutch"] for s in dutch.writers[w]]
    cross = load_images(OFFLINE / "cross-media-chinese", "cross-media")
    rows += [hog_descriptor(to_levels(prepare(s.image))) for w in record["writers"]["cross-media"]
             for s in cross.writers[w]]
    assert record["pictures"] == len(rows)
    fitted = load_centre(tmp_path / CENTRE_FILE)
    assert np.allclose(fitted.mean, mean_descriptor(rows), atol=1e-6)
    # The prior is of the distances centred on that mean, among the Dutch training writers' references.
    provider = HogProvider.centred_on(fitted)
    training = Dataset(dutch.name, {w: dutch.writers[w] for w in record["writers"]["dutch"]})
    assert fit_prior(training, provider) == fitted.prior
    assert record["prior"] == [fitted.prior.min_dist, fitted.prior.mean_dist]
    assert record["sha256"] == hashlib.sha256((tmp_path / CENTRE_FILE).read_bytes()).hexdigest()
    assert "training writers" in capsys.readouterr().out


def test_a_quick_fit_never_writes_the_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pointed at a copy of the assets, so that a broken guard would not overwrite the shipped file.
    import tools.hog_centre

    monkeypatch.setattr(tools.hog_centre, "shipped_assets", lambda: tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["--data", str(OFFLINE), "--fit", "--max-writers", "2"])
    assert exited.value.code == 2 and not list(tmp_path.iterdir())


def test_the_evaluator_compares_the_histograms_as_the_kiosk_does() -> None:
    dutch = load_images(OFFLINE / "sigcomp-dutch-kaggle", "sigcomp-dutch")
    sample = dutch.writers["001"][0]
    rows = HogProvider().features(sample)
    assert np.array_equal(rows, hog_compared(to_levels(prepare(sample.image))))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_a_short_run_on_real_scans_measures_centring_on_each_set_left_out(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(OFFLINE), "--measure", "leave-one-set-out", "--max-writers", "3"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " left out, " in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "dutch left out, plain", "dutch left out, centred", "cross-media left out, plain", "cross-media left out, centred"]
    eers = [[float(e) for e in re.findall(r"K=\d\s+(\d+\.\d+)", line)] for line in lines]
    assert [len(e) for e in eers] == [1, 1, 2, 2]
    assert all(0.0 <= e <= 100.0 for row in eers for e in row)
    # Centring changes what is measured (a few writers: not which is lower).
    assert eers[0] != eers[1] or eers[2] != eers[3]
