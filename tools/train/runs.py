"""Training that cannot hurt: where a run writes, when it may replace the shipped models, and how
quiet TensorFlow is.

* Every ``sigkiosk train`` run writes into a folder of its own: a new ``runs/<kind>-<UTC time>/``
  by default, or ``--out``, which may not be the shipped models folder itself.
* The shipped models (``models/assets``, or ``--assets``) are replaced only with ``--ship``, and only
  when the run passed its checks (:func:`model_problems`): a model no better than chance on the
  validation writers, or whose embeddings are NaN or all equal, fails loudly (exit status
  :data:`EXIT_DEGENERATE`) and is never shipped; its artefacts stay in the run folder to be looked at.
* TensorFlow's C++ and absl log lines are off unless ``-v`` (:func:`quiet_tensorflow`).

Nothing here imports TensorFlow: the checks and the folders are tested without it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models import shipped_assets
from models.runtime import TFLiteModel

log = logging.getLogger(__name__)

#: Where runs go by default, relative to the working directory (ignored by git: ``/runs/``).
RUNS = Path("runs")
#: A validation skilled-forgery EER (%) at or above this is a degenerate model (chance is 50 %; the
#: shipped pen and paper models are at 5-25 %).
DEFAULT_MAX_EER = 40.0
#: Exit status of a run whose model failed its checks (2 is a usage or input error).
EXIT_DEGENERATE = 3


class RunError(Exception):
    """A run that may not start as asked (its output would overwrite the shipped models)."""


def new_run_dir(kind: str, root: Path = RUNS, now: datetime | None = None) -> Path:
    """A new, empty ``root/<kind>-<YYYYmmddTHHMMSSZ>`` (``-2``, ``-3`` ... when that second is taken)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = root / (f"{kind}-{stamp}" if n == 1 else f"{kind}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"no free run folder for {kind}-{stamp} under {root}")


def output_dir(out: Path | None, kind: str, assets: Path) -> Path:
    """The run's folder: ``out`` when given, else a new one under :data:`RUNS`. Writing into the
    shipped models folder directly is refused: that is what ``--ship`` is for, after the checks."""
    if out is None:
        return new_run_dir(kind)
    if _same(out, assets):
        raise RunError(f"--out {out} is the shipped models folder: train into a run folder (leave --out out) "
                       "and add --ship to replace the shipped models once the run passed its checks")
    return out


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def model_problems(eers: Mapping[str, float], max_eer: float = DEFAULT_MAX_EER,
                   outputs: Mapping[str, np.ndarray] | None = None) -> list[str]:
    """Why the models of a run are degenerate, or ``[]``.

    ``eers``: each model's validation skilled-forgery EER in %; a NaN figure, or one at or above
    ``max_eer``, is degenerate. ``outputs``: each model's embeddings of a few different inputs
    (the golden vectors), one row per input; NaN or all rows equal is degenerate (a model that maps
    every signature to one point cannot tell anyone apart).
    """
    problems = []
    for name, eer in eers.items():
        if eer is None or not math.isfinite(eer):
            problems.append(f"{name}: the validation skilled-forgery EER is not a number")
        elif eer >= max_eer:
            problems.append(f"{name}: validation skilled-forgery EER {eer:.1f} % >= {max_eer:g} % "
                            "(chance is 50 %)")
    for name, out in (outputs or {}).items():
        rows = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
        if not np.isfinite(rows).all():
            problems.append(f"{name}: the embeddings contain NaN or infinity")
        elif len(rows) > 1 and float(np.ptp(rows, axis=0).max()) <= 1e-9:
            problems.append(f"{name}: every input gets the same embedding")
    return problems


def golden_outputs(models: Iterable[Path]) -> dict[str, np.ndarray]:
    """The golden vectors' outputs (embeddings of a few different inputs) of each converted model."""
    out = {}
    for m in models:
        g = m.with_name(m.stem + ".golden.npz")
        if g.exists():
            with np.load(g) as z:
                out[m.stem] = z["outputs"]
    return out


def warn_degenerate(problems: list[str], run_dir: Path, shipping: bool) -> None:
    """The loud part: a banner on stderr a person cannot miss, and the same at ERROR in the log."""
    bar = "!" * 78
    lines = [bar, "DEGENERATE MODEL: this run's model is no better than chance and must not be used.",
             *(f"  - {p}" for p in problems),
             f"The artefacts stay in {run_dir} to be looked at; "
             + ("the shipped models were NOT replaced (--ship refused)." if shipping
                else "nothing was shipped."), bar]
    print("\n".join(lines), file=sys.stderr, flush=True)
    log.error("degenerate model in %s: %s", run_dir, "; ".join(problems))


def ship(run_dir: Path, names: Iterable[str], assets: Path) -> list[Path]:
    """Copy the run's artefacts ``names`` into the shipped models folder, each replaced atomically
    (a copy beside it, then a rename), so a reader never sees half a model."""
    assets.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        src = run_dir / name
        dst = assets / name
        tmp = assets / f".{name}.shipping"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        done.append(dst)
    return done


#: Lines TensorFlow's C++ side writes straight to file descriptor 2 whatever the log level: absl's
#: messages from before its logging starts (oneDNN, CPU features, at import) and the quantiser's
#: "fully_quantize: ..." line (at conversion).
_NOISE = re.compile(r"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl"
                    r"|fully_quantize: |INFO: Created TensorFlow Lite)")
_quiet = False


def quiet_tensorflow(verbose: int) -> None:
    """TensorFlow's C++ start-up and conversion lines (oneDNN, CPU features, absl, MLIR) and its
    Python warnings drown the run's own lines; they are off unless ``-v``. Call before TensorFlow
    is imported: the C++ log level is read once, and the import itself is done here with its
    pre-logging lines filtered (:func:`tf_noise_filtered`). A level already in the environment wins."""
    global _quiet
    if verbose:
        return
    _quiet = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl", "tf_keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The converter's "Statistics for quantized inputs ..." and the interpreter's deprecation notice.
    warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|keras)(\.|$)")
    with tf_noise_filtered():
        import tensorflow  # noqa: F401 - imported here so that its start-up lines are filtered

        # The TFLite runtime prints "Created TensorFlow Lite XNNPACK delegate" once per process, at
        # its first model: load one here, filtered, rather than wrap every later load.

        first = next(iter(sorted(shipped_assets().glob("*.tflite"))), None)
        if first is not None:
            TFLiteModel(first)


@contextlib.contextmanager
def tf_noise_filtered() -> Iterator[None]:
    """Inside, what C++ code writes to file descriptor 2 goes to a temporary file; the lines that
    are not TensorFlow noise (:data:`_NOISE`: an error, a traceback) are written back after. Does
    nothing unless :func:`quiet_tensorflow` turned the noise off."""
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NOISE.match(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
