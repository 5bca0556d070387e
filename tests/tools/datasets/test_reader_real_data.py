"""The readers on the real shared data: the published counts and the quirks we measured.

Skipped when the research-licensed data is not beside the project (``../shared/data``, or the
folder named by ``SIGKIOSK_SHARED_DATA``). Each set is read once per module (~8 s in all on a
2-core machine).

The data must never reach a log, and pytest prints the values in a failing assertion (in full
with ``-vv``, locals with ``-l``). So the datasets are held in :class:`Quiet`, whose repr is a
summary, and every assertion compares plain numbers computed by a helper, never trajectories.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from shared_data import shared_data

from tools.datasets import (
    Dataset,
    Label,
    MalformedFileError,
    identities,
    load_images,
    load_online,
    read_signature_image,
    read_susig_file,
)

DATA = shared_data()


class Quiet:
    """A loaded dataset whose repr never shows samples."""

    def __init__(self, load: Callable[..., Dataset], *args: object) -> None:  # type: ignore[type-arg]
        started = time.perf_counter()
        self.ds = load(*args)
        self.seconds = time.perf_counter() - started

    def __repr__(self) -> str:
        return f"<{self.ds.name}: {len(self.ds.writers)} writers, read in {self.seconds:.1f} s>"

    def totals(self) -> tuple[int, int, int]:
        ds = self.ds
        return (len(ds.writers), sum(len(ds.genuine(w)) for w in ds.writers), sum(len(ds.skilled(w)) for w in ds.writers))

    def samples(self) -> list:  # type: ignore[type-arg]
        return [s for v in self.ds.writers.values() for s in v]

    def per_writer(self, fn: Callable[[str], object]) -> Counter:  # type: ignore[type-arg]
        return Counter(fn(w) for w in self.ds.writers)

    def max_pressure(self) -> float:
        return max(float(s.trajectory.pressure.max()) for s in self.samples())


@pytest.fixture(scope="module")
def visual() -> Quiet:
    return Quiet(load_online, DATA / "online/susig/VisualSubCorpus", "susig-visual")


@pytest.fixture(scope="module")
def blind() -> Quiet:
    return Quiet(load_online, DATA / "online/susig/BlindSubCorpus", "susig-blind")


@pytest.fixture(scope="module")
def nfi() -> Quiet:
    return Quiet(load_online, DATA / "online/sigcomp2009-nfi", "sigcomp2009-nfi")


@pytest.fixture(scope="module")
def jp() -> Quiet:
    return Quiet(load_online, DATA / "online/sigwicomp2013-jp", "sigwicomp2013-jp")


def test_susig_visual(visual: Quiet) -> None:
    totals, skipped = visual.totals(), len(visual.ds.skipped)
    assert totals == (104, 1980, 1040) and skipped == 0
    sessions = visual.per_writer(lambda w: tuple(sorted(Counter(s.session for s in visual.ds.genuine(w)).items())))
    assert sessions == {((1, 10), (2, 10)): 94, ((1, 10),): 10}  # ten writers have session 1 only
    forgeries = visual.per_writer(lambda w: len(visual.ds.skilled(w)))
    assert forgeries == {10: 104}
    all_down = all(s.trajectory.pen_down.all() for s in visual.samples())
    levels = {s.trajectory.device.pressure_levels for s in visual.samples()}
    assert all_down and levels == {255}
    assert visual.max_pressure() == 1.0  # raw 255 is reached
    breaks = sum(len(s.trajectory.stroke_breaks) for s in visual.samples())
    assert breaks == 6003  # one per endpts=1 row (never on a last row)
    # The 10 ms steps back of 158 files, re-timed by the general rule (tools.datasets.clock).
    clock = visual.ds.clock_repairs()
    assert (clock["files_retimed"], clock["backward_steps_retimed"], clock["files_counter_wrap"]) == (158, 211, 0)


def test_susig_blind(blind: Quiet) -> None:
    totals, skipped = blind.totals(), len(blind.ds.skipped)
    assert totals == (90, 840, 900) and skipped == 0
    genuine = blind.per_writer(lambda w: len(blind.ds.genuine(w)))
    assert genuine == {10: 60, 8: 30}
    sessions = {s.session for s in blind.samples()}
    assert sessions == {None}
    assert blind.max_pressure() == 1.0  # raw 1023 is reached
    longest = max(s.trajectory.duration for s in blind.samples())
    assert longest < 120  # the 2**32 us clock wraps were repaired
    clock = blind.ds.clock_repairs()
    assert clock == {"files_retimed": 1, "backward_steps_retimed": 1, "files_counter_wrap": 4, "counter_wraps_decoded": 15}


def test_susig_clock_glitches_without_repair() -> None:
    """The files carry backward time steps; strict reading rejects exactly those (see susig.py)."""
    root = DATA / "online/susig"
    failing: Counter[str] = Counter()
    for sub, variant in (("VisualSubCorpus", "visual"), ("BlindSubCorpus", "blind")):
        for p in sorted((root / sub).rglob("*.sig")):
            try:
                read_susig_file(p, variant, repair_clock=False)  # type: ignore[arg-type]
            except MalformedFileError as err:
                reason, line = err.reason, err.line
                assert "backwards" in reason and line is not None
                failing[sub] += 1
    assert failing == {"VisualSubCorpus": 158, "BlindSubCorpus": 5}


def test_sigcomp2009_nfi(nfi: Quiet) -> None:
    totals = nfi.totals()
    assert totals == (79, 932, 620)
    with_forgeries = sum(1 for w in nfi.ds.writers if nfi.ds.skilled(w))
    assert with_forgeries == 19
    folder_agrees = all((s.path.parent.name == "genuines") == (s.label is Label.GENUINE) for s in nfi.samples())
    owner_wrote_genuine = all(s.path.name[4:7] == s.writer for s in nfi.samples() if s.label is Label.GENUINE)
    assert folder_agrees and owner_wrote_genuine
    assert nfi.max_pressure() == 1.0  # raw 1024 is reached
    measured = {s.trajectory.device.time_measured for s in nfi.samples()}
    assert measured == {False}
    pen_up = sum(int((~s.trajectory.pen_down).sum()) for s in nfi.samples())
    assert pen_up > 300_000  # hover points (pressure -1 in the files) are kept as pen-up points


def test_sigwicomp2013_jp(jp: Quiet) -> None:
    totals, writers = jp.totals(), list(jp.ds.writers)
    assert totals == (11, 462, 396)
    assert writers == [f"{i:03d}" for i in range(11)]
    counts = jp.per_writer(lambda w: (len(jp.ds.genuine(w)), len(jp.ds.skilled(w))))
    assert counts == {(42, 36): 11}
    assert jp.max_pressure() == 1.0  # raw 100 is reached
    leading_repeat = sum(1 for s in jp.samples() if s.trajectory.x[1] == s.trajectory.x[0] and s.trajectory.y[1] == s.trajectory.y[0])
    assert leading_repeat > 400  # leading repeats are common and kept
    median_points = float(np.median([len(s.trajectory) for s in jp.samples()]))
    assert median_points > 2000


def test_sigcomp_dutch() -> None:
    dutch = Quiet(load_images, DATA / "offline/sigcomp-dutch-kaggle", "sigcomp-dutch")
    totals, skipped = dutch.totals(), len(dutch.ds.skipped)
    assert totals == (64, 887, 762) and skipped == 0
    longest_side = max(max(s.image.shape) for s in dutch.samples())
    assert longest_side == 480
    # Ten writers use the second naming (WWW_NN.png, FFFFWWW_NN.png) and have 23 or 24 genuine.
    many = sum(1 for w in dutch.ds.writers if len(dutch.ds.genuine(w)) > 12)
    assert many == 10


def test_cross_media() -> None:
    cm = Quiet(load_images, DATA / "offline/cross-media-chinese", "cross-media")
    ds = cm.ds
    assert cm.totals() == (111, 4218, 0) and not ds.skipped
    media = Counter(s.medium.value for s in cm.samples())
    assert media == {"paper": 100 * 10 + 11 * 20, "ipad": 1000, "phone": 2000 - 2}
    ids = identities(ds)
    # 1000 experiment identities (paper + iPad + 2 phone), 110 control ones (paper twice); writers
    # 94 and 100 each miss one phone image.
    assert Counter(len(v) for v in ids.values()) == {4: 998, 3: 2, 2: 110}
    assert sorted(w for (w, _), v in ids.items() if len(v) == 3) == ["e094", "e100"]
    assert all(Counter(s.medium.value for s in ids[("e001", n)]) == {"paper": 1, "ipad": 1, "phone": 2} for n in range(1, 11))
    assert [s.index for s in ids[("c03", 4)]] == [4, 14]
    splits = {sp: sorted(ds.subset(sp).writers) for sp in ("train", "validate", "test")}
    assert [len(v) for v in splits.values()] == [78, 11, 22]
    assert [w for w in splits["validate"] if w[0] == "c"] == ["c07"] and [w for w in splits["test"] if w[0] == "c"] == ["c08", "c09"]
    assert set(splits["train"]).isdisjoint(splits["validate"] + splits["test"])
    assert max(max(s.image.shape) for s in cm.samples()) == 480
    # 59 phone pictures (writers 92, 94, 99) are light ink on a dark screen; read as dark on white.
    # (Plain values only in the assertions: a failing one must not print pictures.)
    dark = [(s.writer, s.medium.value) for s in cm.samples() if np.median(read_signature_image(s.path).pixels) < 128]
    assert len(dark) == 59 and set(dark) == {("e092", "phone"), ("e094", "phone"), ("e099", "phone")}  # 94 misses one
    assert min(float(np.median(s.image.pixels)) for s in cm.samples()) >= 128
