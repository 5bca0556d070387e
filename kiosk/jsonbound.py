"""JSON from outside the appliance, parsed with bounds: size first, then nesting depth.

``json.loads`` recurses once per level of nesting: 100 000 ``[`` (100 kB, well inside any size
limit we set) raise ``RecursionError`` - not a ``ValueError``, so it escaped every caller's
``except ValueError`` - and a document just under the interpreter's limit parses, then makes the
next recursive step (canonical JSON for a signature, a record check) fail instead. Every document
we accept from the network or a bundle (manifests, offers, commands, update reports, the screen's
requests) nests a few levels; :func:`loads_bounded` measures the depth with a linear pre-scan,
without recursion, and refuses anything deeper than ``max_depth`` before the parser sees it.

Errors are :class:`JSONBoundsError`, a ``ValueError``: callers turn it into their own refusal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kiosk.errors import ApplianceError

#: Deep enough for every document of the link and the update protocol (an offer is the deepest:
#: offer > envelope > manifest > files > entry, 5), far below the interpreter's recursion limit.
MAX_DEPTH = 32

# A JSON string, escapes included; an unterminated one runs to the end, so that a document of
# unbalanced quotes costs one pass (a pattern that must find the closing quote would retry from
# every quote: quadratic).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JSONBoundsError(ApplianceError, ValueError):
    """The document is too large, too deep or not JSON; the message says which."""


def json_depth(text: str, limit: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not
    count); stops counting once past ``limit``. Linear time, no recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def loads_bounded(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(data)`` for a document of at most ``max_bytes`` bytes nesting at most
    ``max_depth`` levels; ``JSONBoundsError`` otherwise (and for anything that is not JSON)."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JSONBoundsError(f"JSON document of {size} bytes exceeds the limit of {max_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONBoundsError("JSON document is not UTF-8") from None
    else:
        text = data
    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise JSONBoundsError(f"JSON document nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:   # cannot happen after the scan; never let it escape as a crash
        raise JSONBoundsError(f"JSON document nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONBoundsError(f"not JSON: {exc}") from None
