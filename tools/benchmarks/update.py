"""Benchmark: a model update from ``push`` to active, over a private mosquitto on loopback.

Bundles the shipped models (``models/assets/*.tflite`` with their ``.golden.npz``) when they
exist, else builds real test models with ``tools/make_test_models.py`` (tensorflow, off-device;
a ~4 MB dense model plus the small ones): a few MB of real model content, no padding. Then an
admin client pushes it (256 KiB retained chunks, TLS, ACL) to a kiosk whose KioskLink and
UpdateAgent run in this process, and the time to the kiosk's signed ``active`` report is taken,
with the kiosk-side split: transfer (offer to last chunk), verification (hashes, staging with
fsync, golden vectors with the real runtime), switch and post-switch check.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from kiosk import keys
from kiosk.bundle import manifest_digest
from kiosk.link import KioskLink, LinkConfig
from kiosk.topics import KioskTopics
from kiosk.update_agent import UpdateAgent, UpdateConfig
from models import shipped_assets
from tools import pki
from tools.broker import BrokerSettings, Mosquitto, free_port
from tools.bundle import ModelSpec, create_bundle
from tools.make_test_models import write_models
from tools.registry import KioskEntry, Registry
from tools.rollout import AdminClient, AdminConnection, target_base

NAME = "update"


def _models(tmp: Path) -> tuple[list, str]:
    shipped = sorted(p for p in shipped_assets().glob("*.tflite") if p.with_suffix(".golden.npz").exists())
    if shipped:
        return [ModelSpec(p, p.with_suffix(".golden.npz")) for p in shipped], "shipped models/assets"

    write_models(tmp / "models", big=True)
    return [ModelSpec(p, p.with_suffix(".golden.npz")) for p in sorted((tmp / "models").glob("*.tflite"))
            if p.stem != "broken"], "tools/make_test_models.py (--big)"


def run(quick: bool = False) -> dict[str, float]:
    reps = 2 if quick else 5
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        specs, source = _models(tmp)
        # Keys and certificates for this run only, in the temporary directory.
        pki.init_ca(tmp / "ca")
        pki.issue(tmp / "ca", "kiosk", "bench-1", tmp / "certs")
        pki.issue(tmp / "ca", "admin", "bench", tmp / "certs")
        sign_pub = keys.generate_signing_key(tmp / "kiosk" / keys.KIOSK_SIGN_KEY)
        keys.generate_encryption_key(tmp / "central" / keys.CENTRAL_ENC_KEY)
        keys.generate_signing_key(tmp / "admin" / "admin.key")
        reg = Registry()
        reg.add(KioskEntry("bench-1", "bench", None, (sign_pub,)))
        reg.save(tmp / "registry.json")
        port = free_port()
        broker = Mosquitto.create(BrokerSettings(directory=tmp / "broker", ca_dir=tmp / "ca", port=port, admins=("bench",)), reg)
        broker.start()
        ucfg = UpdateConfig(root=tmp / "store", bundle_name="bench-models", admin_keys=(tmp / "admin" / "admin.key.pub",))
        factory = create_bundle(name="bench-models", version=1, models=specs[-1:], sign_keys=[tmp / "admin" / "admin.key"])
        factory.write(tmp / "factory.skb")
        UpdateAgent(ucfg, topics=KioskTopics("sig", "bench", "bench-1")).install_file(tmp / "factory.skb")
        link = KioskLink(LinkConfig(
            kiosk_id="bench-1", site="bench", broker_host="localhost", broker_port=port, ca_file=tmp / "ca" / "ca.crt",
            cert_file=tmp / "certs" / "bench-1.crt", key_file=tmp / "certs" / "bench-1.key",
            sign_key_file=tmp / "kiosk" / keys.KIOSK_SIGN_KEY,
            central_pub_file=tmp / "central" / f"{keys.CENTRAL_ENC_KEY}.pub", outbox_path=tmp / "outbox.sqlite"))
        agent = UpdateAgent.for_link(ucfg, link)
        totals, pushes, transfer, verify, switch = [], [], [], [], []
        size = chunks = 0
        try:
            agent.start()
            link.start()
            link.commands_ready.wait(15)
            conn = AdminConnection("localhost", port, tmp / "ca" / "ca.crt", tmp / "certs" / "admin.bench.crt",
                                   tmp / "certs" / "admin.bench.key")
            base = target_base("sig", site="bench", kiosk="bench-1")
            with AdminClient(conn, reg) as admin:
                for version in range(2, 2 + reps):
                    bundle = create_bundle(name="bench-models", version=version, models=specs,
                                           sign_keys=[tmp / "admin" / "admin.key"])
                    size = len(bundle.payload)
                    since = admin.mark()
                    t0 = time.perf_counter()
                    offer = admin.push(bundle, base)
                    pushes.append(time.perf_counter() - t0)
                    out = admin.wait(["bench-1"], manifest_digest(bundle.envelope), 120, since, offer.created_ms)
                    totals.append(time.perf_counter() - t0)
                    if out["bench-1"] != "active":
                        raise RuntimeError(f"benchmark update not installed: {admin.reports.get('bench-1')}")
                    chunks = len(offer.chunks)
                    at = {r["state"]: r["time_ms"] for r in admin.history[since:]
                          if (r.get("offer") or {}).get("pushed_ms") == offer.created_ms}
                    transfer.append((at["verifying"] - at["downloading"]) / 1000)
                    verify.append((at["staged"] - at["verifying"]) / 1000)
                    switch.append((at["active"] - at["staged"]) / 1000)
        finally:
            agent.close()
            link.close()
            broker.stop()
    fig = {
        "bundle_mb": size / 1e6, "chunks": float(chunks),
        "push_to_active_s_median": statistics.median(totals), "push_to_active_s_max": max(totals),
        "admin_push_s_median": statistics.median(pushes), "transfer_s_median": statistics.median(transfer), "verify_stage_golden_s_median": statistics.median(verify),
        "switch_and_recheck_s_median": statistics.median(switch),
    }
    print(f"update: bundle of {len(specs)} models from {source}: {fig['bundle_mb']:.2f} MB in {chunks} chunks, "
          f"{reps} pushes over TLS mosquitto on loopback")
    print(f"  push -> active          median {fig['push_to_active_s_median']:.3f} s   max {fig['push_to_active_s_max']:.3f} s "
          "(admin publish + acks, kiosk transfer, checks, switch, signed report back)")
    print(f"  admin: push returns     median {fig['admin_push_s_median']:.3f} s (retained offer lookup, chunks and offer acknowledged)")
    print(f"  kiosk: transfer         median {fig['transfer_s_median']:.3f} s")
    print(f"  kiosk: verify + stage + golden (real runtime)  median {fig['verify_stage_golden_s_median']:.3f} s")
    print(f"  kiosk: switch + re-check from the active slot  median {fig['switch_and_recheck_s_median']:.3f} s")
    return fig


if __name__ == "__main__":
    run()
