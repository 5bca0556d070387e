"""``sigkiosk run --config FILE``: the appliance daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the kiosk daemon (pen capture, verification, screen, link)")
    p.add_argument("--config", type=Path, help="the daemon's TOML configuration")
    p.add_argument("--print-config", action="store_true", help="print an example configuration and exit")
    p.add_argument("--check", action="store_true",
                   help="check the configuration and every file it names (keys, certificates), then exit: "
                        "non-zero when something is wrong, each problem named with its fix")
    p.add_argument("--broker", action="store_true",
                   help="with --check: also connect to the broker as this kiosk (briefly takes over the "
                        "connection of a kiosk daemon already running with this identity; it reconnects)")
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
    if args.check:
        # --check lists deprecated keys among its findings; the loader's warning would repeat them.
        logging.getLogger("kiosk.config").setLevel(logging.ERROR)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        msg = str(exc)   # the loader's own messages (no such file, TOML syntax) start with the path
        print(f"sigkiosk run: {msg if msg.startswith(str(args.config)) else f'{args.config}: {msg}'}",
              file=sys.stderr)
        return 2
    from kiosk.check import check_config, check_files

    if args.check:
        findings = check_config(config, broker=args.broker)
        for f in findings:
            print(f"{args.config}: {f}", file=sys.stderr if f.level == "error" else sys.stdout)
        errors = sum(f.level == "error" for f in findings)
        if errors:
            print(f"{args.config}: {errors} problem(s) to fix before the kiosk can run", file=sys.stderr)
            return 1
        broker = f", broker {config.link.broker_host}:{config.link.broker_port} accepts this kiosk" \
            if args.broker and config.link is not None else ""
        print(f"{args.config}: OK (kiosk {config.kiosk_id}, site {config.site}{broker})")
        return 0
    if args.init_key:
        from kiosk.templates import TemplateError, load_or_create_key

        try:
            load_or_create_key(config.storage.template_key, create=True)
        except (TemplateError, OSError) as exc:
            print(f"sigkiosk run: cannot create the template key: {exc}", file=sys.stderr)
            return 1
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
    # What --check calls an error would stop the daemon part-way up with a traceback: refuse to
    # start instead, one line per problem, each with its fix.
    refusals = [f for f in check_files(config) if f.level == "error"]
    if refusals:
        for f in refusals:
            print(f"sigkiosk run: cannot start: {f.where}: {f.message}", file=sys.stderr)
        print(f"sigkiosk run: (sigkiosk run --check --config {args.config} lists every problem)", file=sys.stderr)
        return 1
    # systemd's journal adds its own timestamps.
    import os

    from kiosk.logsetup import setup_logging

    setup_logging(logging.DEBUG if args.verbose > 1 else logging.INFO, with_time="JOURNAL_STREAM" not in os.environ)
    from kiosk.daemon import Daemon
    from kiosk.errors import ApplianceError
    from kiosk.keys import KeyFileError
    from kiosk.templates import TemplateError
    from models.runtime import ModelError

    try:
        return Daemon(config).run_forever()
    # ModelError: kind = "fused" without a usable model; KeyFileError, OSError: a key or certificate
    # that became unreadable after the check above.
    except (TemplateError, ModelError, KeyFileError, ConfigError, ApplianceError, OSError) as exc:
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
