"""The attacks of issue 15, each against the real part it targets.

The daemon's test helpers (config in a temp dir, replayed pen, synthetic writers) live beside the
daemon tests; the attacks on the kiosk reuse them rather than a second copy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from disk_helpers import tiny_tmpfs

_KIOSK_TESTS = str(Path(__file__).resolve().parents[1] / "kiosk")
if _KIOSK_TESTS not in sys.path:
    sys.path.insert(0, _KIOSK_TESTS)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system of its own (real tmpfs), to fill to the last byte."""
    with tiny_tmpfs(tmp_path / "tiny") as mnt:
        yield mnt
