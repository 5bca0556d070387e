"""The broker's ACL for updates: a kiosk writes only its own update report, never a command topic;
it reads its own and its group's commands, not another group's."""

from __future__ import annotations

import time

from fixtures_link import mqtt_client, wait_for
from fixtures_update import U_SITE, UpdatePki

from tools import pki
from tools.broker import Mosquitto
from tools.rollout import AdminClient

NOT_AUTHORIZED = 0x87


def test_kiosk_update_topic_acl(update_pki: UpdatePki, update_broker: Mosquitto) -> None:
    cert = (update_pki.certs / "canary-1.crt", update_pki.certs / "canary-1.key")
    c = mqtt_client(None, update_broker.port, "canary-1", cert=cert, ca_file=update_pki.ca_dir / pki.CA_CERT)
    try:
        cases = {
            f"sig/v1/{U_SITE}/canary-1/update": 0x10,   # its own report: accepted (0x10: nobody subscribed yet)
            f"sig/v1/{U_SITE}/fleet-1/update": NOT_AUTHORIZED,     # another kiosk's
            "sig/v1/_group/canary/model/offer": NOT_AUTHORIZED,    # a command, even its own group's
            f"sig/v1/{U_SITE}/canary-1/model/offer": NOT_AUTHORIZED,
        }
        mids = {c.publish(topic, b"{}", qos=1).mid: topic for topic in cases}
        wait_for(lambda: set(mids) <= set(c.pubacks), what="PUBACKs")
        assert {mids[m]: c.pubacks[m] for m in mids} == cases
        # The broker plugin refuses the other group's filter at SUBSCRIBE and the read ACL guards
        # delivery as well: publish to both groups (retained) and see what reaches the canary.
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            for group in ("canary", "fleet"):
                admin.client.publish(f"sig/v1/_group/{group}/model/offer", group.encode(), qos=1,
                                     retain=True).wait_for_publish(10)
        c.subscribe([("sig/v1/_group/canary/model/#", 1), ("sig/v1/_group/fleet/model/#", 1)])
        wait_for(lambda: c.received, what="the canary group's offer")
        time.sleep(0.3)
        assert c.received == [("sig/v1/_group/canary/model/offer", b"canary")]
    finally:
        c.loop_stop()
        c.disconnect()
