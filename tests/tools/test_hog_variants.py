"""The comparison that chose the gradient histograms: every variant is a distinct setting of the
kiosk's own descriptor, the shipped one among them; run on real scans (a few train and validate
writers of each set here; the README's table is the full run), it reports each case's skilled
EER, the variant's own prior and the sum the choice ranks by, and the writers it read: never a
test writer."""

from __future__ import annotations

import json
from pathlib import Path

from models.hog import SHIPPED
from tests.shared_data import shared_data
from tools.datasets.types import writer_split
from tools.hog_variants import CASES, VARIANTS, main

OFFLINE = shared_data("offline")


def test_every_variant_is_its_own_setting_and_the_shipped_one_is_there() -> None:
    configs = list(VARIANTS.values())
    assert len(set(configs)) == len(configs)
    assert [name for name, c in VARIANTS.items() if c == SHIPPED] == ["turns ±2, interpolated votes, 7-px cells (shipped)"]


def test_a_short_run_on_real_scans(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "variants.json"
    before, shipped = "box, u9 (shipped before)", "turns ±2, interpolated votes, 7-px cells (shipped)"
    assert main(["--data", str(OFFLINE), "--max-writers", "3", "--only", before, shipped, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["variants"]) == [before, shipped]
    for row in report["variants"].values():
        cases = row["cases"]
        assert list(cases) == [c for c, *_ in CASES]
        assert all(0.0 <= c["eer_global"] <= 100.0 and c["genuine_trials"] > 0 for c in cases.values())
        assert row["sum"] == round(sum(c["eer_global"] for c in cases.values()), 3)
        assert 0.0 < row["prior"][0] <= row["prior"][1] < 2.0
    assert report["variants"][shipped]["config"]["bins"] == 18 and report["variants"][shipped]["config"]["interpolate"]
    assert shipped in capsys.readouterr().out
    # Train and validate writers only, of both kinds on the cross-media set (experiment, control).
    writers = report["writers"]
    assert set(writers) == {"dutch", "cross-media"} and all(writers.values())
    assert not [w for ws in writers.values() for w in ws if writer_split(w) == "test"]
    assert {w[0] for w in writers["cross-media"]} == {"e", "c"}
