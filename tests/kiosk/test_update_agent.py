"""The agent without a broker: local installs, the daemon's failure report, a broken model with
nothing to roll back to, switch listeners. Real files, real runtime."""

from __future__ import annotations

from pathlib import Path

from fixtures_update import U_SITE, UpdatePki, make_bundle, provision, wait_for_state

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


def test_what_an_admin_credential_can_queue_is_charged_whole_and_bounded(update_pki: UpdatePki, tmp_path: Path) -> None:
    """Whoever holds a broker credential that may write command topics (without the signing keys)
    sends messages the agent holds in memory before it can check them: each is charged its topic,
    payload and Python's objects, the queue holds a bounded number, and chunks that come before
    any offer are kept for a few offers only (found by a review: empty payloads under long topics
    were charged nothing, 1-byte early chunks 1 byte, and made-up offer ids slowed every message)."""
    import dataclasses
    import time

    from kiosk.update_agent import MAX_EARLY_OFFERS, MAX_QUEUED_MESSAGES, MESSAGE_COST, offer_topics

    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    config = dataclasses.replace(update_pki.update_config(root), max_bundle_bytes=1 << 20)
    agent = UpdateAgent(config, topics=KioskTopics("sig", U_SITE, "solo-1"))
    base = offer_topics("sig", U_SITE, "solo-1", None)[0]
    long_topic = base + "/x" * 30_000                          # 60 kB, payload empty
    for _ in range(100):
        agent.on_command(long_topic, b"")
    held = agent._queue.qsize()
    assert 0 < held < 100 and agent._queued_bytes == held * (len(long_topic) + MESSAGE_COST) <= 2 << 20
    short = UpdateAgent(config, topics=KioskTopics("sig", U_SITE, "solo-1"))
    for _ in range(MAX_QUEUED_MESSAGES + 50):
        short.on_command(base + "/offer", b"")
    assert short._queue.qsize() == MAX_QUEUED_MESSAGES

    # Chunks of made-up offers, handled by the agent's thread: a few offers' worth are kept.
    agent = UpdateAgent(config, topics=KioskTopics("sig", U_SITE, "solo-1"))
    agent.start()
    try:
        for n in range(200):
            agent.on_command(f"{base}/chunk/id{n}/0", b"x")
        deadline = time.monotonic() + 10
        while agent._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        with agent._lock:
            assert len(agent._pending) == MAX_EARLY_OFFERS
            assert agent._pending_bytes == MAX_EARLY_OFFERS * (1 + MESSAGE_COST)
        assert agent._queued_bytes == 0
    finally:
        agent.close()


def test_a_download_that_would_leave_too_little_disk_for_decisions_is_refused(update_pki: UpdatePki,
                                                                             tmp_path: Path) -> None:
    """The chunks and the staged copy go where the kiosk writes its decisions: an offer that would
    leave less than ``disk_reserve_bytes`` free is refused before a byte is written (found by a
    review: a download that filled the disk left every later decision unrecorded)."""
    import dataclasses

    from kiosk.bundle import Offer
    from kiosk.update_agent import offer_topics

    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    bundle = make_bundle(update_pki, 2, model="dense_v2")
    offer = Offer.for_payload(bundle.envelope, bundle.payload)
    base = offer_topics("sig", U_SITE, "solo-1", None)[0]
    for reserve, expected in ((1 << 60, "refused"), (0, "downloading")):
        agent = UpdateAgent(dataclasses.replace(update_pki.update_config(root), disk_reserve_bytes=reserve),
                            topics=KioskTopics("sig", U_SITE, "solo-1"))
        agent.start()
        try:
            agent.on_command(f"{base}/offer", offer.to_bytes())
            assert wait_for_state(agent, "refused", "downloading") == expected, agent.last_state
            if expected == "refused":
                assert agent.last_state["reason"] == "disk_full" and "decisions" in agent.last_state["detail"]
                assert not any((root / "incoming").iterdir())
            assert agent.active_model().version == 1
        finally:
            agent.close()


def test_a_chunk_that_cannot_be_written_drops_the_download(update_pki: UpdatePki, tmp_path: Path) -> None:
    """The disk went away under a download (full, or the transfer's folder gone): the download is
    dropped at once with the reason, its space given back, and the old model serves on."""
    import shutil

    from kiosk.bundle import Offer
    from kiosk.update_agent import offer_topics

    root = tmp_path / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    bundle = make_bundle(update_pki, 2, model="dense_v2")
    offer = Offer.for_payload(bundle.envelope, bundle.payload, chunk_size=1024)
    base = offer_topics("sig", U_SITE, "solo-1", None)[0]
    agent = _agent(update_pki, root)
    agent.start()
    try:
        agent.on_command(f"{base}/offer", offer.to_bytes())
        wait_for_state(agent, "downloading")
        shutil.rmtree(root / "incoming" / offer.short_id)
        agent.on_command(f"{base}/chunk/{offer.short_id}/0", bundle.payload[:1024])
        wait_for_state(agent, "refused")
        assert agent.last_state["reason"] == "io_error" and "chunk 0" in agent.last_state["detail"]
        assert agent._transfer is None and not any((root / "incoming").iterdir())
        assert agent.active_model().version == 1
    finally:
        agent.close()
