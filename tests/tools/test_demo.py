"""``sigkiosk demo`` end to end, as a newcomer runs it: its own broker, collector and daemon, a
replayed pen, and a JSON summary whose numbers must agree with each other. Then the README's
"Audit a decision" walkthrough on what ``--keep`` left, every command run as a user types it:
queries and exports, the web page behind a login, one pen and one paper case exported for an
examiner, and the evidence purged after its retention period."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cv2
import numpy as np
import pytest
from iso19794_7_reader import read as read_iso

from tools.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "sigkiosk"
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "tools.cli"]
PASSWORD = "correct horse battery"


@dataclass
class Kept:
    """One ``sigkiosk demo --keep demo`` run in ``cwd``: its output, report and kept directory."""

    cwd: Path
    tmp: Path
    stdout: str
    report: dict[str, Any]

    def sigkiosk(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*CMD, *args], cwd=self.cwd, capture_output=True, text=True, timeout=60, input=stdin,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        if ok:
            assert r.returncode == 0, r.stdout + r.stderr
        return r


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Kept:
    cwd = tmp_path_factory.mktemp("walkthrough")
    # Its own TMPDIR: others may run a demo on this machine at the same time.
    tmp = cwd / "tmp"
    tmp.mkdir()
    # --keep with a relative path, as a user types it (the kiosk's config must not resolve it
    # against its own folder).
    r = subprocess.run([*CMD, "demo", "--writers", "1", "--genuine", "7", "--forgeries", "3", "--json", "demo.json",
                        "--keep", "demo"], cwd=cwd, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    return Kept(cwd, tmp, r.stdout, json.loads((cwd / "demo.json").read_text()))


@pytest.mark.integration
def test_demo_end_to_end(kept: Kept) -> None:
    report, stdout = kept.report, kept.stdout
    assert report["sent"] == report["received"] > 0
    assert report["kiosk_outbox"] == {}   # every decision and staff action receipted by the collector
    g, f = report["genuine"], report["forged"]
    paper = report["paper"]
    on_paper = sum(v for kind in paper.values() for v in kind.values())
    assert g["approved"] + g["suspicious"] + f["approved"] + f["suspicious"] + on_paper == report["received"]
    assert g["approved"] + g["suspicious"] == 2 and f["approved"] + f["suspicious"] == 3
    assert g["approved"] > g["suspicious"] and f["suspicious"] > f["approved"]
    # The customer also showed a genuine and an imitated paper signature to the camera.
    assert paper["genuine"]["approved"] + paper["genuine"]["suspicious"] == 1
    assert paper["forged"]["approved"] + paper["forged"]["suspicious"] == 1
    assert sum(1 for line in stdout.splitlines() if " paper " in line) == 2
    # One line per decision received, then the summary.
    lines = [line for line in stdout.splitlines() if "kiosk-demo/demo-branch" in line]
    assert len(lines) == report["received"]
    assert "Save (5/5)" in stdout and "summary:" in stdout
    # Who asked and under which profile: the central server (high-value), the customer
    # (standard), the operator at the staff view (high-value).
    assert "high-value central:ops" in lines[0] and "standard customer" in lines[1]
    assert sum("high-value demo-staff" in line for line in lines) == 1
    # The enrollment was a staff action: the operator's login and the enrollment, started and
    # done, reached the central database as audit records naming operator and customer.
    audit = report["audit"]
    assert [(a["action"], a["outcome"]) for a in audit][:3] == [("login", "ok"), ("enroll", "started"), ("logout", "handed_to_customer")]
    done = [a for a in audit if a["action"] == "enroll" and a["outcome"] == "ok"]
    assert len(done) == 1 and done[0]["operator"] == "demo-staff" and done[0]["subject"].startswith("cust-")
    assert "staff action(s) audited" in stdout
    # It stopped everything: no broker or daemon left, nothing in TMPDIR; the kept directory
    # holds what an audit needs.
    assert list(kept.tmp.iterdir()) == []
    left = subprocess.run(["pgrep", "-f", str(kept.cwd)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert (kept.cwd / "demo" / "central" / "central.sqlite").is_file()
    assert (kept.cwd / "demo" / "central" / "registry.json").is_file()


@pytest.mark.integration
def test_demo_refuses_a_used_keep_directory(kept: Kept) -> None:
    r = kept.sigkiosk("demo", "--writers", "1", "--keep", "demo", ok=False)
    assert r.returncode == 2 and "not an empty directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.integration
def test_demo_without_keep_removes_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.demo import demo

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    said: list[str] = []
    res = demo({}, say=said.append)
    assert res.sent == 0 and list(tmp_path.iterdir()) == []
    assert not any("kept" in line for line in said)


def _rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("20")]


@pytest.mark.integration
def test_audit_walkthrough(kept: Kept) -> None:
    """README, "Audit a decision", in its order."""
    db, reg = "demo/central/central.sqlite", "demo/central/registry.json"
    received = kept.report["received"]
    # 1. Queries. A customer's decisions, all of them.
    out = kept.sigkiosk("central", "query", "--db", db, "--customer", "CUST-001").stdout
    assert f"{received} decision(s)" in out and len(_rows(out)) == received
    # The table's seq column holds the whole sequence number (export-case takes it from there).
    seqs = [int(line.split()[3]) for line in _rows(out)]
    assert all(len(str(s)) == 16 for s in seqs)
    # The suspicious ones of today, asked in lower case.
    today = dt.datetime.now(dt.timezone.utc).date()
    out = kept.sigkiosk("central", "query", "--db", db, "--outcome", "suspicious", "--since", today.isoformat(),
                        "--until", (today + dt.timedelta(days=1)).isoformat()).stdout
    n_susp = sum(k["suspicious"] for k in (kept.report["genuine"], kept.report["forged"], *kept.report["paper"].values()))
    assert len(_rows(out)) == n_susp > 0 and all(" SUSPICIOUS " in line for line in _rows(out))
    # By profile: the central server's request and the staff view's, both high-value, with the
    # line that decided them among the model versions.
    out = kept.sigkiosk("central", "query", "--db", db, "--profile", "high-value", "--format", "json").stdout
    hv = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["operator"] for r in hv) == ["central:ops", "demo-staff"]
    assert all(r["profile"] == "high-value" and "profile_threshold" in r["model_versions"] for r in hv)
    out = kept.sigkiosk("central", "query", "--db", db, "--operator", "demo-staff").stdout
    assert len(_rows(out)) == 1
    # Staff actions, with a header; then as CSV.
    out = kept.sigkiosk("central", "query", "--db", db, "--audit").stdout
    assert out.splitlines()[0].split()[:6] == ["time", "(UTC)", "kiosk", "seq", "operator", "action"]
    assert len(_rows(out)) == len(kept.report["audit"]) and "enroll (new)" in out
    kept.sigkiosk("central", "query", "--db", db, "--mode", "paper", "--format", "csv", "--output", "paper.csv")
    with open(kept.cwd / "paper.csv", newline="") as fh:
        paper = list(csv.DictReader(fh))
    assert len(paper) == 2 and {r["mode"] for r in paper} == {"paper"} and {r["paper_references"] for r in paper} == {"pad-ink"}

    # 2. The web page: a user, the page, a login; the decisions are there.
    kept.sigkiosk("central", "user", "add", "auditor", "--users", "demo/central/users.json", "--password-stdin",
                  stdin=PASSWORD + "\n")
    port = free_port()
    web = subprocess.Popen([*CMD, "central", "web", "--db", db, "--users", "demo/central/users.json", "--registry", reg,
                            "--port", str(port)], cwd=kept.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert web.stdout is not None
        assert f"http://127.0.0.1:{port}/" in web.stdout.readline()
        page = _log_in_and_get(port, "/decisions?outcome=suspicious")
        assert f"{n_susp} decision(s)" in page and "high-value" in page and "demo-staff" in page
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(10)

    # 3. One case each, with the commands the demo printed.
    printed = [line.strip() for line in kept.stdout.splitlines() if line.strip().startswith("sigkiosk central export-case")]
    assert len(printed) == 2
    cases = {}
    for line in printed:
        args = shlex.split(line)[1:]
        kept.sigkiosk(*args)
        cases[args[args.index("--out") + 1]] = kept.cwd / args[args.index("--out") + 1]
    pen, paper_case = cases["case-pen"], cases["case-paper"]
    assert {p.name: p.stat().st_mode & 0o777 for p in pen.iterdir()} == {
        "signature.iso19794-7": 0o600, "decision.json": 0o600, "verification.json": 0o600}
    v = json.loads((pen / "verification.json").read_text())
    d = json.loads((pen / "decision.json").read_text())
    assert d["record"]["decision"] == "SUSPICIOUS" and d["record"]["mode"] == "online"
    assert v["evidence_bound_to_decision"] and v["evidence_envelope"]["signature"] == "verified"
    data = (pen / "signature.iso19794-7").read_bytes()
    assert hashlib.sha256(data).hexdigest() == v["signature_file"]["sha256"]
    rec = read_iso(data)
    assert rec.format_id == b"SDI\0" and rec.count == v["signature_file"]["points"] > 40
    v = json.loads((paper_case / "verification.json").read_text())
    png = (paper_case / "signature.png").read_bytes()
    assert hashlib.sha256(png).hexdigest() == v["signature_file"]["sha256"]
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.ndim == 2 and min(img.shape) > 50 and v["evidence_envelope"]["signature"] == "verified"

    # Retention: past it, the evidence goes, the decisions stay, a case has no signature.
    out = kept.sigkiosk("central", "purge", "--db", db).stdout
    assert out.startswith("purged 0 evidence row(s)")
    time.sleep(0.1)
    out = kept.sigkiosk("central", "purge", "--db", db, "--evidence-retention-days", "0.000001").stdout
    assert out.startswith(f"purged {received} evidence row(s)")
    seq = d["seq"]
    out = kept.sigkiosk("central", "export-case", "--db", db, "--kiosk", "kiosk-demo", "--seq", str(seq),
                        "--out", "case-after").stdout
    assert "no evidence stored" in out
    assert sorted(p.name for p in (kept.cwd / "case-after").iterdir()) == ["decision.json", "verification.json"]
    out = kept.sigkiosk("central", "query", "--db", db).stdout
    assert f"{received} decision(s)" in out


def _log_in_and_get(port: int, path: str) -> str:
    cookies: dict[str, str] = {}

    def request(method: str, url: str, body: str | None = None, headers: dict[str, str] | None = None) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        h = {**(headers or {}), "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        try:
            conn.request(method, url, body=body, headers=h)
            r = conn.getresponse()
            text = r.read().decode()
        finally:
            conn.close()
        for c in r.msg.get_all("Set-Cookie") or []:
            name, _, rest = c.partition("=")
            cookies[name] = rest.split(";", 1)[0]
        return text

    request("GET", "/login")
    request("POST", "/login", urlencode({"csrf": cookies["sigkiosk_csrf"], "user": "auditor", "password": PASSWORD}),
            {"Content-Type": "application/x-www-form-urlencoded"})
    return request("GET", path)

