"""The evidence benchmark runs the whole appliance and reports its figures (printed, never
asserted on): here only that every evidence-on decision's evidence reached the collector."""

from __future__ import annotations

from tools.benchmarks import evidence as evidence_bench


def test_evidence_benchmark_reports_its_figures(capsys) -> None:  # type: ignore[no-untyped-def]
    assert evidence_bench.NAME == "evidence"
    figures = evidence_bench.run(quick=True)
    assert {"pen_up_to_published_p95_ms_evidence_off", "pen_up_to_published_p95_ms_evidence_on",
            "evidence_added_p95_ms", "evidence_build_seal_commit_p95_ms"} <= set(figures)
    assert figures["evidence_stored"] == figures["decisions"] / 2   # alternate customers, evidence on
    assert "p95 difference" in capsys.readouterr().out
