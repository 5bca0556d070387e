"""Attack 7: a decision shown as final although it was never recorded.

The kiosk's outbox lives on a real, deliberately tiny file system (tmpfs). Once it is full, the
outbox cannot store the sealed decision: the customer must not see APPROVED/SUSPICIOUS as if it
counted, the request must end as ``not_recorded``, and staff must see it in the kiosk's status.
When space is back, the next decision is recorded and shown as usual.
"""

from __future__ import annotations

import queue
from pathlib import Path

from daemon_helpers import as_replayed, link_table, sign_when_asked, start_daemon, write_config, writers
from disk_helpers import fill_disk
from fixtures_link import LinkPki

from kiosk.daemon import RECENT_DECISIONS
from kiosk.templates import TemplateStore


def _screens(seen: list[dict], events: queue.Queue) -> list[dict]:
    """The screens shown, including those still queued when the request finished."""
    while True:
        try:
            seen.append(events.get_nowait())
        except queue.Empty:
            break
    return [e for e in seen if e.get("type") == "screen"]


def test_decision_not_recorded_is_not_shown_as_final(link_pki: LinkPki, mqtt_broker, tmp_path: Path,
                                                     tiny_fs: Path) -> None:
    genuine, _ = writers()["001"]
    link = link_table(link_pki, mqtt_broker.port, tmp_path)
    link["outbox_path"] = str(tiny_fs / "outbox.sqlite")
    daemon, pen, config = start_daemon(write_config(tmp_path, link=link))
    try:
        TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-7", as_replayed(genuine[:5]))
        events = daemon.bus.subscribe()
        filler = fill_disk(tiny_fs)

        seen: list[dict] = []
        req = daemon.submit("verify", "cust-7")
        sign_when_asked(daemon, pen, events, [genuine[5]], req.done.is_set, seen=seen)
        res = req.wait(1)
        assert not res["ok"] and res["error"] == "not_recorded" and res["recorded"] is False
        shown = _screens(seen, events)
        assert not any(e["screen"] == "decision" for e in shown), "an unrecorded decision was shown as final"
        assert shown[-1]["screen"] == "error" and "not be recorded" in shown[-1]["message"]
        assert daemon.status()["unrecorded_decisions"] == 1
        assert daemon.decisions == 0
        assert daemon.link.outbox.depth().get("decision", 0) == 0

        # Space is back: the next decision is stored, then shown.
        filler.unlink()
        while not events.empty():
            events.get_nowait()
        seen = []
        req = daemon.submit("verify", "cust-7")
        sign_when_asked(daemon, pen, events, [genuine[6]], req.done.is_set, seen=seen)
        res = req.wait(1)
        assert res["ok"] and res["recorded"] and res["seq"] is not None, res
        assert any(e["screen"] == "decision" for e in _screens(seen, events))
        assert daemon.status()["unrecorded_decisions"] == 1   # the earlier one stays visible to staff
        assert len(daemon.unrecorded) == 1
        # Months of decisions (a stranger can ask for one every few seconds): the count goes on,
        # the per-decision lists keep the latest only.
        for n in range(RECENT_DECISIONS + 5):
            daemon.decision_unrecorded(f"s-{n}")
            daemon.decision_shown(f"s-{n}", 1.0)
        assert daemon.status()["unrecorded_decisions"] == RECENT_DECISIONS + 6
        assert len(daemon.unrecorded) == len(daemon.latencies_ms) == RECENT_DECISIONS
        assert daemon.unrecorded[-1] == f"s-{RECENT_DECISIONS + 4}"
    finally:
        daemon.stop()
        pen.close_all()




def test_logs_never_take_the_last_bytes_a_decision_needs(tiny_fs: Path) -> None:
    """A chatty failure (a log record every few ms) on a filling disk used to eat the space the
    next decision needed; logs now stop while less than the reserve is free."""
    from kiosk.outbox import Outbox

    # Each decision's commit writes about 26 KB of WAL (its row, three indexes, the sequence; 22 KB
    # before receipts added the index of what is due): 20 need some 520 KB. A kiosk keeps 16 MiB.
    box = Outbox(tiny_fs / "outbox.sqlite", log_reserve_bytes=1 << 20)
    try:
        for _ in range(200):
            box.add("log", "t/log", lambda seq: b"x" * 2000)
        assert box.depth().get("log", 0) < 200 and box.dropped_logs() > 0
        # What the logs left is enough for decisions.
        for _ in range(20):
            box.add("decision", "t/decision", lambda seq: b"d" * 600)
        assert box.depth()["decision"] == 20
    finally:
        box.close()
