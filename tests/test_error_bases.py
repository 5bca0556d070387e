"""One exception base per layer, and names that say what happened (issue 18, item 3).

Capture (``firmware_host``) raises :class:`CaptureError`\\ s, verification (``models``)
:class:`VerificationError`\\ s, the appliance (``kiosk``) :class:`ApplianceError`\\ s, the central side
(``tools.central``, the broker, PKI, registry and rollout tools) :class:`CentralError`\\ s: a caller
catches a layer's failures with one type. No two exception classes of the project share a name, so
a name in a log or a traceback says which (there were two ``NoSignatureError``\\ s: the pen's, which
ended before any pen-down, and the picture's, without a signature in it, now
``NoSignatureInPictureError``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict

import pytest

from firmware_host.errors import CaptureError
from kiosk.errors import ApplianceError
from models.errors import VerificationError
from tools.central.errors import CentralError

CENTRAL_MODULES = ("tools.broker", "tools.pki", "tools.registry", "tools.rollout")
# Off-device tools that are not one of the four layers: their errors are the dataset readers'.
NOT_A_LAYER = ("tools.datasets",)


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


@pytest.mark.parametrize(("package", "base"), [("firmware_host", CaptureError), ("models", VerificationError),
                                               ("kiosk", ApplianceError)])
def test_every_error_of_a_layer_derives_from_its_base(package: str, base: type[Exception]) -> None:
    errors = _exceptions(_modules(package))
    assert len(errors) >= 8, f"too few exception classes found in {package}"
    assert [e.__qualname__ for e in errors if not issubclass(e, base)] == []


def test_every_error_of_the_central_side_derives_from_central_error() -> None:
    errors = _exceptions(_modules("tools.central") + list(CENTRAL_MODULES))
    assert len(errors) >= 6
    assert [e.__qualname__ for e in errors if not issubclass(e, CentralError)] == []


def test_no_two_exception_classes_share_a_name() -> None:
    modules = _modules("firmware_host") + _modules("kiosk") + _modules("models") + _modules("tools.central")
    modules += [*CENTRAL_MODULES, *_modules(NOT_A_LAYER[0])]
    where: dict[str, set[str]] = defaultdict(set)
    for e in _exceptions(modules):
        where[e.__name__].add(e.__module__)
    assert {n: sorted(m) for n, m in where.items() if len(m) > 1} == {}
