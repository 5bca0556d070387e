"""Choosing a paper fusion's parts by holding each writer out (``tools.fusion_cv``), on constructed
scores whose answer is known: one part separates genuine from forged for every writer; another moves
each writer's forgeries away from their genuine signatures, but half the writers one way and half
the other, so that what it says about one writer is wrong about the next."""

from __future__ import annotations

import numpy as np
import pytest

from tools.evaluate import Scores
from tools.fusion_cv import TIE, choose_fusion, held_out, person


def _scores(writers: int = 8, seed: int = 0) -> dict[str, Scores]:
    rng = np.random.default_rng(seed)
    good, quirk = Scores(), Scores()
    for i in range(writers):
        w = f"w{i:02d}"
        # A part that tells genuine (about 1) from forged (about 2) for everyone.
        for kind, centre, n in (("genuine", 1.0, 40), ("skilled", 2.0, 40), ("random", 3.0, 40)):
            for v in np.exp(rng.normal(np.log(centre), 0.35, n)):
                good.add(kind, w, float(v))
        # A part that is pure noise, except that each writer's forgeries sit on one side of the
        # genuine ones by a writer-specific offset: half the writers one way, half the other.
        sign = 1.0 if i % 2 else -1.0
        for kind, shift, n in (("genuine", 0.0, 40), ("skilled", sign * 0.8, 40), ("random", 0.0, 40)):
            for v in np.exp(rng.normal(shift, 0.5, n)):
                quirk.add(kind, w, float(v))
    return {"good": good, "quirk": quirk}


def test_a_part_that_does_not_carry_over_between_writers_is_left_out() -> None:
    parts = _scores()
    choice = choose_fusion(parts)
    assert choice.chosen.names == ("good",)
    assert choice.writers == 8
    # Every part is named, in order, and the one left out weighs 0: the kiosk's fusion keeps its form.
    assert choice.fusion.names == ("good", "quirk")
    assert choice.fusion.weights[0] < 0 and choice.fusion.weights[1] == 0.0
    figures = {h.names: h for h in choice.candidates}
    assert set(figures) == {("good",), ("quirk",), ("good", "quirk")}
    assert figures[("quirk",)].eer > 30.0 and figures[("good",)].eer < 20.0
    record = choice.record()
    assert record["chosen"] == ["good"] and set(record["held_out_eer_percent"]) == {"good", "quirk", "good+quirk"}


def test_equal_figures_go_to_fewer_parts() -> None:
    """Two copies of one part: fused, they score what one scores; the one part wins the tie."""
    good = _scores()["good"]
    choice = choose_fusion({"a": good, "b": good})
    assert len(choice.chosen.names) == 1
    both = next(h for h in choice.candidates if len(h.names) == 2)
    assert both.eer >= choice.chosen.eer - TIE


def test_a_cross_media_writer_is_held_out_with_all_their_names() -> None:
    assert person("e012/name03") == "e012" and person("039") == "039"
    parts = _scores(writers=4)
    renamed: dict[str, Scores] = {}
    for name, s in parts.items():
        out = Scores()
        for kind in ("genuine", "skilled", "random"):
            # Each writer's trials split between two names: still 4 writers, not 8.
            for w, vals in getattr(s, kind).items():
                half = len(vals) // 2
                getattr(out, kind)[f"{w}/a"], getattr(out, kind)[f"{w}/b"] = vals[:half], vals[half:]
        renamed[name] = out
    assert choose_fusion(renamed).writers == 4
    assert held_out(renamed, ("good",)).eer == pytest.approx(held_out(parts, ("good",)).eer, abs=0.01)


def test_one_writer_cannot_be_held_out() -> None:
    with pytest.raises(ValueError, match="two writers"):
        held_out(_scores(writers=1), ("good",))
