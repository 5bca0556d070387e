"""``sigkiosk eval online|offline PATH --format F``: equal error rates of the pen verifier, or of the
paper (image) verifier, on a labelled dataset. ``sigkiosk eval cross-device DATA_DIR``: the pen
verifier on each shared set left out in turn (``tools/cross_device.py``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class _Choices(Sequence[str]):
    """An option's choices, read from the evaluator's module when argparse first checks or lists them.

    The evaluators import OpenCV, numba and the dataset readers: building this parser with them
    cost about 0.9 s and 1,000 modules (measured), paid by every ``sigkiosk`` command, ``run`` and
    ``demo`` included. The options using these set a ``metavar``, so that adding them lists nothing.
    """

    def __init__(self, module: str, name: str, pick: Callable[[Any], Iterable[str]] = lambda v: v) -> None:
        self._module, self._name, self._pick = module, name, pick
        self._values: list[str] | None = None

    def _get(self) -> list[str]:
        if self._values is None:
            self._values = list(self._pick(getattr(importlib.import_module(self._module), self._name)))
        return self._values

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, value: object) -> bool:
        return value in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure equal error rates on a labelled dataset")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    o = kinds.add_parser("online", help="pen trajectories (classic DTW, learned TS-GATR, or both fused)")
    o.add_argument("path", type=Path, help="the dataset's folder")
    o.add_argument("--format", required=True, choices=_Choices("tools.datasets", "ONLINE_FORMATS", sorted),
                   metavar="FORMAT", help="dataset layout: %(choices)s")
    o.add_argument("--protocol", default=None, choices=_Choices("tools.evaluate", "PROTOCOLS"), metavar="PROTOCOL",
                   help="random-refs (default) or fixed-enrollment (default for mcyt-exercise)")
    o.add_argument("--references", "-k", type=int, default=5, help="references per writer (K)")
    o.add_argument("--trials", "-t", type=int, default=10, help="random draws of K references per writer")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--split", choices=("all", "train", "validate", "test"), default="all",
                   help="writer-disjoint split by the writer id's last digit (0-6 train, 7 validate, 8-9 test)")
    o.add_argument("--verifier", choices=_Choices("tools.evaluate", "VERIFIERS"), default=None,
                   metavar="VERIFIER",
                   help="match-score (the kiosk's default: classic + global features, one calibrated "
                        "probability), classic (DTW), learned (TS-GATR embeddings + DTW) or fused (the match score "
                        "with the learned distance)")
    o.add_argument("--model", type=Path, default=None,
                   help="TFLite model for learned/fused (its .config.json beside it), or the match-score JSON "
                        "(default: the shipped one)")
    o.add_argument("--fusion", type=Path, default=None, help="fusion JSON (default: fused_score.json beside the model, "
                                                            "else fusion.json)")
    o.add_argument("--skip-malformed", action="store_true", help="skip (and list) malformed files")
    o.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    o.add_argument("--plots", type=Path, default=None, help="write det.png and histogram.png here")
    o.set_defaults(func=run_online)
    _register_offline(kinds)
    _register_cross_device(kinds)


def _register_cross_device(kinds: argparse._SubParsersAction) -> None:
    c = kinds.add_parser(
        "cross-device",
        help="leave each shared pen set out in turn: fit on the others, measure its writers as recorded "
             "and as other pads would record them (the kiosk's default verifier, beside classic)",
    )
    c.add_argument("path", type=Path, help="the shared online folder (susig/, sigcomp2009-nfi/, sigwicomp2013-jp/)")
    c.add_argument("--split", choices=_Choices("tools.cross_device", "SPLITS"), default="test", metavar="SPLIT",
                   help="which writers of the left-out set are measured: %(choices)s (choices are made on "
                        "validate or train+validate, which the fold never fits on)")
    c.add_argument("--trials", "-t", type=int, default=10, help="random draws of K references per writer")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--sets", nargs="+", choices=_Choices("tools.cross_device", "SETS", lambda s: [n for n, _, _ in s]),
                   metavar="SET", default=None, help="the sets taking part (default: all four): %(choices)s")
    c.add_argument("--variants", nargs="+", metavar="VARIANT", default=None,
                   choices=_Choices("tools.cross_device", "VARIANTS", lambda vs: [v.key for v in vs]),
                   help="device variants to measure (default: all): %(choices)s (tools/cross_device.py says what "
                        "each is)")
    c.add_argument("--verifier", choices=_Choices("tools.cross_device", "VERIFIERS"), default=None,
                   metavar="VERIFIER",
                   help="match-score (the kiosk's default): the match score (models/match_score.py) fitted per "
                        "fold on the other sets, measured beside classic on the same trials; classic: the "
                        "classic verifier alone (faster)")
    c.add_argument("--quick", action="store_true",
                   help="few writers per set: checks the whole protocol runs, figures are not meaningful")
    c.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    c.set_defaults(func=run_cross_device)


def _register_offline(kinds: argparse._SubParsersAction) -> None:
    f = kinds.add_parser("offline", help="signature images (hand-made features or CNN-LSTM, optional anomaly check)")
    f.add_argument("path", type=Path, help="the dataset's folder")
    f.add_argument("--format", required=True, choices=_Choices("tools.datasets", "IMAGE_FORMATS", sorted),
                   metavar="FORMAT", help="dataset layout: %(choices)s")
    f.add_argument("--protocol", default=None, choices=_Choices("tools.evaluate_offline", "OFFLINE_PROTOCOLS"),
                   metavar="PROTOCOL",
                   help="random-refs (default; K of each writer's first 10 genuine as references), or for "
                        "--format cross-media (one identity = a writer's name): ink-to-paper (default there; "
                        "iPad/phone ink references, paper questioned; K <= 3), paper-to-paper (control writers' "
                        "two paper scans; K = 1), ink-to-ink (K <= 2)")
    f.add_argument("--references", "-k", type=int, default=None,
                   help="references per writer (K; default 5, cross-media: the most the protocol allows)")
    f.add_argument("--trials", "-t", type=int, default=10, help="random draws of K references per writer")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--split", choices=("all", "train", "validate", "test"), default="all",
                   help="writer-disjoint split by the writer id's last digit (0-6 train, 7 validate, 8-9 test)")
    f.add_argument("--verifier", choices=_Choices("tools.evaluate_offline", "VERIFIERS"), default=None,
                   metavar="VERIFIER",
                   help="cnn+hand+hog (default: the kiosk's paper verifier, the int8 CNN-LSTM's, the hand "
                        "features' and the oriented-gradient histograms' distances fused), cnn+hand (the two "
                        "fused), cnn (CNN-LSTM embeddings alone), hand (hand-made features alone) or hog "
                        "(histograms of oriented gradients alone)")
    f.add_argument("--model", type=Path, default=None, help="TFLite model for cnn (default: the shipped one)")
    f.add_argument("--anomaly", action=argparse.BooleanOptionalAction, default=False,
                   help="fuse the per-customer Isolation Forest anomaly check with the verifier (default: off)")
    f.add_argument("--fusion", type=Path, default=None,
                   help="fusion JSON for --anomaly and fused verifiers (default: the shipped offline_fusion.json); "
                        "the histograms' mean and prior are read beside it (hog_centre.npz), as on the kiosk")
    f.add_argument("--fit-fusion", type=Path, default=None, metavar="JSON",
                   help="fit the verifier's fusion (with the anomaly check for one verifier; for fused ones "
                        "with it only under --anomaly) on these writers, store it here (validate split only)")
    f.add_argument("--skip-malformed", action="store_true", help="skip (and list) malformed or blank images")
    f.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    f.add_argument("--plots", type=Path, default=None, help="write det.png and histogram.png here")
    f.set_defaults(func=run_offline)


def run_online(args: argparse.Namespace) -> int:
    from models.match_score import SHIPPED as SHIPPED_MATCH_SCORE
    from models.runtime import ModelError
    from tools.datasets import MalformedFileError, load_online
    from tools.evaluate import (
        DEFAULT_MODEL,
        format_table,
        model_files,
        plot_title,
        verifier_setup,
        write_json,
        write_plots,
    )

    if args.verifier is None:
        from kiosk.config import DEFAULT_KIND

        args.verifier = DEFAULT_KIND    # what the kiosk ships is what is measured by default
    try:
        setup = verifier_setup(args.verifier, args.model, args.fusion)
    except (ModelError, OSError, ValueError, KeyError, TypeError) as e:
        print(f"sigkiosk eval: {args.verifier} model {args.model or '(shipped)'}: {e}", file=sys.stderr)
        return 2
    args.model = args.model or (SHIPPED_MATCH_SCORE if args.verifier == "match-score" else DEFAULT_MODEL)
    protocol = args.protocol or ("fixed-enrollment" if args.format == "mcyt-exercise" else "random-refs")
    try:
        dataset = load_online(args.path, args.format, skip_malformed=args.skip_malformed)
    except (MalformedFileError, FileNotFoundError, ValueError) as e:
        print(f"sigkiosk eval: {e}", file=sys.stderr)
        return 2
    if args.split != "all":
        dataset = dataset.subset(args.split)
    for err in dataset.skipped:
        print(f"skipped: {err}", file=sys.stderr)
    clock = dataset.clock_repairs()
    if clock["files_retimed"] or clock["files_counter_wrap"]:
        print(f"clock: {clock['backward_steps_retimed']} small backward time step(s) re-timed in "
              f"{clock['files_retimed']} file(s); {clock['counter_wraps_decoded']} counter wrap(s) decoded in "
              f"{clock['files_counter_wrap']} file(s) (in the JSON report as clock_repairs)", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r  writers {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    try:
        result = setup.evaluate(dataset, args.verifier, protocol=protocol, references=args.references,
                                trials=args.trials, seed=args.seed, progress=progress)
    except ValueError as e:
        print(f"sigkiosk eval: {e}", file=sys.stderr)
        return 2
    report = result.report
    report["split"] = args.split
    print(format_table(report))
    if report["excluded_writers"]:
        print(f"({len(report['excluded_writers'])} writer(s) left out; see the JSON report)")
    if args.json:
        write_json(report, args.json, model_files(args.verifier, args.model, args.fusion))
        print(f"report: {args.json}")
    if args.plots:
        for f in write_plots(result.scores, args.plots, plot_title(report)):
            print(f"plot: {f}")
    return 0


def run_cross_device(args: argparse.Namespace) -> int:
    from tools.cross_device import Options, format_match_table, format_table, main_progress, run
    from tools.datasets import MalformedFileError
    from tools.evaluate import write_json

    if args.verifier is None:
        from kiosk.config import DEFAULT_KIND

        args.verifier = DEFAULT_KIND    # the kiosk's verifier is what the yardstick measures by default
    defaults = Options()
    options = Options(split=args.split, trials=args.trials, seed=args.seed, quick=args.quick,
                      sets=tuple(args.sets or defaults.sets), variants=tuple(args.variants or defaults.variants),
                      verifier=args.verifier)
    try:
        report = run(args.path, options, progress=main_progress)
    except (MalformedFileError, FileNotFoundError, ValueError) as e:
        print(f"sigkiosk eval: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"({report['seconds']:.0f} s; classic verifier; EER in %, FRR and FAR in % at K = 5)")
    if args.verifier == "match-score":
        print()
        print(format_match_table(report))
        print("(classic → match score, the same trials; EER in %, FRR and FAR in % at K = 5)")
    if args.json:
        write_json(report, args.json)
        print(f"report: {args.json}")
    return 0


def run_offline(args: argparse.Namespace) -> int:
    from models.hog import CENTRE_FILE
    from models.runtime import ModelError
    from tools.datasets import MalformedFileError, load_images
    from tools.evaluate import format_table, plot_title, write_json, write_plots
    from tools.evaluate_cross_media import INK_REFERENCES, max_references
    from tools.evaluate_cross_media import PROTOCOLS as CROSS_MEDIA_PROTOCOLS
    from tools.evaluate_offline import (
        DEFAULT_FUSION,
        DEFAULT_VERIFIER,
        evaluate_offline,
        fusion_entry,
        load_fusion,
        make_providers,
        model_files,
        save_fusion,
    )

    args.fusion = args.fusion or DEFAULT_FUSION
    args.verifier = args.verifier or DEFAULT_VERIFIER
    cross_media = args.format == "cross-media"
    protocol = args.protocol or ("ink-to-paper" if cross_media else "random-refs")
    if cross_media != (protocol in CROSS_MEDIA_PROTOCOLS):
        print(f"sigkiosk eval: --protocol {protocol} is for "
              f"{'--format cross-media' if not cross_media else 'sets with forgeries'}; --format cross-media takes "
              f"{', '.join(CROSS_MEDIA_PROTOCOLS)}", file=sys.stderr)
        return 2
    if args.references is None:
        args.references = max_references(protocol) if cross_media else 5
    if args.fit_fusion is not None and args.split != "validate":
        print("sigkiosk eval: --fit-fusion fits on validation writers only: add --split validate", file=sys.stderr)
        return 2
    # A single verifier has nothing to fuse but the anomaly check.
    anomaly = args.anomaly or (args.fit_fusion is not None and "+" not in args.verifier)
    try:
        dataset = load_images(args.path, args.format, skip_malformed=args.skip_malformed)
    except (MalformedFileError, FileNotFoundError, ValueError) as e:
        print(f"sigkiosk eval: {e}", file=sys.stderr)
        return 2
    if args.split != "all":
        dataset = dataset.subset(args.split)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r  writers {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    try:
        # The histograms' mean from the fusion's folder, as the kiosk reads it from its model folder.
        centre_path = Path(args.fit_fusion or args.fusion).parent / CENTRE_FILE
        providers = make_providers(args.verifier, args.model, centre_path)
        fused = anomaly or len(providers) > 1
        entry = fusion_entry(args.verifier, anomaly, pad_ink=cross_media and protocol in INK_REFERENCES)
        fusion = load_fusion(entry, args.fusion) if fused and args.fit_fusion is None else None
        run = evaluate_offline(
            dataset,
            providers=providers,
            protocol=protocol,
            references=args.references,
            trials=args.trials,
            seed=args.seed,
            anomaly=anomaly,
            fusion=fusion,
            fit=args.fit_fusion is not None,
            skip_malformed=args.skip_malformed,
            progress=progress,
        )
    except (ModelError, MalformedFileError, FileNotFoundError, ValueError) as e:
        print(f"sigkiosk eval: {e}", file=sys.stderr)
        return 2
    report = run.result.report
    report["split"] = args.split
    for err in report["skipped_files"]:
        print(f"skipped: {err}", file=sys.stderr)
    print(format_table(report))
    if report["excluded_writers"]:
        what = "identities" if cross_media else "writer(s)"
        print(f"({len(report['excluded_writers'])} {what} left out; see the JSON report)")
    if args.fit_fusion is not None and run.fusion is not None:
        command = (f"sigkiosk eval offline PATH --format {args.format} --split validate --verifier {args.verifier} "
                   f"{'--protocol ' + protocol + ' ' if args.protocol else ''}"
                   f"-k {args.references} -t {args.trials} --seed {args.seed}"
                   f"{' --anomaly' if args.anomaly else ''} --fit-fusion {args.fit_fusion}")
        provenance: dict[str, object] = {"fitted_on": f"{report['dataset']} validate writers ({report['writers']})",
                                         "command": command}
        if run.choice is not None:
            provenance["parts_chosen"] = run.choice.record()
            print(f"parts, each writer held out in turn ({run.choice.writers} writers), skilled global EER %:")
            for h in run.choice.candidates:
                mark = "  <- chosen" if h == run.choice.chosen else ""
                print(f"  {'+'.join(h.names):<20} held out {h.eer:6.2f} (se {h.se:.2f})  in-sample {h.in_sample:6.2f}{mark}")
        save_fusion(entry, run.fusion, args.fit_fusion, provenance)
        print(f"fusion ({', '.join(run.fusion.names)}): weights {run.fusion.weights} bias {run.fusion.bias:.3f} "
              f"-> {args.fit_fusion}")
    if args.json:
        fusion_file = args.fusion if fusion is not None else None
        write_json(report, args.json, model_files(args.verifier, args.model, fusion_file, centre_path))
        print(f"report: {args.json}")
    if args.plots:
        for f in write_plots(run.result.scores, args.plots, plot_title(report)):
            print(f"plot: {f}")
    return 0
