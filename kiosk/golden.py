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

A golden file comes in a signed bundle, but a signature says who made it, not that it is sane: a
1 MB ``.npz`` of zeros declares 1 GB of arrays, and ``np.load`` would allocate them all. So the
zip directory (member names, declared sizes) and each ``.npy`` header (dtype, shape) are checked
before any array is read: at most :data:`MAX_GOLDEN_ARRAYS` plain numeric arrays, whose headers
agree with the declared sizes, :data:`MAX_GOLDEN_BYTES` in all. Tolerances must be finite
numbers >= 0. Anything else is a :class:`GoldenFileError`, reported as a failed check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import resource
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import ApplianceError

log = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
#: The arrays of one golden file, decompressed, in all (the shipped ones hold 0.4-0.7 MB): a
#: bound on what checking a bundle can cost the daemon, whose budget is 250 MB.
MAX_GOLDEN_BYTES = 8 << 20
MAX_GOLDEN_ARRAYS = 32
_MEMBER = re.compile(r"[A-Za-z0-9_]{1,64}\.npy")


class GoldenFileError(ApplianceError, ValueError):
    """A golden file (or a tolerance) we refuse to use; the message says why."""


def _tolerance(value: object, what: str) -> float:
    """A finite number >= 0 from the manifest or a size-1 numeric array of the golden file."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            raise GoldenFileError(f"{what} must be one number, got a {value.dtype} array of shape {value.shape}")
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GoldenFileError(f"{what} must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or x < 0:
        raise GoldenFileError(f"{what} must be a finite number >= 0, got {value!r}")
    return x


def load_golden(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a golden ``.npz``, with every size checked before it is allocated."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_GOLDEN_BYTES:
            raise GoldenFileError(f"file of {path.stat().st_size} bytes, over {MAX_GOLDEN_BYTES}")
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not infos or len(infos) > MAX_GOLDEN_ARRAYS:
                raise GoldenFileError(f"{len(infos)} arrays (1..{MAX_GOLDEN_ARRAYS} expected)")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or not all(_MEMBER.fullmatch(n) for n in names):
                raise GoldenFileError("member names are not distinct NAME.npy")
            if any(i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for i in infos):
                raise GoldenFileError("members must be stored or deflated")
            declared = sum(i.file_size for i in infos)
            if declared > MAX_GOLDEN_BYTES:
                raise GoldenFileError(f"arrays of {declared} bytes declared, over {MAX_GOLDEN_BYTES}")
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                # The zip stream stops at the declared size, and the .npy header must account for
                # exactly that many bytes: nothing larger than declared can be allocated.
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    if version not in ((1, 0), (2, 0)):
                        raise GoldenFileError(f"{info.filename}: .npy format {version} (1.0 or 2.0 expected)")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(fp, max_header_size=4096)
                    header_len = fp.tell()
                    if dtype.hasobject or dtype.kind not in "biuf":
                        raise GoldenFileError(f"{info.filename}: dtype {dtype} (numbers only)")
                    count = math.prod(shape)
                    if header_len + count * dtype.itemsize != info.file_size:
                        raise GoldenFileError(f"{info.filename}: shape {shape} of {dtype} disagrees with its declared size")
                    data = fp.read(count * dtype.itemsize)
                    if len(data) != count * dtype.itemsize:
                        raise GoldenFileError(f"{info.filename}: array data cut short")
                    fp.read()   # to the end: the zip stream checks the member's CRC there
                arr = np.frombuffer(data, dtype=dtype, count=count)
                arrays[info.filename[:-4]] = arr.reshape(shape, order="F" if fortran else "C")
    except GoldenFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise GoldenFileError(f"unreadable: {exc}") from None
    for k, a in arrays.items():
        if k not in ("atol", "rtol") and a.ndim == 0:
            raise GoldenFileError(f"{k} has no case axis")
    return arrays


def _interpreter_class():  # type: ignore[no-untyped-def]
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older runtime, same API (DESIGN: supported as a fallback)
        from tflite_runtime.interpreter import Interpreter
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
        arrays = load_golden(Path(golden))
        atol = _tolerance(arrays.get("atol", DEFAULT_ATOL) if atol is None else atol, "atol")
        rtol = _tolerance(arrays.get("rtol", DEFAULT_RTOL) if rtol is None else rtol, "rtol")
    except GoldenFileError as exc:
        return GoldenResult(False, 0, float("inf"), f"golden file refused: {exc}")
    try:
        interp = _interpreter_class()(model_path=str(model), num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        return GoldenResult(False, 0, float("inf"), f"runtime cannot load the model: {exc}")
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if not ins or not outs:
        # A constant model checks nothing (and the case count below needs input_0: a review's
        # signed bundle of such a model raised KeyError here, at every start of the kiosk).
        return GoldenResult(False, 0, float("inf"), f"the model has {len(ins)} inputs and {len(outs)} outputs")
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
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:   # a golden array short of cases or mis-shaped
        return GoldenResult(False, cases, float("inf"), f"inference failed: {exc}")
    return GoldenResult(True, cases, worst)


#: How long one model's golden check may take, by default: the shipped models check in about a second
#: on a Raspberry Pi; a model that runs for ever (a signed bundle's WHILE loop) must not hold the
#: update agent, and through it the kiosk's start, for ever (found by a review).
DEFAULT_GOLDEN_TIMEOUT_S = 120.0


def check_golden_isolated(model: Path, golden: Path, atol: float | None = None, rtol: float | None = None,
                          timeout_s: float = DEFAULT_GOLDEN_TIMEOUT_S) -> GoldenResult:
    """:func:`check_golden` in a child process that is killed after ``timeout_s``: a model that
    loops, or crashes the runtime (a segmentation fault), fails its check and the caller goes on.
    Never raises for a bad model or golden file."""
    # The kernel's CPU bound a little after the wall-clock one, which normally ends it first.
    cmd = [sys.executable, "-m", "kiosk.golden", str(model), str(golden), f"--cpu-s={math.ceil(timeout_s) + 2}"]
    cmd += [f"--atol={atol!r}"] if atol is not None else []
    cmd += [f"--rtol={rtol!r}"] if rtol is not None else []
    try:
        # No preexec_fn: the daemon has threads, and code run between fork and exec may deadlock.
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return GoldenResult(False, 0, float("inf"), f"the golden check did not finish in {timeout_s:g} s")
    except OSError as exc:
        return GoldenResult(False, 0, float("inf"), f"the golden check could not start: {exc.strerror or exc}")
    if done.returncode == -signal.SIGXCPU:
        return GoldenResult(False, 0, float("inf"), f"the golden check did not finish in {timeout_s:g} s "
                                                    "(its CPU time ran out)")
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        got = json.loads(lines[-1])
        return GoldenResult(bool(got["ok"]), int(got["cases"]), float(got["max_abs_error"]), str(got["detail"]))
    except (IndexError, ValueError, KeyError, TypeError):
        why = f"exit status {done.returncode}" if done.returncode >= 0 else f"signal {-done.returncode}"
        return GoldenResult(False, 0, float("inf"), f"the golden check ended without a result ({why})")


def main(argv: list[str] | None = None) -> int:
    """``python -m kiosk.golden MODEL GOLDEN [--atol A] [--rtol R]``: prints the check's result as one
    line of JSON (what :func:`check_golden_isolated` reads)."""
    p = argparse.ArgumentParser(description="Check a .tflite model against its golden vectors.")
    p.add_argument("model", type=Path)
    p.add_argument("golden", type=Path)
    p.add_argument("--atol", type=float)
    p.add_argument("--rtol", type=float)
    p.add_argument("--cpu-s", type=int, help="CPU seconds after which the kernel ends this process")
    args = p.parse_args(argv)
    if args.cpu_s:
        # The kernel's bound too, should the parent's wall-clock timeout not end it (a parent stuck).
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_s, args.cpu_s + 5))
    res = check_golden(args.model, args.golden, args.atol, args.rtol)
    # The runtime prints its own lines (the XNNPACK delegate): the result is the last line.
    print(json.dumps({**dataclasses.asdict(res), "max_abs_error": res.max_abs_error
                      if math.isfinite(res.max_abs_error) else 1e308}), flush=True)
    return 0 if res.ok else 1


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
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        return GoldenResult(False, cases, float("inf"), f"inference failed: {exc}")
    return GoldenResult(cases > 0, cases, worst, "" if cases else "no golden cases")


if __name__ == "__main__":
    sys.exit(main())
