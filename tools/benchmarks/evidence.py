"""Benchmark: what evidence (a decision's questioned signature, sealed after it) costs the kiosk.

The demo environment (private mosquitto with TLS and the ACL, a collector into SQLite, the daemon
with its screen) in this process pinned to one CPU, as the daemon benchmark. Signatures are
replayed through the live capture path with ``[link] evidence`` switched on and off for
alternate customers (so both see the same machine state), and the daemon measures pen-up to
decision published (sealed and committed to the outbox, fsync included). Evidence is built,
sealed and committed after the decision is shown; its own time is reported too, and the
collector's stored evidence is counted to show it arrived.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.benchmarks.daemon import enrolled_queries, pen_up_latencies
from tools.demo import start_environment

NAME = "evidence"


def run(quick: bool = False) -> dict[str, float]:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    root = Path(tempfile.mkdtemp(prefix="sigkiosk-bench-evidence-"))
    n_queries = 16 if quick else 160
    try:
        env = start_environment(root, speed=10.0, pen_up_timeout_s=0.3)
        try:
            link = env.daemon.link
            assert link is not None
            base = link.config

            def switch(i: int) -> None:
                link.config = dataclasses.replace(base, evidence=i % 2 == 1)

            os.sched_setaffinity(0, {cpu})
            lat = pen_up_latencies(env, enrolled_queries(env, n_queries), switch)
            evidence_ms = list(env.daemon.evidence_ms)
            link.flush(30)
            deadline = time.monotonic() + 20   # acknowledged by the broker; the collector commits next
            while (stored := env.collector.store.count("evidence")) < len(evidence_ms) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    off, on = np.array(lat[0::2]), np.array(lat[1::2])
    ev = np.array(evidence_ms)
    out = {
        "pen_up_to_published_p50_ms_evidence_off": float(np.percentile(off, 50)),
        "pen_up_to_published_p95_ms_evidence_off": float(np.percentile(off, 95)),
        "pen_up_to_published_p50_ms_evidence_on": float(np.percentile(on, 50)),
        "pen_up_to_published_p95_ms_evidence_on": float(np.percentile(on, 95)),
        "evidence_added_p95_ms": float(np.percentile(on, 95) - np.percentile(off, 95)),
        "evidence_build_seal_commit_p50_ms": float(np.percentile(ev, 50)),
        "evidence_build_seal_commit_p95_ms": float(np.percentile(ev, 95)),
        "decisions": float(len(lat)),
        "evidence_stored": float(stored),
    }
    print(f"evidence: pen-up to decision published (one core, fsync'd outbox), {len(off)} decisions each: "
          f"evidence off p50 {out['pen_up_to_published_p50_ms_evidence_off']:.1f} ms p95 "
          f"{out['pen_up_to_published_p95_ms_evidence_off']:.1f} ms; evidence on p50 "
          f"{out['pen_up_to_published_p50_ms_evidence_on']:.1f} ms p95 "
          f"{out['pen_up_to_published_p95_ms_evidence_on']:.1f} ms; p95 difference "
          f"{out['evidence_added_p95_ms']:+.1f} ms")
    print(f"evidence: built, sealed and committed after the decision is shown: p50 "
          f"{out['evidence_build_seal_commit_p50_ms']:.1f} ms, p95 {out['evidence_build_seal_commit_p95_ms']:.1f} ms "
          f"over {len(ev)}; {stored} stored at the collector")
    return out
