"""The sigma-lognormal signature synthesizer: determinism, validity, kinematics, separability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.classic import ClassicConfig, build_template, score_query, signature_features
from models.trajectory import DeviceInfo, Trajectory
from tools import synth
from tools.metrics import equal_error_rate


def _arrays(tr: Trajectory) -> tuple[np.ndarray, ...]:
    return tr.x, tr.y, tr.pressure, tr.t, tr.pen_down


def _same(a: Trajectory, b: Trajectory) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(_arrays(a), _arrays(b)))


@pytest.fixture(scope="module")
def writers() -> list[synth.WriterModel]:
    return [synth.random_writer(np.random.default_rng(s)) for s in range(40)]


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_arrays_different_seed_different() -> None:
    a = synth.make_population(2, 2, 2, seed=5)
    b = synth.make_population(2, 2, 2, seed=5)
    c = synth.make_population(2, 2, 2, seed=6)
    assert list(a) == ["001", "002"]
    for wid in a:
        for kind in (0, 1):
            assert len(a[wid][kind]) == 2
            for ta, tb, tc in zip(a[wid][kind], b[wid][kind], c[wid][kind]):
                assert _same(ta, tb)
                assert not _same(ta, tc)


def test_writer_streams_do_not_depend_on_population_size() -> None:
    small = synth.make_population(1, 2, 1, seed=9)
    large = synth.make_population(3, 4, 2, seed=9)
    assert _same(small["001"][0][0], large["001"][0][0])
    assert _same(small["001"][0][1], large["001"][0][1])
    assert _same(small["001"][1][0], large["001"][1][0])


def test_random_writer_and_samples_deterministic_from_generator() -> None:
    m1 = synth.random_writer(np.random.default_rng(3))
    m2 = synth.random_writer(np.random.default_rng(3))
    assert m1 == m2
    assert synth.random_writer(np.random.default_rng(4)) != m1
    g1 = synth.genuine(m1, np.random.default_rng(11))
    g2 = synth.genuine(m1, np.random.default_rng(11))
    assert _same(g1, g2)
    f1 = synth.forgery(m1, np.random.default_rng(11), skill=0.5)
    f2 = synth.forgery(m1, np.random.default_rng(11), skill=0.5)
    assert _same(f1, f2)


def test_two_genuine_samples_are_never_identical() -> None:
    m = synth.random_writer(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    a, b = synth.genuine(m, rng), synth.genuine(m, rng)
    assert not _same(a, b)


# ---------------------------------------------------------------------------------------------
# Prototypes and trajectories
# ---------------------------------------------------------------------------------------------


def test_random_writer_shape_and_timing_ranges(writers: list[synth.WriterModel]) -> None:
    n_strokes = set()
    for m in writers:
        assert 2 <= len(m.strokes) <= 5
        n_strokes.add(len(m.strokes))
        for st in m.strokes:
            assert 3 <= len(st.impulses) <= 12
        assert len(m.pen_up_s) == len(m.strokes) - 1
        assert 1.5 <= m.duration <= 5.0
        w, h = synth._ink_extent(m)
        assert 3.0 <= w / h <= 6.0, (w, h)
        assert 5.0 <= h <= 40.0  # a signature's height in millimetres
    assert len(n_strokes) >= 3  # the stroke count varies between writers


def test_trajectory_is_a_valid_tablet_recording(writers: list[synth.WriterModel]) -> None:
    rng = np.random.default_rng(0)
    for m in writers[:8]:
        for tr in (synth.genuine(m, rng), synth.forgery(m, rng, skill=0.5)):
            assert tr.device == synth.DEFAULT_DEVICE
            assert tr.device.units == "mm" and tr.device.time_measured
            dt = np.diff(tr.t)
            assert (dt > 0).all()  # never backwards (nor repeated)
            assert abs(np.median(dt) - 0.005) < 2e-4  # 200 Hz
            assert dt.min() >= 0.004 - 1e-9 and dt.max() <= 0.006 + 1e-9  # +-0.5 ms jitter
            on_grid = np.abs(tr.t - np.round(tr.t * 200) / 200)
            assert on_grid.max() <= 0.5e-3 + 1e-9 and on_grid.max() > 0  # measured, jittered
            assert ((tr.pressure >= 0) & (tr.pressure <= 1)).all()
            raw = tr.pressure * tr.device.pressure_levels
            assert np.allclose(raw, np.round(raw), atol=1e-6)  # raw device levels
            assert (tr.pressure[tr.pen_down] > 0).all()
            assert (tr.pressure[~tr.pen_down] == 0).all()
            strokes = tr.strokes()
            assert len(strokes) == len(m.strokes)
            assert tr.pen_down[0] and tr.pen_down[-1]
            for a, b in zip(strokes[:-1], strokes[1:]):
                assert b.start - a.stop >= 3  # hover samples in proximity between strokes
            # Pressure rises after touch-down and falls before the lift.
            for sl in strokes:
                p = tr.pressure[sl]
                assert p[0] < np.median(p) and p[-1] < np.median(p)
            # Coordinates quantised to the device resolution (0.01 mm).
            assert np.allclose(tr.x * 100, np.round(tr.x * 100), atol=1e-6)


def test_render_without_rng_is_exact_and_on_grid() -> None:
    m = synth.random_writer(np.random.default_rng(8))
    tr = synth.render(m)
    assert np.allclose(tr.t, np.arange(len(tr)) / 200.0)
    # The first pen-down sample is where the first stroke starts.
    sx, sy = m.strokes[0].start
    assert abs(tr.x[0] - sx) < 0.3 and abs(tr.y[0] - sy) < 0.3


def test_other_device_rate_and_pressure_levels() -> None:
    dev = DeviceInfo(name="t", units="mm", resolution=None, pressure_levels=8191, nominal_rate_hz=100.0)
    m = synth.random_writer(np.random.default_rng(2))
    tr = synth.genuine(m, np.random.default_rng(3), device=dev)
    assert tr.device is dev
    assert abs(np.median(np.diff(tr.t)) - 0.01) < 1e-3
    raw = tr.pressure * 8191
    assert np.allclose(raw, np.round(raw), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Kinematics
# ---------------------------------------------------------------------------------------------

_EXACT = DeviceInfo(name="exact", units="mm", resolution=None, pressure_levels=1023, nominal_rate_hz=200.0)


@pytest.mark.parametrize("turn", [0.0, 1.2, -2.0])
def test_single_impulse_speed_profile_is_the_analytic_lognormal(turn: float) -> None:
    imp = synth.Lognormal(D=25.0, t0=0.0, mu=-1.7, sigma=0.28, theta_start=0.3, theta_end=0.3 + turn)
    model = synth.WriterModel(strokes=(synth.Stroke(start=(10.0, 5.0), impulses=(imp,)),), pen_up_s=())
    tr = synth.render(model, device=_EXACT)
    a, _ = model.strokes[0].window()
    t_model = tr.t + a  # the trajectory's clock starts at the stroke's touch-down
    mid = slice(1, -1)
    v = np.hypot(np.gradient(tr.x, tr.t), np.gradient(tr.y, tr.t))
    v_true = imp.speed(t_model)
    assert np.max(np.abs(v[mid] - v_true[mid])) < 0.03 * v_true.max()
    # Peak at t0 + exp(mu - sigma^2).
    assert abs(t_model[np.argmax(v)] - (imp.t0 + math.exp(imp.mu - imp.sigma**2))) <= 0.006
    assert imp.peak_time == pytest.approx(math.exp(-1.7 - 0.28**2))
    # Path length is D (the window covers > 99 % of the impulse); an arc ends where the chord says.
    length = np.hypot(np.diff(tr.x), np.diff(tr.y)).sum()
    assert length == pytest.approx(25.0, rel=0.015)
    end = model.strokes[0].position(np.array([100.0]))[0]
    chord = 25.0 * (math.sin(turn / 2) / (turn / 2) if turn else 1.0)
    assert np.hypot(*(end - np.array([10.0, 5.0]))) == pytest.approx(chord, rel=1e-5)
    # Direction turns from theta_start to theta_end.
    assert float(imp.direction(np.array([1e-4]))[0]) == pytest.approx(imp.theta_start, abs=1e-3)
    assert float(imp.direction(np.array([50.0]))[0]) == pytest.approx(imp.theta_end, abs=1e-6)


def test_lognormal_fraction_is_the_integral_of_speed() -> None:
    imp = synth.Lognormal(D=12.0, t0=0.05, mu=-2.0, sigma=0.35, theta_start=0.0, theta_end=1.0)
    t = np.linspace(0.0, 2.0, 20001)
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (imp.speed(t)[1:] + imp.speed(t)[:-1]) * np.diff(t))))
    assert np.max(np.abs(cum - imp.D * imp.fraction(t))) < 1e-3


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        synth.Lognormal(D=1.0, t0=0.0, mu=-1.0, sigma=0.0, theta_start=0.0, theta_end=0.0)
    with pytest.raises(ValueError):
        synth.Lognormal(D=-1.0, t0=0.0, mu=-1.0, sigma=0.2, theta_start=0.0, theta_end=0.0)
    imp = synth.Lognormal(D=1.0, t0=0.0, mu=-1.0, sigma=0.2, theta_start=0.0, theta_end=0.0)
    st = synth.Stroke(start=(0, 0), impulses=(imp,))
    with pytest.raises(ValueError):
        synth.WriterModel(strokes=(st, st), pen_up_s=())
    with pytest.raises(ValueError):
        synth.forgery(synth.WriterModel(strokes=(st,), pen_up_s=()), np.random.default_rng(0), skill=1.5)


def test_forgery_is_slower_hesitant_and_tremulous(writers: list[synth.WriterModel]) -> None:
    rng = np.random.default_rng(4)
    ratios = {0.0: [], 1.0: []}
    for m in writers[:10]:
        g = np.mean([synth.vary_genuine(m, rng).duration for _ in range(3)])
        for skill in ratios:
            fm = synth.vary_forgery(m, rng, skill)
            ratios[skill].append(fm.duration / g)
            assert sum(len(s.impulses) for s in fm.strokes) >= sum(len(s.impulses) for s in m.strokes)
            assert 6.0 <= fm.style.tremor_hz <= 10.0 and fm.style.tremor_mm > 0
    assert 1.2 <= np.mean(ratios[1.0]) <= 1.7
    assert 1.6 <= np.mean(ratios[0.0]) <= 2.4
    assert np.mean(ratios[0.0]) > np.mean(ratios[1.0])


# ---------------------------------------------------------------------------------------------
# Separability with the project's classic verifier
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores() -> dict[str, np.ndarray]:
    pop = synth.make_population(6, 8, 3, seed=21, skill=0.7)
    ids = list(pop)
    out: dict[str, list[float]] = {"genuine": [], "forgery": [], "other": [], "worst_genuine": [], "best_other": []}
    for k, wid in enumerate(ids):
        gen, forg = pop[wid]
        tpl = build_template([signature_features(g) for g in gen[:5]])
        g = [score_query(tpl, signature_features(q)).distance for q in gen[5:]]
        o = [score_query(tpl, signature_features(q)).distance for q in pop[ids[(k + 1) % len(ids)]][0][5:]]
        out["genuine"] += g
        out["other"] += o
        out["forgery"] += [score_query(tpl, signature_features(q)).distance for q in forg]
        out["worst_genuine"].append(max(g))
        out["best_other"].append(min(o))
    return {k: np.array(v) for k, v in out.items()}


def test_genuine_samples_closer_than_another_writers(scores: dict[str, np.ndarray]) -> None:
    assert (scores["worst_genuine"] < scores["best_other"]).all()
    assert np.median(scores["genuine"]) < 1.2
    assert np.mean(scores["genuine"] < ClassicConfig().threshold) >= 0.8


def test_forgeries_further_than_genuine_but_not_trivially(scores: dict[str, np.ndarray]) -> None:
    g, f, o = scores["genuine"], scores["forgery"], scores["other"]
    assert np.median(f) > np.median(g) + 0.3
    # Most are refused by the distance alone at the shipped threshold. (61 % here: synthetic writers
    # sign more alike than real ones, and the prior fitted on real writers, weighing like 6 pairs,
    # pulls their normalised scores down; at the one-path threshold 1.30 with a prior of 2-4 pairs
    # this was at least 70 %.)
    assert np.mean(f > ClassicConfig().threshold) > 0.5
    eer, _ = equal_error_rate(g, f)
    assert eer <= 0.2
    # A skilled forgery is still much closer than another writer's signature.
    assert np.median(f) < np.median(o)


def test_skill_brings_forgeries_closer() -> None:
    rng = np.random.default_rng(31)
    d = {0.0: [], 1.0: []}
    for _ in range(3):
        m = synth.random_writer(rng)
        tpl = build_template([signature_features(synth.genuine(m, rng)) for _ in range(4)])
        for skill in d:
            d[skill] += [score_query(tpl, signature_features(synth.forgery(m, rng, skill))).distance for _ in range(2)]
    assert np.mean(d[1.0]) < np.mean(d[0.0]) - 0.5
