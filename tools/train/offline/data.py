"""The images the CNN-LSTM is trained and selected on, prepared once and cached.

Every picture goes through :func:`models.image_preprocess.prepare` (the device's own code)
once; the 128×128 ink images are cached as ``.npz`` (uint8, ink = 255) under ``--cache``
(default ``~/.cache/sigkiosk/offline``, never the repository), keyed by the data's file hashes
and the preprocessing source. Sources: the Dutch scans' *training* writers, the cross-media set's
training writers (one class per (writer, name) identity: its paper scan and its iPad and phone
ink), ink rendered from the online sets' training writers (far more writers; random pen width per
signature) and, on request (``--synthetic N``), sigma-lognormal writers of :mod:`tools.synth`
rendered the same way. Validation: the Dutch *validate* writers (scans, as on the device) and, for
model selection, the cross-media *validate* writers and ink rendered from the online sets'
*validate* writers (cached like the training ink). Test writers are never read here.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import image_preprocess
from models.image_preprocess import SIZE, NoInkError, prepare
from models.render import render_ink
from tools.datasets import cross_media as cross_media_reader
from tools.datasets import identities, load_images, load_online
from tools.datasets.types import Label, writer_split
from tools.synth import make_population
from tools.train.data import DEFAULT_SETS, files_hash
from tools.train.loop import progress
from tools.train.offline import SELECT_CHOICES

log = logging.getLogger(__name__)

DUTCH = ("offline/sigcomp-dutch-kaggle", "sigcomp-dutch")
CROSS_MEDIA = ("offline/cross-media-chinese", "cross-media")
PAPER, INK = "paper", "ink"
#: Writer ids of the synthetic writers start with this (``"synth:<n>"``).
SYNTH = "synth"
#: The pool of ink rendered from the online sets (any of :data:`tools.train.data.DEFAULT_SETS`).
RENDERED = "rendered"
DEFAULT_CACHE = Path.home() / ".cache" / "sigkiosk" / "offline"


@dataclass
class ImageCorpus:
    """Prepared images and their labels. ``images``: (N, S, S) uint8, ink = 255."""

    images: np.ndarray
    keys: list[str]  # "<format>:<relative path>": names a sample in logs without biometrics
    writers: list[str]  # "<format>:<writer id>" (ids repeat across sets)
    genuine: np.ndarray  # (N,) bool
    split: list[str]
    #: PAPER (a scan) or INK (electronic ink: rendered pen trajectories, a tablet's or a phone's strokes).
    medium: list[str]
    hashes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def float_images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        return self.images[np.asarray(idx)].astype(np.float32) / 255.0

    def by_writer(self, split: str, source: str | None = None) -> dict[str, tuple[list[int], list[int]]]:
        """writer → (genuine indices, skilled indices) in ``split`` (optionally one source format)."""
        out: dict[str, tuple[list[int], list[int]]] = {}
        for i, (w, s) in enumerate(zip(self.writers, self.split)):
            if s != split or (source is not None and not w.startswith(source + ":")):
                continue
            g, f = out.setdefault(w, ([], []))
            (g if self.genuine[i] else f).append(i)
        return out

    @staticmethod
    def concat(parts: list["ImageCorpus"]) -> "ImageCorpus":
        parts = [p for p in parts if len(p)]
        return ImageCorpus(
            images=np.concatenate([p.images for p in parts]) if parts else np.zeros((0, SIZE, SIZE), np.uint8),
            keys=[k for p in parts for k in p.keys],
            writers=[w for p in parts for w in p.writers],
            genuine=np.concatenate([p.genuine for p in parts]) if parts else np.zeros(0, bool),
            split=[s for p in parts for s in p.split],
            medium=[m for p in parts for m in p.medium],
            hashes={k: v for p in parts for k, v in p.hashes.items()},
        )


def _prepare_source_hash() -> str:
    """The preprocessing code is part of the cache key: changing ``prepare`` invalidates the cache."""
    return hashlib.sha256(Path(image_preprocess.__file__).read_bytes()).hexdigest()[:12]


def _pick_writers(writers: list[str], splits: tuple[str, ...], max_writers: int | None) -> list[str]:
    per: dict[str, list[str]] = {}
    for w in sorted(writers):
        if writer_split(w) in splits:
            per.setdefault(writer_split(w), []).append(w)
    return sorted(w for ws in per.values() for w in (ws if max_writers is None else ws[:max_writers]))


def _save(path: Path, c: ImageCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=c.images, keys=np.array(c.keys), writers=np.array(c.writers),
                        genuine=c.genuine, split=np.array(c.split), medium=np.array(c.medium))
    tmp.replace(path)


def _load(path: Path, hashes: dict[str, str]) -> ImageCorpus:
    z = np.load(path)
    writers = [str(w) for w in z["writers"]]
    # Caches written before the medium was stored: scans are paper, everything else rendered ink.
    medium = ([str(m) for m in z["medium"]] if "medium" in z.files
              else [PAPER if w.startswith(DUTCH[1] + ":") else INK for w in writers])
    return ImageCorpus(z["images"], [str(k) for k in z["keys"]], writers, z["genuine"].astype(bool),
                       [str(s) for s in z["split"]], medium, hashes)


class _Prepared:
    """Prepared images accumulated one picture at a time (a picture without usable ink is logged by
    its key and skipped), then one :class:`ImageCorpus`."""

    def __init__(self, skip: tuple[type[Exception], ...]) -> None:
        self.skip = skip
        self.images: list[np.ndarray] = []
        self.keys: list[str] = []
        self.writers: list[str] = []
        self.genuine: list[bool] = []
        self.split: list[str] = []
        self.medium: list[str] = []

    def add(self, key: str, picture: Callable[[], Any], writer: str, genuine: bool, split: str, medium: str) -> None:
        try:
            x = prepare(picture())
        except self.skip as e:
            log.warning("%s: skipped (%s)", key, e)
            return
        self.images.append(np.rint(x * 255).astype(np.uint8))
        self.keys.append(key)
        self.writers.append(writer)
        self.genuine.append(genuine)
        self.split.append(split)
        self.medium.append(medium)

    def corpus(self, hashes: dict[str, str]) -> ImageCorpus:
        return ImageCorpus(np.stack(self.images), self.keys, self.writers, np.array(self.genuine), self.split,
                           self.medium, hashes)


def load_scans(data_root: Path, cache: Path, splits: tuple[str, ...], max_writers: int | None) -> ImageCorpus:
    """The Dutch scans of ``splits``' writers, prepared (cached)."""
    rel, fmt = DUTCH
    root = data_root / rel
    digest = files_hash(root)
    ds = load_images(root, fmt)
    writers = _pick_writers(list(ds.writers), splits, max_writers)
    tag = hashlib.sha256(f"{digest}{_prepare_source_hash()}{SIZE}{writers}".encode()).hexdigest()[:16]
    path = cache / f"{fmt}-{tag}.npz"
    if path.exists():
        return _load(path, {fmt: digest})
    acc = _Prepared(skip=(NoInkError,))
    samples = [s for w in writers for s in ds.writers[w]]
    bar = progress(len(samples), f"prepare {fmt}")
    for s in samples:
        acc.add(f"{fmt}:{s.path.relative_to(root)}", functools.partial(getattr, s, "image"), f"{fmt}:{s.writer}",
                s.label is Label.GENUINE, writer_split(s.writer), PAPER)
        bar.update(1)
    bar.close()
    c = acc.corpus({fmt: digest})
    _save(path, c)
    return c


def load_rendered(data_root: Path, cache: Path, max_writers: int | None, seed: int,
                  split: str = "train") -> ImageCorpus:
    """Ink rendered from the online sets' ``split`` writers (genuine and skilled), prepared (cached)."""
    parts = []
    for rel, fmt in DEFAULT_SETS:
        root = data_root / rel
        digest = files_hash(root)
        ds = load_online(root, fmt, skip_malformed=True)
        writers = _pick_writers(list(ds.writers), (split,), max_writers)
        # The training files keep their old key (and name), so the existing cache stays valid.
        suffix = "r1" if split == "train" else f"r1{split}"
        tag = hashlib.sha256(f"{digest}{_prepare_source_hash()}{SIZE}{writers}{seed}{suffix}".encode()).hexdigest()[:16]
        path = cache / f"rendered-{fmt}-{tag}.npz" if split == "train" else cache / f"rendered-{split}-{fmt}-{tag}.npz"
        if path.exists():
            parts.append(_load(path, {fmt: digest}))
            continue
        acc = _Prepared(skip=(NoInkError, ValueError))
        samples = [s for w in writers for s in ds.writers[w]]
        bar = progress(len(samples), f"render {fmt}")
        for n, s in enumerate(samples):
            rng = np.random.default_rng([seed, n])
            acc.add(f"{fmt}:{s.path.relative_to(root)}", functools.partial(_ink, s.trajectory, rng),
                    f"{fmt}:{s.writer}", s.label is Label.GENUINE, split, INK)
            bar.update(1)
        bar.close()
        if not acc.images:
            continue
        c = acc.corpus({fmt: digest})
        _save(path, c)
        parts.append(c)
    return ImageCorpus.concat(parts)


def _ink(traj: Any, rng: np.random.Generator) -> Any:
    """Rendered training ink: a ballpoint of random width (0.3-0.8 mm)."""
    return render_ink(traj, pen_width_mm=float(rng.uniform(0.3, 0.8)), rng=rng)


def load_synthetic(cache: Path, n_writers: int, seed: int, n_genuine: int = 8, n_forgeries: int = 2) -> ImageCorpus:
    """Sigma-lognormal writers (:func:`tools.synth.make_population`) rendered as ink: extra *training*
    writers, each with genuine signatures and skilled forgeries (prepared, cached)."""
    if n_writers <= 0:
        return ImageCorpus.concat([])
    tag = hashlib.sha256(f"{_prepare_source_hash()}{SIZE}{n_writers}{n_genuine}{n_forgeries}{seed}s1"
                         .encode()).hexdigest()[:16]
    path = cache / f"synthetic-{tag}.npz"
    if path.exists():
        return _load(path, {})
    pop = make_population(n_writers=n_writers, n_genuine=n_genuine, n_forgeries=n_forgeries, seed=seed + 1000)
    acc = _Prepared(skip=(NoInkError, ValueError))
    bar = progress(n_writers, "render synthetic writers")
    for w, (g, f) in pop.items():
        for n, (tr, genuine) in enumerate([(t, True) for t in g] + [(t, False) for t in f]):
            rng = np.random.default_rng([seed, int(w), n])
            acc.add(f"{SYNTH}:{w}/{n}", functools.partial(_ink, tr, rng), f"{SYNTH}:{w}", genuine, "train", INK)
        bar.update(1)
    bar.close()
    c = acc.corpus({})
    _save(path, c)
    return c


def select_pools(select_on: str) -> tuple[str, ...]:
    """The pools of a ``--select-on`` choice ("dutch", "cross-media", "rendered")."""
    if select_on not in SELECT_CHOICES:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_CHOICES)}, not {select_on!r}")
    return tuple(select_on.split("+"))


def identity_label(writer: str, text: int) -> str:
    """The corpus writer label of one cross-media identity: a (writer, name) pair."""
    return f"{CROSS_MEDIA[1]}:{writer}/{text}"


def identity_text(label: str) -> int | None:
    """Which of the cross-media set's shared names an identity label wrote (None: not a cross-media label)."""
    if not label.startswith(CROSS_MEDIA[1] + ":"):
        return None
    return int(label.rsplit("/", 1)[1])


def load_cross_media(data_root: Path, cache: Path, splits: tuple[str, ...], max_writers: int | None) -> ImageCorpus:
    """The cross-media set's writers of ``splits``, prepared (cached), one corpus "writer" per
    (writer, name) identity (:func:`identity_label`): its paper and electronic-ink pictures are its
    genuine images. It has no forgeries of its own: the same name by the other writers is the
    impostor (the trainer puts same-name identities in one batch; selection questions them).
    With ``max_writers`` (the quick run) only writers who also wrote on a device are picked."""
    rel, fmt = CROSS_MEDIA
    root = data_root / rel
    digest = files_hash(root)
    ds = load_images(root, fmt)
    with_ink = [w for w, ss in ds.writers.items() if any(s.medium.is_ink for s in ss)]
    writers = _pick_writers(with_ink if max_writers is not None else list(ds.writers), splits, max_writers)
    # The reader decides what a picture is (it turns light-on-dark phone ink to dark on white), so
    # its source is part of the key as the preprocessing's is.
    reader = hashlib.sha256(Path(cross_media_reader.__file__).read_bytes()).hexdigest()[:12]
    tag = hashlib.sha256(f"{digest}{_prepare_source_hash()}{reader}{SIZE}{writers}".encode()).hexdigest()[:16]
    path = cache / f"{fmt}-{tag}.npz"
    if path.exists():
        return _load(path, {fmt: digest})
    acc = _Prepared(skip=(NoInkError,))
    picked = set(writers)
    samples = [((w, t), s) for (w, t), ss in identities(ds).items() if w in picked for s in ss]
    bar = progress(len(samples), f"prepare {fmt}")
    for (w, t), s in samples:
        acc.add(f"{fmt}:{s.path.relative_to(root)}", functools.partial(getattr, s, "image"),
                identity_label(w, t), True, writer_split(w), INK if s.medium.is_ink else PAPER)
        bar.update(1)
    bar.close()
    c = acc.corpus({fmt: digest})
    _save(path, c)
    return c


def load_corpus(data_root: Path, cache: Path, rendered: bool, max_writers: int | None, seed: int,
                select_on: str, synthetic: int = 0, cross_media: bool = False) -> ImageCorpus:
    """Training and validation images: Dutch scans, cross-media identities (``cross_media``: its
    training writers too; selecting on it: its validate writers), rendered online ink, synthetic
    writers (all cached)."""
    pools = select_pools(select_on)
    parts = [load_scans(data_root, cache, ("train", "validate"), max_writers)]
    if cross_media or CROSS_MEDIA[1] in pools:
        splits = ("train", "validate") if cross_media else ("validate",)
        parts.append(load_cross_media(data_root, cache, splits, max_writers))
    if rendered:
        parts.append(load_rendered(data_root, cache, max_writers, seed))
    if RENDERED in pools:
        parts.append(load_rendered(data_root, cache, max_writers, seed, split="validate"))
    if synthetic:
        parts.append(load_synthetic(cache, synthetic, seed))
    return ImageCorpus.concat(parts)
