"""Attack 11: a decommissioned (stolen, returned, replaced) kiosk keeps working.

Before: there was no revocation at all. The kiosk's certificate still connected, its signed
decisions were still stored, and ``central stats`` showed it online.

What stops it: ``sigkiosk admin revoke KIOSK`` marks it revoked in the registry (the collector
refuses it as ``revoked_kiosk``, stats show it revoked), puts every certificate the CA issued to it
on the CRL the broker enforces (``crlfile``), denies it everything in the broker ACL and reloads
the broker, whose plugin drops the connection the kiosk already had. Real mosquitto, real
collector; the PKI is the test's own, because revoking mutates the CA.
"""

from __future__ import annotations

import contextlib
import io
import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from fixtures_link import SITE, LinkPki, broker_accepts, make_pki, start_broker, wait_for

from kiosk import envelope
from kiosk.keys import load_encryption_key, load_public_raw, load_signing_key
from kiosk.link import KioskLink
from kiosk.records import DecisionRecord, encode_payload
from tools import pki
from tools.central.collector import Collector, _Incoming
from tools.commands import admin_cmd, central_cmd
from tools.registry import KioskEntry, Registry, RegistryError


@pytest.fixture
def own_pki(tmp_path: Path) -> LinkPki:
    return make_pki(tmp_path / "pki")


def _connects(p: LinkPki, port: int, cn: str) -> bool:
    """True if the broker accepts an MQTT session with ``cn``'s certificate; waits for a verdict."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(p.ca_dir / pki.CA_CERT)
    ctx.load_cert_chain(*p.cert(cn))
    return broker_accepts(port, ctx, client_id=f"probe-{cn}")


def _sealed(p: LinkPki, kiosk: str, seq: int) -> _Incoming:
    topic = f"sig/v1/{SITE}/{kiosk}/decision"
    now = int(time.time() * 1000)
    data = envelope.seal(encode_payload(DecisionRecord("APPROVED", 0.9).to_payload()), kiosk_id=kiosk, seq=seq,
                         time_ms=now, topic=topic, signing_key=load_signing_key(p.sign_key(kiosk)),
                         recipient=load_encryption_key(p.central_key).public_key())
    return _Incoming(topic, data, seq, 0, False, now)


def _stats(db: Path, registry: Path) -> dict:  # type: ignore[type-arg]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert central_cmd.main(["stats", "--db", str(db), "--registry", str(registry)]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_revoked_kiosk_is_cut_off_at_the_broker_and_the_collector(own_pki: LinkPki, tmp_path: Path) -> None:
    p = own_pki
    broker = start_broker(p, tmp_path / "broker")
    db = tmp_path / "central.sqlite"
    cfg = p.collector_config(broker.port, str(db), fresh_session=True)
    collector = Collector(cfg.__class__(**{**cfg.__dict__, "registry_reload_s": 0.0}))
    link = KioskLink(p.link_config("kiosk-a", broker.port, tmp_path / "outbox.sqlite"))
    try:
        collector.start()
        assert collector.wait_ready()
        link.start()
        link.publish_decision({"decision": "APPROVED", "score": 0.9})
        assert link.flush(10)
        wait_for(lambda: collector.store.count("decisions") == 1, what="the kiosk's decision before revocation")
        wait_for(lambda: collector.store.status().get("kiosk-a", {}).get("state") == "online", what="online")
        assert _stats(db, p.registry_file)["kiosks"]["kiosk-a"] == "online"
        assert link.stats().connected

        rc = admin_cmd.main(["revoke", "kiosk-a", "--ca-dir", str(p.ca_dir), "--registry", str(p.registry_file),
                             "--broker-dir", str(tmp_path / "broker"), "--reason", "stolen"])
        assert rc == 0

        # The broker: the session the kiosk had is dropped, and no new one is accepted (the link
        # keeps trying, every 0.2-2 s, as a stolen kiosk would).
        wait_for(lambda: not link.stats().connected, timeout=10, what="the revoked kiosk's session dropped")
        time.sleep(1.5)
        assert not link.stats().connected
        assert not _connects(p, broker.port, "kiosk-a")
        assert _connects(p, broker.port, "kiosk-b"), "the other kiosks keep working"
        assert "sigkiosk_acl: disconnected kiosk-a" in broker.log_tail(20000)
        # What the kiosk decides after revocation stays in its outbox: never delivered.
        link.publish_decision({"decision": "APPROVED", "score": 0.8})
        assert not link.flush(1.5)
        assert collector.store.count("decisions") == 1
        # Still refused after a broker restart (the CRL is read at start too).
        broker.stop()
        broker.start()
        assert not _connects(p, broker.port, "kiosk-a")
        assert _connects(p, broker.port, "kiosk-b")

        # The collector: even a message that got through (an old broker, a replayed capture) is
        # refused by name and archived, not stored.
        collector._maybe_reload_registry()
        refusal = collector.processor.process(_sealed(p, "kiosk-a", 2**52))
        assert refusal.reason == "revoked_kiosk"  # type: ignore[union-attr]
        assert collector.processor.process(_sealed(p, "kiosk-b", 2**52)).kind == "decision"  # type: ignore[union-attr]
        # Stats: revoked, with the time, although the last status it stored says online.
        state = _stats(db, p.registry_file)["kiosks"]["kiosk-a"]
        assert state.startswith("revoked 20"), state
        assert collector.store.status()["kiosk-a"]["state"] == "online"
    finally:
        link.close(timeout=1)
        collector.stop()
        broker.stop()


def test_revocation_records_crl_and_registry(own_pki: LinkPki, tmp_path: Path) -> None:
    p = own_pki
    # A second certificate of the same kiosk (a re-issue) must be revoked too; kiosk-b's must not.
    pki.issue(p.ca_dir, "kiosk", "kiosk-a", tmp_path / "reissued")
    serials = pki.issued_serials(p.ca_dir, "kiosk-a")
    assert len(serials) == 2
    assert admin_cmd.main(["revoke", "kiosk-a", "--ca-dir", str(p.ca_dir), "--registry", str(p.registry_file),
                           "--reason", "decommissioned"]) == 0
    crl = x509.load_pem_x509_crl((p.ca_dir / pki.CRL_FILE).read_bytes())
    ca = x509.load_pem_x509_certificate((p.ca_dir / pki.CA_CERT).read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert {r.serial_number for r in crl} == set(serials)
    kb = x509.load_pem_x509_certificate(p.cert("kiosk-b")[0].read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(kb.serial_number) is None
    assert crl.next_update_utc is not None and crl.next_update_utc.year >= time.gmtime().tm_year + 5
    # Revoking again adds nothing and keeps the record.
    assert pki.revoke(p.ca_dir, "kiosk-a") == []
    reg = Registry.load(p.registry_file)
    entry = reg.kiosks["kiosk-a"]
    assert entry.revoked and entry.revoked_reason == "decommissioned" and entry.sign_keys
    assert "kiosk-a" not in reg.active() and "kiosk-b" in reg.active()
    # A revoked id cannot quietly come back through `register`.
    pub = load_public_raw(Path(f"{p.sign_key('kiosk-a')}.pub"))
    with pytest.raises(RegistryError, match="revoked"):
        reg.add(KioskEntry("kiosk-a", SITE, None, (pub,)))
    # A kiosk the CA never issued a certificate to: a clear error, nothing written.
    assert admin_cmd.main(["revoke", "kiosk-zz", "--ca-dir", str(p.ca_dir), "--registry", str(p.registry_file)]) == 2


def test_registry_edits_cannot_undo_a_revocation_or_readmit_its_key(own_pki: LinkPki, tmp_path: Path) -> None:
    """Found by a review: a ``register`` that had loaded the registry before a ``revoke`` saved it
    wrote the kiosk back unrevoked; the revoked kiosk's key could be registered under a new id; and
    a mistyped ``--registry`` revoked against an empty registry (rewriting every broker ACL without
    the earlier revocations' denies)."""
    import threading

    p = own_pki
    registry = tmp_path / "registry.json"
    registry.write_bytes(p.registry_file.read_bytes())
    pub_x = Path(f"{p.sign_key('kiosk-x')}.pub")
    entered = threading.Event()

    def slow_revoke() -> None:
        with Registry.editing(registry) as reg:   # holds the lock while it works
            entered.set()
            reg.revoke("kiosk-b", reason="stolen", now_ms=1)
            time.sleep(0.5)

    t = threading.Thread(target=slow_revoke)
    t.start()
    assert entered.wait(5)
    # Meanwhile an admin registers another kiosk: it waits for the revocation, then adds to it.
    assert admin_cmd.main(["register", "--registry", str(registry), "--kiosk", "kiosk-x", "--site", SITE,
                           "--sign-pub", str(pub_x)]) == 0
    t.join(5)
    reg = Registry.load(registry)
    assert reg.kiosks["kiosk-b"].revoked and "kiosk-x" in reg.active()
    # The revoked kiosk's key under a new id: refused, nothing written.
    before = registry.read_bytes()
    pub_b = load_public_raw(Path(f"{p.sign_key('kiosk-b')}.pub"))
    with pytest.raises(RegistryError, match="belongs to revoked kiosk kiosk-b"):
        reg.add(KioskEntry("kiosk-b2", SITE, None, (pub_b,)))
    assert admin_cmd.main(["register", "--registry", str(registry), "--kiosk", "kiosk-b2", "--site", SITE,
                           "--sign-pub", f"{p.sign_key('kiosk-b')}.pub"]) == 2
    assert registry.read_bytes() == before
    # A registry path that does not exist: refused before anything is revoked or rewritten.
    assert admin_cmd.main(["revoke", "kiosk-a", "--ca-dir", str(p.ca_dir), "--registry",
                           str(tmp_path / "typo.json")]) == 2
    assert not (tmp_path / "typo.json").exists()


def test_a_service_certificate_can_be_revoked(own_pki: LinkPki, tmp_path: Path) -> None:
    """Found by a review: `admin revoke` took kiosk ids only, so a stolen collector's certificate
    (which would take over that collector's session and its queued decisions) could not be
    revoked. `admin revoke collector.NAME` puts it on the CRL and reloads the broker."""
    p = own_pki
    broker = start_broker(p, tmp_path / "broker")
    try:
        assert _connects(p, broker.port, "collector.c2")
        assert admin_cmd.main(["revoke", "collector.c2", "--ca-dir", str(p.ca_dir), "--registry", str(p.registry_file),
                               "--broker-dir", str(tmp_path / "broker")]) == 0
        crl = x509.load_pem_x509_crl((p.ca_dir / pki.CRL_FILE).read_bytes())
        assert set(pki.issued_serials(p.ca_dir, "collector.c2")) <= {r.serial_number for r in crl}
        time.sleep(0.5)
        assert not _connects(p, broker.port, "collector.c2")
        assert _connects(p, broker.port, "collector.c1") and _connects(p, broker.port, "kiosk-a")
        assert not Registry.load(p.registry_file).kiosks.get("collector.c2")
    finally:
        broker.stop()


def test_one_name_one_role_in_the_device_ca(tmp_path: Path) -> None:
    """Found by a review: a kiosk called like the broker's host shared its CN with the server's
    certificate, so revoking the kiosk revoked the broker's serials too (and issuing both into one
    folder replaced one's private key). The CA refuses a name already issued for another role."""
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.issue(ca, "server", "broker", tmp_path / "certs")
    with pytest.raises(pki.PkiError, match="already issued as server"):
        pki.issue(ca, "kiosk", "broker", tmp_path / "certs")
    pki.issue(ca, "server", "broker", tmp_path / "renewed")   # the same role again: a renewal
    assert len(pki.issued_serials(ca, "broker")) == 2 and pki.issued_roles(ca, "broker") == {"server"}


def test_two_revocations_at_once_both_hold(own_pki: LinkPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: two `admin revoke` at once each read revoked.json before the other wrote
    it, and one kiosk's serials were lost from it and from every later CRL. Forced here by a slow
    read of the list; revocations of the list are one at a time now."""
    import threading

    from cryptography import x509

    p = own_pki
    real = pki.revoked

    def slow(ca_dir: Path) -> list:  # type: ignore[type-arg]
        got = real(ca_dir)
        time.sleep(0.3)   # the other revocation reads the same list meanwhile
        return got

    monkeypatch.setattr(pki, "revoked", slow)
    done = [threading.Thread(target=pki.revoke, args=(p.ca_dir, kid)) for kid in ("kiosk-a", "kiosk-b")]
    for t in done:
        t.start()
    for t in done:
        t.join(10)
    monkeypatch.undo()
    on_list = {r.common_name for r in pki.revoked(p.ca_dir)}
    assert on_list == {"kiosk-a", "kiosk-b"}, on_list
    crl = x509.load_pem_x509_crl((p.ca_dir / pki.CRL_FILE).read_bytes())
    want = set(pki.issued_serials(p.ca_dir, "kiosk-a")) | set(pki.issued_serials(p.ca_dir, "kiosk-b"))
    assert want <= {r.serial_number for r in crl}


def test_operator_mistakes_with_the_pki_are_refused(own_pki: LinkPki, tmp_path: Path) -> None:
    """Found by a review: revoking the broker's certificate said "revoked" though no client checks
    the CRL for it; a CA key and a TLS client key readable by others were used; a mistyped
    --registry for broker-config wrote an ACL without the revoked kiosks' denies; a new key for a
    kiosk with a mistyped --site moved it (its records then refused) and dropped its group."""
    from kiosk.keys import KeyFileError
    from kiosk.tls import client_tls_context

    p = own_pki
    pki.issue(p.ca_dir, "server", "broker.example", tmp_path / "server")
    with pytest.raises(pki.PkiError, match="clients do not check"):
        pki.revoke(p.ca_dir, "broker.example")
    assert "broker.example" not in {r.common_name for r in pki.revoked(p.ca_dir)}

    ca_key = p.ca_dir / pki.CA_KEY
    ca_key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        pki.issue(p.ca_dir, "kiosk", "kiosk-new", tmp_path / "new")
    ca_key.chmod(0o600)
    tls_key = p.certs / "kiosk-a.key"
    tls_key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        client_tls_context(p.ca_dir / pki.CA_CERT, p.certs / "kiosk-a.crt", tls_key)
    tls_key.chmod(0o600)

    assert admin_cmd.main(["broker-config", "--ca-dir", str(p.ca_dir), "--out", str(tmp_path / "broker"),
                           "--registry", str(tmp_path / "typo.json")]) == 2
    assert not (tmp_path / "broker" / "acl").exists()

    registry = tmp_path / "registry.json"
    registry.write_bytes(p.registry_file.read_bytes())
    before = Registry.load(registry).kiosks["kiosk-a"]
    new_pub = tmp_path / "new.pub"
    from kiosk import keys
    keys.generate_signing_key(tmp_path / "new.key", new_pub)
    assert admin_cmd.main(["register", "--registry", str(registry), "--kiosk", "kiosk-a", "--site", "branch-10",
                           "--sign-pub", str(new_pub)]) == 2
    assert Registry.load(registry).kiosks["kiosk-a"] == before        # nothing changed
    assert admin_cmd.main(["register", "--registry", str(registry), "--kiosk", "kiosk-a", "--site", before.site,
                           "--sign-pub", str(new_pub)]) == 0              # no --group: the group stays
    after = Registry.load(registry).kiosks["kiosk-a"]
    assert after.group == before.group and after.site == before.site and len(after.sign_keys) == 2
    # A site mistyped at registration is corrected by registering with a key the kiosk has.
    assert admin_cmd.main(["register", "--registry", str(registry), "--kiosk", "kiosk-a", "--site", "branch-77",
                           "--sign-pub", str(new_pub)]) == 0
    moved = Registry.load(registry).kiosks["kiosk-a"]
    assert moved.site == "branch-77" and moved.group == before.group and moved.sign_keys == after.sign_keys
