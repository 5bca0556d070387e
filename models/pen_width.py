"""The pen width a customer's pad references are drawn at, to be compared with a paper question.

A pad leaves no ink: drawing its references as a 0.5 mm ballpoint (``models.render``) is a guess.
A cheque signed with a broader pen, or photographed by a camera whose blur and threshold thicken
every stroke, shows its strokes in another proportion to the signature than that guess. Stroke
width relative to the signature is what three hand features measure (``size`` in stroke widths,
``ink_density``, ``perimeter_area``), and part of what the CNN-LSTM sees in the 128×128 mask; against
references drawn from a pad it tells the pen and the camera apart, not the writer. So pad
references are drawn at the pen width that gives them the question's relative stroke width, measured
the one way the hand features measure it (``size``: log(ink box diagonal / stroke width),
``models.hand_features.stroke_width``). Paper references (scans, photos) are pictures of the
customer's own ink and are compared as they are.

The widths come from a fixed ladder (eighth-octave steps, 0.3 to 1.41 mm) so that references drawn
at one width serve later questions at that width (while the customer's drawing is kept:
``models.paper.MAX_KEPT_WIDTHS``). All functions are pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from models.hand_features import FEATURE_NAMES
from models.render import DEFAULT_PEN_WIDTH_MM

_STEPS_PER_OCTAVE = 8
#: Pen widths (mm) pad references may be drawn at: ``models.render.DEFAULT_PEN_WIDTH_MM`` (the
#: first drawing of a customer's references, from which a question's width is predicted) times
#: 2^(k/8), k = -6..12.
PEN_WIDTHS_MM: tuple[float, ...] = tuple(DEFAULT_PEN_WIDTH_MM * 2.0 ** (k / _STEPS_PER_OCTAVE) for k in range(-6, 13))
#: The ladder's index of the default width.
DEFAULT_RUNG = 6
_SIZE = FEATURE_NAMES.index("size")


def matching_rung(drawn: Mapping[int, np.ndarray], question: np.ndarray) -> int:
    """The index in :data:`PEN_WIDTHS_MM` of the pen that draws the references at the question's
    relative stroke width, predicted from the drawings made so far. ``drawn``: rung -> the hand
    features of the references drawn at it (one row each); ``question``: the question's.

    Between the two drawn rungs whose references' median ``size`` is nearest the question's,
    ``size`` is taken as linear in the log of the pen width (it falls as the pen widens, a little
    more slowly than the width grows: the anti-aliased edge and the pressure's thinner strokes do
    not widen with it); from one drawing, as falling by the log of the widths' ratio. The result
    is rounded to the nearest rung and kept on the ladder. Drawing that rung and asking again
    (:meth:`models.paper.PaperVerifier.verify` does) corrects the prediction until it names a
    rung already drawn."""
    if not drawn:
        raise ValueError("matching_rung needs the references drawn at one rung at least")
    sizes = {}
    for k, features in drawn.items():
        column = np.atleast_2d(np.asarray(features, dtype=np.float64))[:, _SIZE]
        if not 0 <= k < len(PEN_WIDTHS_MM) or not column.size or not np.all(np.isfinite(column)):
            raise ValueError(f"matching_rung: rung {k} is not on the ladder or its features are not finite")
        sizes[k] = float(np.median(column))
    q = float(np.asarray(question, dtype=np.float64)[_SIZE])
    if not math.isfinite(q):
        raise ValueError("matching_rung: the question's features are not finite")
    near = sorted(sizes, key=lambda k: abs(sizes[k] - q))
    a = near[0]
    slope = -1.0
    if len(near) > 1:
        b = near[1]
        fitted = (sizes[b] - sizes[a]) / (_log_width(b) - _log_width(a))
        if fitted < 0:          # size falls as the pen widens; otherwise the two are too alike to tell
            slope = fitted
    log_width = _log_width(a) + (q - sizes[a]) / slope
    k = round((log_width - _log_width(0)) * _STEPS_PER_OCTAVE / math.log(2.0))
    return min(max(k, 0), len(PEN_WIDTHS_MM) - 1)


def _log_width(rung: int) -> float:
    return math.log(PEN_WIDTHS_MM[rung])
