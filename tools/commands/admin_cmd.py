"""``sigkiosk admin``: the device PKI, link keys, the kiosk registry and the broker configuration.

Subcommands live in ``ADMIN_SUBCOMMANDS``; a later module adds its own (bundle, push, status) by
appending a ``(name, register)`` pair, without touching the ones here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _init_ca(args: argparse.Namespace) -> int:
    from tools import pki

    cert = pki.init_ca(Path(args.dir), name=args.name, days=args.days)
    print(f"CA certificate: {cert}\nCA key: {Path(args.dir) / pki.CA_KEY} (0600; keep it offline)")
    return 0


def _issue_cert(args: argparse.Namespace) -> int:
    from tools import pki

    role, name = next((r, getattr(args, r)) for r in ("kiosk", "collector", "admin", "server") if getattr(args, r))
    csr = Path(args.csr).read_bytes() if args.csr else None
    hosts = tuple(args.host or ("localhost", "127.0.0.1"))
    issued = pki.issue(Path(args.ca_dir), role, name, Path(args.out), days=args.days, hosts=hosts, csr_pem=csr)
    print(f"identity {issued.common_name}: certificate {issued.cert_path}" + ("" if csr else f", key {issued.key_path} (0600)"))
    return 0


def _gen_keys(args: argparse.Namespace) -> int:
    from kiosk import keys

    out = Path(args.out)
    if args.central:
        who = "central"
        pairs = [("X25519 encryption", keys.generate_encryption_key, keys.CENTRAL_ENC_KEY, keys.CENTRAL_ENC_PUB),
                 ("Ed25519 signing", keys.generate_signing_key, keys.CENTRAL_SIGN_KEY, keys.CENTRAL_SIGN_PUB)]
        hint = f"give {keys.CENTRAL_ENC_PUB} to every kiosk"
    else:
        from kiosk.topics import validate_id

        who = f"kiosk {validate_id(args.kiosk, 'kiosk id')}"
        pairs = [("Ed25519 signing", keys.generate_signing_key, keys.KIOSK_SIGN_KEY, keys.KIOSK_SIGN_PUB),
                 ("X25519 encryption", keys.generate_encryption_key, keys.KIOSK_ENC_KEY, keys.KIOSK_ENC_PUB)]
        hint = f"register {keys.KIOSK_SIGN_PUB} with `sigkiosk admin register`"
    for _, _, priv, _ in pairs:   # all or nothing: never leave half a key set behind
        if (out / priv).exists():
            raise FileExistsError(f"{out / priv} exists; refusing to overwrite a key (remove it first)")
    for what, gen, priv, pub in pairs:
        raw = gen(out / priv, out / pub)
        print(f"{who} {what} key: {out / priv} (0600), public {out / pub} (key id {keys.key_id(raw).hex()})")
    print(hint)
    return 0


def _register(args: argparse.Namespace) -> int:
    from kiosk.keys import key_id, load_public_raw
    from tools.registry import KioskEntry, Registry

    reg = Registry.load(Path(args.registry))
    pub = load_public_raw(Path(args.sign_pub))
    entry = reg.add(KioskEntry(args.kiosk, args.site, args.group, (pub,)), replace_keys=args.replace_keys)
    reg.save(Path(args.registry))
    print(f"registered {entry.kiosk_id} (site {entry.site}, group {entry.group or '-'}), "
          f"keys {', '.join(key_id(k).hex() for k in entry.sign_keys)}")
    return 0


def _broker_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tools.broker import BrokerSettings

    return BrokerSettings(
        directory=Path(args.out), ca_dir=Path(args.ca_dir), port=args.port, bind=args.bind, prefix=args.prefix,
        collectors=tuple(args.collector or ()), admins=tuple(args.admin or ()),
        server_hosts=tuple(args.host or ("localhost", "127.0.0.1")), run_as_user=args.user,
    )


def _broker_config(args: argparse.Namespace) -> int:
    from tools.broker import write_broker_config
    from tools.registry import Registry

    path = write_broker_config(_broker_settings(args), Registry.load(Path(args.registry)) if args.registry else None)
    print(f"broker configuration: {path}\nrun: mosquitto -c {path}   (reload the ACL with SIGHUP)")
    return 0


def _broker_run(args: argparse.Namespace) -> int:
    import signal
    import time

    from tools.broker import Mosquitto
    from tools.registry import Registry

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    broker = Mosquitto.create(_broker_settings(args), Registry.load(Path(args.registry)) if args.registry else None)
    # SIGTERM (systemd, a test harness) stops the broker as cleanly as Ctrl-C: it saves its state.
    signal.signal(signal.SIGTERM, _interrupt)
    broker.start()
    print(f"mosquitto listening on {args.bind}:{args.port} (TLS); Ctrl-C stops it", flush=True)
    try:
        while broker.proc is not None and broker.proc.poll() is None:
            time.sleep(0.5)
        print(broker.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def _add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-dir", required=True, help="the device CA directory (init-ca)")
    p.add_argument("--out", required=True, help="directory for mosquitto.conf, acl, server certificate, data")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--prefix", default="sig", help="topic prefix")
    p.add_argument("--registry", help="kiosk registry (JSON): grants group command topics")
    p.add_argument("--collector", action="append", help="collector name allowed to read (repeatable)")
    p.add_argument("--admin", action="append", help="admin name allowed to publish commands (repeatable)")
    p.add_argument("--host", action="append", help="broker host name / IP for its certificate (repeatable)")
    p.add_argument("--user", help="user mosquitto runs as when started as root (default: mosquitto)")


def _reg_init_ca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init-ca", help="create the dedicated device CA")
    p.add_argument("--dir", required=True, help="directory for ca.key (0600) and ca.crt")
    p.add_argument("--name", default="sigkiosk device CA")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(func=_init_ca)


def _reg_issue_cert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("issue-cert", help="issue a TLS certificate (kiosk, collector, admin or broker)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--kiosk", metavar="ID", help="kiosk id (becomes the CN and the MQTT user)")
    who.add_argument("--collector", metavar="NAME", help="collector identity collector.NAME")
    who.add_argument("--admin", metavar="NAME", help="admin identity admin.NAME")
    who.add_argument("--server", metavar="HOST", help="broker certificate for HOST")
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--out", required=True, help="directory for <cn>.crt and <cn>.key (0600)")
    p.add_argument("--csr", help="sign this CSR instead of generating a key (the key stays on the kiosk)")
    p.add_argument("--host", action="append", help="extra host names / IPs (server certificates)")
    p.add_argument("--days", type=int, default=825)
    p.set_defaults(func=_issue_cert)


def _reg_gen_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gen-keys", help="generate link keys (Ed25519 signing + X25519 encryption), central or kiosk")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--central", action="store_true", help="the central server's encryption key")
    who.add_argument("--kiosk", metavar="ID", help="a kiosk's signing key")
    p.add_argument("--out", required=True, help="directory for the key files")
    p.set_defaults(func=_gen_keys)


def _reg_register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="add a kiosk (or a new signing key of it) to the registry")
    p.add_argument("--registry", required=True)
    p.add_argument("--kiosk", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--group", help="command group (e.g. canary)")
    p.add_argument("--sign-pub", required=True, help="the kiosk's sign.pub")
    p.add_argument("--replace-keys", action="store_true", help="replace its keys instead of adding (rotation done)")
    p.set_defaults(func=_register)


def _reg_broker_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker-config", help="write mosquitto.conf + ACL for the link")
    _add_broker_args(p)
    p.set_defaults(func=_broker_config)
    p = sub.add_parser("broker-run", help="write the configuration and run a private mosquitto in the foreground")
    _add_broker_args(p)
    p.set_defaults(func=_broker_run)


#: (name, register) pairs; later issues append theirs (bundle, push, status...).
ADMIN_SUBCOMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], None]]] = [
    ("init-ca", _reg_init_ca),
    ("issue-cert", _reg_issue_cert),
    ("gen-keys", _reg_gen_keys),
    ("register", _reg_register),
    ("broker-config", _reg_broker_config),
]


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures (bad id, existing key, missing CA) into one clear line and exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, FileExistsError, FileNotFoundError, PermissionError, RuntimeError) as exc:
            print(f"sigkiosk admin: error: {exc}", file=sys.stderr)
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("admin", help="PKI, keys, kiosk registry, broker configuration")
    asub = p.add_subparsers(dest="admin_command", metavar="SUBCOMMAND", required=True)
    for _, reg in ADMIN_SUBCOMMANDS:
        reg(asub)
    for action in asub.choices.values():
        action.set_defaults(func=_guarded(action.get_default("func")))


def main(argv: list[str] | None = None) -> int:
    """Run ``admin`` alone (``python -m tools.commands.admin_cmd ...``) when the full CLI is not needed."""
    parser = argparse.ArgumentParser(prog="sigkiosk")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["admin", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
