"""The gradient histograms' mean descriptor: fit the one the kiosk ships, and measure what
centring on it does.

The kiosk compares each picture's histograms less the mean descriptor of many signatures, scaled
to unit length again (``models.hog.hog_compared``): the common part that every signature shares
(ink along a line, mostly upright strokes) no longer makes up most of the distance.

``--fit``: the mean of the shipped descriptor (the picture as it is: row 0 of
``models.hog.hog_turned``) over every picture of the TRAINING writers of the Dutch scans and the
cross-media set (paper and electronic ink, genuine and forged), and the prior of the distances
centred on it (the Dutch training writers, as every prior), written to
``models/assets/hog_centre.npz`` with its record ``hog_centre.run.json`` (command, commit, each
set's file hash, writers, pictures, the prior, the file's SHA-256). Validation writers stay
unseen: the paper fusions and the paper threshold are chosen on them.

``--measure two-fold | leave-one-set-out``: the histograms alone, plain against centred, with the
columns and protocols of ``tools.hog_variants`` and ``tools.hog_metric`` (skilled EER, global;
Dutch K = 5, 10 draws; cross-media pad ink -> paper K = 3 and paper -> paper K = 1), on train +
validate writers only: the mean fitted on one half of both sets' writers (hash split) and measured
on the other, both ways; or fitted on one set and measured on the other. The prior of each is
refitted on the fitting side's Dutch writers (two-fold) or the Dutch training writers.

    python -m tools.hog_centre --fit                                # about 45 s here
    python -m tools.hog_centre --measure two-fold                   # about 2.5 min
    python -m tools.hog_centre --measure leave-one-set-out          # about 2.5 min
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kiosk.templates import atomic_write
from models._assets import shipped_assets
from models.hog import CENTRE_FILE, SHIPPED, HogCentre, centre_bytes, centred, hog_descriptor
from tools.datasets.types import writer_split
from tools.evaluate_offline import HogProvider, fit_prior
from tools.hog_metric import Sets, describe, everyone, half, in_half, measure, not_of, of_writers
from tools.hog_variants import ANY_PRIOR, CASES, DATA, SETS, load_sets
from tools.provenance import git_commit
from tools.train.data import files_hash

log = logging.getLogger(__name__)

Keep = Callable[[str, str], bool]


def mean_descriptor(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of descriptors (summed in float64), as float32. Pure."""
    if not rows:
        raise ValueError("no descriptor to average")
    return np.mean(np.stack(rows).astype(np.float64), axis=0).astype(np.float32)


def upright(sets: Sets, described: dict[str, np.ndarray], keep: Keep) -> list[np.ndarray]:
    """Row 0 (the picture as it is) of every picture of the writers ``keep(set, writer)`` accepts."""
    return [described[str(s.path)][0] for name, (ds, _) in sets.items() for w, samples in sorted(ds.writers.items())
            if keep(name, w) for s in samples]


def write_centre(centre: HogCentre, record: dict, folder: Path) -> tuple[Path, Path]:
    """``hog_centre.npz`` and its record (with the file's SHA-256) in ``folder``, each written
    whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    data = centre_bytes(centre)
    record = {**record, "sha256": hashlib.sha256(data).hexdigest()}
    out = folder / CENTRE_FILE
    run = folder / "hog_centre.run.json"
    # Readable by all, as every shipped model file is.
    atomic_write(out, data, mode=0o644)
    atomic_write(run, (json.dumps(record, indent=1) + "\n").encode(), mode=0o644)
    return out, run


def fit(data: Path, folder: Path, command: str, max_writers: int | None = None) -> dict:
    """Fit the mean descriptor on the training writers (``max_writers``: at most so many of each
    kind per set, a quick look, never the shipped file), then the prior of the distances centred
    on it (the Dutch training writers, as ``tools.evaluate_offline.fit_prior`` fits every prior),
    and write both to ``folder``."""
    t0 = time.perf_counter()
    sets = load_sets(data, max_writers)
    writers = {name: sorted(w for w in ds.writers if writer_split(w) == "train") for name, (ds, _) in sets.items()}
    rows = [hog_descriptor(sets[name][1][str(s.path)]) for name, ws in writers.items() for w in ws
            for s in sets[name][0].writers[w]]
    mean = mean_descriptor(rows)
    dutch, levels = sets["dutch"]
    provider = HogProvider(prior=ANY_PRIOR, prepared=lambda s: levels[str(s.path)], centre=HogCentre(mean, ANY_PRIOR))
    prior = fit_prior(of_writers(dutch, writers["dutch"]), provider)
    record = {
        "command": command, "git_commit": git_commit(),
        "data_sha256": {name: files_hash(data / sub) for name, sub, _ in SETS},
        "writers": writers, "pictures": len(rows), "descriptor_length": int(SHIPPED.length),
        "prior": [prior.min_dist, prior.mean_dist], "seconds": round(time.perf_counter() - t0, 1),
    }
    out, run = write_centre(HogCentre(mean, prior), record, folder)
    print(f"mean of {len(rows)} pictures of {sum(len(v) for v in writers.values())} training writers, prior "
          f"{prior.min_dist:.2f} / {prior.mean_dist:.2f} -> {out} ({out.stat().st_size} bytes) and {run}")
    return record


def _compare(sets: Sets, described: dict[str, np.ndarray], centre: np.ndarray, prior_writers: list[str],
             cases: Sequence[tuple[str, str, str, int, int]], writers: Keep, label: str) -> None:
    centred_rows = {p: centred(rows, centre) for p, rows in described.items()}
    for name, rows in (("plain", described), ("centred", centred_rows)):
        row = measure(sets, rows, None, prior_writers, cases, writers)
        cells = "  ".join(f"{c} {e:6.2f}" for c, e in row.items())
        print(f"  {label}, {name:<7}: {cells}   sum {sum(row.values()):6.2f}", flush=True)


def measure_centring(data: Path, protocol: str, max_writers: int | None = None) -> None:
    t0 = time.perf_counter()
    sets = load_sets(data, max_writers)
    described = describe(sets)
    print("skilled EER %, global; the histograms alone, plain and centred on a mean fitted apart")
    if protocol == "two-fold":
        for fold in (0, 1):
            centre = mean_descriptor(upright(sets, described, in_half(fold, False)))
            prior_writers = [w for w in sets["dutch"][0].writers if half(w) != fold]
            _compare(sets, described, centre, prior_writers, CASES, in_half(fold, True),
                     f"mean of half {1 - fold}, measured on half {fold}")
    else:
        prior_writers = [w for w in sets["dutch"][0].writers if writer_split(w) == "train"]
        for left_out in ("dutch", "cross-media"):
            centre = mean_descriptor(upright(sets, described, not_of(left_out)))
            _compare(sets, described, centre, prior_writers, [c for c in CASES if c[1] == left_out],
                     everyone, f"{left_out} left out")
    print(f"({time.perf_counter() - t0:.0f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared offline folder")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--fit", action="store_true", help="fit the mean descriptor and write it to --out")
    what.add_argument("--measure", choices=("two-fold", "leave-one-set-out"))
    ap.add_argument("--out", type=Path, default=None, help="the folder --fit writes to (default: the shipped assets)")
    ap.add_argument("--max-writers", type=int, default=None,
                    help="at most this many writers of each kind per set (a quick look, not the shipped file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.fit:
        command = " ".join(["python", "-m", "tools.hog_centre", *(argv if argv is not None else sys.argv[1:])])
        if args.max_writers is not None and args.out is None:
            ap.error("--max-writers fits a quick look: give it an --out folder, never the shipped assets")
        fit(args.data, args.out or shipped_assets(), command, args.max_writers)
    else:
        measure_centring(args.data, args.measure, args.max_writers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
