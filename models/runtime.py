"""The one TFLite runtime wrapper the device uses.

Imports only ``ai_edge_litert`` (the maintained runtime; numpy 2) or, as a fallback,
``tflite_runtime`` — and numpy. Never tensorflow: the device does not have it.

Inputs are matched by name (the model's signature names contain the Keras input names), quantised
with the model's own scale and zero point where the model takes integers, and the output is
dequantised the same way. Recurrent layers keep state in variables between invocations, so every
call resets them first: a verification never depends on the one before it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import VerificationError

log = logging.getLogger(__name__)


class ModelError(VerificationError, RuntimeError):
    """A model file is missing, unreadable, or does not have the inputs/outputs we expect."""


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError as e:
        raise ModelError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)") from e


def _quantise(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if scale == 0:
        raise ModelError(f"input {detail['name']!r} is {np.dtype(dtype).name} without quantisation parameters")
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantise(q: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


class TFLiteModel:
    """A loaded ``.tflite`` model with named float inputs and one float output."""

    def __init__(self, path: Path, threads: int = 1, input_names: tuple[str, ...] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        Interpreter = _interpreter_class()
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=int(threads))
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load {self.path} as a TFLite model: {e}") from e
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()
        if len(self._outputs) != 1:
            raise ModelError(f"{self.path}: expected one output, found {len(self._outputs)}")
        self._resolved: dict[tuple[str, ...], dict[str, dict]] = {}
        if input_names is not None:
            self._resolve(input_names)

    def _resolve(self, names: tuple[str, ...] | list[str]) -> dict[str, dict]:
        """Our input names to the model's tensors (TFLite names them e.g. ``serving_default_feats:0``)."""
        out: dict[str, dict] = {}
        for n in names:
            hits = [d for d in self._inputs if d["name"] == n or d["name"].split(":")[0].endswith("_" + n)]
            if len(hits) != 1:
                raise ModelError(
                    f"{self.path}: input {n!r} not found (model inputs: {[d['name'] for d in self._inputs]})"
                )
            out[n] = hits[0]
        if len(out) != len(self._inputs):
            raise ModelError(f"{self.path}: model has {len(self._inputs)} inputs, we give {len(out)}")
        return out

    @property
    def input_details(self) -> list[dict]:
        return list(self._inputs)

    @property
    def output_detail(self) -> dict:
        return dict(self._outputs[0])

    @property
    def quantised(self) -> bool:
        return not np.issubdtype(self._outputs[0]["dtype"], np.floating)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One signature (arrays without the batch dimension) → the output without it."""
        key = tuple(inputs)
        mapping = self._resolved.get(key)
        if mapping is None:
            mapping = self._resolved[key] = self._resolve(list(key))
        self._interp.reset_all_variables()
        for name, arr in inputs.items():
            d = mapping[name]
            a = np.asarray(arr, dtype=np.float32)[None, ...]
            if tuple(a.shape) != tuple(d["shape"]):
                raise ModelError(f"{self.path}: input {name!r} has shape {a.shape}, model wants {tuple(d['shape'])}")
            self._interp.set_tensor(d["index"], _quantise(a, d))
        self._interp.invoke()
        out = self._interp.get_tensor(self._outputs[0]["index"])
        return _dequantise(out, self._outputs[0])[0]
