"""``sigkiosk demo``: enrollment and verification of several writers, on embedded defaults."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="enroll and verify a few writers end to end (no hardware, no data needed)")
    p.add_argument("--writers", type=int, default=4, help="how many writers to enroll")
    p.add_argument("--seed", type=int, default=2026, help="seed of the synthetic writers")
    p.add_argument("--data", type=Path, default=None, help="use a dataset folder's test writers instead")
    p.add_argument("--format", default="susig-visual", help="the dataset's layout (with --data)")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tools.demo import dataset_writers, run_demo, synthetic_writers, write_json

    if args.data is not None:
        writers = dataset_writers(args.data, args.format, args.writers)
        source = f"{args.format} test writers from {args.data}"
    else:
        writers = synthetic_writers(args.writers, args.seed)
        source = f"{args.writers} synthetic sigma-lognormal writers (seed {args.seed})"
    if not writers:
        print("sigkiosk demo: no writer with enough signatures", file=sys.stderr)
        return 2
    print(f"demo: enrolling {source}")
    summary = run_demo(writers)
    c = summary.counts()
    print(
        f"demo: genuine approved {c['genuine']['approved']}, suspicious {c['genuine']['suspicious']}; "
        f"forged approved {c['forged']['approved']}, suspicious {c['forged']['suspicious']}; "
        f"{summary.refusals} enrollment sample(s) refused"
    )
    if args.json:
        write_json(summary, args.json)
    return 0
