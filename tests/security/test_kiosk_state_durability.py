"""The kiosk's own state against a power cut and a full disk (found by a durability review): a
calibration move is never in force without a record reaching the audit trail, a staff revert
that cannot be saved changes nothing and says it failed, a full disk never stops the kiosk from
starting, a central command whose id cannot be saved against replay is not run, and a model
bundle refused for the disk leaves the download in progress alone. Real
template store, real classic verifier, real signed commands, a real 1 MiB file system filled to
the last byte; the audit trail is the daemon's ``Report`` callable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from daemon_helpers import as_replayed
from disk_helpers import fill_disk

from kiosk.calibration import STATE_FILE, CalibrationConfig, SiteCalibration
from kiosk.errors import CalibrationNotSaved
from kiosk.templates import TemplateStore
from models.calibration import SiteThreshold
from models.pen import make_verifier

SHIPPED = 1.28
CONFIG = CalibrationConfig(enabled=True, min_customers=3, strength=0.0, target_frr=0.2, max_down=0.05, max_up=0.04,
                           loo_offset=0.0)


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=4, n_genuine=6, n_forgeries=0, seed=41)


class Trail:
    """The daemon's audit: records kept, or lost (``None``, as an outbox error is reported)."""

    def __init__(self, working: bool = True) -> None:
        self.working = working
        self.records: list[tuple[str, str, str]] = []
        self.calls = 0

    def __call__(self, outcome: str, operator: str, mode: str, required: bool) -> object:
        self.calls += 1
        if not self.working:
            return None
        self.records.append((outcome, operator, mode))
        return len(self.records)


def _store(root: Path, population) -> TemplateStore:  # type: ignore[no-untyped-def]
    store = TemplateStore(root / "templates", root / "template.key", create_key=True)
    for w in sorted(population):
        store.put(f"cust-{w}", as_replayed(population[w][0][:5]))
    return store


def _moved(state_dir: Path, store: TemplateStore, trail: Trail, population) -> tuple[SiteCalibration, SiteThreshold]:  # type: ignore[no-untyped-def]
    state_dir.mkdir(exist_ok=True)
    cal = SiteCalibration(CONFIG, state_dir, store, trail)
    verifier = SiteThreshold(make_verifier("classic", SHIPPED))
    cal.attach(verifier)
    for w in sorted(population):
        cal.customer_changed(f"cust-{w}")
    assert verifier.threshold != SHIPPED, "the calibration did not move: the test shows nothing"
    return cal, verifier


def test_a_move_whose_record_was_lost_is_reported_at_the_next_start(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    store = _store(tmp_path, population)
    lost = Trail(working=False)                 # the outbox refused, or the power went after the save
    cal, verifier = _moved(tmp_path / "state", store, lost, population)
    moved = verifier.threshold
    # Not retried at every enrollment (a bench kiosk's reports go nowhere, always): at a start.
    calls = lost.calls
    for w in sorted(population):
        cal.customer_changed(f"cust-{w}")
    assert lost.calls == calls
    trail = Trail()
    again = SiteThreshold(make_verifier("classic", SHIPPED))
    SiteCalibration(CONFIG, tmp_path / "state", store, trail).attach(again)
    assert again.threshold == moved
    assert [(o.split(" n=")[0], op, mode) for o, op, mode in trail.records] == [
        (f"{SHIPPED:.4f}->{moved:.4f}", "kiosk", "auto")]
    # Reported now: the start after that says nothing more, and does not rewrite the file.
    before = (tmp_path / "state" / STATE_FILE).stat()
    quiet = Trail()
    SiteCalibration(CONFIG, tmp_path / "state", store, quiet).attach(SiteThreshold(make_verifier("classic", SHIPPED)))
    assert quiet.records == []
    after = (tmp_path / "state" / STATE_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_on_a_full_disk_a_revert_changes_nothing_and_the_kiosk_still_starts(tiny_fs: Path, tmp_path: Path,
                                                                           population) -> None:  # type: ignore[no-untyped-def]
    store = _store(tmp_path, population)
    trail = Trail()
    cal, verifier = _moved(tiny_fs, store, trail, population)
    moved = verifier.threshold
    saved = (tiny_fs / STATE_FILE).read_bytes()
    filler = fill_disk(tiny_fs)
    try:
        with pytest.raises(CalibrationNotSaved, match="nothing changed"):
            cal.revert("alice")
        assert verifier.threshold == moved and not cal.status()["held"]
        assert (tiny_fs / STATE_FILE).read_bytes() == saved
        assert [o.split(" n=")[0].split(" held")[0] for o, op, _ in trail.records if op == "alice"] == [
            f"{moved:.4f}->{SHIPPED:.4f}", "failed: not saved (No space left on device)"]
        # A restart on the full disk: the state is read, nothing needs writing, the kiosk starts.
        again = SiteThreshold(make_verifier("classic", SHIPPED))
        SiteCalibration(CONFIG, tiny_fs, store, Trail()).attach(again)
        assert again.threshold == moved
    finally:
        filler.unlink()
    cal.revert("alice")                          # space is back: it is done, and saved
    assert verifier.threshold == SHIPPED and cal.status()["held"]


def test_on_a_full_disk_narrowed_bounds_still_hold(tiny_fs: Path, tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    """Found by a review: the bank narrows the bounds, the kiosk starts on a full disk; the new
    threshold cannot be saved, and the one saved before (outside today's bounds) was put in force."""
    store = _store(tmp_path, population)
    _, verifier = _moved(tiny_fs, store, Trail(), population)
    moved = verifier.threshold
    narrow = dataclasses.replace(CONFIG, max_down=0.002, max_up=0.002)
    bounds = narrow.settings(SHIPPED)
    assert not bounds.lower <= moved <= bounds.upper, "the move is inside the narrow bounds: the test shows nothing"
    filler = fill_disk(tiny_fs)
    try:
        again = SiteThreshold(make_verifier("classic", SHIPPED))
        SiteCalibration(narrow, tiny_fs, store, Trail()).attach(again)
        assert bounds.lower <= again.threshold <= bounds.upper, (again.threshold, bounds)
        assert again.threshold == min(max(moved, bounds.lower), bounds.upper)
    finally:
        filler.unlink()


def test_a_command_whose_id_cannot_be_saved_against_replay_is_not_run(tiny_fs: Path, tmp_path: Path) -> None:
    """On a full disk the replay list cannot be saved: the command is refused, not run, since after
    a restart the same signed message could be replayed and run again (found by a review)."""
    from daemon_helpers import central_sign_key

    from kiosk.commands import CommandError, CommandVerifier, make_verify_command, verify_topic
    from kiosk.topics import KioskTopics

    key, _ = central_sign_key(tmp_path)
    topics = KioskTopics("sig", "site1", "kiosk-a")
    topic = verify_topic(topics)
    v = CommandVerifier(key.public_key(), "kiosk-a", topics, tiny_fs / "seen.json", max_age_s=60)
    assert v.check(topic, make_verify_command(key, topic, "kiosk-a", "c-1", "r1")).request_id == "r1"
    filler = fill_disk(tiny_fs)
    try:
        with pytest.raises(CommandError) as exc:
            v.check(topic, make_verify_command(key, topic, "kiosk-a", "c-1", "r2"))
        assert exc.value.reason == "not_saved" and exc.value.request_id == "r2"
    finally:
        filler.unlink()
    # Nor later in this process, and a restart still knows r1.
    with pytest.raises(CommandError, match="already used"):
        v.check(topic, make_verify_command(key, topic, "kiosk-a", "c-1", "r2"))
    restarted = CommandVerifier(key.public_key(), "kiosk-a", topics, tiny_fs / "seen.json", max_age_s=60)
    with pytest.raises(CommandError, match="already used"):
        restarted.check(topic, make_verify_command(key, topic, "kiosk-a", "c-1", "r1"))


def test_a_bundle_refused_for_the_disk_leaves_the_download_in_progress_alone(update_pki, tiny_fs: Path) -> None:  # type: ignore[no-untyped-def]
    """A second offer that would leave too little disk is refused before anything is touched: the
    download in progress keeps its folder and completes once its chunks come (found by a review:
    the refusal came after the cleanup, which deleted the download in progress)."""

    from fixtures_update import U_SITE, make_bundle, provision, wait_for_state

    from kiosk.bundle import Offer
    from kiosk.topics import KioskTopics
    from kiosk.update_agent import UpdateAgent, offer_topics

    root = tiny_fs / "store"
    provision(update_pki, root, make_bundle(update_pki, 1))
    first, second = make_bundle(update_pki, 2, model="dense_v2"), make_bundle(update_pki, 3)
    a = Offer.for_payload(first.envelope, first.payload, chunk_size=1024)
    b = Offer.for_payload(second.envelope, second.payload, chunk_size=1024)
    base = offer_topics("sig", U_SITE, "solo-1", None)[0]
    agent = UpdateAgent(update_pki.update_config(root, disk_reserve_bytes=0), topics=KioskTopics("sig", U_SITE, "solo-1"))
    agent.start()
    try:
        agent.on_command(f"{base}/offer", a.to_bytes())
        wait_for_state(agent, "downloading")
        filler = fill_disk(tiny_fs, leave=2048)
        agent.on_command(f"{base}/offer", b.to_bytes())
        wait_for_state(agent, "refused")
        assert agent.last_state["reason"] == "disk_full"
        assert (root / "incoming" / a.short_id).is_dir() and agent._transfer is not None
        assert agent._transfer.offer.short_id == a.short_id
        filler.unlink()
        for i in range(len(a.chunks)):
            agent.on_command(f"{base}/chunk/{a.short_id}/{i}", first.payload[i * 1024:(i + 1) * 1024])
        wait_for_state(agent, "active")
        assert agent.active_model().version == 2
    finally:
        agent.close()
