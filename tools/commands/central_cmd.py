"""``sigkiosk central``: run the collector, query stored decisions, show refusal counts; purge
expired evidence and export one disputed case."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from tools.central.collector import Collector, CollectorConfig

    cfg = CollectorConfig(
        broker_host=args.broker_host, broker_port=args.broker_port, ca_file=Path(args.ca), cert_file=Path(args.cert),
        key_file=Path(args.key), enc_key_files=tuple(Path(p) for p in args.enc_key), registry_file=Path(args.registry),
        db=args.db, prefix=args.prefix, share_group=args.share_group, max_age_s=args.max_age_days * 86400,
        max_future_s=args.max_future_s, fresh_session=args.fresh_session, allow_raw_evidence=args.allow_raw_evidence,
        evidence_retention_days=args.evidence_retention_days,
    )
    if args.retire and args.fresh_session:
        print("--retire takes up this collector's session to store what it holds: --fresh-session would "
              "throw that away first", file=sys.stderr)
        return 2
    collector = Collector(cfg)
    if args.retire:
        print(f"collector retiring from share group {args.share_group}: storing what its session holds...", flush=True)
        done = collector.retire()
        print(json.dumps(collector.stats.as_dict()), flush=True)
        if not done:
            print("not retired: messages kept coming or could not be stored; its session is kept, nothing is lost. "
                  "Run --retire again", file=sys.stderr)
            return 1
        print("retired: its session is ended; the other collectors of the group receive every message", flush=True)
        return 0
    # SIGTERM (systemd, docker) stops as cleanly as Ctrl-C; unacked messages are redelivered anyway.
    signal.signal(signal.SIGTERM, lambda *_: collector._stop.set())
    log.info("collector: database %s", "PostgreSQL" if args.db.startswith("postgres") else args.db)
    print(f"collector running ({args.broker_host}:{args.broker_port}, share group {args.share_group}); Ctrl-C stops",
          flush=True)
    try:
        collector.run()
    except KeyboardInterrupt:
        collector.stop()
    print(json.dumps(collector.stats.as_dict()), flush=True)
    return 0


#: The filter options of ``central query`` (and the web page's form fields): option -> filter name.
FILTERS = {"customer": "subject", "mode": "mode", "model_version": "model_version", "operator": "operator",
           "kiosk": "kiosk", "site": "site", "outcome": "outcome", "profile": "profile", "since": "since",
           "until": "until"}


def _query(args: argparse.Namespace) -> int:
    from tools.central.export import write_audit, write_csv, write_json, write_table
    from tools.central.query import DecisionFilter
    from tools.central.store import open_store

    where = DecisionFilter.from_text({name: getattr(args, opt) for opt, name in FILTERS.items()}
                                     | {"limit": str(args.limit)})
    fmt = "json" if args.json else args.format
    store = open_store(args.db)
    try:
        if args.audit:
            audit = store.query_audit(where)
        else:
            rows = store.query_decisions(where)
    finally:
        store.close()
    out = _new_private_file(Path(args.output)) if args.output else sys.stdout
    try:
        if args.audit:
            write_audit(audit, fmt, out)
        else:
            {"csv": write_csv, "json": write_json, "table": write_table}[fmt](rows, out)
    finally:
        if args.output:
            out.close()
    return 0


def _new_private_file(path: Path) -> Any:
    """A new file, 0600, for an export that names customers and operators: never an existing file
    or a symbolic link's target (``open(path, "w")`` followed both, created it world-readable under
    the usual umask, and overwrote whatever was there; found by a review)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists: give a new file name (an export never overwrites)") from None
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def _stats(args: argparse.Namespace) -> int:
    from tools.central.store import open_store

    store = open_store(args.db)
    try:
        out: dict[str, Any] = {"decisions": store.count("decisions"), "logs": store.count("logs"),
               "evidence": store.count("evidence"), "refusals": store.refusal_counts(), "kiosks": {k: v["state"] for k, v in store.status().items()}}
    finally:
        store.close()
    if args.registry:
        from tools.registry import Registry

        # A revoked kiosk's last status may still say "online" (its later ones are refused): the
        # registry has the last word, and the time it was revoked.
        for kid, entry in Registry.load(Path(args.registry)).kiosks.items():
            if entry.revoked_at_ms is not None:
                when = dt.datetime.fromtimestamp(entry.revoked_at_ms / 1000, dt.timezone.utc).isoformat()
                out["kiosks"][kid] = f"revoked {when}"
    print(json.dumps(out, indent=2))
    return 0


# -- evidence: retention and case export ----------------------------------------------------------

def _retention_days(text: str) -> float:
    days = float(text)
    if not days > 0:
        raise argparse.ArgumentTypeError("the retention period must be a positive number of days")
    return days


def _purge(args: argparse.Namespace) -> int:
    import time

    from tools.central.store import open_store

    store = open_store(args.db)
    try:
        cutoff = int(time.time() * 1000) - int(args.evidence_retention_days * 86_400_000)
        n = store.purge_evidence(cutoff)
    finally:
        store.close()
    print(f"purged {n} evidence row(s) older than {args.evidence_retention_days:g} days")
    return 0


def _export_case(args: argparse.Namespace) -> int:
    from tools.central.case import CaseError, export_case
    from tools.central.store import open_store

    store = open_store(args.db)
    try:
        if args.session is not None:
            found = [(k, q) for k, q in store.find_decision_seq(args.session) if args.kiosk in (None, k)]
            if len(found) != 1:
                raise CaseError(f"{len(found)} decisions have session id {args.session!r}; give --kiosk and --seq")
            kiosk, seq = found[0]
        elif args.kiosk is None or args.seq is None:
            raise CaseError("give --kiosk and --seq, or --session")
        else:
            kiosk, seq = args.kiosk, args.seq
        registry = None
        if args.registry:
            from tools.registry import Registry

            registry = Registry.load(Path(args.registry))
        from kiosk.keys import load_encryption_key

        enc_keys = [load_encryption_key(Path(k)) for k in args.enc_key or ()]
        files = export_case(store, kiosk, seq, Path(args.out), registry=registry, enc_keys=enc_keys)
    finally:
        store.close()
    for f in (files.signature, files.decision, files.verification):
        if f is not None:
            print(f)
    if files.signature is None:
        print("no evidence stored for this decision: only the decision and its verification were written")
    return 0


def _web(args: argparse.Namespace) -> int:
    from tools.central.web import CentralWeb, WebConfig

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.tls_cert:
        log.warning("central web on %s without TLS: passwords and session cookies cross the network in clear; "
                    "give --tls-cert/--tls-key or put TLS in front", args.host)
    web = CentralWeb(WebConfig(
        db=args.db, users_file=Path(args.users), registry_file=Path(args.registry) if args.registry else None,
        host=args.host, port=args.port, tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None, idle_timeout_s=args.idle_timeout_s))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=web.stop, daemon=True).start())
    print(f"central web page on {web.url} (read-only; Ctrl-C stops)", flush=True)
    try:
        web.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()
    return 0


def _user(args: argparse.Namespace) -> int:
    import getpass

    from kiosk.staff import OperatorStore

    users = OperatorStore(Path(args.users))
    if args.user_command == "list":
        for name in users.names():
            print(name)
        return 0
    if args.user_command == "remove":
        if not users.remove(args.name):
            print(f"sigkiosk central: error: no user {args.name!r} in {args.users}", file=sys.stderr)
            return 2
        print(f"user {args.name} removed")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("sigkiosk central: error: the passwords differ", file=sys.stderr)
            return 2
    users.set(args.name, password)
    print(f"user {args.name} set in {args.users} (scrypt; the file is mode 0600)")
    return 0


def _guarded(func):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        from kiosk.errors import ApplianceError
        from tools.central.errors import CentralError
        from tools.central.store import StoreError

        try:
            return func(args)
        except (StoreError, CentralError, ApplianceError, ValueError, OSError) as exc:
            print(f"sigkiosk central: error: {exc}", file=sys.stderr)
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("central", help="central collector: run it, query decisions, refusal counts")
    csub = p.add_subparsers(dest="central_command", metavar="SUBCOMMAND", required=True)

    r = csub.add_parser("run", help="subscribe, verify, decrypt and store (several may run: shared subscription)")
    r.add_argument("--broker-host", default="localhost")
    r.add_argument("--broker-port", type=int, default=8883)
    r.add_argument("--ca", required=True, help="device CA certificate")
    r.add_argument("--cert", required=True, help="this collector's certificate (CN collector.NAME)")
    r.add_argument("--key", required=True, help="its TLS key")
    r.add_argument("--enc-key", action="append", required=True, help="central X25519 private key (repeatable)")
    r.add_argument("--registry", required=True, help="kiosk registry (JSON)")
    r.add_argument("--db", default="central.sqlite", help="SQLite path, or postgresql://user@host/db")
    r.add_argument("--prefix", default="sig")
    r.add_argument("--share-group", default="collectors", help="collectors in the same group split the load")
    r.add_argument("--max-age-days", type=float, default=30.0, help="refuse decisions/logs older than this")
    r.add_argument("--max-future-s", type=float, default=300.0, help="refuse times this far in the future")
    r.add_argument("--fresh-session", action="store_true",
                   help="discard this identity's session at the broker (queued messages, old subscriptions)")
    r.add_argument("--retire", action="store_true",
                   help="leave the share group for good: store what this identity's session holds, "
                        "unsubscribe, end the session, exit (a collector merely stopped keeps receiving a share)")
    r.add_argument("--allow-raw-evidence", action="store_true",
                   help="accept decisions carrying raw pen data / images (the kiosks' policy must say the same)")
    r.add_argument("--evidence-retention-days", type=_retention_days, default=365.0,
                   help="delete evidence (raw signatures) this long after capture (default 365)")
    r.set_defaults(func=_guarded(_run))

    q = csub.add_parser("query", help="list or export stored decisions (or staff actions: --audit)",
                        description="Every filter given must match; values compare case-insensitively.")
    q.add_argument("--db", default="central.sqlite", help="an existing database (never created here)")
    q.add_argument("--customer", help="the customer's pseudonymous reference (the decision's subject)")
    q.add_argument("--mode", help="pen or paper (online / offline accepted)")
    q.add_argument("--model-version", dest="model_version",
                   help="VERSION (any of the decision's models) or MODEL=VERSION")
    q.add_argument("--operator", help="the staff operator of the request")
    q.add_argument("--kiosk", help="only this kiosk")
    q.add_argument("--site", help="only this site")
    q.add_argument("--outcome", help="only this decision (e.g. suspicious)")
    q.add_argument("--profile", help="only this decision profile")
    q.add_argument("--since", help="from this time (ISO 8601 UTC or epoch ms), inclusive")
    q.add_argument("--until", help="until this time, exclusive")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="json: one object per line; csv: cells safe to open in a spreadsheet")
    q.add_argument("--output", help="write to this file instead of the terminal")
    q.add_argument("--json", action="store_true", help="same as --format json")
    q.add_argument("--audit", action="store_true",
                   help="staff actions instead of decisions (filters: customer, operator, kiosk, site, outcome, time)")
    q.set_defaults(func=_guarded(_query))

    w = csub.add_parser("web", help="a read-only web page of the database, behind a login")
    w.add_argument("--db", default="central.sqlite", help="an existing database (never created here)")
    w.add_argument("--users", required=True, help="central users file ('central user add')")
    w.add_argument("--registry", help="kiosk registry (JSON): kiosks, groups, revocations")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8480)
    w.add_argument("--tls-cert", help="serve HTTPS with this certificate (chain) ...")
    w.add_argument("--tls-key", help="... and its key")
    w.add_argument("--idle-timeout-s", type=float, default=900.0, help="a session ends after this long unused")
    w.set_defaults(func=_guarded(_web))

    u = csub.add_parser("user", help="central users of the web page (scrypt-hashed passwords)")
    usub = u.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    ua = usub.add_parser("add", help="add a user or change a password (asked twice, or --password-stdin)")
    ua.add_argument("name")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ur = usub.add_parser("remove", help="remove a user")
    ur.add_argument("name")
    ul = usub.add_parser("list", help="list the users")
    for sp in (ua, ur, ul):
        sp.add_argument("--users", required=True, help="the users file (JSON, mode 0600)")
        sp.set_defaults(func=_guarded(_user))

    s = csub.add_parser("stats", help="counts of stored rows and of refusals by reason")
    s.add_argument("--db", default="central.sqlite")
    s.add_argument("--registry", help="kiosk registry (JSON): show revoked kiosks as revoked")
    s.set_defaults(func=_guarded(_stats))

    pg = csub.add_parser("purge", help="delete evidence older than the retention period (decisions stay)")
    pg.add_argument("--db", required=True, help="SQLite path, or postgresql://user@host/db")
    pg.add_argument("--evidence-retention-days", type=_retention_days, default=365.0,
                    help="keep evidence this many days after capture (default 365)")
    pg.set_defaults(func=_guarded(_purge))

    ec = csub.add_parser("export-case", help="one decision with its evidence for an examiner "
                                             "(ISO/IEC 19794-7 or PNG, decision and verification JSON)")
    ec.add_argument("--db", required=True, help="SQLite path, or postgresql://user@host/db")
    ec.add_argument("--kiosk", help="the kiosk id")
    ec.add_argument("--seq", type=int, help="the decision's sequence number")
    ec.add_argument("--session", help="or: the decision's session id")
    ec.add_argument("--out", required=True, help="a new (or empty) directory to write the case into")
    ec.add_argument("--registry", help="kiosk registry (JSON): check the kiosk's signature of the evidence again")
    ec.add_argument("--enc-key", action="append", help="the central X25519 private key (repeatable during a "
                                                       "rotation): compare the stored evidence with the envelope "
                                                       "the kiosk sealed")
    ec.set_defaults(func=_guarded(_export_case))


def main(argv: list[str] | None = None) -> int:
    """Run ``central`` alone (``python -m tools.commands.central_cmd [-v] ...``)."""
    parser = argparse.ArgumentParser(prog="sigkiosk")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    register(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = [a for a in argv if a in ("-v", "-vv")]
    rest = [a for a in argv if a not in ("-v", "-vv")]
    args = parser.parse_args([*verbose, "central", *rest])
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
