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
    # A kiosk set to keep none ([storage] seen_signatures = 0) keeps none, and drops what it kept.
    keeps_none = TemplateStore(tmp_path / "templates", tmp_path / "template.key", seen_signatures=0)
    assert keeps_none.remember("cust-2", _line(50, 5.0)) == 0 and keeps_none.seen("cust-2") == ()


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
    genuine, _ = writers()["001"]
    try:
        assert daemon.store is not None
        daemon.store.put("cust-7", as_replayed(genuine[:5]))
        events = daemon.bus.subscribe()
        results = []
        for signature in (genuine[5], jittered_time(genuine[5], 0.01 * genuine[5].t), genuine[6]):
            req = daemon.submit("verify", "cust-7")
            sign_when_asked(daemon, pen, events, [signature], req.done.is_set)
            results.append(req.wait(1))
            wait_idle(daemon)
        first, replay, fresh = results
        assert first["decision"] == "APPROVED", first
        assert replay["decision"] == "SUSPICIOUS" and "too_similar" in replay["reasons"], replay
        assert RETRACES_AN_EARLIER in replay["explanations"]
        assert fresh["decision"] == "APPROVED", fresh
        assert len(daemon.store.seen("cust-7")) == 3
    finally:
        daemon.stop()
        pen.close_all()
