"""Fuzzing: random, truncated and reordered event streams, random bytes on the serial line and in
recordings. Nothing crashes; failures are typed; intact data around the damage is kept."""

from __future__ import annotations

import numpy as np
import pytest
from capture_helpers import T0, synthetic_signature, tablet_caps
from evdev import InputEvent
from evdev import ecodes as e

from firmware_host.assembler import SegmenterConfig, assemble
from firmware_host.errors import CaptureError, PadProtocolError, RecordingFormatError
from firmware_host.events import DeviceState, DoneMarker
from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.pad_protocol import PacketDecoder, Sample, decode_packet, encode_message
from firmware_host.recording import iter_recording, write_recording
from models.trajectory import Trajectory

CODES = {
    e.EV_SYN: [e.SYN_REPORT, e.SYN_DROPPED, e.SYN_CONFIG, e.SYN_MT_REPORT, 9],
    e.EV_KEY: [e.BTN_TOUCH, e.BTN_TOOL_PEN, e.BTN_STYLUS, e.BTN_TOOL_RUBBER, e.KEY_A],
    e.EV_ABS: [e.ABS_X, e.ABS_Y, e.ABS_PRESSURE, e.ABS_TILT_X, e.ABS_MT_POSITION_X],
    e.EV_MSC: [e.MSC_SERIAL, e.MSC_TIMESTAMP],
    0x1F: [0, 0xFFFF],
}
VALUES = [0, 1, -1, 2, 512, 1023, 30000, 2**31 - 1, -(2**31)]


def random_stream(rng: np.random.Generator, n: int) -> list:
    items: list = []
    t_us = int(T0 * 1e6)
    types = list(CODES)
    for _ in range(n):
        r = rng.random()
        if r < 0.02:
            items.append(DeviceState(abs={e.ABS_X: int(rng.integers(-5, 5000)), e.ABS_Y: int(rng.integers(0, 5000))},
                                     keys=frozenset(rng.choice([e.BTN_TOUCH, e.BTN_TOOL_PEN], size=int(rng.integers(0, 3))).tolist())))
            continue
        if r < 0.03:
            items.append(DoneMarker(t_us * 1e-6))
            continue
        t_us += int(rng.integers(-3000, 20000))  # time may go backwards too
        etype = types[int(rng.integers(0, len(types)))]
        code = CODES[etype][int(rng.integers(0, len(CODES[etype])))]
        value = VALUES[int(rng.integers(0, len(VALUES)))] if rng.random() < 0.3 else int(rng.integers(0, 3000))
        items.append(InputEvent(t_us // 1_000_000, t_us % 1_000_000, etype, code, value))
    return items


def check(sigs: list) -> None:
    for s in sigs:
        tr = s.trajectory
        assert isinstance(tr, Trajectory) and len(tr) >= 1
        assert np.all(np.diff(tr.t) >= 0) and np.all((tr.pressure >= 0) & (tr.pressure <= 1))


@pytest.mark.parametrize("variant", ["full", "no-pressure", "no-keys"])
def test_random_event_streams_never_crash(variant):
    rng = np.random.default_rng({"full": 1, "no-pressure": 2, "no-keys": 3}[variant])
    caps = tablet_caps(pressure=variant != "no-pressure", touch=variant != "no-keys", tool=variant != "no-keys")
    total = 0
    for _ in range(150):
        sigs, stats = assemble(caps, random_stream(rng, int(rng.integers(1, 400))),
                               SegmenterConfig(pen_up_timeout=0.3, max_duration=2.0, min_pen_down_points=1))
        check(sigs)
        total += len(sigs)
    assert total > 0  # the fuzzer does reach signatures, so their checks ran


def test_truncated_streams_keep_every_point_before_the_cut():
    traj = synthetic_signature(seed=8, stroke_breaks=True)
    stream = trajectory_to_events(traj, GeneratorOptions(hover_frames=2))
    cfg = SegmenterConfig(min_pen_down_points=1)
    (full,), _ = assemble(stream.caps, stream.items, cfg)
    rng = np.random.default_rng(4)
    for cut in sorted(rng.integers(1, len(stream.items), size=60).tolist()):
        sigs, _ = assemble(stream.caps, stream.items[:cut], cfg)
        check(sigs)
        if sigs:
            part = sigs[0].trajectory
            n = len(part)
            np.testing.assert_array_equal(part.x, full.trajectory.x[:n])
            np.testing.assert_array_equal(part.pen_down, full.trajectory.pen_down[:n])


def test_reordered_and_duplicated_streams_never_crash():
    traj = synthetic_signature(seed=9)
    stream = trajectory_to_events(traj, GeneratorOptions(drop_frames=(20,)))
    rng = np.random.default_rng(5)
    for k in range(80):
        items = list(stream.items)
        for _ in range(int(rng.integers(1, 40))):  # swap random neighbours and windows
            i = int(rng.integers(0, len(items) - 1))
            j = min(len(items) - 1, i + int(rng.integers(1, 30)))
            items[i], items[j] = items[j], items[i]
        if k % 3 == 0:
            items = items + items[: len(items) // 2]  # a replayed buffer: time goes back
        sigs, _ = assemble(stream.caps, items, SegmenterConfig(min_pen_down_points=1))
        check(sigs)


def test_non_items_are_a_typed_error():
    from firmware_host.assembler import CaptureAssembler

    with pytest.raises(CaptureError, match="not a stream item"):
        CaptureAssembler(tablet_caps()).feed("ABS_X 5")  # type: ignore[arg-type]


def test_random_bytes_never_crash_the_packet_decoder():
    rng = np.random.default_rng(6)
    for _ in range(300):
        data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        try:
            decode_packet(data)
        except PadProtocolError as exc:
            assert str(exc) and exc.kind.value  # type: ignore[attr-defined]
    dec = PacketDecoder()
    for _ in range(200):
        dec.feed(rng.integers(0, 256, int(rng.integers(0, 500)), dtype=np.uint8).tobytes())
    assert dec.stats.bad_packets > 0


@pytest.mark.parametrize("seed", range(5))
def test_valid_packets_between_garbage_are_all_recovered(seed):
    rng = np.random.default_rng(100 + seed)
    wire = bytearray()
    sent = 0
    for i in range(300):
        wire += encode_message(Sample(i, 2 * i, i % 1024, 3, 10 * i), seq=i)
        sent += 1
        if rng.random() < 0.5:  # noise between packets: any bytes, zeros included, long runs too
            wire += rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    dec = PacketDecoder()
    got = []
    k = 0
    while k < len(wire):  # random chunking, as a UART driver delivers
        step = int(rng.integers(1, 64))
        got += [p.message for p, _ in dec.feed(bytes(wire[k:k + step])) if isinstance(p.message, Sample)]
        k += step
    genuine = [m.x for m in got if m.x < 300 and m.y == 2 * m.x and m.device_time == 10 * m.x]
    assert genuine == list(range(sent))  # every packet sent, in order, none lost to the noise
    # Noise that happens to pass COBS, CRC-16 and the exact length is vanishingly rare.
    assert len(got) - len(genuine) <= 1
    assert dec.stats.bad_packets > 0


def test_random_bytes_in_a_recording_are_a_format_error(tmp_path):
    traj = synthetic_signature(seed=3)
    stream = trajectory_to_events(traj)
    path = tmp_path / "r.evrec"
    write_recording(path, stream.caps, stream.items)
    good = path.read_bytes()
    rng = np.random.default_rng(7)
    failures = 0
    for _ in range(40):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            header, items = iter_recording(path)
            sigs, _ = assemble(header.device, items)
            check(sigs)
        except RecordingFormatError as exc:
            failures += 1
            assert str(path) in str(exc)
        except CaptureError:
            failures += 1  # e.g. the damaged header no longer has X/Y axes: typed too
    assert failures > 0
