"""Stored decisions as rows people read or hand on: a table, CSV, JSON Lines.

An exported row holds the named fields below, never the payload as a whole: whatever raw
evidence a payload may carry (pen samples, images: biometric data) stays in the database. Every
text field came from a kiosk and is hostile input; in CSV a cell that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is neutralised by a
leading apostrophe (OWASP's advice for CSV injection).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tools.central.query import iso_time
from tools.central.store import StoredDecision

#: The columns of an export, in order.
FIELDS = ("time", "kiosk_id", "site", "seq", "decision", "score", "mode", "subject", "operator", "profile",
          "paper_references", "model_versions", "reasons", "received")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_row(d: StoredDecision) -> dict[str, Any]:
    """The exported fields of one decision (no raw evidence, whatever the payload holds)."""
    return {"time": iso_time(d.created_ms), "kiosk_id": d.kiosk_id, "site": d.site, "seq": d.seq,
            "decision": d.decision, "score": d.score, "mode": d.mode, "subject": d.subject, "operator": d.operator,
            "profile": d.profile, "paper_references": d.paper_references, "model_versions": d.model_versions,
            "reasons": d.reasons,
            "received": iso_time(d.received_ms)}


def safe_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)   # our own numbers: not kiosk text, left as numbers
    if isinstance(value, Mapping):
        text = ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(decisions: Iterable[StoredDecision], out: TextIO) -> int:
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(FIELDS)
    n = 0
    for d in decisions:
        row = export_row(d)
        w.writerow([safe_cell(row[f]) for f in FIELDS])
        n += 1
    return n


def write_json(decisions: Iterable[StoredDecision], out: TextIO) -> int:
    """JSON Lines: one object per decision (the fields of ``export_row``)."""
    n = 0
    for d in decisions:
        out.write(json.dumps(export_row(d), ensure_ascii=True) + "\n")
        n += 1
    return n


def write_table(decisions: Iterable[StoredDecision], out: TextIO) -> int:
    """A fixed-width table for a terminal; control characters never reach it (the payloads are
    strict: ``kiosk.records`` refuses them at the collector)."""
    cols = (("time (UTC)", 24), ("kiosk", 16), ("seq", 8), ("decision", 11), ("score", 6), ("mode", 5),
            ("customer", 16), ("operator", 12), ("profile", 10))
    out.write(" ".join(f"{name:<{w}}" for name, w in cols) + " reasons\n")
    n = 0
    for d in decisions:
        score = f"{d.score:.3f}" if d.score is not None else "-"
        vals = (iso_time(d.created_ms)[:-1].replace("T", " "), d.kiosk_id, str(d.seq), d.decision, score,
                d.mode or "-", d.subject or "-", d.operator or "-", d.profile or "-")
        out.write(" ".join(f"{v:<{w}}" for v, (_, w) in zip(vals, cols)) + " " + ",".join(d.reasons) + "\n")
        n += 1
    out.write(f"{n} decision(s)\n")
    return n


__all__ = ["FIELDS", "export_row", "safe_cell", "write_csv", "write_json", "write_table"]
