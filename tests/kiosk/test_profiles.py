"""Application profiles (``kiosk.profiles``): the ``[profiles]`` table refuses what it cannot mean,
a request's profile is resolved or refused by name, and each profile's policy composes with the
site calibration as documented (a profile without a threshold follows it; one with a threshold
stays; none is looser than the default). Policies are checked on the real classic verifier."""

from __future__ import annotations

import logging
import math
import tomllib
from pathlib import Path

import pytest
from daemon_helpers import as_replayed, writers

from kiosk.config import ConfigError, default_config_data, parse_config
from kiosk.profiles import Profile, Profiles, UnknownProfile, decide_under
from models.calibration import SiteThreshold
from models.pen import make_verifier


def _config(profiles_toml: str, verifier: str = "") -> Profiles:
    data = default_config_data()
    data.pop("profiles")
    data.update(tomllib.loads(profiles_toml))
    # The classic verifier unless the case names another (its distance scale is the one the
    # cases below write; the shipped default decides on a probability like fused).
    data["verifier"] = {**data["verifier"], "kind": "classic", **tomllib.loads(verifier)}
    return parse_config(data, Path("/etc/sigkiosk")).profiles


TWO = """
[profiles]
default = "standard"
[profiles.standard]
[profiles.high-value]
threshold = 0.7
paper_threshold = 0.8
"""


def test_without_a_profiles_table_there_is_one_standard_profile_following_the_verifier() -> None:
    data = default_config_data()
    data.pop("profiles")
    profiles = parse_config(data, Path("/etc/sigkiosk")).profiles
    assert profiles.names() == ("standard",) and profiles.default == "standard"
    assert profiles.resolve(None) == Profile("standard")


@pytest.mark.parametrize(("toml", "verifier", "message"), [
    ("[profiles]\ndefault = \"gold\"\n[profiles.standard]\n", "", "default = 'gold' is not one of the profiles"),
    ("[profiles]\ndefault = 3\n", "", "default must be a profile's name"),
    ("[profiles.standard]\ntreshold = 1.0\n", "", "unknown key(s): treshold"),
    ("[profiles]\nstandard = 1.0\n", "", "neither default nor a [profiles.NAME] table"),
    ("[profiles.High]\n[profiles.standard]\n", "", "profile name 'High'"),
    ("[profiles.\"a b\"]\n[profiles.standard]\n", "", "profile name 'a b'"),
    ("[profiles.\"x';DROP\"]\n[profiles.standard]\n", "", "profile name"),
    (f"[profiles.{'p' * 33}]\n[profiles.standard]\n", "", "profile name"),
    ("[profiles.standard]\nthreshold = 0.0\n", "", "threshold is the classic distance"),
    ("[profiles.standard]\nthreshold = 150.0\n", "", "threshold is the classic distance"),
    ("[profiles.standard]\nthreshold = nan\n", "", "threshold must be a number"),
    ("[profiles.standard]\nthreshold = \"1.0\"\n", "", "threshold must be a number"),
    ("[profiles.standard]\nthreshold = true\n", "", "threshold must be a number"),
    ("[profiles.standard]\npaper_threshold = 1.5\n", "", "paper_threshold is a probability in (0, 1)"),
    ("[profiles.standard]\npaper_threshold = 0.0\n", "", "paper_threshold is a probability in (0, 1)"),
    ("[profiles.standard]\nrhythm_decides = \"yes\"\n", "", "rhythm_decides must be true or false"),
    ("[profiles.standard]\nlabel = \"\\u001b[2J\"\n", "", "label: at most 40 printable characters"),
    ("[profiles.standard]\nallow_looser = true\n", "", "allow_looser means nothing on the default"),
    # fused decides on a probability: a distance there is a mistake, said as one.
    ("[profiles.standard]\nthreshold = 1.2\n", 'kind = "fused"', "a probability in (0, 1) with [verifier] kind = \"fused\""),
    # A high-value profile looser than the standard one: refused unless it says so.
    ("[profiles.standard]\n[profiles.high-value]\nthreshold = 1.5\n", "", "accepts more than the default profile"),
    ("[profiles.standard]\nthreshold = 1.0\n[profiles.high-value]\nthreshold = 1.1\n", "", "accepts more"),
    ("[profiles.standard]\npaper_threshold = 0.8\n[profiles.high-value]\npaper_threshold = 0.6\n", "",
     "paper_threshold = 0.6 accepts more"),
    ("[profiles.standard]\nthreshold = 0.9\n[profiles.high-value]\nthreshold = 0.85\n", 'kind = "fused"',
     "accepts more"),
    # Dropping the rhythm rule the default profile (or the verifier under it) applies is looser too.
    ("[profiles.standard]\nrhythm_decides = true\n[profiles.low]\nrhythm_decides = false\n", "",
     "[profiles.low] rhythm_decides = false accepts more"),
    ("[profiles.standard]\n[profiles.low]\nrhythm_decides = false\n", "rhythm_decides = true",
     "[profiles.low] rhythm_decides = false accepts more"),
])
def test_profiles_table_refusals(toml: str, verifier: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _config(toml, verifier)
    assert message in str(exc.value) and "[profiles" in str(exc.value)


def test_a_looser_profile_is_allowed_when_it_says_so_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    profiles = _config("[profiles.standard]\n[profiles.low-value]\nthreshold = 1.5\nallow_looser = true\n")
    assert profiles.by_name("low-value").threshold == 1.5
    assert any(getattr(r, "event", None) == "profile_looser" for r in caplog.records)


@pytest.mark.parametrize("name", ["gold", "HIGH-VALUE", "high-value ", "x'; DROP TABLE decisions;--", "p" * 33,
                                  "../etc", "", "std\x1b[2J", "high\x00value"])
def test_an_unknown_or_hostile_profile_name_is_refused_by_name(name: str) -> None:
    profiles = _config(TWO)
    with pytest.raises(UnknownProfile) as exc:
        profiles.resolve(name)
    assert "this kiosk has: standard, high-value" in str(exc.value)
    assert "\x1b" not in str(exc.value) and "\x00" not in str(exc.value) and len(str(exc.value)) < 200


def _verifier_and_verdict():  # type: ignore[no-untyped-def]
    genuine, _ = writers()["001"]
    v = make_verifier("classic", 1.3)
    refs = v.enroll(as_replayed(genuine[:5]))
    return v, refs, as_replayed([genuine[6]])[0]


def test_one_score_two_profiles_two_decisions() -> None:
    v, refs, query = _verifier_and_verdict()
    profiles = _config(TWO)
    verdict = v.verify(refs, query)
    assert 0.7 < verdict.distance < 1.3, verdict.distance   # between the two thresholds
    standard = profiles.pen_policy("standard", v.policy)
    assert standard is v.policy   # the default profile follows the verifier: nothing re-decided
    same, versions = decide_under(standard, v.policy, verdict, v.model_versions())
    assert same is verdict and same.decision == "APPROVED" and "profile_threshold" not in versions
    high = profiles.pen_policy("high-value", v.policy)
    assert high.threshold == 0.7 and high.too_similar_ratio == v.policy.too_similar_ratio
    strict, versions = decide_under(high, v.policy, verdict, v.model_versions())
    assert strict.decision == "SUSPICIOUS" and strict.match_rate < 0.5 < verdict.match_rate
    assert strict.aspects == verdict.aspects and strict.reasons == ["overall"]
    assert versions["profile_threshold"] == "0.7" and versions["classic"] == v.model_versions()["classic"]


def test_profiles_compose_with_the_site_calibration() -> None:
    """The calibration moves the default (standard) profile, which leaves its threshold to the
    verifier; high-value's written threshold stays, except that it is never looser than standard."""
    v, refs, query = _verifier_and_verdict()
    profiles = _config(TWO)
    site = SiteThreshold(v)
    site.set_threshold(1.4)   # the calibration moved the site's threshold up
    assert profiles.pen_policy("standard", site.policy).threshold == 1.4
    assert profiles.pen_policy("high-value", site.policy).threshold == 0.7
    site.set_threshold(0.6)   # ...or down, below high-value's: high-value follows it down
    assert profiles.pen_policy("standard", site.policy).threshold == 0.6
    assert profiles.pen_policy("high-value", site.policy).threshold == 0.6
    # A written-down default threshold is the bank's: the calibration does not move it.
    fixed = _config("[profiles.standard]\nthreshold = 1.1\n[profiles.high-value]\nthreshold = 0.9\n")
    assert fixed.pen_policy("standard", site.policy).threshold == 1.1
    # allow_looser: the bank said so, no clamp.
    low = _config("[profiles.standard]\n[profiles.low]\nthreshold = 1.5\nallow_looser = true\n")
    assert low.pen_policy("low", site.policy).threshold == 1.5
    # The rhythm rule per profile: re-decided from the verifier's own rhythm aspect.
    strict = _config("[profiles.standard]\n[profiles.high-value]\nrhythm_decides = true\n")
    policy = strict.pen_policy("high-value", v.policy)
    assert policy.rhythm_decides and policy.threshold == v.policy.threshold


def test_fused_profiles_are_probabilities() -> None:
    profiles = _config("[profiles.standard]\n[profiles.high-value]\nthreshold = 0.9\n", 'kind = "fused"')
    from models.policy import DecisionPolicy

    base = DecisionPolicy.on_probability(0.5, too_similar_ratio=0.2)
    high = profiles.pen_policy("high-value", base)
    assert high.threshold == pytest.approx(-math.log(0.9 / 0.1)) and high.rate_scale == 1.0
    # A probability of 0.9 is 0.5 match rate exactly at the profile's line.
    assert high.match_rate(high.threshold) == pytest.approx(0.5)
    paper = profiles.paper_policy("high-value", base)
    assert paper is base   # no paper_threshold: the paper model's own


def test_rhythm_decides_is_never_looser_than_the_default_profile(caplog: pytest.LogCaptureFixture) -> None:
    """A profile that leaves rhythm_decides out takes the default profile's, not the verifier's
    own; dropping it needs allow_looser (then logged)."""
    v, _, _ = _verifier_and_verdict()
    assert not v.policy.rhythm_decides   # the verifier's own rule is off...
    profiles = _config("[profiles.standard]\nrhythm_decides = true\n[profiles.high-value]\nthreshold = 0.8\n")
    assert profiles.pen_policy("standard", v.policy).rhythm_decides   # ...the default profile turns it on
    high = profiles.pen_policy("high-value", v.policy)
    assert high.rhythm_decides and high.threshold == 0.8   # and high-value inherits it
    # rhythm_decides = false where the verifier's own is on (the default profile leaving it out).
    on = make_verifier("classic", 1.3, rhythm_decides=True)
    assert _config("[profiles.standard]\n[profiles.high-value]\nthreshold = 0.8\n").pen_policy(
        "high-value", on.policy).rhythm_decides
    caplog.set_level(logging.WARNING)
    low = _config("[profiles.standard]\nrhythm_decides = true\n[profiles.low]\nrhythm_decides = false\n"
                  "allow_looser = true\n")
    assert not low.pen_policy("low", v.policy).rhythm_decides   # the bank said so
    assert any(getattr(r, "event", None) == "profile_looser" and "rhythm_decides" in r.getMessage()
               for r in caplog.records)
    # Built without the config's check (Profiles(...) directly): the policy still never drops the rule.
    direct = Profiles((Profile("standard", rhythm_decides=True), Profile("low", rhythm_decides=False)))
    assert direct.pen_policy("low", v.policy).rhythm_decides
