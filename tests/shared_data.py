"""Where the research-licensed shared data lives: ``../shared/data`` beside the project.

Tests that need it call :func:`shared_data`. CI always has it (a fresh clone with shared/ beside
it), so there a missing folder fails the test; on a developer's machine without the data the test
is skipped with the reason. ``SIGKIOSK_SHARED_DATA`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SIGKIOSK_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_data(sub: str = "") -> Path:
    path = ROOT / sub
    if not path.is_dir():
        message = f"shared data not found at {path} (set SIGKIOSK_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)
    return path
