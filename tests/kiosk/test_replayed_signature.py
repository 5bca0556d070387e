"""A signature the customer gave the kiosk before, recorded (a sniffed pad cable) and played to the
pen again, is a copy: the kiosk keeps the written paths of each customer's latest signatures,
encrypted beside their template, and compares every question with them as with the references.

Before, only references were compared: a recording of any earlier signature at the counter,
re-timed by 1 %, was APPROVED as the customer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import as_replayed, sign_when_asked, start_daemon, wait_idle, write_config, writers
from shared_data import shared_data

from kiosk.templates import SEEN_DEFAULT, SEEN_SUFFIX, TemplateError, TemplateStore, TemplateUnreadable
from models.device_variants import jittered_time
from models.path_copy import copy_print
from models.pen import RETRACES_AN_EARLIER, ClassicVerifier
from models.trajectory import Trajectory
from tools.datasets import load_online


def _store(tmp_path: Path) -> TemplateStore:
    return TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)


def _line(n: int, k: float) -> np.ndarray:
    s = np.linspace(0, 1, n)
    xy = np.stack([s, np.sin(k * s)], axis=1)
    return copy_print(xy, xy)


def test_the_kept_paths_are_the_latest_encrypted_bound_to_their_customer_and_deleted_with_them(tmp_path: Path) -> None:
    store = _store(tmp_path)
    genuine, _ = writers()["001"]
    with pytest.raises(TemplateError):                       # nothing kept of a stranger
        store.remember("cust-1", _line(50, 1.0))
    store.put("cust-1", genuine[:5])
    store.put("cust-2", genuine[:5])
    assert store.seen("cust-1") == ()
    for k in range(SEEN_DEFAULT + 3):
        assert store.remember("cust-1", _line(50, 1.0 + k)) == min(k + 1, SEEN_DEFAULT)
    kept = store.seen("cust-1")
    assert len(kept) == SEEN_DEFAULT
    assert np.allclose(kept[-1], _line(50, SEEN_DEFAULT + 3.0), atol=1e-6)   # the newest last
    assert np.allclose(kept[0], _line(50, 4.0), atol=1e-6)               # the oldest dropped
    seen_file = store._seen_path("cust-1")
    assert seen_file.suffix == SEEN_SUFFIX and oct(seen_file.stat().st_mode & 0o777) == "0o600"
    assert b"cust-1" not in seen_file.read_bytes() and store.count() == 2   # encrypted; not a template
    # Another customer's file copied over this one's, or a flipped bit: refused, not used.
    store.remember("cust-2", _line(50, 2.0))
    shutil.copy(store._seen_path("cust-2"), seen_file)
    with pytest.raises(TemplateUnreadable):
        store.seen("cust-1")
    blob = bytearray(store._seen_path("cust-2").read_bytes())
    blob[-1] ^= 1
    store._seen_path("cust-2").write_bytes(bytes(blob))
    with pytest.raises(TemplateUnreadable):
        store.seen("cust-2")
    # A damaged file is started afresh at the next signature kept.
    assert store.remember("cust-2", _line(50, 3.0)) == 1
    # Deleting the customer deletes what was kept of their signatures.
    assert store.delete("cust-1")
    assert not seen_file.exists() and not os.path.exists(store._path("cust-1"))
    # A kiosk set to keep fewer reads fewer; set to keep none, it removes what it kept at start.
    store.remember("cust-2", _line(50, 4.0))
    assert len(TemplateStore(tmp_path / "templates", tmp_path / "template.key", seen_signatures=1).seen("cust-2")) == 1
    keeps_none = TemplateStore(tmp_path / "templates", tmp_path / "template.key", seen_signatures=0)
    assert not store._seen_path("cust-2").exists()
    assert keeps_none.remember("cust-2", _line(50, 5.0)) == 0 and keeps_none.seen("cust-2") == ()


def test_new_references_forget_what_was_kept_more_references_do_not(tmp_path: Path) -> None:
    """A staff Replace may mend a wrong enrollment: what was kept of the signatures given against
    the old references (someone else's, maybe) goes with them (found by a review)."""
    from models.paper_reference import PaperReference

    store = _store(tmp_path)
    genuine, _ = writers()["001"]
    store.put("cust-1", genuine[:5])
    store.remember("cust-1", _line(50, 1.0))
    store.add_references("cust-1", genuine[5:6])              # Add: the same customer, more references
    assert len(store.seen("cust-1")) == 1
    store.put("cust-1", genuine[1:6])                          # Replace
    assert store.seen("cust-1") == ()
    store.remember("cust-1", _line(50, 2.0))
    store._path("cust-1").write_bytes(b"damaged")              # a paper Replace over it drops the pen references
    rng = np.random.default_rng(3)
    paper = PaperReference(rng.integers(0, 256, (128, 128), dtype=np.uint8), rng.normal(size=16))
    store.put_paper("cust-1", [paper], over_unreadable=True)
    assert store.seen("cust-1") == ()


def test_a_seen_file_that_cannot_be_read_or_holds_another_layout_is_damaged_not_fatal(tmp_path: Path) -> None:
    import io

    store = _store(tmp_path)
    genuine, _ = writers()["001"]
    store.put("cust-1", genuine[:5])
    store._seen_path("cust-1").mkdir()                          # EIO, permissions, a directory in its place
    with pytest.raises(TemplateUnreadable, match="cannot be read"):
        store.seen("cust-1")
    store._seen_path("cust-1").rmdir()
    # Written with the kiosk's own key, but prints of one path each: refused, not compared (it
    # raised IndexError in every verification: found by a review).
    buf = io.BytesIO()
    np.savez(buf, paths=np.zeros((2, 1, 256, 2), dtype=np.float32))
    nonce = os.urandom(12)
    store._seen_path("cust-1").write_bytes(b"SKT1" + nonce + store._aead.encrypt(nonce, buf.getvalue(),
                                                                                 store._seen_aad("cust-1")))
    with pytest.raises(TemplateUnreadable, match="shape"):
        store.seen("cust-1")


def test_a_signature_given_before_and_replayed_is_a_copy_a_new_one_is_not() -> None:
    ds = load_online(shared_data("online/susig/VisualSubCorpus"), "susig-visual")
    verifier = ClassicVerifier()
    for w in sorted(ds.writers)[:4]:
        g = [s.trajectory for s in ds.genuine(w)]
        refs, earlier, fresh = g[:5], g[5:8], g[8:]
        reference_set = verifier.enroll(refs)
        seen = [verifier.copy_print(t) for t in earlier]
        for t in earlier:
            replay = jittered_time(t, 0.01 * t.t)
            assert not verifier.verify(reference_set, replay).too_similar       # the references alone
            v = verifier.verify(reference_set, replay, seen=seen)
            assert v.too_similar and v.decision == "SUSPICIOUS" and RETRACES_AN_EARLIER in v.explanations
        for t in fresh:
            assert not verifier.verify(reference_set, t, seen=seen).too_similar


def test_the_kiosk_refuses_a_recording_of_a_signature_it_approved_before(tmp_path: Path) -> None:
    """Through the daemon and the replay pen: the customer signs (APPROVED), then a recording of
    that signature, 1 % slower, is played to the pen (SUSPICIOUS, the record says why), then the
    customer signs anew (APPROVED)."""
    daemon, pen, _ = start_daemon(write_config(tmp_path))
    genuine, forged = writers()["001"]
    try:
        assert daemon.store is not None
        daemon.store.put("cust-7", as_replayed(genuine[:5]))
        daemon.store.put("cust-3", as_replayed(genuine[:3]))
        # A damaged seen file never costs the customer the verification (found by a review).
        daemon.store._seen_path("cust-3").mkdir()
        events = daemon.bus.subscribe()

        def verify(customer: str, signature: Trajectory) -> dict:  # type: ignore[type-arg]
            req = daemon.submit("verify", customer)
            sign_when_asked(daemon, pen, events, [signature], req.done.is_set)
            wait_idle(daemon)
            return req.wait(1)

        first = verify("cust-7", genuine[5])
        replay = verify("cust-7", jittered_time(genuine[5], 0.01 * genuine[5].t))
        forgery = verify("cust-7", forged[0])
        fresh = verify("cust-7", genuine[6])
        assert first["decision"] == "APPROVED", first
        assert replay["decision"] == "SUSPICIOUS" and "too_similar" in replay["reasons"], replay
        assert RETRACES_AN_EARLIER in replay["explanations"]
        assert forgery["decision"] == "SUSPICIOUS", forgery
        assert fresh["decision"] == "APPROVED", fresh
        # Only what was approved is kept: a caught replay, a forgery or junk signed in the
        # customer's name would push the customer's own out (16 of them did: a review).
        assert len(daemon.store.seen("cust-7")) == 2
        # Three references: the path is not compared, so nothing is kept; the damaged file is read
        # as nothing and the decision is made.
        assert verify("cust-3", genuine[5])["decision"] in ("APPROVED", "SUSPICIOUS")
        daemon.store._seen_path("cust-3").rmdir()
        assert verify("cust-3", genuine[6])["ok"] and daemon.store.seen("cust-3") == ()
    finally:
        daemon.stop()
        pen.close_all()
