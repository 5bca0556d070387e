"""The daemon split's dependency rules, read from the source: the screen server and the flows
never import the daemon (no import cycle), and ink is decoded only in firmware_host."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in ``path`` (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_screen_server_and_flows_do_not_import_the_daemon() -> None:
    for path in [ROOT / "kiosk/ui/server.py", *sorted((ROOT / "kiosk/flows").glob("*.py")),
                 ROOT / "kiosk/screen_events.py", ROOT / "kiosk/app.py"]:
        assert "kiosk.daemon" not in _imports(path), f"{path.relative_to(ROOT)} imports kiosk.daemon"


def test_the_appliance_layer_does_not_decode_evdev_codes() -> None:
    # Event codes mean something in firmware_host.assembler only; the kiosk gets pen frames.
    for path in sorted((ROOT / "kiosk").rglob("*.py")):
        assert "evdev" not in _imports(path), f"{path.relative_to(ROOT)} imports evdev"
