"""Nothing is lost, nothing is duplicated: broker outage, kiosk SIGKILL, collector SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fixtures_link import LinkPki, wait_for

from kiosk.link import KioskLink
from tools.broker import Mosquitto
from tools.central.collector import Collector
from tools.central.store import StoreError, open_store

REPO = Path(__file__).resolve().parents[2]
KIOSK_PROC = Path(__file__).with_name("link_kiosk_proc.py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _subjects(db: str) -> list[str]:
    store = open_store(db)
    try:
        return [d.payload["subject"] for d in store.query_decisions(limit=100_000)]
    finally:
        store.close()


def _count(db: str) -> int:
    try:
        store = open_store(db)
    except StoreError:
        return 0
    try:
        return store.count("decisions")
    finally:
        store.close()


def test_1000_decisions_survive_a_broker_outage(link_pki: LinkPki, own_broker: Mosquitto, tmp_path: Path,
                                                db_url: str) -> None:
    collector = Collector(link_pki.collector_config(own_broker.port, db_url, fresh_session=True))
    collector.start()
    # Receipts sent while the kiosk is disconnected are not kept for it: those rows are sent again
    # once their receipt is overdue (2 s here, 120 s by default) and the duplicates receipted.
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite",
                                          receipt_wait_s=2.0, receipt_wait_max_s=5.0))
    try:
        assert collector.wait_ready()
        link.start()
        depth_while_down = 0
        for i in range(1000):
            link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"n{i}"})
            if i == 300:
                own_broker.stop()          # the broker goes away mid-stream...
            if i == 650:
                time.sleep(1.0)            # long enough for failed reconnects and back-off
            if i == 700:
                depth_while_down = link.outbox.depth().get("decision", 0)
                own_broker.start()         # ...and comes back
        assert depth_while_down >= 300, "the outbox should have held the decisions published while down"
        assert link.flush(60), "outbox did not drain after the broker came back"
        wait_for(lambda: collector.store.count("decisions") >= 1000, timeout=60, what="1000 decisions stored")
        subjects = [r.payload["subject"] for r in collector.store.query_decisions(limit=5000)]
        assert sorted(subjects) == sorted(f"n{i}" for i in range(1000))   # each exactly once
        assert collector.stats.refused.get("replay", 0) == 0
    finally:
        link.close()
        collector.stop()


def test_kiosk_killed_mid_stream_loses_and_duplicates_nothing(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                              tmp_path: Path) -> None:
    group = f"k{uuid.uuid4().hex[:8]}"
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "c.sqlite"), fresh_session=True,
                                                    share_group=group))
    collector.start()
    cfg = link_pki.link_config("kiosk-b", mqtt_broker.port, tmp_path / "outbox.sqlite")
    cfg_file = tmp_path / "link.json"
    cfg_file.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()}))
    try:
        assert collector.wait_ready()
        proc = subprocess.Popen([sys.executable, str(KIOSK_PROC), str(cfg_file), "0", "600", "0.002"],
                                stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
        committed: list[int] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("committed"):
                committed.append(int(line.split()[1]))
            if len(committed) == 150:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(10)
        committed += [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("committed")]
        assert proc.returncode == -signal.SIGKILL
        assert 150 <= len(committed) < 600, "the kill should land mid-stream"
        # Restart: the leftover outbox is sent first, then 50 new decisions.
        out = subprocess.run([sys.executable, str(KIOSK_PROC), str(cfg_file), "1000", "50", "0"],
                             capture_output=True, text=True, env=_env(), cwd=REPO, timeout=90)
        assert "drained" in out.stdout, out.stderr[-2000:]
        expected = {f"n{i}" for i in committed} | {f"n{i}" for i in range(1000, 1050)}
        wait_for(lambda: expected <= {r.payload["subject"] for r in collector.store.query_decisions(limit=5000)},
                 timeout=30, what="every committed decision stored")
        subjects = [r.payload["subject"] for r in collector.store.query_decisions(limit=5000)]
        assert len(subjects) == len(set(subjects)), "a decision was stored twice"
        # At most one more than printed: committed to disk, killed before it could print.
        extra = set(subjects) - expected
        assert extra <= {f"n{max(committed) + 1}"}
    finally:
        collector.stop()


def test_collector_killed_and_restarted_loses_nothing(link_pki: LinkPki, own_broker: Mosquitto, tmp_path: Path,
                                                      db_url: str) -> None:
    db = db_url
    cert, key = link_pki.cert("collector.c2")
    base = [sys.executable, "-m", "tools.commands.central_cmd", "run", "--broker-host", "localhost",
            "--broker-port", str(own_broker.port), "--ca", str(link_pki.ca_dir / "ca.crt"), "--cert", str(cert),
            "--key", str(key), "--enc-key", str(link_pki.central_key), "--registry", str(link_pki.registry_file),
            "--db", db]
    first = subprocess.Popen([*base, "--fresh-session"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=REPO)
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite"))
    second = None
    try:
        assert first.stdout is not None and "collector running" in first.stdout.readline()
        link.start()
        for i in range(400):
            link.publish_decision({"decision": "SUSPICIOUS", "score": 0.2, "subject": f"n{i}"})
            if i == 150:
                wait_for(lambda: _count(db) > 20, what="collector storing")
                first.send_signal(signal.SIGKILL)
                first.wait(10)
        assert link.flush(30, stored=False), "the broker should accept everything while the collector is down"
        before_restart = _count(db)
        assert before_restart < 400, "the collector was killed before it could store everything"
        second = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=REPO)
        wait_for(lambda: _count(db) >= 400, timeout=60, what="all 400 decisions after the restart")
        assert sorted(_subjects(db)) == sorted(f"n{i}" for i in range(400))
    finally:
        link.close()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)


def test_decisions_wait_in_the_outbox_until_a_collector_subscribes(link_pki: LinkPki, own_broker: Mosquitto,
                                                                   tmp_path: Path) -> None:
    # A fresh broker has no collector session: it would acknowledge and drop the messages
    # ("no matching subscribers"). The kiosk must keep them until someone can receive them.
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite"))
    collector = None
    try:
        link.start()
        for i in range(20):
            link.publish_decision({"decision": "APPROVED", "score": 0.8, "subject": f"n{i}"})
        wait_for(lambda: link.stats().connected, what="kiosk connected")
        time.sleep(1.0)
        assert link.outbox.depth().get("decision") == 20, "nothing may leave the outbox while nobody listens"
        collector = Collector(link_pki.collector_config(own_broker.port, str(tmp_path / "c.sqlite"), fresh_session=True))
        collector.start()
        assert link.flush(30)
        wait_for(lambda: collector.store.count("decisions") == 20, what="the held decisions")
        assert link.stats().errors == 0   # holding is not an error
    finally:
        link.close()
        if collector is not None:
            collector.stop()
