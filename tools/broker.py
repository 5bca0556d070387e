"""The MQTT broker of the secure link: mosquitto configuration, ACL, and a process wrapper.

``write_broker_config`` generates ``mosquitto.conf`` and ``acl`` for one TLS listener:

* TLS 1.2 minimum (1.3 negotiated when both sides have it), client certificates required and
  verified against the device CA, the certificate's CN is the MQTT user name
  (``use_identity_as_username``) and the client id (``use_username_as_clientid``, so nobody can
  kick another client off by reusing its client id);
* an ACL: a kiosk may publish only ``<prefix>/v1/<site>/<its id>/{decision,log,status,update,audit,evidence}``
  (``update``: its signed model-update status, kiosk/UPDATES.md; ``audit``: staff action records) and read
  only its own ``.../model/#`` and its group's ``<prefix>/v1/_group/<group>/model/#``; collectors
  read the kiosk topics; only admins write command topics; a revoked kiosk is denied everything;
* subscriptions checked too: mosquitto 2.0's acl_file grants EVERY subscription and checks only
  deliveries, so a kiosk joining the collectors' shared subscription ($share/collectors/...) was
  handed a share of all kiosks' decisions, refused them at delivery, and they were lost. The
  ``sigkiosk_acl`` plugin (tools/mosquitto/sigkiosk_acl.c, built here with the system C compiler)
  grants a kiosk only filters inside what the ACL lets it read: no ``$`` topics, no wider wildcard;
* a CRL (``crlfile``, the device CA's ``crl.pem``): a revoked kiosk's certificate no longer
  connects. mosquitto 2.0.11 re-reads the CRL on SIGHUP (checked: new connections of a revoked
  certificate fail right after the reload), but a TLS session made before it stays up, so the
  plugin disconnects, on reload, every user the ACL denies everything (``apply_registry``);
* persistence, so that messages queued for an offline collector survive a broker restart, and
  queue limits large enough for a fleet's backlog.

``Mosquitto`` starts and stops a private broker from such a configuration (tests, the demo).
``apply_registry`` rewrites the ACL and CRL of a configured broker after a revocation, and
``signal_reload`` makes the running broker apply them.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.templates import atomic_write
from kiosk.topics import GROUP_NAMESPACE, RECEIPT_KIND, TOPIC_VERSION, validate_id
from tools import pki
from tools.central.errors import CentralError
from tools.registry import Registry

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class BrokerError(CentralError, RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerSettings:
    directory: Path                  # where mosquitto.conf, acl, certificates and persistence go
    ca_dir: Path                     # the device CA (ca.crt, ca.key to issue the server cert)
    port: int = 8883
    bind: str = "127.0.0.1"
    prefix: str = "sig"
    collectors: tuple[str, ...] = ()   # collector names (identities collector.NAME)
    admins: tuple[str, ...] = ()       # admin names (identities admin.NAME)
    server_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    run_as_user: str | None = None     # mosquitto's `user`; None: its default (user mosquitto)
    # Per collector session: what waits at the broker while a collector is down. Beyond it the
    # broker drops messages it has already acknowledged to kiosks, so size it for the longest
    # collector outage you accept (a decision envelope is ~600 bytes: a million is ~0.6 GB).
    max_queued_messages: int = 1_000_000
    max_packet_size: int = 2 << 20
    autosave_interval_s: int = 10
    persistent_client_expiration: str = "14d"
    extra_acl_users: dict[str, list[str]] = field(default_factory=dict)   # identity -> ACL lines

    def to_json(self) -> str:
        d = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
             for k, v in self.__dict__.items()}
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerSettings:
        d = json.loads(text)
        for k in ("directory", "ca_dir"):
            d[k] = Path(d[k])
        for k in ("collectors", "admins", "server_hosts"):
            d[k] = tuple(d[k])
        return cls(**d)


SETTINGS_FILE = "broker-settings.json"   # what write_broker_config was given, for apply_registry
PLUGIN_SOURCE = Path(__file__).with_name("mosquitto") / "sigkiosk_acl.c"
PLUGIN_NAME = "sigkiosk_acl.so"
#: Every kind a kiosk publishes (kiosk/topics.py; ``update``: model update reports, ``audit``: staff
#: action records, ``evidence``: a decision's questioned signature, sealed). Collectors read all but
#: ``update``, which the admins' rollout reads.
KIOSK_PUBLISHES = ("decision", "log", "status", "update", "audit", "evidence")
COLLECTOR_READS = ("decision", "log", "status", "audit", "evidence")


def acl_text(settings: BrokerSettings, registry: Registry | None = None) -> str:
    p = validate_id(settings.prefix, "prefix")
    v = TOPIC_VERSION
    lines = [
        "# Generated by sigkiosk admin broker-config. Do not edit: regenerate, then reload (SIGHUP).",
        "# Patterns apply to every certificate of the device CA; %u is the certificate's CN.",
        "# A kiosk publishes only under its own id and reads only its own command topics.",
        "# The sigkiosk_acl plugin grants a kiosk's subscription only inside what it may read here.",
        *(f"pattern write {p}/{v}/+/%u/{kind}" for kind in KIOSK_PUBLISHES),
        f"pattern read {p}/{v}/+/%u/model/#",
        f"pattern read {p}/{v}/+/%u/{RECEIPT_KIND}",
        "",
    ]
    if registry is not None:
        for kid, entry in sorted(registry.kiosks.items()):
            if entry.revoked:
                # The user's own lines are checked before the patterns: deny wins over them.
                lines += [f"# revoked: {entry.revoked_reason[:100]!r}".replace("\n", " "),
                          f"user {kid}", "topic deny #", ""]
            elif entry.group:
                lines += [f"user {kid}", f"topic read {p}/{v}/{GROUP_NAMESPACE}/{entry.group}/model/#", ""]
    for name in settings.collectors:
        lines += [f"user {pki.identity('collector', name)}"]
        lines += [f"topic read {p}/{v}/+/+/{kind}" for kind in COLLECTOR_READS]
        # Receipts of what it stored (kiosk.receipts): no kiosk may write them, or it could
        # tell another kiosk to drop its messages (their tokens would still have to match).
        lines += [f"topic write {p}/{v}/+/+/{RECEIPT_KIND}", ""]
    for name in settings.admins:
        lines += [
            f"user {pki.identity('admin', name)}",
            f"topic write {p}/{v}/+/+/model/#",
            f"topic write {p}/{v}/{GROUP_NAMESPACE}/+/model/#",
            f"topic read {p}/{v}/#",
            "",
        ]
    for user, acl_lines in settings.extra_acl_users.items():
        lines += [f"user {user}", *acl_lines, ""]
    return "\n".join(lines)


def write_broker_config(settings: BrokerSettings, registry: Registry | None = None) -> Path:
    """Write the server certificate, ``acl`` and ``mosquitto.conf``; return the config's path."""
    d = Path(settings.directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    server = pki.issue(settings.ca_dir, "server", settings.server_hosts[0], d, hosts=settings.server_hosts)
    shutil.copyfile(Path(settings.ca_dir) / pki.CA_CERT, d / "ca.crt")
    plugin = build_acl_plugin(d)
    (d / SETTINGS_FILE).write_text(settings.to_json())
    _write_acl_and_crl(settings, registry)
    conf = [
        "# Generated by sigkiosk admin broker-config.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {d / 'acl'}",
        f"plugin {plugin}",
        f"plugin_opt_acl_file {d / 'acl'}",
        "persistence true",
        f"persistence_location {d / 'data'}/",
        f"autosave_interval {settings.autosave_interval_s}",
        f"persistent_client_expiration {settings.persistent_client_expiration}",
        f"max_queued_messages {settings.max_queued_messages}",
        "max_inflight_messages 100",
        f"max_packet_size {settings.max_packet_size}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"pid_file {d / 'mosquitto.pid'}",
    ]
    if settings.run_as_user:
        conf.append(f"user {settings.run_as_user}")
    conf += [
        "",
        f"listener {settings.port} {settings.bind}",
        "protocol mqtt",
        f"cafile {d / 'ca.crt'}",
        f"certfile {server.cert_path}",
        f"keyfile {server.key_path}",
        "tls_version tlsv1.2",
        "require_certificate true",
        f"crlfile {d / pki.CRL_FILE}",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
    ]
    path = d / "mosquitto.conf"
    path.write_text("\n".join(conf))
    if settings.run_as_user is None and os.geteuid() == 0:
        # mosquitto drops to user "mosquitto": let it read its key and write its persistence.
        _hand_to_user("mosquitto", [d, d / "data", server.key_path])
    return path


def _write_acl_and_crl(settings: BrokerSettings, registry: Registry | None) -> None:
    d = Path(settings.directory).resolve()
    crl = Path(settings.ca_dir) / pki.CRL_FILE
    if not crl.exists():
        pki.write_crl(settings.ca_dir)   # an empty CRL: mosquitto needs the file to check against
    # Replaced whole: mosquitto (and the plugin) never read half a file on reload.
    atomic_write(d / pki.CRL_FILE, crl.read_bytes(), mode=0o644)
    atomic_write(d / "acl", acl_text(settings, registry).encode(), mode=0o644)


def apply_registry(directory: Path, registry: Registry) -> BrokerSettings:
    """Rewrite the ACL and the CRL copy of a broker configured by ``write_broker_config`` (after a
    revocation, a new group...). The running broker applies them on ``signal_reload``."""
    d = Path(directory).resolve()
    try:
        settings = BrokerSettings.from_json((d / SETTINGS_FILE).read_text())
    except FileNotFoundError:
        raise BrokerError(f"{d} holds no broker configuration (run `sigkiosk admin broker-config` first)") from None
    _write_acl_and_crl(settings, registry)
    return settings


def signal_reload(directory: Path) -> int | None:
    """SIGHUP the broker running from ``directory`` (its pid file); return its pid, or None if no
    broker runs there. mosquitto then re-reads the ACL and the CRL, and the plugin disconnects the
    users the ACL now denies everything."""
    pid_file = Path(directory) / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def build_acl_plugin(out_dir: Path) -> Path:
    """Compile the subscription-check plugin into ``out_dir`` (skipped when already built from this
    source); raise BrokerError if no C compiler is installed."""
    out = Path(out_dir) / PLUGIN_NAME
    source = PLUGIN_SOURCE.read_bytes()
    flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]
    stamp = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()
    stamp_file = out.with_name(f"{PLUGIN_NAME}.sha256")
    if out.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BrokerError("no C compiler to build the broker's subscription-check plugin: "
                          "run tools/setup.sh (Debian packages gcc, libc6-dev)")
    tmp = out.with_name(f".{PLUGIN_NAME}.tmp{os.getpid()}")
    proc = subprocess.run([cc, *flags, "-o", str(tmp), str(PLUGIN_SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BrokerError(f"building {PLUGIN_SOURCE.name} failed: {proc.stderr[-2000:]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    stamp_file.write_text(stamp + "\n")
    return out


def _hand_to_user(user: str, paths: Iterable[Path]) -> None:
    try:
        shutil.chown(next(iter(paths)), user=user)
    except (LookupError, PermissionError):
        return
    for p in paths:
        shutil.chown(p, user=user)


def find_mosquitto() -> str:
    path = shutil.which("mosquitto")
    if path:
        return path
    for cand in MOSQUITTO_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    raise BrokerError("mosquitto is not installed: run tools/setup.sh (Debian package 'mosquitto')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A private mosquitto process running a generated configuration."""

    def __init__(self, config_path: Path, port: int, host: str = "127.0.0.1") -> None:
        self.config_path = Path(config_path)
        self.port = port
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.config_path.parent / "mosquitto.log"

    @classmethod
    def create(cls, settings: BrokerSettings, registry: Registry | None = None) -> Mosquitto:
        if settings.run_as_user is None and os.geteuid() == 0:
            settings = BrokerSettings(**{**settings.__dict__, "run_as_user": getpass.getuser()})
        return cls(write_broker_config(settings, registry), settings.port, settings.bind)

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.config_path)], stdout=logf, stderr=logf)
        logf.close()
        # mosquitto writes its pid_file only when it daemonizes: write it, for signal_reload.
        (self.config_path.parent / "mosquitto.pid").write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port}: {self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence database on the way out."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        (self.config_path.parent / "mosquitto.pid").unlink(missing_ok=True)

    def reload(self) -> None:
        """Re-read the ACL and the CRL (after registering a kiosk with a group, a revocation...)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
