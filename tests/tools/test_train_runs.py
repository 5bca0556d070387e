"""Training that cannot hurt (``tools/train/runs.py``), without TensorFlow: new run folders, the
shipped folder refused as ``--out``, what counts as a degenerate model, atomic shipping, the progress
bar on a terminal and not in a pipe, TensorFlow's C++ noise filtered, and provenance records.
The end-to-end runs (default folder, ``--ship``, a degenerate run refused) are in
``test_train_quick.py`` and ``test_train_offline_quick.py``."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import struct
import termios
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from tools import provenance
from tools.train import runs
from tools.train.loop import progress


def test_each_run_gets_a_new_folder_even_in_the_same_second(tmp_path: Path) -> None:
    now = datetime(2026, 11, 26, 2, 30, 5, tzinfo=timezone.utc)
    a = runs.new_run_dir("online", tmp_path, now)
    (a / "tsgatr.run.json").write_text("{}")
    b = runs.new_run_dir("online", tmp_path, now)
    assert a.name == "online-20261126T023005Z" and b.name == "online-20261126T023005Z-2"
    assert a.is_dir() and b.is_dir() and not list(b.iterdir())


def test_out_may_not_be_the_shipped_folder(tmp_path: Path) -> None:
    assets = tmp_path / "models" / "assets"
    assets.mkdir(parents=True)
    with pytest.raises(runs.RunError, match="--ship"):
        runs.output_dir(tmp_path / "models" / ".." / "models" / "assets", "online", assets)
    assert runs.output_dir(tmp_path / "run", "online", assets) == tmp_path / "run"


@pytest.mark.parametrize(("eers", "outputs", "why"), [
    ({"int8": 50.0}, None, "EER 50.0 % >= 40 %"),
    ({"int8": float("nan")}, None, "not a number"),
    ({"int8": 12.0}, {"int8": np.ones((3, 8, 4))}, "same embedding"),
    ({"int8": 12.0}, {"int8": np.array([[0.1, np.nan], [0.2, 0.3]])}, "NaN"),
])
def test_degenerate_models_are_named(eers: dict, outputs: dict | None, why: str) -> None:
    problems = runs.model_problems(eers, 40.0, outputs)
    assert len(problems) == 1 and why in problems[0] and "int8" in problems[0]


def test_a_model_that_tells_writers_apart_passes() -> None:
    rng = np.random.default_rng(0)
    assert runs.model_problems({"float": 12.5, "int8": 14.0}, 40.0, {"int8": rng.normal(size=(3, 8, 4))}) == []
    # The gate is a real option: a stricter --max-eer fails the same figures.
    assert len(runs.model_problems({"float": 12.5, "int8": 14.0}, 13.0)) == 1


def test_ship_replaces_every_file_and_leaves_no_partial_copy(tmp_path: Path) -> None:
    run_dir, assets = tmp_path / "run", tmp_path / "assets"
    run_dir.mkdir()
    assets.mkdir()
    (assets / "m.tflite").write_bytes(b"old model")
    (assets / "other.json").write_text("kept")
    (run_dir / "m.tflite").write_bytes(b"new model")
    (run_dir / "m.config.json").write_text("{}")
    done = runs.ship(run_dir, ["m.tflite", "m.config.json"], assets)
    assert [p.name for p in done] == ["m.tflite", "m.config.json"]
    assert (assets / "m.tflite").read_bytes() == b"new model" and (assets / "other.json").read_text() == "kept"
    assert sorted(p.name for p in assets.iterdir()) == ["m.config.json", "m.tflite", "other.json"]


def test_progress_bar_draws_on_a_terminal_and_not_in_a_pipe() -> None:
    master, slave = os.openpty()
    # A terminal of 100 columns (a pty starts at 0, where tqdm has no room to draw a bar).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    with os.fdopen(slave, "w", closefd=True) as tty:
        bar = progress(3, "teacher epoch 1/12", file=tty)
        bar.update(3)
        bar.close()
        tty.flush()
        drawn = os.read(master, 65536).decode()
    os.close(master)
    assert "teacher epoch 1/12:" in drawn and "0/3" in drawn and "%|" in drawn
    pipe = io.StringIO()
    bar = progress(3, "teacher epoch 1/12", file=pipe)
    bar.update(3)
    bar.close()
    assert pipe.getvalue() == ""


def test_tensorflow_cpp_noise_is_filtered_and_real_errors_kept(capfd: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "_quiet", True)
    with runs.tf_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795658782.803709   17530 port.cc:153] oneDNN custom operations are on.\n"
                    b"W0000 00:00:1795658863.236654   17530 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n"
                    b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8\n"
                    b"E0000 00:00:1795658863.2 17530 op.cc:1] a real error\n")
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1795658863.2 17530 op.cc:1] a real error\n"


def test_provenance_records_command_commit_and_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model bytes")
    monkeypatch.setattr(provenance, "_argv", ["eval", "online", "data", "--verifier", "learned"])
    rec = provenance.provenance([model, tmp_path / "absent.json"])
    assert rec["command"] == "sigkiosk eval online data --verifier learned"
    assert rec["git_commit"] is not None and len(rec["git_commit"].split("-")[0]) == 40
    # Every file used, by its SHA-256; a file that is not there is not claimed.
    assert rec["models_sha256"] == {str(model): hashlib.sha256(b"model bytes").hexdigest()}
    # Outside a git checkout (an installed wheel) the commit is None, not an error.
    assert provenance.git_commit(tmp_path) is None
