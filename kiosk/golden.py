"""A tiny golden-vector checker: load a ``.tflite`` with the device runtime and compare its outputs.

Kept deliberately small and generic (the update agent only needs "does this model file, loaded by
the real runtime, reproduce its golden outputs?"). When ``models/runtime.py`` offers the same
check, the agent should call that instead - one wrapper for the whole appliance.

Golden files (``.npz``), two layouts, each with a leading *case* axis and optional scalars
``atol`` / ``rtol`` (the signed manifest's tolerances take precedence):

* by index: ``input_<i>`` for each model input and ``output_<j>`` for each output, raw tensors
  (``cases x tensor shape``, in the tensors' own dtypes);
* by name (what ``tools/train/convert.py`` writes for the pen models): one float array per input
  name (``cases x shape without the batch axis``), matched to the model's input whose name ends
  with it, and ``outputs``: the single output, dequantised; float inputs are quantised with the
  model's own scale and zero point, as ``models/runtime.py`` does (``lengths`` is metadata).
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
    if "outputs" in arrays:
        return _check_named(interp, arrays, atol, rtol)
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


def _quant(x: np.ndarray, det: dict) -> np.ndarray:
    scale, zero = det.get("quantization", (0.0, 0))
    if np.issubdtype(det["dtype"], np.floating) or not scale:
        return x.astype(det["dtype"])
    info = np.iinfo(det["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(det["dtype"])


def _dequant(q: np.ndarray, det: dict) -> np.ndarray:
    scale, zero = det.get("quantization", (0.0, 0))
    if np.issubdtype(det["dtype"], np.floating) or not scale:
        return q.astype(np.float64)
    return (q.astype(np.float64) - zero) * scale


def _check_named(interp, arrays: dict[str, np.ndarray], atol: float, rtol: float) -> GoldenResult:  # type: ignore[no-untyped-def]
    ins, outs = interp.get_input_details(), interp.get_output_details()
    names = [k for k in arrays if k not in ("outputs", "lengths", "atol", "rtol")]
    if len(outs) != 1 or len(names) != len(ins):
        return GoldenResult(False, 0, float("inf"), f"golden file names {len(names)} inputs / 1 output, the model has "
                                                    f"{len(ins)} / {len(outs)}")
    mapping = {}
    for n in names:
        hits = [d for d in ins if d["name"].split(":")[0] == n or d["name"].split(":")[0].endswith("_" + n)]
        if len(hits) != 1:
            return GoldenResult(False, 0, float("inf"), f"golden input {n!r} matches no single model input")
        mapping[n] = hits[0]
    cases = len(arrays["outputs"])
    worst = 0.0
    try:
        for c in range(cases):
            interp.reset_all_variables()
            for n, det in mapping.items():
                interp.set_tensor(det["index"], _quant(np.asarray(arrays[n][c], np.float32)[None, ...], det))
            interp.invoke()
            got = _dequant(interp.get_tensor(outs[0]["index"]), outs[0])[0]
            want = np.asarray(arrays["outputs"][c], dtype=np.float64).reshape(got.shape)
            err = float(np.max(np.abs(got - want))) if got.size else 0.0
            worst = max(worst, err)
            if not np.allclose(got, want, atol=atol, rtol=rtol):
                return GoldenResult(False, cases, worst, f"case {c}: max |error| {err:.3g} exceeds atol {atol:g} / rtol {rtol:g}")
    except (ValueError, RuntimeError, IndexError) as exc:
        return GoldenResult(False, cases, float("inf"), f"inference failed: {exc}")
    return GoldenResult(cases > 0, cases, worst, "" if cases else "no golden cases")
