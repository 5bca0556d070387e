"""The verification science and its public API: signature types, verifiers, the decision policy.

Use it as a library (README, "Use the verifier as a library")::

    from models import ClassicVerifier, Trajectory
    verifier = ClassicVerifier()
    reference_set = verifier.enroll(references)        # Sequence[Trajectory] -> ReferenceSet
    verdict = verifier.verify(reference_set, query)     # -> Verdict (decision, match_rate, aspects)

Pen verifiers (:class:`ClassicVerifier`, :class:`FusedVerifier`, :func:`make_verifier`) are
``Verifier[Trajectory]``; :class:`PaperVerifier` is ``Verifier[SignatureImage]``. Each holds its
:class:`DecisionPolicy`. Every error of this layer derives from :class:`VerificationError`.

Imports nothing else of ours; ``kiosk`` and ``tools`` build on it. Importing the package loads
only numpy and the small types; the verifiers (numba, OpenCV, the TFLite runtime) load on first
use of their names, and nothing here ever imports TensorFlow or scikit-learn (training-only code
lives in ``tools.train`` and ``models.tsgatr``/``models.cnn_lstm``, which the device never imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models._assets import shipped_assets
from models.errors import ReferenceSetMismatch, VerificationError
from models.image import SignatureImage, SignatureImageError
from models.policy import APPROVED, SUSPICIOUS, AspectCheck, Decision, DecisionPolicy, Verdict
from models.trajectory import DeviceInfo, Trajectory, TrajectoryError
from models.verification import PenVerifier, ReferenceSet, Verifier

if TYPE_CHECKING:
    from models.paper import PaperVerifier
    from models.pen import ClassicVerifier, FusedVerifier, make_verifier
    from models.runtime import ModelError

#: Names whose modules are heavy (numba's JIT, OpenCV, the TFLite runtime): loaded when first used.
_LAZY = {
    "ClassicVerifier": "models.pen",
    "FusedVerifier": "models.pen",
    "make_verifier": "models.pen",
    "PaperVerifier": "models.paper",
    "ModelError": "models.runtime",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "APPROVED",
    "SUSPICIOUS",
    "AspectCheck",
    "ClassicVerifier",
    "Decision",
    "DecisionPolicy",
    "DeviceInfo",
    "FusedVerifier",
    "ModelError",
    "PaperVerifier",
    "PenVerifier",
    "ReferenceSet",
    "ReferenceSetMismatch",
    "SignatureImage",
    "SignatureImageError",
    "Trajectory",
    "TrajectoryError",
    "VerificationError",
    "Verdict",
    "Verifier",
    "make_verifier",
    "shipped_assets",
]
