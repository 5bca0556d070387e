"""Shared set-up of the daemon tests: a config in a temp dir, the replay pen, synthetic writers."""

from __future__ import annotations

import queue
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from firmware_host.replay_pen import ReplayPen
from kiosk import keys
from kiosk.config import DaemonConfig, load_config
from kiosk.daemon import Daemon

SPEED = 3.0   # replayed at 3x real time: synthetic signatures (1.5-4 s) still pass the 0.4 s minimum
PEN_UP_S = 0.6   # generous: a starved feeder thread on a loaded machine must not cut a signature


@lru_cache(maxsize=4)
def writers(seed: int = 2026, n: int = 1):  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=n, n_genuine=8, n_forgeries=3, seed=seed)


def write_config(root: Path, *, link: dict[str, Any] | None = None, commands_pub: Path | None = None,
                 ui: bool = False, pen_up_s: float = PEN_UP_S, extra: str = "") -> Path:
    lines = [
        # Without a link nothing records decisions: these kiosks say they are bench kiosks.
        "[kiosk]", 'id = "kiosk-a"', 'site = "site1"', 'state_dir = "state"', *([] if link else ["unrecorded = true"]), "",
        "[device]", f"pen_up_timeout_s = {pen_up_s}", "customer_timeout_s = 20.0", "rediscover_interval_s = 0.05", "",
        "[storage]", 'template_key = "credentials/template.key"', "create_key = true", "",
        "[ui]", f"enabled = {'true' if ui else 'false'}", "port = 0", "show_decision_s = 30.0", "",
    ]
    if commands_pub is not None:
        lines += ["[commands]", "enabled = true", f'central_sign_pub = "{commands_pub}"', ""]
    if link is not None:
        lines += ["[link]"] + [f"{k} = {_toml(v)}" for k, v in link.items()] + [""]
    path = root / "sigkiosk.toml"
    path.write_text("\n".join(lines) + extra)
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return f'"{v}"'


def link_table(link_pki: Any, port: int, root: Path, kiosk: str = "kiosk-a") -> dict[str, Any]:
    cert, key = link_pki.cert(kiosk)
    # No kiosk_id/site: the link takes them from [kiosk] (write_config: kiosk-a, site1).
    return {"broker_host": "localhost", "broker_port": port,
            "ca_file": str(link_pki.ca_dir / "ca.crt"), "cert_file": str(cert), "key_file": str(key),
            "sign_key_file": str(link_pki.sign_key(kiosk)), "central_pub_file": str(link_pki.central_pub),
            "outbox_path": str(root / "state" / "outbox.sqlite"), "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
            "group": "canary"}


def central_sign_key(root: Path) -> tuple[Any, Path]:
    priv = root / "central" / keys.CENTRAL_SIGN_KEY
    pub = root / "central" / keys.CENTRAL_SIGN_PUB
    keys.generate_signing_key(priv, pub)
    return keys.load_signing_key(priv), pub


def staff_login(daemon: Daemon, operator: str = "alice", pin: str = "246810") -> Any:
    """An operator logged in at the kiosk (``kiosk.staff``): enroll and delete need one."""
    from kiosk.staff import OperatorStore

    ops = OperatorStore(daemon.config.staff.operators_file)
    if ops.entry(operator) is None:
        ops.set(operator, pin)
    return daemon.staff.login(operator, pin)[1]


def start_daemon(config_path: Path) -> tuple[Daemon, ReplayPen, DaemonConfig]:
    config = load_config(config_path)
    pen = ReplayPen(speed=SPEED, replug_after_s=0.3)
    daemon = Daemon(config, digitizer=pen.service(config.device.segmenter(), rediscover_interval=0.05))
    daemon.start()
    return daemon, pen, config


def sign_when_asked(daemon: Daemon, pen: ReplayPen, events: "queue.Queue[dict]", signatures: list,
                    until, timeout: float = 60.0, seen: list | None = None, unplug_first: int | None = None) -> None:
    """The customer: signs the next signature each time the screen asks for one."""
    deadline = time.monotonic() + timeout
    first = True
    while not until():
        assert time.monotonic() < deadline, "the kiosk did not finish in time"
        try:
            ev = events.get(timeout=0.05)
        except queue.Empty:
            continue
        if seen is not None:
            seen.append(ev)
        if ev.get("type") == "screen" and ev.get("screen") in ("sign", "enroll") and signatures:
            pen.sign(signatures.pop(0), unplug_after=unplug_first if first else None)
            first = False


def wait_idle(daemon: Daemon, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while daemon.pending or daemon.current is not None or daemon.state.value != "idle":
        assert time.monotonic() < deadline, "daemon stayed busy"
        time.sleep(0.02)


def as_replayed(trajs: list) -> list:
    """References as the replay pen delivers them (time runs SPEED times faster), for tests that
    store a template directly instead of enrolling through the pen."""
    import dataclasses

    return [dataclasses.replace(t, t=(t.t - t.t[0]) / SPEED) for t in trajs]
