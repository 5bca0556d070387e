"""Does site self-calibration (``models.calibration``) bring FRR and FAR closer to target on a
tablet the verifier was not tuned on? Measured with the cross-device protocol's sets.

For each shared pen set left out in turn (``tools.cross_device.SETS``):

* the LOO bias (``loo_offset``) is measured on the **other** sets' train + validate writers: per
  writer, the first 5 genuine as references; the ``1 - target`` quantile (writers weighted
  equally) of the questioned genuine (the next 10) minus that of the LOO scores of the 5
  references;
* the left-out set's test writers are one site: each enrolls 5 references; the site calibrates
  from their LOO scores only (genuine, no forgery), with that offset, the kiosk's default
  shrinkage and bounds;
* FRR (next 10 genuine) and skilled FAR (all skilled forgeries) of the kiosk's verifier
  (``models.pen.make_verifier``, shipped settings) at the shipped threshold and at the calibrated
  one, decided by the verifier's own policy (``models.calibration.SiteThreshold``).

    nice python -m tools.site_calibration ../shared/data/online [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiosk.calibration import SCALE_DEFAULTS
from models.calibration import CalibrationSettings, SiteThreshold, loo_scores, propose, weighted_quantile
from models.classic import ClassicConfig
from models.pen import make_verifier
from models.verification import PenVerifier
from tools.cross_device import SETS, pick_writers
from tools.datasets import Dataset, OnlineSample, load_online

REFERENCES = 5
QUESTIONED = 10
TARGETS = (0.02, 0.03, 0.05)
#: The kiosk's defaults (``kiosk.calibration.CalibrationConfig``).
MIN_CUSTOMERS, STRENGTH = 10, 10.0


#: How far off the shipped threshold the site is also made to start, per verifier (see :func:`run`):
#: classic on the user-normalised distance, match-score on minus the logit. The bounds are the
#: kiosk's defaults (``kiosk.calibration.SCALE_DEFAULTS``).
START_OFFSETS: dict[str, float] = {"classic": 0.1, "match-score": 0.5, "fused": 0.5}


@dataclass
class Writer:
    loo: np.ndarray
    genuine: np.ndarray          # questioned genuine scores
    genuine_copy: np.ndarray     # ...and whether the copy check fires (decided apart from the threshold)
    skilled: np.ndarray
    skilled_copy: np.ndarray


@dataclass
class Site:
    writers: dict[str, Writer] = field(default_factory=dict)

    def op(self, verifier: SiteThreshold) -> dict[str, float | int]:
        """FRR and skilled FAR at the wrapper's threshold, by its policy (the copy check included)."""
        p = verifier.policy
        g = np.concatenate([w.genuine for w in self.writers.values()])
        gc = np.concatenate([w.genuine_copy for w in self.writers.values()])
        s = np.concatenate([w.skilled for w in self.writers.values()])
        sc = np.concatenate([w.skilled_copy for w in self.writers.values()])
        ok_g = (g <= p.threshold) & ~gc
        ok_s = (s <= p.threshold) & ~sc
        return {"threshold": round(p.threshold, 4), "frr": round(100 * float((~ok_g).mean()), 2),
                "skilled_far": round(100 * float(ok_s.mean()) if len(s) else 0.0, 2),
                "genuine": len(g), "forgeries": len(s)}


def score_site(dataset: Dataset[OnlineSample], verifier: PenVerifier) -> Site:
    site = Site()
    for w in sorted(dataset.writers):
        g = dataset.genuine(w)
        refs = [s for s in g if s.session in (None, 1)][:REFERENCES]
        if len(refs) < REFERENCES:
            continue
        ref_t = [s.trajectory for s in refs]
        rs = verifier.enroll(ref_t)
        gv = [verifier.verify(rs, q.trajectory) for q in [s for s in g if s not in refs][:QUESTIONED]]
        sv = [verifier.verify(rs, q.trajectory) for q in dataset.skilled(w)]
        site.writers[w] = Writer(loo_scores(verifier, ref_t), np.array([v.distance for v in gv]),
                                 np.array([v.too_similar for v in gv], dtype=bool),
                                 np.array([v.distance for v in sv]), np.array([v.too_similar for v in sv], dtype=bool))
    return site


def loo_offset(sites: list[Site], target: float) -> float:
    """Questioned-genuine quantile minus LOO quantile at ``1 - target``, writers weighted equally."""
    ws = [w for s in sites for w in s.writers.values() if len(w.genuine) and len(w.loo)]
    return weighted_quantile([w.genuine for w in ws], 1 - target) - weighted_quantile([w.loo for w in ws], 1 - target)


def score_sets(data_dir: Path, verifier: PenVerifier,
               say: Callable[[str], None]) -> tuple[dict[str, Site], dict[str, Site]]:
    """Each set's train + validate writers (for the LOO bias) and test writers (the site)."""
    t0 = time.perf_counter()
    fit: dict[str, Site] = {}
    test: dict[str, Site] = {}
    for name, folder, fmt in SETS:
        ds = load_online(Path(data_dir) / folder, fmt)
        fit[name] = score_site(pick_writers(ds, {"train", "validate"}, None), verifier)
        test[name] = score_site(pick_writers(ds, {"test"}, None), verifier)
        say(f"[{time.perf_counter() - t0:6.1f} s] {name}: {len(fit[name].writers)} fit, "
            f"{len(test[name].writers)} test writers")
    return fit, test


def run(data_dir: Path, say: Callable[[str], None] = lambda m: None, cache: Path | None = None,
        kind: str = "classic") -> dict:
    """The report. The site calibrates from the shipped threshold, and, as if the shipped one were
    off for this tablet by -/+ ``START_OFFSETS[kind]``, from those (its bounds move
    with it)."""
    t0 = time.perf_counter()
    scale, off = SCALE_DEFAULTS[kind], START_OFFSETS[kind]
    verifier = make_verifier(kind, ClassicConfig().threshold)   # the shipped [verifier] of that kind
    shipped = verifier.policy.threshold
    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            cached_kind, fit, test = pickle.load(fh)   # our own file of scores, written below
        if cached_kind != kind:
            raise SystemExit(f"{cache} holds {cached_kind} scores, not {kind}'s: use another --cache")
    else:
        fit, test = score_sets(data_dir, verifier, say)
        if cache is not None:
            with cache.open("wb") as fh:
                pickle.dump((kind, fit, test), fh)
    out: dict = {"verifier": kind, "shipped_threshold": shipped, "max_down": scale.max_down, "max_up": scale.max_up,
                 "min_customers": MIN_CUSTOMERS, "strength": STRENGTH, "references": REFERENCES,
                 "offset_all_sets": {str(t): round(loo_offset(list(fit.values()), t), 4) for t in TARGETS},
                 "sets": []}
    for name, _, _ in SETS:
        site = test[name]
        loo = {w: x.loo for w, x in site.writers.items()}
        entry: dict = {"left_out": name, "writers": len(site.writers), "rows": []}
        for start in (shipped + d for d in (0.0, -off, off)):
            at_start = SiteThreshold(verifier, start)
            for target in TARGETS:
                offset = loo_offset([fit[o] for o, _, _ in SETS if o != name], target)
                settings = CalibrationSettings(target, start - scale.max_down, start + scale.max_up,
                                               MIN_CUSTOMERS, STRENGTH, offset)
                cal = propose(loo, start, settings)
                no_offset = propose(loo, start, dataclasses.replace(settings, loo_offset=0.0))
                entry["rows"].append({
                    "start": round(start, 4), "target_frr": 100 * target, "offset": round(offset, 4),
                    "calibration": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cal.as_dict().items()},
                    "at_start": site.op(at_start),
                    "calibrated": site.op(SiteThreshold(verifier, cal.threshold)),
                    "without_offset": site.op(SiteThreshold(verifier, no_offset.threshold))})
        out["sets"].append(entry)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def format_table(report: dict) -> str:
    lines = ["| left-out set (test writers) | start threshold | target FRR | LOO offset | calibrated threshold | "
             "FRR / skilled FAR at start | FRR / skilled FAR calibrated | without offset: threshold, FRR / FAR |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report["sets"]:
        for r in s["rows"]:
            a, c, n = r["at_start"], r["calibrated"], r["without_offset"]
            why = "" if r["calibration"]["reason"] == "calibrated" else f" ({r['calibration']['reason']})"
            lines.append(f"| {s['left_out']} ({s['writers']}) | {r['start']:.2f} | {r['target_frr']:.0f} | "
                         f"{r['offset']:+.3f} | {c['threshold']:.3f}{why} | {a['frr']:.1f} / {a['skilled_far']:.1f} | "
                         f"{c['frr']:.1f} / {c['skilled_far']:.1f} | "
                         f"{n['threshold']:.3f}, {n['frr']:.1f} / {n['skilled_far']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data/online"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cache", type=Path, help="keep the scores here (a pickle of our own) to re-run the analysis")
    ap.add_argument("--kind", choices=sorted(START_OFFSETS), default="classic", help="the pen verifier ([verifier] kind)")
    args = ap.parse_args(argv)
    report = run(args.data, lambda m: print(m, file=sys.stderr, flush=True), args.cache, args.kind)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    print(f"({report['seconds']} s; LOO offset on all sets' train+validate writers: {report['offset_all_sets']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
