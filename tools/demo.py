"""The appliance demo: the whole system on one machine, offline, with no hardware or data.

What runs (``sigkiosk demo``): a private mosquitto (TLS, client certificates, ACL) with freshly
generated certificates and keys, a central collector writing to SQLite, and the kiosk daemon
(``kiosk.daemon.Daemon``, configured from a generated TOML file, its screen on a local port) fed
by a replayed digitizer stream - ``firmware_host.replay_pen.ReplayPen``: the signatures become raw
evdev events read by the live capture loop, at ``speed`` times real time.

Writers come from the sigma-lognormal synthesizer (``tools.synth``: genuine variation and skilled
imitations), or from a dataset folder (``--data``). Each writer enrolls through the daemon
("Save (n/N)", refusals with reasons, the customer signs again); then their remaining genuine
signatures and the imitations are verified - the first of each writer requested by the central
server over the signed command topic, the others from the kiosk screen's HTTP API. Then each
customer shows paper to the camera: a photo of one of their genuine signatures and one of an
imitation, written with a ballpoint (``models.render``) and photographed on a desk
(``tools.photos``), replayed through the kiosk's camera code (``firmware_host.camera``) and
verified against the pad references (``kiosk.paper``). The demo prints what the central server
received and decrypted: one line per decision (pen or paper), a summary.

The kiosk has two application profiles (``kiosk.profiles``): ``standard`` (the default) and a
stricter ``high-value``. Each writer's first verification is the central server's, under
``high-value`` (its decision names the operator ``central:ops``), their last one is started by the
demo's operator at the staff view under ``high-value``, the others are the customer's own.
Everything lives in a temporary directory that is removed at the end; ``keep`` keeps it (the
central database with the decisions, staff actions and evidence, the registry, the keys) and the
demo prints the commands an audit starts with (README, "Audit a decision").
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_host.replay_pen import ReplayPen
from kiosk import keys
from kiosk.commands import make_verify_command, verify_topic
from kiosk.staff import OperatorStore
from kiosk.tls import client_tls_context
from models.trajectory import Trajectory
from tools import pki
from tools.broker import BrokerSettings, Mosquitto, free_port
from tools.registry import KioskEntry, Registry
from tools.synth import make_population

log = logging.getLogger(__name__)

KIOSK_ID = "kiosk-demo"
SITE = "demo-branch"
#: The admin certificate the demo's central requests are sent with (their operator: central:ops).
ADMIN = "ops"
#: The stricter application profile of the demo's kiosk (its first and last verification per writer).
HIGH_VALUE = "high-value"

Writers = dict[str, tuple[list[Trajectory], list[Trajectory]]]


def synthetic_writers(n_writers: int, seed: int, n_genuine: int = 8, n_forgeries: int = 3) -> Writers:
    return make_population(n_writers=n_writers, n_genuine=n_genuine, n_forgeries=n_forgeries, seed=seed)


def dataset_writers(path: Path, fmt: str, n_writers: int) -> Writers:
    from tools.datasets import load_online

    ds = load_online(path, fmt).subset("test")
    out = {}
    for w in sorted(ds.writers)[:n_writers]:
        genuine = [s.trajectory for s in ds.genuine(w)]
        forged = [s.trajectory for s in ds.skilled(w)][:3]
        if len(genuine) >= 7 and forged:
            out[w] = (genuine[:8], forged)
    return out


# -- the environment ------------------------------------------------------------------------------

@dataclass
class DemoEnv:
    root: Path
    broker: Any
    collector: Any
    daemon: Any
    pen: Any
    admin: Any                 # an admin MQTT client (publishes the central server's requests)
    central_sign_key: Any
    config_path: Path
    #: The demo's operator at the kiosk (enrollments need a staff login) and its passphrase,
    #: random per run and kept in memory only.
    operator: str = "demo-staff"
    operator_secret: str = field(default="", repr=False)

    def close(self) -> None:
        for step in (self.daemon.stop, self._admin_close, self.collector.stop, self.broker.stop, self.pen.close_all):
            try:
                step()
            except Exception:   # cleanup goes on whatever failed
                log.exception("demo cleanup step failed")

    def _admin_close(self) -> None:
        self.admin.disconnect()
        self.admin.loop_stop()


def make_keys(root: Path) -> dict[str, Path]:
    """A device CA, certificates for the kiosk, a collector and an admin; link and command keys."""

    ca = root / "pki" / "ca"
    certs = root / "pki" / "certs"
    pki.init_ca(ca)
    pki.issue(ca, "kiosk", KIOSK_ID, certs)
    pki.issue(ca, "collector", "c1", certs)
    pki.issue(ca, "admin", ADMIN, certs)
    kiosk_dir = root / "kiosk" / "keys"
    pub = keys.generate_signing_key(kiosk_dir / keys.KIOSK_SIGN_KEY)
    central = root / "central"
    keys.generate_encryption_key(central / keys.CENTRAL_ENC_KEY, central / keys.CENTRAL_ENC_PUB)
    keys.generate_signing_key(central / keys.CENTRAL_SIGN_KEY, central / keys.CENTRAL_SIGN_PUB)
    shutil.copyfile(central / keys.CENTRAL_ENC_PUB, kiosk_dir / keys.CENTRAL_ENC_PUB)
    shutil.copyfile(central / keys.CENTRAL_SIGN_PUB, kiosk_dir / keys.CENTRAL_SIGN_PUB)
    reg = Registry()
    reg.add(KioskEntry(KIOSK_ID, SITE, None, (pub,)))
    reg.save(root / "central" / "registry.json")
    return {"ca_dir": ca, "ca": ca / pki.CA_CERT, "certs": certs, "kiosk_keys": kiosk_dir, "central": central,
            "registry": root / "central" / "registry.json"}


def kiosk_config_text(paths: dict[str, Path], port: int, *, pen_up_timeout_s: float = 0.5, ui_port: int = 0,
                      camera: Path | None = None) -> str:
    """The daemon's TOML for the demo: the embedded default, pointed at the demo's files."""

    from kiosk.config import DEFAULT_KIND, HIGH_VALUE_THRESHOLD

    k, c = paths["kiosk_keys"], paths["certs"]
    return f"""\
[kiosk]
id = "{KIOSK_ID}"
site = "{SITE}"
state_dir = "state"

[device]
pen_up_timeout_s = {pen_up_timeout_s}
max_duration_s = 30.0
customer_timeout_s = 30.0
rediscover_interval_s = 0.1

[verifier]
kind = "{DEFAULT_KIND}"

[profiles]
default = "standard"

[profiles.standard]
label = "Standard"

[profiles.{HIGH_VALUE}]
label = "High value"
threshold = {HIGH_VALUE_THRESHOLD:g}
paper_threshold = 0.7

[policy]
references = 5
max_enroll_attempts = 12

[storage]
templates_dir = "templates"
template_key = "credentials/template.key"
create_key = true

[ui]
enabled = true
port = {ui_port}
show_decision_s = 5.0

[commands]
enabled = true
central_sign_pub = "{k / keys.CENTRAL_SIGN_PUB}"

[link]
broker_host = "localhost"
broker_port = {port}
ca_file = "{paths['ca']}"
cert_file = "{c / (KIOSK_ID + '.crt')}"
key_file = "{c / (KIOSK_ID + '.key')}"
sign_key_file = "{k / keys.KIOSK_SIGN_KEY}"
central_pub_file = "{k / keys.CENTRAL_ENC_PUB}"
outbox_path = "state/outbox.sqlite"
reconnect_min_s = 0.2
reconnect_max_s = 2.0
health_interval_s = 10.0
""" + ("" if camera is None else f"""
[paper]
enabled = true
camera = "{camera}"
warmup_s = 0.0
attempts = 2
""")


def start_environment(root: Path, *, speed: float = 3.0, pen_up_timeout_s: float = 0.5) -> DemoEnv:
    from kiosk.config import load_config
    from kiosk.daemon import Daemon
    from tools.central.collector import Collector, CollectorConfig

    paths = make_keys(root)
    port = free_port()
    broker = Mosquitto.create(BrokerSettings(directory=root / "broker", ca_dir=paths["ca_dir"], port=port,
                                             collectors=("c1",), admins=(ADMIN,)),
                              Registry.load(paths["registry"]))
    broker.start()
    collector = daemon = admin = None
    pen = ReplayPen(speed=speed)
    try:
        collector = Collector(CollectorConfig(
            broker_host="localhost", broker_port=port, ca_file=paths["ca"],
            cert_file=paths["certs"] / "collector.c1.crt", key_file=paths["certs"] / "collector.c1.key",
            enc_key_files=(paths["central"] / keys.CENTRAL_ENC_KEY,), registry_file=paths["registry"],
            db=str(root / "central" / "central.sqlite"), reconnect_min_s=0.2, reconnect_max_s=2.0))
        collector.start()
        if not collector.wait_ready(20):
            raise RuntimeError("the collector did not subscribe at the broker")
        cfg_dir = root / "kiosk"
        config_path = cfg_dir / "sigkiosk.toml"
        config_path.write_text(kiosk_config_text(paths, port, pen_up_timeout_s=pen_up_timeout_s,
                                                 camera=root / "camera" / "frame.jpg"))
        config = load_config(config_path)
        operator_secret = secrets.token_urlsafe(16)
        OperatorStore(config.staff.operators_file).set("demo-staff", operator_secret)
        daemon = Daemon(config, digitizer=pen.service(config.device.segmenter()))
        daemon.start()
        admin = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"admin.{ADMIN}", protocol=mqtt.MQTTv5)
        admin.tls_set_context(client_tls_context(paths["ca"], paths["certs"] / f"admin.{ADMIN}.crt",
                                                 paths["certs"] / f"admin.{ADMIN}.key"))
        admin.connect("localhost", port)
        admin.loop_start()
        if daemon.link is None:
            raise RuntimeError("the demo's kiosk was built without its link")
        if not daemon.link.commands_ready.wait(20):
            raise RuntimeError("the kiosk's command subscription was not granted")
        return DemoEnv(root, broker, collector, daemon, pen, admin,
                       keys.load_signing_key(paths["central"] / keys.CENTRAL_SIGN_KEY), config_path,
                       operator_secret=operator_secret)
    except BaseException:
        for obj, fn in ((daemon, "stop"), (collector, "stop"), (broker, "stop")):
            if obj is not None:
                getattr(obj, fn)()
        pen.close_all()
        raise


# -- the customers --------------------------------------------------------------------------------

@dataclass
class DemoResult:
    sent: int = 0
    refusals: int = 0
    enrolled: int = 0
    truth: dict[str, str] = field(default_factory=dict)   # session id -> "genuine" / "forged"
    rows: list[Any] = field(default_factory=list)         # what the collector stored
    audit: list[dict[str, Any]] = field(default_factory=list)   # staff actions the collector stored
    #: What is left in the kiosk's outbox at the end, per kind: decisions and staff actions leave it
    #: only on the collector's receipt (kiosk.receipts), so nothing should be.
    kiosk_outbox: dict[str, int] = field(default_factory=dict)

    def counts(self, mode: str = "online") -> dict[str, dict[str, int]]:
        """Decisions by truth, for the pen (``online``) or paper (``offline``) ones."""
        out = {k: {"approved": 0, "suspicious": 0} for k in ("genuine", "forged")}
        for r in self.rows:
            kind = self.truth.get(r.payload.get("session_id", ""))
            if kind and r.payload.get("mode", "online") == mode:
                out[kind]["approved" if r.decision == "APPROVED" else "suspicious"] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": len(self.rows), **self.counts(), "paper": self.counts("offline"),
                "enrolled": self.enrolled, "refused_samples": self.refusals, "kiosk_outbox": self.kiosk_outbox,
                "audit": [{k: a.get(k) for k in ("operator", "action", "mode", "subject", "outcome")} for a in self.audit]}


class Customer:
    """Signs on the replay pen whenever the kiosk's screen asks for a signature."""

    def __init__(self, env: DemoEnv) -> None:
        self.env = env
        self.events = env.daemon.bus.subscribe()

    def drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def serve(self, signatures: list[Trajectory], until: Callable[[], bool], timeout: float = 120.0,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("the kiosk did not finish in time")
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if on_event is not None:
                on_event(ev)
            if ev.get("type") == "screen" and ev.get("screen") in ("sign", "enroll"):
                if signatures:
                    self.env.pen.sign(signatures.pop(0))
                else:
                    self.env.daemon.cancel()   # nothing left to sign with: walk away


def _post(url: str, body: dict[str, Any], cookie: str) -> dict[str, Any]:
    # ``cookie``: the screen's secret (``UiServer.cookie_header``); the API answers no one else.
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Cookie": cookie})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _decided_since(daemon: Any, before: int) -> bool:
    """The daemon has made a decision since it had made ``before``."""
    return bool(daemon.decisions > before)


def _wait_idle(daemon: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while daemon.current is not None or daemon.state.value != "idle" or not daemon._requests.empty():
        if time.monotonic() > deadline:
            raise TimeoutError("the kiosk stayed busy")
        time.sleep(0.02)


def run_demo(env: DemoEnv, writers: Writers, say: Callable[[str], None] = print, n_enroll: int = 5) -> DemoResult:
    d = env.daemon
    res = DemoResult()
    cust = Customer(env)
    ui = d.ui.url if d.ui is not None else None
    for writer, (genuine, forged) in writers.items():
        customer = f"cust-{writer}"[:64].replace(" ", "-")
        extra = max(0, len(genuine) - n_enroll - 2)   # spare genuine samples for re-signing
        enroll_pool = list(genuine[:n_enroll + extra])
        queries = [("genuine", g) for g in genuine[n_enroll + extra:]] + [("forged", f) for f in forged]

        def on_enroll(ev: dict[str, Any], customer: str = customer) -> None:
            if ev.get("type") == "enroll_sample":
                if ev["accepted"]:
                    say(f"  {customer}: {ev['label']}")
                else:
                    res.refusals += 1
                    say(f"  {customer}: refused - {'; '.join(r['message'] for r in ev['refusals'])}")

        _wait_idle(d)
        cust.drain()
        # A member of staff logs in at the kiosk and starts the enrollment (audited centrally).
        staff = d.staff.login(env.operator, env.operator_secret)[1]
        req = d.submit("enroll", customer, mode="new", staff=staff)
        d.staff.logout(staff, "handed_to_customer")
        cust.serve(enroll_pool, req.done.is_set, on_event=on_enroll)
        r = req.wait(1)
        if not r.get("ok"):
            say(f"  {customer}: enrollment failed ({r.get('error')}), skipped")
            continue
        res.enrolled += 1
        # The enrollment may not have used every spare: those become extra genuine queries.
        queries = [("genuine", g) for g in enroll_pool] + queries
        for i, (kind, traj) in enumerate(queries):
            _wait_idle(d)
            cust.drain()
            before = d.decisions
            if i == 0:
                # The central server asks this kiosk to verify the customer (signed command), for
                # a high-value transaction.
                rid = f"req-{writer}-{i}"[:64]
                payload = make_verify_command(env.central_sign_key, verify_topic(d.link.topics), d.config.kiosk_id,
                                              customer, rid, profile=HIGH_VALUE, admin=ADMIN)
                env.admin.publish(verify_topic(d.link.topics), payload, qos=1)
                session = rid
            elif i == len(queries) - 1 and len(queries) > 2:
                # A member of staff starts this one at the staff view, for a high-value
                # transaction; the screen goes to the customer and the staff session ends.
                staff = d.staff.login(env.operator, env.operator_secret)[1]
                session = d.submit("verify", customer, staff=staff, profile=HIGH_VALUE).request_id
                d.staff.logout(staff, "handed_to_customer")
            else:
                session = _post(ui + "api/verify", {"customer": customer}, d.ui.cookie_header)["session"] if ui else \
                    d.submit("verify", customer).request_id
            res.truth[session] = kind
            cust.serve([traj], functools.partial(_decided_since, d, before))
            res.sent += 1
        if d.paper is not None:
            for kind, traj in (("genuine", genuine[-1]), ("forged", forged[0])):
                paper_session = show_paper(env, customer, traj, seed=len(res.truth))
                if paper_session is not None:
                    res.truth[paper_session] = kind
                    res.sent += 1
    if d.link is not None:
        d.link.flush(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        res.rows = env.collector.store.query_decisions(kiosk_id=d.config.kiosk_id, limit=100000)
        if len(res.rows) >= res.sent:
            break
        time.sleep(0.1)
    res.audit = env.collector.store.query_audit(kiosk_id=d.config.kiosk_id)
    if d.link is not None:
        d.link.flush(10)   # the audit records' receipts may still be on their way
        res.kiosk_outbox = {k: n for k, n in d.link.stats().queue_depth.items() if k != "log"}
    return res


def show_paper(env: DemoEnv, customer: str, traj: Trajectory, *, seed: int) -> str | None:
    """The customer holds a paper signature under the camera: ``traj`` written with a ballpoint,
    photographed on a desk, and the photo put where the kiosk's camera reads it. The session id of
    the decision, or None when the kiosk found no usable photo (it said why on the screen)."""
    import cv2

    from models.render import render_ink
    from tools.photos import make_photo

    d = env.daemon
    rng = np.random.default_rng(seed)
    frame = make_photo(render_ink(traj, rng=rng), rng, difficulty="perspective").frame
    camera = Path(d.config.paper.camera)
    camera.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(camera), frame)
    _wait_idle(d)
    req = d.submit("verify_paper", customer)
    result = req.wait(60)
    if not result.get("ok"):
        log.info("paper signature not verified: %s", result.get("error"))
        return None
    return req.request_id


def print_report(res: DemoResult, say: Callable[[str], None] = print) -> None:
    say("")
    say(f"central server: {len(res.rows)} decision(s) received, verified and decrypted")
    for r in sorted(res.rows, key=lambda r: r.seq):
        p = r.payload
        kind = res.truth.get(p.get("session_id", ""), "?")
        when = time.strftime("%H:%M:%S", time.localtime(r.created_ms / 1000))
        reasons = ",".join(p.get("reasons", [])) or "-"
        what = "paper" if p.get("mode") == "offline" else "pen  "
        asked = f"{p.get('profile') or '-'} {p.get('operator') or 'customer'}"
        say(f"  #{r.seq:<4} {when} {r.kiosk_id}/{r.site}  {p.get('subject', '?'):<12} {what} {r.decision:<10} "
            f"match {100 * (r.score or 0):3.0f}%  {asked:<22} reasons {reasons:<22} (truly {kind}) "
            f"signed->report {p.get('timings_ms', {}).get('pen_up_to_report', 0):.1f} ms")
    if res.audit:
        say(f"central server: {len(res.audit)} staff action(s) audited")
        for a in res.audit:
            when = time.strftime("%H:%M:%S", time.localtime(a["created_ms"] / 1000))
            what = a["action"] + (f" ({a['mode']})" if a.get("mode") else "")
            say(f"  #{a['seq']:<4} {when} {a['kiosk_id']}  operator {a['operator']:<12} {what:<14} "
                f"{a.get('subject') or '-':<12} {a['outcome']}")
    c, cp = res.counts(), res.counts("offline")
    say("")
    say(f"summary: {res.enrolled} customer(s) enrolled, {res.refusals} sample(s) refused at enrollment; "
        f"sent {res.sent}, received {len(res.rows)}")
    say("  kiosk outbox: " + (", ".join(f"{n} {k}" for k, n in res.kiosk_outbox.items()) + " not yet confirmed stored"
                              if res.kiosk_outbox else "empty: the collector confirmed every record stored"))
    say(f"  genuine: approved {c['genuine']['approved']}, suspicious {c['genuine']['suspicious']}")
    say(f"  forged:  approved {c['forged']['approved']}, suspicious {c['forged']['suspicious']}")
    if sum(v for k in cp.values() for v in k.values()):
        say(f"  paper, genuine: approved {cp['genuine']['approved']}, suspicious {cp['genuine']['suspicious']}; "
            f"forged: approved {cp['forged']['approved']}, suspicious {cp['forged']['suspicious']}")


def check_keep(keep: Path) -> None:
    """``--keep DIR`` takes a new or empty directory: the demo makes a fresh CA and keys there and
    would mix them with an earlier run's."""
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise FileExistsError(f"{keep} exists and is not an empty directory: give a new one for --keep "
                              "(each demo makes its own CA, keys and central database)")


def print_kept(shown: Path, res: DemoResult, say: Callable[[str], None] = print) -> None:
    """Where the kept run's files are, and the commands an audit starts with (README, "Audit a
    decision"), with a real decision of this run to export."""
    db, registry = shown / "central" / "central.sqlite", shown / "central" / "registry.json"
    say("")
    say(f"demo: kept {shown} (demo keys only; the broker, collector and kiosk are stopped):")
    say(f"  central database  {db}  (decisions, staff actions, evidence)")
    say(f"  kiosk registry    {registry}  (the kiosk's public key: checks its signatures again)")
    say(f"  kiosk config      {shown / 'kiosk' / 'sigkiosk.toml'}  (profiles standard, {HIGH_VALUE})")
    say("  audit it:")
    say(f"    sigkiosk central query --db {db} --outcome suspicious")
    say(f"    sigkiosk central query --db {db} --audit")
    # One case per mode: its first suspicious decision (a dispute), else its first.
    by_mode: dict[str, Any] = {}
    for r in sorted(res.rows, key=lambda r: (r.decision == "APPROVED", r.seq)):
        by_mode.setdefault(r.payload.get("mode", "online"), r)
    for mode in ("online", "offline"):
        if mode not in by_mode:
            continue
        r, out = by_mode[mode], f"case-{'pen' if mode == 'online' else 'paper'}"
        say(f"    sigkiosk central export-case --db {db} --kiosk {r.kiosk_id} --seq {r.seq} --out {out} "
            f"--registry {registry}")


def demo(writers: Writers, *, speed: float = 3.0, json_path: Path | None = None, keep: Path | None = None,
         say: Callable[[str], None] = print) -> DemoResult:
    if keep is not None:
        check_keep(keep)
    # Absolute: the kiosk's config names files under it, and resolves relative ones against its
    # own folder.
    root = Path(tempfile.mkdtemp(prefix="sigkiosk-demo-")) if keep is None else keep.resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        say(f"demo: starting mosquitto (TLS, ACL), the central collector (SQLite) and the kiosk daemon in {root}")
        t0 = time.monotonic()
        env = start_environment(root, speed=speed)
        try:
            say(f"demo: kiosk ready in {time.monotonic() - t0:.1f} s; its screen: {env.daemon.ui.url} "
                f"(replayed pen at {speed:g}x real time)")
            res = run_demo(env, writers, say)
            print_report(res, say)
        finally:
            env.close()
        if json_path is not None:
            json_path.write_text(json.dumps(res.to_json(), indent=2) + "\n")
        if keep is not None:
            print_kept(keep, res, say)
        return res
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
