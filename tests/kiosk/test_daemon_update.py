"""The fused verifier (learned TFLite model + classic, calibrated fusion) and the daemon running the
model-update agent: a signed bundle pushed over a real broker becomes the daemon's verifier; a
bundle whose model does not load is reported, rolled back, and the previous model keeps serving."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import as_replayed, sign_when_asked, wait_idle, writers
from fixtures_link import wait_for
from fixtures_update import BUNDLE_NAME, U_SITE, UpdatePki, provision

from firmware_host.replay_pen import ReplayPen
from kiosk.bundle import BundleFile
from kiosk.config import ConfigError, load_config
from kiosk.daemon import Daemon
from kiosk.templates import TemplateStore
from models import APPROVED, FusedVerifier, make_verifier, shipped_assets
from models.runtime import ModelError
from tools.broker import Mosquitto
from tools.bundle import ModelSpec, create_bundle
from tools.rollout import AdminClient, target_base

ASSETS = shipped_assets()
STUDENT = ASSETS / "tsgatr_student_int8.tflite"
KIOSK = "canary-1"
THRESHOLD = 1.30


def fused_bundle(pki: UpdatePki, version: int, tmp: Path, *, fusion: dict[str, Any] | None = None) -> BundleFile:
    """The shipped student model (+ its golden vectors and learned config) and fusion.json."""
    extra = [ASSETS / "tsgatr_student_int8.config.json"]
    if fusion is None:
        extra.append(ASSETS / "fusion.json")
    else:
        d = tmp / f"fusion-v{version}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "fusion.json").write_text(json.dumps(fusion))
        extra.append(d / "fusion.json")
    return create_bundle(name=BUNDLE_NAME, version=version,
                         models=[ModelSpec(STUDENT, ASSETS / "tsgatr_student_int8.golden.npz")],
                         extra_files=extra, sign_keys=list(pki.admin_keys[:1]))


# -- the fused verifier on its own ------------------------------------------------------------------

def test_fused_verifier_genuine_approved_forgeries_lower() -> None:
    ver = make_verifier("fused", THRESHOLD)
    # The shipped fused verifier is the match score with the learned distance (fused_score.json).
    assert isinstance(ver, FusedVerifier) and ver.score_model is not None and ver.score_model.uses_learned
    mv = ver.model_versions()
    assert mv["fused"] == "2" and mv["learned"].startswith("tsgatr_student_int8.tflite@") and "fusion" in mv
    pop = writers(2026, 3)
    g_rates, f_rates = [], []
    for genuine, forged in pop.values():
        tpl = ver.enroll(genuine[:5])
        for q in genuine[5:]:
            v = ver.verify(tpl, q)
            assert v.decision == APPROVED, v
            g_rates.append(v.match_rate)
        f_rates += [ver.verify(tpl, q).match_rate for q in forged]
    assert np.mean(f_rates) < np.mean(g_rates) - 0.3
    assert np.median(f_rates) < min(g_rates)
    # The classic part is the classic verifier's own: the same aspect checks explain the verdict.
    genuine = pop["001"][0]
    fv = ver.verify(ver.enroll(genuine[:5]), genuine[5])
    cv = ver.classic.verify(ver.classic.enroll(genuine[:5]), genuine[5])
    assert fv.aspects == cv.aspects and fv.too_similar == cv.too_similar


def test_fused_verifier_rate_is_half_at_the_operating_point() -> None:
    ver = make_verifier("fused", THRESHOLD)
    assert isinstance(ver, FusedVerifier)
    genuine, forged = writers(2026, 1)["001"]
    tpl = ver.enroll(genuine[:5])
    for q in list(genuine[5:]) + list(forged):
        v = ver.verify(tpl, q)
        # decision <=> calibrated probability at or above the fusion's operating point
        p = 1.0 / (1.0 + np.exp(v.distance))
        assert (v.decision == APPROVED) == (p >= ver.threshold and not v.too_similar)
        assert (v.match_rate >= 0.5) == (p >= ver.threshold)


def test_fused_missing_or_incomplete_model_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found"):
        make_verifier("fused", THRESHOLD, model_dir=tmp_path / "nope")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / STUDENT.name).write_bytes(STUDENT.read_bytes())
    (partial / "tsgatr_student_int8.config.json").write_bytes((ASSETS / "tsgatr_student_int8.config.json").read_bytes())
    with pytest.raises(ModelError, match="fusion.json missing"):
        make_verifier("fused", THRESHOLD, model_dir=partial)
    # Through the config: a missing model_dir is a ConfigError when the file is read (sigkiosk run --check)...
    cfg = _write_config(tmp_path, verifier={"kind": "fused", "model_dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="model_dir"):
        load_config(cfg)
    # ...and an incomplete one a ModelError when the daemon is built, before it serves anyone.
    cfg = _write_config(tmp_path, verifier={"kind": "fused", "model_dir": str(partial)})
    with pytest.raises(ModelError, match="fusion.json"):
        Daemon(load_config(cfg), digitizer=ReplayPen().service(load_config(cfg).device.segmenter()))
    # A fused score that does not take the learned distance (the match score's file under the fused
    # score's name, in a bundle) is refused, not run as if it were the fused verifier's.
    from models.match_score import SHIPPED as MATCH_SCORE

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for f in (STUDENT, ASSETS / "tsgatr_student_int8.config.json"):
        (wrong / f.name).write_bytes(f.read_bytes())
    (wrong / "fused_score.json").write_bytes(MATCH_SCORE.read_bytes())
    with pytest.raises(ModelError, match="takes no learned distance"):
        make_verifier("fused", THRESHOLD, model_dir=wrong)
    # Nor is a two-distance fusion under the fused score's name.
    (wrong / "fused_score.json").write_bytes((ASSETS / "fusion.json").read_bytes())
    with pytest.raises(ModelError, match="does not hold the form its name says"):
        make_verifier("fused", THRESHOLD, model_dir=wrong)
    # Unknown kinds are still refused, and the match score is the default.
    with pytest.raises(ConfigError, match="kind"):
        load_config(_write_config(tmp_path, verifier={"kind": "learned"}))
    assert load_config(_write_config(tmp_path)).verifier.kind == "match-score"


def test_update_table_needs_link_and_known_keys(tmp_path: Path, update_pki: UpdatePki) -> None:
    upd = {"root": str(tmp_path / "models"), "bundle_name": BUNDLE_NAME,
           "admin_keys": [str(p) for p in update_pki.admin_pubs()]}
    with pytest.raises(ConfigError, match=r"\[update\] needs \[link\]"):
        load_config(_write_config(tmp_path, update=upd))
    link = _link_table(update_pki, 1883, tmp_path)
    cfg = load_config(_write_config(tmp_path, update=upd, link=link))
    assert cfg.update is not None and cfg.update.bundle_name == BUNDLE_NAME and len(cfg.update.admin_keys) == 3
    with pytest.raises(ConfigError, match=r"\[update\].*typo"):
        load_config(_write_config(tmp_path, update={**upd, "typo": 1}, link=link))
    with pytest.raises(ConfigError, match=r"\[update\] missing"):
        load_config(_write_config(tmp_path, update={"root": "m"}, link=link))


# -- the daemon with the update agent, over a real broker -------------------------------------------

def test_daemon_serves_pushed_bundle_and_keeps_serving_when_one_fails_to_load(
        update_pki: UpdatePki, update_broker: Mosquitto, tmp_path: Path) -> None:
    root = tmp_path / "models"
    provision(update_pki, root, fused_bundle(update_pki, 1, tmp_path))
    upd = {"root": str(root), "bundle_name": BUNDLE_NAME, "admin_keys": [str(p) for p in update_pki.admin_pubs()],
           "transfer_timeout_s": 30.0}
    cfg_path = _write_config(tmp_path, verifier={"kind": "fused"}, update=upd,
                             link=_link_table(update_pki, update_broker.port, tmp_path))
    config = load_config(cfg_path)
    pen = ReplayPen(speed=3.0, replug_after_s=0.3)
    daemon = Daemon(config, digitizer=pen.service(config.device.segmenter(), rediscover_interval=0.05))
    daemon.start()
    genuine, forged = writers()["001"]
    try:
        assert daemon.update_agent is not None
        # At start the installed bundle (v1) serves, not the configured/shipped fallback.
        assert daemon.status()["model_versions"][BUNDLE_NAME] == "1"
        assert daemon.status()["model_versions"]["fused"] == "1"
        assert wait_for(lambda: daemon.link.commands_ready.is_set(), 15)
        TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-1", as_replayed(genuine[:5]))
        base = target_base("sig", site=U_SITE, kiosk=KIOSK)
        with AdminClient(update_pki.admin(update_broker.port), update_pki.registry()) as admin:
            admin.push(fused_bundle(update_pki, 2, tmp_path), base)
            assert wait_for(lambda: daemon.status()["model_versions"].get(BUNDLE_NAME) == "2", 60), \
                daemon.status()["model_versions"]
            assert daemon.update_agent.active_model().version == 2
            assert _verify(daemon, pen, "cust-1", genuine[5]) == APPROVED
            # v3: the model passes its golden vectors, but its fusion.json is unusable (a positive
            # weight): the daemon cannot load it, reports it, the agent rolls back to v2.
            bad = {"names": ["classic", "learned"], "weights": [1.0, -1.0], "bias": 0.0, "threshold": 0.5}
            admin.push(fused_bundle(update_pki, 3, tmp_path, fusion=bad), base)
            assert wait_for(lambda: daemon.update_agent.last_state.get("state") == "rolled_back", 60), \
                daemon.update_agent.last_state
            assert "fusion" in daemon.update_agent.last_state.get("detail", "")
            assert daemon.update_agent.active_model().version == 2
            assert daemon.status()["model_versions"][BUNDLE_NAME] == "2"
            assert _verify(daemon, pen, "cust-1", genuine[6]) == APPROVED
    finally:
        daemon.stop()
        pen.close_all()
    assert daemon.update_agent._thread is None   # closed on shutdown


def _verify(daemon: Daemon, pen: ReplayPen, customer: str, signature: Any) -> str:
    wait_idle(daemon)
    events = daemon.bus.subscribe()
    req = daemon.submit("verify", customer)
    sign_when_asked(daemon, pen, events, [signature], req.done.is_set)
    res = req.wait(1)
    daemon.bus.unsubscribe(events)
    assert res["ok"], res
    return str(res["decision"])


# -- config files -------------------------------------------------------------------------------------

def _link_table(pki: UpdatePki, port: int, root: Path) -> dict[str, Any]:
    cfg = pki.link_config(KIOSK, port, root / "state" / "outbox.sqlite")
    return {f.name: (str(v) if isinstance(v, Path) else v) for f in dataclasses.fields(cfg)
            if (v := getattr(cfg, f.name)) is not None}


def _write_config(root: Path, *, verifier: dict[str, Any] | None = None, update: dict[str, Any] | None = None,
                  link: dict[str, Any] | None = None) -> Path:
    tables: dict[str, dict[str, Any]] = {
        "kiosk": {"id": KIOSK, "site": U_SITE, "state_dir": "state"},
        "device": {"pen_up_timeout_s": 0.6, "customer_timeout_s": 20.0, "rediscover_interval_s": 0.05},
        "storage": {"template_key": "credentials/template.key", "create_key": True},
        "ui": {"enabled": False, "port": 0},
        "verifier": verifier or {},
    }
    if link is not None:
        tables["link"] = link
    if update is not None:
        tables["update"] = update
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    path = root / f"sigkiosk-{time.monotonic_ns()}.toml"
    path.write_text("\n".join(lines))
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))
