"""``sigkiosk run --check`` checks what the configuration points to, and ``sigkiosk run`` refuses to
start on the same problems with one line each (no traceback). The CLI runs as a subprocess, as the
engineer and systemd run it; the PKI is the test PKI and the broker a real mosquitto with TLS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_helpers import central_sign_key, link_table, write_config
from fixtures_link import LinkPki

from kiosk.check import check_config
from kiosk.config import DEFAULT_CONFIG, ConfigError, default_config_data, load_config, parse_config
from models.enrollment import EnrollmentPolicy
from tools.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration   # subprocess CLI runs


def _run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.commands.run_cmd", *map(str, args)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=timeout)


def _good_config(link_pki: LinkPki, root: Path, port: int, **link: object) -> Path:
    _, pub = central_sign_key(root)
    path = write_config(root, link={**link_table(link_pki, port, root), **link}, commands_pub=pub)
    assert _run("--config", path, "--init-key").returncode == 0   # the template key, as the README says
    return path


def test_unedited_example_names_every_missing_file(tmp_path: Path) -> None:
    example = tmp_path / "sigkiosk.toml"
    printed = _run("--print-config")
    assert printed.returncode == 0
    example.write_text(printed.stdout)
    res = _run("--config", example, "--check")
    assert res.returncode == 1 and "OK" not in res.stdout
    for where in ("[storage] template_key", "[commands] central_sign_pub", "[link] ca_file", "[link] cert_file",
                  "[link] key_file", "[link] sign_key_file", "[link] central_pub_file", "[update] admin_keys"):
        assert f"error: {where}: " in res.stderr and "does not exist" in res.stderr, (where, res.stderr)
    assert "problem(s) to fix" in res.stderr


def test_good_config_passes_and_broker_is_checked(link_pki: LinkPki, mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    path = _good_config(link_pki, tmp_path, mqtt_broker.port)
    res = _run("--config", path, "--check", "--broker")
    assert res.returncode == 0, res.stderr
    assert f"OK (kiosk kiosk-a, site site1, broker localhost:{mqtt_broker.port} accepts this kiosk)" in res.stdout
    assert "error" not in res.stdout + res.stderr
    # The same config pointed at a port where nothing listens: the files are fine, the broker is not.
    dead = _good_config(link_pki, tmp_path / "dead", free_port())
    res = _run("--config", dead, "--check", "--broker")
    assert res.returncode == 1
    assert "error: [link] broker: refused: nothing accepts connections" in res.stderr
    assert _run("--config", dead, "--check").returncode == 0   # without --broker the network is not asked


def test_broker_that_distrusts_the_certificate_is_named(link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                        tmp_path: Path) -> None:
    # The certificate of another CA with that CA as ca_file: every file is consistent, only the
    # broker can say no ("unknown ca").
    other = link_pki.root / "other-certs"
    path = _good_config(link_pki, tmp_path, mqtt_broker.port, cert_file=other / "kiosk-a.crt",
                        key_file=other / "kiosk-a.key", ca_file=link_pki.other_ca_dir / "ca.crt")
    config = load_config(path)
    broker = [f for f in check_config(config, broker=True) if f.where == "[link] broker"]
    assert len(broker) == 1 and "TLS: this kiosk does not trust the broker's certificate" in broker[0].message


def test_mismatched_key_and_foreign_certificate_are_named(link_pki: LinkPki, tmp_path: Path) -> None:
    _, other_key = link_pki.cert("kiosk-b")
    path = _good_config(link_pki, tmp_path, free_port(), key_file=other_key)
    res = _run("--config", path, "--check")
    assert res.returncode == 1
    assert "error: [link] key_file: " in res.stderr and "does not match the certificate" in res.stderr
    # kiosk-a's certificate from another CA: the broker would answer "unknown ca"; --check says so first.
    (tmp_path / "b").mkdir()
    other = link_pki.root / "other-certs"
    foreign = _good_config(link_pki, tmp_path / "b", free_port(), cert_file=other / "kiosk-a.crt",
                           key_file=other / "kiosk-a.key")
    found = {f.where: f.message for f in check_config(load_config(foreign))}
    assert "is not issued by the CA in ca_file" in found["[link] cert_file"]
    # Another kiosk's certificate and key (a matching pair): the CN is not this kiosk's.
    cert_b, key_b = link_pki.cert("kiosk-b")
    (tmp_path / "c").mkdir()
    swapped = _good_config(link_pki, tmp_path / "c", free_port(), cert_file=cert_b, key_file=key_b)
    found = {f.where: f.message for f in check_config(load_config(swapped))}
    assert "is for kiosk-b, not this kiosk ('kiosk-a'" in found["[link] cert_file"]


def test_missing_keys_at_start_are_one_line_each_with_the_fix(link_pki: LinkPki, tmp_path: Path) -> None:
    path = _good_config(link_pki, tmp_path, free_port(), sign_key_file=tmp_path / "nowhere" / "sign.key")
    path.write_text(path.read_text().replace("create_key = true", "create_key = false"))
    key = load_config(path).storage.template_key
    key.unlink()
    res = _run("--config", path, timeout=120)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert f"sigkiosk run: cannot start: [storage] template_key: {key} does not exist (create it with: " \
           "sigkiosk run --config FILE --init-key --owner sigkiosk)" in lines
    assert any(line.startswith("sigkiosk run: cannot start: [link] sign_key_file: ") and "gen-keys" in line
               for line in lines), lines
    assert len(lines) == 3   # two problems and the hint to --check


def test_another_kiosks_outbox_is_refused_at_start_and_left_as_it_was(link_pki: LinkPki, tmp_path: Path) -> None:
    """Two configurations sharing one outbox_path (a relative path resolves against the configuration's
    folder, not the state_dir): the second kiosk would publish the first one's sealed rows under its
    own identity, refused by the broker again and again. It does not start."""
    from kiosk.outbox import Outbox

    path = _good_config(link_pki, tmp_path, free_port())
    outbox = load_config(path).link.outbox_path
    other = Outbox(outbox, owner="kiosk-b")
    other.add("decision", "sig/v1/site1/kiosk-b/decision", lambda s: b"sealed for kiosk-b")
    other.close()
    res = _run("--config", path, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr + res.stdout
    assert f"cannot start: outbox {outbox} belongs to kiosk 'kiosk-b', not 'kiosk-a' (1 message(s) queued" \
           in res.stderr, res.stderr
    other = Outbox(outbox, owner="kiosk-b")
    assert [r.payload for r in other.pending(10)] == [b"sealed for kiosk-b"]
    other.close()


def test_example_has_one_identity_and_every_fleet_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = default_config_data()
    # The identity is written once, in [kiosk]; the link, the rollout group and the update agent are there.
    assert "kiosk_id" not in data["link"] and "site" not in data["link"]
    assert data["link"]["group"] and {"root", "bundle_name", "admin_keys"} <= set(data["update"])
    fleet = {"kiosk", "device", "verifier", "policy", "storage", "ui", "staff", "commands", "link", "update"}
    assert fleet <= set(data)
    cfg = parse_config(data, tmp_path)
    assert cfg.link is not None and (cfg.link.kiosk_id, cfg.link.site) == (cfg.kiosk_id, cfg.site)
    assert cfg.update is not None and cfg.link.group == "fleet"
    # max_inconsistency: the example, the daemon's default, the enrollment check and the README agree.
    measured = EnrollmentPolicy().max_inconsistency
    assert data["policy"]["max_inconsistency"] == cfg.policy.max_inconsistency == measured
    assert cfg.policy.enrollment().max_inconsistency == measured
    assert f"user-normalised distance > {measured:.1f}" in (REPO / "README.md").read_text()
    assert "max_inconsistency = 2" in DEFAULT_CONFIG
    # Older files with [link] kiosk_id/site: equal values still work, with a warning...
    old = default_config_data()
    old["link"].update(kiosk_id="kiosk-0001", site="branch-01")
    with caplog.at_level("WARNING", logger="kiosk.config"):
        assert parse_config(old, tmp_path).link.kiosk_id == "kiosk-0001"
    assert "[link] kiosk_id is no longer needed" in caplog.text and "[link] site is no longer needed" in caplog.text
    # ...different ones are refused, saying which one wins and what to do.
    old["link"]["site"] = "branch-99"
    with pytest.raises(ConfigError, match=r"\[link\] site = 'branch-99' must equal \[kiosk\] site = 'branch-01': "
                                          r"remove site from \[link\]"):
        parse_config(old, tmp_path)
    # A changed [kiosk] id is the link's id: nothing else to edit.
    new = default_config_data()
    new["kiosk"]["id"] = "kiosk-0042"
    assert parse_config(new, tmp_path).link.kiosk_id == "kiosk-0042"


def test_check_names_deprecated_link_identity(link_pki: LinkPki, tmp_path: Path) -> None:
    path = _good_config(link_pki, tmp_path, free_port())
    path.write_text(path.read_text().replace("[link]\n", '[link]\nkiosk_id = "kiosk-a"\n'))
    res = _run("--config", path, "--check")
    assert res.returncode == 0, res.stderr
    assert "warning: [link] kiosk_id: no longer needed: the link uses [kiosk] id; remove it" in res.stdout
    assert "no longer needed" not in res.stderr   # said once, by --check



def _run_daemon_until(path: Path, pattern: str, timeout: float = 60) -> list[tuple[float, str]]:
    """``sigkiosk run`` as systemd starts it, until a stderr line contains ``pattern``; (time, line) pairs."""
    proc = subprocess.Popen([sys.executable, "-m", "tools.commands.run_cmd", "--config", str(path)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip()))
            if pattern in line:
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        done.wait(timeout)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return lines


@pytest.mark.parametrize("case", ["wrong_port", "wrong_ca"])
def test_running_kiosk_says_why_its_link_is_down(case: str, link_pki: LinkPki, mqtt_broker: Mosquitto,
                                                 tmp_path: Path) -> None:
    # The filed case: "kiosk ready" and nothing else, even with -v; only the broker's log said
    # "unknown ca". Every file here is consistent, so --check passes and the daemon starts.
    if case == "wrong_port":
        path = _good_config(link_pki, tmp_path, free_port())
        expect = "refused: nothing accepts connections"
    else:   # a whole other PKI (its CA, a kiosk-a certificate of it): the broker's is not trusted
        other = link_pki.root / "other-certs"
        path = _good_config(link_pki, tmp_path, mqtt_broker.port, ca_file=link_pki.other_ca_dir / "ca.crt",
                            cert_file=other / "kiosk-a.crt", key_file=other / "kiosk-a.key")
        expect = "TLS: this kiosk does not trust the broker's certificate"
    assert not [f for f in check_config(load_config(path)) if f.level == "error"]
    lines = _run_daemon_until(path, "link: cannot connect")
    ready = [t for t, line in lines if "kiosk ready" in line]
    errors = [(t, line) for t, line in lines if " ERROR " in f" {line}" and "link: cannot connect" in line]
    assert ready and errors, "\n".join(line for _, line in lines)
    assert expect in errors[0][1]
    assert errors[0][0] - ready[0] < 6.0   # within seconds of "ready" (connect_warn_s is 5 s)
    assert "Traceback" not in "\n".join(line for _, line in lines)


def test_unreadable_config_is_one_line(tmp_path: Path) -> None:
    missing = _run("--config", tmp_path / "nope.toml", "--check")
    assert missing.returncode == 2 and missing.stderr == f"sigkiosk run: {tmp_path / 'nope.toml'}: no such file\n"
    (tmp_path / "bad.toml").write_text("[kiosk\n")
    bad = _run("--config", tmp_path / "bad.toml")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "line 1" in bad.stderr
    assert bad.stderr.count(str(tmp_path / "bad.toml")) == 1


def test_certificates_about_to_lapse_are_said_before_they_do(link_pki: LinkPki, tmp_path: Path) -> None:
    """Found by a review: a certificate issued by a CA that ends sooner said it was good for years
    (it stops working with its CA, with the rest of the fleet), and --check spoke of a certificate
    only once it had expired, never of the CA. Now an issued certificate ends no later than its
    CA, and --check warns 30 days ahead of either."""
    from cryptography import x509 as _x509

    from tools import pki

    ca = tmp_path / "short-ca"
    pki.init_ca(ca, days=20)
    issued = pki.issue(ca, "kiosk", "kiosk-a", tmp_path / "short-certs", days=825)
    cert = _x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    ca_cert = _x509.load_pem_x509_certificate((ca / pki.CA_CERT).read_bytes())
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    path = _good_config(link_pki, tmp_path, free_port(), ca_file=str(ca / pki.CA_CERT), cert_file=str(issued.cert_path),
                        key_file=str(issued.key_path))
    found = {(f.level, f.where): f.message for f in check_config(load_config(path))}
    assert "expires on" in found[("warning", "[link] cert_file")]
    assert "every certificate it issued stops working" in found[("warning", "[link] ca_file")]
    assert not [k for k in found if k[0] == "error"], found
