"""``sigkiosk capture`` through its own argparse registration (the full CLI loads every module)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from capture_helpers import synthetic_signature

from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.recording import replay, write_recording
from tools.commands import capture_cmd


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sigkiosk")
    sub = parser.add_subparsers(dest="command", required=True)
    capture_cmd.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.fixture()
def recording(tmp_path):
    traj = synthetic_signature(seed=21, n_strokes=2, rate_hz=400.0)
    stream = trajectory_to_events(traj, GeneratorOptions(hover_frames=2, drop_frames=(15,)))
    path = tmp_path / "in.evrec"
    write_recording(path, stream.caps, stream.items, source="generated:test")
    return path, traj


def test_list_without_devices_points_to_recordings(tmp_path, capsys):
    assert run(["capture", "list", "--input-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 readable, 0 pen-capable" in out and "--from-recording" in out


def test_record_from_a_recording_through_the_live_loop(tmp_path, recording, capsys):
    src, traj = recording
    out_path = tmp_path / "out.evrec.gz"
    rc = run(["capture", "record", "-o", str(out_path), "--from-recording", str(src),
              "--pen-up-timeout", "0.1", "--speed", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 strokes" in out and "1 gaps" in out and "ended by pen-up-timeout" in out
    # What was recorded replays to the same signature as the source.
    _, a, _ = replay(src)
    _, b, _ = replay(out_path)
    assert len(a) == len(b) == 1
    np.testing.assert_array_equal(a[0].trajectory.x, b[0].trajectory.x)
    assert run(["capture", "replay", str(out_path)]) == 0
    assert run(["capture", "list", "--recording", str(out_path)]) == 0
    text = capsys.readouterr().out
    assert "1 signature(s)" in text and "BTN_TOOL_PEN" in text and "source simulated:in.evrec" in text
    # Counts and capabilities only: not one coordinate of the signature is printed.
    xs = {f"{v:.2f}" for v in traj.x[:20]}
    assert not any(x in text for x in xs)


def test_record_without_a_device_says_what_to_do(tmp_path, capsys):
    rc = run(["capture", "record", "-o", str(tmp_path / "x.evrec"), "--input-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no pen device" in err and "--from-recording" in err
    assert not (tmp_path / "x.evrec").exists()
