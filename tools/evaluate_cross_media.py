"""The cross-media protocols: which references and which questioned pictures each identity gets.

The cross-media set (:mod:`tools.datasets.cross_media`) has no forgeries and no writer with ten
signatures of one name; it has 1000 (writer, name) identities, each with one paper scan and three
pictures of electronic ink (iPad, phone twice), and 110 with two paper scans (the control writers).
An identity is the customer here; its trials are :class:`tools.evaluate.WriterPlan`\\ s (one per
identity, keyed ``"e017/3"``), so that scoring, normalisation, fusion, EER and the report are those
of every other evaluation (:mod:`tools.evaluate_offline`).

Protocols (questioned: genuine = the same writer's same name; skilled-like = the other writers'
same name on the questioned medium, all of them in the split; random = 20 pictures of other names by
other writers on the questioned medium, drawn with the seed):

- ``ink-to-paper``: references on electronic ink, questioned on paper: the kiosk's case of a
  customer enrolled on the pad who later signs a cheque. K <= 3 (writers e094 and e100 have one
  identity with 2 ink pictures: left out at K = 3).
- ``paper-to-paper``: one paper scan as the reference, the other questioned (control writers only:
  the experiment writers have one paper scan per name, and serve as same-name impostors). K = 1.
- ``ink-to-ink``: K of the ink pictures as references, the others questioned. K <= 2.

Draws: every combination of K references when there are at most ``trials`` of them (K = 3 of 3 is
one draw; 1 of 2 is both directions), else ``trials`` random ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from tools.datasets.cross_media import identities
from tools.datasets.types import Dataset, ImageSample, Medium
from tools.evaluate import RANDOM_FORGERS, WriterPlan

#: protocol: (which pictures are references, which are questioned, the largest K any identity has).
_Pick = Callable[[ImageSample], bool]
PROTOCOLS: dict[str, tuple[_Pick, _Pick, int]] = {
    "ink-to-paper": (lambda s: s.medium.is_ink, lambda s: s.medium is Medium.PAPER, 3),
    "paper-to-paper": (lambda s: s.medium is Medium.PAPER, lambda s: s.medium is Medium.PAPER, 1),
    "ink-to-ink": (lambda s: s.medium.is_ink, lambda s: s.medium.is_ink, 2),
}

#: The protocols whose references are electronic ink: the kiosk's pad references drawn as ink, so
#: they are scored with the fusion fitted for pad-ink references (``models.fusion.PAD_INK_SUFFIX``).
INK_REFERENCES = frozenset({"ink-to-paper", "ink-to-ink"})


def max_references(protocol: str) -> int:
    """The largest K the protocol allows (what an identity has, less one questioned where the
    references and the questioned picture are on the same medium)."""
    return _protocol(protocol)[2]


def check_references(protocol: str, references: int) -> None:
    """``ValueError`` unless K is one the protocol's identities have (checked before any picture is read)."""
    k_max = max_references(protocol)
    if not 1 <= references <= k_max:
        have = "3 ink pictures" if protocol == "ink-to-paper" else f"{k_max + 1} pictures on that medium"
        raise ValueError(f"{protocol}: K must be 1..{k_max} (an identity of the cross-media set has {have})")


def _protocol(protocol: str) -> tuple[_Pick, _Pick, int]:
    try:
        return PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown cross-media protocol {protocol!r}; known: {', '.join(PROTOCOLS)}") from None


def protocol_samples(dataset: Dataset[ImageSample], protocol: str) -> Dataset[ImageSample]:
    """``dataset`` with only the pictures ``protocol`` uses (no embedding of unused media)."""
    is_ref, is_questioned, _ = _protocol(protocol)
    kept = {w: [s for s in ss if is_ref(s) or is_questioned(s)] for w, ss in dataset.writers.items()}
    return Dataset(dataset.name, {w: ss for w, ss in kept.items() if ss}, list(dataset.skipped))


def identity_key(writer: str, name: int) -> str:
    return f"{writer}/{name}"


def cross_media_plans(
    dataset: Dataset[ImageSample], protocol: str, references: int, trials: int, seed: int
) -> tuple[list[WriterPlan[ImageSample]], list[str]]:
    """One plan per identity of ``dataset`` that the protocol can test, plus the identities left
    out and why. ``ValueError`` if K is outside what the protocol allows."""
    check_references(protocol, references)
    is_ref, is_questioned, _ = _protocol(protocol)
    same_medium = protocol != "ink-to-paper"
    rng = np.random.default_rng(seed)
    groups = identities(dataset)
    plans: list[WriterPlan[ImageSample]] = []
    excluded: list[str] = []
    for (writer, name), samples in groups.items():
        key = identity_key(writer, name)
        cands = [s for s in samples if is_ref(s)]
        later = [] if same_medium else [s for s in samples if is_questioned(s)]
        # Same medium: the undrawn references are the questioned genuine pictures.
        if len(cands) < references + same_medium or not (later or same_medium):
            excluded.append(f"{key}: {len(cands)} reference picture(s), {len(later)} questioned; K = {references}")
            continue
        others = [s for (w, n), ss in groups.items() if w != writer for s in ss if is_questioned(s)]
        skilled = [s for s in others if s.text == name]
        pool = [s for s in others if s.text != name]
        pick = rng.choice(len(pool), size=min(RANDOM_FORGERS, len(pool)), replace=False) if pool else np.zeros(0, int)
        combos = list(itertools.combinations(range(len(cands)), references))
        if len(combos) > trials:
            combos = [tuple(sorted(int(i) for i in rng.choice(len(cands), size=references, replace=False)))
                      for _ in range(trials)]
        plans.append(WriterPlan(writer=key, candidates=cands, draws=combos, later_genuine=later, skilled=skilled,
                                random=[pool[int(i)] for i in sorted(pick)], question_undrawn=same_medium))
    return plans, excluded
