"""Where the shipped model files are, found in one place.

The assets travel inside the ``models`` package (``pyproject.toml`` package data), so they are
located with :mod:`importlib.resources`, from a source checkout and from an installed wheel alike.
The TFLite interpreter and ``numpy.load`` need real files, so a package that is not on a file
system (a zip) is refused with a clear error rather than extracted behind the caller's back.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from models.errors import VerificationError

#: The learned pen model a fused verifier loads when a model directory holds several.
DEFAULT_LEARNED_MODEL = "tsgatr_student_int8.tflite"
#: The int8 CNN-LSTM of the paper verifier.
PAPER_MODEL = "cnn_lstm_int8.tflite"
#: The pen fusion (classic + learned) and the paper fusions.
FUSION_FILE = "fusion.json"
#: The fused verifier's score: the match score with the learned distance as an input.
FUSED_SCORE_FILE = "fused_score.json"
OFFLINE_FUSION_FILE = "offline_fusion.json"


def shipped_assets() -> Path:
    """The directory of the shipped models (``models/assets``)."""
    folder = resources.files("models") / "assets"
    if not isinstance(folder, Path):
        raise VerificationError(f"the shipped models are not on a file system ({folder}); install sigkiosk unzipped")
    return folder


def digest(path: Path, length: int = 12) -> str:
    """The first ``length`` hex digits of a file's SHA-256: the version a model file is recorded by."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]
