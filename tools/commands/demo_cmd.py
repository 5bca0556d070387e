"""``sigkiosk demo``: the whole appliance on one machine - broker, collector, daemon, replayed pen."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the appliance end to end: private broker, collector, daemon, replayed pen")
    p.add_argument("--writers", type=int, default=3, help="how many writers to enroll")
    p.add_argument("--seed", type=int, default=2026, help="seed of the synthetic writers")
    p.add_argument("--genuine", type=int, default=8, help="genuine signatures per synthetic writer (5 enroll)")
    p.add_argument("--forgeries", type=int, default=3, help="imitations per synthetic writer")
    p.add_argument("--data", type=Path, default=None, help="use a dataset folder's test writers instead")
    p.add_argument("--format", default="susig-visual", help="the dataset's layout (with --data)")
    p.add_argument("--speed", type=float, default=3.0, help="replay the pen at this many times real time")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("--keep", type=Path, default=None, help="work in this new directory and keep it: the central database, registry and "
                        "keys an audit needs (default: a temp dir, removed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from kiosk.logsetup import setup_logging
    from tools.demo import check_keep, dataset_writers, demo, synthetic_writers

    if args.keep is not None:
        try:
            check_keep(args.keep)
        except FileExistsError as exc:
            print(f"sigkiosk demo: {exc}", file=sys.stderr)
            return 2
    setup_logging(logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING)
    if args.data is not None:
        writers = dataset_writers(args.data, args.format, args.writers)
        source = f"{args.format} test writers from {args.data}"
    else:
        writers = synthetic_writers(args.writers, args.seed, args.genuine, args.forgeries)
        source = f"{args.writers} synthetic sigma-lognormal writers (seed {args.seed})"
    if not writers:
        print("sigkiosk demo: no writer with enough signatures", file=sys.stderr)
        return 2
    print(f"demo: customers are {source}")
    res = demo(writers, speed=args.speed, json_path=args.json, keep=args.keep)
    return 0 if res.sent and len(res.rows) == res.sent else 1
