"""Recordings: the file format round-trips, replays through the same assembler, and rejects
malformed files with the file and line named."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from capture_helpers import synthetic_signature

from firmware_host.assembler import SegmenterConfig, assemble
from firmware_host.errors import RecordingFormatError
from firmware_host.events import DeviceState, DoneMarker
from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.recording import (
    RecordingWriter,
    iter_recording,
    read_recording,
    replay,
    write_recording,
)


@pytest.fixture()
def stream():
    return trajectory_to_events(synthetic_signature(seed=5), GeneratorOptions(hover_frames=2, drop_frames=(20,)))


@pytest.mark.parametrize("suffix", [".evrec", ".evrec.gz"])
def test_write_read_replay(tmp_path, stream, suffix):
    path = tmp_path / f"sig{suffix}"
    items = [*stream.items, DoneMarker(1_700_000_099.0)]
    n = write_recording(path, stream.caps, items, source="generated:test")
    assert n == len(items)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # biometric data
    header, back = read_recording(path)
    assert header.device == stream.caps and header.source == "generated:test"
    assert len(back) == len(items)
    for a, b in zip(items, back):
        if isinstance(a, (DeviceState, DoneMarker)):
            assert a == b
        else:
            assert (a.sec, a.usec, a.type, a.code, a.value) == (b.sec, b.usec, b.type, b.code, b.value)
    _, sigs, stats = replay(path, SegmenterConfig(pen_up_timeout=5.0))
    direct, _ = assemble(stream.caps, items, SegmenterConfig(pen_up_timeout=5.0))
    assert len(sigs) == len(direct) == 1
    np.testing.assert_array_equal(sigs[0].trajectory.x, direct[0].trajectory.x)
    assert sigs[0].trajectory.gaps == direct[0].trajectory.gaps == (20,)
    assert stats.syn_dropped == 1


def test_failed_recording_leaves_no_file(tmp_path, stream):
    path = tmp_path / "x.evrec"
    with pytest.raises(RuntimeError):
        with RecordingWriter(path, stream.caps) as w:
            w.write(stream.items[0])
            raise RuntimeError("device unplugged")
    assert not path.exists() and list(tmp_path.iterdir()) == []


BAD_LINES = [
    ("[1, 2, 3]", "sec, usec, type, code, value"),
    ("[1, 2000000, 3, 0, 0]", "usec out of range"),
    ("[1, 2, 70000, 0, 0]", "16-bit"),
    ("[1, 2, 3, 0, 9999999999]", "32-bit"),
    ('[1, 2, 3, 0, "x"]', "integers"),
    ('{"state": {"abs": {"ABS_NOPE": 1}}}', "unknown event code"),
    ('{"state": {"abs": {"ABS_X": "a"}}}', "bad device state"),
    ('{"done": "soon"}', "done time"),
    ('{"what": 1}', "not an event"),
    ("not json", "not JSON"),
]


@pytest.mark.parametrize("line,message", BAD_LINES)
def test_bad_item_lines_name_file_and_line(tmp_path, stream, line, message):
    path = tmp_path / "bad.evrec"
    write_recording(path, stream.caps, stream.items[:3])
    with path.open("a") as fh:
        fh.write(line + "\n")
    header, items = iter_recording(path)
    with pytest.raises(RecordingFormatError, match=message) as info:
        list(items)
    assert info.value.line == 5 and info.value.path == path


@pytest.mark.parametrize("header,message", [
    ("", "empty file"),
    ("{]", "not JSON"),
    ('{"format": "other"}', "not a sigkiosk-evrec"),
    ('{"format": "sigkiosk-evrec", "version": 9}', "unsupported version"),
    ('{"format": "sigkiosk-evrec", "version": 1, "device": {"abs": {"ABS_X": {"min": 5, "max": 1}}}}',
     "range inverted"),
])
def test_bad_headers(tmp_path, header, message):
    path = tmp_path / "bad.evrec"
    path.write_text(header + ("\n" if header else ""))
    with pytest.raises(RecordingFormatError, match=message):
        iter_recording(path)


def test_truncated_gzip_is_a_format_error(tmp_path, stream):
    path = tmp_path / "sig.evrec.gz"
    write_recording(path, stream.caps, stream.items)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingFormatError):
        _, items = iter_recording(path)
        list(items)


def test_header_is_documented_json(tmp_path, stream):
    path = tmp_path / "sig.evrec"
    write_recording(path, stream.caps, stream.items[:1])
    head = json.loads(path.read_text().splitlines()[0])
    assert head["format"] == "sigkiosk-evrec" and head["version"] == 1
    assert head["device"]["abs"]["ABS_X"]["resolution"] == 100
    assert "BTN_TOOL_PEN" in head["device"]["keys"]


def test_replay_recordings_without_a_signature_or_with_a_bad_line_end_each_capture_typed(tmp_path, stream):
    """Found by a review: a replay folder whose recordings hold no signature passed the start
    check (the first item parses), then the first capture cycled over them for ever at full CPU,
    holding the pen's lock; a recording with a bad line after its first item ended the signature
    generator, and every later capture was an internal StopIteration. Now a file that does not
    parse is skipped like an empty one, and a pass without any signature is a RecordingFormatError
    at every capture; a good file beside them is played."""
    from evdev import InputEvent
    from evdev import ecodes as e

    from firmware_host.pen_source import recorded_signatures, replay_service

    empty = tmp_path / "empty"
    empty.mkdir()
    write_recording(empty / "a.evrec", stream.caps, [InputEvent(1, 0, e.EV_ABS, e.ABS_X, 5),
                                                     InputEvent(1, 0, e.EV_SYN, 0, 0)])
    good = empty / "a.evrec"
    bad = empty / "b.evrec"
    write_recording(bad, stream.caps, stream.items)
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([*lines[:3], "[1, 2, 3]", *lines[3:]]) + "\n")
    signatures = recorded_signatures([good, bad], SegmenterConfig(pen_up_timeout=5.0))
    with pytest.raises(RecordingFormatError, match="no signature in any"):
        next(signatures)
    svc = replay_service(empty, SegmenterConfig(pen_up_timeout=0.5), speed=50.0)
    for _ in range(2):
        with pytest.raises(RecordingFormatError, match="no signature in any"):
            svc.capture_one(start_timeout=2.0, device_timeout=2.0)
    write_recording(empty / "c.evrec", stream.caps, stream.items)   # one good file: it is played
    played = recorded_signatures(sorted(empty.iterdir()), SegmenterConfig(pen_up_timeout=5.0))
    assert len(next(played).x) > 10 and len(next(played).x) > 10
