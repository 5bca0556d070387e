"""What a person asks of the stored decisions: one filter, used by the CLI and the web page alike.

A :class:`DecisionFilter` is built from what a person typed (``from_text``: command-line options
or a web form's fields, hostile either way), checked and normalised once here: values are compared
case-insensitively (``--outcome suspicious`` finds ``SUSPICIOUS``), the mode is ``pen`` or
``paper`` (the kiosk's payload says ``online``/``offline``: both spellings are accepted), times
are ISO 8601 UTC or epoch milliseconds. The store turns it into SQL with bound parameters only.

Case-insensitive means the same on SQLite and PostgreSQL: the searched columns hold values
lower-cased by Python at insert (``search_key``), and the filter's values are lower-cased the same
way, so no database's own ``lower()`` (ASCII-only in SQLite, locale-dependent in PostgreSQL) is
involved.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tools.central.errors import CentralError

#: The kiosk's payload names the modes after the signature kind; people say pen and paper.
MODE_NAMES = {"online": "pen", "offline": "paper", "pen": "pen", "paper": "paper"}
#: Longest filter value accepted (the stored columns are shorter; a longer value matches nothing).
MAX_VALUE = 256
MAX_LIMIT = 1_000_000
#: Times are kept within +-(10**15 - 1) ms (about the years -29700 to 33600): far beyond any real
#: date, and an integer every database column and bound parameter holds.
MAX_TIME_MS = 10**15 - 1
#: A number typed as text: ASCII digits only (``str.isdigit`` also takes ``²`` and other digits
#: ``int`` refuses), at most 15 of them.
_NUMBER = re.compile(r"[0-9]{1,15}")


class QueryError(CentralError, ValueError):
    """A filter value is unusable; the message says which and why."""


def search_key(value: object, limit: int = 128) -> str | None:
    """The form a searchable column holds: text, lower-cased, bounded; None for no value."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("\x00", "\ufffd")[:limit].lower()
    return text.encode("utf-8", "replace").decode("utf-8")


def mode_name(value: object) -> str | None:
    """``pen``/``paper`` for the payload's ``online``/``offline`` (or already pen/paper);
    another value is kept lower-cased (shown as sent), None stays None."""
    key = search_key(value, 32)
    return None if key is None else MODE_NAMES.get(key, key)


def parse_time(text: str) -> int:
    """ISO 8601 (``2026-11-22``, ``2026-11-22T10:00:00Z``; UTC unless it says otherwise) or epoch
    milliseconds -> epoch milliseconds."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return int(text)
    if text.isdigit():   # all digits, but too many or not ASCII: not a time a person means
        raise QueryError(f"time {text[:40]!r}: epoch milliseconds are at most 15 digits 0-9")
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"time {text[:40]!r}: use ISO 8601 (2026-11-22 or 2026-11-22T10:00:00Z) "
                         "or epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def iso_time(ms: int) -> str:
    """Epoch milliseconds as ``2026-11-22T10:00:00.123Z``."""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions: every field set must match (AND); None matches everything.

    ``model_version`` is ``VERSION`` (any of the decision's models has it) or ``MODEL=VERSION``
    (that model has it): a decision names several models (``model_versions``), each searchable.
    ``since_ms`` is inclusive, ``until_ms`` exclusive (kiosk time, ``created_ms``)."""

    kiosk_id: str | None = None
    site: str | None = None
    subject: str | None = None
    mode: str | None = None
    operator: str | None = None
    profile: str | None = None
    model_version: str | None = None
    outcome: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        for f in ("kiosk_id", "site", "subject", "mode", "operator", "profile", "model_version", "outcome"):
            value = getattr(self, f)
            if value is None:
                continue
            if not isinstance(value, str):
                raise QueryError(f"{f} must be text")
            value = value.strip()
            if len(value) > MAX_VALUE:
                raise QueryError(f"{f}: at most {MAX_VALUE} characters")
            object.__setattr__(self, f, search_key(value, MAX_VALUE))
        if self.mode is not None and self.mode not in MODE_NAMES:
            raise QueryError(f"mode {self.mode!r}: pen or paper (online and offline are accepted too)")
        object.__setattr__(self, "mode", mode_name(self.mode))
        for f in ("since_ms", "until_ms", "limit"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise QueryError(f"{f} must be an integer")
            if f != "limit" and v is not None and not -MAX_TIME_MS <= v <= MAX_TIME_MS:
                raise QueryError(f"{f} is out of range (at most {MAX_TIME_MS} ms from 1970)")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be 1 to {MAX_LIMIT}")

    @property
    def model(self) -> tuple[str | None, str] | None:
        """(model name or None for any, version) of ``model_version``."""
        if self.model_version is None:
            return None
        name, sep, version = self.model_version.partition("=")
        return (name.strip() or None, version.strip()) if sep else (None, self.model_version)

    @classmethod
    def from_text(cls, values: Mapping[str, str | None], *, limit: int | None = None) -> DecisionFilter:
        """From typed text (CLI options, a web form): empty means no filter; ``since``/``until``
        are times, ``kiosk`` the kiosk id, ``limit`` a number. Unknown names are refused."""
        names = {"kiosk": "kiosk_id", "site": "site", "subject": "subject", "customer": "subject", "mode": "mode",
                 "operator": "operator", "profile": "profile", "model_version": "model_version",
                 "outcome": "outcome", "since": "since_ms", "until": "until_ms", "limit": "limit"}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise QueryError(f"unknown filter {unknown[0][:40]!r}")
        kw: dict[str, object] = {}
        for key, text in values.items():
            if text is None or not str(text).strip():
                continue
            field = names[key]
            if field in ("since_ms", "until_ms"):
                kw[field] = parse_time(str(text))
            elif field == "limit":
                if not _NUMBER.fullmatch(str(text).strip()):
                    raise QueryError("limit must be a whole number (digits 0-9, at most 15)")
                kw[field] = int(str(text).strip())
            else:
                kw[field] = str(text)
        if limit is not None and "limit" not in kw:
            kw["limit"] = limit
        return cls(**kw)  # type: ignore[arg-type]

    def as_text(self) -> dict[str, str]:
        """The set filters as the form fields ``from_text`` reads (for links and forms)."""
        out: dict[str, str] = {}
        back = {"kiosk_id": "kiosk", "since_ms": "since", "until_ms": "until"}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "limit":
                continue
            out[back.get(f.name, f.name)] = iso_time(v) if f.name in ("since_ms", "until_ms") else str(v)
        return out


__all__ = ["DecisionFilter", "MODE_NAMES", "QueryError", "iso_time", "mode_name", "parse_time", "search_key"]
