"""``[calibration]``: the kiosk moves its threshold towards a target FRR from its own customers.

The science is ``models.calibration``: each enrolled customer's references are questioned
against the customer's other references (leave-one-out, genuine only), and the quantile at the
target FRR, corrected for the LOO bias, shrunk towards the shipped threshold by the number of
customers and clamped to the bounds here, becomes the site's threshold.

Here: the scores are kept per customer in ``STATE_DIR/calibration.json`` (keyed by the template
file's keyed name, never the customer reference; a few floats per customer, not biometric
data), for the active model only (a model switch starts them again: the scale of another model's
scores is another). They are computed when a customer's enrollment ends and, for customers
enrolled before, the first time their references are built after a start or a model switch
(``ReferenceCache``'s ``on_built``). The active threshold is applied by wrapping the verifier in
``models.calibration.SiteThreshold``; reference sets are never rebuilt for it.

Every move is logged (``calibration_moved``) and reported centrally as an audit record (action
``calibration``; operator ``kiosk`` for a move the kiosk made, the operator for a revert or resume;
``outcome`` says from which threshold to which); the threshold in force goes into the kiosk's status
report (``site_threshold``). It is reversible: ``Daemon.revert_calibration`` (a logged-in operator
at the staff view, ``POST /api/staff/calibration``, or the signed central command ``sigkiosk admin
calibration``, operator ``central:ADMIN``) restores the shipped threshold and holds it, keeping the
threshold it had as ``previous`` (``resume_calibration`` lets it move again); ``enabled = false``
(the default) runs the shipped threshold with no wrapper at all.

Why off by default: genuine scores say nothing about forgeries, so the move trades FAR for FRR
within bounds the bank must choose for its risk. Measured (README, "Site self-calibration"): from
a threshold 0.1 too strict or too lenient, sites of 17-19 customers land within 0.08 of the same
threshold and FRR at or under a 3 % target, while skilled FAR goes wherever that threshold puts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.errors import CalibrationNotSaved
from kiosk.profiles import PROBABILITY_KINDS
from kiosk.templates import StoredTemplate, TemplateStore, atomic_write
from models.calibration import Calibration, CalibrationSettings, SiteThreshold, loo_scores, propose
from models.verification import PenVerifier

log = logging.getLogger(__name__)

STATE_FILE = "calibration.json"
#: The operator name of a move the kiosk made itself.
KIOSK_OPERATOR = "kiosk"

#: Measured LOO bias of the classic verifier at K = 5 (README, "Site self-calibration"): the
#: questioned genuine's quantile minus the LOO scores' at targets 2, 3 and 5 % was +0.027, +0.030
#: and +0.013 on the train + validate writers of the four shared sets with two warping paths, the
#: prior at strength 6, the direction held at rests, jagged signatures smoothed and the DTW band
#: of 0.2 (``tools/site_calibration.py``; with the band of 0.15 +0.050, +0.028, +0.013; before
#: the smoothing +0.059, +0.030, +0.018; before the
#: direction was held +0.056, +0.032, +0.015; at strength 4 +0.044, +0.052, +0.035;
#: one path: +0.036, +0.029, +0.014 at strength 4, shipped 0.03, and +0.036, +0.042, +0.040 at
#: strength 2, shipped 0.04).
CLASSIC_LOO_OFFSET = 0.03
#: The same for the match score (minus its logit), measured the same way at the default target
#: (3 %) with the shipped match_score.json: +0.333 (``tools/site_calibration.py --kind
#: match-score``, the DTW band of 0.2; with the band of 0.15 +0.311, shipped 0.31; before jagged
#: signatures were smoothed +0.329, shipped 0.33; before the direction
#: was held at rests +0.342, shipped 0.34; two warping paths at prior strength 4 +0.555; one path
#: +0.291, and +0.408 at strength 2; the ten-feature model shipped before 2026-11-27 +0.377). On
#: this scale it depends on the target (+0.30 at 2 %, +0.15 at 5 %): a bank that changes
#: target_frr should set loo_offset with it.
MATCH_LOO_OFFSET = 0.33
#: The same for the fused score (the match score with the learned distance; minus its logit): its
#: learned weight, chosen on the cross-device protocol, is 0, so it is the match score's own
#: (``tools/site_calibration.py --kind fused``: +0.333, row for row the match score's table).
#: (With the weight of 0.30 shipped before it was +0.255, with one warping path.) A fused score
#: that weighs the student again needs this measured again.
FUSED_LOO_OFFSET = 0.33


@dataclass(frozen=True)
class ScaleDefaults:
    """``[calibration]``'s defaults on one verifier's score scale."""

    max_down: float
    max_up: float
    loo_offset: float


#: Per ``[verifier] kind``. classic: the user-normalised distance. match-score: minus the logit of
#: the genuine probability; its bounds are a policy choice (about 1 in log-odds either way: the
#: shipped probability threshold 0.399 may move within 0.20 (looser) .. 0.62 (stricter)), its LOO
#: bias measured like the classic one (README "Site self-calibration"). fused: on the same scale (its
#: model is the match score with the learned distance mixed in), the same bounds, its own LOO bias.
SCALE_DEFAULTS: dict[str, ScaleDefaults] = {
    "classic": ScaleDefaults(0.10, 0.15, CLASSIC_LOO_OFFSET),
    "match-score": ScaleDefaults(0.9, 1.0, MATCH_LOO_OFFSET),
    "fused": ScaleDefaults(0.9, 1.0, FUSED_LOO_OFFSET),
}


@dataclass(frozen=True)
class CalibrationConfig:
    """``[calibration]``. Bounds are ``shipped - max_down .. shipped + max_up`` in the verifier's own
    score units; ``min_customers`` enrolled before it moves at all; ``strength``: how many
    customers' worth of trust the shipped threshold keeps; ``loo_offset``: the LOO bias. The three
    scaled values are None until the config fills them from :data:`SCALE_DEFAULTS` for its
    ``[verifier] kind`` (``kiosk.config``): one number cannot suit a distance and a logit."""

    enabled: bool = False
    target_frr: float = 0.03
    max_down: float | None = None
    max_up: float | None = None
    min_customers: int = 10
    strength: float = 10.0
    loo_offset: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target_frr < 0.5:
            raise ValueError(f"target_frr must be in (0, 0.5), got {self.target_frr}")
        if (self.max_down is not None and self.max_down < 0) or (self.max_up is not None and self.max_up < 0):
            raise ValueError("max_down and max_up must be >= 0")
        if self.min_customers < 1 or self.strength < 0:
            raise ValueError("min_customers must be >= 1 and strength >= 0")

    def settings(self, shipped: float) -> CalibrationSettings:
        if self.max_down is None or self.max_up is None or self.loo_offset is None:
            raise ValueError("[calibration] max_down, max_up and loo_offset are not set for this verifier")
        return CalibrationSettings(self.target_frr, shipped - self.max_down, shipped + self.max_up,
                                   self.min_customers, self.strength, self.loo_offset)


#: ``report(outcome, operator, mode)``: the daemon's audit (sealed for the central server, logged).
#: (outcome, operator, mode, required): ``required`` raises if the record cannot be stored.
Report = Callable[[str, str, str, bool], object]
#: ``listener(threshold, shipped, held)``: the active threshold now (after every decision on it,
#: moved or not); the daemon hands it to the link's status report.
Listener = Callable[[float, float, bool], None]


def _model_key(verifier: PenVerifier) -> str:
    versions = json.dumps(verifier.model_versions(), sort_keys=True)
    return hashlib.sha256(f"{verifier.name}\0{versions}".encode()).hexdigest()[:16]


class SiteCalibration:
    """The kiosk's calibration state (see the module docstring). Thread-safe."""

    def __init__(self, config: CalibrationConfig, state_dir: Path, store: TemplateStore, report: Report,
                 listener: Listener | None = None) -> None:
        self.config = config
        self._listener = listener
        self.path = Path(state_dir) / STATE_FILE
        self.store = store
        self._report = report
        self._lock = threading.RLock()
        self._verifier: SiteThreshold | None = None
        self._model = ""
        self._held = False
        self._previous: float | None = None
        self._scores: dict[str, dict[str, Any]] = {}
        self._saved: float | None = None        # the threshold last saved (and so in force)
        #: The threshold the audit trail last heard of: behind ``_saved`` when a move's report was
        #: lost (a power cut after the save, an outbox error); the next start reports it again.
        self._reported: float | None = None
        self._saved_bytes = b""                 # what the state file holds (unchanged: not rewritten)
        self._moved_ms: int | None = None       # when the threshold last changed (wall clock)
        self.last: Calibration | None = None
        self._load()

    # -- state ------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
            data = json.loads(raw)
            self._model = str(data["model"])
            self._held = bool(data["held"])
            self._previous = None if data.get("previous") is None else float(data["previous"])
            self._saved = None if data.get("threshold") is None else float(data["threshold"])
            # A file from before "reported" was kept: its threshold was reported when saved.
            self._reported = self._saved if "reported" not in data else (
                None if data["reported"] is None else float(data["reported"]))
            self._moved_ms = None if data.get("moved_ms") is None else int(data["moved_ms"])
            self._scores = {str(k): {"v": int(v["v"]), "s": [float(x) for x in v["s"]]}
                            for k, v in dict(data["customers"]).items()}
            self._saved_bytes = raw   # what _save would write for it: not written again
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            # Only derived scores: start again rather than refuse to serve.
            log.error("calibration state %s unreadable (%s); starting again from the shipped threshold", self.path, exc,
                      extra={"event": "calibration_state_reset"})
            self._scores = {}

    def _save(self) -> None:
        """Write the state (``OSError`` on a full disk), unless the file already holds it: every
        start applied the calibration, and rewrote the file, on an SD card (and a full disk
        stopped the daemon starting; found by a review)."""
        data = {"model": self._model, "held": self._held, "previous": self._previous, "threshold": self._saved,
                "reported": self._reported, "moved_ms": self._moved_ms, "customers": self._scores}
        raw = json.dumps(data, sort_keys=True).encode()
        if raw == self._saved_bytes:
            return
        atomic_write(self.path, raw)
        self._saved_bytes = raw

    # -- hooks --------------------------------------------------------------------------------
    def attach(self, verifier: SiteThreshold) -> None:
        """Start, or the model changed: scores of another model are dropped, the threshold recomputed."""
        with self._lock:
            self._verifier = verifier
            key = _model_key(verifier.inner)
            if key != self._model:
                if self._scores:
                    log.info("calibration: another model; its %d customers' scores dropped", len(self._scores),
                             extra={"event": "calibration_model_changed"})
                self._model, self._scores, self._previous, self._saved, self._moved_ms = key, {}, None, None, None
                self._reported = None
            # Customers deleted while the calibration was off, or just before a power cut (the
            # template's delete is durable before this file is saved): their scores must not move
            # the threshold (they did, to its bound, from an empty store; found by a review).
            gone = set(self._scores) - self.store.file_ids()
            if gone:
                log.info("calibration: %d customer(s) no longer on file; their scores dropped", len(gone),
                         extra={"event": "calibration_customers_gone"})
                for fid in gone:
                    del self._scores[fid]
            self._apply(KIOSK_OPERATOR, "auto", at_start=True)

    def built(self, customer: str, stored: StoredTemplate, verifier: PenVerifier) -> None:
        """A customer's reference set was built (``ReferenceCache``): score them if not done yet."""
        with self._lock:
            if self._verifier is None or verifier is not self._verifier:
                return
            fid = self.store.file_id(customer)
            have = self._scores.get(fid)
            if have is not None and have["v"] == stored.version:
                return
            self._score(fid, stored)
            self._apply(KIOSK_OPERATOR, "auto")

    def customer_changed(self, customer: str) -> None:
        """An enrollment or a delete ended: score the customer's references again (or drop them)."""
        with self._lock:
            if self._verifier is None:
                return
            fid = self.store.file_id(customer)
            stored = self.store.get(customer)
            if stored is None:
                self._scores.pop(fid, None)
            else:
                self._score(fid, stored)
            self._apply(KIOSK_OPERATOR, "auto")

    def _score(self, fid: str, stored: StoredTemplate) -> None:
        assert self._verifier is not None
        s = loo_scores(self._verifier.inner, stored.references)
        if len(s):
            self._scores[fid] = {"v": stored.version, "s": [round(float(x), 6) for x in s]}
        else:
            self._scores.pop(fid, None)

    # -- staff ----------------------------------------------------------------------------------
    def revert(self, operator: str) -> None:
        """Back to the shipped threshold, held there; the threshold it had is kept as ``previous``.
        Recorded before it counts: if the audit record cannot be stored, nothing changes."""
        self._staff_move(operator, "revert", held=True)

    def resume(self, operator: str) -> None:
        """Moving again (recorded before it counts, like ``revert``)."""
        self._staff_move(operator, "resume", held=False)

    def _staff_move(self, operator: str, mode: str, *, held: bool) -> None:
        with self._lock:
            was = self._held
            self._held = held
            try:
                self._apply(operator, mode, force_report=True, required=True)
            except BaseException:
                self._held = was
                raise

    # -- the move ---------------------------------------------------------------------------------
    def _apply(self, operator: str, mode: str, *, force_report: bool = False, required: bool = False,
               at_start: bool = False) -> None:
        """Decide the threshold, save it, put it in force, report it. ``required`` (a person's
        revert or resume): the audit record is stored first, and if it cannot be, the error
        propagates before anything has changed; if the new state then cannot be saved, nothing
        changes either (``CalibrationNotSaved``) and a second record says it failed. The kiosk's own
        move is saved, then in force, then reported; a full disk leaves the threshold as it was
        (logged), and a move whose report was lost is reported again at the next start
        (``at_start``; only then: a bench kiosk, whose reports go nowhere, would repeat it at every
        enrollment)."""
        v = self._verifier
        assert v is not None
        # Compared with what was last saved, not with the fresh wrapper's shipped threshold: a
        # restart that lands where the kiosk was is not a move.
        before = self._saved if self._saved is not None else v.threshold
        # None: no move reported on this model yet, so the trail knows the shipped threshold.
        heard = self._reported if self._reported is not None else v.shipped
        scores = {k: np.array(e["s"]) for k, e in self._scores.items()}
        cal = propose(scores, v.shipped, self.config.settings(v.shipped))
        after = v.shipped if self._held else cal.threshold
        # In the scale the staff screen and the profiles use: "p" marks a probability threshold.
        mark = "p " if self._probability() else ""
        outcome = (f"{mark}{self._shown(heard):.4f}->{self._shown(after):.4f} n={cal.customers}"
                   f"{' held' if self._held else ''}")
        if required:
            self._report(outcome, operator, mode, True)
        kept = (self._previous, self._moved_ms, self._saved, self._reported)
        if after != before:
            self._previous = before
            self._moved_ms = int(time.time() * 1000)
        self._saved = after
        if required:
            self._reported = after
        try:
            self._save()
        except OSError as exc:
            self._previous, self._moved_ms, self._saved, self._reported = kept
            if required:
                self._report(f"failed: not saved ({exc.strerror or exc})"[:64], operator, mode, False)
                raise CalibrationNotSaved(f"the calibration could not be saved ({exc.strerror or exc}): "
                                          "nothing changed") from None
            # The one saved (at a start, the fresh wrapper's is the shipped one), within today's
            # bounds: a bank that narrowed them, then a start on a full disk, left a threshold
            # outside them in force (found by a review).
            bounds = self.config.settings(v.shipped)
            kept_threshold = min(max(before, bounds.lower), bounds.upper)
            log.error("calibration: its state could not be saved (%s); the threshold stays %.4f", exc, kept_threshold,
                      extra={"event": "calibration_not_saved"})
            v.set_threshold(kept_threshold)
            return
        self.last = cal
        v.set_threshold(after)
        if self._listener is not None:
            self._listener(after, v.shipped, self._held)
        if not (force_report or after != before or (at_start and after != heard)):
            return
        why = "held at shipped" if self._held else cal.reason
        log.info("calibration: threshold %.4f -> %.4f (%s, %d customers, %d scores)", heard, after, why,
                 cal.customers, cal.scores,
                 extra={"event": "calibration_moved", "threshold": after, "previous": heard, "shipped": v.shipped,
                        "reason": why, "customers": cal.customers, "operator": operator})
        if not required and self._report(outcome, operator, mode, False) is not None:
            self._reported = after
            try:
                self._save()
            except OSError:   # reported again at the next start: a duplicate record, nothing lost
                log.warning("calibration: could not note that the move was reported", extra={
                    "event": "calibration_not_saved"})

    def _probability(self) -> bool:
        # A verifier that decides on a probability is shown in probabilities (the scale its
        # profiles are written in), not in minus logits; its bounds then run the other way.
        return self._verifier is not None and self._verifier.name in PROBABILITY_KINDS

    def _shown(self, x: float) -> float:
        return 1.0 / (1.0 + math.exp(x)) if self._probability() else x

    def status(self) -> dict[str, object]:
        """What the staff view shows: thresholds, bounds (``lower``/``upper``, None before the
        verifier is attached), the customers it rests on, held or moving, and ``moved_ms`` (when the
        threshold last changed, epoch ms; None: never on this model)."""
        with self._lock:
            v, cal = self._verifier, self.last
            settings = self.config.settings(v.shipped) if v else None
            prob = self._probability()

            def shown(x: float | None) -> float | None:
                return None if x is None else self._shown(x)

            lower, upper = (settings.lower, settings.upper) if settings else (None, None)
            if prob:
                lower, upper = upper, lower
            return {"scale": "probability" if prob else "distance",
                    "threshold": shown(v.threshold if v else None), "shipped": shown(v.shipped if v else None),
                    "previous": shown(self._previous), "held": self._held,
                    "customers": cal.customers if cal else 0,
                    "min_customers": self.config.min_customers,
                    "reason": "held" if self._held else (cal.reason if cal else None),
                    "target_frr": self.config.target_frr,
                    "lower": shown(lower), "upper": shown(upper),
                    "moved_ms": self._moved_ms}


__all__ = ["CalibrationConfig", "SiteCalibration"]
