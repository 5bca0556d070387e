"""FRR and skilled-forgery FAR of the daemon's verifier at its deployed threshold, on real data.

The EER figures of ``sigkiosk eval`` are threshold-free; this measures the operating point a
kiosk actually runs at: the verifier is built from the kiosk's ``[verifier]`` settings by the
daemon's own factory (``models.pen.make_verifier``), so its decisions are those of the daemon's
``models.policy.DecisionPolicy`` (threshold, copy check, rhythm rule), with and without the rhythm
rule deciding. References: each writer's first 5 genuine signatures (of session 1 where the
set has sessions); questioned: the next 10 genuine and all skilled forgeries.

    python -m tools.operating_point --split train   # what the default was chosen on
    python -m tools.operating_point --split test    # what the README reports
    python -m tools.operating_point --split test --pad no-pressure   # as a pad without pressure would report it
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from kiosk.config import VERIFIER_KINDS, VerifierConfig
from models.pen import make_verifier
from models.verification import PenVerifier
from tools.datasets import Dataset, OnlineSample, load_online

SETS = (
    ("susig/VisualSubCorpus", "susig-visual"),
    ("susig/BlindSubCorpus", "susig-blind"),
    ("sigcomp2009-nfi", "sigcomp2009-nfi"),
)


@dataclass(frozen=True)
class OperatingPoint:
    """Decisions of one verifier at its threshold: genuine questioned and rejected, forgeries
    questioned and accepted."""

    genuine: int
    rejected: int
    forged: int
    accepted: int

    @property
    def frr(self) -> float:
        return self.rejected / max(self.genuine, 1)

    @property
    def skilled_far(self) -> float:
        return self.accepted / max(self.forged, 1)


def kiosk_verifier(settings: VerifierConfig) -> PenVerifier:
    """The pen verifier of a kiosk configured with ``settings`` (``[verifier]``), built as the
    daemon builds it: same factory, same arguments, so the same decision policy."""
    return make_verifier(settings.kind, settings.threshold, settings.rhythm_tolerance, settings.rhythm_decides,
                         model_dir=settings.model_dir)


def measure(dataset: Dataset[OnlineSample], verifier: PenVerifier, references: int = 5,
            questioned: int = 10) -> OperatingPoint:
    """The verifier's decisions on ``dataset``: each writer's first ``references`` genuine (of
    session 1 where the set has sessions) as references; questioned: the next ``questioned``
    genuine and all skilled forgeries. Writers with fewer references are left out."""
    genuine = rejected = forged = accepted = 0
    for w in sorted(dataset.writers):
        g = dataset.genuine(w)
        refs = [s for s in g if s.session in (None, 1)][:references]
        if len(refs) < references:
            continue
        reference_set = verifier.enroll([s.trajectory for s in refs])
        for q in [s for s in g if s not in refs][:questioned]:
            genuine += 1
            rejected += not verifier.verify(reference_set, q.trajectory).approved
        for q in dataset.skilled(w):
            forged += 1
            accepted += verifier.verify(reference_set, q.trajectory).approved
    return OperatingPoint(genuine, rejected, forged, accepted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/online"))
    ap.add_argument("--split", choices=("train", "validate", "test"), default="test")
    ap.add_argument("--kind", choices=VERIFIER_KINDS, default=VerifierConfig().kind,
                    help="the verifier ([verifier] kind; default: the kiosk's default)")
    ap.add_argument("--threshold", type=float, default=VerifierConfig().threshold,
                    help="[verifier] threshold (the classic distance; fused and match-score decide at their "
                         "model's own operating point)")
    ap.add_argument("--pad", default="recorded",
                    help="each signature as another pad would report it: a device variant of the cross-device "
                         "yardstick (recorded, no-pressure, no-time, 75hz, 200hz)")
    args = ap.parse_args()
    # Imported here: the yardstick measures with this module's measure().
    from tools.cross_device import VARIANTS, device_variant

    variant = next((v for v in VARIANTS if v.key == args.pad), None)
    if variant is None:
        ap.error(f"--pad: unknown pad {args.pad!r}; known: {', '.join(v.key for v in VARIANTS)}")
    for folder, fmt in SETS:
        ds = device_variant(load_online(args.data / folder, fmt).subset(args.split), variant)
        for rhythm in (False, True):
            settings = replace(VerifierConfig(), kind=args.kind, threshold=args.threshold, rhythm_decides=rhythm)
            op = measure(ds, kiosk_verifier(settings))
            print(f"{fmt:<16} rhythm decides {'yes' if rhythm else 'no ':<3}  "
                  f"FRR {100 * op.frr:5.1f} % ({op.rejected}/{op.genuine})  "
                  f"skilled FAR {100 * op.skilled_far:5.1f} % ({op.accepted}/{op.forged})")

if __name__ == "__main__":
    main()
