"""``sigkiosk run --config FILE``: the appliance daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the kiosk daemon (pen capture, verification, screen, link)")
    p.add_argument("--config", type=Path, help="the daemon's TOML configuration")
    p.add_argument("--print-config", action="store_true", help="print an example configuration and exit")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--init-key", action="store_true", help="create the template key if missing, then exit")
    p.add_argument("--owner", default=None, help="with --init-key: give the key to this user (the service's, sigkiosk)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from kiosk.config import DEFAULT_CONFIG, ConfigError, load_config

    if args.print_config:
        sys.stdout.write(DEFAULT_CONFIG)
        return 0
    if args.config is None:
        print("sigkiosk run: --config FILE is required (see --print-config)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sigkiosk run: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK (kiosk {config.kiosk_id}, site {config.site})")
        return 0
    if args.init_key:
        from kiosk.templates import load_or_create_key

        load_or_create_key(config.storage.template_key, create=True)
        if args.owner:
            import os
            import pwd

            try:
                pw = pwd.getpwnam(args.owner)
            except KeyError:
                print(f"sigkiosk run: no such user {args.owner!r}", file=sys.stderr)
                return 2
            os.chown(config.storage.template_key, pw.pw_uid, pw.pw_gid)
        print(f"template key: {config.storage.template_key}")
        return 0
    from kiosk.logsetup import setup_logging

    # systemd's journal adds its own timestamps.
    import os

    setup_logging(logging.DEBUG if args.verbose > 1 else logging.INFO, with_time="JOURNAL_STREAM" not in os.environ)
    from kiosk.daemon import Daemon
    from kiosk.templates import TemplateError
    from models.runtime import ModelError

    try:
        return Daemon(config).run_forever()
    except (TemplateError, ModelError, OSError) as exc:   # ModelError: kind = "fused" without a usable model
        logging.getLogger("kiosk").error("cannot start: %s", exc)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.commands.run_cmd --config FILE``: the daemon without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="sigkiosk run")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["run", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
