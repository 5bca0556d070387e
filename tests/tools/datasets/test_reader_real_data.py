"""The readers on the real shared data: the published counts and the quirks we measured.

Skipped when the research-licensed data is not beside the project (``../shared/data``, or the
folder named by ``SIGKIOSK_SHARED_DATA``). Each set is read once per module (~8 s in all on a
2-core machine). Nothing here prints point values.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tools.datasets import Dataset, Label, MalformedFileError, load_images, load_online, read_susig_file

DATA = Path(os.environ.get("SIGKIOSK_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "online").is_dir(), reason=f"shared data not found at {DATA}")

#: A generous ceiling: each set reads in about 1-2 s; ten times that means parsing went quadratic.
MAX_SECONDS = 20.0


def _timed(load, *args):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    ds = load(*args)
    assert time.perf_counter() - started < MAX_SECONDS
    return ds


def _totals(ds: Dataset) -> tuple[int, int, int]:  # type: ignore[type-arg]
    return (
        len(ds.writers),
        sum(len(ds.genuine(w)) for w in ds.writers),
        sum(len(ds.skilled(w)) for w in ds.writers),
    )


@pytest.fixture(scope="module")
def visual() -> Dataset:  # type: ignore[type-arg]
    return _timed(load_online, DATA / "online/susig/VisualSubCorpus", "susig-visual")


@pytest.fixture(scope="module")
def blind() -> Dataset:  # type: ignore[type-arg]
    return _timed(load_online, DATA / "online/susig/BlindSubCorpus", "susig-blind")


@pytest.fixture(scope="module")
def nfi() -> Dataset:  # type: ignore[type-arg]
    return _timed(load_online, DATA / "online/sigcomp2009-nfi", "sigcomp2009-nfi")


@pytest.fixture(scope="module")
def jp() -> Dataset:  # type: ignore[type-arg]
    return _timed(load_online, DATA / "online/sigwicomp2013-jp", "sigwicomp2013-jp")


def test_susig_visual(visual: Dataset) -> None:  # type: ignore[type-arg]
    assert _totals(visual) == (104, 1980, 1040)
    assert visual.skipped == []
    sessions = Counter(
        tuple(sorted(Counter(s.session for s in visual.genuine(w)).items())) for w in visual.writers
    )
    assert sessions == {((1, 10), (2, 10)): 94, ((1, 10),): 10}  # ten writers have session 1 only
    assert all(len(visual.skilled(w)) == 10 for w in visual.writers)
    trajs = [s.trajectory for v in visual.writers.values() for s in v]
    assert all(t.pen_down.all() and t.device.pressure_levels == 255 for t in trajs)
    assert max(float(t.pressure.max()) for t in trajs) == 1.0  # raw 255 is reached
    assert sum(len(t.stroke_breaks) for t in trajs) == 6003  # one per endpts=1 row (never on a last row)


def test_susig_blind(blind: Dataset) -> None:  # type: ignore[type-arg]
    assert _totals(blind) == (90, 840, 900)
    assert blind.skipped == []
    assert Counter(len(blind.genuine(w)) for w in blind.writers) == {10: 60, 8: 30}
    assert all(s.session is None for v in blind.writers.values() for s in v)
    trajs = [s.trajectory for v in blind.writers.values() for s in v]
    assert max(float(t.pressure.max()) for t in trajs) == 1.0  # raw 1023 is reached
    assert max(t.duration for t in trajs) < 120  # the 2**32 us clock wraps were repaired


def test_susig_clock_glitches_without_repair() -> None:
    """The files carry backward time steps; strict reading rejects exactly those (see susig.py)."""
    root = DATA / "online/susig"
    failing: Counter[str] = Counter()
    for sub, variant in (("VisualSubCorpus", "visual"), ("BlindSubCorpus", "blind")):
        for p in sorted((root / sub).rglob("*.sig")):
            try:
                read_susig_file(p, variant, repair_clock=False)  # type: ignore[arg-type]
            except MalformedFileError as err:
                assert "backwards" in err.reason and err.line is not None
                failing[sub] += 1
    assert failing == {"VisualSubCorpus": 158, "BlindSubCorpus": 5}


def test_sigcomp2009_nfi(nfi: Dataset) -> None:  # type: ignore[type-arg]
    assert _totals(nfi) == (79, 932, 620)
    assert sum(1 for w in nfi.writers if nfi.skilled(w)) == 19
    samples = [s for v in nfi.writers.values() for s in v]
    assert all((s.path.parent.name == "genuines") == (s.label is Label.GENUINE) for s in samples)
    assert all(s.path.name[4:7] == s.writer or s.label is Label.SKILLED for s in samples)
    assert max(float(s.trajectory.pressure.max()) for s in samples) == 1.0  # raw 1024 is reached
    assert all(not s.trajectory.device.time_measured for s in samples)
    # Hover points (pressure -1 in the files) are kept as pen-up points.
    assert sum(int((~s.trajectory.pen_down).sum()) for s in samples) > 300_000


def test_sigwicomp2013_jp(jp: Dataset) -> None:  # type: ignore[type-arg]
    assert _totals(jp) == (11, 462, 396)
    assert list(jp.writers) == [f"{i:03d}" for i in range(11)]
    assert all(len(jp.genuine(w)) == 42 and len(jp.skilled(w)) == 36 for w in jp.writers)
    trajs = [s.trajectory for v in jp.writers.values() for s in v]
    assert max(float(t.pressure.max()) for t in trajs) == 1.0  # raw 100 is reached
    repeats = sum(1 for t in trajs if t.x[1] == t.x[0] and t.y[1] == t.y[0])
    assert repeats > 400  # leading repeats are common and kept
    assert np.median([len(t) for t in trajs]) > 2000


def test_sigcomp_dutch() -> None:
    ds = _timed(load_images, DATA / "offline/sigcomp-dutch-kaggle", "sigcomp-dutch")
    assert _totals(ds) == (64, 887, 762)
    assert ds.skipped == []
    imgs = [s.image for v in ds.writers.values() for s in v]
    assert max(max(i.shape) for i in imgs) == 480
    # Ten writers use the second naming (WWW_NN.png, FFFFWWW_NN.png) and have 24 genuine or close.
    assert sum(1 for w in ds.writers if len(ds.genuine(w)) > 12) == 10
