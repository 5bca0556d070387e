"""The central web page's HTML: pure functions from stored data to a page, nothing else.

Every value that came from a kiosk (subjects, operators, reasons, model versions, status fields,
refusal details) is hostile input: each goes through :func:`esc` (``html.escape`` with quotes) and
nothing is ever put in a script, a style or an unquoted attribute. The pages use no script at all;
the Content-Security-Policy (``tools.central.web``) forbids scripts, so an escaped value that slipped
through would still not run.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from tools.central.export import export_row
from tools.central.query import DecisionFilter, iso_time
from tools.central.store import RejectedSummary, StoredDecision
from tools.registry import KioskEntry

#: The filter form's fields (the names DecisionFilter.from_text reads), with their labels.
FILTER_FIELDS = (("customer", "Customer"), ("mode", "Mode"), ("outcome", "Outcome"), ("kiosk", "Kiosk"),
                 ("site", "Site"), ("operator", "Operator"), ("profile", "Profile"),
                 ("model_version", "Model version"), ("since", "Since (UTC)"), ("until", "Until (UTC)"),
                 ("limit", "Rows"))
NAV = (("/decisions", "Decisions"), ("/kiosks", "Kiosks"), ("/alarms", "Refusals and alarms"))

#: Column widths of each table (fixed layout: long hostile values wrap, never widen the page).
#: In the style sheet, not in style attributes: the Content-Security-Policy allows no inline style.
WIDTHS = {"decisions": ("10.5%", "8%", "7.5%", "4%", "9.5%", "5%", "4.5%", "9%", "7.5%", "7%", "13%", "14.5%"),
          "kiosks": ("11%", "9%", "8%", "7%", "12%", "20%", "8%", "10%", "15%"),
          "alarms": ("20%", "15%", "65%"), "refusals": ("70%", "30%"),
          "rejected": ("14%", "14%", "9%", "15%", "48%")}

CSS = "".join(f"#{t} th:nth-child({i}) {{ width: {w}; }}\n" for t, ws in WIDTHS.items()
              for i, w in enumerate(ws, 1)).encode() + b"""
:root { font: 15px/1.4 system-ui, sans-serif; color: #1a1a1a; background: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 1.5rem; padding: 0.6rem 1.2rem;
         background: #0b3d91; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
header nav { display: flex; flex-wrap: wrap; gap: 1rem; flex: 1; }
header a { color: #fff; }
header a[aria-current] { font-weight: 700; text-decoration: none; }
header form { margin: 0; display: flex; align-items: center; gap: 0.6rem; }
main { padding: 1rem 1.2rem; max-width: 100%; }
h2 { font-size: 1.05rem; margin: 1.2rem 0 0.5rem; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; background: #fff; }
th, td { text-align: left; vertical-align: top; padding: 0.3rem 0.4rem; border-bottom: 1px solid #dde1e6;
         overflow-wrap: anywhere; word-break: break-word; }
th { background: #e8ecf2; font-weight: 600; }
td.num, th.num { text-align: right; }
.decision { white-space: nowrap; }
.SUSPICIOUS, .alarm { color: #a33a00; font-weight: 600; }
.filters { display: grid; grid-template-columns: repeat(auto-fill, minmax(10.5rem, 1fr)); gap: 0.5rem 0.8rem;
           align-items: end; background: #fff; padding: 0.8rem; border: 1px solid #dde1e6; }
.filters label { display: flex; flex-direction: column; font-size: 0.85rem; gap: 0.15rem; min-width: 0; }
input, select, button { font: inherit; padding: 0.3rem 0.4rem; min-width: 0; width: 100%; }
button { background: #0b3d91; color: #fff; border: 0; border-radius: 3px; cursor: pointer; }
header button { background: #fff; color: #0b3d91; width: auto; }
.actions { display: flex; gap: 0.6rem; align-items: center; }
.actions a { white-space: nowrap; }
.error { background: #fde8e0; border: 1px solid #a33a00; padding: 0.5rem 0.8rem; overflow-wrap: anywhere; }
.note { color: #555; font-size: 0.9rem; }
.why { margin: 0.2rem 0 0; padding-left: 1rem; font-size: 0.85rem; color: #333; }
.login { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 1.2rem 1.5rem; border: 1px solid #dde1e6; }
.login form { display: flex; flex-direction: column; gap: 0.7rem; }
.login label { display: flex; flex-direction: column; gap: 0.2rem; }
"""


def esc(value: object) -> str:
    """Text made safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str, *, user: str | None = None, csrf: str = "", current: str = "") -> bytes:
    if user is None:
        head = "<header><h1>sigkiosk central</h1></header>"
    else:
        links = "".join(f'<a href="{href}"{" aria-current=page" if href == current else ""}>{esc(label)}</a>'
                        for href, label in NAV)
        head = (f"<header><h1>sigkiosk central</h1><nav>{links}</nav>"
                f'<form method="post" action="/logout"><span>{esc(user)}</span>'
                f'<input type="hidden" name="csrf" value="{esc(csrf)}"><button type="submit">Log out</button>'
                "</form></header>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)} - sigkiosk central</title><link rel="stylesheet" href="/style.css"></head>'
            f"<body>{head}<main>{body}</main></body></html>").encode("utf-8")


def login_page(csrf: str, message: str | None = None) -> bytes:
    err = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = (f'<section class="login"><h2>Log in</h2>{err}<form method="post" action="/login">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            '<label>User <input name="user" autocomplete="username" required maxlength="32"></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required '
            'maxlength="256"></label><button type="submit" id="login">Log in</button></form></section>')
    return _page("Log in", body)


def message_page(title: str, message: str, *, user: str | None = None, csrf: str = "") -> bytes:
    return _page(title, f'<h2>{esc(title)}</h2><p class="error">{esc(message)}</p>', user=user, csrf=csrf)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str,
           num: frozenset[int] = frozenset()) -> str:
    """Cells are HTML already (each escaped by the caller); headers are escaped here."""
    th = "".join(f'<th{" class=num" if i in num else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in num else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table id="{esc(table_id)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _kv(mapping: Mapping[str, object]) -> str:
    return "<br>".join(f"{esc(k)}={esc(v)}" for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0])))


def decisions_page(rows: Sequence[StoredDecision], form: Mapping[str, str], *, user: str, csrf: str,
                   where: DecisionFilter | None, error: str | None = None) -> bytes:
    fields = []
    for name, label in FILTER_FIELDS:
        value = form.get(name, "")
        if name == "mode":
            opts = "".join(f'<option value="{v}"{" selected" if value.lower() == v else ""}>{t}</option>'
                           for v, t in (("", "any"), ("pen", "pen"), ("paper", "paper")))
            fields.append(f'<label>{label}<select name="mode">{opts}</select></label>')
        else:
            fields.append(f'<label>{label}<input name="{name}" value="{esc(value)}" maxlength="256"></label>')
    csv_link = ""
    if where is not None:
        query = urlencode({k: v for k, v in form.items() if v})
        csv_link = f'<a href="/decisions.csv{"?" + esc(query) if query else ""}" id="csv">Export CSV</a>'
    form_html = (f'<form class="filters" method="get" action="/decisions" id="filters">{"".join(fields)}'
                 f'<div class="actions"><button type="submit" id="apply">Filter</button>{csv_link}</div></form>')
    if error is not None:
        result = f'<p class="error" role="alert" id="filter-error">{esc(error)}</p>'
    else:
        cells = []
        for d in rows:
            r = export_row(d)
            cells.append([esc(r["time"][:-1].replace("T", " ")), esc(r["kiosk_id"]), esc(r["site"]), esc(r["seq"]),
                          # The class from a fixed set: a kiosk's text never names one.
                          f'<span class="decision{" SUSPICIOUS" if d.decision.upper() == "SUSPICIOUS" else ""}">'
                          f'{esc(r["decision"])}</span>',
                          esc("-" if r["score"] is None else f"{r['score']:.3f}"), esc(r["mode"] or "-"),
                          esc(r["subject"] or "-"), esc(r["operator"] or "-"), esc(r["profile"] or "-"),
                          _kv(r["model_versions"]), _why(r["reasons"], r["explanations"])])
        table = _table(("Time (UTC)", "Kiosk", "Site", "Seq", "Decision", "Score", "Mode", "Customer", "Operator",
                        "Profile", "Models", "Reasons"), cells, table_id="decisions", num=frozenset({3, 5}))
        limit = where.limit if where is not None else 0
        more = " (the row limit: narrow the filters or raise it)" if len(rows) >= limit else ""
        result = f'<p class="note" id="count">{len(rows)} decision(s){more}, oldest first.</p>{table}'
    return _page("Decisions", f"<h2>Decisions</h2>{form_html}{result}", user=user, csrf=csrf, current="/decisions")


def _why(reasons: Sequence[str], explanations: Sequence[str]) -> str:
    """The reason codes, then what the kiosk's screen said why (or would have, had it not withheld
    the decision from the customer), a line each."""
    lines = "".join(f'<li>{esc(text)}</li>' for text in explanations)
    return esc(", ".join(reasons)) + (f'<ul class="why">{lines}</ul>' if lines else "")


def _when(ms: int) -> str:
    """``2026-11-24 10:00:00`` (UTC, to the second)."""
    return iso_time(ms)[:19].replace("T", " ")


def _ago(ms: int, now_ms: int) -> str:
    s = max(0, (now_ms - ms) // 1000)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def kiosks_page(registry: Mapping[str, KioskEntry], status: Mapping[str, Mapping[str, Any]], *, user: str, csrf: str,
                registry_error: str | None = None, now_ms: int | None = None) -> bytes:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cells = []
    for kid in sorted(set(registry) | set(status)):
        entry, st = registry.get(kid), status.get(kid, {})
        if entry is None:
            reg = '<span class="alarm">not in the registry</span>'
        elif entry.revoked:
            reg = (f'<span class="alarm">revoked {esc(_when(entry.revoked_at_ms or 0))}</span>'
                   + (f"<br>{esc(entry.revoked_reason)}" if entry.revoked_reason else ""))
        else:
            reg = "in service"
        seen = st.get("received_ms")
        last = f"{esc(_when(seen))}<br>{esc(_ago(seen, now_ms))}" \
            if isinstance(seen, int) else "never"
        mv = st.get("model_versions")
        # [calibration]'s active threshold (kiosk.calibration); "-": the kiosk does not calibrate.
        site_t = st.get("site_threshold")
        site_cell = f"{site_t:.4f}" if isinstance(site_t, (int, float)) and not isinstance(site_t, bool) else "-"
        cells.append([esc(kid), esc(entry.site if entry else st.get("site", "-")), esc(entry.group if entry else "-") or "-",
                      esc(st.get("state", "-")), last, _kv(mv) if isinstance(mv, dict) else "-",
                      esc(st.get("software_version") or "-"), esc(site_cell), reg])
    err = f'<p class="error">{esc(registry_error)}</p>' if registry_error else ""
    note = "" if registry else '<p class="note">No registry given (--registry): kiosks known from their status only.</p>'
    table = _table(("Kiosk", "Site", "Group", "State", "Last seen (UTC)", "Model versions", "Software",
                    "Site threshold", "Registry"), cells, table_id="kiosks")
    return _page("Kiosks", f"<h2>Kiosks</h2>{err}{note}{table}", user=user, csrf=csrf, current="/kiosks")


def kiosk_alarms(st: Mapping[str, Any]) -> list[str]:
    """What a kiosk's last status report says is wrong, in words (empty: nothing)."""
    out = []
    if st.get("state") != "online":
        out.append(f"state {st.get('state')}")
    for key, words in (("errors", "errors"), ("dropped_logs", "log records dropped"),
                       ("link_failures", "failed connections before this one")):
        v = st.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out.append(f"{v} {words}")
    if st.get("link_problem"):
        out.append(f"link: {st.get('link_problem')}")
    return out


def alarms_page(counts: Mapping[str, int], rejected: Sequence[RejectedSummary], status: Mapping[str, Mapping[str, Any]],
                registry: Mapping[str, KioskEntry], *, user: str, csrf: str) -> bytes:
    alarm_rows = []
    for kid, st in sorted(status.items()):
        words = kiosk_alarms(st)
        entry = registry.get(kid)
        if entry is not None and entry.revoked and st.get("state") == "online":
            words.insert(0, "revoked, yet its last status says online")
        if words:
            site = entry.site if entry is not None else st.get("site") or "-"
            alarm_rows.append([esc(kid), esc(site), f'<span class="alarm">{"<br>".join(esc(w) for w in words)}</span>'])
    alarms = (_table(("Kiosk", "Site", "Alarms"), alarm_rows, table_id="alarms")
              if alarm_rows else '<p class="note" id="alarms">No kiosk reports an alarm.</p>')
    refusals = _table(("Reason", "Count"), [[esc(r), esc(n)] for r, n in sorted(counts.items())], table_id="refusals",
                      num=frozenset({1}))
    rej = _table(("Reason", "Kiosk (claimed)", "Messages", "Last (UTC)", "Last detail"),
                 [[esc(r.reason), esc(r.kiosk_claim or "-"), esc(r.count), esc(_when(r.last_ms)),
                   esc(r.detail)] for r in rejected], table_id="rejected", num=frozenset({2}))
    body = (f"<h2>Kiosks with alarms</h2>{alarms}<h2>Refusals by reason</h2>{refusals}"
            f'<h2>Refused messages</h2><p class="note">Grouped by reason and the kiosk they claim to be from; '
            f"the messages themselves stay in the database (table rejected).</p>{rej}")
    return _page("Refusals and alarms", body, user=user, csrf=csrf, current="/alarms")


__all__ = ["CSS", "FILTER_FIELDS", "alarms_page", "decisions_page", "esc", "kiosk_alarms", "kiosks_page",
           "login_page", "message_page"]
