"""The paper path on scanners it was not tuned on, and through the kiosk's own scan path.

The paper verifier was chosen on two sets of signature crops (the Dutch scans, the cross-media
set). A bank's scanner differs from theirs in ways that can be written down as pure picture
transforms (:data:`VARIANTS`): resolution (half, double), JPEG at quality 40, grey paper with sensor
noise, a light pen, a bi-level scan (Otsu), a page turned 3 degrees, light falling off across the
glass. Each is applied to every picture of the Dutch scans' writers of ``--split`` (train +
validate by default: nothing here is chosen on test writers), and the skilled global EER (K = 5,
10 draws, the evaluator's ``random-refs`` protocol) of the histograms alone, the CNN alone and the
kiosk's fusion (``cnn+hand+hog``, the shipped ``offline_fusion.json``) is printed beside the
pictures as they are.

``--kiosk-path``: each picture first goes through :func:`models.signature_finder.find_signature`,
as a scan or photo at the kiosk does (the evaluator reads the file as it is). ``--finder``
instead audits the finder on every picture of both sets: how many are refused and why, how many
it takes for a sheet or a signature box (they are all tight crops of one signature: neither is
right), and how alike the kiosk's prepared picture and the file's are (1 = the same).

    python -m tools.scan_variants                        # the table, under a minute a variant here
    python -m tools.scan_variants --kiosk-path           # the same through the kiosk's finder
    python -m tools.scan_variants --finder               # the finder audit, about 3 min

Training writers saw the CNN and the histograms' mean, so the absolute figures flatter the
verifier; what a row says is the change from "as scanned".
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from models.image import SignatureImage
from models.image_preprocess import NoInkError, prepare, prepared_similarity
from models.paper import FUSION_ENTRY
from models.signature_finder import PictureError, find_signature
from tools.datasets import Dataset, ImageSample, load_images
from tools.datasets.types import MalformedFileError, writer_split
from tools.evaluate_offline import evaluate_offline, load_fusion, make_providers
from tools.hog_variants import DATA, SETS

log = logging.getLogger(__name__)

#: A scanner variant: grey pixels in, grey pixels out (uint8, dark ink on light paper); ``rng`` for
#: the ones with noise. Pure apart from ``rng``.
Variant = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def rescaled(factor: float) -> Variant:
    """Scanned at ``factor`` times the resolution (area averaging down, cubic up)."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = pixels.shape
        size = (max(16, round(w * factor)), max(16, round(h * factor)))
        return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    return apply


def jpeg(quality: int) -> Variant:
    """Saved as JPEG at ``quality`` and read back."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else None
        if out is None:
            raise ValueError("OpenCV could not write and read the picture back as JPEG")
        return np.asarray(out, dtype=np.uint8)
    return apply


def grey_paper(level: float, noise: float) -> Variant:
    """White paper at ``level`` (the ink scaled with it) and Gaussian sensor noise of ``noise`` levels."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = pixels.astype(np.float32) * np.float32(level / 255.0) + rng.normal(0.0, noise, pixels.shape)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return apply


def light_pen(darkest: float) -> Variant:
    """A lighter pen: black ink brought up to ``darkest``, white paper kept."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = darkest + pixels.astype(np.float32) * np.float32((255.0 - darkest) / 255.0)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return apply


def bilevel(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bi-level scan: black or white by Otsu's cut."""
    _, out = cv2.threshold(pixels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return out


def turned(degrees: float) -> Variant:
    """The page turned ``degrees`` on the glass (counter-clockwise), the corners filled with paper."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = pixels.shape
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
        return cv2.warpAffine(pixels, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=int(np.median(pixels)))
    return apply


def uneven_light(left: float, top: float) -> Variant:
    """Light falling off across the glass: ``left`` of full brightness at the left edge, ``top``
    at the top edge, full at the bottom right."""
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = pixels.shape
        gain = np.linspace(left, 1.0, w, dtype=np.float32)[None, :] * np.linspace(top, 1.0, h, dtype=np.float32)[:, None]
        return np.clip(np.rint(pixels.astype(np.float32) * gain), 0, 255).astype(np.uint8)
    return apply


def _as_scanned(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return pixels


VARIANTS: dict[str, Variant] = {
    "as scanned": _as_scanned,
    "half the resolution": rescaled(0.5),
    "twice the resolution": rescaled(2.0),
    "JPEG quality 40": jpeg(40),
    "grey paper (200) and noise (6 levels)": grey_paper(200.0, 6.0),
    "light pen (black at 140)": light_pen(140.0),
    "bi-level (Otsu)": bilevel,
    "turned 3 degrees": turned(3.0),
    "light falling off to 55 % across": uneven_light(0.55, 0.85),
}


def varied(ds: Dataset[ImageSample], variant: Variant, kiosk_path: bool, seed: int = 0) -> Dataset[ImageSample]:
    """``ds`` with every picture as ``variant`` makes it (then, with ``kiosk_path``, as the
    kiosk's finder crops it). A picture the finder refuses is left out and listed in ``skipped``."""
    rng = np.random.default_rng(seed)
    writers: dict[str, list[ImageSample]] = {}
    skipped = list(ds.skipped)
    for w, samples in ds.writers.items():
        for s in samples:
            picture = SignatureImage(variant(np.asarray(s.image.pixels), rng), dpi=s.image.dpi, source=s.image.source)
            if kiosk_path:
                try:
                    picture = find_signature(picture.pixels)
                except PictureError as exc:
                    skipped.append(MalformedFileError(s.path, None, f"the finder refused it: {exc}"))
                    continue
            writers.setdefault(w, []).append(replace(s, image=picture))
    return Dataset(ds.name, writers, skipped)


def measure(ds: Dataset[ImageSample]) -> tuple[dict[str, float], int]:
    """Skilled global EER % (K = 5, 10 draws) of the histograms, the CNN and the kiosk's fusion of
    them (one evaluation: each part's own figures are its ``components``), and how many pictures
    were left out (refused by the finder, or no ink found)."""
    ev = evaluate_offline(ds, providers=make_providers(FUSION_ENTRY), fusion=load_fusion(FUSION_ENTRY), references=5,
                          trials=10, skip_malformed=True)
    report = ev.result.report
    out = {part: float(report["components"][part]["eer_global"]) for part in ("hog", "cnn")}
    out[FUSION_ENTRY] = float(report["skilled"]["eer_global"])
    return out, len(report["skipped_files"])


def of_split(ds: Dataset[ImageSample], split: str, max_writers: int | None = None) -> Dataset[ImageSample]:
    """The writers of ``split`` (``train+validate``: both), at most ``max_writers`` of them."""
    parts = split.split("+")
    writers = sorted(w for w in ds.writers if writer_split(w) in parts)[:max_writers]
    return Dataset(f"{ds.name}[{split}]", {w: ds.writers[w] for w in writers})


@dataclass(frozen=True)
class FinderAudit:
    """What :func:`audit_finder` saw: pictures, refusals by reason, what the finder took each
    picture for (its ``source``), and percentiles of the prepared pictures' likeness."""

    pictures: int
    refused: dict[str, int]
    found: dict[str, int]
    similarity: dict[str, float]


def audit_finder(data: Path, max_pictures: int | None = None) -> FinderAudit:
    """The finder on every picture of both shared image sets (at most ``max_pictures`` a set):
    refusals by reason, what it found, and how alike its prepared picture is to the file's."""
    refused: Counter[str] = Counter()
    found: Counter[str] = Counter()
    alike: list[float] = []
    pictures = 0
    for _, folder, fmt in SETS:
        ds = load_images(data / folder, fmt)
        samples = [s for _, ss in sorted(ds.writers.items()) for s in ss][:max_pictures]
        for s in samples:
            pictures += 1
            try:
                picture = find_signature(np.asarray(s.image.pixels))
            except PictureError as exc:
                # The reason without its particulars ("the paper is too small in the picture").
                refused[re.sub(r"\s*\(.*?\)", "", str(exc).split(":")[0])] += 1
                continue
            found[picture.source] += 1
            try:
                alike.append(prepared_similarity(prepare(picture), prepare(s.image)))
            except NoInkError:
                # The kiosk refuses it here (its capture flows catch NoInkError too).
                refused["no ink in the finder's crop"] += 1
    a = np.array(alike) if alike else np.zeros(1)
    return FinderAudit(pictures, dict(refused), dict(found),
                       {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
                        "p1": float(np.percentile(a, 1)), "min": float(a.min())})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared offline folder")
    ap.add_argument("--split", default="train+validate", choices=("train", "validate", "train+validate"))
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="only these (repeat); default all")
    ap.add_argument("--kiosk-path", action="store_true", help="through the kiosk's finder first, as a scan at the kiosk")
    ap.add_argument("--finder", action="store_true", help="audit the finder on every picture of both sets instead")
    ap.add_argument("--max-writers", type=int, default=None, help="at most this many writers (a quick look)")
    ap.add_argument("--max-pictures", type=int, default=None, help="--finder: at most this many pictures a set")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    if args.finder:
        r = audit_finder(args.data, args.max_pictures)
        print(f"{r.pictures} pictures; refused {sum(r.refused.values())} {r.refused}; found {r.found}")
        print("prepared through the finder against the file as it is (1 = the same): median {median:.3f}, "
              "10th percentile {p10:.3f}, 1st {p1:.3f}, least {min:.3f}".format(**r.similarity))
        print(f"({time.perf_counter() - t0:.0f} s)")
        return 0
    name, folder, fmt = SETS[0]
    ds = of_split(load_images(args.data / folder, fmt), args.split, args.max_writers)
    path = "through the kiosk's finder" if args.kiosk_path else "the files as they are"
    print(f"{ds.name}, {len(ds.writers)} writers, {path}: skilled global EER %, K = 5, 10 draws")
    print(f"{'variant':<40} {'hog':>6} {'cnn':>6} {'kiosk':>6}  left out")
    for vname in args.variant or list(VARIANTS):
        v = varied(ds, VARIANTS[vname], args.kiosk_path)
        row, left_out = measure(v)
        print(f"{vname:<40} {row['hog']:6.2f} {row['cnn']:6.2f} {row[FUSION_ENTRY]:6.2f}  {left_out}", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
