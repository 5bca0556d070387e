"""The demo: enrollment and verification of several writers, end to end through the verifier.

Signatures come from the sigma-lognormal synthesizer (no dataset needed), or from a dataset
folder (``--data``). Each writer enrolls with the same ``Enrollment`` session the kiosk uses
("Save (n/N)", refusals with reasons), then genuine signatures and skilled forgeries are verified
against the template and decided with the global threshold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.classic import ClassicConfig, score_query, signature_features
from models.enrollment import Enrollment, EnrollmentPolicy
from models.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoDecision:
    writer: str
    kind: str  # "genuine" or "forged"
    approved: bool
    distance: float


@dataclass
class DemoSummary:
    decisions: list[DemoDecision] = field(default_factory=list)
    refusals: int = 0

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for kind in ("genuine", "forged"):
            ds = [d for d in self.decisions if d.kind == kind]
            out[kind] = {
                "approved": sum(d.approved for d in ds),
                "suspicious": sum(not d.approved for d in ds),
            }
        return out


def synthetic_writers(n_writers: int, seed: int) -> dict[str, tuple[list[Trajectory], list[Trajectory]]]:
    from tools.synth import make_population

    return make_population(n_writers=n_writers, n_genuine=8, n_forgeries=3, seed=seed)


def dataset_writers(path: Path, fmt: str, n_writers: int) -> dict[str, tuple[list[Trajectory], list[Trajectory]]]:
    from tools.datasets import load_online

    ds = load_online(path, fmt).subset("test")
    out = {}
    for w in sorted(ds.writers)[:n_writers]:
        genuine = [s.trajectory for s in ds.genuine(w)]
        forged = [s.trajectory for s in ds.skilled(w)][:3]
        if len(genuine) >= 7 and forged:
            out[w] = (genuine[:8], forged)
    return out


def run_demo(
    writers: dict[str, tuple[list[Trajectory], list[Trajectory]]],
    config: ClassicConfig = ClassicConfig(),
    policy: EnrollmentPolicy = EnrollmentPolicy(),
    say: Callable[[str], None] = print,
) -> DemoSummary:
    summary = DemoSummary()
    for writer, (genuine, forged) in writers.items():
        session = Enrollment(policy=policy, config=config)
        pending = list(genuine)
        while not session.complete and pending:
            refusals = session.add(pending.pop(0))
            if refusals:
                summary.refusals += 1
                say(f"  writer {writer}: sample refused: {refusals[0].message}")
            else:
                say(f"  writer {writer}: Save ({len(session.accepted)}/{policy.references})")
        if not session.complete:
            say(f"  writer {writer}: enrollment incomplete, skipped")
            continue
        template = session.template()
        for kind, queries in (("genuine", pending), ("forged", forged)):
            for q in queries:
                s = score_query(template, signature_features(q, config), config)
                d = DemoDecision(writer, kind, s.distance <= config.threshold, s.distance)
                summary.decisions.append(d)
                verdict = "APPROVED  " if d.approved else "SUSPICIOUS"
                say(f"{verdict} writer {writer}  {kind:<7}  distance {d.distance:5.2f}  (threshold {config.threshold:.2f})")
    return summary


def write_json(summary: DemoSummary, path: Path) -> None:
    c = summary.counts()
    report = {
        "decisions": len(summary.decisions),
        "genuine": c["genuine"],
        "forged": c["forged"],
        "refused_samples": summary.refusals,
        "mean_distance": {
            k: float(np.mean([d.distance for d in summary.decisions if d.kind == k] or [np.nan]))
            for k in ("genuine", "forged")
        },
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
