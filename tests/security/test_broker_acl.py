"""Attack 2: a kiosk certificate subscribes where it must not, and makes decisions vanish.

mosquitto 2.0's acl_file never checks a SUBSCRIBE: it grants every filter and applies the read ACL
only when a message is delivered. For ``$share/collectors/...`` that is fatal: the kiosk becomes
one more member of the collectors' shared subscription, the broker hands it its share of every
kiosk's decisions, the delivery check refuses them, and they are gone - while every sending
outbox drains, since the broker acknowledged them. (Before the fix: 1 in 3 of the decisions here
never reached a database with two collectors and the attacker.)

What stops it: the ``sigkiosk_acl`` broker plugin (tools/mosquitto/sigkiosk_acl.c) grants a kiosk
only filters inside what the ACL lets it read: no ``$`` topic, no wildcard beyond its own subtree.
Everything runs against the real mosquitto with TLS, the generated ACL and the plugin.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fixtures_link import COLLECTORS, SITE, LinkPki, mqtt_client, wait_for

from kiosk.link import KioskLink
from kiosk.topics import collector_filters
from tools.broker import Mosquitto
from tools.central.collector import Collector

NOT_AUTHORIZED = 0x87
GRANTED_QOS1 = 1
SHARE = "collectors"   # CollectorConfig.share_group's default: what an attacker would try first


def _close(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


def _suback(client: mqtt.Client, topic_filter: str) -> int:
    """Subscribe to one filter alone and return its SUBACK reason code."""
    before = len(client.subacks)  # type: ignore[attr-defined]
    client.subscribe(topic_filter, qos=1)
    wait_for(lambda: len(client.subacks) > before, timeout=5, what=f"SUBACK for {topic_filter}")  # type: ignore[attr-defined]
    return client.subacks[before][0]  # type: ignore[attr-defined,no-any-return]


FORBIDDEN = [
    f"$share/{SHARE}/sig/v1/+/+/decision",      # the collectors' group: the attack itself
    f"$share/{SHARE}/sig/v1/{SITE}/kiosk-a/model/#",   # even its own topics, through a share
    "$share/other/sig/v1/#",
    "#",
    "+/#",
    "sig/#",
    "sig/v1/#",
    "sig/v1/+/+/decision",
    f"sig/v1/{SITE}/+/decision",
    f"sig/v1/{SITE}/kiosk-b/decision",          # another kiosk's decisions
    f"sig/v1/{SITE}/kiosk-b/model/#",           # another kiosk's commands
    f"sig/v1/{SITE}/kiosk-b/model/offer",
    f"sig/v1/{SITE}/+/model/#",                 # every kiosk's commands
    f"sig/v1/{SITE}/+/model/offer",
    "+/v1/+/kiosk-a/model/#",                   # its own commands under any prefix
    f"sig/v1/{SITE}/kiosk-a/#",                 # its own subtree, but wider than its commands
    "sig/v1/_group/+/model/#",                  # every group's commands
    "sig/v1/_group/fleet/model/#",              # a group it is not in
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "$CONTROL/#",
]
ALLOWED = [f"sig/v1/{SITE}/kiosk-a/model/#", f"sig/v1/{SITE}/kiosk-a/model/offer", "sig/v1/+/kiosk-a/model/#",
           "sig/v1/_group/canary/model/#", "sig/v1/_group/canary/model/offer"]


def test_kiosk_subscriptions_outside_its_own_commands_are_refused(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    ka = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")      # registered, group canary
    admin = mqtt_client(link_pki, mqtt_broker.port, "admin.ops")
    try:
        refused = {f: _suback(ka, f) for f in FORBIDDEN}
        assert refused == {f: NOT_AUTHORIZED for f in FORBIDDEN}
        # The control: what a kiosk needs is still granted (its own commands, its group's).
        granted = {f: _suback(ka, f) for f in ALLOWED}
        assert granted == {f: GRANTED_QOS1 for f in ALLOWED}
        # And nothing meant for others reaches it: another kiosk's command, the fleet's command.
        for topic, payload in ((f"sig/v1/{SITE}/kiosk-b/model/offer", b"for-b"),
                               ("sig/v1/_group/fleet/model/offer", b"for-fleet"),
                               (f"sig/v1/{SITE}/kiosk-a/model/offer", b"for-a")):
            admin.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_for(lambda: ka.received, what="its own command")  # type: ignore[attr-defined]
        time.sleep(0.3)
        assert {p for _, p in ka.received} == {b"for-a"}  # type: ignore[attr-defined]
    finally:
        _close(ka, admin)


def test_unregistered_kiosk_certificate_cannot_join_the_collectors_either(link_pki: LinkPki,
                                                                          mqtt_broker: Mosquitto) -> None:
    kx = mqtt_client(link_pki, mqtt_broker.port, "kiosk-x")     # a certificate of our CA, not in the registry
    try:
        assert _suback(kx, f"$share/{SHARE}/sig/v1/+/+/decision") == NOT_AUTHORIZED
        assert _suback(kx, "#") == NOT_AUTHORIZED
        assert _suback(kx, f"sig/v1/{SITE}/kiosk-x/model/#") == GRANTED_QOS1
    finally:
        _close(kx)


def test_kiosk_cannot_publish_as_another_kiosk_or_as_an_admin(link_pki: LinkPki, mqtt_broker: Mosquitto) -> None:
    ka = mqtt_client(link_pki, mqtt_broker.port, "kiosk-a")
    try:
        cases = {f"sig/v1/{SITE}/kiosk-b/{kind}": NOT_AUTHORIZED
                 for kind in ("decision", "log", "status", "update", "audit", "model/offer")}
        cases |= {"sig/v1/_group/canary/model/offer": NOT_AUTHORIZED, f"sig/v1/{SITE}/kiosk-a/model/offer": NOT_AUTHORIZED,
                  f"$share/{SHARE}/sig/v1/{SITE}/kiosk-a/decision": NOT_AUTHORIZED, "$SYS/broker/x": NOT_AUTHORIZED}
        mids = {ka.publish(t, b"{}", qos=1).mid: t for t in cases}
        wait_for(lambda: set(mids) <= set(ka.pubacks), what="PUBACKs")  # type: ignore[attr-defined]
        assert {mids[m]: ka.pubacks[m] for m in mids} == cases  # type: ignore[attr-defined]
        # The control: its own audit topic (the staff action records) is writable.
        own = ka.publish(f"sig/v1/{SITE}/kiosk-a/audit", b"{}", qos=1)
        own.wait_for_publish(5)
        assert ka.pubacks[own.mid] in (0, 0x10)  # type: ignore[attr-defined]   # 0x10: nobody subscribed
    finally:
        _close(ka)


@pytest.mark.parametrize("n", [40])
def test_shared_subscription_attack_loses_no_decision(link_pki: LinkPki, own_broker: Mosquitto, tmp_path: Path,
                                                      n: int) -> None:
    collectors = [Collector(link_pki.collector_config(own_broker.port, str(tmp_path / f"{name}.sqlite"), name=name,
                                                      fresh_session=True))
                  for name in COLLECTORS]
    link = KioskLink(link_pki.link_config("kiosk-a", own_broker.port, tmp_path / "outbox.sqlite"))
    attacker = mqtt_client(link_pki, own_broker.port, "kiosk-b")
    try:
        for c in collectors:
            c.start()
        assert all(c.wait_ready() for c in collectors)
        # The attacker subscribes exactly as a collector does (collector.py), all in one SUBSCRIBE.
        attacker.subscribe([(f"$share/{SHARE}/{f}", 1) for f in collector_filters("sig")])
        wait_for(lambda: attacker.subacks, what="the attacker's SUBACK")  # type: ignore[attr-defined]
        link.start()
        seqs = [link.publish_decision({"decision": "APPROVED", "score": 0.9, "subject": f"cust-{i}"}) for i in range(n)]
        assert link.flush(20), "the kiosk's outbox did not drain"
        stored = lambda: sum(c.store.count("decisions") for c in collectors)  # noqa: E731
        wait_for(lambda: stored() == n, timeout=10, what=f"{n} decisions stored (have {stored()})")
        got = sorted(r.seq for c in collectors for r in c.store.query_decisions(limit=10 * n))
        assert got == sorted(seqs)
        assert attacker.received == []  # type: ignore[attr-defined]
        assert attacker.subacks[0] == [NOT_AUTHORIZED] * len(collector_filters("sig"))  # type: ignore[attr-defined]
    finally:
        _close(attacker)
        link.close()
        for c in collectors:
            c.stop()
