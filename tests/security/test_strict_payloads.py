"""Attack 6: a kiosk with a valid key sends payloads the collector must refuse, not store.

A stolen or compromised kiosk key signs whatever the attacker likes: non-finite numbers (which
break every average the bank computes over scores), NUL and terminal control characters (which
cut strings in C tools and repaint an operator's terminal), payload schemas this code does not
know, fields the record does not have or the link policy forbids (raw biometrics), nesting deep
enough to exhaust a parser, duplicate keys that two JSON parsers read differently, and bytes
hidden after the end of the compressed stream. Every envelope here is sealed with the real kiosk
signing key to the real central key, so it passes every check before the payload's; each must be
refused as ``bad_payload`` - and archived whole in ``rejected``, the evidence of the attempt.
"""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fixtures_link import SITE, LinkPki, mqtt_client, wait_for

from kiosk import envelope
from kiosk.keys import key_id, load_encryption_key, load_signing_key, raw_public
from kiosk.records import DecisionRecord, LogEntry, RecordError, decode_payload, encode_payload
from tools.broker import Mosquitto
from tools.central.collector import Collector, Processor, _Incoming
from tools.registry import Registry

KIOSK = "kiosk-a"
NOW = int(time.time() * 1000)


def _topic(kind: str) -> str:
    return f"sig/v1/{SITE}/{KIOSK}/{kind}"


def _json(obj: dict) -> bytes:  # type: ignore[type-arg]
    return json.dumps(obj, separators=(",", ":")).encode()


def _decision(**kw: object) -> dict:  # type: ignore[type-arg]
    return {**DecisionRecord("APPROVED", 0.91, ("shape",), {"cnn": "3"}, {"match": 12.5}, "cust-7", "s-1",
                             "online", NOW).to_payload(), **kw}


def _decision_v1(**kw: object) -> dict:  # type: ignore[type-arg]
    """A decision as a kiosk of schema 1 (before profiles) sealed it: no profile, operator, paper_references."""
    d = {k: v for k, v in _decision().items() if k not in ("profile", "operator", "paper_references", "explanations")}
    return {**d, "schema": 1, **kw}


def _decision_v2(**kw: object) -> dict:  # type: ignore[type-arg]
    """A decision as a kiosk of schema 2 (before explanations) sealed it."""
    return {**{k: v for k, v in _decision().items() if k != "explanations"}, "schema": 2, **kw}


def _log(**kw: object) -> dict:  # type: ignore[type-arg]
    return {**LogEntry("INFO", "kiosk.daemon", "ready", {"port": 8080}, NOW).to_payload(), **kw}


def _seal(link_pki: LinkPki, plaintext: bytes, kind: str = "decision", seq: int = 7, *,
          compressed_tail: bytes | None = None) -> bytes:
    """Seal as the kiosk does; with ``compressed_tail``, zlib-compress the plaintext and append the
    tail after the end of the compressed stream (what a hand-built envelope can carry)."""
    sk = load_signing_key(link_pki.sign_key(KIOSK))
    central = load_encryption_key(link_pki.central_key).public_key()
    if compressed_tail is None:
        return envelope.seal(plaintext, kiosk_id=KIOSK, seq=seq, time_ms=NOW, topic=_topic(kind), signing_key=sk,
                             recipient=central)
    # envelope.seal decides about compression itself, so build this one by hand, step by step as
    # kiosk/ENVELOPE.md describes: the attacker holds the kiosk's key and can do the same.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    eph = X25519PrivateKey.generate()
    nonce = os.urandom(envelope.NONCE_LEN)
    hdr = envelope.Header(KIOSK, seq, NOW, _topic(kind), key_id(raw_public(sk)), key_id(raw_public(central)),
                          raw_public(eph), nonce, flags=envelope.FLAG_ZLIB).encode()
    aad = struct.pack(">2sBH", envelope.MAGIC, envelope.FORMAT_VERSION, len(hdr)) + hdr
    key = envelope._derive_key(eph.exchange(central), raw_public(eph), raw_public(central))
    ct = AESGCM(key).encrypt(nonce, zlib.compress(plaintext) + compressed_tail, aad)
    signed = aad + struct.pack(">I", len(ct)) + ct
    return signed + sk.sign(signed)


@pytest.fixture(scope="module")
def processor(link_pki: LinkPki) -> Processor:
    return Processor(Registry.load(link_pki.registry_file), [load_encryption_key(link_pki.central_key)])


def _process(processor: Processor, data: bytes, kind: str = "decision"):  # type: ignore[no-untyped-def]
    return processor.process(_Incoming(_topic(kind), data, 1, 1, False, NOW))


DEEP: dict = {}   # type: ignore[type-arg]
_node = DEEP
for _ in range(200):
    _node["a"] = {}
    _node = _node["a"]

# (name, topic kind, plaintext): each sealed with kiosk-a's real key, each must be refused.
BAD_PAYLOADS: list[tuple[str, str, bytes]] = [
    ("NaN score", "decision", _json(_decision()).replace(b'"score":0.91', b'"score":NaN')),
    ("Infinity score", "decision", _json(_decision()).replace(b'"score":0.91', b'"score":Infinity')),
    ("-Infinity timing", "decision", _json(_decision()).replace(b'"match":12.5', b'"match":-Infinity')),
    ("1e999 overflows to inf", "decision", _json(_decision()).replace(b'"score":0.91', b'"score":1e999')),
    ("NUL in the decision", "decision", _json(_decision(decision="APP\x00ROVED"))),
    ("escape sequence in the subject", "decision", _json(_decision(subject="\x1b[2J\x1b[Hcust-8"))),
    ("carriage return in a reason", "decision", _json(_decision(reasons=["shape\rspeed"]))),
    ("lone surrogate", "decision", _json(_decision(decision="APPROVED\ud800"))),
    ("control character in a key", "decision", _json(_decision(model_versions={"cnn\x00": "3"}))),
    ("unknown schema version", "decision", _json(_decision(schema=4))),
    ("schema as a string", "decision", _json(_decision(schema="1"))),
    ("schema as a float", "decision", _json(_decision(schema=2.0))),
    ("schema 2 without the profile", "decision", _json({k: v for k, v in _decision().items() if k != "profile"})),
    ("schema 2 without the operator", "decision", _json({k: v for k, v in _decision().items() if k != "operator"})),
    ("schema 1 with a profile", "decision", _json(_decision_v1(profile="standard"))),
    ("schema 1 with an operator", "decision", _json(_decision_v1(operator=None))),
    ("schema 3 without the explanations", "decision",
     _json({k: v for k, v in _decision().items() if k != "explanations"})),
    ("schema 2 with explanations", "decision", _json(_decision_v2(explanations=[]))),
    ("explanations as one string", "decision", _json(_decision(explanations="Pressure was not compared."))),
    ("an explanation that is not a string", "decision", _json(_decision(explanations=[{"text": "x"}]))),
    ("an empty explanation", "decision", _json(_decision(explanations=[""]))),
    ("an overlong explanation", "decision", _json(_decision(explanations=["w" * 301]))),
    ("too many explanations", "decision", _json(_decision(explanations=["Off."] * 9))),
    ("escape sequence in an explanation", "decision", _json(_decision(explanations=["\x1b[2JApproved."]))),
    ("newline in an explanation", "decision", _json(_decision(explanations=["one\nforged line"]))),
    ("unknown profile name form", "decision", _json(_decision(profile="High Value"))),
    ("profile with a quote", "decision", _json(_decision(profile="standard'; DROP TABLE decisions;--"))),
    ("overlong profile", "decision", _json(_decision(profile="p" * 33))),
    ("profile not a string", "decision", _json(_decision(profile=7))),
    ("profile with an escape", "decision", _json(_decision(profile="std\x1b[2J"))),
    ("operator with a space", "decision", _json(_decision(operator="jane doe"))),
    ("operator overlong", "decision", _json(_decision(operator="o" * 33))),
    ("operator central with a bad admin", "decision", _json(_decision(operator="central:ADMIN;rm"))),
    ("operator not a string", "decision", _json(_decision(operator=["alice"]))),
    ("no schema", "decision", _json({k: v for k, v in _decision().items() if k != "schema"})),
    ("unknown field", "decision", _json(_decision(customer_name="Jane Doe"))),
    ("raw evidence the policy forbids", "decision", _json(_decision(evidence={"trajectory": [[1, 2, 0.5]]}))),
    ("a reason that is not a string", "decision", _json(_decision(reasons=[{"x": 1}]))),
    ("a version that is not a string", "decision", _json(_decision(model_versions={"cnn": 3}))),
    ("integer beyond 64 bits", "decision", _json(_decision(created_ms=2**70))),
    ("a time past year 9999", "decision", _json(_decision(created_ms=2**62))),
    ("a subject of 129 characters", "decision", _json(_decision(subject="c" * 129))),
    ("a session id of 129 characters", "decision", _json(_decision(session_id="s" * 129))),
    ("a mode of 65 characters", "decision", _json(_decision(mode="m" * 65))),
    ("33 reasons", "decision", _json(_decision(reasons=["shape"] * 33))),
    ("a reason of 65 characters", "decision", _json(_decision(reasons=["r" * 65]))),
    ("a model version of 257 characters", "decision", _json(_decision(model_versions={"cnn": "v" * 257}))),
    ("33 model versions", "decision", _json(_decision(model_versions={f"m{i}": "1" for i in range(33)}))),
    ("33 timings", "decision", _json(_decision(timings_ms={f"t{i}": 1.0 for i in range(33)}))),
    ("a time before 1970", "log", _json(_log(created_ms=-1))),
    ("duplicate keys", "decision", _json(_decision()).replace(b'{"type"', b'{"decision":"SUSPICIOUS","type"')),
    ("nesting 200 deep", "log", _json(_log(fields=DEEP))),
    ("unknown log field", "log", _json(_log(stack="..."))),
    ("status will_seq beyond 64 bits", "status",
     _json({"type": "status", "schema": 1, "state": "online", "will_seq": 2**64, "created_ms": NOW})),
]


@pytest.mark.parametrize(("name", "kind", "plaintext"), BAD_PAYLOADS, ids=[c[0] for c in BAD_PAYLOADS])
def test_a_valid_kiosk_key_does_not_make_a_bad_payload_acceptable(processor: Processor, link_pki: LinkPki,
                                                                  name: str, kind: str, plaintext: bytes) -> None:
    data = _seal(link_pki, plaintext, kind)
    r = _process(processor, data, kind)
    assert getattr(r, "reason", None) == "bad_payload", f"{name}: accepted as {r}"
    assert r.sample == data   # type: ignore[union-attr]   # signed: the whole message is kept as evidence


def test_data_after_the_compressed_stream_is_refused(processor: Processor, link_pki: LinkPki) -> None:
    good = _json(_decision())
    # The control: the same hand-built, compressed envelope without a tail is accepted.
    assert _process(processor, _seal(link_pki, good, compressed_tail=b"")).kind == "decision"  # type: ignore[union-attr]
    for tail in (zlib.compress(_json(_decision(decision="SUSPICIOUS"))), b"\x00", b"junk"):
        r = _process(processor, _seal(link_pki, good, compressed_tail=tail))
        assert getattr(r, "reason", None) == "bad_payload", f"tail {tail[:8]!r}: accepted"
        assert "after the end of the compressed" in r.detail   # type: ignore[union-attr]


def test_a_small_record_that_inflates_to_megabytes_is_refused_unread(processor: Processor, link_pki: LinkPki) -> None:
    """Found by a review: every kind could inflate to 8 MiB, so a signed decision of 8 KB on the
    wire (a subject of 3.9 million "é") was stored at 3000 times its size (16 MiB of escaped text a
    row). A decision, log, status or audit record now inflates to at most 256 KiB: beyond, the
    envelope is refused before its JSON is read. Evidence keeps the larger bound."""
    fat = _json(_decision(subject="\u00e9" * (300 << 10)))     # escaped: 1.8 MB of JSON
    data = _seal(link_pki, fat)
    assert len(data) < 16_000                                  # compressed: small on the wire
    r = _process(processor, data)
    assert getattr(r, "reason", None) == "oversized", r
    assert "exceeds" in r.detail or "too large" in r.detail    # type: ignore[union-attr]
    # Just inside the bound, the same checks as ever decide (here: the subject's length).
    near = _json(_decision(subject="c" * ((256 << 10) - 600)))
    assert len(near) <= 256 << 10
    assert getattr(_process(processor, _seal(link_pki, near)), "reason", None) == "bad_payload"
    with pytest.raises(RecordError, match="exceeds the limit"):   # the kiosk refuses it first
        encode_payload(_log(message="x" * 2000, fields={f"f{i}": "y" * 600 for i in range(500)}))


def test_good_payloads_of_every_kind_are_still_accepted(processor: Processor, link_pki: LinkPki) -> None:
    status = {"type": "status", "schema": 1, "state": "online", "uptime_s": 3.5, "queue_depth": {"decision": 2},
              "dropped_logs": 0, "errors": 0, "model_versions": {"cnn": "3"}, "software_version": "1.0",
              "will_seq": 2**51, "created_ms": NOW}
    multiline = _log(message="line one\n\tline two", fields={"exception": "ValueError: a\nb", "n": [1, 2.5, None]})
    staff = _decision(profile="high-value", operator="alice")
    central = _decision(profile="standard", operator="central:admin-1")
    why = _decision(explanations=["Pressure was not compared: the references were signed without it."] * 8)
    cases = (("decision", _decision()), ("decision", staff), ("decision", central), ("decision", _decision_v1()),
             ("decision", _decision_v2()), ("decision", why),
             ("log", multiline), ("status", status), ("status", {**status, "schema": 2}))
    for kind, obj in cases:
        r = _process(processor, _seal(link_pki, encode_payload(obj), kind), kind)
        assert getattr(r, "kind", None) == kind, f"{kind}: {r}"
        assert r.payload == obj   # type: ignore[union-attr]
    # A collector whose policy allows raw evidence accepts it (inside the ciphertext, as ever).
    allowing = Processor(processor.registry, list(processor.enc_keys.values()), allow_raw_evidence=True)
    r = _process(allowing, _seal(link_pki, _json(_decision(evidence={"trajectory": [[1, 2, 0.5]]}))))
    assert getattr(r, "kind", None) == "decision"


def test_the_kiosk_refuses_to_seal_what_the_collector_would_refuse() -> None:
    for bad in ({"decision": "APP\x00ROVED", "score": 0.5}, {"decision": "APPROVED", "score": 0.5, "subject": "\x1b[2J"},
                {"decision": "APPROVED", "score": 0.5, "created_ms": 2**70},
                {"decision": "APPROVED", "score": 0.5, "profile": "../etc"},
                {"decision": "APPROVED", "score": 0.5, "profile": ""},
                {"decision": "APPROVED", "score": 0.5, "operator": "central:"},
                {"decision": "APPROVED", "score": 0.5, "operator": "x" * 200}):
        with pytest.raises(RecordError):
            encode_payload(DecisionRecord.from_dict(bad).to_payload())
    # A log line is best effort: its control characters are neutralised, never a reason to drop it.
    entry = LogEntry("ERROR", "kiosk", "boom\x1b[31m\r\nnext", {"x": "a\x00b", "n": float("nan")})
    payload = json.loads(encode_payload(entry.to_payload()))
    assert payload["message"] == "boom\ufffd[31m\ufffd\nnext"
    assert payload["fields"] == {"x": "a\ufffdb", "n": "nan"}


def test_bad_payloads_end_to_end_are_refused_archived_and_do_not_stop_the_good_ones(
        link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "c.sqlite"), fresh_session=True,
                                                    share_group=f"s{uuid.uuid4().hex[:8]}"))
    collector.start()
    bad = [_seal(link_pki, p, k, seq=100 + i) for i, (_, k, p) in enumerate(BAD_PAYLOADS)]
    bad.append(_seal(link_pki, _json(_decision()), seq=99, compressed_tail=b"junk"))
    good = [_seal(link_pki, _json(_decision(subject=f"good-{i}")), seq=200 + i) for i in range(3)]
    client = None
    try:
        assert collector.wait_ready()
        client = mqtt_client(link_pki, mqtt_broker.port, KIOSK)
        kinds = [k for _, k, _ in BAD_PAYLOADS] + ["decision"]
        for data, kind in zip(bad, kinds, strict=True):
            client.publish(_topic(kind), data, qos=1).wait_for_publish(5)
        for data in good:
            client.publish(_topic("decision"), data, qos=1).wait_for_publish(5)
        wait_for(lambda: collector.store.count("decisions") == 3, what="the 3 good decisions")
        wait_for(lambda: collector.store.refusal_counts().get("bad_payload") == len(bad), timeout=10,
                 what=f"{len(bad)} bad_payload refusals, have {collector.store.refusal_counts()}")
        assert sorted(d.payload["subject"] for d in collector.store.query_decisions()) == ["good-0", "good-1", "good-2"]
        assert collector.store.count("logs") == 0
        # (a genuine status retained at the shared broker by an earlier test may be there; ours is not)
        assert all(st.get("will_seq") != 2**64 for st in collector.store.status().values())
        import sqlite3
        with sqlite3.connect(tmp_path / "c.sqlite") as db:
            archived = {bytes(r[0]) for r in db.execute("SELECT sample FROM rejected WHERE reason='bad_payload'")}
        assert archived == set(bad)   # every refused message, whole: what the attacker sent is on record
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        collector.stop()


def test_schema_versions_of_a_decision() -> None:
    """The kiosk writes schema 3 with every later field (null or empty when it does not apply); the
    collector reads schema 1 and 2 decisions of kiosks not yet updated, without those fields."""
    rec = DecisionRecord.from_dict({"decision": "APPROVED", "score": 0.8})
    payload = json.loads(encode_payload(rec.to_payload()))
    assert payload["schema"] == 3 and payload["profile"] is None and payload["operator"] is None
    assert payload["explanations"] == []
    why = DecisionRecord("SUSPICIOUS", 0.4, explanations=("Pressure was not compared: the references were signed "
                                                          "without it.",))
    assert decode_payload(encode_payload(why.to_payload()), "decision")["explanations"] == list(why.explanations)
    v2 = decode_payload(_json(_decision_v2(profile="standard")), "decision")
    assert v2["schema"] == 2 and "explanations" not in v2
    assert DecisionRecord(**{k: v for k, v in v2.items() if k not in ("type", "schema")}).explanations == ()
    with pytest.raises(RecordError, match="came with schema 3"):
        decode_payload(_json(_decision_v2(explanations=["Off."])), "decision")
    both = DecisionRecord("SUSPICIOUS", 0.6, profile="high-value", operator="central:ops")
    assert decode_payload(encode_payload(both.to_payload()), "decision") == both.to_payload()
    old = decode_payload(_json(_decision_v1()), "decision")
    assert old["schema"] == 1 and "profile" not in old
    read_back = DecisionRecord(**{k: v for k, v in old.items() if k not in ("type", "schema")})
    assert (read_back.profile, read_back.operator) == (None, None)
    with pytest.raises(RecordError, match="came with schema 2"):
        decode_payload(_json(_decision_v1(profile="standard")), "decision")
    with pytest.raises(RecordError, match="schema 3 lacks operator"):
        decode_payload(_json({k: v for k, v in _decision().items() if k != "operator"}), "decision")
