"""What a decision says of itself: its rate, its references and its rhythm check agree with it.
Each found by a review (2026-11-30) of the decision path."""

from __future__ import annotations

import dataclasses

import numpy as np

from kiosk.config import UiConfig
from kiosk.flows.verify import decision_view
from kiosk.profiles import Profile, Profiles
from kiosk.screen_events import DecisionShown
from models.policy import APPROVED, SUSPICIOUS, AspectCheck, DecisionPolicy, Verdict


def test_a_copy_is_never_shown_or_recorded_at_a_high_match_rate() -> None:
    """A replayed reference is SUSPICIOUS; it was shown as "SUSPICIOUS, 100 %"."""
    policy = DecisionPolicy(1.28)
    copy = policy.decide(0.2, (), too_similar=True)
    assert copy.decision == SUSPICIOUS and copy.match_rate <= 0.01
    assert policy.decide(0.2, (), too_similar=False).match_rate > 0.9


def test_the_rhythm_check_runs_the_right_way_under_a_strict_threshold() -> None:
    """With a classic threshold of 1 or less, the rhythm similarity ran backwards: a good pace
    under 50 %, a failing one over."""
    durations = np.array([2.0, 2.1, 1.9, 2.05, 1.95])
    for threshold in (0.95, 1.0, 1.28, 2.0):
        policy = DecisionPolicy(threshold, rhythm_decides=True)
        good, slow = policy.rhythm(durations, 2.0), policy.rhythm(durations, 8.0)
        assert good.ok and good.similarity > 0.5, (threshold, good)
        assert not slow.ok and slow.similarity < 0.5, (threshold, slow)
        verdict = policy.decide(threshold * 0.6, (good,), too_similar=False)
        assert verdict.decision == APPROVED and verdict.match_rate > 0.5
    shipped = DecisionPolicy(1.28)                 # unchanged where it was right
    assert abs(shipped.rhythm(durations, 2.0).similarity - shipped.match_rate(1.0)) < 1e-12


def test_a_paper_verdict_redecided_under_a_profile_keeps_its_references() -> None:
    """A paper decision under a profile was recorded as a pen one (paper_references null)."""
    base = DecisionPolicy.on_probability(0.5, too_similar_ratio=0.2)
    verdict = dataclasses.replace(base.decide(-1.0, (), too_similar=False), references="pad-ink")
    stricter = dataclasses.replace(base, threshold=base.threshold - 1.0)
    assert stricter.redecide(verdict).references == "pad-ink"
    # A profile's rhythm rule is the pen's: a paper policy keeps the verifier's.
    profiles = Profiles((Profile("standard"), Profile("pace", rhythm_decides=True)), "standard", "classic")
    assert profiles.paper_policy("pace", base) is base


def test_a_rate_is_rounded_to_the_side_of_its_decision() -> None:
    """49.5-49.9 % showed as 50 % on a SUSPICIOUS check, the figure of an APPROVED one at the line."""
    ui = UiConfig()
    check = AspectCheck("shape", "Shape", 0.5, True)
    for decision, rate, shown in ((SUSPICIOUS, 0.4996, 49), (APPROVED, 0.4996, 50), (APPROVED, 0.7, 70),
                                  (SUSPICIOUS, 0.2, 20)):
        view = decision_view(Verdict(decision, rate, 1.0, (check,)), ui)
        assert isinstance(view, DecisionShown) and view.match_rate == shown, (decision, rate, view)
