"""The unit files, checked by systemd itself (``systemd-analyze verify``) in a scratch root that
holds the system's unit directory and a stand-in for the daemon's executable, plus the hardening
and readiness settings the appliance promises."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None or SYSTEM_UNITS is None:
        pytest.fail("systemd-analyze is not installed: run tools/setup.sh (Debian package 'systemd')")
    return path


def _root(tmp_path: Path, *units: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/sigkiosk/.venv/bin/sigkiosk"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for u in units:
        shutil.copy(u, root / "etc/systemd/system" / u.name)
    return root


def _verify(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_analyze(), "verify", "--man=no", f"--root={root}", name],
                          capture_output=True, text=True, timeout=60)


def _service() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str   # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / "sigkiosk.service").read_text())   # repeated keys (DeviceAllow): last wins
    return cp


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    root = _root(tmp_path, UNITS / "sigkiosk.service")
    r = _verify(root, "sigkiosk.service")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_verify_is_a_real_check(tmp_path: Path) -> None:
    # The same check fails for a unit with a typo in a directive: the test above can fail.
    bad = tmp_path / "sigkiosk.service"
    bad.write_text((UNITS / "sigkiosk.service").read_text().replace("WatchdogSec=", "WatchdogSecs="))
    r = _verify(_root(tmp_path, bad), "sigkiosk.service")
    assert "Unknown key 'WatchdogSecs'" in r.stderr


def test_unit_promises() -> None:
    text = (UNITS / "sigkiosk.service").read_text()
    svc = _service()["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert svc["User"] == "sigkiosk" and svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert svc["StateDirectory"] == "sigkiosk" and "ReadWritePaths" not in svc
    assert svc["DevicePolicy"] == "closed"
    allowed = sorted(line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith("DeviceAllow="))
    assert allowed == ["char-input", "char-ttyACM", "char-ttyUSB", "char-video4linux"]
    # sigkiosk-screen: the group that shares the screen's per-boot secret with the kiosk browser.
    assert set(svc["SupplementaryGroups"].split()) == {"input", "video", "dialout", "sigkiosk-screen"}
    assert svc["RuntimeDirectory"] == "sigkiosk" and svc["RuntimeDirectoryPreserve"] == "yes"
    assert svc["ExecStart"].split()[1:] == ["run", "--config", "/etc/sigkiosk/sigkiosk.toml"]
    assert svc["CapabilityBoundingSet"] == ""


def test_sysusers_tmpfiles_and_udev_rules() -> None:
    sysusers = (UNITS / "sigkiosk.sysusers.conf").read_text().splitlines()
    assert any(line.split()[:2] == ["u", "sigkiosk"] for line in sysusers)
    tmpfiles = [line.split() for line in (UNITS / "sigkiosk.tmpfiles.conf").read_text().splitlines()
                if line and not line.startswith("#")]
    modes = {t[1]: (t[2], t[3]) for t in tmpfiles}
    assert modes["/var/lib/sigkiosk"] == ("0700", "sigkiosk")
    assert modes["/etc/sigkiosk/credentials"][1] == "root"   # the key lives apart from the data, root-owned dir
    rules = (UNITS / "70-sigkiosk-digitizer.rules").read_text()
    assert 'ENV{ID_INPUT_TABLET}=="1", GROUP="sigkiosk", MODE="0660"' in rules
    assert 'KERNEL=="ttyACM[0-9]*", GROUP="sigkiosk"' in rules
