"""The broker's TLS and ACL, against the real mosquitto with the generated configuration."""

from __future__ import annotations

import ssl
import time
import warnings

import paho.mqtt.client as mqtt
import pytest
from fixtures_link import SITE, LinkPki, broker_accepts, mqtt_client, wait_for

from tools.broker import Mosquitto

NOT_AUTHORIZED = 0x87


def _close(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


def _topic(kiosk: str, rest: str) -> str:
    return f"sig/v1/{SITE}/{kiosk}/{rest}"


def test_kiosk_publishes_only_under_its_own_id(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
    ka = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")
    try:
        admin.subscribe("sig/v1/#", qos=1)
        wait_for(lambda: admin.subacks, what="admin subscribed")
        own = ka.publish(_topic("kiosk-a", "decision"), b"mine", qos=1)
        forged = ka.publish(_topic("kiosk-b", "decision"), b"forged", qos=1)          # under B's id
        offer = ka.publish(_topic("kiosk-a", "model/offer"), b"offer", qos=1)         # a model offer
        group = ka.publish("sig/v1/_group/canary/model/offer", b"offer", qos=1)       # a group offer
        for info in (own, forged, offer, group):
            info.wait_for_publish(5)
        assert ka.pubacks[forged.mid] == NOT_AUTHORIZED
        assert ka.pubacks[offer.mid] == NOT_AUTHORIZED
        assert ka.pubacks[group.mid] == NOT_AUTHORIZED
        wait_for(lambda: (_topic("kiosk-a", "decision"), b"mine") in admin.received, what="own message routed")
        time.sleep(0.3)
        assert [p for _, p in admin.received if p in (b"forged", b"offer")] == []
    finally:
        _close(admin, ka)


def test_kiosk_reads_only_its_own_and_its_groups_commands(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    ka = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")       # group canary
    kb = mqtt_client(link_pki, mqtt_broker.port, "kiosk-b")       # no group
    admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
    try:
        for f in (_topic("kiosk-a", "model/#"), "sig/v1/_group/canary/model/#", _topic("kiosk-b", "#"), "sig/v1/#"):
            ka.subscribe(f, qos=1)
        kb.subscribe(_topic("kiosk-b", "model/#"), qos=1)
        kb.subscribe("sig/v1/_group/canary/model/#", qos=1)
        wait_for(lambda: len(ka.subacks) == 4 and len(kb.subacks) == 2, what="subscriptions answered")
        infos = [admin.publish(_topic("kiosk-a", "model/offer"), b"for-a", qos=1),
                 admin.publish(_topic("kiosk-b", "model/offer"), b"for-b", qos=1),
                 admin.publish("sig/v1/_group/canary/model/offer", b"for-canary", qos=1)]
        kb_own = kb.publish(_topic("kiosk-b", "decision"), b"b-decision", qos=1)
        for info in (*infos, kb_own):
            info.wait_for_publish(5)
        wait_for(lambda: len(ka.received) >= 2 and len(kb.received) >= 1, what="commands delivered")
        time.sleep(0.3)
        # (overlapping filters deliver a message once per filter, hence sets)
        assert {p for _, p in ka.received} == {b"for-a", b"for-canary"}   # never B's topics
        assert sorted(p for _, p in kb.received) == [b"for-b"]                  # not in group canary
    finally:
        _close(ka, kb, admin)


def test_collector_cannot_publish_commands(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    col = mqtt_client(link_pki, mqtt_broker.port, "collector.c2")
    try:
        info = col.publish(_topic("kiosk-a", "model/offer"), b"x", qos=1)
        info.wait_for_publish(5)
        assert col.pubacks[info.mid] == NOT_AUTHORIZED
    finally:
        _close(col)


def test_clients_without_a_certificate_of_our_ca_cannot_connect(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(link_pki.ca_dir / "ca.crt")
    assert not broker_accepts(mqtt_broker.port, no_cert)
    other_ca = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other_ca.load_verify_locations(link_pki.ca_dir / "ca.crt")
    other = link_pki.root / "other-certs"
    other_ca.load_cert_chain(other / "kiosk-a.crt", other / "kiosk-a.key")   # right CN, wrong CA
    assert not broker_accepts(mqtt_broker.port, other_ca)
    # The control: the same code connects with a certificate of the device CA.
    good = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    good.load_verify_locations(link_pki.ca_dir / "ca.crt")
    good.load_cert_chain(*link_pki.cert("kiosk-a"))
    assert broker_accepts(mqtt_broker.port, good)


def test_old_tls_versions_are_refused(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(link_pki.ca_dir / "ca.crt")
    ctx.load_cert_chain(*link_pki.cert("kiosk-a"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert broker_accepts(mqtt_broker.port, ctx), "TLS 1.2 is accepted"
    import socket

    with socket.create_connection(("127.0.0.1", mqtt_broker.port)) as raw:
        tls13 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls13.load_verify_locations(link_pki.ca_dir / "ca.crt")
        tls13.load_cert_chain(*link_pki.cert("kiosk-a"))
        with tls13.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.3", "TLS 1.3 is negotiated when both sides have it"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(link_pki.ca_dir / "ca.crt")
    old.load_cert_chain(*link_pki.cert("kiosk-a"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # that is the point
        try:
            old.set_ciphers("DEFAULT:@SECLEVEL=0")             # let our side offer it at all
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            pytest.fail("this Python cannot even offer TLS 1.1")
    assert not broker_accepts(mqtt_broker.port, old)
