"""``sigkiosk bench [NAME ...]``: run benchmarks and print their figures."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from tools.benchmarks import BENCHMARK_MODULES

    names = [m.rsplit(".", 1)[1] for m in BENCHMARK_MODULES]
    p = sub.add_parser("bench", help="benchmarks: verification, capture, link")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"which to run (default all): {', '.join(names)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument("--json", type=Path, default=None, help="write all figures as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tools.benchmarks import BENCHMARK_MODULES

    # Single-core figures: the budgets are per core, and numba/BLAS threads would blur them.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wanted = set(args.names or [])
    known = {m.rsplit(".", 1)[1] for m in BENCHMARK_MODULES}
    if wanted - known:
        print(f"sigkiosk bench: unknown benchmark(s) {sorted(wanted - known)}; known: {sorted(known)}")
        return 2
    results: dict[str, dict[str, float]] = {}
    for mod_name in BENCHMARK_MODULES:
        mod = importlib.import_module(mod_name)
        if wanted and mod.NAME not in wanted:
            continue
        results[mod.NAME] = mod.run(quick=args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
