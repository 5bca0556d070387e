"""The match-score pen verifier on synthetic writers: its score is the model's probability of the
classic distance and the global features, decided by the one policy; it keeps the classic
verifier's aspects and copy check, and refuses what it cannot trust."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.errors import ReferenceSetMismatch
from models.global_features import global_features
from models.match_score import SHIPPED, ScoreModel
from models.match_verifier import MatchScoreVerifier
from models.pen import ClassicVerifier
from models.runtime import ModelError
from models.trajectory import Trajectory
from tools.synth import make_population


@pytest.fixture(scope="module")
def writer() -> tuple[list[Trajectory], list[Trajectory]]:
    return make_population(n_writers=1, n_genuine=9, n_forgeries=4, seed=11)["001"]


def test_the_score_is_the_models_probability_of_the_classic_distance_and_global_features(writer) -> None:
    genuine, forged = writer
    ver = MatchScoreVerifier()
    classic = ClassicVerifier()
    refs = ver.enroll(genuine[:5])
    assert refs.verifier == "match-score" and refs.size == 5
    crefs = classic.enroll(genuine[:5])
    for q in genuine[5:] + forged:
        v, c = ver.verify(refs, q), classic.verify(crefs, q)
        p = ver.model.score(c.distance, global_features(q), np.array([global_features(r) for r in genuine[:5]]))
        assert v.distance == pytest.approx(-math.log(p / (1 - p)))
        assert v.approved == (p >= ver.model.threshold and not v.too_similar)
        # 0.5 exactly at the operating point, above it when approved.
        assert (v.match_rate >= 0.5) == (p >= ver.model.threshold)
        assert v.aspects == c.aspects and v.too_similar == c.too_similar


def test_a_pad_changed_since_enrollment_is_scored_and_explained_as_the_classic_verifier_does(writer) -> None:
    """The kiosk's default keeps the classic verifier's comparison on what both pads measure, its
    aspects and the explanation staff see."""
    from models.device_variants import without_pressure
    from models.pen import PRESSURE_NOT_MEASURED

    genuine, forged = writer
    ver, classic = MatchScoreVerifier(), ClassicVerifier()
    refs, crefs = ver.enroll(genuine[:5]), classic.enroll(genuine[:5])
    bare_refs = ver.enroll([without_pressure(t) for t in genuine[:5]])
    for q in (genuine[6], forged[0]):
        v, c = ver.verify(refs, without_pressure(q)), classic.verify(crefs, without_pressure(q))
        assert v.explanations == c.explanations == (PRESSURE_NOT_MEASURED,)
        assert v.aspects == c.aspects and "pressure" not in [a.code for a in v.aspects]
        assert v.distance == pytest.approx(ver.verify(bare_refs, without_pressure(q)).distance, rel=1e-9)
    assert ver.verify(refs, genuine[6]).explanations == ()


def test_a_copy_of_a_reference_is_suspicious(writer) -> None:
    genuine, _ = writer
    ver = MatchScoreVerifier()
    v = ver.verify(ver.enroll(genuine[:5]), genuine[2])
    assert v.too_similar and not v.approved and "too_similar" in v.reasons


def test_a_classic_reference_set_is_refused(writer) -> None:
    genuine, _ = writer
    with pytest.raises(ReferenceSetMismatch):
        MatchScoreVerifier().verify(ClassicVerifier().enroll(genuine[:5]), genuine[6])


def test_another_model_file_is_another_model(writer, tmp_path: Path) -> None:
    genuine, _ = writer
    d = json.loads(SHIPPED.read_text())
    d["bias"] += 0.5
    other = tmp_path / "m.json"
    other.write_text(json.dumps(d))
    refs = MatchScoreVerifier().enroll(genuine[:5])
    with pytest.raises(ReferenceSetMismatch):
        MatchScoreVerifier(model_path=other).verify(refs, genuine[6])


@pytest.mark.parametrize("content", ["", "{}", '{"format": "sigkiosk-match-score/1"}'])
def test_a_broken_model_file_is_a_model_error(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(content)
    with pytest.raises(ModelError, match="match-score verifier: cannot load"):
        MatchScoreVerifier(model_path=bad)
    with pytest.raises(ModelError):
        MatchScoreVerifier(model_path=tmp_path / "missing.json")


def test_the_shipped_model_loads_as_the_contract_says() -> None:
    m = ScoreModel.load(SHIPPED)
    assert 0.0 < m.threshold < 1.0


def test_the_kiosk_builds_it_from_its_config(tmp_path: Path) -> None:
    from kiosk.config import ConfigError, VerifierConfig
    from models.pen import make_verifier

    assert VerifierConfig(kind="match-score").kind == "match-score"
    with pytest.raises(ConfigError, match="match-score"):
        VerifierConfig(kind="scored")
    ver = make_verifier("match-score", 1.30, rhythm_decides=True)
    assert isinstance(ver, MatchScoreVerifier) and ver.policy.rhythm_decides
    assert ver.model_versions()["rhythm"] == "3"
    # From a model directory (an update bundle's slot): its match_score.json; a slot without one
    # (a bundle of the learned model only) keeps the shipped one; a broken one is a clear error.
    (tmp_path / "match_score.json").write_text(SHIPPED.read_text())
    assert make_verifier("match-score", 1.30, model_dir=tmp_path).model_path == tmp_path / "match_score.json"
    (tmp_path / "learned-only").mkdir()
    assert make_verifier("match-score", 1.30, model_dir=tmp_path / "learned-only").model_path == SHIPPED
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "match_score.json").write_text('{"format": "sigkiosk-match-score/1"}')
    with pytest.raises(ModelError, match="cannot load"):
        make_verifier("match-score", 1.30, model_dir=tmp_path / "broken")
