"""The link benchmark runs and reports its figures (numbers are printed, never asserted on)."""

from __future__ import annotations

from tools.benchmarks import link as link_bench


def test_link_benchmark_reports_its_figures(capsys) -> None:  # type: ignore[no-untyped-def]
    assert link_bench.NAME == "link"
    figures = link_bench.run(quick=True)
    assert {"seal_us_median", "seal_and_commit_us_median", "collector_decisions_per_s"} <= set(figures)
    assert all(isinstance(v, float) and v > 0 for v in figures.values())
    assert "decisions/s" in capsys.readouterr().out
