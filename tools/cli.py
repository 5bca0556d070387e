"""The ``sigkiosk`` command. Each subcommand lives in its own module with a ``register`` function.

A command module adds its parser to ``sub`` and sets ``func`` (taking the parsed namespace and
returning an exit code). Modules import their heavy dependencies inside ``func`` so that
``sigkiosk --help`` stays fast on the device.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Order is the order of ``sigkiosk --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "tools.commands.eval_cmd",
    "tools.commands.train_cmd",
    "tools.commands.bench_cmd",
    "tools.commands.demo_cmd",
    "tools.commands.run_cmd",
    "tools.commands.admin_cmd",
    "tools.commands.central_cmd",
    "tools.commands.capture_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sigkiosk", description="Signature verification appliance")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tools.provenance import set_command

    parser = build_parser()
    args = parser.parse_args(argv)
    set_command(sys.argv[1:] if argv is None else argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
