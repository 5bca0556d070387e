"""Fixtures of the model-update tests: a device PKI with two kiosk groups, admin bundle keys,
a private mosquitto per test (retained offers must not leak between tests), real kiosk links.

Loaded from tests/conftest.py via ``pytest_plugins``. Keys are generated at test time into temp
directories. The tiny ``.tflite`` models under tests/kiosk/update_models were made by
``python -m tools.make_test_models tests/kiosk/update_models`` (tensorflow; not needed here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk import keys
from kiosk.bundle import BundleFile
from kiosk.link import KioskLink, LinkConfig
from kiosk.topics import KioskTopics
from kiosk.update_agent import UpdateAgent, UpdateConfig
from tools import pki
from tools.broker import BrokerSettings, Mosquitto, free_port
from tools.bundle import ModelSpec, create_bundle
from tools.registry import KioskEntry, Registry
from tools.rollout import AdminConnection

MODELS = Path(__file__).resolve().parent / "kiosk" / "update_models"
BUNDLE_NAME = "sigkiosk-models"
U_SITE = "branch-1"
U_KIOSKS = {"canary-1": "canary", "fleet-1": "fleet", "solo-1": None}
U_ADMIN = "ops"


@dataclass(frozen=True)
class UpdatePki:
    root: Path
    ca_dir: Path
    certs: Path
    central_pub: Path
    registry_file: Path
    admin_keys: tuple[Path, ...]     # three trusted admin signing keys (private files)
    rogue_key: Path                  # a well-formed key nobody trusts

    def admin_pubs(self) -> tuple[Path, ...]:
        return tuple(Path(f"{k}.pub") for k in self.admin_keys)

    def link_config(self, kiosk: str, port: int, outbox: Path) -> LinkConfig:
        return LinkConfig(
            kiosk_id=kiosk, site=U_SITE, group=U_KIOSKS[kiosk], broker_host="localhost", broker_port=port,
            ca_file=self.ca_dir / pki.CA_CERT, cert_file=self.certs / f"{kiosk}.crt", key_file=self.certs / f"{kiosk}.key",
            sign_key_file=self.root / "kiosks" / kiosk / keys.KIOSK_SIGN_KEY, central_pub_file=self.central_pub,
            outbox_path=outbox, reconnect_min_s=0.2, reconnect_max_s=1.0, health_interval_s=30.0,
        )

    def update_config(self, root: Path, threshold: int = 1, **kw: object) -> UpdateConfig:
        return UpdateConfig(root=root, bundle_name=BUNDLE_NAME, admin_keys=self.admin_pubs(), threshold=threshold,
                            **{"transfer_timeout_s": 30.0, **kw})  # type: ignore[arg-type]

    def admin(self, port: int) -> AdminConnection:
        return AdminConnection("localhost", port, self.ca_dir / pki.CA_CERT, self.certs / f"admin.{U_ADMIN}.crt",
                               self.certs / f"admin.{U_ADMIN}.key")

    def registry(self) -> Registry:
        return Registry.load(self.registry_file)


def make_update_pki(root: Path) -> UpdatePki:
    ca_dir, certs = root / "ca", root / "certs"
    pki.init_ca(ca_dir)
    reg = Registry()
    for kid, group in U_KIOSKS.items():
        pki.issue(ca_dir, "kiosk", kid, certs)
        pub = keys.generate_signing_key(root / "kiosks" / kid / keys.KIOSK_SIGN_KEY)
        reg.add(KioskEntry(kid, U_SITE, group, (pub,)))
    reg.save(root / "registry.json")
    pki.issue(ca_dir, "admin", U_ADMIN, certs)
    central = root / "central" / keys.CENTRAL_ENC_KEY
    keys.generate_encryption_key(central)
    admin_keys = []
    for i in range(3):
        k = root / "admin-keys" / f"admin{i}.key"
        keys.generate_signing_key(k)
        admin_keys.append(k)
    rogue = root / "rogue" / "rogue.key"
    keys.generate_signing_key(rogue)
    return UpdatePki(root, ca_dir, certs, Path(f"{central}.pub"), root / "registry.json", tuple(admin_keys), rogue)


@pytest.fixture(scope="session")
def update_pki(tmp_path_factory: pytest.TempPathFactory) -> UpdatePki:
    return make_update_pki(tmp_path_factory.mktemp("update-pki"))


@pytest.fixture
def update_broker(update_pki: UpdatePki, tmp_path: Path) -> Iterator[Mosquitto]:
    settings = BrokerSettings(directory=tmp_path / "broker", ca_dir=update_pki.ca_dir, port=free_port(),
                              admins=(U_ADMIN,), autosave_interval_s=1)
    broker = Mosquitto.create(settings, update_pki.registry())
    broker.start()
    yield broker
    broker.stop()


def make_bundle(update_pki: UpdatePki, version: int, *, model: str = "dense_v1", golden: str | None = None,
                sign: Sequence[Path] | None = None, **kw: object) -> BundleFile:
    """A bundle of one test model, signed by the first admin key unless ``sign`` says otherwise."""
    spec = ModelSpec(MODELS / f"{model}.tflite", MODELS / f"{golden or model}.golden.npz")
    return create_bundle(name=str(kw.pop("name", BUNDLE_NAME)), version=version, models=[spec],
                         sign_keys=list(update_pki.admin_keys[:1] if sign is None else sign), **kw)  # type: ignore[arg-type]


def wait_for_state(agent: UpdateAgent, *states: str, timeout: float = 10.0) -> str:
    """Wait until the agent's last step is one of ``states`` (its worker thread reports it); return it."""
    deadline = time.monotonic() + timeout
    while agent.last_state.get("state") not in states:
        assert time.monotonic() < deadline, f"the agent never reached {' or '.join(states)}: {agent.last_state}"
        time.sleep(0.02)
    return str(agent.last_state["state"])


def provision(update_pki: UpdatePki, root: Path, bundle: BundleFile, threshold: int = 1) -> None:
    """Factory install of ``bundle`` into a fresh slot store, through the same checks as an update."""
    path = root.parent / f"factory-{time.monotonic_ns()}.skb"
    bundle.write(path)
    agent = UpdateAgent(update_pki.update_config(root, threshold), topics=KioskTopics("sig", U_SITE, "factory"))
    assert agent.install_file(path) == "active", agent.last_state


@dataclass
class KioskUnderTest:
    link: KioskLink
    agent: UpdateAgent

    def close(self) -> None:
        self.agent.close()
        self.link.close()


def start_kiosk(update_pki: UpdatePki, port: int, kiosk: str, root: Path, threshold: int = 1, **kw: object) -> KioskUnderTest:
    link = KioskLink(update_pki.link_config(kiosk, port, root.parent / f"{kiosk}-outbox.sqlite"))
    agent = UpdateAgent.for_link(update_pki.update_config(root, threshold, **kw), link)
    agent.start()
    link.start()
    if not link.commands_ready.wait(15):
        raise AssertionError(f"{kiosk} did not get its command subscriptions")
    return KioskUnderTest(link, agent)


def link_config_json(cfg: LinkConfig) -> str:
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()})
