"""The public verification API of ``models``: the README's example runs, and the contract holds."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import models
from models import (
    ClassicVerifier,
    DecisionPolicy,
    ModelError,
    PaperVerifier,
    ReferenceSet,
    ReferenceSetMismatch,
    VerificationError,
    make_verifier,
)
from models.classic import ClassicConfig
from models.image_preprocess import NoInkError
from models.preprocess import PreprocessConfig
from tools.synth import make_population

ROOT = Path(__file__).resolve().parents[2]


def _readme_example() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use the verifier as a library", 1)[1].split("\n## ", 1)[0]
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", section, re.S)[:2]
    return code, printed


def test_readme_example_runs_and_prints_what_it_says() -> None:
    code, printed = _readme_example()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().split("\n") == printed.split("\n")
    # The genuine query approved, the forgery suspicious, the wrong set refused: the example shows both outcomes.
    assert printed.splitlines()[0].startswith("APPROVED") and printed.splitlines()[1].startswith("SUSPICIOUS")


def _positional(sig: inspect.Signature) -> list[str]:
    return [n for n, p in sig.parameters.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]


def test_pen_and_paper_share_the_contract() -> None:
    """The same positional contract; a pen verifier may take more by keyword, with a default
    (``seen``: the signatures the customer gave before, for the copy check)."""
    for name in ("enroll", "verify"):
        pen = inspect.signature(getattr(ClassicVerifier, name))
        paper = inspect.signature(getattr(PaperVerifier, name))
        assert _positional(pen) == _positional(paper), name
        extra = [p for n, p in pen.parameters.items() if n not in paper.parameters]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty for p in extra), name
    assert _positional(inspect.signature(ClassicVerifier.verify)) == ["self", "reference_set", "query"]


def test_reference_set_is_frozen_and_bound_to_its_model() -> None:
    genuine, _ = make_population(n_writers=1, n_genuine=7, n_forgeries=1, seed=3)["001"]
    pen = make_verifier("classic", 1.30)
    refs = pen.enroll(genuine[:5])
    assert isinstance(refs, ReferenceSet) and refs.size == 5 and refs.verifier == "classic"
    assert dict(refs.model_versions) == pen.model_versions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        refs.size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        refs.model_versions["classic"] = "2"  # type: ignore[index]
    # Another model (here: another rhythm rule recorded in its versions) refuses the set.
    other = make_verifier("classic", 1.30, rhythm_decides=True)
    with pytest.raises(ReferenceSetMismatch, match="enroll the references again"):
        other.verify(refs, genuine[5])
    assert pen.verify(refs, genuine[5]).approved


def test_a_set_built_before_the_distance_last_changed_is_enrolled_again() -> None:
    """Reference sets enrolled before 2026-11-27 (the direction 0 where the pen rests), before
    2026-11-28 (jagged signatures not smoothed), with the band of 0.15 or before 2026-11-29's
    no-pressure scale hold distances on another scale: the shipped verifier refuses them rather
    than compare them."""
    genuine, _ = make_population(n_writers=1, n_genuine=6, n_forgeries=1, seed=3)["001"]
    unscaled = dataclasses.replace(ClassicConfig(), no_pressure_scale=1.0)
    narrow = dataclasses.replace(unscaled, band=0.15)
    unsmoothed = dataclasses.replace(narrow, preprocess=PreprocessConfig())
    before_rest = ClassicVerifier(dataclasses.replace(unsmoothed, hold_still_direction=0))
    before_jagged = ClassicVerifier(unsmoothed)
    before_band = ClassicVerifier(narrow)
    before_scale = ClassicVerifier(unscaled)
    assert before_rest.model_versions()["classic"] == "2" and before_jagged.model_versions()["classic"] == "2-rest2"
    assert before_band.model_versions()["classic"] == "2-rest2-jag0.6"
    assert before_scale.model_versions()["classic"] == "2-rest2-jag0.6-band0.2"
    assert ClassicVerifier().model_versions()["classic"] == "2-rest2-jag0.6-band0.2-np1.138"
    for before in (before_rest, before_jagged, before_band, before_scale):
        with pytest.raises(ReferenceSetMismatch, match="enroll the references again"):
            ClassicVerifier().verify(before.enroll(genuine[:5]), genuine[5])


def test_one_error_base_for_the_verification_layer() -> None:
    for error in (ModelError, ReferenceSetMismatch, NoInkError):
        assert issubclass(error, VerificationError), error
    with pytest.raises(VerificationError):
        make_verifier("fused", 1.30, model_dir=ROOT / "no-such-dir")


def test_policy_match_rate_is_half_at_the_threshold_and_monotone() -> None:
    p = DecisionPolicy(1.3)
    assert p.match_rate(1.3) == 0.5 and p.match_rate(1.0) > 0.5 > p.match_rate(1.6)
    q = DecisionPolicy.on_probability(0.4, too_similar_ratio=0.2)
    # a probability of 0.4 is the score -logit(0.4): exactly the threshold, rate 0.5
    assert q.match_rate(q.threshold) == 0.5 and q.decide(q.threshold, (), too_similar=False).approved
    assert not q.decide(q.threshold, (), too_similar=True).approved
    with pytest.raises(ValueError):
        DecisionPolicy.on_probability(1.0, too_similar_ratio=0.2)


def test_importing_models_loads_no_training_or_jit_code() -> None:
    code = ("import sys, models, models.pen, models.paper;"
            "heavy = [m for m in ('tensorflow', 'sklearn', 'keras') if m in sys.modules];"
            "sys.exit(str(heavy) if heavy else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    bare = "import sys, models; sys.exit('numba' in sys.modules or 'cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", bare], cwd=ROOT).returncode == 0
    assert set(models.__all__) >= {"PenVerifier", "PaperVerifier", "Verdict", "DecisionPolicy", "ReferenceSet"}
