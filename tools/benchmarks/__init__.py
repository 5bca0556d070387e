"""Benchmarks that print figures: ``sigkiosk bench [NAME ...]``.

Each module has ``NAME`` and ``run(quick: bool = False) -> dict[str, float]``; it prints its own
figures and returns them for ``--json``.
"""

BENCHMARK_MODULES: tuple[str, ...] = (
    "tools.benchmarks.verify",
    "tools.benchmarks.learned",
    "tools.benchmarks.offline",
    "tools.benchmarks.capture",
    "tools.benchmarks.camera",
    "tools.benchmarks.link",
    "tools.benchmarks.daemon",
    "tools.benchmarks.evidence",
    "tools.benchmarks.update",
)
