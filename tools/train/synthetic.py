"""Synthetic training identities for the learned pen verifier (issue 13).

Each of a sample of real *training* writers' genuine signatures is fitted with the sigma-lognormal
model (:mod:`tools.lognormal_fit`) and becomes an identity of its own: ``duplicates`` genuine-like
samples (the same person signing again) and ``forgery_like`` impostor-like samples (a forger's
larger distortion and rhythm). Validation and test writers are never fitted.

The fits are the slow part (about 1-30 s a signature on this machine, long Japanese signatures
the slowest), so they are cached as JSON under the work folder, keyed by the data hashes, the
signatures chosen and the fitting code's constants; the samples are drawn from them on every run
(deterministic from ``seed``). A fit under ``min_snr_db`` (velocity SNR) is not used: a poor
reconstruction is not that person's signature any more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.learned import LearnedConfig, resampled_points
from models.trajectory import Trajectory, TrajectoryError
from tools import lognormal_fit
from tools.datasets.types import Label
from tools.synth import writer_from_json, writer_to_json
from tools.train.data import Corpus, Signature, sample_key
from tools.train.loop import progress

log = logging.getLogger(__name__)

#: Synthetic signatures' writer ids start with this (never a dataset format name).
SYNTH_PREFIX = "synth"
#: Their split: apart from ``train`` so that priors, representative data and validation never see
#: them; the triplet sampler mixes them with the training writers.
SYNTH_SPLIT = "synth"
#: Signatures longer than this (points as recorded) are not fitted for training (time).
MAX_FIT_POINTS = 500
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class SynthConfig:
    """``identities``: real training signatures fitted (0: no synthesis). ``duplicates`` and
    ``forgery_like``: samples drawn per identity. ``skills``: the forgery-likes' skill range."""

    identities: int = 0
    duplicates: int = 6
    forgery_like: int = 0
    skills: tuple[float, float] = (0.5, 1.0)
    min_snr_db: float = 15.0
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def _fit_constants() -> dict:
    # What a fit's result depends on (which signatures are drawn does not: records are per key).
    f = lognormal_fit
    return {"hz": f.FIT_HZ, "smooth": f.SMOOTH_S, "h": f.HEIGHT_MM, "snr": f.TARGET_SNR_DB, "extra": f.MAX_EXTRA,
            "prom": f.PEAK_PROMINENCE, "pad": [f.PAD_S, f.PAD_WEIGHT], "v": 4}


def training_genuine(corpus: Corpus) -> list[tuple[str, str, Trajectory]]:
    """(key, writer, trajectory) of every genuine signature of a training writer, in corpus order."""
    out = []
    for fmt, ds in corpus.datasets.items():
        root = corpus.roots[fmt]
        for w in sorted(ds.subset("train").writers):
            for s in ds.writers[w]:
                if s.label is Label.GENUINE:
                    out.append((sample_key(fmt, root, s), f"{fmt}:{w}", s.trajectory))
    return out


def _fit_one(item: tuple[str, str, Trajectory]) -> dict | None:
    key, writer, traj = item
    try:
        f = lognormal_fit.fit_signature(traj)
    except (TrajectoryError, ValueError) as e:
        log.warning("no fit for %s: %s", key, e)
        return None
    return {"key": key, "writer": writer, "snr_velocity_db": round(f.snr_velocity_db, 2),
            "snr_trajectory_db": round(f.snr_trajectory_db, 2), "impulses": f.impulses,
            "model": writer_to_json(f.model)}


FitItem = tuple[str, str, Trajectory]


def identity_pool(corpus: Corpus, n: int, seed: int) -> list[FitItem]:
    """The ``n`` training genuine signatures drawn for fitting, in draw order: a fixed random order
    of the pool (``seed``), so a larger ``n`` extends a smaller one."""
    # Long signatures (the Japanese set's run to 5000 points) cost minutes each to fit: the
    # identities are drawn from those of at most MAX_FIT_POINTS points.
    pool = [item for item in training_genuine(corpus) if len(item[2]) <= MAX_FIT_POINTS]
    if n <= 0 or not pool:
        return []
    order = np.random.default_rng(np.random.SeedSequence([seed, 13])).permutation(len(pool))
    return [pool[int(i)] for i in order[: min(n, len(pool))]]


def fit_cache_name(corpus: Corpus) -> str:
    """The fits' cache file name: keyed by the data hashes and the fitting constants."""
    tag = hashlib.sha256(json.dumps([corpus.hashes, _fit_constants()], sort_keys=True).encode()).hexdigest()[:16]
    return f"lognormal-fits-{tag}.jsonl"


def read_fit_cache(cache: Path | None) -> dict[str, dict | None]:
    """key -> fit record (None for a signature that could not be fitted)."""
    done: dict[str, dict | None] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = None if rec.get("failed") else rec
    return done


@contextmanager
def _one_thread_each() -> Iterator[None]:
    """The BLAS and numba thread counts set to 1 for the processes started inside."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fit_into(todo: list[FitItem], cache: Path | None, workers: int) -> dict[str, dict | None]:
    """Fit ``todo`` in ``workers`` processes, appending each fit to the JSON-lines ``cache`` as it
    completes (an interrupted run loses nothing)."""
    done: dict[str, dict | None] = {}
    if not todo:
        return done
    bar = progress(len(todo), "sigma-lognormal fits")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    # One BLAS thread per process, in fresh (spawned) processes that read it at import: forked
    # workers inherit the parent's thread pools, and 16 workers of 16 threads each fitted 8
    # signatures in 7 minutes on a 16-core machine where one thread each fitted 2180 in 2. The
    # workers start at the first submit, so the variables stay set while the pool lives.
    with _one_thread_each(), ProcessPoolExecutor(max_workers=max(1, workers),
                                                 mp_context=multiprocessing.get_context("spawn")) as ex:
        for item, rec in zip(todo, ex.map(_fit_one, todo, chunksize=2)):
            done[item[0]] = rec
            if cache is not None:
                with cache.open("a") as fh:
                    fh.write(json.dumps(rec if rec is not None else {"key": item[0], "failed": True}) + "\n")
            bar.update(1)
    bar.close()
    return done


def fitted_identities(corpus: Corpus, n: int, seed: int, cache_dir: Path | None, workers: int = 2) -> list[dict]:
    """Fit ``n`` training genuine signatures drawn at random (one writer's signatures spread over
    several identities is fine: each sample is its own identity, as in SynSig2Vec). Returns one
    record per fit: key, writer, SNRs, impulses, and the model as JSON. Fits already in the cache
    under ``cache_dir`` are read, not redone."""
    pick = identity_pool(corpus, n, seed)
    cache = cache_dir / fit_cache_name(corpus) if cache_dir else None
    done = read_fit_cache(cache)
    done.update(fit_into([item for item in pick if item[0] not in done], cache, workers))
    return [r for r in (done[item[0]] for item in pick) if r is not None]


def export_fits(corpus: Corpus, n: int, seed: int, cache_dir: Path, path: Path) -> int:
    """Write the draw's signatures not yet in the cache to ``path`` (a pickle of the cache file
    name and the items), for :func:`fit_export` on a machine with more cores and without the data
    sets. Returns how many were written."""
    done = read_fit_cache(cache_dir / fit_cache_name(corpus))
    todo = [item for item in identity_pool(corpus, n, seed) if item[0] not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump({"cache_name": fit_cache_name(corpus), "items": todo}, fh)
    return len(todo)


def load_export(path: Path) -> dict:
    """An :func:`export_fits` file; ``ValueError`` naming the file for anything else."""
    try:
        with path.open("rb") as fh:
            job = pickle.load(fh)  # noqa: S301
        if not isinstance(job, dict) or not isinstance(job.get("cache_name"), str) \
                or not isinstance(job.get("items"), list):
            raise TypeError("not a dict with 'cache_name' and 'items'")
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as e:
        raise ValueError(f"{path} is not an export of `sigkiosk train fit-identities --export` "
                         f"({type(e).__name__}: {e})") from e
    return job


def fit_export(path: Path, out_dir: Path, workers: int) -> Path:
    """Fit an :func:`export_fits` file into ``out_dir/<cache name>``; append that file's lines to
    the cache of the same name under the work folder's ``synth/`` to use them. The file is our own
    (training only, never an input a stranger can reach): pickle is fine."""
    job = load_export(path)
    out = out_dir / job["cache_name"]
    done = read_fit_cache(out)
    fit_into([item for item in job["items"] if item[0] not in done], out, workers)
    return out


def snr_summary(fits: list[dict], min_snr_db: float) -> dict:
    """What the run record says about the fits: count, SNR quantiles, how many were not used."""
    if not fits:
        return {"fitted": 0}
    v = np.array([f["snr_velocity_db"] for f in fits])
    t = np.array([f["snr_trajectory_db"] for f in fits])

    def q(a: np.ndarray) -> dict:
        a = a[np.isfinite(a)]
        return {k: round(float(np.percentile(a, p)), 2) for k, p in (("p10", 10), ("median", 50), ("p90", 90))}

    return {"fitted": len(fits), "snr_velocity_db": q(v), "snr_trajectory_db": q(t),
            "below_min_snr": int(np.sum(~(v >= min_snr_db))), "min_snr_db": min_snr_db,
            "impulses_median": float(np.median([f["impulses"] for f in fits]))}


def add_synthetic(corpus: Corpus, cfg: SynthConfig, lc: LearnedConfig, cache_dir: Path | None,
                  keep_trajectories: bool = False) -> tuple[dict, list[tuple[int, Trajectory]]]:
    """Fit, draw and featurise the synthetic identities into ``corpus`` (split ``synth``, writer
    ``synth:<key>``). Returns the record of what was added (SNR summary, counts, seed) and, with
    ``keep_trajectories``, (corpus index, trajectory) of each added signature (for augmentation)."""
    items: list[tuple[int, Trajectory]] = []
    if cfg.identities <= 0 or (cfg.duplicates <= 0 and cfg.forgery_like <= 0):
        return {}, items
    fits = fitted_identities(corpus, cfg.identities, cfg.seed, cache_dir)
    used = [f for f in fits if f["snr_velocity_db"] >= cfg.min_snr_db or not math.isfinite(f["snr_velocity_db"])]
    added = 0
    bar = progress(len(used), "synthetic identities")
    for k, f in enumerate(used):
        model = writer_from_json(f["model"])
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7, k]))
        gen, forg = lognormal_fit.synthetic_identity(model, rng, cfg.duplicates, cfg.forgery_like, cfg.skills)
        writer = f"{SYNTH_PREFIX}:{f['key']}"
        for j, (traj, genuine) in enumerate([(g, True) for g in gen] + [(x, False) for x in forg]):
            try:
                pts = resampled_points(traj, lc)
            except TrajectoryError:
                continue
            if keep_trajectories:
                items.append((len(corpus.signatures), traj))
            corpus.signatures.append(Signature(key=f"{writer}#{j}", writer=writer, genuine=genuine, split=SYNTH_SPLIT,
                                               session=None, points=pts))
            added += 1
        bar.update(1)
    bar.close()
    return {"config": cfg.to_json(), "fits": snr_summary(fits, cfg.min_snr_db), "identities": len(used),
            "signatures": added, "fitted_keys_sha256": hashlib.sha256(
                "\n".join(f["key"] for f in fits).encode()).hexdigest()}, items


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.train.synthetic EXPORT OUT_DIR``: fit an export on another machine (the
    repository and numpy, scipy, numba and tqdm are all it needs; no data sets, no TensorFlow)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.train.synthetic", description=main.__doc__)
    ap.add_argument("export", type=Path, help="a file written by `sigkiosk train fit-identities --export`")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    try:
        out = fit_export(args.export, args.out_dir, args.workers)
    except ValueError as e:
        print(f"python -m tools.train.synthetic: {e}", file=sys.stderr)
        return 2
    print(f"fits: {out} ({len(read_fit_cache(out))} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
