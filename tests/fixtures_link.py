"""Fixtures of the secure-link tests: a device PKI, real mosquitto brokers, a real PostgreSQL.

Loaded from tests/conftest.py via ``pytest_plugins``. Nothing here is mocked: the broker is the
Debian mosquitto with TLS and the generated ACL, PostgreSQL is the Debian server started in a temp
directory. Missing binaries make the tests FAIL with a clear message (tools/setup.sh installs them).
Keys and certificates are generated at test time and never leave the temp directories.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk import keys
from kiosk.link import LinkConfig
from tools import pki
from tools.broker import BrokerSettings, Mosquitto, free_port
from tools.central.collector import CollectorConfig
from tools.registry import KioskEntry, Registry

SITE = "site1"
KIOSKS = {"kiosk-a": "canary", "kiosk-b": None}   # registered kiosks and their groups
UNREGISTERED = "kiosk-x"                            # has a certificate and keys, not in the registry
COLLECTORS = ("c1", "c2")
ADMINS = ("ops",)


@dataclass(frozen=True)
class LinkPki:
    root: Path
    ca_dir: Path
    certs: Path
    central_key: Path
    central_pub: Path
    registry_file: Path
    other_ca_dir: Path    # a second CA, trusted by nobody

    def cert(self, cn: str) -> tuple[Path, Path]:
        return self.certs / f"{cn}.crt", self.certs / f"{cn}.key"

    def sign_key(self, kiosk_id: str) -> Path:
        return self.root / "kiosks" / kiosk_id / keys.KIOSK_SIGN_KEY

    def link_config(self, kiosk_id: str, port: int, outbox: Path, **kw: object) -> LinkConfig:
        cert, key = self.cert(kiosk_id)
        return LinkConfig(
            kiosk_id=kiosk_id, site=SITE, group=KIOSKS.get(kiosk_id), broker_host="localhost", broker_port=port,
            ca_file=self.ca_dir / pki.CA_CERT, cert_file=cert, key_file=key, sign_key_file=self.sign_key(kiosk_id),
            central_pub_file=self.central_pub, outbox_path=outbox,
            **{"reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "health_interval_s": 5.0, **kw},  # type: ignore[arg-type]
        )

    def collector_config(self, port: int, db: str, name: str = "c1", **kw: object) -> CollectorConfig:
        cert, key = self.cert(f"collector.{name}")
        return CollectorConfig(
            broker_host="localhost", broker_port=port, ca_file=self.ca_dir / pki.CA_CERT, cert_file=cert,
            key_file=key, enc_key_files=(self.central_key,), db=db,
            **{"registry_file": self.registry_file, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0, **kw},  # type: ignore[arg-type]
        )


def make_pki(root: Path) -> LinkPki:
    ca_dir, certs = root / "ca", root / "certs"
    pki.init_ca(ca_dir)
    pki.init_ca(root / "other-ca", name="some other CA")
    reg = Registry()
    for kid in [*KIOSKS, UNREGISTERED]:
        pki.issue(ca_dir, "kiosk", kid, certs)
        pub = keys.generate_signing_key(root / "kiosks" / kid / keys.KIOSK_SIGN_KEY)
        if kid in KIOSKS:
            reg.add(KioskEntry(kid, SITE, KIOSKS[kid], (pub,)))
    for name in COLLECTORS:
        pki.issue(ca_dir, "collector", name, certs)
    for name in ADMINS:
        pki.issue(ca_dir, "admin", name, certs)
    pki.issue(root / "other-ca", "kiosk", "kiosk-a", root / "other-certs")
    central_key = root / "central" / keys.CENTRAL_ENC_KEY
    keys.generate_encryption_key(central_key)
    reg.save(root / "registry.json")
    return LinkPki(root, ca_dir, certs, central_key, Path(f"{central_key}.pub"), root / "registry.json", root / "other-ca")


@pytest.fixture(scope="session")
def link_pki(tmp_path_factory: pytest.TempPathFactory) -> LinkPki:
    return make_pki(tmp_path_factory.mktemp("link-pki"))


def start_broker(link_pki: LinkPki, directory: Path, port: int | None = None, autosave_interval_s: int = 1) -> Mosquitto:
    settings = BrokerSettings(
        directory=directory, ca_dir=link_pki.ca_dir, port=port or free_port(), collectors=COLLECTORS,
        admins=ADMINS, server_hosts=("localhost", "127.0.0.1"), autosave_interval_s=autosave_interval_s,
    )
    broker = Mosquitto.create(settings, Registry.load(link_pki.registry_file))
    broker.start()
    return broker


@pytest.fixture(scope="session")
def mqtt_broker(link_pki: LinkPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker shared by the tests that do not stop it."""
    broker = start_broker(link_pki, tmp_path_factory.mktemp("broker"))
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(link_pki: LinkPki, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that stop and restart it."""
    broker = start_broker(link_pki, tmp_path / "broker")
    yield broker
    broker.stop()


# -- PostgreSQL -----------------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path:
        return path
    pytest.fail(f"PostgreSQL binary {name!r} not found: run tools/setup.sh (Debian package 'postgresql')")


def _as_pg_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: drop to the 'postgres' user when we are root."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str

    def dsn(self, dbname: str = "postgres", schema: str | None = None) -> str:
        dsn = f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"
        if schema:
            dsn += f"?options=-csearch_path%3D{schema}"
        return dsn


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="sigkiosk-pg-"))
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    port = free_port()
    try:
        subprocess.run(_as_pg_user([initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
                                    "--no-sync"]), check=True, capture_output=True, timeout=120)
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_pg_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w",
                                    "-t", "60", "start"]), check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as exc:
        log = (root / "pg.log").read_text(errors="replace") if (root / "pg.log").exists() else ""
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')} {log[-2000:]}")
    try:
        yield PgServer("127.0.0.1", port, user)
    finally:
        subprocess.run(_as_pg_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def fresh_pg_schema(server: PgServer) -> str:
    """A DSN whose search_path is a new, empty schema: isolation per test at no cost."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return server.dsn(schema=schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against SQLite and against the real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "central.sqlite")
    return fresh_pg_schema(request.getfixturevalue("pg_server"))


def wait_for(cond, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``cond`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def mqtt_client(link_pki: LinkPki, port: int, cn: str, *, cert: tuple[Path, Path] | None = None,
                ca_file: Path | None = None):  # type: ignore[no-untyped-def]
    """A raw, connected paho client with ``cn``'s certificate; ``.received`` collects messages,
    ``.subacks`` the subscription results, ``.pubacks`` the PUBACK reason codes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from kiosk.tls import client_tls_context

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cn, protocol=mqtt.MQTTv5)
    crt, key = cert or link_pki.cert(cn)
    c.tls_set_context(client_tls_context(ca_file or link_pki.ca_dir / pki.CA_CERT, crt, key))
    c.received = []  # type: ignore[attr-defined]
    c.subacks = []  # type: ignore[attr-defined]
    c.pubacks = {}  # type: ignore[attr-defined]
    c.on_message = lambda cl, u, m: c.received.append((m.topic, bytes(m.payload)))  # type: ignore[attr-defined]
    c.on_subscribe = lambda cl, u, mid, rcs, p: c.subacks.append([r.value for r in rcs])  # type: ignore[attr-defined]
    c.on_publish = lambda cl, u, mid, rc, p: c.pubacks.__setitem__(mid, rc.value)  # type: ignore[attr-defined]
    c.connect("localhost", port)
    c.loop_start()
    wait_for(c.is_connected, timeout=10, what=f"{cn} connected")
    return c


def broker_accepts(port: int, ctx: ssl.SSLContext, client_id: str = "") -> bool:
    """True if the broker accepts an MQTT session over this TLS context; waits for a verdict."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    verdict: list[bool] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    c.on_connect = lambda cl, u, f, rc, props=None: (verdict.append(not rc.is_failure), done.set())
    c.on_disconnect = lambda cl, u, f, rc, props=None: (verdict.append(False), done.set())
    try:
        c.connect("localhost", port)
        c.loop_start()
        done.wait(10)
        return bool(verdict) and verdict[0]
    except (ssl.SSLError, OSError):
        return False
    finally:
        c.disconnect()
        c.loop_stop()
