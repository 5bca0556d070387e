"""The paper decision's operating point: chosen on the validation writers of both real paper sets,
measured on their test writers, through the kiosk's own paper verifier.

The EER figures of ``sigkiosk eval offline`` are threshold-free; this is the threshold a kiosk
decides paper signatures at. Every decision here is ``models.paper.PaperVerifier.verify``, built as
the daemon builds it (``kiosk.app``: the model directory, the anomaly check on), so it is the
kiosk's ``models.policy.DecisionPolicy`` (threshold and copy check) that decides.

Sets and cases (a case: one customer's references and what is questioned against them):

- ``dutch`` (SigComp 2011 Dutch scans), **paper references**: each writer's first 5 genuine as
  references; questioned: the next 10 genuine and every skilled forgery of the writer.
- ``cross-media`` (``ink-to-paper``), **pad-ink references**: each (writer, name) identity's 3
  pictures of electronic ink (iPad, phone twice: the stand-in for a pad enrollment drawn as ink) as
  references, scored with the fusion entry for pad-ink references as the kiosk scores a pad
  enrollment; questioned: its paper scan, and every other writer's paper scan of the same name
  (same-text impostors).

Not here: the cross-media paper-to-paper protocol. It has one reference per customer, and a kiosk
enrolls 5 pad references or at least 3 paper ones: with one reference the copy check has no pair of
references to measure a copy against and calls every picture a copy. Its EERs are in
``sigkiosk eval offline --format cross-media --protocol paper-to-paper``.

The choice (``--choose FILE``), one kind of reference on each set: the score threshold at which
the Dutch validation writers' FRR equals their skilled FAR (paper references, the ``cnn+hand+hog``
entry) is written as that entry's probability threshold (what ``PaperVerifier`` decides at); the
``cnn+hand+hog@pad-ink`` entry's bias is then shifted so that the same threshold falls on the
cross-media validation identities' own FRR = FAR point (an entry copied from ``cnn+hand+hog`` where
the file has none). One threshold, so a profile's ``paper_threshold`` moves both kinds alike; the
command and the validation figures go under each entry's ``operating_point``. A refit of either
fusion (``--fit-fusion``) drops its operating point: choose again after it.

    python -m tools.paper_operating_point --split validate --choose models/assets/offline_fusion.json
    python -m tools.paper_operating_point --split test        # what the README reports
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.fusion import offline_entry
from models.paper import FUSION_ENTRY, PaperVerifier
from models.paper_reference import PAD_INK, PAPER, ReferenceKind
from models.policy import Verdict
from tools.datasets import Dataset, ImageSample, load_images
from tools.datasets.types import Split
from tools.evaluate_cross_media import cross_media_plans, max_references

log = logging.getLogger(__name__)

DATA = Path("../shared/data/offline")
#: name: (folder under DATA, format, cross-media protocol or None)
SETS: dict[str, tuple[str, str, str | None]] = {
    "dutch": ("sigcomp-dutch-kaggle", "sigcomp-dutch", None),
    "cross-media": ("cross-media-chinese", "cross-media", "ink-to-paper"),
}
#: The kind of each set's references: the fusion entry its cases are scored with.
KINDS: dict[str, ReferenceKind] = {"dutch": PAPER, "cross-media": PAD_INK}


@dataclass(frozen=True)
class Case:
    """One customer's references and the pictures questioned against them."""

    customer: str
    references: tuple[ImageSample, ...]
    genuine: tuple[ImageSample, ...]
    forged: tuple[ImageSample, ...]


@dataclass(frozen=True)
class Outcome:
    """A set's verdicts: on genuine pictures and on forged (same-text) ones."""

    genuine: tuple[Verdict, ...]
    forged: tuple[Verdict, ...]

    def rates(self, threshold: float | None = None) -> tuple[float, float]:
        """(FRR, skilled FAR): as decided, or as they would be at score ``threshold`` (same rule as
        ``DecisionPolicy.decide``: at most the threshold, and not a copy)."""
        def ok(v: Verdict) -> bool:
            return v.approved if threshold is None else (v.distance <= threshold and not v.too_similar)
        frr = sum(not ok(v) for v in self.genuine) / max(len(self.genuine), 1)
        far = sum(ok(v) for v in self.forged) / max(len(self.forged), 1)
        return frr, far


def dutch_cases(dataset: Dataset[ImageSample], references: int = 5, questioned: int = 10) -> list[Case]:
    """First ``references`` genuine as references, the next ``questioned`` genuine and all skilled
    forgeries questioned (writers with too few genuine left out), as ``tools.operating_point``."""
    cases = []
    for w in sorted(dataset.writers):
        g = dataset.genuine(w)
        if len(g) <= references:
            continue
        cases.append(Case(w, tuple(g[:references]), tuple(g[references:references + questioned]),
                          tuple(dataset.skilled(w))))
    return cases


def cross_media_cases(dataset: Dataset[ImageSample], protocol: str) -> list[Case]:
    """The identities of the evaluator's cross-media protocol at its largest K: one case per draw
    of references (ink-to-paper: the 3 ink pictures, one draw)."""
    plans, _ = cross_media_plans(dataset, protocol, max_references(protocol), trials=10, seed=0)
    cases = []
    for p in plans:
        for draw in p.draws:
            undrawn = [c for i, c in enumerate(p.candidates) if i not in draw] if p.question_undrawn else []
            cases.append(Case(p.writer, tuple(p.candidates[i] for i in draw), tuple(p.later_genuine + undrawn),
                              tuple(p.skilled)))
    return cases


def decide(verifier: PaperVerifier, cases: Sequence[Case], kind: ReferenceKind = PAPER) -> Outcome:
    """Every questioned picture of every case through the kiosk's verifier, the references taken
    as ``kind`` (pad-ink: scored with the fusion for a pad enrollment drawn as ink)."""
    genuine: list[Verdict] = []
    forged: list[Verdict] = []
    for c in cases:
        refs = verifier.enroll_prepared([verifier.prepare_reference(s.image) for s in c.references], kind)
        genuine += [verifier.verify(refs, s.image) for s in c.genuine]
        forged += [verifier.verify(refs, s.image) for s in c.forged]
    return Outcome(tuple(genuine), tuple(forged))


def choose_threshold(outcomes: Sequence[Outcome]) -> float:
    """The score threshold where the sets' mean FRR meets their mean skilled FAR (midway between
    the two scores where it crosses, so that no trial sits on it)."""
    scores = np.unique(np.concatenate([[v.distance for v in o.genuine + o.forged] for o in outcomes]))

    def gap(t: float) -> float:
        frr, far = np.mean([o.rates(t) for o in outcomes], axis=0)
        return float(frr - far)

    gaps = np.array([gap(float(t)) for t in scores])
    i = int(np.argmax(gaps <= 0)) if (gaps <= 0).any() else len(scores) - 1
    if i == 0:
        return float(scores[0])
    # FRR falls and FAR rises with the threshold: the crossing lies between these two scores.
    lo, hi = float(scores[i - 1]), float(scores[i])
    return (lo + hi) / 2


def probability(score_threshold: float) -> float:
    """The fused probability a score threshold corresponds to (the score is minus the logit)."""
    return 1.0 / (1.0 + math.exp(score_threshold))


def write_operating_point(path: Path, threshold: float, provenance: dict[str, object], pad_shift: float) -> None:
    """Set the ``cnn+hand+hog`` entry's threshold (a probability) and say how it was chosen; raise the
    ``cnn+hand+hog@pad-ink`` entry's bias by ``pad_shift`` (score units) so that the same threshold is
    its own operating point (an entry copied from ``cnn+hand+hog`` where the file has none). Other
    entries are kept."""
    entries = json.loads(path.read_text())
    entry = entries[FUSION_ENTRY]
    entry["threshold"] = threshold
    entry["operating_point"] = provenance
    pad_name = offline_entry(FUSION_ENTRY, pad_ink=True)
    pad = entries.setdefault(pad_name, {**{k: v for k, v in entry.items() if k != "operating_point"},
                                        "fitted_on": f"copied from {FUSION_ENTRY}: {entry.get('fitted_on', '')}"})
    pad["bias"] = float(pad["bias"]) + pad_shift
    pad["threshold"] = threshold
    pad["operating_point"] = {**provenance, "bias_shift": pad_shift}
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def load_cases(data: Path, split: Split) -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {}
    loaded: dict[str, Dataset[ImageSample]] = {}
    for name, (folder, fmt, protocol) in SETS.items():
        if folder not in loaded:
            loaded[folder] = load_images(data / folder, fmt).subset(split)
        ds = loaded[folder]
        out[name] = cross_media_cases(ds, protocol) if protocol else dutch_cases(ds)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared offline folder")
    ap.add_argument("--split", choices=("validate", "test"), default="test")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="the paper model's folder (cnn_lstm_int8.tflite, offline_fusion.json; default: shipped)")
    ap.add_argument("--choose", type=Path, default=None, metavar="JSON",
                    help="choose the threshold on these writers (validate only) and write it into this "
                         "offline_fusion.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.choose is not None and args.split != "validate":
        print("paper_operating_point: --choose chooses on validation writers only: add --split validate",
              file=sys.stderr)
        return 2
    verifier = PaperVerifier(args.model_dir)
    cases = load_cases(args.data, args.split)
    outcomes = {name: decide(verifier, cs, KINDS[name]) for name, cs in cases.items()}
    threshold = verifier.policy.threshold
    # The score threshold each set is decided at: the one threshold, or, when choosing, each kind
    # of reference at its own set's FRR = FAR point (the pad-ink entry is then shifted onto it).
    at: dict[str, float | None] = {name: None for name in outcomes}
    if args.choose is not None:
        chosen = {name: choose_threshold([o]) for name, o in outcomes.items()}
        at.update(chosen)
        threshold = chosen["dutch"]
        pad_shift = chosen["cross-media"] - threshold
        figures = {n: dict(zip(("frr", "skilled_far"), (round(100 * r, 2) for r in o.rates(at[n]))))
                   for n, o in outcomes.items()}
        command = "python -m tools.paper_operating_point " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        write_operating_point(args.choose, probability(threshold), {
            "command": command,
            "chosen_on": "validate writers: " + ", ".join(f"{n} ({len(cases[n])} cases, {KINDS[n]} references)"
                                                          for n in SETS),
            "criterion": "each kind of reference at its set's FRR = skilled FAR: paper references on dutch, "
                         "pad-ink references on cross-media (the pad-ink entry's bias shifted onto the one threshold)",
            "validate_percent": figures,
        }, pad_shift)
        print(f"threshold: probability {probability(threshold):.4f} (score {threshold:.4f}); pad-ink entry's "
              f"bias shifted by {pad_shift:+.4f} -> {args.choose}")
    print(f"paper operating point on the {args.split} writers: probability >= {probability(threshold):.4f}")
    for name, o in outcomes.items():
        frr, far = o.rates(at[name])
        print(f"  {name:<18} {len(cases[name]):>4} cases  FRR {100 * frr:5.1f} % "
              f"({round(frr * len(o.genuine))}/{len(o.genuine)})  skilled FAR {100 * far:5.1f} % "
              f"({round(far * len(o.forged))}/{len(o.forged)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

