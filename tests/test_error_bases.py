"""One exception base per layer, and names that say what happened (issue 18, item 3).

Capture (``firmware_host``) raises :class:`CaptureError`\\ s, the appliance (``kiosk``)
:class:`ApplianceError`\\ s, the central side (``tools.central``, the broker, PKI, registry and
rollout tools) :class:`CentralError`\\ s: a caller catches a layer's failures with one type.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from firmware_host.errors import CaptureError
from kiosk.errors import ApplianceError
from tools.central.errors import CentralError

CENTRAL_MODULES = ("tools.broker", "tools.pki", "tools.registry", "tools.rollout")


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return names


def _exceptions(module_names: list[str] | tuple[str, ...]) -> list[type[BaseException]]:
    found = []
    for name in module_names:
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


@pytest.mark.parametrize(("package", "base"), [("firmware_host", CaptureError), ("kiosk", ApplianceError)])
def test_every_error_of_a_layer_derives_from_its_base(package: str, base: type[Exception]) -> None:
    errors = _exceptions(_modules(package))
    assert len(errors) >= 8, f"too few exception classes found in {package}"
    assert [e.__qualname__ for e in errors if not issubclass(e, base)] == []


def test_every_error_of_the_central_side_derives_from_central_error() -> None:
    errors = _exceptions(_modules("tools.central") + list(CENTRAL_MODULES))
    assert len(errors) >= 6
    assert [e.__qualname__ for e in errors if not issubclass(e, CentralError)] == []
