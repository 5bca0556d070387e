"""Histograms of oriented gradients of the prepared ink: where the strokes run, and which way.

A learning-free shape descriptor of a signature picture, beside the CNN-LSTM's embedding and the
hand-made features (``models.paper`` fuses the three). The prepared 128×128 ink image
(``models.image_preprocess.prepare``, the one the CNN reads and the template store keeps) is laid
on a fixed frame three ways, so that the cells compare like parts of two signatures: its ink box
stretched to the frame, and its ink moments (centroid ± 2.2 standard deviations), per axis and
with one scale for both. In each cell the ink's edge directions (signed, 18 bins) are counted by
gradient strength, each pixel's vote shared between its two nearest direction bins and its four
nearest cells by distance (trilinear interpolation), and each 2×2 block of cells is normalised
(L2-Hys, Dalal & Triggs), at two scales: 56×112 (8×16 cells of 7 pixels) and 28×56 (4×8 cells).
Two signatures are compared by the Euclidean distance of their unit descriptors.

Why it is here: fused in beside the CNN and the hand features it took the Dutch test writers'
skilled EER from 15.53 to 11.55 % (see the README, "The paper path"); centred (below), it decides
paper and pad references with the CNN (10.07 % there; the histograms alone 9.90). The box framing came first
(12.84 %); the moment framings and signed directions were chosen among 26 settings
(:class:`HogConfig`) on the train and validate writers of both image sets, the histograms alone
(``python -m tools.hog_variants``): skilled EER 19.87 → 16.17 % on the Dutch scans (K = 5),
22.18 → 18.53 % pad ink against paper and 17.15 → 14.44 % paper against paper on the cross-media
set. A stray tail or a far dot moves the box more than it moves the moments. It reads the
stroke *directions* of the framed picture, blurred, so it depends little on the pen's width,
where the hand features' stroke-width features measure the pen. About 1.9 ms a picture then
(timings now: the README's "Speed" under "The paper path").

A signature is rarely written, scanned or photographed at quite its references' angle, and
directions are what this descriptor reads: a question is also described turned 2 degrees either
way (:func:`hog_turned`), and :func:`hog_distance` takes its closest turn to each reference
(chosen the same way, among turns of ±2 to ±5 degrees: the three skilled EERs' sum 49.15 → 45.40 %,
each of the three lower). Three descriptors a question, about 5.4 ms then.

Shared votes (2026-11-29, ``HogConfig.interpolate``): a stroke a pixel to one side of a cell's
edge, or a degree to one side of a bin's, moved a whole vote; now it moves a share. Chosen the
same way among 7-, 6- and 8-pixel cells, blur and turns: on 7-pixel cells 45.40 → 44.92 %, the
only such setting lower on all three; the Dutch test writers, which chose nothing, 11.28 →
10.48 % (the histograms alone). A few ms more a question (:func:`_interpolated_cells`).

Centred (2026-11-29): every signature's histograms share a large common part (ink runs along
the writing line, strokes are mostly upright), and the Euclidean distance of two unit descriptors
is mostly made of it. What the kiosk compares (:func:`hog_compared`) is each descriptor less the
mean descriptor of the training writers' pictures (:data:`CENTRE_FILE`, fitted by ``python -m
tools.hog_centre --fit``), scaled to unit length again: the cosine of what is particular to the
signature. Measured on train + validate writers only (``python -m tools.hog_centre --measure``),
the histograms alone, skilled EER % Dutch K = 5 / pad ink -> paper K = 3 / paper -> paper K = 1:
centred on one half of the writers and measured on the other, 17.31 / 18.38 / 3.33 -> 15.85 /
16.41 / 2.42 and 12.35 / 17.55 / 13.33 -> 11.22 / 13.71 / 8.33; centred on one set and measured on
the other, Dutch 15.06 -> 14.02, cross-media 18.17 / 11.69 -> 15.54 / 7.82. A mean over thousands
of signatures, it is no one's signature.

Pure numpy and OpenCV; no learning beyond that mean. The population prior is fitted on the Dutch
training writers, and kept beside the mean (:class:`HogCentre`): it is of the centred distances.
"""

from __future__ import annotations

import functools
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models._assets import shipped_assets
from models.errors import VerificationError
from models.image_preprocess import NoInkError, from_levels, to_levels
from models.scoring import NormalisationPrior

#: How the ink can be laid on a frame: its box stretched to the frame; its ink moments (the
#: ink-weighted centroid at the centre, ± ``spread`` standard deviations per axis to the edges),
#: which a stray tail or a far dot moves less than it moves the box; and the same with one scale
#: for both axes (the larger), which keeps the signature's proportions.
FRAMING_KINDS: tuple[str, ...] = ("box", "moments", "moments-isotropic")
#: How each 2×2 block of cells is normalised: L2-Hys (Dalal & Triggs), or the square root of its
#: L1-normalised histogram (Hellinger; compared but not shipped); or ``none``: no blocks, the cells'
#: histograms as they are (each framing and scale's part is still scaled to unit length).
BLOCK_NORMS: tuple[str, ...] = ("l2-hys", "hellinger", "none")


@dataclass(frozen=True)
class HogConfig:
    """The settings of one descriptor. :data:`SHIPPED` is the kiosk's; the others are what
    ``tools.hog_variants`` compared it with, through this same code."""

    #: (kind, spread) per framing, in order; the spread (standard deviations) is read by moment
    #: framings only.
    framings: tuple[tuple[str, float], ...] = (("box", 0.0), ("moments", 2.2), ("moments-isotropic", 2.2))
    #: Orientation bins over 0-360 degrees (``signed``: a stroke's two edges, paper to ink and ink
    #: to paper, count apart, so the histograms say which side of a line the ink lies on) or
    #: over 0-180 degrees.
    bins: int = 18
    signed: bool = True
    #: (frame height, frame width, cell side) of each scale; blocks are 2×2 cells, one cell apart.
    scales: tuple[tuple[int, int, int], ...] = ((64, 128, 8), (32, 64, 8))
    #: The blur (pixels of the frame) before the gradients: a binary mask's edges are steps.
    blur: float = 0.8
    block_norm: str = "l2-hys"
    #: Turns (degrees, counter-clockwise) at which a picture is also described (:func:`hog_turned`),
    #: the first 0: a signature is rarely written, scanned or photographed at quite the
    #: references' angle, and :func:`hog_distance` compares the closest turn of one picture with
    #: the other as it is.
    turns: tuple[float, ...] = (0.0,)
    #: Slants (degrees; positive leans the strokes to the right) at which a picture is also
    #: described, after its turns: how far a signature leans changes from one signing to the next
    #: more than its angle on the page does.
    shears: tuple[float, ...] = ()
    #: The weight of local binary patterns beside the gradients (0: none). Each frame's 3×3
    #: neighbourhoods near ink are coded by which neighbours are darker than the centre (the 58
    #: uniform codes and one for the rest) and counted per ``texture_cell``-pixel cell: where
    #: strokes end, cross and bend, which the edge directions alone do not say. Not shipped: at
    #: weights 0.25-1 the three skilled EERs' sum was 45.65-46.05 against 45.40 without
    #: (``python -m tools.hog_variants``).
    texture: float = 0.0
    texture_cell: int = 16
    #: Each pixel's vote shared between its two nearest orientation bins and its four nearest
    #: cells (trilinear interpolation, Dalal & Triggs) instead of all of it to the one it falls in:
    #: a stroke that moves a pixel across a cell's edge, or turns a degree across a bin's, then
    #: changes the histograms a little instead of moving a whole vote.
    interpolate: bool = False

    def __post_init__(self) -> None:
        if not self.framings or any(k not in FRAMING_KINDS for k, _ in self.framings):
            raise ValueError(f"framings are ({', '.join(FRAMING_KINDS)}, spread) pairs, got {self.framings!r}")
        if any(k != "box" and not spread > 0 for k, spread in self.framings):
            raise ValueError("a moment framing needs a positive spread")
        if self.bins < 2 or self.blur <= 0 or self.block_norm not in BLOCK_NORMS:
            raise ValueError(f"need bins >= 2, blur > 0 and a block norm of {', '.join(BLOCK_NORMS)}")
        if not self.scales or any(c < 1 or h < 2 * c or w < 2 * c or h % c or w % c for h, w, c in self.scales):
            raise ValueError(f"each scale's frame holds at least 2×2 whole cells, got {self.scales!r}")
        if not self.turns or self.turns[0] != 0.0 or any(not -45.0 <= t <= 45.0 for t in self.turns):
            raise ValueError(f"turns start with 0 and stay within ±45 degrees, got {self.turns!r}")
        if any(not -30.0 <= t <= 30.0 or t == 0.0 for t in self.shears):
            raise ValueError(f"shears are non-zero and within ±30 degrees, got {self.shears!r}")
        if not (self.texture >= 0 and np.isfinite(self.texture)) or self.texture > 0 and (
                self.texture_cell < 2 or any(h % self.texture_cell or w % self.texture_cell for h, w, _ in self.scales)):
            raise ValueError(f"texture is a finite weight >= 0 and texture_cell divides every frame, "
                             f"got {self.texture!r}, {self.texture_cell!r}")

    @property
    def length(self) -> int:
        """The descriptor's number of values."""
        if self.block_norm == "none":
            gradients = len(self.framings) * sum((h // c) * (w // c) * self.bins for h, w, c in self.scales)
        else:
            gradients = len(self.framings) * sum((h // c - 1) * (w // c - 1) * 4 * self.bins for h, w, c in self.scales)
        cell = self.texture_cell
        patterns = len(self.framings) * sum((h // cell) * (w // cell) * _LBP_BINS for h, w, _ in self.scales)
        return gradients + (patterns if self.texture > 0 else 0)


#: The kiosk's descriptor: the question also turned 2 degrees either way (``tools.hog_variants``:
#: the lowest sum of the three skilled EERs among turns of ±2 to ±5 and ±2 ±4, ±3 ±6 degrees,
#: 49.15 → 45.40 % against none), and since 2026-11-29 votes shared between neighbouring bins and
#: cells on 7-pixel cells (56×112 and 28×56 frames: the same 8×16 and 4×8 cells): 45.40 → 44.92,
#: each of the three lower; the only such setting lower on all three (8-pixel cells 45.15, 6-pixel
#: 43.59, both worse on one of them).
SHIPPED = HogConfig(turns=(0.0, -2.0, 2.0), interpolate=True, scales=((56, 112, 7), (28, 56, 7)))

#: A prepared pixel at least this dark (of 1) is ink for the crop; lighter ones are the
#: anti-aliased rim of a stroke.
INK_LEVEL = 0.1
#: L2-Hys clip: no one edge dominates a block.
CLIP = 0.2

#: The mean descriptor (:data:`SHIPPED`, the picture as it is) that :func:`hog_compared` takes
#: from every descriptor and the prior of the distances so centred (:class:`HogCentre`), with
#: their record (``hog_centre.run.json``: command, data hashes, the file's SHA-256).
CENTRE_FILE = "hog_centre.npz"


def _ink_frame(prepared: np.ndarray, height: int, width: int, blur: float) -> np.ndarray:
    """The ink's box, stretched to ``height`` × ``width`` and blurred (a binary mask's edges are
    steps). The box holds the pixels at least :data:`INK_LEVEL` dark, or, where a picture's
    strokes are all thinner than a pixel of the prepared square (a very wide signature drawn with
    a fine pen: ``prepare`` accepts it, its darkest level under 0.1), at least half its darkest."""
    ys, xs = np.nonzero(prepared >= min(INK_LEVEL, 0.5 * float(prepared.max())))
    crop = prepared[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    frame = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(frame, (0, 0), blur)


@dataclass(frozen=True)
class _Moments:
    """The ink-weighted centroid and standard deviations (prepared pixels) of one picture."""

    cy: float
    cx: float
    sy: float
    sx: float


def _ink_moments(prepared: np.ndarray) -> _Moments:
    weight = prepared.astype(np.float64)
    mass = float(weight.sum())
    ys, xs = np.indices(prepared.shape, dtype=np.float64)
    cy, cx = float((weight * ys).sum()) / mass, float((weight * xs).sum()) / mass
    # At least a pixel: one dot of ink has no spread to scale by.
    sy = max(float(np.sqrt((weight * (ys - cy) ** 2).sum() / mass)), 1.0)
    sx = max(float(np.sqrt((weight * (xs - cx) ** 2).sum() / mass)), 1.0)
    return _Moments(cy, cx, sy, sx)


def _moment_frame(prepared: np.ndarray, moments: _Moments, height: int, width: int, spread: float,
                  isotropic: bool, blur: float) -> np.ndarray:
    """The ink laid on a ``height`` × ``width`` frame by its moments: the ink-weighted centroid at
    the centre, ± ``spread`` standard deviations of the ink to the edges (with ``isotropic``, one
    scale for both axes, the one that keeps the larger extent in), then blurred."""
    cy, cx, sy, sx = moments.cy, moments.cx, moments.sy, moments.sx
    if isotropic:
        sy = max(sx * height / width, sy)
        sx = sy * width / height
    # prepared pixels per frame pixel, along each axis
    px, py = 2.0 * spread * sx / width, 2.0 * spread * sy / height
    to_frame = np.array([[1.0 / px, 0.0, width / 2.0 - cx / px], [0.0, 1.0 / py, height / 2.0 - cy / py]], np.float32)
    frame = cv2.warpAffine(prepared.astype(np.float32), to_frame, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return cv2.GaussianBlur(frame, (0, 0), blur)


def _frame(prepared: np.ndarray, moments: _Moments, framing: tuple[str, float], height: int, width: int,
           blur: float) -> np.ndarray:
    kind, spread = framing
    if kind == "box":
        return _ink_frame(prepared, height, width, blur)
    return _moment_frame(prepared, moments, height, width, spread, kind == "moments-isotropic", blur)


def _hog(frame: np.ndarray, cell: int, config: HogConfig) -> np.ndarray:
    """Edge directions per ``cell``-pixel cell, counted by gradient strength, in 2×2 blocks of
    cells each normalised (``config.block_norm``): one flat vector."""
    gx = cv2.Sobel(frame, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(frame, cv2.CV_32F, 0, 1, ksize=1)
    magnitude = np.hypot(gx, gy)
    period = 2.0 * np.pi if config.signed else np.pi
    angle = np.mod(np.arctan2(gy, gx), period)
    nbins = config.bins
    h, w = frame.shape
    ch, cw = h // cell, w // cell
    if config.interpolate:
        cells = _interpolated_cells(magnitude, angle * (nbins / period), cell, ch, cw, nbins)
    else:
        bins = np.minimum((angle * (nbins / period)).astype(np.int64), nbins - 1)
        rows = np.arange(h)[:, None] // cell
        cols = np.arange(w)[None, :] // cell
        index = (rows * cw + cols) * nbins + bins
        cells = np.bincount(index.ravel(), weights=magnitude.ravel().astype(np.float64),
                            minlength=ch * cw * nbins).reshape(ch, cw, nbins)
    if config.block_norm == "none":
        return cells.ravel()
    # 2×2 blocks of cells, one cell apart: (ch-1, cw-1, 4*bins)
    blocks = np.concatenate([cells[:-1, :-1], cells[:-1, 1:], cells[1:, :-1], cells[1:, 1:]], axis=2)
    if config.block_norm == "hellinger":
        return np.sqrt(blocks / (blocks.sum(axis=2, keepdims=True) + 1e-6)).ravel()
    norm = np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-6
    blocks = np.minimum(blocks / norm, CLIP)
    blocks /= np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-6
    return blocks.ravel()


def _interpolated_cells(magnitude: np.ndarray, position: np.ndarray, cell: int, ch: int, cw: int,
                        nbins: int) -> np.ndarray:
    """Cell histograms with each vote shared by distance between the two nearest bin centres
    (around the circle) and the four nearest cell centres (the frame's edge cells take what
    would fall outside): (ch, cw, nbins)."""
    m = magnitude.ravel().astype(np.float64)
    b = position.ravel().astype(np.float64) - 0.5
    b0 = np.floor(b)
    fb = b - b0
    lower = b0.astype(np.int64) % nbins
    upper = (lower + 1) % nbins
    to_lower, to_upper = m * (1.0 - fb), m * fb
    size = ch * cw * nbins
    cells = np.zeros(size)
    # Eight small counts added, not one count of the eight concatenated: several times faster.
    # Every pixel counts (one without an edge adds 0): picking the edge pixels out cost more.
    for where, share in _cell_shares(magnitude.shape, cell, ch, cw, nbins):
        cells += np.bincount(where + lower, weights=share * to_lower, minlength=size)
        cells += np.bincount(where + upper, weights=share * to_upper, minlength=size)
    return cells.reshape(ch, cw, nbins)


@functools.lru_cache(maxsize=16)
def _cell_shares(shape: tuple[int, int], cell: int, ch: int, cw: int,
                 nbins: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """For each pixel of a frame, its four nearest cells (the index of each one's first bin in
    the flat histograms) and the share of its vote each takes, by distance to their centres;
    beyond the outermost centres, the edge cell takes it all. Four (index, share) pairs of flat
    per-pixel arrays; the same for every frame of a shape."""
    def axis(n: int, cells: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        c = (np.arange(n) + 0.5) / cell - 0.5
        c0 = np.floor(c)
        f = c - c0
        c0 = c0.astype(np.int64)
        return (np.clip(c0, 0, cells - 1), 1.0 - f), (np.clip(c0 + 1, 0, cells - 1), f)

    h, w = shape
    out = []
    for rows, wr in axis(h, ch):
        for cols, wc in axis(w, cw):
            where = (rows[:, None] * cw + cols[None, :]).ravel() * nbins
            share = (wr[:, None] * wc[None, :]).ravel()
            where.setflags(write=False)
            share.setflags(write=False)
            out.append((where, share))
    return tuple(out)


def _uniform_codes() -> np.ndarray:
    """The bin of each 8-bit code: the 58 codes with at most two 0/1 changes around the circle
    in their own bins (in code order), the rest in one shared bin."""
    out = np.full(256, 58, dtype=np.int64)
    n = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            out[code] = n
            n += 1
    return out


_UNIFORM = _uniform_codes()
_LBP_BINS = 59
#: A neighbour counts as darker than the centre by at least this much (of 1): blurred paper's
#: last bits of ink are not a pattern.
_LBP_STEP = 0.02
_NEIGHBOURS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _lbp(frame: np.ndarray, cell: int) -> np.ndarray:
    """Uniform local binary patterns of the frame's pixels that have ink around them, counted
    per ``cell``-pixel cell, each cell's counts as the square roots of their shares: one flat
    vector."""
    f = np.pad(frame.astype(np.float32), 1, mode="constant")
    h, w = frame.shape
    centre = f[1:-1, 1:-1]
    code = np.zeros((h, w), dtype=np.int64)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (f[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] >= centre + _LBP_STEP).astype(np.int64) << bit
    # All-paper or all-ink neighbourhoods (code 0: nothing darker) say nothing about strokes.
    counted = code != 0
    ch, cw = h // cell, w // cell
    rows = np.arange(h)[:, None] // cell
    cols = np.arange(w)[None, :] // cell
    index = ((rows * cw + cols) * _LBP_BINS + _UNIFORM[code])[counted]
    cells = np.bincount(index, minlength=ch * cw * _LBP_BINS).reshape(ch * cw, _LBP_BINS).astype(np.float64)
    return np.sqrt(cells / (cells.sum(axis=1, keepdims=True) + 1e-6)).ravel()


def _ink(prepared: np.ndarray) -> np.ndarray:
    """A prepared picture as ``from_levels`` floats. Floats are read as the template store's uint8
    levels (``models.image_preprocess.to_levels``, its own rounding), so a kept reference and a
    fresh picture of the same ink give the same numbers."""
    image = np.asarray(prepared)
    if image.ndim != 2:
        raise ValueError(f"a prepared picture is 2-D, got shape {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"a prepared picture is prepare's floats or uint8 levels, got {image.dtype}")
    x = from_levels(image if image.dtype == np.uint8 else to_levels(image))
    if float(x.max()) <= 0.0:
        raise NoInkError("no ink in the prepared picture")
    return x


def _describe(x: np.ndarray, config: HogConfig) -> np.ndarray:
    # Once per picture: every moment framing at every scale reads the same centroid and spread.
    moments = _ink_moments(x)
    frames = [(_frame(x, moments, framing, h, w, config.blur), cell)
              for framing in config.framings for h, w, cell in config.scales]
    parts = [_hog(frame, cell, config) for frame, cell in frames]
    parts = [p / (np.linalg.norm(p) + 1e-12) for p in parts]
    v = np.concatenate(parts) / np.sqrt(len(parts))
    if config.texture > 0:
        # Squared distances add: (gradients' + texture × patterns') / (1 + texture).
        patterns = [_lbp(frame, config.texture_cell) for frame, _ in frames]
        patterns = [p / (np.linalg.norm(p) + 1e-12) for p in patterns]
        t = np.concatenate(patterns) / np.sqrt(len(patterns))
        v = np.concatenate([v, np.sqrt(config.texture) * t]) / np.sqrt(1.0 + config.texture)
    # float32: the shipped 27 216 values are kept for every reference of every cached customer
    # (109 KB each).
    return v.astype(np.float32)


def _turn(x: np.ndarray, degrees: float) -> np.ndarray:
    """The ink turned about its ink-weighted centroid, which goes to the middle of a canvas as
    wide as twice its distance to the farthest corner: no stroke leaves it. The framings are
    all laid by the ink (its box, its moments), so where the ink sits on the canvas does not
    matter."""
    m = _ink_moments(x)
    h, w = x.shape
    reach = max(np.hypot(cx - m.cx, cy - m.cy) for cx in (0.0, w) for cy in (0.0, h))
    side = 2 * int(np.ceil(reach)) + 2
    turn = cv2.getRotationMatrix2D((m.cx, m.cy), degrees, 1.0)
    turn[0, 2] += side / 2.0 - m.cx
    turn[1, 2] += side / 2.0 - m.cy
    return cv2.warpAffine(x, turn, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)


def _shear(x: np.ndarray, degrees: float) -> np.ndarray:
    """The ink slanted about its ink-weighted centroid (each row moved sideways in proportion to
    its height above the centroid), on a canvas wide enough that no stroke leaves it."""
    m = _ink_moments(x)
    h, w = x.shape
    k = float(np.tan(np.radians(degrees)))
    pad = int(np.ceil(abs(k) * max(m.cy, h - m.cy))) + 1
    # x' = x - k (y - cy) + pad: rows above the centroid (smaller y) move right for k > 0.
    shear = np.array([[1.0, -k, k * m.cy + pad], [0.0, 1.0, 0.0]])
    return cv2.warpAffine(x, shear, (w + 2 * pad, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)


def hog_descriptor(prepared: np.ndarray, config: HogConfig = SHIPPED) -> np.ndarray:
    """The unit descriptor of one prepared ink image as it is (``prepare``'s output, float in
    [0, 1] or the template store's uint8 levels, read alike). ``NoInkError`` if it holds no ink.
    Ink that fills its own box (a dot, a straight bar) has no edge inside the box frame: those
    parts are zero, and the vector is shorter than a signature's unit one."""
    return _describe(_ink(prepared), config)


def hog_turned(prepared: np.ndarray, config: HogConfig = SHIPPED) -> np.ndarray:
    """The descriptors of the picture at each of ``config.turns``, then each of its ``shears``
    (rows; row 0 is :func:`hog_descriptor`, the picture as it is): what a question is compared by."""
    x = _ink(prepared)
    poses = [x if t == 0.0 else _turn(x, t) for t in config.turns] + [_shear(x, s) for s in config.shears]
    return np.stack([_describe(pose, config) for pose in poses])


def hog_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two descriptors (0 = the same picture; at most 2): the differences in
    float32, their squares summed in float64. ``a`` may be :func:`hog_turned`'s rows: the distance
    is then that of its closest turn to ``b`` as it is (``b``'s row 0 if ``b`` is turned rows too)."""
    target = np.asarray(b)
    diff = np.atleast_2d(np.asarray(a)) - (target[0] if target.ndim == 2 else target)
    # einsum with a float64 sum: 7x faster than a float64 copy of the rows, and the evaluator
    # computes hundreds of thousands of these.
    return float(np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64).min()))


class CentreError(VerificationError, ValueError):
    """The histograms' mean is missing, unreadable or not of the shipped descriptor's length."""


@dataclass(frozen=True, eq=False)
class HogCentre:
    """How the kiosk compares histograms: centred on ``mean`` (read-only, the descriptor's length)
    and user-normalised with ``prior``, the population values of the centred distances among one
    writer's references: the mean over the protocol's K = 5 draws on the Dutch TRAINING writers
    (``tools.evaluate_offline.fit_prior``). They go together: a prior of other distances would
    misplace every score. Uncentred the prior was (0.61, 0.68)."""

    mean: np.ndarray
    prior: NormalisationPrior


def _read_member(archive: zipfile.ZipFile, name: str, limit: int) -> np.ndarray:
    member = archive.getinfo(f"{name}.npy")
    if member.file_size > limit:
        raise CentreError(f"its {name} is {member.file_size} bytes, more than a mean descriptor's")
    with archive.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_centre(path: Path, length: int = SHIPPED.length) -> HogCentre:
    """The mean and prior stored at ``path`` (an ``.npz`` with ``mean``, ``length`` finite floats,
    and ``prior``, the positive nearest and mean distances). ``CentreError`` for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            # No larger than a float64 mean and its header: a small hostile file can declare
            # gigabytes, refused before they are read.
            raw = _read_member(archive, "mean", 8 * length + 4096)
            prior = _read_member(archive, "prior", 4096)
    except CentreError as exc:
        raise CentreError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a hostile file reaches zipfile and numpy's parsers in many ways
        raise CentreError(f"{path}: no usable mean descriptor ({type(exc).__name__}: {exc})") from None
    if raw.dtype.kind != "f" or raw.shape != (length,):
        raise CentreError(f"{path}: the mean descriptor is {raw.dtype} of shape {raw.shape}, "
                          f"the descriptor {length} floats")
    if prior.dtype.kind != "f" or prior.shape != (2,) or not np.all(np.isfinite(prior)) or not np.all(prior > 0):
        raise CentreError(f"{path}: the prior is not two positive distances")
    # Read-only for good: built on immutable bytes, no caller can make it writeable again.
    mean = np.frombuffer(raw.astype(np.float32).tobytes(), dtype=np.float32)
    if not np.isfinite(mean).all():
        raise CentreError(f"{path}: the mean descriptor has values that are not finite")
    return HogCentre(mean, NormalisationPrior(min_dist=float(prior[0]), mean_dist=float(prior[1])))


def centre_bytes(centre: HogCentre) -> bytes:
    """The ``.npz`` file of ``centre`` as :func:`load_centre` reads it (the caller writes it)."""
    buf = io.BytesIO()
    np.savez(buf, mean=np.asarray(centre.mean, dtype=np.float32),
             prior=np.array([centre.prior.min_dist, centre.prior.mean_dist], dtype=np.float64))
    return buf.getvalue()


@functools.cache
def shipped_centre() -> HogCentre:
    """The shipped mean and prior (:data:`CENTRE_FILE`), read once."""
    return load_centre(shipped_assets() / CENTRE_FILE)


def centred(rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Each descriptor (row) less ``centre``, scaled to unit length: pure. A row equal to the
    centre (no picture's is) stays zero rather than dividing by nothing."""
    diff = np.atleast_2d(np.asarray(rows, dtype=np.float32)) - centre
    norms = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))[:, None]
    return (diff / np.maximum(norms, 1e-12)).astype(np.float32)


def hog_compared(prepared: np.ndarray, centre: HogCentre | None = None) -> np.ndarray:
    """What the kiosk compares: :func:`hog_turned`'s rows (the shipped settings) centred on
    ``centre``'s mean (the shipped :func:`shipped_centre` if None). Compare with :func:`hog_distance`."""
    return centred(hog_turned(prepared), (shipped_centre() if centre is None else centre).mean)
