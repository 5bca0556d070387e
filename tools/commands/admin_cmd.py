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
from typing import Any

log = logging.getLogger(__name__)


def _init_ca(args: argparse.Namespace) -> int:
    from tools import pki

    cert = pki.init_ca(Path(args.dir), name=args.name, days=args.days)
    print(f"CA certificate: {cert}\nCA key: {Path(args.dir) / pki.CA_KEY} (0600; keep it offline)")
    return 0


def _issue_cert(args: argparse.Namespace) -> int:
    from tools import pki

    roles: tuple[pki.Role, ...] = ("kiosk", "collector", "admin", "server")
    role, name = next((r, getattr(args, r)) for r in roles if getattr(args, r))
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

    pub = load_public_raw(Path(args.sign_pub))
    with Registry.editing(Path(args.registry)) as reg:
        entry = reg.add(KioskEntry(args.kiosk, args.site, args.group, (pub,)), replace_keys=args.replace_keys)
    print(f"registered {entry.kiosk_id} (site {entry.site}, group {entry.group or '-'}), "
          f"keys {', '.join(key_id(k).hex() for k in entry.sign_keys)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    """Decommission a kiosk: registry (collector refuses it), CRL (broker refuses its certificate),
    ACL (denied everything), then reload the broker, which also drops its open connection."""
    import time

    from kiosk.topics import validate_id
    from tools import pki
    from tools.registry import Registry

    reg_path = Path(args.registry)
    role, _, service = args.kiosk.partition(".")
    if role in ("collector", "admin") and service:
        # A service's certificate (a stolen collector's would take over that collector's session
        # and its queued decisions): the CRL, then the broker reloads; the registry is the kiosks'.
        cn = pki.identity(role, service)
        if args.broker_dir and not reg_path.exists():
            raise FileNotFoundError(f"registry {reg_path} does not exist: the broker's ACL is written from it")
        print(f"{cn}: a service certificate, not in the registry; revoking its certificates")
        return _revoke_certificates(args, cn)
    kid = validate_id(args.kiosk, "kiosk id")
    # A missing file is refused: an empty registry would have rewritten every broker ACL without
    # the earlier revocations' denies.
    with Registry.editing(reg_path, must_exist=True) as reg:
        if kid in reg.kiosks:
            entry = reg.revoke(kid, reason=args.reason, now_ms=int(time.time() * 1000))
            # Saved first: collectors pick it up within registry_reload_s, broker or not.
            print(f"registry: {kid} revoked at {entry.revoked_at_ms} ms ({entry.revoked_reason or 'no reason given'})")
        else:
            print(f"registry: {kid} is not registered; revoking its certificates only")
    return _revoke_certificates(args, kid)


def _revoke_certificates(args: argparse.Namespace, cn: str) -> int:
    from tools import pki
    from tools.broker import apply_registry, signal_reload
    from tools.registry import Registry

    new = pki.revoke(Path(args.ca_dir), cn, cert_files=tuple(Path(c) for c in args.cert or ()))
    print(f"CRL {Path(args.ca_dir) / pki.CRL_FILE}: {len(new)} certificate(s) of {cn} newly revoked "
          f"({', '.join(format(r.serial, 'x')[:16] for r in new) or 'already revoked'})")
    if not args.broker_dir:
        print("no --broker-dir: copy the CRL and regenerate the ACL of every broker (broker-config), then SIGHUP it")
        return 0
    # The ACL from the registry as it is now, read under its lock (a broker directory needs one,
    # checked above): written from the copy this command loaded before, a revocation another admin
    # made meanwhile lost its deny (found by a review: two revokes at once, and the other kiosk
    # could connect again).
    with Registry.editing(Path(args.registry), must_exist=True) as current:
        apply_registry(Path(args.broker_dir), current)
    pid = signal_reload(Path(args.broker_dir))
    if pid is None:
        print(f"broker {args.broker_dir}: ACL and CRL rewritten; no running broker found there (its pid file): "
              "they apply when it starts, or SIGHUP it yourself")
    else:
        print(f"broker {args.broker_dir}: ACL and CRL rewritten, broker (pid {pid}) reloaded")
    return 0


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _bind_address(args: argparse.Namespace) -> str:
    """``--bind``, else: every interface when ``--host`` names the broker for other machines (the
    kiosks must reach it there), loopback when it names only this machine."""
    if args.bind:
        return str(args.bind)
    hosts = [h for h in args.host or () if h not in _LOOPBACK]
    return "0.0.0.0" if hosts else "127.0.0.1"


def _broker_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tools.broker import BrokerSettings

    return BrokerSettings(
        directory=Path(args.out), ca_dir=Path(args.ca_dir), port=args.port, bind=_bind_address(args), prefix=args.prefix,
        collectors=tuple(args.collector or ()), admins=tuple(args.admin or ()),
        server_hosts=tuple(args.host or ("localhost", "127.0.0.1")), run_as_user=args.user,
    )


def _existing_registry(args: argparse.Namespace) -> Any:
    """``--registry``, which must exist: a mistyped path read as an empty registry wrote an ACL
    without any revoked kiosk's deny (found by a review; ``revoke`` refused it already)."""
    from tools.registry import Registry, RegistryError

    if not args.registry:
        return None
    if not Path(args.registry).is_file():
        raise RegistryError(f"registry {args.registry} does not exist (wrong --registry?): the ACL's denies "
                            "of revoked kiosks are written from it")
    return Registry.load(Path(args.registry))


def _broker_config(args: argparse.Namespace) -> int:
    from tools.broker import write_broker_config

    settings = _broker_settings(args)
    path = write_broker_config(settings, _existing_registry(args))
    print(f"broker configuration: {path}\nlistens on {settings.bind}:{settings.port} (TLS; --bind ADDRESS to change), "
          f"certificate for {', '.join(settings.server_hosts)}\nrun: mosquitto -c {path}   (reload the ACL with SIGHUP)")
    return 0


def _broker_run(args: argparse.Namespace) -> int:
    import signal
    import time

    from tools.broker import Mosquitto

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    broker = Mosquitto.create(_broker_settings(args), _existing_registry(args))
    # SIGTERM (systemd, a test harness) stops the broker as cleanly as Ctrl-C: it saves its state.
    signal.signal(signal.SIGTERM, _interrupt)
    broker.start()
    print(f"mosquitto listening on {broker.host}:{args.port} (TLS); Ctrl-C stops it", flush=True)
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
    p.add_argument("--bind", help="address the broker listens on (default: all interfaces when --host names "
                                  "another machine's name for it, else 127.0.0.1)")
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


def _reg_revoke(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("revoke", help="decommission a kiosk (registry, CRL, broker ACL, broker reload) or "
                                      "a service certificate (collector.NAME, admin.NAME: CRL, broker reload)")
    p.add_argument("kiosk", help="kiosk id, or collector.NAME / admin.NAME")
    p.add_argument("--ca-dir", required=True, help="the device CA directory (signs the CRL)")
    p.add_argument("--registry", required=True)
    p.add_argument("--broker-dir", help="the broker's configuration directory (broker-config --out): "
                                        "rewrite its ACL and CRL and reload the broker running there")
    p.add_argument("--cert", action="append", help="also revoke this certificate file (one issued before the "
                                                   "CA kept its index; repeatable)")
    p.add_argument("--reason", default="", help="recorded in the registry (e.g. 'stolen', 'decommissioned')")
    p.set_defaults(func=_revoke)


def _reg_broker_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker-config", help="write mosquitto.conf + ACL for the link")
    _add_broker_args(p)
    p.set_defaults(func=_broker_config)
    p = sub.add_parser("broker-run", help="write the configuration and run a private mosquitto in the foreground")
    _add_broker_args(p)
    p.set_defaults(func=_broker_run)


# -- model bundles and rollout (kiosk/UPDATES.md) ---------------------------------------------------

def _bundle_key(args: argparse.Namespace) -> int:
    from kiosk import keys

    raw = keys.generate_signing_key(Path(args.out))
    print(f"admin bundle signing key: {args.out} (0600; keep it offline), public {args.out}.pub "
          f"(key id {keys.key_id(raw).hex()}): list it in every kiosk's [update] admin_keys")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from tools.bundle import ModelSpec, create_bundle, describe

    specs = [ModelSpec.parse(m) for m in args.model]
    if args.atol is not None or args.rtol is not None:
        specs = [ModelSpec(s.model, s.golden, args.atol, args.rtol) for s in specs]
    b = create_bundle(name=args.name, version=args.version, models=specs, target_groups=args.group or ["*"],
                      expires_in_s=args.expires_days * 86400, min_appliance_version=args.min_appliance,
                      notes=args.notes, extra_files=[Path(f) for f in args.file or ()],
                      sign_keys=[Path(k) for k in args.key or ()])
    b.write(Path(args.out))
    print(f"{args.out}: {describe(b)}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from kiosk.bundle import BundleFile
    from tools.bundle import describe, sign_bundle

    b = sign_bundle(BundleFile.read(Path(args.bundle)), [Path(k) for k in args.key])
    out = Path(args.out or args.bundle)
    b.write(out)
    print(f"{out}: {describe(b)}")
    return 0


def _admin_connection(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tools.rollout import AdminConnection

    return AdminConnection(args.broker_host, args.broker_port, Path(args.ca), Path(args.cert), Path(args.key), args.prefix)


def _push(args: argparse.Namespace) -> int:
    from kiosk.bundle import BundleFile
    from tools.registry import Registry
    from tools.rollout import AdminClient, progress_printer, rollout, target_base

    conn = _admin_connection(args)
    registry = Registry.load(Path(args.registry))
    if args.clear:
        with AdminClient(conn, registry) as admin:
            bases = [target_base(args.prefix, group=g) for g in args.group or ()]
            if args.kiosk:
                bases.append(target_base(args.prefix, site=registry.kiosks[args.kiosk].site, kiosk=args.kiosk))
            for base in bases:
                print(f"{base}: {'cleared' if admin.clear(base) else 'nothing retained'}")
        return 0
    if not args.bundle:
        raise ValueError("give a bundle file to push (or --clear)")
    bundle = BundleFile.read(Path(args.bundle))
    if args.kiosk:
        entry = registry.kiosks.get(args.kiosk)
        if entry is None:
            raise ValueError(f"kiosk {args.kiosk} is not in the registry")
        from kiosk.bundle import manifest_digest

        with AdminClient(conn, registry) as admin:
            since = admin.mark()
            offer = admin.push(bundle, target_base(args.prefix, site=entry.site, kiosk=args.kiosk), args.chunk_size)
            print(f"{args.kiosk}: offer {offer.short_id} pushed", flush=True)
            admin.on_report = progress_printer(lambda m: print(m, flush=True))
            if not admin.answered([args.kiosk], since, min(args.online_wait, args.timeout)):
                print(f"{args.kiosk}: no answer within {min(args.online_wait, args.timeout):g} s: the kiosk is not "
                      "online. The offer stays on the broker; it installs it when it connects.")
                return 1
            outcome = admin.wait([args.kiosk], manifest_digest(bundle.envelope), args.timeout, since, offer.created_ms)
        print(f"{args.kiosk}: {outcome[args.kiosk]}")
        return 0 if outcome[args.kiosk] == "active" else 1
    if not args.group:
        raise ValueError("give --group (repeat it: canary first, then the fleet) or --kiosk")
    result = rollout(conn, registry, bundle, args.group, timeout_s=args.timeout, wait_last=not args.no_wait,
                     chunk_size=args.chunk_size, online_wait_s=args.online_wait,
                     progress=lambda m: print(m, flush=True))
    print(result.summary())
    return 0 if result.ok or (args.no_wait and not result.halted) else 1


def _status(args: argparse.Namespace) -> int:
    import json

    from tools.registry import Registry
    from tools.rollout import fleet_status

    rows = fleet_status(_admin_connection(args), Registry.load(Path(args.registry)), settle_s=args.settle)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'kiosk':<20} {'group':<10} {'state':<12} {'active':<28} {'previous':<9} reason")
    for r in rows:
        print(f"{r['kiosk']:<20} {r['group'] or '-':<10} {r['state']:<12} {r['active']:<28} {r['previous']:<9} {r['reason']}")
    return 0


def _command_target(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(registry, kiosk topics, admin name) of a signed command to ``--kiosk``: an active kiosk of the
    registry; the kiosk records ``central:NAME`` of the admin certificate the command is sent with."""
    from kiosk.topics import KioskTopics
    from tools.pki import cert_common_name
    from tools.registry import Registry

    registry = Registry.load(Path(args.registry))
    entry = registry.active().get(args.kiosk)
    if entry is None:
        raise ValueError(f"kiosk {args.kiosk} is not an active kiosk of the registry {args.registry}")
    cn = cert_common_name(Path(args.cert))
    admin_name = cn.removeprefix("admin.") if cn.startswith("admin.") else None
    return registry, KioskTopics(args.prefix, entry.site, args.kiosk), admin_name


def _verify(args: argparse.Namespace) -> int:
    """Ask one running kiosk to verify a customer: a command signed with the central key."""
    import secrets

    from kiosk import keys
    from kiosk.commands import make_verify_command, verify_topic
    from kiosk.records import PROFILE_NAME
    from kiosk.templates import validate_customer
    from tools.rollout import AdminClient

    registry, topics, admin_name = _command_target(args)
    customer = validate_customer(args.customer)
    if args.profile is not None and not PROFILE_NAME.fullmatch(args.profile):
        raise ValueError(f"--profile {args.profile[:40]!r} is not a profile name (1-32 lower-case letters, digits, "
                         "'-' or '_'; the kiosk's [profiles] tables name them)")
    topic = verify_topic(topics)
    request_id = args.request_id or f"req-{secrets.token_hex(8)}"
    payload = make_verify_command(keys.load_signing_key(Path(args.sign_key)), topic, args.kiosk, customer,
                                  request_id, ttl_s=args.ttl, profile=args.profile, admin=admin_name)
    with AdminClient(_admin_connection(args), registry) as admin:
        admin.send(topic, payload)
    profile = f"profile {args.profile}" if args.profile else "the kiosk's default profile"
    print(f"{args.kiosk}: verification of customer {customer} requested under {profile} (request {request_id}, "
          f"valid {args.ttl:g} s). The kiosk asks the customer to sign now; its decision reaches the "
          f"collector under session id {request_id} (sigkiosk central query --kiosk {args.kiosk}). "
          "A profile the kiosk does not have is refused there, in its log.")
    return 0


def _reg_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="ask a running kiosk to verify a customer (a signed central command)",
                       description="Enrollment cannot be requested remotely: it needs an operator logged in at "
                                   "the kiosk's staff view (/staff), who is audited. Only verification is.")
    p.add_argument("--kiosk", required=True, help="kiosk id (its site comes from the registry)")
    p.add_argument("--customer", required=True, help="the customer reference the kiosk has references for")
    p.add_argument("--sign-key", required=True, help="the central server's central-sign.key (gen-keys --central)")
    p.add_argument("--request-id", help="becomes the decision's session id (default: a random one)")
    p.add_argument("--ttl", type=float, default=120.0, help="seconds the kiosk may still act on it")
    p.add_argument("--profile", help="the application profile to decide under ([profiles.NAME] of the kiosk's "
                                     "config, e.g. high-value; default: the kiosk's default profile)")
    _add_admin_conn_args(p)
    p.set_defaults(func=_verify)


def _calibration(args: argparse.Namespace) -> int:
    """Revert a kiosk's site threshold to the shipped one (held), or resume it: a signed command."""
    import secrets

    from kiosk import keys
    from kiosk.commands import calibration_topic, make_calibration_command
    from tools.rollout import AdminClient

    registry, topics, admin_name = _command_target(args)
    topic = calibration_topic(topics)
    request_id = args.request_id or f"cal-{secrets.token_hex(8)}"
    payload = make_calibration_command(keys.load_signing_key(Path(args.sign_key)), topic, args.kiosk, args.action,
                                       request_id, ttl_s=args.ttl, admin=admin_name)
    with AdminClient(_admin_connection(args), registry) as admin:
        admin.send(topic, payload)
    what = "revert to the shipped threshold (held)" if args.action == "revert" else "resume the site calibration"
    print(f"{args.kiosk}: {what} requested (request {request_id}, valid {args.ttl:g} s). The kiosk records it as an "
          f"audit record, action calibration, operator central{':' + admin_name if admin_name else ''} "
          f"(sigkiosk central query --audit --kiosk {args.kiosk}); a kiosk without [calibration] refuses it "
          "in its log.")
    return 0


def _reg_calibration(sub: argparse._SubParsersAction) -> None:
    from kiosk.commands import CALIBRATION_ACTIONS

    p = sub.add_parser("calibration", help="revert or resume a kiosk's site threshold (a signed central command)",
                       description="revert: the kiosk decides at its shipped threshold and holds it there (across "
                                   "restarts) until resumed; resume: it moves towards its target FRR again. Both are "
                                   "audited at the kiosk and reach the collector's audit table.")
    p.add_argument("action", choices=CALIBRATION_ACTIONS)
    p.add_argument("--kiosk", required=True, help="kiosk id (its site comes from the registry)")
    p.add_argument("--sign-key", required=True, help="the central server's central-sign.key (gen-keys --central)")
    p.add_argument("--request-id", help="the command's id (default: a random one); each is accepted once")
    p.add_argument("--ttl", type=float, default=120.0, help="seconds the kiosk may still act on it")
    _add_admin_conn_args(p)
    p.set_defaults(func=_calibration)


def _add_admin_conn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker-host", default="localhost")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--ca", required=True, help="the device CA certificate")
    p.add_argument("--cert", required=True, help="admin.NAME certificate")
    p.add_argument("--key", required=True, help="its TLS key")
    p.add_argument("--registry", required=True, help="kiosk registry (groups, kiosk report keys)")
    p.add_argument("--prefix", default="sig")


def _reg_bundles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle-key", help="generate an admin Ed25519 key that signs model bundles")
    p.add_argument("--out", required=True, help="private key file (its .pub is written beside it)")
    p.set_defaults(func=_bundle_key)

    p = sub.add_parser("bundle", help="build a model bundle (files, golden vectors, manifest), optionally signed")
    p.add_argument("--name", required=True, help="bundle name the kiosks run (e.g. sigkiosk-models)")
    p.add_argument("--version", type=int, required=True, help="integer, strictly greater than the installed one")
    p.add_argument("--model", action="append", required=True, metavar="MODEL.tflite[:GOLDEN.npz]",
                   help="a model and its golden vectors (default MODEL.golden.npz); repeatable")
    p.add_argument("--file", action="append", help="an extra file shipped in the bundle (e.g. calibration)")
    p.add_argument("--atol", type=float, help="golden absolute tolerance (default: from the .npz, else 1e-5)")
    p.add_argument("--rtol", type=float, help="golden relative tolerance (default: from the .npz, else 1e-4)")
    p.add_argument("--group", action="append", help="target group or kiosk id (repeatable; default: any)")
    p.add_argument("--expires-days", type=float, default=30.0)
    p.add_argument("--min-appliance", default="0.0.0", help="minimum appliance software version")
    p.add_argument("--notes", default="")
    p.add_argument("--key", action="append", help="admin signing key (repeatable; or sign later with `sign`)")
    p.add_argument("--out", required=True, help="bundle file to write (.skb)")
    p.set_defaults(func=_bundle)

    p = sub.add_parser("sign", help="add admin signatures to a bundle (k of n)")
    p.add_argument("bundle")
    p.add_argument("--key", action="append", required=True, help="admin signing key (repeatable)")
    p.add_argument("--out", help="write here instead of in place")
    p.set_defaults(func=_sign)

    p = sub.add_parser("push", help="push a bundle: --group canary --group fleet rolls out canary first")
    p.add_argument("bundle", nargs="?")
    p.add_argument("--group", action="append", help="target group, in rollout order (repeatable)")
    p.add_argument("--kiosk", help="push to this one kiosk instead of a group")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each group's reports")
    p.add_argument("--online-wait", type=float, default=15.0,
                   help="seconds for the first kiosk of a group to answer the offer; none: the push stops "
                        "there (no kiosk online) instead of waiting --timeout")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the last group's reports")
    p.add_argument("--chunk-size", type=int, default=256 << 10)
    p.add_argument("--clear", action="store_true", help="remove the retained offer and chunks from the targets")
    _add_admin_conn_args(p)
    p.set_defaults(func=_push)

    p = sub.add_parser("status", help="which kiosk runs which model, and the last update step each reported")
    _add_admin_conn_args(p)
    p.add_argument("--settle", type=float, default=1.0, help="seconds to collect retained reports")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)


def _operators_file(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    from kiosk.config import load_config

    return load_config(Path(args.config)).staff.operators_file


def _read_secret(args: argparse.Namespace, name: str) -> str:
    """The PIN/passphrase: one line on stdin (``--stdin``, for scripts), else asked twice, unechoed."""
    if args.stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"PIN or passphrase for operator {name}: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two entries differ; nothing changed")
    return first


def _operator(args: argparse.Namespace) -> int:
    """``admin operator add|remove|list``: the kiosk's staff logins (kiosk/staff.py)."""
    import os

    from kiosk.staff import OperatorStore, validate_operator, validate_secret

    store = OperatorStore(_operators_file(args))
    if args.action == "list":
        for name in store.names():
            print(name)
        return 0
    name = validate_operator(args.name)
    if args.action == "remove":
        if not store.remove(name):
            raise ValueError(f"no operator {name!r} in {store.path}")
        print(f"operator {name} removed from {store.path}")
        return 0
    store.set(name, validate_secret(_read_secret(args, name)))   # never echoed, never logged
    if args.owner:
        import pwd

        try:
            pw = pwd.getpwnam(args.owner)
        except KeyError:
            raise ValueError(f"no such user {args.owner!r}") from None
        os.chown(store.path, pw.pw_uid, pw.pw_gid)
    print(f"operator {name}: PIN/passphrase set in {store.path} (scrypt, mode 0600)")
    return 0


def _reg_operator(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="the kiosk's staff operators: add (or change the PIN), remove, list")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("name", nargs="?", default="", help="operator name (add, remove)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", default="/etc/sigkiosk/sigkiosk.toml",
                       help="the kiosk's configuration ([staff] operators_file); default %(default)s")
    where.add_argument("--file", default=None, help="the operators file itself, instead of --config")
    p.add_argument("--stdin", action="store_true", help="read the PIN/passphrase as one line from stdin")
    p.add_argument("--owner", default=None, help="give the file to this user (the service's, sigkiosk)")
    p.set_defaults(func=_operator)


#: (name, register) pairs; later issues append theirs (bundle, push, status...).
ADMIN_SUBCOMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], None]]] = [
    ("init-ca", _reg_init_ca),
    ("issue-cert", _reg_issue_cert),
    ("gen-keys", _reg_gen_keys),
    ("register", _reg_register),
    ("revoke", _reg_revoke),
    ("broker-config", _reg_broker_config),
    ("bundle", _reg_bundles),   # bundle-key, bundle, sign, push, status
    ("operator", _reg_operator),
    ("verify", _reg_verify),
    ("calibration", _reg_calibration),
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
    p = sub.add_parser("admin", help="PKI, keys, kiosk registry, broker configuration, model bundles and rollout")
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
