"""``sigkiosk eval cross-device --quick --verifier match-score`` on the real shared pen sets: the
whole leave-one-set-out protocol runs for the classic verifier and, beside it on the same trials,
the match score fitted per fold; the JSON has its structure, and the figures are sane.

Three of the four sets take part (the Japanese set's 3000-point signatures make each of its DTW
distances about ten times dearer; its path through the code is the same). Few writers per set,
so the figures are sanity checks, not results (the README has the full table).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import shared_data

from tools.cli import main
from tools.cross_device import SHIPPED_THRESHOLD, VARIANTS, Options, run
from tools.datasets import writer_split

DATA = shared_data("online")
SETS = ["susig-visual", "susig-blind", "sigcomp2009-nfi"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("xdev") / "xdev.json"
    # The writers choices are made on (the left-out set's train + validate writers): the protocol
    # is the same for every split, and this one also shows that no test writer is measured.
    rc = main(["eval", "cross-device", str(DATA), "--quick", "--trials", "3", "--sets", *SETS,
               "--split", "train+validate", "--verifier", "match-score", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


def test_every_set_is_left_out_and_fitted_on_the_others(report: dict) -> None:
    proto = report["protocol"]
    assert proto["verifier"] == "match-score" and proto["quick"] is True and proto["references"] == [1, 5]
    assert proto["shipped_threshold"] == SHIPPED_THRESHOLD
    assert [s["left_out"] for s in report["sets"]] == SETS
    for s in report["sets"]:
        fitted = s["fitted"]
        assert sorted(fitted["on"]) == sorted(set(SETS) - {s["left_out"]})  # never the left-out set
        assert all(n >= 1 for n in fitted["on"].values())
        assert sorted(fitted["per_set_threshold"]) == sorted(fitted["on"])
        # The fitted threshold is the mean of the other sets' EER thresholds, in a sane range.
        thr = list(fitted["per_set_threshold"].values())
        assert fitted["threshold"] == pytest.approx(sum(thr) / len(thr), abs=1e-4)
        assert 0.8 < fitted["threshold"] < 2.0
        assert 0.3 < fitted["prior"]["min_dist"] < fitted["prior"]["mean_dist"] < 3.0
        assert s["writers"] == 2 and s["writers_with_forgeries"] == 2
        # Every set has pressure, so each fold fits the no-pressure scale: removing pressure
        # shortens the other sets' reference distances, and the scale lengthens them back.
        assert 1.0 < fitted["no_pressure_scale"] < 1.5


def test_device_variants_apply_where_they_change_the_set(report: dict) -> None:
    keys = {s["left_out"]: [v["key"] for v in s["variants"]] for s in report["sets"]}
    every = [v.key for v in VARIANTS]
    assert keys["susig-visual"] == every and keys["susig-blind"] == every
    # NFI has no timestamps to remove and already is a 200 Hz pad.
    assert keys["sigcomp2009-nfi"] == ["recorded", "no-pressure", "75hz"]


def test_figures_are_sane(report: dict) -> None:
    for s in report["sets"]:
        for row in s["variants"]:
            for k in ("k1", "k5"):
                for kind in ("skilled", "random"):
                    e = row["eer"][k][kind]
                    assert e is not None and e["writers"] == 2
                    assert 0.0 <= e["eer_global"] <= 50.0 and 0.0 <= e["eer_user_mean"] <= 50.0
            for which in ("fitted", "shipped"):
                op = row["operating_point"][which]
                # 2 writers: up to 10 genuine each after 5 references (some Blind writers have 8).
                assert 6 <= op["genuine"] <= 20 and op["forgeries"] > 0
                assert 0 <= op["rejected"] <= op["genuine"] and 0 <= op["accepted"] <= op["forgeries"]
                assert op["frr"] == pytest.approx(100 * op["rejected"] / op["genuine"], abs=0.01)
                assert op["skilled_far"] == pytest.approx(100 * op["accepted"] / op["forgeries"], abs=0.01)
            assert row["operating_point"]["shipped"]["threshold"] == SHIPPED_THRESHOLD
        # A skilled forgery is harder to reject than another writer's signature (pooled over
        # the variants, so that two writers' noise cannot flip it).
        skilled = sum(r["eer"]["k5"]["skilled"]["eer_global"] for r in s["variants"])
        random = sum(r["eer"]["k5"]["random"]["eer_global"] for r in s["variants"])
        assert random <= skilled + 1.0


def test_the_markdown_table_has_a_row_per_variant(report: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.cross_device import format_table

    table = format_table(report).splitlines()
    assert len(table) == 2 + sum(len(s["variants"]) for s in report["sets"])
    assert all(line.count("|") == 9 for line in table)


def test_the_match_score_is_fitted_without_the_left_out_set_and_measured_alike(report: dict) -> None:
    from tools.train.score_fit import FitOptions

    # The shipped options' features (none since the train+validate choice: README).
    assert report["protocol"]["match_score"]["features"] == list(FitOptions().features)
    for s in report["sets"]:
        ms = s["fitted"]["match_score"]
        assert 0.0 < ms["threshold"] < 1.0
        assert ms["weights"]["classic"] < 0 and all(w <= 0 for w in ms["weights"].values())
        for row in s["variants"]:
            m = row["match_score"]
            for k in ("k1", "k5"):
                for kind in ("skilled", "random"):
                    e, c = m["eer"][k][kind], row["eer"][k][kind]
                    assert 0.0 <= e["eer_global"] <= 50.0 and e["writers"] == c["writers"]
            op = m["operating_point"]
            # The operating point from stored distances reproduces the kiosk's ClassicVerifier
            # (tools.operating_point.measure) exactly, so the match score's is measured alike.
            assert op["classic_check"] == row["operating_point"]["fitted"]
            for which in ("fitted", "even_odds"):
                assert op[which]["genuine"] == row["operating_point"]["fitted"]["genuine"]
                assert op[which]["forgeries"] == row["operating_point"]["fitted"]["forgeries"]
            assert op["even_odds"]["threshold"] == 0.5
            # A higher probability threshold rejects at least as many: monotone decisions.
            lo, hi = sorted((op["fitted"], op["even_odds"]), key=lambda o: o["threshold"])
            assert hi["rejected"] >= lo["rejected"] and hi["accepted"] <= lo["accepted"]


def test_the_match_table_has_a_row_per_variant(report: dict) -> None:
    from tools.cross_device import format_match_table

    table = format_match_table(report).splitlines()
    assert len(table) == 2 + sum(len(s["variants"]) for s in report["sets"])
    assert all(line.count("|") == 9 for line in table) and all("→" in line for line in table[2:])


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two sets"):
        run(DATA, Options(sets=("susig-visual",)))
    with pytest.raises(ValueError, match="unknown set"):
        run(DATA, Options(sets=("susig-visual", "mnist")))
    with pytest.raises(ValueError, match="unknown variant"):
        run(DATA, Options(variants=("as recorded",)))
    with pytest.raises(ValueError, match="unknown verifier"):
        run(DATA, Options(verifier="fused"))
    with pytest.raises(ValueError, match="split must be one of"):
        run(DATA, Options(split="train"))
    assert main(["eval", "cross-device", str(tmp_path), "--quick", "--sets", *SETS[:2]]) == 2


def test_train_and_validate_writers_of_the_left_out_set_are_measured_never_its_test_writers(report: dict) -> None:
    """``--split train+validate``: every writer of the left-out set the fold never fitted on, and
    none of the test writers the README reports; ``--split test`` those alone."""
    from tools.cross_device import pick_writers
    from tools.datasets import Dataset

    assert report["protocol"]["measured_on"] == "train+validate writers of the left-out set"
    for s in report["sets"]:
        assert s["writers"] == len(s["measured_writers"]) == 2
        assert {writer_split(w) for w in s["measured_writers"]} <= {"train", "validate"}
        assert s["left_out"] not in s["fitted"]["on"]
    ds: Dataset = Dataset(name="ids", writers={w: [] for w in ("10", "17", "18", "29", "3")}, skipped=[])
    assert sorted(pick_writers(ds, {"test"}, None).writers) == ["18", "29"]
    assert sorted(pick_writers(ds, set("train+validate".split("+")), None).writers) == ["10", "17", "3"]


def test_the_classic_fit_is_the_prior_and_the_mean_of_each_sets_eer_threshold() -> None:
    """``fit_classic``: what a fold fits (and, on all four sets, what ``ClassicConfig`` ships)."""
    import numpy as np

    from tests.tools.test_score_norms import _measured
    from tools.cross_device import FIT_K, fit_classic, fit_prior
    from tools.evaluate import summarise

    rng = np.random.default_rng(3)
    sets = {"a": _measured(rng)[0], "b": _measured(rng, writers=6)[0]}
    prior, threshold, per_set = fit_classic(sets)
    assert prior == fit_prior(list(sets.values()))
    for name, m in sets.items():
        s = summarise(m.scores(FIT_K, prior), "skilled")
        assert s is not None and per_set[name] == pytest.approx(s["threshold_global"])
    assert threshold == pytest.approx((per_set["a"] + per_set["b"]) / 2)


def test_the_prior_is_each_sets_mean_over_its_draws_then_the_sets_mean_and_an_empty_set_counts_for_nothing() -> None:
    import numpy as np

    from models.scoring import reference_stats
    from tests.tools.test_score_norms import _measured
    from tools.cross_device import FIT_K, Measured, fit_prior

    rng = np.random.default_rng(5)
    sets = [_measured(rng)[0], _measured(rng, writers=6)[0]]
    per_set = []
    for m in sets:
        stats = [reference_stats(d_cc[np.ix_(draw, draw)]) for p, d_cc, _ in m.by_k[FIT_K] for draw in p.draws]
        per_set.append((np.mean([s.min_dist for s in stats]), np.mean([s.mean_dist for s in stats])))
    want = np.round(np.mean(per_set, axis=0), 4)
    empty = Measured()
    empty.by_k[FIT_K] = []
    prior = fit_prior([sets[0], empty, sets[1]])
    assert (prior.min_dist, prior.mean_dist) == (float(want[0]), float(want[1]))
    with pytest.raises(ValueError, match="no writer"):
        fit_prior([empty])


def test_the_no_pressure_scale_is_the_ratio_of_the_population_statistics_with_and_without() -> None:
    """``fit_no_pressure_scale``: recorded over without, the min and mean ratios' mean."""
    import numpy as np

    from tests.tools.test_score_norms import _measured
    from tools.cross_device import FIT_K, Measured, fit_no_pressure_scale, population_statistics
    from tools.cross_device import _min_and_mean as min_and_mean

    rng = np.random.default_rng(11)
    recorded = [_measured(rng)[0], _measured(rng, writers=6)[0]]

    def shortened(m: Measured, by: float) -> Measured:
        out = Measured()
        out.by_k[FIT_K] = [(p, d_cc * by, {k: v * by for k, v in dq.items()}) for p, d_cc, dq in m.by_k[FIT_K]]
        return out

    assert fit_no_pressure_scale(recorded, [shortened(m, 0.8) for m in recorded]) == pytest.approx(1.25, abs=1e-3)
    # The min and the mean shortened differently: the two ratios are averaged.
    without = [shortened(recorded[0], 0.8), shortened(recorded[1], 0.9)]
    a = population_statistics(recorded, min_and_mean)
    b = population_statistics(without, min_and_mean)
    assert fit_no_pressure_scale(recorded, without) == pytest.approx(float(np.mean(a / b)), abs=1e-3)
    assert 1.11 < fit_no_pressure_scale(recorded, without) < 1.25
