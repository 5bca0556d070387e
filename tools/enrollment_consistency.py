"""Where the enrollment's consistency check (``EnrollmentPolicy.max_inconsistency``) falls on real
writers: the score a kiosk computes while a customer enrols (``models.enrollment.consistency_score``).

For every training writer of the four shared pen sets: each of its 2nd to 6th genuine signatures
against those before it (what enrollment computes, sample by sample), and one genuine signature of
each of 20 other writers of the same set against its first five (someone else enrolling in its
name). Prints the quantiles of both and how many of each the shipped limit refuses.

    python -m tools.enrollment_consistency ../shared/data/online     # about 1 min here
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.classic import ClassicConfig, signature_features
from models.enrollment import EnrollmentPolicy, consistency_score
from tools.cross_device import SETS, pick_writers
from tools.datasets import load_online

SAMPLES = 6
OTHERS = 20


def scores(data_dir: Path, config: ClassicConfig = ClassicConfig(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(genuine scores during enrollment, other people's scores against a full enrollment)."""
    rng = np.random.default_rng(seed)
    own: list[float] = []
    other: list[float] = []
    for _, folder, fmt in SETS:
        ds = pick_writers(load_online(data_dir / folder, fmt), {"train"}, None)
        firsts = {w: [signature_features(s.trajectory, config) for s in ds.genuine(w)[:SAMPLES]]
                  for w in ds.writers}
        firsts = {w: f for w, f in firsts.items() if len(f) == SAMPLES}
        for w, f in firsts.items():
            own += [consistency_score(f[i], f[:i], config) for i in range(1, SAMPLES)]
            strangers = [o for o in firsts if o != w]
            for o in rng.choice(strangers, min(OTHERS, len(strangers)), replace=False):
                other.append(consistency_score(firsts[str(o)][0], f[:SAMPLES - 1], config))
    return np.array(own), np.array(other)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.enrollment_consistency", description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared online folder")
    args = ap.parse_args(argv)
    own, other = scores(args.data)
    limit = EnrollmentPolicy().max_inconsistency
    q = [50, 99, 99.5, 100]
    report = {
        "limit": limit,
        "genuine_during_enrollment": {"n": len(own), "refused": int((own > limit).sum()),
                                      **{f"p{v:g}": round(float(np.percentile(own, v)), 3) for v in q}},
        "other_people": {"n": len(other), "refused": int((other > limit).sum()),
                         **{f"p{v:g}": round(float(np.percentile(other, v)), 3) for v in (1, 10, 50)}},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
