"""Records that dataset readers return: labelled samples grouped by writer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Generic, Literal, TypeVar

from models.image import SignatureImage
from models.trajectory import Trajectory

log = logging.getLogger(__name__)

Split = Literal["train", "validate", "test"]


class Label(str, Enum):
    GENUINE = "genuine"
    SKILLED = "skilled"


class Medium(str, Enum):
    """What a signature image was written on: scanned paper, or electronic ink saved as a picture."""

    PAPER = "paper"
    IPAD = "ipad"
    PHONE = "phone"

    @property
    def is_ink(self) -> bool:
        return self is not Medium.PAPER


class MalformedFileError(ValueError):
    """A dataset file does not follow its format. Names the file and, where known, the line."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ClockRepairs:
    """What a reader did to one file's timestamps (``tools.datasets.clock``): backward steps
    re-timed as clock glitches, and 32-bit counter wraps decoded (SUSIG Blind)."""

    retimed_steps: int = 0
    counter_wraps: int = 0

    def __bool__(self) -> bool:
        return bool(self.retimed_steps or self.counter_wraps)


@dataclass(frozen=True)
class OnlineSample:
    """One pen signature of a dataset.

    ``writer`` is the writer whose signature this is meant to be (the forged writer for a forgery).
    ``session`` is 1 or 2 where the set has sessions. ``enrollment`` marks files the set's own
    protocol fixes as references (MCYT exercise layout). ``clock`` says what the reader repaired
    in the file's timestamps.
    """

    writer: str
    label: Label
    trajectory: Trajectory
    path: Path
    index: int
    session: int | None = None
    enrollment: bool = False
    clock: ClockRepairs = ClockRepairs()


@dataclass(frozen=True)
class ImageSample:
    """One signature picture of a dataset.

    ``medium`` is paper for scans (every set but the cross-media one also has electronic ink).
    ``text`` is which of the set's shared texts was written, where all writers write the same ones
    (cross-media: the ten names, 1-10); None where each writer signs their own name.
    """

    writer: str
    label: Label
    image: SignatureImage
    path: Path
    index: int
    medium: Medium = Medium.PAPER
    text: int | None = None


S = TypeVar("S", OnlineSample, ImageSample)


@dataclass
class Dataset(Generic[S]):
    """Writers to their samples, plus what was skipped (only when the caller asked to skip)."""

    name: str
    writers: dict[str, list[S]]
    skipped: list[MalformedFileError] = field(default_factory=list)

    def genuine(self, writer: str) -> list[S]:
        return [s for s in self.writers[writer] if s.label is Label.GENUINE]

    def skilled(self, writer: str) -> list[S]:
        return [s for s in self.writers[writer] if s.label is Label.SKILLED]

    def clock_repairs(self) -> dict[str, int]:
        """How many files had timestamps repaired, and how (for reports); image sets have none."""
        fixes = [c for ss in self.writers.values() for s in ss if (c := getattr(s, "clock", None))]
        return {
            "files_retimed": sum(1 for c in fixes if c.retimed_steps),
            "backward_steps_retimed": sum(c.retimed_steps for c in fixes),
            "files_counter_wrap": sum(1 for c in fixes if c.counter_wraps),
            "counter_wraps_decoded": sum(c.counter_wraps for c in fixes),
        }

    def subset(self, split: Split) -> "Dataset[S]":
        return Dataset(
            name=f"{self.name}[{split}]",
            writers={w: v for w, v in self.writers.items() if writer_split(w) == split},
            skipped=list(self.skipped),
        )


def writer_split(writer: str) -> Split:
    """The shared data's writer-disjoint split: last digit 0-6 train, 7 validate, 8-9 test."""
    digits = "".join(ch for ch in writer if ch.isdigit())
    if not digits:
        raise ValueError(f"writer id {writer!r} has no digits to split on")
    d = int(digits[-1])
    return "train" if d <= 6 else ("validate" if d == 7 else "test")


class SkipLog:
    """Collects malformed files: raises at once unless the caller asked to skip them."""

    def __init__(self, skip_malformed: bool) -> None:
        self.skip_malformed = skip_malformed
        self.skipped: list[MalformedFileError] = []

    def handle(self, err: MalformedFileError) -> None:
        if not self.skip_malformed:
            raise err
        log.warning("skipping malformed file: %s", err)
        self.skipped.append(err)
