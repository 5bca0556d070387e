"""The agent without a broker: local installs, the daemon's failure report, a broken model with
nothing to roll back to, switch listeners. Real files, real runtime."""

from __future__ import annotations

from pathlib import Path

from fixtures_update import U_SITE, UpdatePki, make_bundle, provision

from kiosk.slots import SlotInfo
from kiosk.topics import KioskTopics
from kiosk.update_agent import UpdateAgent


def _agent(pki: UpdatePki, root: Path) -> UpdateAgent:
    return UpdateAgent(pki.update_config(root), topics=KioskTopics("sig", U_SITE, "solo-1"))


def test_local_install_switch_listener_and_daemon_reported_failure(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    agent = _agent(update_pki, root)
    seen: list[SlotInfo | None] = []
    agent.add_switch_listener(seen.append)
    agent.recover()
    make_bundle(update_pki, 2, model="dense_v2").write(tmp_path / "v2.skb")
    assert agent.install_file(tmp_path / "v2.skb") == "active"
    assert [s.version for s in seen if s] == [2]
    assert set(agent.active_model().model_paths()) == {"dense_v2.tflite"}
    assert (root / "current" / "dense_v2.tflite").exists()
    # The daemon sees the new model misbehave: back to version 1, and the listener hears of it.
    back = agent.report_model_failure("inference errors")
    assert back is not None and back.version == 1 and agent.active_model().version == 1
    assert seen[-1].version == 1 and agent.last_state["state"] == "rolled_back"
    assert "inference errors" in agent.last_state["detail"]
    # A second report has nothing left to roll back to: the model is withdrawn, not kept.
    assert agent.report_model_failure("still bad") is None
    assert agent.active_model() is None and agent.last_state["reason"] == "no_rollback_target"
    assert seen[-1] is None


def test_broken_active_without_previous_is_not_served(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    (root / "slots" / "a" / "dense_v1.golden.npz").write_bytes(b"not the golden vectors")
    agent = _agent(update_pki, root)
    agent.recover()
    assert agent.last_state["state"] == "failed" and agent.last_state["reason"] == "no_rollback_target"
    assert "dense_v1.golden.npz" in agent.last_state["detail"]
    assert agent.active_model() is None
    # A good update repairs the appliance.
    make_bundle(update_pki, 2, model="dense_v2").write(tmp_path / "v2.skb")
    assert agent.install_file(tmp_path / "v2.skb") == "active"
    assert agent.active_model().version == 2


def test_local_install_refuses_like_mqtt(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    agent = _agent(update_pki, root)
    make_bundle(update_pki, 2, sign=[update_pki.rogue_key]).write(tmp_path / "rogue.skb")
    assert agent.install_file(tmp_path / "rogue.skb") == "refused"
    assert agent.last_state["reason"] == "unknown_key" and agent.active_model().version == 1


def test_write_failure_while_staging_keeps_old_model(update_pki: UpdatePki, tmp_path: Path) -> None:
    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    agent = _agent(update_pki, root)
    make_bundle(update_pki, 2, model="dense_v2").write(tmp_path / "v2.skb")
    # A plain file where the staging directory must go: mkdir fails as on a broken disk.
    blocker = root / "slots" / ".staged.tmp"
    blocker.write_bytes(b"")
    assert agent.install_file(tmp_path / "v2.skb") == "failed"
    assert agent.last_state["reason"] == "io_error" and "staging" in agent.last_state["detail"]
    assert agent.active_model().version == 1 and agent.check_slot(agent.active_model()) is None
    blocker.unlink()
    assert agent.install_file(tmp_path / "v2.skb") == "active"   # nothing was burnt by the failure
