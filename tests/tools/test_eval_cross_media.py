"""``sigkiosk eval offline --format cross-media`` on the real cross-media set: the protocols' trials
(who is a reference, who is questioned, as what), the report's keys, the answers to bad options;
and the paper operating point's choice and shipped provenance (``tools.paper_operating_point``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.policy import Verdict
from tests.shared_data import shared_data
from tools.cli import main
from tools.datasets import Medium, load_images
from tools.evaluate_cross_media import cross_media_plans
from tools.paper_operating_point import Outcome, choose_threshold, probability

CROSS_MEDIA = shared_data("offline/cross-media-chinese")
KEYS = {"eer_global", "eer_user_mean", "frr_at_far_1", "threshold_global", "genuine_trials", "impostor_trials",
        "writers"}


@pytest.fixture(scope="module")
def test_writers():  # type: ignore[no-untyped-def]
    return load_images(CROSS_MEDIA, "cross-media").subset("test")


def _plan_summary(plans) -> Counter:  # type: ignore[no-untyped-def]
    # Plain values only: a failing assertion must not print pictures.
    return Counter((len(p.candidates), len(p.draws), len(p.later_genuine), len(p.skilled), len(p.random),
                    p.question_undrawn) for p in plans)


def test_protocols_pick_references_and_questioned_by_medium(test_writers) -> None:  # type: ignore[no-untyped-def]
    plans, excluded = cross_media_plans(test_writers, "ink-to-paper", 3, trials=10, seed=0)
    # 20 experiment writers x 10 names: 3 ink references, 1 paper genuine, the 19 other experiment
    # writers' and the 2 control writers' (twice each) paper scans of the name, 20 random.
    assert _plan_summary(plans) == {(3, 1, 1, 23, 20, False): 200}
    assert len(excluded) == 20 and all(e.startswith(("c08/", "c09/")) for e in excluded)
    p = plans[0]
    assert p.writer == "e008/1"
    assert all(s.medium.is_ink and (s.writer, s.text) == ("e008", 1) for s in p.candidates)
    assert [(s.writer, s.text, s.medium) for s in p.later_genuine] == [("e008", 1, Medium.PAPER)]
    assert all(s.writer != "e008" and s.text == 1 and s.medium is Medium.PAPER for s in p.skilled)
    assert all(s.writer != "e008" and s.text != 1 and s.medium is Medium.PAPER for s in p.random)

    plans, _ = cross_media_plans(test_writers, "paper-to-paper", 1, trials=10, seed=0)
    # Control writers c08, c09: one scan the reference, the other questioned, both ways.
    assert _plan_summary(plans) == {(2, 2, 0, 22, 20, True): 20}   # impostors: 20 experiment, 1 control x 2
    assert {p.writer.split("/")[0] for p in plans} == {"c08", "c09"}

    plans, _ = cross_media_plans(test_writers, "ink-to-ink", 2, trials=10, seed=0)
    assert len(plans) == 200 and all(len(p.draws) == 3 and p.question_undrawn for p in plans)
    assert all(s.medium.is_ink for p in plans[:5] for s in p.skilled + p.random)
    # K is what an identity has: 3 ink pictures, 2 paper scans, 3 ink pictures less one questioned.
    for protocol, k in (("ink-to-paper", 4), ("paper-to-paper", 2), ("ink-to-ink", 3), ("ink-to-paper", 0)):
        with pytest.raises(ValueError, match="K must be"):
            cross_media_plans(test_writers, protocol, k, trials=10, seed=0)


def test_ink_to_paper_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    rc = main(["eval", "offline", str(CROSS_MEDIA), "--format", "cross-media", "--split", "validate",
               "--verifier", "hand", "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["protocol"] == "ink-to-paper" and report["references"] == 3   # the defaults for the set
    assert report["writers"] == 10 and report["identities"] == 100   # e007 ... e097; c07 has no ink
    assert set(report["skilled"]) == KEYS and report["skilled"]["genuine_trials"] == 100
    # Another name is easier to reject than the same name by another writer; both beat chance.
    assert report["random"]["eer_global"] < report["skilled"]["eer_global"] < 50.0
    assert (tmp_path / "plots" / "det.png").stat().st_size > 0
    assert "protocol=ink-to-paper  K=3" in capsys.readouterr().out


@pytest.mark.parametrize("args, why", [
    (["--format", "cross-media", "-k", "4"], "K must be 1..3"),
    (["--format", "cross-media", "--protocol", "paper-to-paper", "-k", "2"], "K must be 1..1"),
    (["--format", "cross-media", "--protocol", "random-refs"], "--format cross-media takes"),
    (["--format", "sigcomp-dutch", "--protocol", "ink-to-paper"], "is for --format cross-media"),
])
def test_bad_protocol_options_are_clear_errors(args: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "offline", str(CROSS_MEDIA), *args, "--verifier", "hand"]) == 2
    assert why in capsys.readouterr().err


def _verdict(score: float) -> Verdict:
    return Verdict("APPROVED", 0.5, score, ())


def test_operating_point_balances_the_sets_mean_errors() -> None:
    # Set A: genuine at 0..9, forged at 10..19 (separable); set B: genuine 5..14, forged 5..14.
    a = Outcome(tuple(_verdict(x) for x in range(10)), tuple(_verdict(x) for x in range(10, 20)))
    b = Outcome(tuple(_verdict(x) for x in range(5, 15)), tuple(_verdict(x + 0.5) for x in range(5, 15)))
    t = choose_threshold([a, b])
    frr, far = (sum(o.rates(t)[i] for o in (a, b)) / 2 for i in (0, 1))
    assert abs(frr - far) <= 0.05 and 9 <= t <= 10
    # A copy is refused whatever its score, as the kiosk's policy does.
    copy = Outcome((Verdict("SUSPICIOUS", 0.9, -5.0, (), too_similar=True),), ())
    assert copy.rates(0.0) == (1.0, 0.0)
    assert probability(0.0) == 0.5 and probability(-1.0) > 0.5


def test_shipped_paper_threshold_says_how_it_was_chosen() -> None:
    """The paper decision's threshold is the operating point chosen on validation writers of both
    sets, with its command; a refit of either fusion (which drops it) must be followed by a choice.
    The pad-ink entry decides at the same threshold, its bias shifted onto its own point."""
    from models.fusion import offline_entry
    from models.paper import FUSED_PARTS, FUSION_ENTRY

    entries = json.loads((Path(__file__).resolve().parents[2] / "models/assets/offline_fusion.json").read_text())
    op = entries[FUSION_ENTRY]["operating_point"]
    assert "--split validate" in op["command"] and "tools.paper_operating_point" in op["command"]
    assert set(op["validate_percent"]) == {"dutch", "cross-media"}
    assert 0.0 < entries[FUSION_ENTRY]["threshold"] < 1.0
    pad = entries[offline_entry(FUSION_ENTRY, pad_ink=True)]
    assert pad["threshold"] == entries[FUSION_ENTRY]["threshold"] and pad["names"] == list(FUSED_PARTS)
    assert pad["operating_point"]["command"] == op["command"] and "bias_shift" in pad["operating_point"]
    assert "cross-media" in pad["fitted_on"]


def test_choosing_shifts_the_pad_ink_entry_onto_the_one_threshold(tmp_path: Path) -> None:
    """A pad-ink verdict's score falls on the paper threshold exactly where it fell on its own
    set's point; an entry is copied from the paper one where the file has none; choosing again on
    the shifted file shifts by nothing more."""
    from models.fusion import load_offline_fusion, offline_entry
    from models.paper import FUSED_PARTS, FUSION_ENTRY
    from tools.paper_operating_point import write_operating_point

    f = tmp_path / "offline_fusion.json"
    pad_entry = offline_entry(FUSION_ENTRY, pad_ink=True)
    paper = {"names": list(FUSED_PARTS), "weights": [-5.0, -4.0, -3.0], "bias": 2.0, "threshold": 0.5,
             "fitted_on": "dutch"}
    f.write_text(json.dumps({FUSION_ENTRY: paper}))
    write_operating_point(f, probability(-0.2), {"command": "c"}, pad_shift=0.7)
    entries = json.loads(f.read_text())
    pad = entries[pad_entry]
    assert pad["bias"] == pytest.approx(2.7) and pad["weights"] == [-5.0, -4.0, -3.0] and "copied" in pad["fitted_on"]
    assert pad["threshold"] == entries[FUSION_ENTRY]["threshold"] == pytest.approx(probability(-0.2))
    assert pad["operating_point"] == {"command": "c", "bias_shift": 0.7}
    d = np.array([1.3, 0.8, 1.1])
    own = load_offline_fusion(f, pad_entry)
    assert own.logit(d) == pytest.approx(load_offline_fusion(f, FUSION_ENTRY).logit(d) + 0.7)
    write_operating_point(f, probability(-0.2), {"command": "c"}, pad_shift=0.0)
    assert json.loads(f.read_text())[pad_entry]["bias"] == pytest.approx(2.7)


def test_eval_scores_ink_references_with_the_pad_ink_entry(tmp_path: Path) -> None:
    from tools.evaluate_offline import fusion_entry, load_fusion

    assert fusion_entry("cnn+hand", False, pad_ink=True) == "cnn+hand@pad-ink"
    assert fusion_entry("cnn+hand", True, pad_ink=True) == "cnn+hand+anomaly@pad-ink"
    assert fusion_entry("cnn+hand", False) == "cnn+hand"
    f = tmp_path / "fusion.json"
    paper = {"names": ["cnn", "hand"], "weights": [-5.0, -4.0], "bias": 2.0, "threshold": 0.5}
    f.write_text(json.dumps({"cnn+hand": paper}))
    # A file of before the pad-ink entries: ink references get the paper fusion, as on the kiosk.
    assert load_fusion("cnn+hand@pad-ink", f) == load_fusion("cnn+hand", f)
    f.write_text(json.dumps({"cnn+hand": paper, "cnn+hand@pad-ink": {**paper, "bias": 3.0}}))
    assert load_fusion("cnn+hand@pad-ink", f).bias == 3.0 and load_fusion("cnn+hand", f).bias == 2.0
