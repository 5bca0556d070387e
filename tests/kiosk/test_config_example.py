"""The configuration example (``kiosk.config.DEFAULT_CONFIG``, what ``sigkiosk run --print-config``
and the README show) says the same defaults as the dataclasses that parse it.

Each default is written twice, once for people (the commented TOML) and once for the code (the
dataclass field): this test is what keeps the two equal. Keys shown commented out (``# key = value``)
are compared too, unless the field's default is None (then the line is an example of a value).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kiosk import config as kc
from kiosk.calibration import CalibrationConfig
from kiosk.link import LinkConfig
from kiosk.profiles import DEFAULT_PROFILE, Profile
from kiosk.staff import StaffConfig
from kiosk.update_agent import UpdateConfig

TABLES: dict[str, type] = {
    "pen": kc.PenConfig, "device": kc.DeviceConfig, "verifier": kc.VerifierConfig, "policy": kc.PolicyConfig,
    "storage": kc.StorageConfig, "ui": kc.UiConfig, "staff": StaffConfig, "commands": kc.CommandsConfig,
    "link": LinkConfig, "paper": kc.PaperConfig, "update": UpdateConfig, "calibration": CalibrationConfig,
}
# Where the example sets a value on purpose, not the default: the installed kiosk's choices.
SET_BY_THE_EXAMPLE: dict[tuple[str, str], str] = {
    ("ui", "token_file"): "the installed screen secret, handed to Chromium by the sigkiosk-browser unit",
    ("ui", "token_group"): "the kiosk browser's group, which may read that secret",
    ("commands", "enabled"): "an installed kiosk takes signed requests from its central server",
    ("commands", "central_sign_pub"): "...checked with the central server's key",
    ("link", "group"): "the rollout group an installed kiosk is registered in",
    ("paper", "enabled"): "the commented [paper] table shows how to turn the camera on",
    ("calibration", "enabled"): "the commented [calibration] table shows how to turn it on",
}
_TABLE = re.compile(r"^#?\s*\[([\w.-]+)\]\s*(#.*)?$")
_KEY = re.compile(r"^#?\s*(\w+)\s*=\s*(.+)$")


def _example_keys() -> list[tuple[str, str, Any, bool]]:
    """(table, key, value, commented) for every ``key = value`` line of the example, active or not."""
    out: list[tuple[str, str, Any, bool]] = []
    table = ""
    for line in kc.DEFAULT_CONFIG.splitlines():
        m = _TABLE.match(line)
        if m:
            table = m.group(1)
            continue
        m = _KEY.match(line)
        if not m or not table:
            continue
        # Parse the value alone with its comment, as TOML: a comment after it is allowed there.
        value = tomllib.loads(f"v = {m.group(2)}")["v"]
        out.append((table, m.group(1), value, line.startswith("#")))
    return out


def _default(cls: type, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_the_example_is_what_the_daemon_parses() -> None:
    data = kc.default_config_data()
    assert set(data) == {"kiosk", "profiles", *TABLES} - {"paper", "calibration"}, \
        "a table of the example is not parsed, or a commented-out one is on"
    cfg = kc.parse_config(data, Path("/etc/sigkiosk"))
    assert cfg.kiosk_id == "kiosk-0001" and cfg.link is not None and cfg.update is not None


def test_every_key_of_the_example_is_a_field() -> None:
    keys = _example_keys()
    assert len(keys) > 60, "the example parser found too few keys"
    unknown = [(t, k) for t, k, _, _ in keys
               if t != "kiosk" and not t.startswith("profiles") and k not in {f.name for f in dataclasses.fields(TABLES[t])}]
    assert not unknown
    # [profiles] holds the default's name and one [profiles.NAME] table per profile.
    profile_keys = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    assert [k for t, k, _, _ in keys if t == "profiles"] == ["default"]
    assert {k for t, k, _, _ in keys if t.startswith("profiles.")} <= profile_keys


def test_the_example_profiles() -> None:
    """Standard follows [verifier] (and the site calibration); high-value is stricter on both
    the pen and paper scales, and decides on rhythm too."""
    profiles = kc.parse_config(kc.default_config_data(), Path("/etc/sigkiosk")).profiles
    assert profiles.default == DEFAULT_PROFILE and profiles.names() == ("standard", "high-value")
    standard, high = profiles.by_name("standard"), profiles.by_name("high-value")
    assert standard.threshold is None and standard.paper_threshold is None and standard.rhythm_decides is None
    # The shipped verifier is the match score: its threshold is a genuine probability, and the
    # high-value one is above the model's own operating point (stricter).
    from models.match_score import SHIPPED, ScoreModel

    config = kc.parse_config(kc.default_config_data(), Path("/etc/sigkiosk"))
    assert config.verifier.kind == kc.DEFAULT_KIND == "match-score"
    assert high.threshold is not None and ScoreModel.load(SHIPPED).threshold < high.threshold < 1.0
    assert high.rhythm_decides
    from models._assets import OFFLINE_FUSION_FILE, shipped_assets
    from models.fusion import load_offline_fusion
    from models.paper import FUSION_ENTRY

    shipped_paper = load_offline_fusion(shipped_assets() / OFFLINE_FUSION_FILE, FUSION_ENTRY).threshold
    assert high.paper_threshold is not None and high.paper_threshold > shipped_paper


@pytest.mark.parametrize(("table", "key", "value", "commented"),
                         [k for k in _example_keys() if k[0] != "kiosk" and not k[0].startswith("profiles")],
                         ids=lambda v: str(v))
def test_each_default_of_the_example_is_the_dataclass_default(table: str, key: str, value: Any,
                                                                commented: bool) -> None:
    default = _default(TABLES[table], key)
    if (table, key) in SET_BY_THE_EXAMPLE:
        assert value != default, f"[{table}] {key} is the default now: take it off SET_BY_THE_EXAMPLE"
        return
    if default is dataclasses.MISSING:
        return  # a required key: the example shows a value to replace (a host name, a key file)
    if default is None:
        # An optional key: the example, commented out, shows what a value looks like.
        assert commented, f"[{table}] {key} = {value!r} is active in the example but the default is None"
        return
    if isinstance(default, Path):
        assert Path(value) == default, f"[{table}] {key}: example {value!r}, dataclass {default!r}"
    elif isinstance(default, float):
        assert value == pytest.approx(default, rel=1e-9), f"[{table}] {key}: example {value!r}, dataclass {default!r}"
    else:
        assert value == default, f"[{table}] {key}: example {value!r}, dataclass {default!r}"


@pytest.mark.parametrize(("table", "key", "value", "message"), [
    # Found by a review: each was accepted, and each let every signature or PIN through, or
    # started a calibration that was switched off, or stopped the daemon after `run --check` said OK.
    ("policy", "max_inconsistency", float("nan"), "a finite number"),       # enrollment took anyone
    ("policy", "min_points", 12.5, "a whole number"),
    ("calibration", "enabled", "false", "true or false"),                  # a string read as yes
    ("calibration", "strength", float("nan"), "a finite number"),            # every genuine refused
    ("calibration", "min_customers", float("nan"), "a whole number"),
    ("staff", "max_failures", float("nan"), "a whole number"),               # no PIN lockout
    ("staff", "global_max_failures", float("inf"), "a whole number"),
    ("commands", "max_age_s", float("inf"), "a finite number"),
    ("verifier", "rhythm_tolerance", float("nan"), "a finite number"),
    ("verifier", "rhythm_decides", "yes", "true or false"),
    ("ui", "enabled", 1, "true or false"),
    ("link", "health_interval_s", float("nan"), "a finite number"),
    ("link", "allow_raw_evidence", "no", "true or false"),
    ("update", "golden_timeout_s", float("inf"), "a finite number"),
    ("update", "golden_timeout_s", 0.0, r"2-3600 s"),       # every model failed its check, and rolled back
    ("storage", "seen_signatures", 16.5, "a whole number"),
    ("storage", "seen_signatures", 33, r"0\.\.32"),
    ("storage", "seen_signatures", -1, r"0\.\.32"),
])
def test_a_setting_of_the_wrong_kind_is_refused_by_name(table: str, key: str, value: Any, message: str) -> None:
    data = kc.default_config_data()
    data.setdefault(table, {})[key] = value
    if table == "calibration":
        data["calibration"] = {"enabled": True, key: value}
    with pytest.raises(kc.ConfigError, match=rf"\[{table}\] {key} must be {message}"):
        kc.parse_config(data, Path("/etc/sigkiosk"))


def test_a_classic_threshold_written_as_a_percentage_is_refused() -> None:
    """Found by a review: threshold = 80 (meant as an 80 % match) was inside (0, 100) and approved
    everyone: a genuine signature scores about 1 on the classic distance, the shipped line 1.28."""
    for value in (80.0, 0.1, 5.5):
        data = kc.default_config_data()
        data["verifier"]["threshold"] = value
        with pytest.raises(kc.ConfigError, match="a percentage"):
            kc.parse_config(data, Path("/etc/sigkiosk"))
    data = kc.default_config_data()
    data["verifier"] = {**data["verifier"], "kind": "classic"}
    data["profiles"] = {"default": "standard", "standard": {}, "strict": {"threshold": 80.0}}
    with pytest.raises(kc.ConfigError, match="a percentage"):
        kc.parse_config(data, Path("/etc/sigkiosk"))
