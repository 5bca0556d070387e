"""``sigkiosk train synth-sheet``: the PNG sheet and the run record with the fits' SNR, on a few real
training signatures; bad arguments refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]


def test_sheet_and_record(tmp_path: Path) -> None:
    data = shared_data("online").parent
    out = tmp_path / "sheet"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "synth-sheet", "--data", str(data), "--out", str(out),
         "--sets", "susig-blind", "sigcomp2009-nfi", "--per-set", "1", "--duplicates", "2", "--forgery-like", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = cv2.imread(str(out / "synth_sheet.png"))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 500
    assert img.std() > 5  # ink on the page, not a blank image
    rec = json.loads((out / "synth.run.json").read_text())
    assert rec["fitted"] == 2 and set(rec["data_sha256"]) == {"susig-blind", "sigcomp2009-nfi"}
    assert "train synth-sheet" in rec["command"] and rec["seed"] == 0
    for f in rec["fits"]:
        assert f["snr_velocity_db"] >= 15.0 and f["snr_trajectory_db"] >= 20.0
        assert f["key"].split(":")[0] in ("susig-blind", "sigcomp2009-nfi")
    assert rec["snr"]["velocity_db"]["min"] >= 15.0
    assert "velocity SNR median" in proc.stdout


def test_unknown_set_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", "synth-sheet", "--data", str(shared_data("online").parent),
         "--out", str(tmp_path / "x"), "--sets", "no-such-set"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "unknown set" in proc.stderr
