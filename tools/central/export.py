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
          "paper_references", "model_versions", "reasons", "explanations", "received")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A kiosk's sequence numbers are 16 digits (time-based): the table's seq column fits them whole,
#: since ``export-case --seq`` takes them from there.
SEQ_WIDTH = 16
#: Between a CSV cell's explanations (the verifiers' sentences hold commas, never this; JSON Lines
#: keeps the list as it came).
EXPLANATION_SEPARATOR = " | "
#: The columns of a staff-action (``--audit``) export, in order.
AUDIT_FIELDS = ("time", "kiosk_id", "site", "seq", "operator", "action", "mode", "subject", "outcome",
                "staff_session")


def export_row(d: StoredDecision) -> dict[str, Any]:
    """The exported fields of one decision (no raw evidence, whatever the payload holds)."""
    return {"time": iso_time(d.created_ms), "kiosk_id": d.kiosk_id, "site": d.site, "seq": d.seq,
            "decision": d.decision, "score": d.score, "mode": d.mode, "subject": d.subject, "operator": d.operator,
            "profile": d.profile, "paper_references": d.paper_references, "model_versions": d.model_versions,
            "reasons": d.reasons, "explanations": d.explanations,
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
        # Sentences hold commas: a cell's explanations are apart by " | " (reasons, codes, by ",").
        row["explanations"] = EXPLANATION_SEPARATOR.join(row["explanations"]) or None
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
    cols = (("time (UTC)", 23), ("kiosk", 12), ("seq", SEQ_WIDTH), ("decision", 10), ("score", 5), ("mode", 5),
            ("customer", 12), ("operator", 12), ("profile", 10))
    out.write(" ".join(f"{name:<{w}}" for name, w in cols) + " reasons\n")
    n = 0
    for d in decisions:
        score = f"{d.score:.3f}" if d.score is not None else "-"
        vals = (_table_time(d.created_ms), d.kiosk_id, str(d.seq), d.decision, score,
                d.mode or "-", d.subject or "-", d.operator or "-", d.profile or "-")
        out.write(" ".join(f"{v:<{w}}" for v, (_, w) in zip(vals, cols)) + " " + ",".join(d.reasons) + "\n")
        for text in d.explanations:   # what the kiosk's screen said why, a line each under its decision
            out.write(f"{'':<23} why: {text}\n")
        n += 1
    out.write(f"{n} decision(s)\n")
    return n


def _table_time(ms: int) -> str:
    return iso_time(ms)[:-1].replace("T", " ")


def write_audit(rows: Iterable[Mapping[str, Any]], fmt: str, out: TextIO) -> int:
    """Staff actions (the store's ``query_audit`` rows) as ``fmt``: ``table`` (with a header, like
    the decisions'), ``csv`` (cells safe in a spreadsheet) or ``json`` (JSON Lines)."""
    rows = list(rows)
    recs = [{**{f: r.get(f) for f in AUDIT_FIELDS}, "time": iso_time(int(r.get("created_ms") or 0))} for r in rows]
    if fmt == "json":
        for rec in recs:
            out.write(json.dumps(rec, ensure_ascii=True) + "\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(AUDIT_FIELDS)
        for rec in recs:
            w.writerow([safe_cell(rec[f]) for f in AUDIT_FIELDS])
    else:
        cols = (("time (UTC)", 23), ("kiosk", 12), ("seq", SEQ_WIDTH), ("operator", 12), ("action", 14),
                ("customer", 12), ("outcome", 18))
        out.write(" ".join(f"{name:<{w}}" for name, w in cols) + " staff session\n")
        for r, rec in zip(rows, recs):
            action = str(rec["action"]) + (f" ({rec['mode']})" if rec["mode"] else "")
            vals = (_table_time(int(r.get("created_ms") or 0)), rec["kiosk_id"], str(rec["seq"]),
                    rec["operator"], action, rec["subject"], rec["outcome"])
            out.write(" ".join(f"{v or '-':<{w}}" for v, (_, w) in zip(vals, cols)) + " "
                      + str(rec["staff_session"] or "-") + "\n")
        out.write(f"{len(recs)} staff action(s)\n")
    return len(recs)


__all__ = ["AUDIT_FIELDS", "FIELDS", "export_row", "safe_cell", "write_audit", "write_csv", "write_json",
           "write_table"]
