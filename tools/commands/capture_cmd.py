"""``sigkiosk capture``: pen devices, recordings of their raw streams, and the round-trip check.

Subcommands:

``list``       pen-capable input devices (``/dev/input``) and serial ports, with capabilities;
               ``--recording FILE`` shows a recorded device instead.
``record``     one signature from the digitizer into a recording; ``--from-recording FILE``
               plays a recording through a simulated device into the *same* live read loop
               (how to use the command without a tablet).
``replay``     the signatures a recording contains (counts only: coordinates are biometric).
``generate``   a dataset trajectory → the kernel event stream a tablet would emit → recording.
``roundtrip``  every signature of a dataset split through trajectory → events → reader.
``pad``        one signature from a serial pad, or from the pad emulator over a pty pair.

Outputs never contain coordinates: only counts, durations and device capabilities.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _int_auto(text: str) -> int:
    """Vendor/product ids as printed by lsusb (hex) or decimal: ``056a``, ``0x056a``, ``1386``."""
    t = text.lower()
    if t.startswith("0x"):
        return int(t, 16)
    return int(t, 16) if any(c in "abcdef" for c in t) or len(t) == 4 else int(t)


def _segmenter(args: argparse.Namespace) -> Any:
    from firmware_host.assembler import SegmenterConfig

    return SegmenterConfig(pen_up_timeout=args.pen_up_timeout, max_duration=args.max_duration)


def _print_signature(sig: Any, label: str = "signature") -> None:
    tr = sig.trajectory
    dev = tr.device
    print(f"{label}: {sig.summary()}")
    print(f"  device {dev.name!r}: units {dev.units}"
          + (f" ({dev.resolution:g}/mm)" if dev.resolution else " (no resolution reported)")
          + (f", pressure {dev.pressure_levels} levels" if dev.pressure_levels else ", no pressure sensor"))


# --- list ------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    from firmware_host.evdev_reader import list_input_devices
    from firmware_host.recording import iter_recording

    if args.recording:
        for path in args.recording:
            header, _ = iter_recording(Path(path))
            print(f"{path} (recorded {header.recorded_at or 'at an unknown time'}, source {header.source or '?'}, "
                  f"clock {header.clock}):")
            for line in header.device.describe():
                print("  " + line)
        return 0
    listing = list_input_devices(Path(args.input_dir))
    pens = [c for c in listing.devices if c.pen_score() > 0]
    shown = listing.devices if args.all else pens
    print(f"input devices in {args.input_dir}: {len(listing.devices)} readable, {len(pens)} pen-capable")
    for caps in sorted(shown, key=lambda c: -c.pen_score()):
        for line in caps.describe():
            print("  " + line)
    for path, reason in listing.inaccessible:
        print(f"  {path}: not readable: {reason}")
    try:
        from serial.tools import list_ports

        ports = [p for p in list_ports.comports() if "ACM" in p.device or "USB" in p.device]
    except ImportError:  # pragma: no cover - pyserial is a runtime dependency
        ports = []
    print(f"serial ports (possible signature pads): {len(ports)}")
    for p in ports:
        print(f"  {p.device}: {p.description} [{p.hwid}]")
    if not pens:
        print("no pen device here: `sigkiosk capture generate` makes a recording from a dataset, and "
              "`sigkiosk capture record --from-recording FILE` drives the live reader with it")
    return 0


# --- record ----------------------------------------------------------------------------------
def _stdin_done(done: threading.Event) -> None:
    """Enter on a terminal means "done", like the kiosk's button."""
    if not sys.stdin or not sys.stdin.isatty():
        return

    def wait() -> None:
        try:
            sys.stdin.readline()
        except (OSError, ValueError):
            return
        done.set()

    threading.Thread(target=wait, name="enter-is-done", daemon=True).start()


def _cmd_record(args: argparse.Namespace) -> int:
    from firmware_host.errors import CaptureError
    from firmware_host.evdev_reader import DeviceSelector, LiveDigitizer, find_pen
    from firmware_host.recording import RecordingWriter, iter_recording
    from firmware_host.simulator import SimulatedDigitizer

    cfg = _segmenter(args)
    out = Path(args.output)
    sim: SimulatedDigitizer | None = None
    if args.from_recording:
        header, items = iter_recording(Path(args.from_recording))
        sim = SimulatedDigitizer(header.device, list(items), speed=args.speed, start_on_grab=True)
        dig = LiveDigitizer(sim, sim.caps, cfg)
        source = f"simulated:{Path(args.from_recording).name}"
        print(f"playing {args.from_recording} through the live reader at {args.speed:g}x ...")
    else:
        selector = DeviceSelector(path=args.device, name=args.name, vendor=args.vendor,
                                  product=args.product, phys=args.phys)
        try:
            caps = find_pen(selector, Path(args.input_dir))
        except CaptureError as exc:
            print(f"error: {exc}\nwithout a tablet: sigkiosk capture record --from-recording FILE "
                  "(make one with `sigkiosk capture generate`)", file=sys.stderr)
            return 2
        try:
            dig = LiveDigitizer.open(caps.path, cfg)
        except CaptureError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        source = f"evdev:{caps.path}"
        print(f"sign on {caps.name!r} ({caps.path}); the signature ends {cfg.pen_up_timeout:g} s after "
              "the pen lifts" + (" or on Enter" if sys.stdin.isatty() else ""))
    done = threading.Event()
    if sim is not None:
        done = sim.done_event  # a recorded "done" plays back as the operator's button
    else:
        _stdin_done(done)
    writer = RecordingWriter(out, dig.caps, source=source, clock=dig.clock)
    ok = False
    try:
        t0 = time.perf_counter()
        sig = dig.capture(done=done, on_item=writer.write, start_timeout=args.start_timeout)
        ok = True
        log.debug("capture took %.3f s", time.perf_counter() - t0)
    except CaptureError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        writer.close(keep=ok)
        dig.close()
    _print_signature(sig)
    print(f"recorded {writer.items} stream items to {out} (mode 0600: raw pen data is biometric)")
    return 0


# --- replay ----------------------------------------------------------------------------------
def _cmd_replay(args: argparse.Namespace) -> int:
    from firmware_host.recording import replay

    header, sigs, stats = replay(Path(args.recording), _segmenter(args))
    print(f"{args.recording}: device {header.device.name!r}, {stats.events} events, {stats.frames} frames, "
          f"{stats.syn_dropped} SYN_DROPPED, {len(sigs)} signature(s)")
    for k, sig in enumerate(sigs, 1):
        _print_signature(sig, f"signature {k}")
    return 0 if sigs else 1


# --- generate / roundtrip --------------------------------------------------------------------
def _load_split(args: argparse.Namespace) -> Any:
    from tools.datasets import load_online

    ds = load_online(Path(args.dataset), args.format)
    return ds.subset(args.split) if args.split != "all" else ds


def _gen_options(args: argparse.Namespace) -> Any:
    from firmware_host.generator import GeneratorOptions

    return GeneratorOptions(resolution=args.resolution, hover_frames=args.hover_frames,
                            drop_frames=tuple(args.drop_frame or ()), jitter_us=args.jitter_us,
                            msc_serial=not args.no_msc, seed=args.seed)


def _cmd_generate(args: argparse.Namespace) -> int:
    from firmware_host.generator import trajectory_to_events
    from firmware_host.recording import write_recording

    ds = _load_split(args)
    writer = args.writer or sorted(ds.writers)[0]
    if writer not in ds.writers:
        print(f"error: writer {writer!r} is not in {ds.name}", file=sys.stderr)
        return 2
    samples = ds.writers[writer]
    if not 0 <= args.index < len(samples):
        print(f"error: writer {writer} has {len(samples)} samples", file=sys.stderr)
        return 2
    sample = samples[args.index]
    stream = trajectory_to_events(sample.trajectory, _gen_options(args))
    n = write_recording(Path(args.output), stream.caps, stream.items,
                        source=f"generated:{args.format}:{sample.path.name}")
    print(f"{args.output}: {n} items from {sample.path.name} ({len(sample.trajectory)} points, "
          f"{len(sample.trajectory.strokes())} strokes, {len(stream.lost_points)} lost to SYN_DROPPED)")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    """Recordings of one synthetic writer, for a kiosk with ``[pen] source = "replay"``."""
    from firmware_host.generator import GeneratorOptions, trajectory_to_events
    from firmware_host.recording import write_recording
    from tools.synth import make_population

    if args.genuine < 1 or args.forgeries < 0:
        print("error: --genuine must be at least 1 and --forgeries at least 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (gen, forg), = make_population(1, args.genuine, args.forgeries, args.seed).values()
    opts = GeneratorOptions(resolution=100, hover_frames=3)
    # Named in the order a replay kiosk plays them: the genuine ones first (enrollment, then
    # verifications), the skilled forgeries last.
    for i, (kind, traj) in enumerate([("genuine", t) for t in gen] + [("forgery", t) for t in forg], start=1):
        stream = trajectory_to_events(traj, opts)
        path = out / f"{i:02d}-{kind}.evrec"
        write_recording(path, stream.caps, stream.items, source=f"synth:seed={args.seed}:{kind}")
        print(f"{path}: {kind}, {len(traj)} points, {traj.duration:.1f} s")
    print(f"{len(gen) + len(forg)} recording(s) in {out}: [pen] source = \"replay\", recordings = \"{out}\" "
          "plays them in this order, then again")
    return 0


def _in_mm(traj: Any, units_per_mm: float) -> Any:
    """The same signature stated in millimetres, as a tablet with a resolution would give it."""
    from dataclasses import replace

    from models.trajectory import Trajectory

    dev = replace(traj.device, units="mm", resolution=units_per_mm)
    return Trajectory(x=traj.x / units_per_mm, y=traj.y / units_per_mm, pressure=traj.pressure, t=traj.t,
                      pen_down=traj.pen_down, device=dev, gaps=traj.gaps, stroke_breaks=traj.stroke_breaks)


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    from firmware_host.generator import GeneratorOptions
    from firmware_host.roundtrip import roundtrip

    t0 = time.perf_counter()
    ds = _load_split(args)
    option_sets = {"plain": GeneratorOptions(), "hover+jitter": GeneratorOptions(hover_frames=3, jitter_us=200, seed=1)}
    if args.with_drops:
        option_sets["drops"] = GeneratorOptions(drop_frames=(25, 90), drop_length=3)
        # Without the state snapshot the reader must not guess: it may give fewer points, but
        # every point it gives was sent (checked point by point, not for identity).
        option_sets["drop-no-state"] = GeneratorOptions(drop_frames=(40,), drop_state=False)
    # The shared sets are in device units without a resolution; the "mm" variant restates each
    # signature in millimetres (as if sampled at 40 units/mm) and sends it through a tablet of
    # 100 units/mm, so that absinfo resolution, quantisation and the mm conversion are
    # exercised on real signatures too.
    option_sets["mm"] = GeneratorOptions(resolution=100)
    total = failed = points = 0
    worst = {"xy": 0.0, "mm": 0.0, "p": 0.0, "t": 0.0}
    for writer in sorted(ds.writers):
        for s in ds.writers[writer]:
            for name, opts in option_sets.items():
                traj = _in_mm(s.trajectory, 40.0) if name == "mm" else s.trajectory
                r = roundtrip(traj, opts)
                total += 1
                points += r.points
                if name != "mm":
                    worst["xy"] = max(worst["xy"], r.max_xy_error)
                else:
                    worst["mm"] = max(worst["mm"], r.max_xy_error)
                worst["p"] = max(worst["p"], r.max_p_error)
                if name == "plain":
                    worst["t"] = max(worst["t"], r.max_t_error)
                if not r.ok:
                    failed += 1
                    print(f"FAIL {s.path.name} [{name}]: {'; '.join(r.problems)}")
    n_sig = sum(len(v) for v in ds.writers.values())
    print(f"{ds.name}: {len(ds.writers)} writers, {n_sig} signatures x {len(option_sets)} stream variants "
          f"({', '.join(option_sets)}) = {total} round trips, {points} points: "
          f"{total - failed} passed, {failed} failed "
          f"(max error: position {worst['xy']:.3g} device units, {worst['mm']:.3g} mm in the mm variant "
          f"[quantisation {0.5 / 100:.3g} mm], pressure {worst['p']:.3g}, time {worst['t']:.2g} s) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


# --- pad -------------------------------------------------------------------------------------
def _cmd_pad(args: argparse.Namespace) -> int:
    from firmware_host.assembler import SegmenterConfig
    from firmware_host.errors import CaptureError
    from firmware_host.pad_emulator import EmulatorOptions, PadEmulator, PtyPair, trajectory_to_samples
    from firmware_host.serial_pad import PadConfig, SerialPad

    cfg = PadConfig(baudrate=args.baud, segmenter=SegmenterConfig(
        pen_up_timeout=args.pen_up_timeout, max_duration=args.max_duration))
    pty: PtyPair | None = None
    emu: PadEmulator | None = None
    port = args.port
    if args.emulate:
        if not args.dataset:
            print("error: --emulate needs --dataset and --format (the signature the emulator draws)",
                  file=sys.stderr)
            return 2
        ds = _load_split(args)
        sample = ds.writers[sorted(ds.writers)[0]][0]
        opts = EmulatorOptions(realtime=True, garbage_every=args.garbage_every, corrupt_every=args.corrupt_every)
        hello, samples = trajectory_to_samples(sample.trajectory, opts)
        pty = PtyPair.open()
        emu = PadEmulator(pty.master, hello, opts)
        emu.serve_commands()
        port = pty.path
        print(f"pad emulator on {port}, drawing {sample.path.name}")
    if not port:
        print("error: give --port /dev/ttyACM0 or --emulate", file=sys.stderr)
        return 2
    try:
        pad = SerialPad.open(port, cfg)
    except CaptureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        hello = pad.handshake()
        res = f"{hello.res_x}/mm" if hello.res_x else "no resolution"
        print(f"pad {hello.name!r}: protocol {hello.version}, {res}, "
              f"pressure {hello.pressure_max or 'none'}, {hello.rate_hz} Hz")
        if emu is not None:
            threading.Thread(target=emu.play, args=(samples,), kwargs={"hello_first": False}, daemon=True).start()
        sig = pad.capture(start_timeout=args.start_timeout)
    except CaptureError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        pad.close()
        if emu is not None:
            emu.stop()
        if pty is not None:
            pty.close()
    _print_signature(sig)
    st = pad.decoder.stats
    print(f"link: {st.packets} packets, {st.bad_packets} damaged ({st.crc_errors} CRC), "
          f"{st.lost_packets} lost, {pad.stats.samples} samples")
    return 0


# --- registration ----------------------------------------------------------------------------
def _timing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pen-up-timeout", type=float, default=2.0,
                   help="seconds the pen must stay up to end the signature (default 2)")
    p.add_argument("--max-duration", type=float, default=30.0, help="longest signature in seconds")


def _dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--dataset", required=required, help="dataset folder (e.g. .../susig/VisualSubCorpus)")
    p.add_argument("--format", default="susig-visual", help="dataset format (see tools.datasets)")
    p.add_argument("--split", default="test", choices=("train", "validate", "test", "all"),
                   help="writer split (default test)")


def register(sub: Any) -> None:
    parser = sub.add_parser("capture", help="pen devices, raw stream recordings, round-trip check",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = parser.add_subparsers(dest="capture_command", metavar="ACTION", required=True)

    p = csub.add_parser("list", help="pen devices and serial ports with their capabilities")
    p.add_argument("--input-dir", default="/dev/input")
    p.add_argument("--all", action="store_true", help="also show devices that are not pens")
    p.add_argument("--recording", nargs="*", help="show the device of these recordings instead")
    p.set_defaults(func=_cmd_list)

    p = csub.add_parser("record", help="record one signature (live device, or a recording played through it)")
    p.add_argument("-o", "--output", required=True, help="recording to write (.evrec, or .evrec.gz)")
    p.add_argument("--device", help="event node, e.g. /dev/input/event5 (default: discover)")
    p.add_argument("--name", help="device name pattern, e.g. '*Wacom*Pen*'")
    p.add_argument("--vendor", type=_int_auto, help="USB vendor id (hex)")
    p.add_argument("--product", type=_int_auto, help="USB product id (hex)")
    p.add_argument("--phys", help="physical path pattern")
    p.add_argument("--input-dir", default="/dev/input")
    p.add_argument("--from-recording", help="play this recording through a simulated device instead")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed for --from-recording")
    p.add_argument("--start-timeout", type=float, default=None, help="give up if nobody signs within S s")
    _timing_args(p)
    p.set_defaults(func=_cmd_record)

    p = csub.add_parser("replay", help="the signatures in a recording (counts only)")
    p.add_argument("recording")
    _timing_args(p)
    p.set_defaults(func=_cmd_replay)

    def gen_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--resolution", type=int, default=100, help="units/mm for trajectories in mm")
        p.add_argument("--hover-frames", type=int, default=0)
        p.add_argument("--drop-frame", type=int, action="append", help="point index to lose to SYN_DROPPED")
        p.add_argument("--jitter-us", type=int, default=0)
        p.add_argument("--no-msc", action="store_true", help="no MSC_SERIAL: repeated samples vanish")
        p.add_argument("--seed", type=int, default=0)

    p = csub.add_parser("generate", help="dataset trajectory -> kernel event stream -> recording")
    _dataset_args(p)
    p.add_argument("--writer", help="writer id (default: the first of the split)")
    p.add_argument("--index", type=int, default=0, help="which of the writer's samples")
    p.add_argument("-o", "--output", required=True)
    gen_opts(p)
    p.set_defaults(func=_cmd_generate)

    p = csub.add_parser("synth", help="recordings of one synthetic writer (genuine, then forgeries) for a replay pen")
    p.add_argument("--out", required=True, help="folder for NN-genuine.evrec / NN-forgery.evrec")
    p.add_argument("--genuine", type=int, default=7, help="genuine signatures (enrollment takes the first ones)")
    p.add_argument("--forgeries", type=int, default=1, help="skilled forgeries, played after the genuine ones")
    p.add_argument("--seed", type=int, default=2026,
                   help="which synthetic writer (default: the daemon tests' writer, whose 6th and 7th signatures "
                        "the classic verifier approves and whose forgery it flags; seed 0's 6th is a false rejection)")
    p.set_defaults(func=_cmd_synth)

    p = csub.add_parser("roundtrip", help="trajectory -> events -> reader for every signature of a split")
    _dataset_args(p)
    p.add_argument("--with-drops", action="store_true", help="also streams with SYN_DROPPED")
    p.set_defaults(func=_cmd_roundtrip)

    p = csub.add_parser("pad", help="one signature from a serial pad (or the emulator on a pty)")
    p.add_argument("--port", help="serial device, e.g. /dev/ttyACM0")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--emulate", action="store_true", help="run the pad emulator on a pty pair")
    p.add_argument("--garbage-every", type=int, default=0, help="emulator: noise after every N packets")
    p.add_argument("--corrupt-every", type=int, default=0, help="emulator: corrupt every N-th sample")
    p.add_argument("--start-timeout", type=float, default=30.0)
    _dataset_args(p, required=False)
    _timing_args(p)
    p.set_defaults(func=_cmd_pad)


def main(argv: list[str] | None = None) -> int:
    """Run ``capture`` alone (``python -m tools.commands.capture_cmd ...``)."""
    parser = argparse.ArgumentParser(prog="sigkiosk")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["capture", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
