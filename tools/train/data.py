"""Training data for the learned verifier: the shared pen sets, featurised once and cached.

Every signature goes through :func:`models.learned.resampled_points` (the device's own code); the
cache stores those points (not the masks, which are cheap to rebuild and depend on k), keyed by the
dataset's file hashes and the featurisation config, under ``.cache/learned/`` (git-ignored).
Splits are the shared writer-disjoint ones (last digit of the writer id).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.learned import LearnedConfig, ModelInput, Points, model_input, resampled_points
from models.trajectory import TrajectoryError
from tools.datasets import load_online
from tools.datasets.types import Dataset, Label, OnlineSample, writer_split

log = logging.getLogger(__name__)

#: The shared sets used for training (train writers) and early stopping (validation writers).
DEFAULT_SETS: tuple[tuple[str, str], ...] = (
    ("online/susig/VisualSubCorpus", "susig-visual"),
    ("online/susig/BlindSubCorpus", "susig-blind"),
    ("online/sigcomp2009-nfi", "sigcomp2009-nfi"),
    ("online/sigwicomp2013-jp", "sigwicomp2013-jp"),
)
#: Sets with enough validation writers with forgeries to measure an EER on.
VALIDATION_SETS: tuple[str, ...] = ("susig-visual", "susig-blind", "sigcomp2009-nfi")


def default_data_root() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def files_hash(root: Path) -> str:
    """sha256 over every file's relative path and contents: the run record names the data."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


@dataclass
class Signature:
    """One cached signature (no raw trajectory: the points the model needs, and labels)."""

    key: str  # "<format>:<relative path>" — identifies the sample in logs without biometrics
    writer: str  # "<format>:<writer id>" (writer ids repeat across sets)
    genuine: bool
    split: str
    session: int | None
    points: Points


@dataclass
class Corpus:
    signatures: list[Signature]
    hashes: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, Dataset[OnlineSample]] = field(default_factory=dict)
    roots: dict[str, Path] = field(default_factory=dict)
    #: signature index -> indices of its device-augmented copies (``tools/train/augment.py``)
    variants: dict[int, list[int]] = field(default_factory=dict)

    def by_key(self) -> dict[str, Signature]:
        return {s.key: s for s in self.signatures}

    def writers(self, split: str) -> dict[str, tuple[list[int], list[int]]]:
        """writer → (indices of genuine, indices of skilled forgeries) in ``signatures``."""
        out: dict[str, tuple[list[int], list[int]]] = {}
        for i, s in enumerate(self.signatures):
            if s.split != split:
                continue
            g, f = out.setdefault(s.writer, ([], []))
            (g if s.genuine else f).append(i)
        return out


def sample_key(fmt: str, root: Path, s: OnlineSample) -> str:
    try:
        rel = s.path.relative_to(root)
    except ValueError:
        rel = Path(s.path.name)
    return f"{fmt}:{rel}"


def load_corpus(
    data_root: Path,
    config: LearnedConfig,
    sets: tuple[tuple[str, str], ...] = DEFAULT_SETS,
    cache_dir: Path | None = None,
    max_writers: int | None = None,
) -> Corpus:
    """Read and featurise the sets (or load the cache). ``max_writers`` per set and split keeps
    the quick mode quick."""
    feat_cfg = json.dumps(
        {"pre": config.to_json()["preprocess"], "f": list(config.features), "L": config.max_len}, sort_keys=True
    )
    corpus = Corpus(signatures=[])
    for rel, fmt in sets:
        root = data_root / rel
        ds = load_online(root, fmt, skip_malformed=True)
        corpus.datasets[fmt] = ds
        corpus.roots[fmt] = root
        digest = files_hash(root)
        corpus.hashes[fmt] = digest
        writers = sorted(ds.writers)
        if max_writers is not None:
            per: dict[str, list[str]] = {}
            for w in writers:
                per.setdefault(writer_split(w), []).append(w)
            writers = sorted(w for ws in per.values() for w in ws[:max_writers])
        tag = hashlib.sha256(f"{digest}{feat_cfg}{writers}".encode()).hexdigest()[:16]
        cache = (cache_dir / f"{fmt}-{tag}.npz") if cache_dir else None
        if cache is not None and cache.exists():
            corpus.signatures.extend(_read_cache(cache))
            continue
        sigs: list[Signature] = []
        for w in writers:
            for s in ds.writers[w]:
                try:
                    pts = resampled_points(s.trajectory, config)
                except TrajectoryError as e:
                    log.warning("left out %s: %s", sample_key(fmt, root, s), e)
                    continue
                sigs.append(
                    Signature(
                        key=sample_key(fmt, root, s),
                        writer=f"{fmt}:{w}",
                        genuine=s.label is Label.GENUINE,
                        split=writer_split(w),
                        session=s.session,
                        points=pts,
                    )
                )
        if cache is not None:
            _write_cache(cache, sigs)
        corpus.signatures.extend(sigs)
        log.info("%s: %d signatures", fmt, len(sigs))
    return corpus


def _write_cache(path: Path, sigs: list[Signature]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lens = np.array([len(s.points.x) for s in sigs])
    meta = [
        {"key": s.key, "writer": s.writer, "genuine": s.genuine, "split": s.split, "session": s.session}
        for s in sigs
    ]
    np.savez_compressed(
        path,
        meta=np.array(json.dumps(meta)),
        lens=lens,
        feats=np.concatenate([s.points.feats for s in sigs]),
        x=np.concatenate([s.points.x for s in sigs]),
        y=np.concatenate([s.points.y for s in sigs]),
        stroke=np.concatenate([s.points.stroke for s in sigs]),
    )


def _read_cache(path: Path) -> list[Signature]:
    with np.load(path) as npz:  # read each array once (an NpzFile decompresses on every access)
        z = {k: npz[k] for k in npz.files}
    meta = json.loads(str(z["meta"]))
    ends = np.cumsum(z["lens"])
    starts = ends - z["lens"]
    out = []
    for m, a, b in zip(meta, starts, ends):
        pts = Points(feats=z["feats"][a:b], x=z["x"][a:b], y=z["y"][a:b], stroke=z["stroke"][a:b])
        out.append(Signature(points=pts, **m))
    return out


def batch_inputs(inputs: list[ModelInput]) -> dict[str, np.ndarray]:
    return {k: np.stack([getattr(i, k) for i in inputs]) for k in ("feats", "step_mask", "knn_mask", "valid")}


class InputCache:
    """Model inputs (with masks) per signature index, built on first use for one config."""

    def __init__(self, corpus: Corpus, config: LearnedConfig) -> None:
        self.corpus, self.config = corpus, config
        self._cache: dict[int, ModelInput] = {}

    def __call__(self, i: int) -> ModelInput:
        m = self._cache.get(i)
        if m is None:
            m = self._cache[i] = model_input(self.corpus.signatures[i].points, self.config)
        return m
