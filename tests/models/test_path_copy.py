"""The copy check on the written path (``models.path_copy``): a customer's reference played to the
kiosk again, re-timed or resampled, is a copy; a genuine new signature is not.

Before it, the only copy check compared the verifier's distance, and a reference replayed 1 %
slower passed it in 269 of 312 trials on SUSIG-Visual (APPROVED as the customer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

from kiosk.config import VerifierConfig
from models.device_variants import jittered_positions, jittered_time, resampled
from models.path_copy import (
    MIN_PATH_REFERENCES,
    copy_print,
    nearest,
    nearest_pair,
    nearest_ratio,
    path_distance,
    print_pairs,
    written_path,
)
from models.pen import RETRACES_A_REFERENCE, ClassicVerifier
from models.policy import DecisionPolicy
from models.trajectory import Trajectory
from tools import copy_check
from tools.datasets import load_online
from tools.operating_point import kiosk_verifier


def _curve(n: int, wobble: float = 0.0) -> np.ndarray:
    s = np.linspace(0.0, 1.0, n)
    return np.stack([3.0 * s + 0.3 * np.sin(9 * s), np.sin(6 * s) + wobble * np.sin(23 * s)], axis=1)


def test_two_samplings_of_one_line_are_no_distance_apart_and_another_line_is() -> None:
    a, b = written_path(_curve(150)), written_path(_curve(487))
    other = written_path(_curve(150, wobble=0.05))
    assert path_distance(a, b) < 2e-3
    assert path_distance(a, other) > 10 * path_distance(a, b)
    assert path_distance(a, other) == pytest.approx(path_distance(other, a))   # symmetric
    assert nearest(b, [other, a]) == path_distance(b, a)
    assert nearest_pair([a]) == math.inf and nearest_pair([a, b, other]) == path_distance(a, b)
    # Centred and scaled on its own points: where and how large it was drawn, and how densely in
    # time, do not move it.
    moved = _curve(300) * 2.5 + np.array([7.0, -3.0])
    assert path_distance(written_path(moved), a) < 2e-3
    # A signature without extent is one point, repeated.
    still = written_path(np.ones((5, 2)))
    assert still.shape == (256, 2) and np.all(still == 0.0)


def test_the_ratio_takes_the_closer_kind_and_an_exact_retrace_is_zero() -> None:
    refs = [copy_print(_curve(150, wobble=w), _curve(150, wobble=w)) for w in (0.0, 0.1, 0.2, 0.3)]
    pairs = print_pairs(refs)
    assert pairs.shape == (2,) and np.all(pairs > 0)
    assert nearest_ratio(refs[2], refs, pairs) == 0.0
    # Close on the first kind only: the closer kind decides.
    near = copy_print(_curve(333, wobble=0.1), _curve(150, wobble=0.6))
    assert nearest_ratio(near, refs, pairs) < 0.05
    # Past the bound (a share): abandoned, inf.
    far = copy_print(_curve(150, wobble=0.9), _curve(150, wobble=0.9))
    assert nearest_ratio(far, refs, pairs, bound=0.3) == math.inf
    assert nearest_ratio(far, refs, pairs) > 0.3


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.zeros((4, 3)), np.array([[0.0, 1.0], [np.nan, 2.0]])])
def test_a_path_of_nothing_or_of_nonsense_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        written_path(bad)


def test_the_policy_rule_and_a_broken_measure() -> None:
    p = DecisionPolicy(1.28)
    assert p.is_path_copy(0.29) and not p.is_path_copy(0.31) and p.is_path_copy(0.0)
    assert not p.is_path_copy(float("nan")) and not p.is_path_copy(math.inf)   # no evidence: the score decides
    # Against a signature given before, a stricter line: one visit's signatures are close.
    assert p.is_path_copy(0.19, earlier=True) and not p.is_path_copy(0.25, earlier=True)


@pytest.fixture(scope="module")
def writers() -> list[tuple[list[Trajectory], list[Trajectory]]]:
    ds = load_online(shared_data("online/susig/VisualSubCorpus"), "susig-visual")
    out = []
    for w in sorted(ds.writers)[:4]:
        g = [s.trajectory for s in ds.genuine(w)]
        out.append((g[:5], g[5:]))
    return out


def test_a_reference_replayed_at_another_pace_or_rate_is_suspicious_a_new_signature_is_not(
        writers: list[tuple[list[Trajectory], list[Trajectory]]]) -> None:
    """The kiosk's default verifier, built by the daemon's factory."""
    verifier = kiosk_verifier(VerifierConfig())
    rng = np.random.default_rng(5)
    for refs, genuine in writers:
        reference_set = verifier.enroll(refs)
        for ref in refs[:2]:
            height = float(np.std(ref.y[ref.pen_down]))
            for replay in (jittered_time(ref, 0.01 * ref.t), resampled(ref, 200.0),
                           jittered_positions(jittered_time(ref, -0.03 * ref.t),
                                              rng.normal(0.0, 0.005 * height, (len(ref.t), 2)))):
                v = verifier.verify(reference_set, replay)
                assert v.decision == "SUSPICIOUS" and v.too_similar and "too_similar" in v.reasons
                assert v.match_rate <= 0.01
        for q in genuine:
            v = verifier.verify(reference_set, q)
            assert not v.too_similar and RETRACES_A_REFERENCE not in v.explanations


def test_the_record_says_why_when_only_the_path_saw_the_copy(
        writers: list[tuple[list[Trajectory], list[Trajectory]]]) -> None:
    refs, _ = writers[0]
    classic = ClassicVerifier()
    reference_set = classic.enroll(refs)
    slower = jittered_time(refs[0], 0.01 * refs[0].t)
    v = classic.verify(reference_set, slower)
    assert v.too_similar and RETRACES_A_REFERENCE in v.explanations
    # Without the path (ratio 0: nothing is under it) the same replay passes the distance's
    # check: what the kiosk did before.
    blind = ClassicVerifier(path_copy_ratio=0.0)
    assert not blind.verify(blind.enroll(refs), slower).too_similar


def test_the_measuring_tool_counts_what_the_verifier_decides(
        writers: list[tuple[list[Trajectory], list[Trajectory]]], tmp_path: Path) -> None:
    refs, genuine = writers[1]
    report = copy_check.measure_set(iter([("0001", refs, genuine[:3], [])]), kiosk_verifier(VerifierConfig()))
    d = report.as_dict()
    assert d["genuine"]["train+validate"]["n"] + d["genuine"]["test"]["n"] == 3
    assert d["genuine"]["train+validate"]["either"] + d["genuine"]["test"]["either"] == 0
    replays = d["replays"]
    assert all(c["n"] == len(copy_check.REPLAYED) for c in replays.values())
    assert replays["clock+1%"]["either"] == len(copy_check.REPLAYED)
    assert replays["as-recorded"]["distance"] == len(copy_check.REPLAYED)
    # Signatures questioned earlier, replayed: only the kept paths (seen) can tell.
    assert d["earlier"]["clock+1%"] == {"n": len(copy_check.REPLAYED_EARLIER), "distance": 0,
                                        "either": len(copy_check.REPLAYED_EARLIER)}
    full = {"disguises": {k: label for k, label, _ in copy_check.DISGUISES}, "sets": {"susig-visual": d}}
    (tmp_path / "r.json").write_text(json.dumps(full))
    table = copy_check.format_table(full)
    assert "| replayed reference: 1 % slower | " in table and table.count("\n") == 2 + 3 + 2 * len(copy_check.DISGUISES) - 1


def _warped(t: Trajectory, a: float) -> Trajectory:
    """Re-timed unevenly, the same total time: slower at the start, faster at the end."""
    u = t.t / t.t[-1]
    return jittered_time(t, t.t[-1] * (u + a / np.pi * np.sin(np.pi * u)) - t.t)


def test_a_reference_replayed_with_an_uneven_clock_is_a_copy(
        writers: list[tuple[list[Trajectory], list[Trajectory]]]) -> None:
    """Its points at 100 Hz lie elsewhere along the line, and the first path, centred and scaled on
    the points as sampled in time, moved with the clock: 58 of 75 such replays were APPROVED (a
    review, 2026-11-30). The pad's own points do not move."""
    verifier = ClassicVerifier()
    for refs, _ in writers:
        reference_set = verifier.enroll(refs)
        for ref in refs[::2]:
            for a in (0.3, 0.6):
                assert verifier.verify(reference_set, _warped(ref, a)).too_similar


def test_with_fewer_than_four_references_the_path_is_not_compared(
        writers: list[tuple[list[Trajectory], list[Trajectory]]]) -> None:
    """One to three references give too few pairs to know how close this customer's signatures
    come: with two or three, genuine signatures fell under the line (a review, 2026-11-30), and
    with one every question was a copy."""
    verifier = ClassicVerifier()
    refs, genuine = writers[2]
    replay = jittered_time(refs[0], 0.01 * refs[0].t)
    for k in range(2, MIN_PATH_REFERENCES):
        assert not verifier.verify(verifier.enroll(refs[:k]), replay).too_similar
    assert verifier.verify(verifier.enroll(refs[:MIN_PATH_REFERENCES]), replay).too_similar
