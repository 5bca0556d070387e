"""``sigkiosk eval online`` end to end on tiny sets written to the SVC2004 and MCYT specifications."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.trajectory import Trajectory
from tools.cli import main
from tools.synth import make_population

KEYS = {"eer_global", "eer_user_mean", "frr_at_far_1"}


@pytest.fixture(scope="module")
def population():
    return make_population(n_writers=6, n_genuine=12, n_forgeries=4, seed=11)


def svc_rows(tr: Trajectory) -> str:
    t_ms = np.round(tr.t * 1000).astype(int) + 123456  # SVC timestamps do not start at 0
    rows = [
        f"{round(x * 100)} {round(y * 100)} {t} {2 if d else 0} 1500 600 {round(p * 1023)}"
        for x, y, t, d, p in zip(tr.x, tr.y, t_ms, tr.pen_down, tr.pressure)
    ]
    return f"{len(rows)}\n" + "\n".join(rows) + "\n"


def mcyt_rows(tr: Trajectory) -> str:
    return "".join(
        f"{t:.3f} {round(x * 100)} {round(y * 100)} {round(p * 1024)} {0 if d else 1} 900 500\n"
        for t, x, y, p, d in zip(tr.t, tr.x, tr.y, tr.pressure, tr.pen_down)
    )


def write_svc(root: Path, population) -> Path:
    root.mkdir()
    for u, (genuine, forged) in enumerate(population.values(), start=1):
        for s, tr in enumerate(genuine, start=1):
            (root / f"U{u}S{s}.TXT").write_text(svc_rows(tr))
        for s, tr in enumerate(forged, start=21):
            (root / f"U{u}S{s}.TXT").write_text(svc_rows(tr))
    return root


def write_mcyt(root: Path, population) -> Path:
    (root / "enrollment").mkdir(parents=True)
    (root / "verification").mkdir()
    gt, users = [], []
    for w, (genuine, forged) in population.items():
        users.append(w)
        for n, tr in enumerate(genuine[:5], start=1):
            (root / "enrollment" / f"{w}-g-{n:02d}.txt").write_text(mcyt_rows(tr))
        questioned = [(tr, "g") for tr in genuine[5:9]] + [(tr, "f") for tr in forged]
        for n, (tr, lab) in enumerate(questioned, start=1):
            (root / "verification" / f"{w}-{n:02d}.txt").write_text(mcyt_rows(tr))
            gt.append(f"{w}-{n:02d} {lab}")
    (root / "gt.txt").write_text("\n".join(gt) + "\n")
    (root / "users_valid.txt").write_text("\n".join(users) + "\n")
    return root


def check_report(report: dict, writers: int) -> None:
    assert report["writers"] == writers
    for kind in ("skilled", "random"):
        assert KEYS <= set(report[kind])
        for k in KEYS:
            assert 0.0 <= report[kind][k] <= 100.0
    # Another writer's signature is easy to reject; a skilled imitation is harder.
    assert report["random"]["eer_global"] <= 5.0
    assert report["skilled"]["eer_global"] < 40.0
    assert report["skilled"]["eer_global"] >= report["random"]["eer_global"]


def test_svc2004_random_refs(tmp_path, population, capsys):
    data = write_svc(tmp_path / "svc", population)
    out = tmp_path / "out"
    rc = main(["eval", "online", str(data), "--format", "svc2004", "-k", "5", "-t", "3",
               "--json", str(out / "r.json"), "--plots", str(out / "plots")])
    assert rc == 0
    report = json.loads((out / "r.json").read_text())
    assert report["protocol"] == "random-refs" and report["references"] == 5
    check_report(report, writers=6)
    # 3 draws x (7 genuine beyond the first 10 + 5 undrawn candidates) per writer
    assert report["skilled"]["genuine_trials"] == 6 * 3 * (2 + 5)
    for png in ("det.png", "histogram.png"):
        img = cv2.imread(str(out / "plots" / png))
        assert img is not None and img.shape[0] > 100
    table = capsys.readouterr().out
    assert "skilled" in table and "random" in table
    # What made the report: the command, the commit, and the one model file the default verifier
    # (the kiosk's: the match score) reads.
    from models.match_score import SHIPPED

    assert report["verifier"] == "match-score"
    assert report["command"].startswith("sigkiosk eval online ") and "--format svc2004" in report["command"]
    assert report["git_commit"] and len(report["git_commit"].split("-")[0]) == 40
    assert list(report["models_sha256"]) == [str(SHIPPED)]
    # The plots mark what the report says: each EER, and the threshold that attains it.
    det, hist = (png_text(out / "plots" / n) for n in ("det.png", "histogram.png"))
    for text in (det, hist):
        marks = json.loads(text["Description"])
        for kind in ("skilled", "random"):
            assert marks[kind]["eer"] == pytest.approx(report[kind]["eer_global"], abs=1e-3)
            assert marks[kind]["threshold"] == pytest.approx(report[kind]["threshold_global"], abs=1e-5)
    assert det["Title"] == "DET: svc2004 (all writers), match-score verifier, K=5"
    assert hist["Title"] == "Scores: svc2004 (all writers), match-score verifier, K=5"


def png_text(path: Path) -> dict[str, str]:
    """A PNG's text chunks (matplotlib writes the ``metadata`` given to ``savefig`` there)."""
    from PIL import Image

    with Image.open(path) as im:
        return dict(im.text)


def test_fused_report_names_its_model_files_and_its_plots_differ(tmp_path, population):
    """The learned and fused reports carry the SHA-256 of the model, its config and the fusion they
    read; their plots are titled apart from the classic ones of the same data."""
    import hashlib

    from models.learned import config_path
    from tools.evaluate import DEFAULT_MODEL

    data = write_svc(tmp_path / "svc", population)
    titles = {}
    for verifier in ("classic", "fused"):
        out = tmp_path / verifier
        assert main(["eval", "online", str(data), "--format", "svc2004", "-t", "1", "--verifier", verifier,
                     "--json", str(out / "r.json"), "--plots", str(out / "plots")]) == 0
        titles[verifier] = png_text(out / "plots" / "histogram.png")["Title"]
    report = json.loads((tmp_path / "fused" / "r.json").read_text())
    files = (DEFAULT_MODEL, config_path(DEFAULT_MODEL), DEFAULT_MODEL.with_name("fused_score.json"))
    assert report["models_sha256"] == {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert "--verifier fused" in report["command"]
    assert titles["classic"] != titles["fused"] and "fused verifier" in titles["fused"]


def test_match_score_report_names_its_model_and_shows_classic_beside_it(tmp_path, population, capsys):
    import hashlib

    from models.match_score import SHIPPED

    data = write_svc(tmp_path / "svc", population)
    assert main(["eval", "online", str(data), "--format", "svc2004", "-t", "2", "--verifier", "match-score",
                 "--json", str(tmp_path / "m.json")]) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    check_report(report, writers=6)
    assert report["verifier"] == "match-score"
    assert report["models_sha256"] == {str(SHIPPED): hashlib.sha256(SHIPPED.read_bytes()).hexdigest()}
    assert KEYS <= set(report["components"]["classic"])
    assert "component classic" in capsys.readouterr().out
    # A broken model file is a clear error, not a traceback.
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "sigkiosk-match-score/1", "weights": [1.0]}')
    assert main(["eval", "online", str(data), "--format", "svc2004", "--verifier", "match-score",
                 "--model", str(bad)]) == 2
    assert "match-score model" in capsys.readouterr().err


def test_mcyt_fixed_enrollment(tmp_path, population):
    data = write_mcyt(tmp_path / "mcyt", population)
    rc = main(["eval", "online", str(data), "--format", "mcyt-exercise", "--json", str(tmp_path / "m.json")])
    assert rc == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["protocol"] == "fixed-enrollment"
    check_report(report, writers=6)
    assert report["skilled"]["genuine_trials"] == 6 * 4
    assert report["skilled"]["impostor_trials"] == 6 * 4


def test_malformed_file_is_named_and_can_be_skipped(tmp_path, population, capsys):
    data = write_svc(tmp_path / "svc", population)
    (data / "U2S3.TXT").write_text("5\n1 2 3 1 0 0 100\nnot a row\n")
    assert main(["eval", "online", str(data), "--format", "svc2004", "-t", "1"]) == 2
    err = capsys.readouterr().err
    assert "U2S3.TXT" in err
    assert main(["eval", "online", str(data), "--format", "svc2004", "-t", "1", "--skip-malformed",
                 "--json", str(tmp_path / "s.json")]) == 0
    report = json.loads((tmp_path / "s.json").read_text())
    assert len(report["skipped_files"]) == 1 and "U2S3.TXT" in report["skipped_files"][0]


def test_svc2004_files_with_small_clock_glitches_are_read_and_counted(tmp_path, population, capsys):
    """Real SVC2004 sets have files with one 8-9 ms step back; they are re-timed, not refused."""
    data = write_svc(tmp_path / "svc", population)
    glitched = ["U1S3.TXT", "U2S22.TXT", "U4S7.TXT"]
    for name in glitched:
        lines = (data / name).read_text().splitlines()
        row = lines[40].split()  # the 40th point: stamped 8 ms before its predecessor
        row[2] = str(int(lines[39].split()[2]) - 8)
        lines[40] = " ".join(row)
        (data / name).write_text("\n".join(lines) + "\n")
    rc = main(["eval", "online", str(data), "--format", "svc2004", "-t", "1", "--json", str(tmp_path / "g.json")])
    assert rc == 0  # no --skip-malformed
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["skipped_files"] == []
    assert report["clock_repairs"]["files_retimed"] == 3
    assert report["clock_repairs"]["backward_steps_retimed"] == 3
    assert "3 small backward time step(s) re-timed in 3 file(s)" in capsys.readouterr().err


def test_split_keeps_writers_disjoint(tmp_path, population):
    data = write_svc(tmp_path / "svc", population)
    # writers 1..6: last digits 1-6 are all training writers; the test split is empty
    assert main(["eval", "online", str(data), "--format", "svc2004", "--split", "test"]) == 2
    assert main(["eval", "online", str(data), "--format", "svc2004", "--split", "train", "-t", "1",
                 "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["writers"] == 6
