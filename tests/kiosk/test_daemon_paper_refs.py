"""Customers enrolled from paper: scanned files or camera photos as references, and paper
questions checked against them (or against pad references drawn as ink), the decision record
saying which.

Real parts: the daemon with its encrypted template store, the staff login and audit, the shipped
int8 CNN-LSTM through the TFLite runtime, OpenCV decoding the Dutch scans of the shared data and
reading the camera (a folder of numbered photos made by ``tools.photos``, through
``cv2.VideoCapture``), the signature finder; the decisions go through the outbox, mosquitto (TLS,
ACL) and the collector into SQLite, where the test reads them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_helpers import link_table, staff_login, wait_idle, write_config, writers
from fixtures_link import LinkPki, wait_for

from kiosk.config import load_config
from kiosk.daemon import Daemon
from kiosk.errors import RequestRefused, StaffLoginRequired
from models.render import render_ink
from tests.shared_data import shared_data
from tools.central.collector import Collector
from tools.photos import make_photo

DUTCH = "offline/sigcomp-dutch-kaggle"
PAD_CUSTOMER = "cust-pad-1"
PAPER_CUSTOMER = "cust-paper-2"


def _scans(writer: str) -> list[Path]:
    return sorted((shared_data(DUTCH) / writer).glob("*.png"))


def _forgery(writer: str, k: int = 0) -> Path:
    return sorted((shared_data(DUTCH) / f"{writer}_forg").glob("*.png"))[k]


def _kiosk(tmp_path: Path, camera: Path, link: dict | None = None) -> Daemon:  # type: ignore[type-arg]
    # One frame a photo, no warm-up, no countdown: each photo is the next numbered image.
    cfg = write_config(tmp_path, link=link,
                       extra=f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\nframes = 1\n'
                             'attempts = 2\ncountdown_s = 0.0\npreview = false\n')
    daemon = Daemon(load_config(cfg))
    daemon.start()
    return daemon


def test_scans_and_pad_references_both_reach_the_central_record(link_pki: LinkPki, mqtt_broker, tmp_path: Path,
                                                                  caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    collector = Collector(link_pki.collector_config(mqtt_broker.port, str(tmp_path / "central.sqlite"),
                                                    fresh_session=True))
    collector.start()
    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "frame_0000.png"), np.full((480, 640, 3), 200, np.uint8))
    daemon = _kiosk(tmp_path, camera, link_table(link_pki, mqtt_broker.port, tmp_path))
    genuine, _ = writers()["001"]
    scans = _scans("039")
    bad = tmp_path / "bad"
    bad.mkdir()
    corrupt = bad / "corrupt.png"
    corrupt.write_bytes(scans[0].read_bytes()[:400])
    blank = bad / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 700), 240, np.uint8))
    try:
        assert collector.wait_ready()
        # A customer enrolled on the pad: a paper question is checked against the pad ink.
        daemon.store.put(PAD_CUSTOMER, list(genuine[:5]))
        drawn = tmp_path / "drawn.png"
        cv2.imwrite(str(drawn), render_ink(genuine[6], rng=np.random.default_rng(6)).pixels)
        pad = daemon.submit("verify_paper", PAD_CUSTOMER, image=drawn).wait(120)
        assert pad["ok"] and pad["references"] == "pad-ink"

        # Enrolled from scans by an operator: the corrupt file, the blank sheet and the same
        # sheet given twice are refused, each with its reason; the five usable ones are kept.
        files = [*scans[:3], corrupt, scans[1], blank, *scans[3:5]]
        staff = staff_login(daemon)
        wait_idle(daemon)
        res = daemon.submit("enroll_paper", PAPER_CUSTOMER, images=files, staff=staff).wait(120)
        assert res["ok"] and res["references"] == 5, res
        assert [(r["picture"], r["code"]) for r in res["refusals"]] == [
            ("file 4", "unusable"), ("file 5", "duplicate"), ("file 6", "unusable")]
        assert "same sheet" in res["refusals"][1]["message"] and "blank" in res["refusals"][2]["message"]
        stored = daemon.store.get(PAPER_CUSTOMER)
        assert stored is not None and stored.references == () and len(stored.paper) == 5

        # Paper questions now use the paper references: the writer's own later signature scores
        # higher than a skilled forgery of it, and the forgery is refused. (Whether one given
        # signature passes is the model's accuracy, not this test's: at the paper operating point
        # about 1 genuine in 10 of the Dutch test writers is refused, and this one, the 10th, is
        # the one of this writer's 7 later scans that is; all 12 forgeries are refused.
        # `python -m tools.paper_operating_point` counts them over writers.)
        wait_idle(daemon)
        own = daemon.submit("verify_paper", PAPER_CUSTOMER, image=scans[9]).wait(120)
        forged = daemon.submit("verify_paper", PAPER_CUSTOMER, image=_forgery("039")).wait(120)
        assert own["references"] == forged["references"] == "paper"
        assert forged["decision"] == "SUSPICIOUS" and forged["match_rate"] < own["match_rate"], (own, forged)
        assert (own["decision"] == "APPROVED") == (own["match_rate"] >= 0.5), own
        # Enrolled on paper only: a pen question has nothing to compare with.
        wait_idle(daemon)
        pen = daemon.submit("verify", PAPER_CUSTOMER).wait(60)
        assert pen["ok"] is False and pen["error"] == "not_enrolled"

        assert daemon.link.flush(20)
        rows = wait_for(lambda: (r := collector.store.query_decisions(kiosk_id="kiosk-a")) and len(r) == 3 and r,
                        what="three decisions at the collector")
        by_subject: dict[str, list[dict]] = {}
        for r in rows:
            by_subject.setdefault(r.payload["subject"], []).append(r.payload)
        assert [p["paper_references"] for p in by_subject[PAD_CUSTOMER]] == ["pad-ink"]
        assert [p["paper_references"] for p in by_subject[PAPER_CUSTOMER]] == ["paper", "paper"]
        assert sorted(p["decision"] for p in by_subject[PAPER_CUSTOMER]) == sorted([own["decision"], forged["decision"]])
        assert all(p["mode"] == "offline" and p["schema"] == 3 for ps in by_subject.values() for p in ps)
        # The paper check's own explanations (its proportions) are recorded as its screen gives them.
        assert sorted(p["explanations"] for p in by_subject[PAPER_CUSTOMER]) == sorted(
            [own["explanations"], forged["explanations"]])
        audit = wait_for(lambda: [a for a in collector.store.query_audit(subject=PAPER_CUSTOMER)
                                  if a["action"] == "enroll_paper"] or None, what="the enrollment audited")
        assert [a["outcome"] for a in audit][-2:] == ["started", "ok"] and audit[-1]["operator"] == "alice"

        # Found by a review: pen "add" to a customer enrolled from paper only had no pen signature
        # to check the new ones against and asks for no customer number again, so whoever stood at
        # the pen became the customer. Refused now, as "new" is; Replace is the way (confirmed).
        wait_idle(daemon)
        add = daemon.submit("enroll", PAPER_CUSTOMER, mode="add", staff=staff_login(daemon)).wait(30)
        assert add["ok"] is False and add["error"] == "not_enrolled", add
        wait_idle(daemon)
        new = daemon.submit("enroll", PAPER_CUSTOMER, mode="new", staff=staff_login(daemon)).wait(30)
        assert new["ok"] is False and new["error"] == "already_enrolled", new
        again = daemon.store.get(PAPER_CUSTOMER)
        assert again is not None and again.references == () and len(again.paper) == 5
    finally:
        daemon.stop()
        collector.stop()
    # Nothing of the customer or of the pictures in the logs.
    assert PAPER_CUSTOMER not in caplog.text and PAD_CUSTOMER not in caplog.text


def test_enrolled_from_camera_photos_with_a_bad_photo_and_the_same_sheet_twice(tmp_path: Path) -> None:
    scans = _scans("029")
    pictures = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in scans[:3]]
    rng = np.random.default_rng(29)
    from models.image import SignatureImage

    def photo(k: int, difficulty: str = "clean") -> np.ndarray:
        return make_photo(SignatureImage(pictures[k]), rng, difficulty=difficulty).frame

    camera = tmp_path / "camera"
    camera.mkdir()
    # Photo 1; the same sheet again (refused: duplicate); too dark (refused by the camera's judge
    # with its advice, then the next frame is the retry); photo 2; photo 3.
    frames = [photo(0), photo(0), photo(1, "too_dark"), photo(1), photo(2)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(camera / f"frame_{i:04d}.png"), f)
    daemon = _kiosk(tmp_path, camera)
    try:
        events = daemon.bus.subscribe()
        res = daemon.submit("enroll_paper", PAPER_CUSTOMER, staff=staff_login(daemon)).wait(180)
        assert res["ok"] and res["references"] == 3, res
        assert [r["code"] for r in res["refusals"]] == ["duplicate"]
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        prompts = [e["title"] for e in seen if e.get("screen") == "paper"]
        assert prompts[0] == "Reference signature 1 of 3: hold it under the camera"
        assert "Reference signature 3 of 3: hold it under the camera" in prompts
        notices = [e["message"] for e in seen if e.get("type") == "notice"]
        assert any("same signature" in n for n in notices) and any("dark" in n.lower() for n in notices)
        stored = daemon.store.get(PAPER_CUSTOMER)
        assert stored is not None and len(stored.paper) == 3
        # The file holds no photo: its size is three prepared images and little else.
        (path,) = list(daemon.config.storage.templates_dir.glob("*.tpl"))
        assert path.stat().st_size < 3 * 128 * 128 + 8000
        # "new" again is refused (there are paper references on file); "add" needs some on file.
        wait_idle(daemon)
        again = daemon.submit("enroll_paper", PAPER_CUSTOMER, staff=staff_login(daemon)).wait(60)
        assert again["ok"] is False and again["error"] == "already_enrolled"
        wait_idle(daemon)
        add = daemon.submit("enroll_paper", "cust-none", mode="add", staff=staff_login(daemon)).wait(60)
        assert add["ok"] is False and add["error"] == "not_enrolled"
    finally:
        daemon.stop()


def test_too_few_usable_pictures_store_nothing_and_hostile_requests_are_refused(tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "frame_0000.png"), np.full((480, 640, 3), 200, np.uint8))
    daemon = _kiosk(tmp_path, camera)
    scans = _scans("019")
    bomb = tmp_path / "bomb.png"
    # 64 megapixels of white paper in a 70 kB file: refused from its header, never decoded.
    ok, png = cv2.imencode(".png", np.full((8000, 8000), 255, np.uint8))
    assert ok and len(png) < 100_000
    bomb.write_bytes(png.tobytes())
    daemon.store.put(PAD_CUSTOMER, list(writers()["001"][0][:5]))
    try:
        staff = staff_login(daemon)
        # A customer enrolled on the pad is given paper references by Replace (the customer typed
        # again), not "new": under "new" a mistyped number gave an existing customer someone
        # else's paper signatures without the retype check.
        new = daemon.submit("enroll_paper", PAD_CUSTOMER, images=scans[:4], staff=staff).wait(60)
        assert new["ok"] is False and new["error"] == "already_enrolled"
        assert daemon.store.get(PAD_CUSTOMER).paper == ()   # type: ignore[union-attr]
        wait_idle(daemon)
        res = daemon.submit("enroll_paper", PAD_CUSTOMER, mode="replace", images=[scans[0], bomb, scans[0]],
                            staff=staff, confirm=PAD_CUSTOMER).wait(60)
        assert res["ok"] is False and res["error"] == "too_few_references" and res["references"] == 1
        assert [r["code"] for r in res["refusals"]] == ["unusable", "duplicate"]
        assert "too large" in res["refusals"][0]["message"]
        stored = daemon.store.get(PAD_CUSTOMER)
        assert stored is not None and stored.paper == () and len(stored.references) == 5   # nothing lost
        with pytest.raises(StaffLoginRequired):
            daemon.submit("enroll_paper", PAD_CUSTOMER, images=scans[:3])
        with pytest.raises(RequestRefused, match="at most"):
            daemon.submit("enroll_paper", PAD_CUSTOMER, images=[scans[0]] * 21, staff=staff)
        with pytest.raises(RequestRefused, match="enroll_paper only"):
            daemon.submit("verify_paper", PAD_CUSTOMER, images=scans[:3])
        with pytest.raises(RequestRefused, match="file paths"):
            daemon.submit("enroll_paper", PAD_CUSTOMER, images="/etc/passwd", staff=staff)  # type: ignore[arg-type]
        with pytest.raises(RequestRefused, match="confirming"):
            daemon.submit("enroll_paper", PAD_CUSTOMER, mode="replace", images=scans[:3], staff=staff)
        # Replaced with the customer retyped: the pad references stay, paper questions use paper.
        wait_idle(daemon)
        ok = daemon.submit("enroll_paper", PAD_CUSTOMER, mode="replace", images=scans[:4], staff=staff,
                           confirm=PAD_CUSTOMER).wait(120)
        assert ok["ok"] and ok["references"] == 4
        wait_idle(daemon)
        verdict = daemon.submit("verify_paper", PAD_CUSTOMER, image=scans[8]).wait(120)
        assert verdict["references"] == "paper" and verdict["decision"] == "APPROVED"
    finally:
        daemon.stop()


def test_stale_paper_references_fall_back_to_pad_ink_or_ask_for_enrollment(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """References prepared by another version of the preparation are never compared: with pad
    references the paper question uses those (and says so), without any the customer is not
    enrolled for paper until enrolled again."""
    from models.paper_reference import PaperReference

    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "frame_0000.png"), np.full((480, 640, 3), 200, np.uint8))
    daemon = _kiosk(tmp_path, camera)
    genuine, _ = writers()["001"]
    verifier = daemon.paper
    assert verifier is not None
    scans = _scans("019")
    from kiosk.flows.capture import read_scan

    kept = [verifier.prepare_reference(read_scan(p)) for p in scans[:3]]
    old = [PaperReference(r.prepared, r.hand, "0") for r in kept]
    daemon.store.put(PAD_CUSTOMER, list(genuine[:5]))
    daemon.store.put_paper(PAD_CUSTOMER, old)
    daemon.store.put_paper(PAPER_CUSTOMER, old)
    try:
        with_pad = daemon.submit("verify_paper", PAD_CUSTOMER, image=scans[8]).wait(120)
        assert with_pad["ok"] and with_pad["references"] == "pad-ink"
        assert any(getattr(r, "event", None) == "paper_references_stale" for r in caplog.records)
        wait_idle(daemon)
        paper_only = daemon.submit("verify_paper", PAPER_CUSTOMER, image=scans[8]).wait(120)
        assert paper_only["ok"] is False and paper_only["error"] == "not_enrolled"
        assert any("enroll the customer from paper again" in r.getMessage() for r in caplog.records)
    finally:
        daemon.stop()
