"""The kiosk screen in real headless Chromium (Debian's, driven by playwright): a customer types
their number, signs on the replayed pen, sees the ink drawn live and the decision with its reasons.
The screenshot is checked: the verdict's colour and the ink's pixels are there."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_helpers import as_replayed, start_daemon, wait_idle, write_config, writers

from kiosk.staff import OperatorStore
from kiosk.templates import TemplateStore

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

INK_BGR = np.array([0x4D, 0x1F, 0x0B])       # #0b1f4d, the ink colour in app.js
APPROVED_BGR = np.array([0x2F, 0x6B, 0x0A])  # #0a6b2f, the APPROVED banner in style.css


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
    return path


def _near(img: np.ndarray, bgr: np.ndarray, tol: int = 40) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - bgr) <= tol, axis=2)


def test_screen_draws_ink_live_and_shows_the_decision(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    genuine, _ = writers()["001"]
    # A long pen-up timeout: the ink stays on the signing screen long enough to be looked at.
    daemon, pen, config = start_daemon(write_config(tmp_path, ui=True, pen_up_s=1.5))
    TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-5", as_replayed(genuine[:5]))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
            # The page's CSP forbids eval; the test's own probes (wait_for_function) need it.
            page = browser.new_page(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
            page.goto(daemon.ui.start_url)   # what the sigkiosk-browser unit opens: the page + its secret
            assert page.url == daemon.ui.url, "the screen secret must leave the address bar"
            page.wait_for_selector("#screen-idle:not([hidden])")
            page.wait_for_function("document.body.dataset.connected === 'yes'")
            page.fill("#customer", "cust-5")
            page.click("#btn-verify")
            page.wait_for_selector("#screen-sign:not([hidden])")
            assert page.inner_text("#sign-title") == "Please sign"
            sim = pen.sign(genuine[6])
            assert sim.finished.wait(10)
            # Live ink: the canvas has ink while the customer is still at the pen.
            page.wait_for_function("document.getElementById('pad').getContext('2d')"
                                   ".getImageData(0, 0, 1600, 600).data.some((v, i) => i % 4 === 0 && v < 60)")
            pad_png = page.locator("#pad").screenshot()
            pad = cv2.imdecode(np.frombuffer(pad_png, np.uint8), cv2.IMREAD_COLOR)
            ink_pixels = int(_near(pad, INK_BGR).sum())
            assert ink_pixels > 500, f"only {ink_pixels} ink pixels on the pad"
            ys, xs = np.nonzero(_near(pad, INK_BGR))
            assert xs.max() - xs.min() > pad.shape[1] * 0.15   # a signature's width, not a dot

            page.wait_for_selector("#screen-decision:not([hidden])", timeout=20000)
            assert page.inner_text("#verdict") == "APPROVED"
            rate = page.inner_text("#match-rate")
            assert rate.endswith("%") and 50 <= int(rate[:-1]) <= 100
            aspects = page.inner_text("#aspects")
            for word in ("Shape", "Speed", "Pressure", "Rhythm"):
                assert word in aspects
            shot = tmp_path / "decision.png"
            page.screenshot(path=str(shot))
            img = cv2.imread(str(shot))
            assert _near(img, APPROVED_BGR, 10).sum() > 20000, "no green APPROVED banner in the screenshot"
            assert _near(img, INK_BGR).sum() > 200, "the checked signature is not shown with the decision"
            # Big type for older customers: the verdict is at least 60 px high.
            assert page.evaluate("parseFloat(getComputedStyle(document.getElementById('verdict')).fontSize)") >= 60

            # Enrollment screens: a staff member logs in on the staff view and starts it; the
            # customer's screen takes over; the first sample is saved: "Save (1/5)".
            page.click("#btn-finish")
            wait_idle(daemon)
            OperatorStore(config.staff.operators_file).set("alice", "246810")
            page.click("#link-staff")
            page.wait_for_selector("#staff-login:not([hidden])")
            page.fill("#operator", "alice")
            page.fill("#pin", "246810")
            page.click("#btn-login")
            page.wait_for_selector("#staff-actions:not([hidden])")
            page.fill("#s-customer", "cust-6")
            page.click("#btn-enroll")
            page.wait_for_selector("#screen-sign:not([hidden])", timeout=20000)
            assert page.inner_text("#sign-title") == "Signature 1 of 5"
            pen.sign(genuine[0])
            page.wait_for_function("document.getElementById('enroll-feedback').textContent.includes('Save (1/5)')",
                                   timeout=20000)
            assert page.inner_text("#sign-title") == "Signature 2 of 5"
            page.click("#btn-cancel")
            page.wait_for_selector("#screen-idle:not([hidden])", timeout=20000)
            browser.close()
    finally:
        daemon.stop()
        pen.close_all()


def test_screen_api_refuses_other_origins_and_bad_input(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    daemon, pen, _ = start_daemon(write_config(tmp_path, ui=True))
    try:
        def post(path: str, body: object, **headers: str) -> tuple[int, dict]:
            req = urllib.request.Request(daemon.ui.url + path.lstrip("/"), data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Cookie": daemon.ui.cookie_header, **headers})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert post("/api/verify", {"customer": "x"}, Origin="http://evil.example")[0] == 403
        assert post("/api/verify", {"customer": "../../etc/passwd"})[0] == 400
        status, body = post("/api/verify", {"customer": "nobody"})
        assert status == 202
        # 202 only queues the request: the daemon may not have taken it yet, so wait for the
        # error screen itself rather than for "idle" (which it also is before taking it).
        deadline = time.monotonic() + 20
        while daemon.bus.screen.get("screen") != "error":
            assert time.monotonic() < deadline, f"no error screen: {daemon.bus.screen.get('screen')}"
            time.sleep(0.02)
        assert "No signature on file" in daemon.bus.screen["message"]
        wait_idle(daemon)
        assert daemon.ui.host == "127.0.0.1"
    finally:
        daemon.stop()
        pen.close_all()
