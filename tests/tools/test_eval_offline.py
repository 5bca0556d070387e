"""``sigkiosk eval offline`` end to end on real scans (the Dutch set's validation writers, and a
CEDAR-layout folder made of Dutch images), and its answers to bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.anomaly import AnomalyModel
from models.hand_features import hand_features
from tests.shared_data import shared_data
from tools.cli import main
from tools.datasets import Dataset, Label, OnlineSample, load_images
from tools.evaluate import Scores, evaluate
from tools.evaluate_offline import HandProvider, evaluate_offline, load_fusion
from tools.synth import make_population

DUTCH = shared_data("offline/sigcomp-dutch-kaggle")
KEYS = {"eer_global", "eer_user_mean", "frr_at_far_1", "threshold_global", "genuine_trials", "impostor_trials",
        "writers"}


@pytest.fixture(scope="module")
def online_keys() -> set[str]:
    """The report keys of the pen evaluator, from a tiny synthetic pen set."""
    pop = make_population(n_writers=3, n_genuine=7, n_forgeries=2, seed=5)
    writers = {
        w: [OnlineSample(w, Label.GENUINE, tr, Path(f"{w}-g{i}"), i) for i, tr in enumerate(g)]
        + [OnlineSample(w, Label.SKILLED, tr, Path(f"{w}-f{i}"), i) for i, tr in enumerate(f)]
        for w, (g, f) in pop.items()
    }
    report = evaluate(Dataset("synthetic", writers), references=5, trials=1).report
    # The CLI adds the split, and the JSON what made it (tools/provenance.py).
    return set(report) | {"split", "command", "git_commit", "models_sha256"}


@pytest.fixture(scope="module")
def cedar(tmp_path_factory) -> Path:
    """Four Dutch writers renamed to the CEDAR layout (genuine in full_org/, forgeries in full_forg/)."""
    root = tmp_path_factory.mktemp("cedar")
    (root / "full_org").mkdir()
    (root / "full_forg").mkdir()
    for w in ("001", "002", "003", "004"):
        for n, p in enumerate(sorted((DUTCH / w).glob("*.png")), start=1):
            shutil.copy(p, root / "full_org" / f"original_{int(w)}_{n}.png")
        for n, p in enumerate(sorted((DUTCH / f"{w}_forg").glob("*.png"))[:6], start=1):
            shutil.copy(p, root / "full_forg" / f"forgeries_{int(w)}_{n}.png")
    return root


def run(args: list[str]) -> int:
    return main(["eval", "offline", *[str(a) for a in args]])


def test_dutch_validation_end_to_end(tmp_path, online_keys, capsys):
    out = tmp_path / "report.json"
    plots = tmp_path / "plots"
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-k", "5", "-t", "3", "--json", out,
              "--plots", plots])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert set(report) == online_keys
    # The default is the kiosk's paper verifier: CNN-LSTM, hand features and gradient histograms fused.
    assert report["verifier"] == "cnn+hand+hog" and set(report["components"]) == {"cnn", "hand", "hog"}
    # Its model, the model's config and the fusion, each by its SHA-256.
    from models.offline_embed import DEFAULT_MODEL
    from tools.evaluate_offline import DEFAULT_FUSION

    used = (DEFAULT_MODEL, DEFAULT_MODEL.with_name(DEFAULT_MODEL.stem + ".config.json"), DEFAULT_FUSION,
            DEFAULT_FUSION.with_name("hog_centre.npz"))
    assert report["models_sha256"] == {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in used}
    assert report["writers"] == 6 and report["split"] == "validate"
    for kind in ("skilled", "random"):
        assert set(report[kind]) == KEYS
    # Another writer's signature is far easier to reject than a skilled forgery; both beat chance.
    assert report["random"]["eer_global"] < report["skilled"]["eer_global"] < 40.0
    assert (plots / "det.png").stat().st_size > 0 and (plots / "histogram.png").stat().st_size > 0
    assert "skilled" in capsys.readouterr().out


def test_anomaly_check_reports_each_part(tmp_path, online_keys, capsys):
    out = tmp_path / "report.json"
    plots = tmp_path / "plots"
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "hand", "--anomaly",
              "--json", out, "--plots", plots])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert set(report) == online_keys
    assert report["verifier"] == "hand+anomaly"
    assert set(report["components"]) == {"hand", "anomaly"}
    assert 0.0 < report["components"]["anomaly"]["eer_global"] < 50.0
    # Fused values are minus a logit (negative for most genuine trials): still plotted.
    assert (plots / "histogram.png").stat().st_size > 0


def test_anomaly_scores_follow_the_trial_order():
    """The anomaly part is aligned with the distance part trial for trial (they are fused row by
    row): recompute one writer's first draw by hand and compare."""
    ds = load_images(DUTCH, "sigcomp-dutch").subset("validate")
    run_ = evaluate_offline(ds, providers=[HandProvider()], trials=1, anomaly=True, fit=True)
    anomaly: Scores = run_.parts["anomaly"]
    from tools.evaluate import plan

    plans, _ = plan(ds, "random-refs", 5, 1, 0)
    p = plans[0]
    forest = AnomalyModel(np.array([hand_features(p.candidates[i].image) for i in p.draws[0]]))
    expected = forest.scores(np.array([hand_features(s.image) for s in p.skilled]))
    assert np.array_equal(anomaly.skilled[p.writer][: len(p.skilled)], expected)
    assert len(anomaly.genuine[p.writer]) == len(run_.parts["hand"].genuine[p.writer])


def test_fit_fusion_on_validation_then_use_it(tmp_path, capsys):
    fusion = tmp_path / "fusion.json"
    assert run([DUTCH, "--format", "sigcomp-dutch", "--split", "test", "--verifier", "hand", "--fit-fusion", fusion]) == 2
    assert "validate" in capsys.readouterr().err and not fusion.exists()
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "2", "--verifier", "hand",
              "--fit-fusion", fusion])
    assert rc == 0, capsys.readouterr().err
    stored = json.loads(fusion.read_text())
    assert stored["hand"]["names"] == ["hand", "anomaly"] and "--split validate" in stored["hand"]["command"]
    assert all(w <= 0 for w in load_fusion("hand", fusion).weights)
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "hand", "--anomaly",
              "--fusion", fusion])
    assert rc == 0, capsys.readouterr().err
    # A fusion file without an entry for the verifier is a clear error.
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "--anomaly", "--verifier", "hand",
              "--fusion", tmp_path / "missing.json"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_cedar_layout(cedar, tmp_path, capsys):
    out = tmp_path / "cedar.json"
    rc = run([cedar, "--format", "cedar", "-k", "5", "-t", "2", "--json", out])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["dataset"] == "cedar" and report["writers"] == 4
    assert report["skilled"]["impostor_trials"] == 4 * 2 * 6
    assert report["random"]["impostor_trials"] == 4 * 2 * 3


def test_missing_and_empty_folders(tmp_path, capsys):
    assert run([tmp_path / "nowhere", "--format", "cedar"]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run([tmp_path / "empty", "--format", "sigcomp-dutch"]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (lambda good: good[: len(good) // 2], "truncated PNG"),
        (lambda good: b"this is not a picture\n", "not a picture OpenCV can read"),
        (None, "no usable signature"),  # a real, readable, blank page
    ],
)
def test_bad_image_with_and_without_skip(cedar, tmp_path, capsys, content, why):
    import cv2

    bad_root = tmp_path / "cedar"
    shutil.copytree(cedar, bad_root)
    bad = bad_root / "full_org" / "original_2_3.png"
    if content is None:
        cv2.imwrite(str(bad), np.full((200, 420), 235, np.uint8))
    else:
        bad.write_bytes(content(bad.read_bytes()))
    rc = run([bad_root, "--format", "cedar", "-t", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and why in err and "original_2_3.png" in err
    out = tmp_path / "r.json"
    rc = run([bad_root, "--format", "cedar", "-t", "1", "--skip-malformed", "--json", out])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert len(report["skipped_files"]) == 1 and "original_2_3.png" in report["skipped_files"][0]
    assert report["writers"] == 4


def test_too_few_references_for_the_anomaly_check(cedar, capsys):
    assert run([cedar, "--format", "cedar", "-k", "2", "-t", "1", "--verifier", "hand", "--anomaly"]) == 2
    assert "at least 3 reference signatures" in capsys.readouterr().err


def test_missing_cnn_model_is_a_clear_error(tmp_path, capsys):
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "--verifier", "cnn",
              "--model", tmp_path / "none.tflite"])
    assert rc == 2 and "none.tflite" in capsys.readouterr().err


def test_cnn_verifier_with_and_without_the_anomaly_check(tmp_path, online_keys, capsys):
    """The shipped int8 CNN-LSTM through the device runtime, and its shipped fusion."""
    out = tmp_path / "cnn.json"
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "cnn", "--json", out])
    assert rc == 0, capsys.readouterr().err
    alone = json.loads(out.read_text())
    assert set(alone) == online_keys and alone["verifier"] == "cnn" and alone["components"] is None
    assert alone["random"]["eer_global"] < alone["skilled"]["eer_global"] < 40.0
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "cnn", "--anomaly",
              "--json", out])
    assert rc == 0, capsys.readouterr().err
    fused = json.loads(out.read_text())
    assert fused["verifier"] == "cnn+anomaly" and set(fused["components"]) == {"cnn", "anomaly"}
    # The components are the parts as measured alone: the CNN's is the run without the check.
    assert fused["components"]["cnn"] == alone["skilled"]
    assert fused["skilled"]["genuine_trials"] == alone["skilled"]["genuine_trials"]


def test_cnn_and_hand_fused(tmp_path, capsys):
    out = tmp_path / "both.json"
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "cnn+hand",
              "--json", out])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["verifier"] == "cnn+hand" and set(report["components"]) == {"cnn", "hand"}
    # With the anomaly check: its own entry (cnn+hand+anomaly) fuses the three.
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "cnn+hand",
              "--anomaly", "--json", out])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["verifier"] == "cnn+hand+anomaly" and set(report["components"]) == {"cnn", "hand", "anomaly"}
    # A fusion file without that entry is a clear error, not the two-part fusion used for three.
    only_two = tmp_path / "two.json"
    entries = json.loads((Path(__file__).resolve().parents[2] / "models/assets/offline_fusion.json").read_text())
    only_two.write_text(json.dumps({"cnn+hand": entries["cnn+hand"]}))
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "cnn+hand",
              "--anomaly", "--fusion", only_two])
    assert rc == 2 and "no fusion for 'cnn+hand+anomaly'" in capsys.readouterr().err


def test_the_hog_prior_is_what_its_command_fits() -> None:
    """The histograms' prior (kept with their mean) is the mean within-reference statistics of the
    centred histograms over the protocol's draws on the Dutch training writers, as ``fit_prior``
    (its docstring's command) computes them from the shipped code: a change to ``models.hog``
    that moves them fails here."""
    from models.hog import shipped_centre
    from tools.evaluate_offline import HogProvider, fit_prior

    fitted = fit_prior(load_images(DUTCH, "sigcomp-dutch").subset("train"), HogProvider())
    assert fitted == shipped_centre().prior


def test_hog_alone_and_in_the_kiosks_fusion(tmp_path, capsys):
    """The gradient histograms alone tell the Dutch validation writers' forgeries from their genuine
    signatures better than chance, and the default fuses them with the CNN and the hand features."""
    out = tmp_path / "hog.json"
    rc = run([DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "hog", "--json", out])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["verifier"] == "hog" and report["random"]["eer_global"] < report["skilled"]["eer_global"] < 30.0
    # The one file they read: the mean they are centred on, with its prior (beside the fusion).
    centre = Path(__file__).resolve().parents[2] / "models/assets/hog_centre.npz"
    assert report["models_sha256"] == {str(centre): hashlib.sha256(centre.read_bytes()).hexdigest()}


def test_the_histograms_are_centred_on_the_fusions_folders_mean(tmp_path, capsys):
    """As on the kiosk, the mean comes from the fusion's folder: a folder without one is refused
    with a clear error, and a folder with another mean scores otherwise."""
    assets = Path(__file__).resolve().parents[2] / "models/assets"
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(assets / "offline_fusion.json", lone / "offline_fusion.json")
    args = [DUTCH, "--format", "sigcomp-dutch", "--split", "validate", "-t", "1", "--verifier", "hog"]
    assert run([*args, "--fusion", lone / "offline_fusion.json"]) == 2
    assert "hog_centre.npz: no usable mean descriptor" in capsys.readouterr().err
    from models.hog import HogCentre, centre_bytes, shipped_centre

    shipped = shipped_centre()
    (lone / "hog_centre.npz").write_bytes(centre_bytes(HogCentre(shipped.mean * 0.5, shipped.prior)))
    reports = {}
    for name, fusion in (("shipped", assets / "offline_fusion.json"), ("other", lone / "offline_fusion.json")):
        assert run([*args, "--fusion", fusion, "--json", tmp_path / f"{name}.json"]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["other"]["skilled"] != reports["shipped"]["skilled"]
    assert str(lone / "hog_centre.npz") in reports["other"]["models_sha256"]


def test_the_cnn_and_the_histograms_share_one_prepared_picture() -> None:
    """``prepare`` is the costly step of a picture's features: the kiosk's parts that read the
    prepared picture get it once per sample, and only the last one is kept."""
    from tools.evaluate_offline import Prepared, make_providers

    cnn, _, hog = make_providers("cnn+hand+hog")
    assert isinstance(cnn.prepared, Prepared) and cnn.prepared is hog.prepared  # type: ignore[attr-defined]
    a, b = next(iter(load_images(DUTCH, "sigcomp-dutch").subset("validate").writers.values()))[:2]
    first = cnn.prepared(a)  # type: ignore[attr-defined]
    assert hog.prepared(a) is first  # type: ignore[attr-defined]
    other = hog.prepared(b)  # type: ignore[attr-defined]
    assert other is not first and not np.array_equal(other, first)
    assert np.array_equal(hog.prepared(a), first)  # type: ignore[attr-defined]
