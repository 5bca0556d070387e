"""Application profiles: named decision thresholds, chosen per request (``[profiles]`` of the config).

A bank accepts a signature on a small withdrawal more readily than on a large transfer. A
profile names one acceptance level: its pen ``threshold``, its ``paper_threshold`` and optionally
``rhythm_decides``. The staff view and the central command (``sigkiosk admin verify --profile``)
choose one per request; the customer's own request gets ``[profiles] default``. Every decision
records the profile it was decided under (``DecisionRecord.profile``).

Scales (each the one the verifier decides on, so a profile reads like the setting it overrides):

* ``threshold``: with ``[verifier] kind = "classic"`` the user-normalised distance, like
  ``[verifier] threshold`` (accepted at most this: lower is stricter); with ``fused`` or
  ``match-score`` the calibrated probability of a genuine signature (accepted at least this:
  higher is stricter).
* ``paper_threshold``: the paper verifier's calibrated probability (higher is stricter).

A threshold left out follows the verifier's own: the shipped one, or the site's as the site
self-calibration (``kiosk.calibration``) moves it. So the calibration moves the profiles that
leave their threshold to the verifier - normally the default ("standard") profile - and never a
threshold the bank wrote down: the calibration trades FAR for FRR to suit the site's writers, and
a profile with its own threshold is the bank's fixed line for that risk. One rule joins the two:
a profile is never looser than the default profile, whatever the calibration did (its effective
threshold is the stricter of its own and the default's), unless the bank says so with
``allow_looser = true``. A profile written looser than the default without it is a config error.
The same holds for ``rhythm_decides``: a profile that leaves it out takes the default profile's
(which itself follows ``[verifier] rhythm_decides``), and ``rhythm_decides = false`` where the
default's is true is looser (a pace far off no longer refuses on its own).

Each request's policy is the verifier's own ``DecisionPolicy`` with the profile's threshold (and
rhythm rule) put in (``DecisionPolicy.redecide``): the copy check, the aspects and the match-rate
mapping stay the verifier's. A profile other than the verifier's own threshold adds
``profile_threshold`` to the decision's model versions, so every record says which line decided it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiosk.errors import RequestRefused
from kiosk.records import PROFILE_NAME
from models.policy import DecisionPolicy, Verdict, probability_score

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "standard"
#: The pen verifiers that decide on a calibrated probability (their threshold is one).
PROBABILITY_KINDS = frozenset({"fused", "match-score"})
#: At most this many profiles (each is a line in the staff view's picker).
MAX_PROFILES = 16


class UnknownProfile(RequestRefused):
    """A request named a profile this kiosk does not have (or not a profile name at all)."""


@dataclass(frozen=True)
class Profile:
    """One ``[profiles.NAME]`` table (see the module docstring for the scales)."""

    name: str
    threshold: float | None = None
    paper_threshold: float | None = None
    rhythm_decides: bool | None = None
    allow_looser: bool = False
    label: str = ""   # for the staff view's picker (default: the name)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not PROFILE_NAME.fullmatch(self.name):
            raise ValueError(f"profile name {self.name!r:.40}: 1-32 lower-case letters, digits, '-' or '_', "
                             "starting with a letter or digit")
        for key in ("threshold", "paper_threshold"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"[profiles.{self.name}] {key} must be a number, got {v!r:.40}")
        if self.paper_threshold is not None and not 0.0 < self.paper_threshold < 1.0:
            raise ValueError(f"[profiles.{self.name}] paper_threshold is a probability in (0, 1), "
                             f"got {self.paper_threshold}")
        if self.rhythm_decides is not None and not isinstance(self.rhythm_decides, bool):
            raise ValueError(f"[profiles.{self.name}] rhythm_decides must be true or false")
        if not isinstance(self.allow_looser, bool):
            raise ValueError(f"[profiles.{self.name}] allow_looser must be true or false")
        if not isinstance(self.label, str) or len(self.label) > 40 or any(c < " " or "\x7f" <= c <= "\x9f"
                                                                          for c in self.label):
            raise ValueError(f"[profiles.{self.name}] label: at most 40 printable characters")


#: Where a classic distance threshold may lie ([verifier] threshold, a classic profile's): a genuine
#: signature scores about 1, the shipped line is 1.28. (0, 100) let "threshold = 80", meant as a
#: percentage, approve everyone (found by a review).
CLASSIC_THRESHOLD_RANGE = (0.3, 5.0)


def pen_score_threshold(value: float, kind: str) -> float:
    """A profile's pen ``threshold`` on the policy's score scale (lower is stricter)."""
    if kind in PROBABILITY_KINDS:
        return probability_score(value)
    low, high = CLASSIC_THRESHOLD_RANGE
    if not low <= value <= high:
        raise ValueError(f"threshold must be a classic distance in [{low:g}, {high:g}] (a genuine signature is "
                         f"about 1), got {value}: a percentage?")
    return float(value)


@dataclass(frozen=True)
class Profiles:
    """The kiosk's profiles and the default one; ``kind``: the pen verifier's ``[verifier] kind``."""

    profiles: tuple[Profile, ...] = (Profile(DEFAULT_PROFILE),)
    default: str = DEFAULT_PROFILE
    kind: str = "classic"

    def __post_init__(self) -> None:
        names = [p.name for p in self.profiles]
        if not names:
            raise ValueError("[profiles] names no profile")
        if len(names) > MAX_PROFILES:
            raise ValueError(f"[profiles] at most {MAX_PROFILES} profiles, got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError("[profiles] names a profile twice")
        if self.default not in names:
            raise ValueError(f"[profiles] default = {self.default!r:.40} is not one of the profiles "
                             f"({', '.join(names)})")
        for p in self.profiles:
            if p.threshold is not None:
                try:
                    pen_score_threshold(p.threshold, self.kind)
                except ValueError as exc:
                    scale = ("a probability in (0, 1) with [verifier] kind = \"" + self.kind + "\""
                             if self.kind in PROBABILITY_KINDS else f"the classic distance, in {list(CLASSIC_THRESHOLD_RANGE)}")
                    raise ValueError(f"[profiles.{p.name}] threshold is {scale}: {exc}") from None
        if self.by_name(self.default).allow_looser:
            raise ValueError(f"[profiles.{self.default}] allow_looser means nothing on the default profile")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], kind: str, base_threshold: float | None = None,
                     base_rhythm: bool | None = None) -> Profiles:
        """The ``[profiles]`` table: ``default = NAME`` and one sub-table per profile.
        ``base_threshold``: the pen threshold the verifier runs without a profile when the config
        knows it (classic: ``[verifier] threshold``), and ``base_rhythm`` its ``rhythm_decides``,
        for the looser-than-default check."""
        data = dict(data)
        default = data.pop("default", DEFAULT_PROFILE)
        if not isinstance(default, str):
            raise ValueError(f"[profiles] default must be a profile's name, got {default!r:.40}")
        profiles = []
        for name, table in data.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"[profiles] {name!r:.40} is neither default nor a [profiles.NAME] table")
            known = {f.name for f in dataclasses.fields(Profile)} - {"name"}
            unknown = sorted(set(table) - known)
            if unknown:
                raise ValueError(f"[profiles.{name}] unknown key(s): {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(known))})")
            profiles.append(Profile(name, **table))
        out = cls(tuple(profiles) or (Profile(DEFAULT_PROFILE),), default, kind)
        out.check_order(base_threshold, base_rhythm=base_rhythm)
        return out

    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def by_name(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, name: str | None) -> Profile:
        """The profile a request asked for (None: the default); refused clearly when unknown."""
        if name is None:
            return self.by_name(self.default)
        if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
            raise UnknownProfile(f"{str(name)[:40]!r} is not a profile name (this kiosk has: "
                                 f"{', '.join(self.names())})")
        try:
            return self.by_name(name)
        except KeyError:
            raise UnknownProfile(f"unknown profile {name!r} (this kiosk has: {', '.join(self.names())})") from None

    def check_order(self, base_threshold: float | None, paper_base: float | None = None,
                    base_rhythm: bool | None = None) -> None:
        """A profile written looser than the default is refused unless it says ``allow_looser``
        (then logged). Compared where both thresholds are known: the config's own, ``base_threshold``
        (pen, ``[verifier] threshold``) and ``paper_base`` (the paper model's) for one left out;
        likewise ``rhythm_decides`` against the default's own or ``base_rhythm`` (``[verifier]``)."""
        d = self.by_name(self.default)
        default_rhythm = d.rhythm_decides if d.rhythm_decides is not None else base_rhythm
        for p in self.profiles:
            if p.name == d.name:
                continue
            if p.rhythm_decides is False and default_rhythm:
                msg = (f"[profiles.{p.name}] rhythm_decides = false accepts more than the default profile "
                       f"{d.name!r} (rhythm_decides = true)")
                if not p.allow_looser:
                    raise ValueError(msg + ": a profile looser than the default needs allow_looser = true")
                log.warning("%s (allow_looser = true)", msg, extra={"event": "profile_looser"})
            for what, mine, theirs, to_score in (
                    ("threshold", p.threshold, d.threshold if d.threshold is not None else base_threshold,
                     lambda v: pen_score_threshold(v, self.kind)),
                    ("paper_threshold", p.paper_threshold,
                     d.paper_threshold if d.paper_threshold is not None else paper_base, probability_score)):
                if mine is None or theirs is None or to_score(mine) <= to_score(theirs):
                    continue
                msg = (f"[profiles.{p.name}] {what} = {mine:g} accepts more than the default profile "
                       f"{d.name!r} ({theirs:g})")
                if not p.allow_looser:
                    raise ValueError(msg + ": a profile looser than the default needs allow_looser = true")
                log.warning("%s (allow_looser = true)", msg, extra={"event": "profile_looser"})

    # -- the policy of one request -----------------------------------------------------------
    def pen_policy(self, name: str | None, base: DecisionPolicy) -> DecisionPolicy:
        """The pen verifier's policy ``base`` (with the site calibration's threshold, if any) under
        the profile ``name`` (see the module docstring)."""
        return self._policy(name, base, "threshold", lambda v: pen_score_threshold(v, self.kind))

    def paper_policy(self, name: str | None, base: DecisionPolicy) -> DecisionPolicy:
        # A paper verdict has no rhythm (no pen): the profile's rhythm rule leaves it alone.
        policy = self._policy(name, base, "paper_threshold", probability_score)
        return base if policy.threshold == base.threshold else dataclasses.replace(policy, rhythm_decides=base.rhythm_decides)

    def _policy(self, name: str | None, base: DecisionPolicy, key: str, to_score: Any) -> DecisionPolicy:
        p = self.resolve(name)
        d = self.by_name(self.default)
        default_value = getattr(d, key)
        default_thr = base.threshold if default_value is None else to_score(default_value)
        value = getattr(p, key)
        thr = default_thr if value is None else to_score(value)
        if p.name != d.name and not p.allow_looser:
            thr = min(thr, default_thr)   # never looser than the default, whatever the calibration did
        default_rhythm = base.rhythm_decides if d.rhythm_decides is None else d.rhythm_decides
        rhythm = default_rhythm if p.rhythm_decides is None else p.rhythm_decides
        if p.name != d.name and not p.allow_looser:
            rhythm = rhythm or default_rhythm   # the rhythm rule is never dropped below the default's
        if thr == base.threshold and rhythm == base.rhythm_decides:
            return base
        return dataclasses.replace(base, threshold=thr, rhythm_decides=rhythm)

    def staff_view(self) -> list[dict[str, object]]:
        """What the staff view's picker lists."""
        return [{"name": p.name, "label": p.label or p.name, "default": p.name == self.default}
                for p in self.profiles]


def decide_under(policy: DecisionPolicy, base: DecisionPolicy, verdict: Verdict,
                 versions: dict[str, str]) -> tuple[Verdict, dict[str, str]]:
    """The verifier's ``verdict`` (decided under ``base``) under the profile's ``policy``, and the
    model versions the record carries (``profile_threshold`` when the profile moved the line)."""
    if policy is base:
        return verdict, versions
    out = dict(versions)
    if policy.threshold != base.threshold:
        out["profile_threshold"] = f"{policy.threshold:.4g}"
    if policy.rhythm_decides != base.rhythm_decides:
        out["profile_rhythm_decides"] = "on" if policy.rhythm_decides else "off"
    return policy.redecide(verdict), out


__all__ = ["DEFAULT_PROFILE", "PROBABILITY_KINDS", "Profile", "Profiles", "UnknownProfile", "decide_under",
           "pen_score_threshold"]
