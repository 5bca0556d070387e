"""MQTT topic names of the secure link: one place that builds and parses them.

Layout (version 1)::

    <prefix>/v1/<site>/<kiosk>/decision     kiosk -> central (encrypted, signed, via the outbox)
    <prefix>/v1/<site>/<kiosk>/log          kiosk -> central (encrypted, signed, via the outbox)
    <prefix>/v1/<site>/<kiosk>/audit        kiosk -> central (staff actions; encrypted, signed, via the outbox)
    <prefix>/v1/<site>/<kiosk>/evidence     kiosk -> central (a decision's questioned signature; same envelope)
    <prefix>/v1/<site>/<kiosk>/status       kiosk -> central (retained; last will "offline")
    <prefix>/v1/<site>/<kiosk>/receipt      central -> kiosk (what a collector stored: kiosk.receipts)
    <prefix>/v1/<site>/<kiosk>/model/...    admin -> one kiosk (command topics)
    <prefix>/v1/_group/<group>/model/...    admin -> a group of kiosks (command topics)

Identifiers (prefix, site, kiosk, group) are lower-case letters, digits and '-': no '/', '+', '#',
'.' or '_' can appear in them, so a kiosk id can never be mistaken for a wildcard, for the group
namespace (``_group``) or for a service identity (``collector.NAME``, ``admin.NAME``), which always
contain a dot. The broker's ACL relies on that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kiosk.errors import ApplianceError

TOPIC_VERSION = "v1"
GROUP_NAMESPACE = "_group"
DEFAULT_PREFIX = "sig"

#: Message kinds a kiosk publishes.
#: ``evidence`` has a topic of its own (not the decision topic with another record type): the
#: ACL grants raw biometric data by name, a payload's type always equals its topic's kind, and a
#: broker's queue for evidence can be sized apart from the small decisions'.
Kind = Literal["decision", "log", "status", "audit", "evidence"]
KINDS: tuple[Kind, ...] = ("decision", "log", "status", "audit", "evidence")
#: The one kind central publishes to a kiosk's own base (collectors write it, the kiosk reads it).
RECEIPT_KIND = "receipt"

#: Matched whole (``fullmatch``): with ``match`` and ``$``, "kiosk-1\n" passed, since ``$`` also matches
#: before a final newline.
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class TopicError(ApplianceError, ValueError):
    """A topic or identifier does not follow the link's naming rules."""


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid kiosk/site/group/prefix identifier, else raise TopicError."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopicError(
            f"invalid {what} {value!r}: use 1-63 lower-case letters, digits or '-', starting with a "
            "letter or digit"
        )
    return value


@dataclass(frozen=True)
class KioskTopics:
    """The topics of one kiosk."""

    prefix: str
    site: str
    kiosk_id: str
    group: str | None = None

    def __post_init__(self) -> None:
        validate_id(self.prefix, "prefix")
        validate_id(self.site, "site")
        validate_id(self.kiosk_id, "kiosk id")
        if self.group is not None:
            validate_id(self.group, "group")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{TOPIC_VERSION}/{self.site}/{self.kiosk_id}"

    def topic(self, kind: Kind) -> str:
        if kind not in KINDS:
            raise TopicError(f"unknown message kind {kind!r}")
        return f"{self.base}/{kind}"

    @property
    def decision(self) -> str:
        return self.topic("decision")

    @property
    def log(self) -> str:
        return self.topic("log")

    @property
    def status(self) -> str:
        return self.topic("status")

    @property
    def audit(self) -> str:
        return self.topic("audit")

    @property
    def evidence(self) -> str:
        return self.topic("evidence")

    @property
    def receipt(self) -> str:
        """Where collectors confirm what they stored of this kiosk's messages (``kiosk.receipts``)."""
        return f"{self.base}/{RECEIPT_KIND}"

    @property
    def model_commands(self) -> str:
        """Filter for this kiosk's own command topics."""
        return f"{self.base}/model/#"

    @property
    def group_model_commands(self) -> str | None:
        """Filter for this kiosk's group command topics, if it belongs to a group."""
        if self.group is None:
            return None
        return group_model_topic(self.prefix, self.group)


def group_model_topic(prefix: str, group: str) -> str:
    return f"{validate_id(prefix, 'prefix')}/{TOPIC_VERSION}/{GROUP_NAMESPACE}/{validate_id(group, 'group')}/model/#"


def collector_filters(prefix: str) -> list[str]:
    """The topic filters a central collector subscribes to (before ``$share/...`` is added)."""
    validate_id(prefix, "prefix")
    return [f"{prefix}/{TOPIC_VERSION}/+/+/{kind}" for kind in KINDS]


@dataclass(frozen=True)
class ParsedTopic:
    prefix: str
    site: str
    kiosk_id: str
    kind: Kind


def parse_topic(topic: str) -> ParsedTopic:
    """Parse a kiosk -> central topic; raise TopicError for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[1] != TOPIC_VERSION:
        raise TopicError(f"not a v1 kiosk topic: {topic!r}")
    prefix, _, site, kiosk_id, kind = parts
    validate_id(prefix, "prefix")
    validate_id(site, "site")
    validate_id(kiosk_id, "kiosk id")
    if kind not in KINDS:
        raise TopicError(f"unknown message kind in topic {topic!r}")
    return ParsedTopic(prefix, site, kiosk_id, kind)
