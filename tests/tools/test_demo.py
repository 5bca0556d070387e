"""``sigkiosk demo`` end to end, as a newcomer runs it: its own broker, collector and daemon, a
replayed pen, and a JSON summary whose numbers must agree with each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    # Its own TMPDIR: others may run a demo on this machine at the same time.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    exe = ROOT / ".venv" / "bin" / "sigkiosk"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    r = subprocess.run([*cmd, "demo", "--writers", "1", "--genuine", "7", "--forgeries", "3", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["sent"] == report["received"] > 0
    g, f = report["genuine"], report["forged"]
    paper = report["paper"]
    on_paper = sum(v for kind in paper.values() for v in kind.values())
    assert g["approved"] + g["suspicious"] + f["approved"] + f["suspicious"] + on_paper == report["received"]
    assert g["approved"] + g["suspicious"] == 2 and f["approved"] + f["suspicious"] == 3
    assert g["approved"] > g["suspicious"] and f["suspicious"] > f["approved"]
    # The customer also showed a genuine and an imitated paper signature to the camera.
    assert paper["genuine"]["approved"] + paper["genuine"]["suspicious"] == 1
    assert paper["forged"]["approved"] + paper["forged"]["suspicious"] == 1
    assert sum(1 for line in r.stdout.splitlines() if " paper " in line) == 2
    # One line per decision received, then the summary.
    lines = [line for line in r.stdout.splitlines() if "kiosk-demo/demo-branch" in line]
    assert len(lines) == report["received"]
    assert "Save (5/5)" in r.stdout and "summary:" in r.stdout
    # The enrollment was a staff action: the operator's login and the enrollment, started and
    # done, reached the central database as audit records naming operator and customer.
    audit = report["audit"]
    assert [(a["action"], a["outcome"]) for a in audit][:3] == [("login", "ok"), ("enroll", "started"), ("logout", "handed_to_customer")]
    done = [a for a in audit if a["action"] == "enroll" and a["outcome"] == "ok"]
    assert len(done) == 1 and done[0]["operator"] == "demo-staff" and done[0]["subject"].startswith("cust-")
    assert "staff action(s) audited" in r.stdout
    # It cleaned up after itself: no broker left, no working directory left.
    assert list(tmp.iterdir()) == []
    left = subprocess.run(["pgrep", "-f", str(tmp)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
