"""``sigkiosk train online --quick``: the whole learned pipeline end to end on the shared data.

Teacher, distilled student, float and full-int8 conversion, golden vectors, fusion on validation
writers and the run record, with tiny models (about a minute on two cores). Needs the ``train``
extra (tensorflow-cpu, tf_keras) and the shared data. Runs in a subprocess so that tensorflow is
never imported into the test process (the device modules are tested without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = shared_data("online")
    out = tmp_path_factory.mktemp("quick")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "online", "--quick", "--data", str(data.parent),
         "--out", str(out / "assets"), "--work", str(out / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "assets"


def test_artefacts_and_run_record(quick_run: Path) -> None:
    for name in ("tsgatr_student_int8", "tsgatr_student_float", "tsgatr_teacher_float"):
        assert (quick_run / f"{name}.tflite").stat().st_size > 1000
        assert json.loads((quick_run / f"{name}.config.json").read_text())["max_len"] == 32
    rec = json.loads((quick_run / "tsgatr.run.json").read_text())
    assert "train online --quick" in rec["command"]
    assert set(rec["data_sha256"]) == {"susig-visual", "susig-blind", "sigcomp2009-nfi", "sigwicomp2013-jp"}
    assert all(len(h) == 64 for h in rec["data_sha256"].values())
    assert len(rec["teacher_history"]) == 1 and len(rec["student_history"]) == 1
    for v in rec["validation_skilled_eer_k5"].values():
        assert 0.0 <= v["mean"] <= 100.0
    assert rec["fusion"]["weights"][0] < 0


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
    from tools.evaluate import evaluate, verifier_providers

    ds = load_online(shared_data("online/susig/BlindSubCorpus"), "susig-blind").subset("validate")
    ds.writers = dict(list(ds.writers.items())[:3])
    providers, combine = verifier_providers("fused", quick_run / "tsgatr_student_int8.tflite")
    rep = evaluate(ds, references=5, trials=1, providers=providers, combine=combine, verifier="fused").report
    assert rep["verifier"] == "fused"
    assert set(rep["components"]) == {"classic", "learned"}
    assert 0.0 <= rep["skilled"]["eer_global"] <= 100.0
