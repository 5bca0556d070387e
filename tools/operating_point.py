"""FRR and skilled-forgery FAR of the daemon's verifier at its deployed threshold, on real data.

The EER figures of ``sigkiosk eval`` are threshold-free; this measures the operating point a
kiosk actually runs at (``kiosk.verifier``, the same object the daemon uses), with and without the
rhythm rule deciding. References: each writer's first 5 genuine signatures (of session 1 where the
set has sessions); questioned: the next 10 genuine and all skilled forgeries.

    python -m tools.operating_point --split train   # what the default was chosen on
    python -m tools.operating_point --split test    # what the README reports
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kiosk.verifier import make_verifier
from models.classic import ClassicConfig
from tools.datasets import load_online

SETS = (
    ("susig/VisualSubCorpus", "susig-visual"),
    ("susig/BlindSubCorpus", "susig-blind"),
    ("sigcomp2009-nfi", "sigcomp2009-nfi"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/online"))
    ap.add_argument("--split", choices=("train", "validate", "test"), default="test")
    ap.add_argument("--threshold", type=float, default=ClassicConfig().threshold)
    args = ap.parse_args()
    for folder, fmt in SETS:
        ds = load_online(args.data / folder, fmt).subset(args.split)
        for rhythm in (False, True):
            v = make_verifier("classic", args.threshold, rhythm_decides=rhythm)
            genuine = rejected = forged = accepted = 0
            for w in sorted(ds.writers):
                g = ds.genuine(w)
                refs = [s for s in g if s.session in (None, 1)][:5]
                if len(refs) < 5:
                    continue
                template = v.build([s.trajectory for s in refs])
                for q in [s for s in g if s not in refs][:10]:
                    genuine += 1
                    rejected += v.verify(template, q.trajectory).decision != "APPROVED"
                for q in ds.skilled(w):
                    forged += 1
                    accepted += v.verify(template, q.trajectory).decision == "APPROVED"
            print(f"{fmt:<16} rhythm decides {'yes' if rhythm else 'no ':<3}  "
                  f"FRR {100 * rejected / max(genuine, 1):5.1f} % ({rejected}/{genuine})  "
                  f"skilled FAR {100 * accepted / max(forged, 1):5.1f} % ({accepted}/{forged})")


if __name__ == "__main__":
    main()
