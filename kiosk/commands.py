"""Signed commands from the central server: "verify customer X at this kiosk".

The broker's ACL lets only admins publish on a kiosk's command subtree, but the kiosk does not
trust the broker: every command is signed with the central server's Ed25519 key
(``central-sign.key``). Wire format, on ``<prefix>/v1/<site>/<kiosk>/model/request/verify``
(the kiosk's command subtree in the v1 ACL)::

    {"body": base64(json), "sig": base64(Ed25519(DOMAIN || topic || 0x00 || body))}

and the body is ``{"v": 1, "type": "verify", "kiosk": ..., "request_id": ..., "customer": ...,
"issued_ms": ..., "expires_ms": ...}``, with optionally ``"admin"`` (the name of the admin
certificate it was sent with; the decision's operator is then ``central:ADMIN``). A request for an
application profile (``"profile"``, ``kiosk.profiles``) is ``"v": 2``: a kiosk that predates
profiles refuses a version it does not know rather than verify under its one threshold what was
asked at a stricter one; an unknown profile name is refused by the kiosk, by name. The signature covers the topic, so a command cannot be
moved to another kiosk; the kiosk id inside must be its own; a command is refused once expired or
issued too long ago, and each request id is accepted once (remembered on disk for ``max_age_s``,
so a replay after a restart is refused too).

The site calibration (``kiosk.calibration``) takes one more command, on
``.../model/request/calibration``: ``{"v": 1, "type": "calibration", "action": "revert"|"resume",
"kiosk": ..., "request_id": ..., "issued_ms": ..., "expires_ms": ..., "admin": ...}``, signed and
checked the same way (topic, kiosk, age, replay); an unknown action is refused by name. The kiosk
audits it with the operator ``central:ADMIN``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.errors import ApplianceError
from kiosk.jsonbound import loads_bounded
from kiosk.records import PROFILE_NAME
from kiosk.templates import atomic_write, validate_customer
from kiosk.topics import KioskTopics

log = logging.getLogger(__name__)

DOMAIN = b"sigkiosk command v1\0"
VERIFY_SUFFIX = "model/request/verify"
CALIBRATION_SUFFIX = "model/request/calibration"
#: What the central server may ask of a kiosk's site calibration.
CALIBRATION_ACTIONS = ("revert", "resume")
MAX_COMMAND = 4096
#: A request id becomes the session id of the decision record: matched whole, like every identifier.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
#: An admin certificate's name (tools.pki): the operator ``central:ADMIN`` of the decision.
_ADMIN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class CommandError(ApplianceError, ValueError):
    """A command was refused; ``reason`` is a short stable code. ``request_id`` is the refused
    command's id where it was signed by the central key and well formed (expired, stale, replayed,
    not saved), so the refusal the kiosk logs (and the collector receives) names the request the
    admin sent; None where the message is not known to be the central server's."""

    def __init__(self, reason: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id


def verify_topic(topics: KioskTopics) -> str:
    return f"{topics.base}/{VERIFY_SUFFIX}"


def calibration_topic(topics: KioskTopics) -> str:
    return f"{topics.base}/{CALIBRATION_SUFFIX}"


@dataclass(frozen=True)
class VerifyCommand:
    request_id: str
    customer: str
    issued_ms: int
    expires_ms: int
    profile: str | None = None    # None: the kiosk's default profile
    admin: str | None = None      # the admin certificate's name it was sent with


@dataclass(frozen=True)
class CalibrationCommand:
    """Revert the site threshold to the shipped one (held), or let it move again."""

    request_id: str
    action: str                   # one of CALIBRATION_ACTIONS
    issued_ms: int
    expires_ms: int
    admin: str | None = None


def make_verify_command(signing_key: Ed25519PrivateKey, topic: str, kiosk_id: str, customer: str,
                        request_id: str, *, ttl_s: float = 120.0, now_ms: int | None = None,
                        profile: str | None = None, admin: str | None = None) -> bytes:
    """The central side (admin CLI, demo): a signed verification request."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    fields: dict[str, Any] = {"v": 1, "type": "verify", "kiosk": kiosk_id, "request_id": request_id,
                              "customer": customer, "issued_ms": now, "expires_ms": now + int(ttl_s * 1000)}
    if admin is not None:
        fields["admin"] = admin
    if profile is not None:
        fields.update(v=2, profile=profile)
    return _signed(signing_key, topic, fields)


def make_calibration_command(signing_key: Ed25519PrivateKey, topic: str, kiosk_id: str, action: str,
                             request_id: str, *, ttl_s: float = 120.0, now_ms: int | None = None,
                             admin: str | None = None) -> bytes:
    """The central side (``sigkiosk admin calibration``): a signed revert or resume."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    fields: dict[str, Any] = {"v": 1, "type": "calibration", "action": action, "kiosk": kiosk_id,
                              "request_id": request_id, "issued_ms": now, "expires_ms": now + int(ttl_s * 1000)}
    if admin is not None:
        fields["admin"] = admin
    return _signed(signing_key, topic, fields)


def _signed(signing_key: Ed25519PrivateKey, topic: str, fields: dict[str, Any]) -> bytes:
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    sig = signing_key.sign(DOMAIN + topic.encode() + b"\0" + body)
    return json.dumps({"body": base64.b64encode(body).decode(), "sig": base64.b64encode(sig).decode()}).encode()


class CommandVerifier:
    """Checks commands for one kiosk; remembers accepted request ids in ``seen_file``."""

    def __init__(self, central_pub: Ed25519PublicKey, kiosk_id: str, topics: KioskTopics, seen_file: Path,
                 max_age_s: float = 300.0) -> None:
        self.pub = central_pub
        self.kiosk_id = kiosk_id
        self.topic = verify_topic(topics)
        self.calibration_topic = calibration_topic(topics)
        self.seen_file = Path(seen_file)
        self.max_age_ms = int(max_age_s * 1000)
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        try:
            data = json.loads(self.seen_file.read_text())
            self._seen = {str(k): int(v) for k, v in data.items()}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, OSError) as exc:
            # Unreadable: refuse nothing we cannot judge? No - start empty but keep the age
            # limit, which bounds what a replay could achieve to max_age_s.
            log.warning("command replay list %s unreadable (%s); starting empty", self.seen_file, exc)

    def check(self, topic: str, payload: bytes, now_ms: int | None = None) -> VerifyCommand | CalibrationCommand:
        """The command on ``topic`` (a verification or a calibration request), or CommandError."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if topic not in (self.topic, self.calibration_topic):
            raise CommandError("bad_topic", f"not a command topic of this kiosk: {topic}")
        if len(payload) > MAX_COMMAND:
            raise CommandError("oversized", f"command of {len(payload)} bytes")
        try:
            outer = loads_bounded(payload, max_bytes=MAX_COMMAND, max_depth=2)
            body = base64.b64decode(outer["body"], validate=True)
            sig = base64.b64decode(outer["sig"], validate=True)
        except (ValueError, KeyError, TypeError):
            raise CommandError("malformed", "command is not {body, sig} JSON") from None
        try:
            self.pub.verify(sig, DOMAIN + topic.encode() + b"\0" + body)
        except InvalidSignature:
            raise CommandError("bad_signature", "command signature does not verify with the central key") from None
        cmd: VerifyCommand | CalibrationCommand
        try:
            b: dict[str, Any] = loads_bounded(body, max_bytes=MAX_COMMAND, max_depth=2)
            admin = b.get("admin")
            if admin is not None and not (isinstance(admin, str) and _ADMIN.fullmatch(admin)):
                raise ValueError("admin is not an admin certificate's name")
            cmd = self._verify_body(b, admin) if topic == self.topic else self._calibration_body(b, admin)
        except CommandError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError("malformed", f"command body invalid: {exc}") from None
        if b.get("kiosk") != self.kiosk_id:
            raise CommandError("wrong_kiosk", "command is addressed to another kiosk")
        if not _REQUEST_ID.fullmatch(cmd.request_id):
            raise CommandError("malformed", "request id must be 1-64 letters, digits, '.', '_', ':' or '-'")
        rid = cmd.request_id
        if now > cmd.expires_ms:
            raise CommandError("expired", "command expired", rid)
        if now - cmd.issued_ms > self.max_age_ms or cmd.issued_ms - now > 60_000:
            raise CommandError("stale", "command issued too long ago (or in the future)", rid)
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if now - v <= self.max_age_ms + 60_000}
            if cmd.request_id in self._seen:
                raise CommandError("replay", "request id already used", rid)
            self._seen[cmd.request_id] = cmd.issued_ms
            try:
                self.seen_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.seen_file, json.dumps(self._seen).encode())
            except OSError as exc:
                # Refused, not run: after a restart an unsaved id could be run again by whoever
                # replays the message (found by a review). Kept in memory, so not here either.
                raise CommandError("not_saved", "the command's id could not be saved against replays "
                                                f"({exc.strerror or exc}): not run", rid) from None
        return cmd

    @staticmethod
    def _verify_body(b: dict[str, Any], admin: str | None) -> VerifyCommand:
        if b.get("type") == "enroll":
            # Enrollment decides whom the kiosk approves: it needs an operator's login at the
            # kiosk (kiosk.staff), audited; a central signature is not an operator.
            raise CommandError("not_remote", "enrollment cannot be requested by the central server: an "
                                             "operator enrolls at the kiosk's staff view")
        version = b.get("v")
        if version not in (1, 2) or isinstance(version, bool) or b.get("type") != "verify":
            raise ValueError("unknown command version or type")
        profile = b.get("profile")
        if (version == 2) != (profile is not None):
            raise ValueError("a profile comes with command version 2, and version 2 with a profile")
        if profile is not None and not (isinstance(profile, str) and PROFILE_NAME.fullmatch(profile)):
            raise ValueError(f"profile {str(profile)[:40]!r} is not a profile name (1-32 lower-case letters, "
                             "digits, '-' or '_')")
        return VerifyCommand(str(b["request_id"]), validate_customer(str(b["customer"])),
                             int(b["issued_ms"]), int(b["expires_ms"]), profile, admin)

    @staticmethod
    def _calibration_body(b: dict[str, Any], admin: str | None) -> CalibrationCommand:
        version = b.get("v")
        if version != 1 or isinstance(version, bool) or b.get("type") != "calibration":
            raise ValueError("unknown command version or type")
        action = b.get("action")
        if action not in CALIBRATION_ACTIONS:
            raise CommandError("unknown_action", f"calibration action {str(action)[:40]!r} is not one of "
                                                 f"{', '.join(CALIBRATION_ACTIONS)}")
        return CalibrationCommand(str(b["request_id"]), str(action), int(b["issued_ms"]), int(b["expires_ms"]), admin)


def load_central_sign_pub(path: Path) -> Ed25519PublicKey:
    from kiosk.keys import load_public_raw

    return Ed25519PublicKey.from_public_bytes(load_public_raw(path))


__all__ = ["CALIBRATION_ACTIONS", "CalibrationCommand", "CommandError", "CommandVerifier", "VerifyCommand",
           "calibration_topic", "make_calibration_command", "make_verify_command", "verify_topic",
           "load_central_sign_pub", "os"]
