"""The pen verification benchmark runs and reports its figures (printed, never asserted on as
speeds: timings belong to benchmarks, not tests)."""

from __future__ import annotations

from tools.benchmarks import verify as verify_bench


def test_verify_benchmark_reports_its_figures(capsys) -> None:  # type: ignore[no-untyped-def]
    figures = verify_bench.run(quick=True)
    assert {"dtw_cells_per_s", "verify_5refs_p95_ms", "kiosk_verify_median_ms", "kiosk_verify_p95_ms",
            "kiosk_verify_best_median_ms", "kiosk_verify_best_p95_ms"} <= set(figures)
    assert all(isinstance(v, float) and v > 0 for v in figures.values())
    assert "each signature's fastest of 3" in capsys.readouterr().out
