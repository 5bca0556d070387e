"""The serial pad protocol, and the host reading a pad emulator through a real pty pair."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from capture_helpers import synthetic_signature

from firmware_host.assembler import EndReason, SegmenterConfig
from firmware_host.errors import NoSignatureError, PadProtocolError, PadReportedError, PadTimeoutError
from firmware_host.pad_emulator import EmulatorOptions, PadEmulator, PtyPair, trajectory_to_samples
from firmware_host.pad_protocol import (
    Button,
    ButtonPress,
    Flags,
    GetHello,
    Hello,
    PacketDecoder,
    PadErrorMsg,
    Sample,
    TimeUnwrapper,
    cobs_decode,
    cobs_encode,
    crc16_ccitt,
    decode_packet,
    encode_message,
)
from firmware_host.serial_pad import PadConfig, SerialPad

HELLO = Hello(x_max=6000, y_max=4000, res_x=20, res_y=20, pressure_max=1023, tick_hz=1000, rate_hz=100,
              name="test pad")


def test_crc_and_cobs():
    assert crc16_ccitt(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value
    rng = np.random.default_rng(0)
    for n in (1, 2, 253, 254, 255, 256, 600):
        for data in (bytes(n), bytes([7]) * n, rng.integers(0, 256, n, dtype=np.uint8).tobytes()):
            enc = cobs_encode(data)
            assert 0 not in enc and cobs_decode(enc) == data
    with pytest.raises(PadProtocolError):
        cobs_decode(b"\x05ab")  # block runs past the end


@pytest.mark.parametrize("msg", [
    HELLO,
    Sample(x=65535, y=0, pressure=1023, flags=int(Flags.TOUCH | Flags.IN_RANGE), device_time=2**32 - 1),
    ButtonPress(button=int(Button.OK), pressed=True, device_time=5),
    PadErrorMsg(code=0x81, message="sensor fault"),
    GetHello(),
])
def test_every_message_round_trips(msg):
    wire = encode_message(msg, seq=200)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    pkt = decode_packet(wire[1:-1])
    assert pkt.seq == 200 and pkt.message == msg


def test_decoder_handles_any_chunking_and_counts_lost_packets():
    wire = b"".join(encode_message(Sample(i, i, i, 3, i), seq=i) for i in range(10) if i != 4)
    for size in (1, 2, 7, len(wire)):
        dec = PacketDecoder()
        got = [p for k in range(0, len(wire), size) for p in dec.feed(wire[k:k + size])]
        assert [p.message.x for p, _ in got] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert [lost for _, lost in got] == [0, 0, 0, 0, 1, 0, 0, 0, 0]
        assert dec.stats.lost_packets == 1 and dec.stats.bad_packets == 0


def test_time_unwrapper_wraps_and_survives_a_reset():
    clock = TimeUnwrapper(1000)
    ts = [clock(t) for t in (2**32 - 20, 2**32 - 10, 0, 10, 5, 15)]
    assert ts[:4] == [0.0, 0.01, 0.02, 0.03]
    assert clock.wraps == 1
    assert ts[4] == ts[3] and clock.resets == 1  # a step back: counted, never negative time
    assert ts[5] == pytest.approx(0.04)


class Rig:
    """A pty pair with the emulator on the master side and SerialPad on the slave."""

    def __init__(self, opts: EmulatorOptions, cfg: SegmenterConfig | None = None,
                 serve: bool = True, link_timeout: float = 1.0) -> None:
        self.pty = PtyPair.open()
        self.traj = synthetic_signature(seed=11, n_strokes=3, rate_hz=100.0)
        self.hello, self.samples = trajectory_to_samples(self.traj, opts)
        self.emu = PadEmulator(self.pty.master, self.hello, opts)
        if serve:
            self.emu.serve_commands()
        self.pad = SerialPad.open(self.pty.path, PadConfig(
            hello_timeout=0.5, link_timeout=link_timeout, poll_interval=0.02,
            segmenter=cfg or SegmenterConfig(pen_up_timeout=1.0)))

    def play(self, samples=None, **kw) -> threading.Thread:
        th = threading.Thread(target=self.emu.play, args=(samples if samples is not None else self.samples,),
                              kwargs=kw, daemon=True)
        th.start()
        return th

    def close(self) -> None:
        self.emu.stop()
        self.pad.close()
        self.pty.close()


@pytest.fixture()
def rig_factory():
    rigs: list[Rig] = []

    def make(*a, **kw) -> Rig:
        rigs.append(Rig(*a, **kw))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def test_clean_pad_signature_over_a_pty(rig_factory):
    rig = rig_factory(EmulatorOptions())
    assert rig.pad.handshake() == rig.hello
    th = rig.play(hello_first=False)
    sig = rig.pad.capture()
    th.join(2)
    assert sig.end_reason is EndReason.DONE  # the pad's OK button
    tr, orig = sig.trajectory, rig.traj
    assert tr.device.units == "mm" and tr.device.resolution == 20.0 and tr.device.pressure_levels == 1023
    assert len(tr) == len(orig) and sig.strokes == len(orig.strokes()) and tr.gaps == ()
    np.testing.assert_allclose(tr.x, orig.x, atol=0.5 / 20 + 1e-9)
    np.testing.assert_allclose(tr.y, orig.y, atol=0.5 / 20 + 1e-9)
    np.testing.assert_allclose(tr.pressure, orig.pressure, atol=0.5 / 1023 + 1e-9)
    np.testing.assert_allclose(tr.t, orig.t, atol=0.5e-3 + 1e-9)
    assert rig.pad.decoder.stats.bad_packets == 0


def test_garbage_corruption_and_time_wrap_lose_only_the_damaged_packets(rig_factory):
    opts = EmulatorOptions(garbage_every=2, corrupt_every=9, time_start=2**32 - 250, seed=5)
    rig = rig_factory(opts)
    th = rig.play()  # HELLO comes first, in the noise
    sig = rig.pad.capture()
    th.join(2)
    rep, stats = rig.emu.report, rig.pad.decoder.stats
    assert rep.garbage_bytes > 500 and rep.samples_corrupted > 5
    # Every intact sample was recovered; every damaged one was counted, never used.
    assert rig.pad.stats.samples == rep.samples_sent
    assert stats.lost_packets == rep.samples_corrupted
    assert stats.bad_packets >= rep.samples_corrupted
    assert rig.pad._clock is not None and rig.pad._clock.wraps == 1
    tr = sig.trajectory
    assert np.all(np.diff(tr.t) >= 0) and tr.duration == pytest.approx(rig.traj.duration, abs=0.02)
    assert 0 < len(tr.gaps) <= rep.samples_corrupted


def test_hello_timeout(rig_factory):
    rig = rig_factory(EmulatorOptions(), serve=False)
    os.write(rig.pty.master, b"\x13\x37 noise without a packet")
    with pytest.raises(PadTimeoutError, match="no HELLO"):
        rig.pad.handshake()


def test_fatal_pad_error_and_silence_with_pen_down(rig_factory):
    rig = rig_factory(EmulatorOptions(send_ok=False), link_timeout=0.2)
    rig.pad.handshake()
    rig.emu.send_error(0x01, "battery low")  # not fatal: logged and counted
    rig.emu.send_error(0x82, "sensor fault")
    with pytest.raises(PadReportedError, match="sensor fault") as info:
        rig.pad.capture()
    assert info.value.code == 0x82 and rig.pad.stats.pad_errors == 2
    # The pen is down and then the pad goes quiet: that signature fails, typed. (Played once the
    # capture has begun: what a pad sends between captures is nobody's and is discarded.)
    threading.Timer(0.2, lambda: rig.play(rig.samples[:10], hello_first=False)).start()
    with pytest.raises(PadTimeoutError, match="silent"):
        rig.pad.capture()


def test_pen_up_timeout_clear_and_cancel(rig_factory):
    rig = rig_factory(EmulatorOptions(send_ok=False), cfg=SegmenterConfig(pen_up_timeout=0.1))
    rig.pad.handshake()
    rig.play(hello_first=False).join(2)
    sig = rig.pad.capture()
    assert sig.end_reason is EndReason.PEN_UP_TIMEOUT and sig.strokes == 3
    # CLEAR throws away the attempt so far; CANCEL ends the capture with a typed error.
    t = rig.samples[-1].device_time

    def write_then_cancel() -> None:
        rig.play(rig.samples[:5], hello_first=False).join(2)
        rig.emu.send(ButtonPress(int(Button.CLEAR), True, t + 1))
        rig.emu.send(ButtonPress(int(Button.CANCEL), True, t + 2))

    threading.Timer(0.2, write_then_cancel).start()
    with pytest.raises(NoSignatureError, match="cancelled on the pad"):
        rig.pad.capture()


def test_what_the_pad_sends_between_captures_is_nobodys(rig_factory):
    """After a signature ends (pen-up timeout), its writer may press OK late or write on while the
    kiosk verifies and shows the decision; nobody reads the port then. That input used to be
    handed to the next capture: a late OK ended the next customer's capture at once, and a doodle
    became their signature. It is discarded; a pad restart among it still counts."""
    from dataclasses import replace

    rig = rig_factory(EmulatorOptions(send_ok=False), cfg=SegmenterConfig(pen_up_timeout=0.1))
    rig.pad.handshake()
    rig.play(hello_first=False).join(2)
    first = rig.pad.capture()
    assert first.end_reason is EndReason.PEN_UP_TIMEOUT
    last = rig.samples[-1].device_time
    rig.emu.send(ButtonPress(int(Button.OK), True, last + 1000))
    rig.play([replace(s, device_time=s.device_time + 3000) for s in rig.samples[:40]], hello_first=False).join(2)
    rebooted = replace(rig.hello, session=rig.hello.session ^ 0x5555)
    rig.emu.send(rebooted)
    # And half of one more sample, its rest written once the next capture has begun: it must not
    # complete into the next customer's signature.
    late = encode_message(replace(rig.samples[10], device_time=last + 5000), 7)
    os.write(rig.pty.master, late[: len(late) // 2])
    threading.Timer(0.6, lambda: os.write(rig.pty.master, late[len(late) // 2:])).start()
    time.sleep(0.3)
    with pytest.raises(NoSignatureError, match="no pen-down within"):
        rig.pad.capture(start_timeout=0.5)
    assert rig.pad.stats.stale == 41 and rig.pad.hello == rebooted
    # The next customer's own signature, written once the capture has begun, is theirs.
    threading.Timer(0.2, lambda: rig.play(hello_first=False)).start()
    sig = rig.pad.capture(start_timeout=3.0)
    assert sig.end_reason is EndReason.PEN_UP_TIMEOUT and len(sig.trajectory) == len(first.trajectory)


def test_a_pad_restart_during_a_signature_fails_that_signature(rig_factory):
    from dataclasses import replace

    from firmware_host.errors import PadError

    rig = rig_factory(EmulatorOptions(send_ok=False))
    rig.pad.handshake()
    rig.play(rig.samples[:10], hello_first=False).join(2)
    rig.emu.send(rig.hello)  # the answer to a GET_HELLO: same session, not a restart
    rig.emu.send(replace(rig.hello, session=rig.hello.session ^ 0x5555))
    with pytest.raises(PadError, match="restarted"):
        rig.pad.capture()
    assert rig.pad.hello is not None and rig.pad.hello.session != rig.hello.session


def test_pad_unplugged_mid_signature_is_a_typed_error(rig_factory):
    from firmware_host.errors import DeviceGoneError

    rig = rig_factory(EmulatorOptions(send_ok=False), link_timeout=5.0)
    rig.pad.handshake()
    rig.play(rig.samples[:10], hello_first=False).join(2)
    rig.emu.stop()
    os.close(rig.pty.master)  # the USB cable is pulled: the tty hangs up
    rig.pty.master = -1  # closed here: the fixture must not close a reused fd number
    with pytest.raises(DeviceGoneError, match="serial port failed"):
        rig.pad.capture()


def test_packets_lost_just_before_a_hello_count_only_within_the_session():
    """A HELLO answering GET_HELLO mid-stream (same session) does not hide the packets lost before
    it; a HELLO of a new session is a restart, whose sequence jump is not a loss."""
    from firmware_host.pad_protocol import Hello, PacketDecoder, Sample, encode_message

    hello = Hello(x_max=1000, y_max=1000, res_x=20, res_y=20, pressure_max=1023, tick_hz=1000, rate_hz=200,
                  session=0x1234)
    dec = PacketDecoder()
    wire = [encode_message(hello, 0), encode_message(Sample(1, 1, 10, 1, 100), 1)]
    # seq 2 and 3 never arrive (line noise); then our GET_HELLO is answered in the same session
    wire += [encode_message(hello, 4), encode_message(Sample(2, 2, 10, 1, 105), 5)]
    dec.feed(b"".join(wire))
    assert dec.stats.lost_packets == 2
    # the pad restarts: a new session, its counter from 0 - a jump, but nothing lost
    restarted = Hello(**{**hello.__dict__, "session": 0x4321})
    got = dec.feed(encode_message(restarted, 0) + encode_message(Sample(3, 3, 10, 1, 1), 1))
    assert dec.stats.lost_packets == 2 and [lost for _, lost in got] == [(0 - 5 - 1) & 0xFF, 0]


@pytest.mark.parametrize("hover", [False, True])
def test_a_pad_whose_clock_stands_still_cannot_keep_a_signature_open(rig_factory, hover: bool):
    """Found by a review: the segmenter's limits run on the pad's clock, so a pad that kept sending
    samples with one device time (pen down, or hovering after two points) kept the signature open
    until 100 000 points: 1.4 hours. On the host's clock it ends at its maximum length and 2 s more."""
    rig = rig_factory(EmulatorOptions(), SegmenterConfig(pen_up_timeout=1.0, max_duration=1.5))
    assert rig.pad.handshake() == rig.hello
    stop = threading.Event()

    def frozen() -> None:
        i = 0
        while not stop.is_set():
            down = not hover or i < 2
            flags = int(Flags.TOUCH | Flags.IN_RANGE) if down else int(Flags.IN_RANGE)
            rig.emu.send(Sample(100 + (i % 50) * 10, 100 + (i % 37) * 7, 500 if down else 0, flags, 1234))
            i += 1
            stop.wait(0.05)

    th = threading.Thread(target=frozen, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(PadTimeoutError, match="clock is not keeping time"):
            rig.pad.capture(start_timeout=5.0)
        assert time.monotonic() - t0 < 10.0
    finally:
        stop.set()
        th.join(2)


def test_no_pen_down_ends_the_wait_while_samples_keep_coming(rig_factory):
    """A pad streaming hover samples (never a touch) ends the wait for a pen-down at the start
    timeout: the check runs whatever arrives, beside the host-clock bound above."""
    rig = rig_factory(EmulatorOptions())
    assert rig.pad.handshake() == rig.hello
    stop = threading.Event()

    def hovering() -> None:
        t = 0
        while not stop.is_set():
            rig.emu.send(Sample(300, 300, 0, int(Flags.IN_RANGE), t))
            t += 50
            stop.wait(0.05)

    th = threading.Thread(target=hovering, daemon=True)
    th.start()
    try:
        with pytest.raises(NoSignatureError, match="no pen-down within 1.0 s"):
            rig.pad.capture(start_timeout=1.0)
    finally:
        stop.set()
        th.join(2)
