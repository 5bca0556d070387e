"""The one rule for small backward time steps (``tools.datasets.clock``), on constructed streams,
and every reader with timestamps applying it: re-timed and counted, or refused with file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.datasets import MalformedFileError, load_svc2004, read_mcyt_file, read_susig_file, read_svc2004_file
from tools.datasets.clock import MAX_BACK_PERIODS, BackwardJumpError, retime_backward_steps, sample_period

PERIOD = 10.0


def stream(n: int = 12, t0: float = 1000.0) -> np.ndarray:
    return t0 + PERIOD * np.arange(n)


def with_step_back(periods: float, at: int = 6) -> np.ndarray:
    """A 100 Hz stream whose sample ``at`` is stamped ``periods`` periods before its predecessor,
    the clock back on time at the next sample (the pattern of the real files)."""
    t = stream()
    t[at] = t[at - 1] - periods * PERIOD
    return t


@pytest.mark.parametrize("periods", [0.1, 0.8, 1.0, 2.0])
def test_a_step_back_of_up_to_two_periods_is_retimed_between_its_neighbours(periods: float) -> None:
    t = with_step_back(periods)
    before = t.copy()
    r = retime_backward_steps(t)
    assert r.repaired == 1 and r.period == PERIOD
    assert np.all(np.diff(r.t) > 0)
    # Only the sample that stepped back moves, to the midpoint of its neighbours: half a period
    # either side, so a per-sample speed stays of the ordinary size (a clamp would make it infinite).
    assert r.t[6] == pytest.approx((t[5] + t[7]) / 2)
    changed = np.flatnonzero(r.t != before)
    assert changed.tolist() == [6]
    np.testing.assert_array_equal(t, before)  # pure: the input is untouched


def test_a_step_back_of_five_periods_is_refused_at_its_sample() -> None:
    with pytest.raises(BackwardJumpError) as err:
        retime_backward_steps(with_step_back(5.0))
    assert err.value.index == 6
    assert err.value.back == pytest.approx(50.0) and err.value.period == PERIOD
    assert "5.0 sample periods" in str(err.value)


def test_just_over_two_periods_is_refused() -> None:
    assert MAX_BACK_PERIODS == 2.0
    with pytest.raises(BackwardJumpError):
        retime_backward_steps(with_step_back(2.05))


def test_the_period_is_the_median_forward_step_of_the_file() -> None:
    # An irregular 75 Hz-ish pad with repeated stamps and one glitch: the median is robust to both.
    t = np.cumsum([0, 13, 14, 13, 0, 13, 14, 13, 13, 14, 13, 13]).astype(float)
    assert sample_period(t) == 13.0
    t[7] = t[6] - 30  # 30 ms back from its predecessor: 2.3 periods of 13 ms
    with pytest.raises(BackwardJumpError):
        retime_backward_steps(t)
    assert sample_period(np.array([5.0, 5.0, 5.0])) is None


def test_the_late_sample_is_moved_when_the_one_after_cannot_be() -> None:
    t = stream()
    t[5] += 2.5 * PERIOD  # stamped late, past its successor's successor: 1075, 1060, 1070
    r = retime_backward_steps(t)
    assert r.repaired == 1
    assert np.flatnonzero(r.t != t).tolist() == [5]
    assert r.t[5] == pytest.approx((t[4] + t[6]) / 2)


def test_a_clock_that_steps_back_and_stays_back_is_respaced_over_a_window() -> None:
    t = np.concatenate([stream(6), stream(6, t0=1050.0 - PERIOD)])  # ..., 1050, 1040, 1050, ...
    r = retime_backward_steps(t)
    assert r.repaired == 1
    assert np.all(np.diff(r.t) > 0)
    assert np.all(r.t[:4] == t[:4]) and np.all(r.t[8:] == t[8:])
    assert np.diff(r.t).min() > PERIOD / 4  # re-spaced steps stay a sizeable part of a period


def test_steps_back_at_either_end_of_the_file() -> None:
    first = stream()
    first[1] = first[0] - 5
    r = retime_backward_steps(first)
    assert np.all(np.diff(r.t) > 0) and r.repaired == 1
    last = stream()
    last[-1] = last[-2] - 5
    r = retime_backward_steps(last)
    assert np.all(np.diff(r.t) > 0) and r.t[-1] == pytest.approx(last[-2] + PERIOD)


def test_many_glitches_repeats_and_a_clean_file() -> None:
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.choice([0.0, 9.0, 10.0, 11.0], size=400, p=[0.1, 0.3, 0.3, 0.3]))
    glitches = [37, 120, 121, 250, 399]
    for g in glitches:
        t[g] = t[g - 1] - rng.uniform(0.5, 1.9) * 10
    r = retime_backward_steps(t)
    assert np.all(np.diff(r.t) >= 0)
    assert r.repaired == int((np.diff(t) < 0).sum())
    # Repeated timestamps are not glitches: nothing but the glitches' neighbourhoods moves.
    moved = np.flatnonzero(r.t != t)
    assert all(min(abs(m - g) for g in glitches) <= 3 for m in moved)
    clean = stream()
    assert retime_backward_steps(clean).repaired == 0
    np.testing.assert_array_equal(retime_backward_steps(clean).t, clean)


def test_time_that_never_moves_forward_cannot_be_retimed() -> None:
    with pytest.raises(BackwardJumpError, match="no forward time step"):
        retime_backward_steps(np.array([10.0, 10.0, 9.0]))


# --- the readers ------------------------------------------------------------------------------


def svc_text(t_ms: np.ndarray) -> str:
    """An SVC2004 Task 2 file per the published format: count, then X Y TimeStamp Button Az Alt P."""
    rows = [f"{4000 + 9 * i} {7000 - 4 * i} {int(t)} 1 1200 600 300" for i, t in enumerate(t_ms)]
    return f"{len(rows)}\n" + "\n".join(rows) + "\n"


def svc_times(back_ms: float, n: int = 30, at: int = 12) -> np.ndarray:
    t = 3_000_000 + 10.0 * np.arange(n)
    t[at] = t[at - 1] - back_ms
    return t


def test_svc2004_set_with_an_8ms_step_back_is_read_without_skipping(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    root.mkdir()
    (root / "U1S1.TXT").write_text(svc_text(svc_times(8)))
    (root / "U1S2.TXT").write_text(svc_text(svc_times(9, at=20)))
    (root / "U1S21.TXT").write_text(svc_text(svc_times(-10)))  # no glitch (a forward step)
    ds = load_svc2004(root)  # skip_malformed=False: a refused file would raise here
    assert ds.skipped == []
    assert ds.clock_repairs() == {"files_retimed": 2, "backward_steps_retimed": 2,
                                  "files_counter_wrap": 0, "counter_wraps_decoded": 0}
    assert [s.clock.retimed_steps for s in ds.writers["1"]] == [1, 1, 0]
    tr = ds.writers["1"][0].trajectory
    assert np.all(np.diff(tr.t) > 0)
    assert tr.t[12] == pytest.approx(0.12)  # midway between its neighbours at 110 and 130 ms


def test_svc2004_step_back_of_five_periods_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "U2S3.TXT"
    path.write_text(svc_text(svc_times(50)))
    with pytest.raises(MalformedFileError) as err:
        read_svc2004_file(path)
    # Row 12 is file line 14 (line 1 is the count).
    assert (err.value.path, err.value.line) == (path, 14)
    assert "backwards by 50 ms" in err.value.reason and "5.0 sample periods of 10 ms" in err.value.reason


def test_mcyt_times_in_seconds_follow_the_same_rule(tmp_path: Path) -> None:
    def write(name: str, back_s: float) -> Path:
        t = 0.01 * np.arange(20)
        t[9] = t[8] - back_s
        path = tmp_path / name
        path.write_text("".join(f"{v:.3f} {100 + i} {200 + i} 300 0 900 500\n" for i, v in enumerate(t)))
        return path

    tr = read_mcyt_file(write("a.txt", 0.02))
    assert np.all(np.diff(tr.t) > 0) and tr.t[9] == pytest.approx(0.09)
    with pytest.raises(MalformedFileError) as err:
        read_mcyt_file(write("b.txt", 0.05))
    assert err.value.line == 10 and "backwards by 0.05 s" in err.value.reason


def test_susig_glitch_is_the_general_rule_and_the_counter_wrap_a_decode(tmp_path: Path) -> None:
    def write(name: str, t: list[int]) -> Path:
        rows = "\n".join(f"{100 + 3 * i} {50 + 2 * i} {v} 40 {1 if i == 4 else 0}" for i, v in enumerate(t))
        path = tmp_path / name
        path.write_text(f"X, Y, TStamp, Pres., EndPts\nDataSize: {len(t)}\n{rows}\n")
        return path

    t = [0, 10, 20, 30, 40, 50, 60, 70]
    glitch = [*t[:3], 10, *t[4:]]  # the Visual pattern: 10 ms back, the clock back on time next
    tr = read_susig_file(write("g.sig", glitch))
    np.testing.assert_allclose(tr.t, np.array(t) / 1000)  # midway between 20 and 40 ms: on the clock
    wrap = [*t[:5], 50 + 4294967, *t[6:]]  # a stroke start stamped 2**32 us late (Blind)
    tr = read_susig_file(write("w.sig", wrap), "blind")
    np.testing.assert_allclose(tr.t, np.array(t) / 1000)
    with pytest.raises(MalformedFileError) as err:
        read_susig_file(write("b.sig", [*t[:5], 0, *t[6:]]))  # 40 ms back: 4 periods
    assert err.value.line == 2 + 6 and "4.0 sample periods" in err.value.reason
