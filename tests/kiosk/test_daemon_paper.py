"""The paper path in the appliance: a customer enrolled on the pad, a photo of a paper signature
from the camera (a generated photo replayed through the real camera code), or a scanned file.

Real parts: the daemon, its encrypted template store, the shipped int8 CNN-LSTM through the TFLite
runtime, OpenCV's VideoCapture reading the photos, the signature finder, the Isolation Forest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.config import ConfigError, load_config
from kiosk.daemon import Daemon
from kiosk.errors import RequestRefused
from models.render import render_ink
from tests.kiosk.daemon_helpers import write_config, writers
from tools.photos import make_photo

CUSTOMER = "cust-paper-1"


def _photo(traj, seed: int, difficulty: str = "clean") -> np.ndarray:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return make_photo(render_ink(traj, rng=rng), rng, difficulty=difficulty).frame


@pytest.fixture
def paper_kiosk(tmp_path: Path):  # type: ignore[no-untyped-def]
    camera = tmp_path / "camera" / "frame.png"
    camera.parent.mkdir()
    # No countdown between photos here (3 s each by default): the pacing and its live preview are
    # tested in test_ui_layout.py; these tests are about what the photos decide.
    cfg = write_config(tmp_path, extra=f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\nattempts = 2\n'
                                       'countdown_s = 0.0\n')
    daemon = Daemon(load_config(cfg))
    daemon.start()
    genuine, forgeries = next(iter(writers().values()))
    daemon.store.put(CUSTOMER, list(genuine[:5]))
    try:
        yield daemon, camera, (genuine, forgeries)
    finally:
        daemon.stop()


def _run(daemon: Daemon, **kw) -> dict:  # type: ignore[no-untyped-def]
    return daemon.submit("verify_paper", CUSTOMER, **kw).wait(120)


def test_a_photo_of_a_paper_signature_is_verified_against_pad_references(paper_kiosk) -> None:  # type: ignore[no-untyped-def]
    daemon, camera, w = paper_kiosk
    events = daemon.bus.subscribe()
    cv2.imwrite(str(camera), _photo(w[0][6], seed=1))
    genuine = _run(daemon)
    assert genuine["ok"] is True and genuine["decision"] in ("APPROVED", "SUSPICIOUS")
    assert 0.0 <= genuine["match_rate"] <= 1.0
    cv2.imwrite(str(camera), _photo(w[1][0], seed=2))
    forged = _run(daemon)
    assert forged["ok"] is True
    # The same customer's fresh signature matches better than a skilled imitation of it.
    assert genuine["match_rate"] > forged["match_rate"]
    shown = []
    while not events.empty():
        ev = events.get_nowait()
        if ev.get("screen") == "decision":
            shown.append(ev)
    assert len(shown) == 2
    # The shipped pad-ink fusion weights the hand features 0 (held-out writers: they add nothing
    # across media), so their "layout" is not shown as a check; the anomaly check still explains.
    assert {a["code"] for a in shown[0]["aspects"]} == {"shape", "strokes", "proportions"}
    assert isinstance(shown[1]["explanations"], list)
    assert daemon.decisions == 2


def test_a_copy_of_a_reference_is_suspicious(paper_kiosk) -> None:  # type: ignore[no-untyped-def]
    daemon, camera, w = paper_kiosk
    # The very reference drawn again, scanned: a photocopy, not a fresh signature.
    scan = camera.parent / "scan.png"
    cv2.imwrite(str(scan), render_ink(w[0][0]).pixels)
    out = _run(daemon, image=scan)
    assert out["decision"] == "SUSPICIOUS" and "too_similar" in out["reasons"]


def test_a_photo_without_a_signature_is_refused_with_a_reason_after_the_attempts(paper_kiosk) -> None:  # type: ignore[no-untyped-def]
    daemon, camera, _ = paper_kiosk
    blank = np.full((720, 960, 3), 90, np.uint8)
    blank[100:620, 200:760] = 238   # an empty sheet on a desk
    cv2.imwrite(str(camera), blank)
    out = _run(daemon)
    assert out["ok"] is False and out["error"] == "no_usable_photo" and out["message"]
    assert daemon.decisions == 0


def test_a_too_dark_frame_is_refused_with_advice(paper_kiosk) -> None:  # type: ignore[no-untyped-def]
    daemon, camera, w = paper_kiosk
    cv2.imwrite(str(camera), _photo(w[0][6], seed=3, difficulty="too_dark"))
    out = _run(daemon)
    assert out["ok"] is False and out["error"] == "no_usable_photo"
    assert "dark" in out["message"].lower()


def test_camera_gone_fails_the_attempt_not_the_kiosk(paper_kiosk) -> None:  # type: ignore[no-untyped-def]
    daemon, camera, w = paper_kiosk
    out = _run(daemon)   # nothing at the camera path: unplugged
    assert out["ok"] is False and out["error"] == "camera_gone"
    cv2.imwrite(str(camera), _photo(w[0][7], seed=4))
    again = _run(daemon)   # plugged back: the next attempt works
    assert again["ok"] is True


def test_scans_bad_files_get_clear_errors(paper_kiosk, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, _, w = paper_kiosk
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), render_ink(w[0][5], rng=np.random.default_rng(5)).pixels)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:300])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    white = tmp_path / "white.png"
    cv2.imwrite(str(white), np.full((400, 600), 250, np.uint8))
    for bad in (truncated, empty, text, white, tmp_path / "missing.png"):
        out = _run(daemon, image=bad)
        assert out["ok"] is False and out["error"] == "no_signature_on_scan" and out["message"], bad.name
    assert _run(daemon, image=good)["ok"] is True


def test_unknown_customer_and_unconfigured_kiosk(paper_kiosk, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, _, _ = paper_kiosk
    out = daemon.submit("verify_paper", "nobody-here").wait(30)
    assert out == {"ok": False, "error": "not_enrolled"}
    plain = tmp_path / "plain"
    plain.mkdir()
    d2 = Daemon(load_config(write_config(plain)))
    with pytest.raises(RequestRefused, match=r"\[paper\]"):
        d2.submit("verify_paper", CUSTOMER)


def test_paper_config_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[paper\] frames"):
        load_config(write_config(tmp_path, extra="\n[paper]\nenabled = true\nframes = 0\n"))
    with pytest.raises(ConfigError, match=r"\[paper\] unknown key"):
        load_config(write_config(tmp_path, extra="\n[paper]\ncamra = 0\n"))
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
