"""The central side's one exception base.

The bank's side of the secure link (the collector and its stores, the broker configuration, the
certificate authority, the kiosk registry, model rollouts) raises errors that derive from
:class:`CentralError`, so an operator's script catches one type. Each also keeps the built-in base
it always had (``ValueError`` for bad input, ``RuntimeError`` for a failed operation), so existing
``except`` clauses still hold.
"""

from __future__ import annotations


class CentralError(Exception):
    """Base of the central side's errors; the message says what happened and what to do."""


__all__ = ["CentralError"]
