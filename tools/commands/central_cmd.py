"""``sigkiosk central``: run the collector, query stored decisions, show refusal counts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _parse_time(text: str) -> int:
    """ISO 8601 (``2026-11-22``, ``2026-11-22T10:00:00Z``) or epoch milliseconds -> epoch ms."""
    if text.isdigit():
        return int(text)
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def _run(args: argparse.Namespace) -> int:
    from tools.central.collector import Collector, CollectorConfig

    cfg = CollectorConfig(
        broker_host=args.broker_host, broker_port=args.broker_port, ca_file=Path(args.ca), cert_file=Path(args.cert),
        key_file=Path(args.key), enc_key_files=tuple(Path(p) for p in args.enc_key), registry_file=Path(args.registry),
        db=args.db, prefix=args.prefix, share_group=args.share_group, max_age_s=args.max_age_days * 86400,
        max_future_s=args.max_future_s, fresh_session=args.fresh_session, allow_raw_evidence=args.allow_raw_evidence,
    )
    collector = Collector(cfg)
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


def _query(args: argparse.Namespace) -> int:
    from tools.central.store import open_store

    store = open_store(args.db)
    try:
        rows = store.query_decisions(
            kiosk_id=args.kiosk, since_ms=_parse_time(args.since) if args.since else None,
            until_ms=_parse_time(args.until) if args.until else None, outcome=args.outcome, limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps({"kiosk_id": r.kiosk_id, "seq": r.seq, "site": r.site, "created_ms": r.created_ms,
                              "received_ms": r.received_ms, "decision": r.decision, "score": r.score,
                              "reasons": r.payload.get("reasons", [])}))
        return 0
    print(f"{'time (UTC)':<24} {'kiosk':<16} {'seq':>18} {'decision':<12} {'score':>6}  reasons")
    for r in rows:
        t = dt.datetime.fromtimestamp(r.created_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        score = f"{r.score:.3f}" if r.score is not None else "-"
        print(f"{t:<24} {r.kiosk_id:<16} {r.seq:>18} {r.decision:<12} {score:>6}  {','.join(r.payload.get('reasons', []))}")
    print(f"{len(rows)} decision(s)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from tools.central.store import open_store

    store = open_store(args.db)
    try:
        out: dict[str, Any] = {"decisions": store.count("decisions"), "logs": store.count("logs"),
               "refusals": store.refusal_counts(), "kiosks": {k: v["state"] for k, v in store.status().items()}}
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


def _guarded(func):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        from tools.central.store import StoreError

        try:
            return func(args)
        except (StoreError, ValueError, FileNotFoundError, PermissionError) as exc:
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
    r.add_argument("--allow-raw-evidence", action="store_true",
                   help="accept decisions carrying raw pen data / images (the kiosks' policy must say the same)")
    r.set_defaults(func=_guarded(_run))

    q = csub.add_parser("query", help="list stored decisions")
    q.add_argument("--db", default="central.sqlite")
    q.add_argument("--kiosk", help="only this kiosk")
    q.add_argument("--since", help="from this time (ISO 8601 UTC or epoch ms), inclusive")
    q.add_argument("--until", help="until this time, exclusive")
    q.add_argument("--outcome", help="only this decision (e.g. SUSPICIOUS)")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=_guarded(_query))

    s = csub.add_parser("stats", help="counts of stored rows and of refusals by reason")
    s.add_argument("--db", default="central.sqlite")
    s.add_argument("--registry", help="kiosk registry (JSON): show revoked kiosks as revoked")
    s.set_defaults(func=_guarded(_stats))


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
