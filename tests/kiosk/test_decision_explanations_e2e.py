"""What the kiosk says why reaches the staff who decide: a pad changed since enrollment (a signature
without pressure against references with it) at a kiosk that withholds SUSPICIOUS from the
customer (``customer_decision = "wait_for_staff"``). The customer's screen only asks them to wait;
the decision record, sealed into the outbox and sent through real mosquitto (TLS, ACL) to the
collector's SQLite, carries the explanation, and the central export (the rows of the web page and
the CSV) shows it."""

from __future__ import annotations

import io
from pathlib import Path

from daemon_helpers import as_replayed, link_table, sign_when_asked, start_daemon, wait_idle, write_config, writers
from fixtures_link import LinkPki, wait_for

from models.device_variants import without_pressure
from models.pen import PRESSURE_NOT_MEASURED
from tools.central.collector import Collector
from tools.central.export import export_row, write_csv


def test_a_withheld_decision_carries_its_explanation_to_the_central_record(link_pki: LinkPki, mqtt_broker,
                                                                            tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "central.sqlite"),
                                                    fresh_session=True))
    collector.start()
    cfg = write_config(tmp_path, link=link_table(link_pki, mqtt_broker.port, tmp_path))
    cfg.write_text(cfg.read_text().replace("show_decision_s = 30.0",
                                           'show_decision_s = 30.0\ncustomer_decision = "wait_for_staff"'))
    daemon, pen, _ = start_daemon(cfg)
    genuine, forged = writers()["001"]
    try:
        assert collector.wait_ready()
        daemon.store.put("cust-pad", as_replayed(genuine[:5]))
        events = daemon.bus.subscribe()
        shown: list[dict] = []  # type: ignore[type-arg]
        req = daemon.submit("verify", "cust-pad")
        sign_when_asked(daemon, pen, events, [without_pressure(forged[0])], req.done.is_set, seen=shown)
        res = req.wait(1)
        assert res["decision"] == "SUSPICIOUS" and res["recorded"] is True, res
        wait_idle(daemon)
        while not events.empty():
            shown.append(events.get_nowait())
        # The customer is told to wait, and nothing of why.
        assert [e for e in shown if e.get("screen") == "decision"] == [
            {"type": "screen", "screen": "decision", "state": "decision", "decision": "WAIT", "show_s": 30.0,
             "recorded": True}]

        assert daemon.link.flush(20)
        rows = wait_for(lambda: collector.store.query_decisions(kiosk_id="kiosk-a") or None,
                        what="the decision at the collector")
        assert len(rows) == 1 and rows[0].payload["schema"] == 3
        assert rows[0].payload["explanations"] == [PRESSURE_NOT_MEASURED]
        row = export_row(rows[0])
        assert row["decision"] == "SUSPICIOUS" and row["explanations"] == [PRESSURE_NOT_MEASURED]
        out = io.StringIO()
        assert write_csv(rows, out) == 1 and PRESSURE_NOT_MEASURED in out.getvalue()
    finally:
        daemon.stop()
        pen.close_all()
        collector.stop()
