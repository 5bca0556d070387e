"""Shared pytest configuration."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest

# Fixtures of the secure link (PKI, mosquitto brokers, PostgreSQL): tests/fixtures_link.py.
# Fixtures of the model updates (groups, admin keys, bundles, kiosks): tests/fixtures_update.py.
pytest_plugins = ["fixtures_link", "fixtures_update"]

# The `integration` marker (pyproject.toml) is what `pytest -m "not integration"` leaves out: the
# tests that need a real service or something slow. A test is one when
# - it uses one of these fixtures (a mosquitto broker, a PostgreSQL server), or is parametrized
#   over PostgreSQL;
INTEGRATION_FIXTURES = frozenset({"mqtt_broker", "own_broker", "update_broker", "pg_server", "tiny_db"})
# - its code, its fixtures' code or the code of the module's functions they call names one of these:
#   a broker, a whole daemon or kiosk process, Chromium, a subprocess, the shared data sets;
INTEGRATION_NAMES = frozenset({"start_broker", "Mosquitto", "start_daemon", "Daemon", "start_kiosk",
                               "sync_playwright", "subprocess", "shared_data"})
# - or its module is one of these, with why.
INTEGRATION_MODULES = {
    "tests/tools/central/test_central_bench.py": "the link benchmark: brokers and kiosks",
    "tests/tools/central/test_evidence_bench.py": "the evidence benchmark: the whole demo environment",
    "tests/tools/test_eval_cli.py": "evaluation CLI runs over generated data sets",
    "tests/tools/test_fusion_fit.py": "fitting the fusion over generated data sets",
    "tests/tools/test_train_quick.py": "pen training (TensorFlow)",
    "tests/tools/test_train_offline_quick.py": "image training (TensorFlow)",
    "tests/tools/test_cross_device.py": "the shared data sets (found at import)",
    "tests/tools/test_eval_offline.py": "the shared data sets (found at import)",
    "tests/tools/datasets/test_reader_real_data.py": "the shared data sets (found at import)",
}


def _names(code: types.CodeType) -> Iterator[str]:
    """The global and attribute names a function's code uses, inner functions and lambdas included."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _uses_integration_names(func: object, module_globals: dict[str, object], depth: int = 2) -> bool:
    code = getattr(func, "__code__", None)
    if code is None:
        return False
    names = set(_names(code))
    if names & INTEGRATION_NAMES:
        return True
    if depth == 0:
        return False
    # The module's own helpers that the test calls (``_start(...)``, ``_admin_cli(...)``).
    return any(_uses_integration_names(module_globals[n], module_globals, depth - 1)
               for n in names if isinstance(module_globals.get(n), types.FunctionType))


def _is_integration(item: pytest.Function) -> bool:
    fixtures = set(item.fixturenames)
    if fixtures & INTEGRATION_FIXTURES:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(isinstance(v, str) and v == "postgresql" for v in callspec.params.values()):
        return True
    root = item.config.rootpath
    if item.path.is_relative_to(root) and item.path.relative_to(root).as_posix() in INTEGRATION_MODULES:
        return True
    funcs: list[object] = [item.function]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        funcs += [d.func for d in defs if d.baseid.startswith(item.nodeid.split("::")[0]) or d.baseid == ""]
    module_globals = vars(item.module) if item.module is not None else {}
    return any(_uses_integration_names(f, module_globals) for f in funcs)


# The modules whose module fixtures take minutes (a training run, the cross-device protocol, the demo),
# longest first. `make test` runs the suite on every core, one module per worker at a time in
# collection order (pytest-xdist --dist loadfile --no-loadscope-reorder): started last, one of these
# would run alone at the end while the other workers idle.
LONG_MODULES_FIRST = (
    "tests/tools/test_train_quick.py",
    "tests/tools/test_train_offline_quick.py",
    "tests/tools/test_cross_device.py",
    "tests/tools/test_demo.py",
)


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and _is_integration(item):
            item.add_marker(pytest.mark.integration)
    rank = {m: i for i, m in enumerate(LONG_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item), len(rank)))  # stable: the rest keep their order
