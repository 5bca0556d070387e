"""The shipped TS-GATR student through the real TFLite runtime: golden vectors, errors, state.

The golden inputs are model inputs of synthesised signatures (no research data in the repository);
the outputs were produced by the same runtime when the model was converted. Both shipped models
are checked: the int8 one on the device and the float one it is compared with.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import shipped_assets
from models.learned import INPUT_NAMES, LearnedVerifier, load_config
from models.runtime import ModelError, TFLiteModel

ASSETS = shipped_assets()
INT8 = ASSETS / "tsgatr_student_int8.tflite"
FLOAT = ASSETS / "tsgatr_student_float.tflite"


def _golden(model: Path) -> dict[str, np.ndarray]:
    with np.load(model.with_name(model.stem + ".golden.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("model", [INT8, FLOAT], ids=["int8", "float"])
def test_golden_vectors(model: Path) -> None:
    rt = TFLiteModel(model)
    g = _golden(model)
    out_scale = rt.output_detail["quantization"][0] if rt.quantised else 0.0
    for i in range(len(g["outputs"])):
        out = rt.run({n: g[n][i] for n in INPUT_NAMES})
        assert out.shape == g["outputs"][i].shape
        # int8: at most one quantisation step apart (kernels may round differently across CPUs).
        np.testing.assert_allclose(out, g["outputs"][i], rtol=1e-4, atol=max(1e-4, 1.01 * out_scale))


def test_int8_model_is_fully_integer() -> None:
    rt = TFLiteModel(INT8)
    assert rt.quantised
    assert all(np.dtype(d["dtype"]) == np.int8 for d in rt.input_details)
    assert all(d["quantization"][0] > 0 for d in rt.input_details)


def test_state_reset_between_calls() -> None:
    """GRU state must not leak from one signature to the next."""
    rt = TFLiteModel(INT8)
    g = _golden(INT8)
    first = {n: g[n][0] for n in INPUT_NAMES}
    a = rt.run(first)
    rt.run({n: g[n][1] for n in INPUT_NAMES})
    np.testing.assert_array_equal(rt.run(first), a)


def test_float_and_int8_students_agree() -> None:
    g = _golden(INT8)
    a = TFLiteModel(INT8).run({n: g[n][0] for n in INPUT_NAMES})
    b = TFLiteModel(FLOAT).run({n: g[n][0] for n in INPUT_NAMES})
    n = (int(g["lengths"][0]) + 1) // 2
    # The int8 model reproduces the float one closely on real steps (correlation, not equality).
    assert np.corrcoef(a[:n].ravel(), b[:n].ravel())[0, 1] > 0.9


def test_verifier_end_to_end_on_synthesised_signatures() -> None:
    from tools.synth import make_population

    pop = make_population(n_writers=2, n_genuine=4, n_forgeries=0, seed=5)
    (g1, _), (g2, _) = pop.values()
    ver = LearnedVerifier(INT8)
    assert ver.config == load_config(INT8)
    tpl = ver.build_template([ver.embed(t) for t in g1[:3]])
    own = ver.score(tpl, ver.embed(g1[3]))
    other = ver.score(tpl, ver.embed(g2[0]))
    assert np.isfinite(own) and np.isfinite(other) and own > 0


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        TFLiteModel(tmp_path / "nope.tflite")


def test_garbage_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot load"):
        TFLiteModel(bad)


def test_wrong_input_name_and_shape() -> None:
    rt = TFLiteModel(INT8)
    g = _golden(INT8)
    with pytest.raises(ModelError, match="not found"):
        rt.run({"bogus": g["feats"][0]})
    bad = {n: g[n][0] for n in INPUT_NAMES}
    bad["feats"] = bad["feats"][:-1]
    with pytest.raises(ModelError, match="shape"):
        rt.run(bad)


def test_device_modules_never_import_tensorflow() -> None:
    """runtime/learned/graphs/fusion run on the device: their imports must not need tensorflow."""
    root = Path(__file__).resolve().parents[2] / "models"
    for name in ("runtime.py", "learned.py", "graphs.py", "fusion.py"):
        tree = ast.parse((root / name).read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not mods & {"tensorflow", "tf_keras", "keras"}, name
    code = (
        "import sys, models.runtime, models.learned, models.graphs, models.fusion;"
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=root.parent).returncode == 0
