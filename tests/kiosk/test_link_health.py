"""Link trouble is visible at the kiosk: a link that cannot connect logs an ERROR naming the reason
(refused, which side's TLS trust fails, the broker refusing the kiosk) within seconds of start, and
the reason is in ``stats().problem`` until a connection succeeds. Real mosquitto with TLS and ACL."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures_link import LinkPki, start_broker, wait_for

from kiosk.link import KioskLink
from tools import pki
from tools.broker import Mosquitto, free_port
from tools.central.collector import Collector


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kiosk.link" and r.levelno >= logging.ERROR]


def _first_error(caplog: pytest.LogCaptureFixture, link: KioskLink, timeout: float = 6.0) -> str:
    """The first ERROR the link logs; it must come within ``timeout`` s of start (connect_warn_s is 5 s)."""
    wait_for(lambda: _errors(caplog), timeout=timeout, what="an ERROR from the link")
    assert not link.stats().connected
    return _errors(caplog)[0]


@pytest.mark.integration
def test_wrong_port_is_an_error_naming_refused(link_pki: LinkPki, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.link")
    port = free_port()   # nothing listens there
    link = KioskLink(link_pki.link_config("kiosk-a", port, tmp_path / "outbox.sqlite"))
    link.start()
    try:
        msg = _first_error(caplog, link)
        assert f"cannot connect to localhost:{port}: refused" in msg and "broker_port" in msg
        assert link.stats().problem is not None and link.stats().problem.startswith("refused")
        # Retries (every 0.2-2 s here) do not repeat the same ERROR line.
        wait_for(lambda: link._failed_attempts >= 3, timeout=10, what="three failed attempts")
        assert len(_errors(caplog)) == 1
    finally:
        link.close()


@pytest.mark.integration
def test_kiosk_with_the_wrong_ca_names_its_ca_file(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.link")
    cfg = link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "outbox.sqlite")
    link = KioskLink(replace(cfg, ca_file=link_pki.other_ca_dir / pki.CA_CERT))
    link.start()
    try:
        msg = _first_error(caplog, link)
        assert "TLS: this kiosk does not trust the broker's certificate" in msg and "ca_file" in msg, msg
    finally:
        link.close()


@pytest.mark.integration
def test_certificate_from_another_ca_names_unknown_ca(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # The broker's log says "unknown ca"; now the kiosk's does too, with what to fix.
    caplog.set_level(logging.INFO, logger="kiosk.link")
    other = link_pki.root / "other-certs"
    cfg = link_pki.link_config("kiosk-a", mqtt_broker.port, tmp_path / "outbox.sqlite")
    link = KioskLink(replace(cfg, cert_file=other / "kiosk-a.crt", key_file=other / "kiosk-a.key"))
    link.start()
    try:
        msg = _first_error(caplog, link)
        assert "the broker does not trust this kiosk's certificate (alert unknown ca)" in msg, msg
        assert "cert_file" in msg
    finally:
        link.close()


@pytest.mark.integration
def test_problem_clears_when_the_broker_comes(link_pki: LinkPki, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.link")
    port = free_port()
    link = KioskLink(link_pki.link_config("kiosk-a", port, tmp_path / "outbox.sqlite"))
    link.start()
    broker = None
    try:
        _first_error(caplog, link)
        broker = start_broker(link_pki, tmp_path / "broker", port=port)
        wait_for(lambda: link.stats().connected, timeout=15, what="the link to connect")
        up = link.stats()
        assert up.problem is None and up.since is not None and abs(time.time() - up.since) < 15
        # The broker goes away: a reason at once (then the reconnect attempts' own), and since when.
        broker.stop()
        down = wait_for(lambda: (s := link.stats()).problem and s, timeout=15, what="a reason for the lost link")
        assert not down.connected and down.since is not None and down.since >= up.since
        wait_for(lambda: (link.stats().problem or "").startswith("refused"), timeout=15, what="a reconnect refused")
        broker = start_broker(link_pki, tmp_path / "broker2", port=port)
        wait_for(lambda: link.stats().connected, timeout=15, what="the link to reconnect")
        assert link.stats().problem is None
        # Centrally: the retained status of the new connection says what it took to get through.
        collector = Collector(link_pki.collector_config(port, str(tmp_path / "c.sqlite"), fresh_session=True))
        collector.start()
        try:
            status = wait_for(lambda: collector.store.status().get("kiosk-a"), what="the kiosk's status")
            assert status["state"] == "online" and status["link_failures"] >= 1, status
            assert status["link_problem"].startswith("refused: nothing accepts connections"), status
        finally:
            collector.stop()
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert any("after" in m and "failed attempt" in m and "refused" in m for m in infos), infos
    finally:
        link.close()
        if broker is not None:
            broker.stop()
