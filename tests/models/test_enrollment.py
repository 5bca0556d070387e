import pytest

from models.classic import ClassicConfig, score_query, signature_features
from models.enrollment import Enrollment, EnrollmentError, EnrollmentPolicy, check_sample, enroll
from models.trajectory import Trajectory
from tools.synth import make_population


@pytest.fixture(scope="module")
def pop():
    return make_population(n_writers=2, n_genuine=8, n_forgeries=2, seed=5)


def speed_up(tr: Trajectory, factor: float) -> Trajectory:
    return Trajectory(x=tr.x, y=tr.y, pressure=tr.pressure, t=tr.t / factor, pen_down=tr.pen_down, device=tr.device)


def first_points(tr: Trajectory, n: int) -> Trajectory:
    return Trajectory(x=tr.x[:n], y=tr.y[:n], pressure=tr.pressure[:n], t=tr.t[:n], pen_down=tr.pen_down[:n], device=tr.device)


def test_genuine_samples_enroll_one_by_one(pop):
    genuine, _ = pop["001"]
    session = Enrollment()
    for n, tr in enumerate(genuine[:5], start=1):
        assert session.add(tr) == []
        assert len(session.accepted) == n
    assert session.complete
    template = session.template()
    assert len(template.references) == 5 and template.stats.pairs == 10
    d = score_query(template, signature_features(genuine[6])).distance
    assert d <= ClassicConfig().threshold


@pytest.mark.parametrize(
    "change, code",
    [
        (lambda tr: first_points(tr, 20), "too_short"),
        (lambda tr: speed_up(tr, 20.0), "too_fast"),
        (lambda tr: speed_up(tr, 1 / 40.0), "too_slow"),
    ],
)
def test_bad_samples_are_refused_with_a_reason(pop, change, code):
    refusals = check_sample(change(pop["001"][0][0]))
    assert [r.code for r in refusals] == [code]
    assert "please" in refusals[0].message


def test_another_writers_signature_is_inconsistent(pop):
    session = Enrollment()
    for tr in pop["001"][0][:3]:
        assert session.add(tr) == []
    refusals = session.add(pop["002"][0][0])
    assert [r.code for r in refusals] == ["inconsistent"]
    assert len(session.accepted) == 3  # the refused sample was not kept; the person signs again
    assert session.add(pop["001"][0][3]) == []


def test_incomplete_enrollment_cannot_build_a_template(pop):
    session = Enrollment(policy=EnrollmentPolicy(references=5))
    session.add(pop["001"][0][0])
    with pytest.raises(ValueError, match="1/5"):
        session.template()


def test_enroll_all_at_once_lists_every_refusal(pop):
    genuine = pop["001"][0]
    with pytest.raises(EnrollmentError) as e:
        enroll([genuine[0], first_points(genuine[1], 10), genuine[2], genuine[3], pop["002"][0][0]])
    # Against three accepted samples: with fewer, the population prior (6 pairs' weight) speaks
    # for most of a synthetic writer's spread, which is tighter than real writers'.
    assert [(i, r.code) for i, r in e.value.refusals] == [(1, "too_short"), (4, "inconsistent")]
    assert "sample 2" in str(e.value)
    assert len(enroll(genuine[:4]).references) == 4


def test_the_consistency_score_is_the_classic_distance_normalised_and_decides_the_refusal(pop):
    """What ``tools.enrollment_consistency`` measures on real writers is what enrollment refuses on."""
    from models.classic import build_template
    from models.enrollment import check_consistency, consistency_score

    cfg = ClassicConfig()
    own = [signature_features(t, cfg) for t in pop["001"][0][:4]]
    stranger = signature_features(pop["002"][0][0], cfg)
    # The same number the verifier gives the sample against the accepted ones as a template.
    assert consistency_score(own[3], own[:3], cfg) == pytest.approx(
        score_query(build_template(own[:3], cfg), own[3], cfg).distance, rel=1e-12)
    genuine, other = consistency_score(own[3], own[:3], cfg), consistency_score(stranger, own[:3], cfg)
    assert genuine < other
    policy = EnrollmentPolicy(max_inconsistency=(genuine + other) / 2)
    assert check_consistency(own[3], own[:3], policy, cfg) is None
    assert check_consistency(stranger, own[:3], policy, cfg).code == "inconsistent"
    with pytest.raises(ValueError, match="no accepted sample"):
        consistency_score(stranger, [], cfg)
