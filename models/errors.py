"""The verification layer's one exception base.

Everything ``models`` raises about a verification that cannot be made (a model file missing or
broken, a reference set built by another model, a picture without ink) derives from
:class:`VerificationError`, so an integrator catches one type. Each error also keeps the built-in
base it always had (``RuntimeError``, ``ValueError``), so existing ``except`` clauses still hold.
"""

from __future__ import annotations


class VerificationError(Exception):
    """A verification (or the verifier's setup) could not be done; the message says why."""


class ReferenceSetMismatch(VerificationError, ValueError):
    """A reference set was built by another verifier or another model version than the one asked
    to verify against it: features of two different models are never compared."""
