"""A tiny golden-vector checker: load a ``.tflite`` with the device runtime and compare its outputs.

Kept deliberately small and generic (the update agent only needs "does this model file, loaded by
the real runtime, reproduce its golden outputs?"). When ``models/runtime.py`` offers the same
check, the agent should call that instead - one wrapper for the whole appliance.

Golden file (``.npz``): ``input_<i>`` for each model input and ``output_<j>`` for each output, each
with a leading *case* axis (``cases x tensor shape``); optional scalars ``atol`` / ``rtol``. The
tolerances given by the signed manifest take precedence over those in the file.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


def _interpreter_class():  # type: ignore[no-untyped-def]
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older runtime, same API (DESIGN: supported as a fallback)
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    return Interpreter


@dataclass(frozen=True)
class GoldenResult:
    ok: bool
    cases: int
    max_abs_error: float
    detail: str = ""


def check_golden(model: Path, golden: Path, atol: float | None = None, rtol: float | None = None) -> GoldenResult:
    """Run every golden case through ``model``; never raises for a bad model or golden file."""
    try:
        with np.load(Path(golden), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return GoldenResult(False, 0, float("inf"), f"golden file unreadable: {exc}")
    atol = float(arrays.get("atol", DEFAULT_ATOL)) if atol is None else float(atol)
    rtol = float(arrays.get("rtol", DEFAULT_RTOL)) if rtol is None else float(rtol)
    try:
        interp = _interpreter_class()(model_path=str(model), num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        return GoldenResult(False, 0, float("inf"), f"runtime cannot load the model: {exc}")
    ins, outs = interp.get_input_details(), interp.get_output_details()
    missing = [f"input_{i}" for i in range(len(ins)) if f"input_{i}" not in arrays]
    missing += [f"output_{j}" for j in range(len(outs)) if f"output_{j}" not in arrays]
    if missing:
        return GoldenResult(False, 0, float("inf"), f"golden file lacks {', '.join(missing)}")
    cases = len(arrays["input_0"])
    if cases == 0 or any(len(arrays[f"input_{i}"]) != cases for i in range(len(ins))):
        return GoldenResult(False, 0, float("inf"), "golden inputs are empty or disagree on the number of cases")
    worst = 0.0
    try:
        for c in range(cases):
            interp.reset_all_variables()   # stateful (LSTM) models must start each case fresh
            for i, det in enumerate(ins):
                interp.set_tensor(det["index"], np.asarray(arrays[f"input_{i}"][c], dtype=det["dtype"]).reshape(det["shape"]))
            interp.invoke()
            for j, det in enumerate(outs):
                got = interp.get_tensor(det["index"]).astype(np.float64)
                want = np.asarray(arrays[f"output_{j}"][c], dtype=np.float64).reshape(got.shape)
                err = float(np.max(np.abs(got - want))) if got.size else 0.0
                worst = max(worst, err)
                if not np.allclose(got, want, atol=atol, rtol=rtol):
                    return GoldenResult(False, cases, worst, f"case {c} output {j}: max |error| {err:.3g} "
                                                              f"exceeds atol {atol:g} / rtol {rtol:g}")
    except (ValueError, RuntimeError) as exc:
        return GoldenResult(False, cases, float("inf"), f"inference failed: {exc}")
    return GoldenResult(True, cases, worst)
