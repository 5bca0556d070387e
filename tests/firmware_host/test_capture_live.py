"""The live evdev read loop, fed through a pipe by the simulated device (evdev's own C reader
parses the ``struct input_event`` bytes), and the daemon-side service around it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from capture_helpers import synthetic_signature, tablet_caps

from firmware_host.assembler import EndReason, SegmenterConfig, assemble
from firmware_host.errors import DeviceGoneError, NoPenDeviceError, NoSignatureError
from firmware_host.evdev_reader import DeviceSelector, DigitizerService, LiveDigitizer, find_pen
from firmware_host.events import DeviceState
from firmware_host.generator import GeneratorOptions, trajectory_to_events
from firmware_host.simulator import SimulatedDigitizer

CFG = SegmenterConfig(pen_up_timeout=0.15, max_duration=5.0)


def short_stream(seed=0, **kw):
    # 2 strokes at 400 Hz: about a quarter of a second of real time per capture.
    traj = synthetic_signature(seed=seed, n_strokes=2, rate_hz=400.0)
    return traj, trajectory_to_events(traj, GeneratorOptions(hover_frames=2, **kw))


def test_live_capture_matches_replay_of_what_it_recorded():
    traj, stream = short_stream(drop_frames=(30,))
    sim = SimulatedDigitizer(stream.caps, stream.items, start_on_grab=True)
    dig = LiveDigitizer(sim, sim.caps, CFG, poll_interval=0.01)
    seen = []
    sig = dig.capture(on_item=seen.append)
    assert sig.end_reason is EndReason.PEN_UP_TIMEOUT
    assert sig.strokes == 2 and sig.gaps == 1
    assert sim.grab_count == 1 and not sim.grabbed  # grabbed while capturing, released after
    # The state after SYN_DROPPED was read from the device by ioctl, and recorded.
    states = [i for i in seen if isinstance(i, DeviceState)]
    assert len(states) == 2  # capture start + after the drop
    replayed, _ = assemble(stream.caps, seen, CFG)
    assert len(replayed) == 1
    np.testing.assert_array_equal(replayed[0].trajectory.x, sig.trajectory.x)
    np.testing.assert_array_equal(replayed[0].trajectory.pen_down, sig.trajectory.pen_down)
    # Same points as the trajectory (less the dropped ones), in mm.
    lost = set(stream.lost_points)
    keep = [i for i in range(len(traj)) if i not in lost]
    np.testing.assert_allclose(sig.trajectory.x, traj.x[keep], atol=0.005 + 1e-9)
    sim.close()


def test_unplug_mid_signature_is_an_error_for_that_signature_only():
    _, stream = short_stream(seed=1)
    sims = [SimulatedDigitizer(stream.caps, stream.items, unplug_after=40),
            SimulatedDigitizer(stream.caps, stream.items)]
    plugged: list[SimulatedDigitizer] = []

    def finder():
        # Like /dev/input: an unplugged (closed) device's node is gone.
        present = [s for s in plugged if s.fd >= 0]
        if not present:
            raise NoPenDeviceError("nothing plugged in")
        return present[-1].caps

    def opener(caps):
        sim = next(s for s in plugged if s.caps.path == caps.path)
        return LiveDigitizer(sim, sim.caps, CFG, poll_interval=0.01)

    svc = DigitizerService(config=CFG, rediscover_interval=0.02, opener=opener)
    svc.use_finder(finder)
    plugged.append(sims[0].start())
    with pytest.raises(DeviceGoneError, match="device closed"):
        svc.capture_one(device_timeout=2.0)
    assert svc.digitizer is None  # forgotten: the next capture rediscovers

    def replug():
        time.sleep(0.1)
        plugged.append(sims[1].start())

    threading.Thread(target=replug, daemon=True).start()
    sig = svc.capture_one(device_timeout=3.0)
    assert sig.strokes == 2 and svc.digitizer is not None
    svc.close()
    for s in sims:
        s.close()


def test_done_cancel_and_start_timeout():
    _, stream = short_stream(seed=2)
    sim = SimulatedDigitizer(stream.caps, stream.items, start_on_grab=True)
    dig = LiveDigitizer(sim, sim.caps, SegmenterConfig(pen_up_timeout=60.0), poll_interval=0.01)
    done = threading.Event()
    threading.Timer(0.5, done.set).start()
    sig = dig.capture(done=done)
    assert sig.end_reason is EndReason.DONE and sig.strokes == 2
    # Nothing more will come: done at once, cancel, and a start timeout are all typed errors.
    with pytest.raises(NoSignatureError, match="done before"):
        dig.capture(done=done)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(NoSignatureError, match="cancelled"):
        dig.capture(cancel=cancel)
    with pytest.raises(NoSignatureError, match="no pen-down within"):
        dig.capture(start_timeout=0.05)
    assert not sim.grabbed
    sim.close()


def test_discovery_without_devices_is_a_typed_error(tmp_path):
    with pytest.raises(NoPenDeviceError, match="no pen device"):
        find_pen(DeviceSelector(name="*wacom*"), input_dir=tmp_path)


def test_selector_matches_config_fields():
    caps = tablet_caps(name="Wacom Intuos S Pen")
    caps = type(caps)(**{**caps.__dict__, "vendor": 0x056A, "product": 0x0374, "phys": "usb-0000:00:14.0-1/input0"})
    assert DeviceSelector(name="*intuos*pen").matches(caps)
    assert DeviceSelector(vendor=0x056A, product=0x0374).matches(caps)
    assert DeviceSelector(phys="usb-*input0").matches(caps)
    assert not DeviceSelector(vendor=0x056A, product=0x0001).matches(caps)
    assert not DeviceSelector(name="*finger*").matches(caps)


def test_listing_survives_nodes_that_are_not_input_devices(tmp_path):
    from firmware_host.evdev_reader import list_input_devices

    (tmp_path / "event0").write_bytes(b"")  # not a character device: the ioctls fail
    (tmp_path / "mouse0").write_bytes(b"")  # not an event node: not even looked at
    listing = list_input_devices(tmp_path)
    assert listing.devices == []
    assert [p for p, _ in listing.inaccessible] == [str(tmp_path / "event0")]
    with pytest.raises(NoPenDeviceError, match="0 readable device"):
        find_pen(input_dir=tmp_path)


def test_capabilities_round_trip_through_json():
    from evdev import ecodes as e

    from firmware_host.events import DeviceCaps

    caps = tablet_caps()
    caps = DeviceCaps(**{**caps.__dict__, "msc": frozenset({e.MSC_SERIAL}),
                         "props": frozenset({e.INPUT_PROP_DIRECT}), "vendor": 0x56A, "phys": "usb-1"})
    back = DeviceCaps.from_json(caps.to_json())
    assert back == caps and back.pen_score() == caps.pen_score() > 0


def test_the_customer_timeout_fires_while_a_pen_hovers():
    """A pen lying in proximity reports 100-200 times a second without touching: the start
    timeout was checked only when no event came, so the capture waited as long as the pen lay
    there (the next customer waited for the watchdog)."""
    from capture_helpers import ev, syn
    from evdev import ecodes as e

    caps = tablet_caps()
    items = [ev(0.0, e.EV_KEY, e.BTN_TOOL_PEN, 1)]
    for i in range(300):   # 3 s of hover at 100 Hz
        items += [ev(i * 0.01, e.EV_ABS, e.ABS_X, 1000 + i), syn(i * 0.01)]
    sim = SimulatedDigitizer(caps, items, start_on_grab=True)
    dig = LiveDigitizer(sim, sim.caps, SegmenterConfig(), poll_interval=0.05)
    t0 = time.monotonic()
    with pytest.raises(NoSignatureError, match="no pen-down within"):
        dig.capture(start_timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    sim.close()


def test_a_device_that_describes_itself_impossibly_does_not_hide_the_pen(tmp_path, monkeypatch):
    """Found by a review: one input node whose axis has its minimum above its maximum (a HID
    gadget's descriptor; the kernel passes it on) raised out of discovery, so every pen request
    and the status page failed. It is listed as unusable and the pen beside it is found. (No
    /dev/input or /dev/uinput on this machine: the two devices are described as evdev does, with
    the kernel's codes, through the reader's own InputDevice seam.)"""
    from types import SimpleNamespace

    from evdev import ecodes as e

    import firmware_host.evdev_reader as reader

    class Node:
        def __init__(self, path: str, readonly: bool = True) -> None:
            self.path, self.name = path, "gadget" if path.endswith("event0") else "Wacom Pen"
            self.info = SimpleNamespace(vendor=1, product=2, version=1, bustype=3)
            self.phys = self.uniq = ""

        def capabilities(self, absinfo: bool = True):
            if self.name == "gadget":
                return {e.EV_ABS: [(e.ABS_WHEEL, SimpleNamespace(min=5, max=2, resolution=0, fuzz=0, flat=0, value=0))]}
            axis = SimpleNamespace(min=0, max=1000, resolution=10, fuzz=0, flat=0, value=0)
            return {e.EV_ABS: [(e.ABS_X, axis), (e.ABS_Y, axis), (e.ABS_PRESSURE, axis)],
                    e.EV_KEY: [e.BTN_TOOL_PEN, e.BTN_TOUCH]}

        def input_props(self):
            return []

        def close(self) -> None:
            pass

    for name in ("event0", "event1"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(reader, "InputDevice", Node)
    listing = reader.list_input_devices(tmp_path)
    assert [c.name for c in listing.devices] == ["Wacom Pen"]
    assert [(p, why.split(":")[0]) for p, why in listing.inaccessible] == [(str(tmp_path / "event0"), "unusable")]
    assert find_pen(input_dir=tmp_path).name == "Wacom Pen"
