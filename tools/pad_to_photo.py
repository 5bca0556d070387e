"""Enrolled on the pad, verified on a photographed paper signature: the kiosk's case on real writers.

The real paper sets have no pen trajectories, so this measurement is built from the online sets
(:data:`tools.train.data.DEFAULT_SETS`): each writer's first 5 genuine signatures are the pad
references (``models.paper.PaperVerifier.enroll_pad``, as the daemon builds them); the next 10
genuine and every skilled forgery are written on paper with a ballpoint of random width (0.3-0.8 mm
and the pen's own variation, ``models.render.render_ink`` with a generator: the range of the CNN's
rendered training ink) and photographed (``tools.photos.make_photo``, one of the usable
difficulties at random), found by the kiosk's finder and verified by the kiosk's verifier at its
operating point. A photo the finder refuses is counted apart (a kiosk asks for another).

Pen and camera differ from the references here on purpose: that is what a pad enrollment meets at
a bank counter. Nothing is tuned on these writers; the split is the writers' (ids, as every set).
Each picture's pen and photo come from a generator seeded by (set, writer, signature), so a rerun
gives the same pictures.

    python -m tools.pad_to_photo --split validate
"""

from __future__ import annotations

import argparse
import logging
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.image_preprocess import NoInkError
from models.paper import PaperVerifier
from models.policy import Verdict
from models.render import render_ink
from models.signature_finder import PictureError, find_signature
from models.trajectory import Trajectory
from tools.datasets import load_online
from tools.datasets.types import writer_split
from tools.metrics import equal_error_rate
from tools.paper_operating_point import Outcome
from tools.photos import USABLE, make_photo
from tools.train.data import DEFAULT_SETS

log = logging.getLogger(__name__)

DATA = Path("../shared/data")
REFERENCES = 5
QUESTIONED = 10
#: The pen widths (mm) questions are written with: the range of the CNN's rendered training ink.
PEN_MM = (0.3, 0.8)


def photographed(traj: Trajectory, rng: np.random.Generator) -> np.ndarray:
    """A camera frame of ``traj`` written on paper with a random ballpoint."""
    ink = render_ink(traj, pen_width_mm=float(rng.uniform(*PEN_MM)), rng=rng)
    return make_photo(ink, rng, difficulty=USABLE[int(rng.integers(len(USABLE)))]).frame


def decide_writer(verifier: PaperVerifier, genuine: Sequence[Trajectory], forged: Sequence[Trajectory],
                  seed: Sequence[int]) -> tuple[list[Verdict], list[Verdict], int]:
    """Verdicts on the writer's questioned genuine and forged photos, and how many photos the
    finder refused."""
    refs = verifier.enroll_pad(genuine[:REFERENCES])
    out: tuple[list[Verdict], list[Verdict]] = ([], [])
    refused = 0
    questions = [(0, t) for t in genuine[REFERENCES:REFERENCES + QUESTIONED]] + [(1, t) for t in forged]
    for n, (kind, traj) in enumerate(questions):
        rng = np.random.default_rng([*seed, n])
        try:
            picture = find_signature(photographed(traj, rng))
            out[kind].append(verifier.verify(refs, picture))
        except (NoInkError, PictureError):
            refused += 1
    return out[0], out[1], refused


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (online/ under it)")
    ap.add_argument("--split", choices=("validate", "test"), default="validate")
    ap.add_argument("--max-writers", type=int, default=None, help="at most this many writers per set")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="the paper models and fusion to measure (default: the shipped ones)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    verifier = PaperVerifier(args.model_dir)
    print(f"pad references -> photographed paper, {args.split} writers, K = {REFERENCES}, "
          f"threshold {verifier.fusion.threshold:.4f}")
    total: tuple[list[Verdict], list[Verdict]] = ([], [])
    for rel, fmt in DEFAULT_SETS:
        ds = load_online(args.data / rel, fmt, skip_malformed=True)
        writers = sorted(w for w in ds.writers if writer_split(w) == args.split
                         and len(ds.genuine(w)) > REFERENCES and ds.skilled(w))[:args.max_writers]
        gen: list[Verdict] = []
        forg: list[Verdict] = []
        refused = 0
        for w in writers:
            seed = (zlib.crc32(fmt.encode()), zlib.crc32(w.encode()))
            g, f, r = decide_writer(verifier, [s.trajectory for s in ds.genuine(w)],
                                    [s.trajectory for s in ds.skilled(w)], seed)
            gen += g
            forg += f
            refused += r
        if not writers:
            continue
        _report(fmt, len(writers), Outcome(tuple(gen), tuple(forg)), refused)
        total[0].extend(gen)
        total[1].extend(forg)
    _report("all", None, Outcome(tuple(total[0]), tuple(total[1])), None)
    return 0


def _report(name: str, writers: int | None, o: Outcome, refused: int | None) -> None:
    frr, far = o.rates()
    eer, _ = equal_error_rate(np.array([v.distance for v in o.genuine]), np.array([v.distance for v in o.forged]))
    print(f"  {name:<18} {'' if writers is None else f'{writers:>3} writers'}  FRR {100 * frr:5.1f} % "
          f"({round(frr * len(o.genuine))}/{len(o.genuine)})  skilled FAR {100 * far:5.1f} % "
          f"({round(far * len(o.forged))}/{len(o.forged)})  skilled EER {100 * eer:5.2f} %"
          + ("" if refused is None else f"  photos refused {refused}"))


if __name__ == "__main__":
    sys.exit(main())
