"""``tools.pad_to_photo``: pad references against photographed paper signatures, through the
kiosk's verifier (real renderer, photos, finder, OpenCV and the shipped int8 model)."""

from __future__ import annotations

import numpy as np

from models import PaperVerifier
from models.paper_reference import PAD_INK
from tools.pad_to_photo import REFERENCES, decide_writer
from tools.synth import make_population


def test_a_writer_is_decided_on_photos_the_same_way_twice() -> None:
    genuine, forged = make_population(n_writers=1, n_genuine=REFERENCES + 2, n_forgeries=2, seed=4)["001"]
    verifier = PaperVerifier()
    g, f, refused = decide_writer(verifier, genuine, forged, (1, 2))
    assert len(g) + len(f) + refused == 2 + 2 and refused == 0
    assert all(v.references == PAD_INK for v in g + f)
    again = decide_writer(verifier, genuine, forged, (1, 2))
    assert [v.distance for v in again[0] + again[1]] == [v.distance for v in g + f]
    other = decide_writer(verifier, genuine, forged, (1, 3))
    assert not np.allclose([v.distance for v in other[0]], [v.distance for v in g])

