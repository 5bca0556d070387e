"""How often the kiosk's copy check fires, on real pen data: on genuine signatures (a false copy is
a customer refused), on skilled forgeries, and on signatures played again, disguised.

An attacker who has a recording of a customer's signature (a sniffed pad cable, a leaked
enrollment) plays it to the kiosk as a pen: as recorded, re-timed, as a pad at another rate would
sample it, thinned, with jittered time or positions, slightly rotated. The kiosk's default verifier
(built by the daemon's factory, as ``tools.operating_point`` builds it) decides each; a decision is
a copy when its verdict is ``too_similar``. "Distance" counts what the verifier's own distance
called a copy (``models.policy.DecisionPolicy.is_copy``), "either" adds the written path
(``models.path_copy``), against the references and against the signatures the customer gave
before (``seen``, as the kiosk keeps them: ``kiosk.templates.SEEN_DEFAULT``). Per set, each writer's
first 5 genuine signatures (of session 1 where the set has sessions) are the references; every
other genuine signature is questioned in turn, each against those approved before it, then every
skilled forgery; three of the references and two of the signatures questioned earlier are
replayed under each disguise.

    python -m tools.copy_check                      # every shared pen set, all writers (about 6 min here)
    python -m tools.copy_check --quick              # three writers a set (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from kiosk.config import VerifierConfig
from kiosk.templates import SEEN_DEFAULT
from models.device_variants import dropped, jittered_positions, jittered_time, resampled, transformed
from models.pen import RETRACES_A_REFERENCE, RETRACES_AN_EARLIER
from models.policy import Verdict
from models.trajectory import Trajectory
from models.verification import PenVerifier
from tools.datasets import load_online, writer_split
from tools.operating_point import kiosk_verifier
from tools.train.data import DEFAULT_SETS

#: The references of each writer that are replayed (indices among its 5).
REPLAYED = (0, 2, 4)
#: ... and its questioned genuine signatures (indices among them), once all are seen.
REPLAYED_EARLIER = (0, 1)
REFERENCES = 5

Disguise = Callable[[Trajectory, np.random.Generator], Trajectory]


def _height(t: Trajectory) -> float:
    y = t.y[t.pen_down] if t.pen_down.any() else t.y
    return float(np.std(y)) or 1.0


def _uneven(t: Trajectory, a: float) -> Trajectory:
    """Re-timed unevenly over the same total time (``a``: how much; below 1 keeps time running)."""
    u = t.t / t.t[-1] if t.t[-1] > 0 else t.t
    return jittered_time(t, t.t[-1] * (u + a / np.pi * np.sin(np.pi * u)) - t.t)


def _positions(share: float) -> Disguise:
    return lambda t, rng: jittered_positions(t, rng.normal(0.0, share * _height(t), (len(t.t), 2)))


#: (key, what it is, the disguise): each a pure function of the recorded reference.
DISGUISES: tuple[tuple[str, str, Disguise], ...] = (
    ("as-recorded", "played as recorded", lambda t, rng: t),
    ("clock+1%", "1 % slower", lambda t, rng: jittered_time(t, 0.01 * t.t)),
    ("clock-3%", "3 % faster", lambda t, rng: jittered_time(t, -0.03 * t.t)),
    ("75hz", "sampled at 75 Hz", lambda t, rng: resampled(t, 75.0)),
    ("200hz", "sampled at 200 Hz", lambda t, rng: resampled(t, 200.0)),
    ("drop10", "10 % of points dropped", lambda t, rng: dropped(t, rng.random(len(t.t)) > 0.1)),
    ("time-jitter", "time jittered 2 ms", lambda t, rng: jittered_time(t, rng.normal(0.0, 0.002, len(t.t)))),
    ("uneven-clock", "slower at the start, faster at the end", lambda t, rng: _uneven(t, 0.6)),
    ("pos-0.5%", "positions jittered 0.5 % of height", _positions(0.005)),
    ("pos-1%", "positions jittered 1 % of height", _positions(0.01)),
    ("clock+1%,pos-0.5%", "1 % slower, positions jittered 0.5 %",
     lambda t, rng: _positions(0.005)(jittered_time(t, 0.01 * t.t), rng)),
    ("rot1", "rotated 1 degree", lambda t, rng: transformed(t, rotation_deg=1.0)),
)


@dataclass
class Counts:
    """Questioned signatures and how many each check called a copy."""

    n: int = 0
    distance: int = 0
    either: int = 0

    def add(self, too_similar: bool, by_path_only: bool) -> None:
        self.n += 1
        self.either += too_similar
        self.distance += too_similar and not by_path_only

    def as_dict(self) -> dict[str, int]:
        return {"n": self.n, "distance": self.distance, "either": self.either}


@dataclass
class SetReport:
    genuine: dict[str, Counts] = field(default_factory=lambda: {"train+validate": Counts(), "test": Counts()})
    skilled: dict[str, Counts] = field(default_factory=lambda: {"train+validate": Counts(), "test": Counts()})
    replays: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k, _, _ in DISGUISES})
    earlier: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k, _, _ in DISGUISES})

    def as_dict(self) -> dict[str, dict[str, dict[str, int]]]:
        return {"genuine": {k: c.as_dict() for k, c in self.genuine.items()},
                "skilled": {k: c.as_dict() for k, c in self.skilled.items()},
                "replays": {k: c.as_dict() for k, c in self.replays.items()},
                "earlier": {k: c.as_dict() for k, c in self.earlier.items()}}


def _reasons(v: Verdict) -> tuple[bool, bool]:
    """(a copy, by the written path only)."""
    return v.too_similar, RETRACES_A_REFERENCE in v.explanations or RETRACES_AN_EARLIER in v.explanations


def _judge(verifier: PenVerifier, reference_set: object, query: Trajectory,
           seen: list[np.ndarray]) -> tuple[bool, bool]:
    return _reasons(verifier.verify(reference_set, query, seen=seen[-SEEN_DEFAULT:]))  # type: ignore[arg-type]


def measure_set(samples: Iterator[tuple[str, list[Trajectory], list[Trajectory], list[Trajectory]]],
                verifier: PenVerifier, seed: int = 0) -> SetReport:
    """``samples``: (writer, references, other genuine, skilled forgeries) per writer."""
    rng = np.random.default_rng(seed)
    out = SetReport()
    for writer, refs, genuine, skilled in samples:
        group = "test" if writer_split(writer) == "test" else "train+validate"
        reference_set = verifier.enroll(refs)
        seen: list[np.ndarray] = []
        for q in genuine:
            v = verifier.verify(reference_set, q, seen=seen[-SEEN_DEFAULT:])
            out.genuine[group].add(*_reasons(v))
            if v.approved and not v.too_similar:   # what the kiosk keeps (kiosk.flows.verify.VerifyPen)
                seen.append(verifier.copy_print(q))
        for q in skilled:
            out.skilled[group].add(*_judge(verifier, reference_set, q, seen))
        # The replays of earlier signatures with those signatures among the latest kept.
        recent = [verifier.copy_print(genuine[i]) for i in REPLAYED_EARLIER if i < len(genuine)]
        for key, _, disguise in DISGUISES:
            for i in REPLAYED:
                out.replays[key].add(*_judge(verifier, reference_set, disguise(refs[i], rng), seen))
            for i in REPLAYED_EARLIER:
                if i < len(genuine):
                    out.earlier[key].add(*_judge(verifier, reference_set, disguise(genuine[i], rng),
                                                 [*seen, *recent]))
    return out


def writers_of(data_root: Path, folder: str, fmt: str, limit: int | None
               ) -> Iterator[tuple[str, list[Trajectory], list[Trajectory], list[Trajectory]]]:
    ds = load_online(data_root / folder, fmt)
    taken = 0
    for w in sorted(ds.writers):
        g = ds.genuine(w)
        refs = [s for s in g if s.session in (None, 1)][:REFERENCES]
        if len(refs) < REFERENCES:
            continue
        if limit is not None and taken >= limit:
            return
        taken += 1
        yield (w, [s.trajectory for s in refs], [s.trajectory for s in g if s not in refs],
               [s.trajectory for s in ds.skilled(w)])


def run(data_root: Path, quick: bool = False, progress: Callable[[str], None] = lambda m: None) -> dict:
    verifier = kiosk_verifier(VerifierConfig())
    report: dict = {"verifier": verifier.name, "model_versions": verifier.model_versions(),
                    "path_copy_ratio": verifier.policy.path_copy_ratio,
                    "seen_copy_ratio": verifier.policy.seen_copy_ratio, "seen_signatures": SEEN_DEFAULT,
                    "too_similar_ratio": verifier.policy.too_similar_ratio,
                    "disguises": {k: label for k, label, _ in DISGUISES}, "sets": {}}
    for rel, name in DEFAULT_SETS:
        progress(f"{name} ...")
        folder = Path(rel).relative_to("online")
        report["sets"][name] = measure_set(writers_of(data_root, str(folder), name, 3 if quick else None),
                                           verifier).as_dict()
    return report


def format_table(report: dict) -> str:
    """Markdown: a row per kind of question, a column per set; each cell "distance → either"
    (copies found by the verifier's distance alone, and with the written path)."""
    names = list(report["sets"])

    def cell(c: dict[str, int]) -> str:
        return f"{c['distance']}/{c['n']} → {c['either']}/{c['n']}" if c["n"] else "-"

    def summed(counts: dict[str, dict[str, int]]) -> dict[str, int]:
        return {k: sum(c[k] for c in counts.values()) for k in ("n", "distance", "either")}

    Pick = Callable[[dict], dict[str, int]]
    rows: list[tuple[str, Pick]] = [
        ("genuine, train + validate writers", lambda s: s["genuine"]["train+validate"]),
        ("genuine, test writers", lambda s: s["genuine"]["test"]),
        ("skilled forgeries", lambda s: summed(s["skilled"]))]
    rows += [(f"replayed reference: {label}", partial(lambda s, k: s["replays"][k], k=key))
             for key, label in report["disguises"].items()]
    rows += [(f"replayed earlier signature: {label}", partial(lambda s, k: s["earlier"][k], k=key))
             for key, label in report["disguises"].items() if "earlier" in next(iter(report["sets"].values()))]
    lines = ["| questioned | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(pick(report["sets"][n])) for n in names) + " |" for label, pick in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/online"), help="the shared pen sets' root")
    ap.add_argument("--quick", action="store_true", help="three writers a set")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--table", type=Path, metavar="JSON", help="print the table of a report written before")
    args = ap.parse_args(argv)
    if args.table:
        print(format_table(json.loads(args.table.read_text())))
        return 0
    report = run(args.data, args.quick, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
