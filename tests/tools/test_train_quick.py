"""``sigkiosk train online --quick``: the whole learned pipeline end to end on the shared data.

Real + synthetic training (a few sigma-lognormal identities, device augmentation), teacher, distilled student, float and full-int8 conversion, golden vectors, fusion on validation
writers and the run record, with tiny models (about two minutes on two cores). The run goes to a
new folder, is shipped with ``--ship`` into a copy of the shipped models (the real ones untouched)
and is quiet without ``-v``. Needs the ``train`` extra (tensorflow-cpu, tf_keras) and the shared
data. Runs in a subprocess so that tensorflow is never imported into the test process (the device
modules are tested without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]


#: What a run of ``train online`` writes, and ``--ship`` copies into the shipped folder.
WRITTEN = ("tsgatr_student_int8", "tsgatr_student_float", "tsgatr_teacher_float", "fusion", "tsgatr.run")


def hashes(folder: Path, prefixes: tuple[str, ...] | None = None) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and (prefixes is None or p.name.startswith(prefixes))}


@dataclass
class QuickRun:
    folder: Path  # the run folder
    home: Path  # the working directory the command ran in
    assets: Path  # a copy of the shipped models folder, which --ship replaced
    assets_before: dict[str, str]
    real_before: dict[str, str]
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """One quick run as a data scientist would start it: no --out (so a new run folder under the
    working directory), --ship into a copy of the shipped models, and no TensorFlow log settings
    in the environment (the command quiets it itself)."""
    from models import shipped_assets

    data = shared_data("online")
    home = tmp_path_factory.mktemp("quick")
    assets = home / "assets-copy"
    shutil.copytree(shipped_assets(), assets)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "GLOG"))}
    real_before = hashes(shipped_assets(), WRITTEN)
    assets_before = hashes(assets)
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "online", "--quick", "--data", str(data.parent),
         "--work", str(home / "work"), "--ship", "--assets", str(assets),
         # real + synthetic: a few fitted identities with duplicates and forgery-likes, device augmentation
         "--synthetic-identities", "3", "--synthetic-duplicates", "3", "--forgery-like", "2",
         "--device-augment", "0.5", "--augment-copies", "1"],
        cwd=home, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = sorted((home / "runs").iterdir())
    assert len(folders) == 1
    return QuickRun(folders[0], home, assets, assets_before, real_before, proc)


@pytest.fixture(scope="module")
def quick_run(quick: QuickRun) -> Path:
    return quick.folder


def test_default_output_is_a_new_run_folder_and_ship_replaces_the_copy(quick: QuickRun) -> None:
    from models import shipped_assets

    assert re.fullmatch(r"online-\d{8}T\d{6}Z", quick.folder.name)
    assert f"run folder: runs/{quick.folder.name}" in quick.proc.stdout
    # The real shipped models were not touched (hash before and after).
    assert hashes(shipped_assets(), WRITTEN) == quick.real_before
    # --ship replaced, in the copy, exactly what the run wrote, and left the rest as it was.
    run_files = hashes(quick.folder)
    after = hashes(quick.assets)
    assert {n: after[n] for n in run_files} == run_files
    assert {n: h for n, h in after.items() if n not in run_files} == {
        n: h for n, h in quick.assets_before.items() if n not in run_files}
    assert any(quick.assets_before.get(n) != h for n, h in run_files.items())
    rec = json.loads((quick.assets / "tsgatr.run.json").read_text())
    assert rec["checks"]["passed"] and rec["shipped_to"] == str(quick.assets)
    assert rec["artefacts_sha256"] == {n: h for n, h in run_files.items() if n != "tsgatr.run.json"}
    assert f"shipped {len(run_files)} file(s)" in quick.proc.stdout


def test_tensorflow_noise_is_off_by_default(quick: QuickRun) -> None:
    """The run's own lines are not buried: no TensorFlow C++ log line, absl notice or Python warning
    from TensorFlow reaches the terminal without -v."""
    noise = re.compile(r"^[IW]\d{4} |absl::InitializeLog|oneDNN|fully_quantize|XNNPACK|UserWarning", re.M)
    assert not noise.findall(quick.proc.stderr), quick.proc.stderr[:2000]
    assert "teacher epoch 1:" in quick.proc.stdout and "converted tsgatr_student_int8" in quick.proc.stdout


def test_artefacts_and_run_record(quick_run: Path) -> None:
    for name in ("tsgatr_student_int8", "tsgatr_student_float", "tsgatr_teacher_float"):
        assert (quick_run / f"{name}.tflite").stat().st_size > 1000
        assert json.loads((quick_run / f"{name}.config.json").read_text())["max_len"] == 32
    # The teacher's Keras weights stay with the run (for --teacher-weights), beside what ships.
    assert (quick_run / "weights" / "teacher.weights.h5").stat().st_size > 1000
    rec = json.loads((quick_run / "tsgatr.run.json").read_text())
    assert "train online --quick" in rec["command"]
    assert set(rec["data_sha256"]) == {"susig-visual", "susig-blind", "sigcomp2009-nfi", "sigwicomp2013-jp"}
    assert all(len(h) == 64 for h in rec["data_sha256"].values())
    assert len(rec["teacher_history"]) == 1 and len(rec["student_history"]) == 1
    for v in rec["validation_skilled_eer_k5"].values():
        assert 0.0 <= v["mean"] <= 100.0
    assert rec["fusion"]["weights"][0] < 0


def test_run_record_names_the_synthesis_and_the_cross_device_validation(quick_run: Path) -> None:
    rec = json.loads((quick_run / "tsgatr.run.json").read_text())
    syn = rec["synthetic"]
    assert syn["config"]["identities"] == 3 and syn["config"]["seed"] == 0
    assert syn["fits"]["fitted"] == 3 and syn["fits"]["snr_velocity_db"]["median"] > 15.0
    assert syn["identities"] >= 2 and syn["signatures"] == 5 * syn["identities"]
    assert len(syn["fitted_keys_sha256"]) == 64
    aug = rec["device_augment"]
    assert aug["copies"] == 1 and aug["signatures"] > 20 and aug["p_augment"] == 0.5
    assert rec["train_config"]["p_synthetic"] == 0.5 and rec["train_config"]["p_augment"] == 0.5
    cdv = rec["cross_device_validation"]
    # The quick run keeps 2 validation writers per set: a set whose two have no forgeries has no cell.
    assert {"susig-visual", "susig-blind"} <= set(cdv["cells"]) <= {"susig-visual", "susig-blind", "sigcomp2009-nfi"}
    assert {"recorded", "no-pressure", "75hz"} <= set(cdv["cells"]["susig-visual"])
    assert 0.0 <= cdv["mean"] <= 100.0


def test_quick_models_pass_their_golden_vectors(quick_run: Path) -> None:
    from models.learned import INPUT_NAMES
    from models.runtime import TFLiteModel

    model = quick_run / "tsgatr_student_int8.tflite"
    rt = TFLiteModel(model)
    assert rt.quantised
    with np.load(model.with_name(model.stem + ".golden.npz")) as z:
        g = {k: z[k] for k in z.files}
    out = rt.run({n: g[n][0] for n in INPUT_NAMES})
    np.testing.assert_allclose(out, g["outputs"][0], atol=1.01 * rt.output_detail["quantization"][0])


def test_fused_evaluation_with_the_quick_model(quick_run: Path) -> None:
    from tools.datasets import load_online
    from tools.evaluate import verifier_setup

    ds = load_online(shared_data("online/susig/BlindSubCorpus"), "susig-blind").subset("validate")
    ds.writers = dict(list(ds.writers.items())[:3])
    setup = verifier_setup("fused", quick_run / "tsgatr_student_int8.tflite")
    # The quick run writes its fused score beside its model, and the evaluator takes it.
    assert setup.match_model is not None and setup.match_model.uses_learned
    rep = setup.evaluate(ds, "fused", references=5, trials=1).report
    assert rep["verifier"] == "fused"
    assert set(rep["components"]) == {"classic", "learned"}
    assert 0.0 <= rep["skilled"]["eer_global"] <= 100.0
