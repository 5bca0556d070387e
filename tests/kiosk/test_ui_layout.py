"""The kiosk's pages on real kiosk displays, in real headless Chromium (Debian's, driven by
playwright): 800 x 480 (the Raspberry Pi 7-inch display), 1280 x 800 and 1920 x 1080.

Every screen state (idle, sign, enroll with refusals, the paper step with its preview and
countdown, the decisions with their reasons, messages, the staff login, actions and confirmation)
is shown by the real daemon's event stream and checked in the page: nothing is taller or wider
than the display, no element lies outside it or has its text cut, the buttons are on top and
whole; the screenshots are checked for the buttons' and banners' colours. Also: the staff view's
link-health line against a real mosquitto, and the paced camera attempts with their live preview.
"""

from __future__ import annotations

import base64
import logging
import math
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from daemon_helpers import as_replayed, link_table, start_daemon, wait_idle, write_config, writers
from fixtures_link import LinkPki, start_broker, wait_for

from kiosk.config import load_config
from kiosk.daemon import Daemon
from kiosk.flows.capture import preview_of
from kiosk.screen_events import (
    AspectView,
    DecisionShown,
    DecisionWithheld,
    EnrollPrompt,
    Message,
    Notice,
    PaperPrompt,
    RefusalView,
    ScreenChange,
    SignPrompt,
    State,
)
from kiosk.staff import OperatorStore
from kiosk.templates import TemplateStore
from models.match_score import SHIPPED, ScoreModel
from models.render import render_ink
from tools.central.collector import Collector
from tools.photos import make_photo

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DISPLAYS = [(800, 480), (1280, 800), (1920, 1080)]
ACCENT_BGR = np.array([0x91, 0x3D, 0x0B])      # #0b3d91: primary buttons
SUSPICIOUS_BGR = np.array([0x00, 0x3A, 0xA3])  # #a33a00: the SUSPICIOUS banner

# Everything in the visible page, checked in the page itself. Returns what is wrong, in words.
FITS_JS = """() => {
  const vw = window.innerWidth, vh = window.innerHeight, de = document.documentElement, bad = [];
  if (de.scrollHeight > vh) bad.push(`page is ${de.scrollHeight} px tall on a ${vh} px display`);
  if (de.scrollWidth > vw) bad.push(`page is ${de.scrollWidth} px wide on a ${vw} px display`);
  for (const el of document.querySelectorAll("main *")) {
    if (!el.getClientRects().length || el.closest(".visually-hidden")) continue;   // not rendered
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const name = el.id ? "#" + el.id : el.tagName.toLowerCase() + (el.className ? "." + el.className : "")
      + " '" + (el.textContent || "").trim().slice(0, 30) + "'";
    if (r.left < -0.5 || r.top < -0.5 || r.right > vw + 0.5 || r.bottom > vh + 0.5)
      bad.push(`${name} at ${[r.left, r.top, r.right, r.bottom].map(Math.round)} leaves the display`);
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      bad.push(`${name} is cut: ${el.scrollWidth} px of content in ${el.clientWidth}`);
    if (el.clientHeight > 0 && el.scrollHeight > el.clientHeight + 1)
      bad.push(`${name} overflows: ${el.scrollHeight} px of content in ${el.clientHeight}`);
  }
  return bad;
}"""

# A key element: shown, inside the display, its text whole, and on top (a tap lands on it).
KEY_JS = """(sel) => {
  const el = document.querySelector(sel);
  if (!el || !el.getClientRects().length) return `${sel} is not shown`;
  const r = el.getBoundingClientRect();
  if (r.left < 0 || r.top < 0 || r.right > innerWidth || r.bottom > innerHeight)
    return `${sel} is not inside the display`;
  if (el.scrollWidth > el.clientWidth + 1) return `${sel} text cut: ${el.scrollWidth} > ${el.clientWidth}`;
  const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
  if (!hit || !(hit === el || el.contains(hit))) return `${sel} is covered by ${hit && (hit.id || hit.tagName)}`;
  return [r.left, r.top, r.right, r.bottom];
}"""

#: The longest reasons the paper verifier gives (models/hand_features.FEATURE_WORDS, "much").
EXPLANATIONS = ("slant differs from the references (leans much further left or upright)",
                "top outline much flatter or hollower than the references",
                "much fewer separate pieces (pen lifts) than the references")
PEN_ASPECTS = (("shape", "Shape"), ("speed", "Speed"), ("pressure", "Pressure"), ("rhythm", "Rhythm"))


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run tools/setup.sh (Debian package 'chromium')")
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _near(img: np.ndarray, bgr: np.ndarray, tol: int = 12) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - bgr) <= tol, axis=2)


def _dark_photo() -> np.ndarray:
    genuine, _ = writers()["001"]
    rng = np.random.default_rng(7)
    return make_photo(render_ink(genuine[6], rng=rng), rng, difficulty="too_dark").frame


def _screens(dark: np.ndarray) -> list[tuple[str, list[Any], str, list[str]]]:
    """(name, events to publish, selector that is shown once they are, key elements)."""
    pen_ok = tuple(AspectView(c, label, True, 91 - 3 * i) for i, (c, label) in enumerate(PEN_ASPECTS))
    pen_off = tuple(AspectView(c, label, i % 2 == 0, 40 + 9 * i) for i, (c, label) in enumerate(PEN_ASPECTS))
    paper_off = (AspectView("shape", "Shape", True, 71), AspectView("layout", "Layout", False, 38),
                 AspectView("strokes", "Stroke directions", False, 27), AspectView("proportions", "Proportions", False, 12))
    refused = (RefusalView("too_fast", "signed much faster than a signature is written: "
                                       "please sign at your usual pace"),
               RefusalView("inconsistent", "this signature differs from your earlier ones: "
                                           "please sign again as you usually do"))
    dark_advice = "too dark: turn on the desk light or move the paper into the light"
    return [
        ("idle", [ScreenChange(State.IDLE, Message("idle", message="No signature on file for this customer number."))],
         "#screen-idle:not([hidden])", ["#btn-verify", "#btn-paper", "#customer"]),
        ("sign", [ScreenChange(State.CAPTURE, SignPrompt("Please sign", "screen")),
                  Notice("The pen was disconnected. Please wait, then sign again.")],
         "#screen-sign:not([hidden])", ["#sign-title", "#btn-done", "#btn-cancel", "#pad"]),
        ("enroll", [ScreenChange(State.ENROLL, EnrollPrompt("Signature 3 of 5", 2, 5, refused=refused))],
         "#screen-sign:not([hidden])", ["#sign-title", "#btn-done", "#btn-cancel", "#pad"]),
        ("paper", [ScreenChange(State.CAPTURE, PaperPrompt("Hold the signed paper under the camera", 2, 3,
                                                          dark_advice, 3.0)), preview_of(dark)],
         "#screen-paper:not([hidden])", ["#paper-countdown", "#paper-preview", "#btn-paper-cancel"]),
        ("approved", [ScreenChange(State.DECISION, DecisionShown("APPROVED", 87, False, pen_ok, (), 60.0))],
         "#screen-decision:not([hidden])", ["#verdict", "#match-rate", "#btn-finish"]),
        ("suspicious-pen", [ScreenChange(State.DECISION, DecisionShown("SUSPICIOUS", 31, False, pen_off, (), 60.0))],
         "#screen-decision:not([hidden])", ["#verdict", "#btn-finish"]),
        ("suspicious-paper", [ScreenChange(State.DECISION, DecisionShown("SUSPICIOUS", 12, True, paper_off,
                                                                         EXPLANATIONS, 60.0))],
         "#screen-decision:not([hidden])", ["#verdict", "#btn-finish", "#explanations"]),
        ("wait", [ScreenChange(State.DECISION, DecisionWithheld(60.0))],
         "#screen-decision:not([hidden])", ["#verdict", "#btn-finish"]),
        # A bench kiosk ([kiosk] unrecorded): the result says nothing records it, shown or withheld.
        ("bench-approved", [ScreenChange(State.DECISION, DecisionShown("APPROVED", 87, False, pen_ok, (), 60.0,
                                                                      recorded=False))],
         "#screen-decision:not([hidden])", ["#verdict", "#decision-note", "#btn-finish"]),
        ("bench-wait", [ScreenChange(State.DECISION, DecisionWithheld(60.0, recorded=False))],
         "#screen-decision:not([hidden])", ["#verdict", "#decision-note", "#btn-finish"]),
        ("error", [ScreenChange(State.IDLE, Message("error", message=(
            "No usable photo of the signature. too bright: the paper is washed out; move it out of direct "
            "sunlight or away from the lamp")))],
         "#screen-message:not([hidden])", ["#message-title", "#btn-ok"]),
    ]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _until(page: Any, expression: str, timeout: float = 10.0) -> None:
    """Wait until the page's ``expression`` is true. Polled through page.evaluate, which the
    page's Content-Security-Policy (no eval) leaves alone, unlike wait_for_function: the pages are
    tested under their real CSP, so the preview's drawing is known to work under it."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


def _check(page: Any, shot: Path, keys: list[str]) -> dict[str, list[float]]:
    bad = page.evaluate(FITS_JS)
    assert not bad, f"{shot.name}: " + "; ".join(bad)
    where = {}
    for sel in keys:
        r = page.evaluate(KEY_JS, sel)
        assert isinstance(r, list), f"{shot.name}: {r}"
        where[sel] = r
    page.screenshot(path=str(shot))
    return where


def _primary_on_screenshot(shot: Path, rect: list[float]) -> float:
    """Share of the button's box in the screenshot that has the primary colour."""
    img = cv2.imread(str(shot))
    assert img is not None
    x0, y0, x1, y1 = (int(round(v)) for v in rect)
    box = img[y0 + 6:y1 - 6, x0 + 6:x1 - 6]
    return float(_near(box, ACCENT_BGR).mean())


def test_every_screen_fits_the_kiosk_displays(tmp_path: Path, browser: Any, link_pki: LinkPki) -> None:
    # A link to a port nothing listens on: the staff view's status line has its longest form; so do
    # the profiles' labels (40 characters) in the staff view's picker. With [paper] (a camera that is
    # never opened here) the staff view has its enroll-from-paper row and its paper verification too.
    profiles = ('\n[profiles.standard]\nlabel = "Standard - everyday withdrawals, forms"\n'
                '[profiles.high-value]\nlabel = "High value - transfers over 10000, loans"\nthreshold = 0.6\n')
    # With [calibration] the staff view has its site threshold screen and its confirmation.
    cfg = write_config(tmp_path, ui=True, link=link_table(link_pki, _closed_port(), tmp_path),
                       extra=f'\n[paper]\nenabled = true\ncamera = "{tmp_path / "no-camera.png"}"\n' + profiles
                       + "\n[calibration]\nenabled = true\n")
    daemon, pen, config = start_daemon(cfg)
    # The last decision line in its longest form: a 32-character operator's, under the longest profile name.
    daemon.last_decision = {"decision": "SUSPICIOUS", "profile": "p" * 32, "operator": "o" * 32, "at": time.time()}
    ui = daemon.ui
    assert ui is not None
    OperatorStore(config.staff.operators_file).set("alice", "246810")
    dark = _dark_photo()
    screens = _screens(dark)
    try:
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.goto(ui.start_url)
        _until(page, "document.body.dataset.connected === 'yes'")
        for w, h in DISPLAYS:
            page.set_viewport_size({"width": w, "height": h})
            page.goto(ui.url)
            _until(page, "document.body.dataset.connected === 'yes'")
            # Readable at arm's length: the root type is at least 14 px on the smallest display.
            assert page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)") >= 14
            for name, events, shown, keys in screens:
                for ev in events:
                    daemon.bus.publish(ev)
                page.wait_for_selector(shown, timeout=5000)
                if name == "paper":
                    _until(page, "Number(document.body.dataset.previews) > 0", timeout=5)
                shot = tmp_path / f"{w}x{h}-{name}.png"
                where = _check(page, shot, keys)
                if name == "idle":
                    assert page.inner_text("#btn-verify") == "Sign now"
                    assert _primary_on_screenshot(shot, where["#btn-verify"]) > 0.5, f"{shot.name}: no Sign now button"
                if name in ("sign", "enroll"):
                    assert _primary_on_screenshot(shot, where["#btn-done"]) > 0.5, f"{shot.name}: no Done button"
                    # The pad keeps its proportions and a usable size: at least a quarter of the display.
                    pad = page.evaluate("(() => { const r = document.getElementById('pad').getBoundingClientRect();"
                                        " return [r.width, r.height]; })()")
                    assert pad[0] * pad[1] >= 0.25 * w * h, f"{shot.name}: the pad is {pad}"
                if name == "paper":
                    text = page.inner_text("#paper-countdown")
                    assert text.startswith(("Taking it in ", "Taking the photo")), text
                    assert page.inner_text("#paper-attempt") == "Photo 2 of 3"
                    # The preview shows the camera's (dark) frame: drawn, and dark.
                    mean = page.evaluate("(() => { const c = document.getElementById('paper-preview');"
                                         " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                         " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i + 1];"
                                         " return [c.width, s / (d.length / 4)]; })()")
                    assert mean[0] == 480 and 5 < mean[1] < 80, f"{shot.name}: preview {mean}"
                if name.startswith("suspicious"):
                    assert page.inner_text("#verdict") == "SUSPICIOUS"
                    v = where["#verdict"]
                    img = cv2.imread(str(shot))
                    assert img is not None
                    banner = img[int(v[1]) + 2:int(v[3]) - 2, int(v[0]) + 2:int(v[2]) - 2]
                    assert _near(banner, SUSPICIOUS_BGR, 10).mean() > 0.5, f"{shot.name}: no SUSPICIOUS banner"
                    assert _primary_on_screenshot(shot, where["#btn-finish"]) > 0.5, f"{shot.name}: no Finish button"
                    # Big type for older customers, even on the Pi display.
                    size = page.evaluate("parseFloat(getComputedStyle(document.getElementById('verdict')).fontSize)")
                    assert size >= 40, f"{shot.name}: verdict in {size} px type"
                if name == "suspicious-paper":
                    aspects = page.inner_text("#aspects")
                    assert "Proportions differ (12%)" in aspects and "differs (12%)" not in aspects
                    assert "Layout differs (38%)" in aspects and "Shape matches (71%)" in aspects
                    assert "Stroke directions differ (27%)" in aspects
                    assert page.inner_text("#explanations").count("\n") >= 2
                recorded = page.evaluate("document.body.dataset.recorded")
                if name.startswith("bench"):
                    assert "not recorded" in page.inner_text("#decision-note") and recorded == "no"
                elif name in ("approved", "wait") or name.startswith("suspicious"):
                    assert "not recorded" not in page.inner_text("#decision-note") and recorded == "yes"
                if name == "wait":
                    assert page.inner_text("#verdict") == "Please wait"
                    assert not page.is_visible("#match-rate")
                if name in ("approved", "suspicious-pen", "suspicious-paper", "wait", "error"):
                    page.click("#btn-finish" if name != "error" else "#btn-ok")
                    page.wait_for_selector("#screen-idle:not([hidden])")

            # The staff view: login (with a refusal on it), actions with the link line, confirmation.
            page.goto(ui.url + "staff")
            page.wait_for_selector("#staff-login:not([hidden])")
            page.fill("#operator", "alice")
            page.fill("#pin", "wrong-pin")
            page.click("#btn-login")
            _until(page, "document.getElementById('staff-message').textContent.length > 0")
            _check(page, tmp_path / f"{w}x{h}-staff-login.png", ["#btn-login", "#btn-back", "#staff-message"])
            page.fill("#operator", "alice")
            page.fill("#pin", "246810")
            page.click("#btn-login")
            page.wait_for_selector("#staff-actions:not([hidden])")
            _until(page, "document.body.dataset.link === 'disconnected'")
            status = page.inner_text("#link-status")
            assert status.startswith("Central server: not connected since ") and status.endswith("no decisions waiting")
            page.wait_for_selector("#btn-paper-enroll:visible")
            _check(page, tmp_path / f"{w}x{h}-staff-actions.png",
                   ["#link-status", "#last-decision", "#s-customer", "#s-profile", "#btn-verify", "#btn-verify-paper",
                    "#btn-enroll", "#btn-add", "#btn-replace", "#btn-delete", "#btn-logout", "#btn-calibration",
                    "#btn-paper-enroll", "#btn-paper-add", "#btn-paper-replace"])
            assert page.inner_text("#last-decision").startswith("Last decision: SUSPICIOUS under profile ppp")
            assert page.eval_on_selector("#s-profile", "s => s.value") == "standard"
            page.fill("#s-customer", "cust-123456789")
            page.click("#btn-delete")
            page.wait_for_selector("#staff-confirm:not([hidden])")
            _check(page, tmp_path / f"{w}x{h}-staff-confirm.png",
                   ["#confirm-text", "#btn-confirm", "#btn-confirm-back"])
            page.click("#btn-confirm-back")
            page.click("#btn-calibration")
            page.wait_for_selector("#staff-calibration:not([hidden])")
            _until(page, "document.body.dataset.calibration === 'moving'")
            _check(page, tmp_path / f"{w}x{h}-staff-calibration.png",
                   ["#cal-state", "#cal-facts", "#cal-threshold", "#cal-moved", "#btn-cal-revert", "#btn-cal-back"])
            assert page.inner_text("#cal-state") == "Not moved: too few customers enrolled yet"
            # The shipped match score is shown in probabilities: its bounds (0.9 stricter, 1.0 looser
            # in log-odds) around the model's operating point, looser first.
            p = ScoreModel.load(SHIPPED).threshold
            logit = math.log(p / (1 - p))
            bounds = f"{1 / (1 + math.exp(1.0 - logit)):.4f} to {1 / (1 + math.exp(-0.9 - logit)):.4f} (match probability)"
            assert page.inner_text("#cal-bounds") == bounds and page.inner_text("#cal-moved") == "never"
            assert page.inner_text("#cal-shipped") == f"{p:.4f}"
            page.click("#btn-cal-revert")
            page.wait_for_selector("#staff-cal-confirm:not([hidden])")
            _check(page, tmp_path / f"{w}x{h}-staff-cal-confirm.png",
                   ["#cal-confirm-title", "#cal-confirm-text", "#btn-cal-confirm", "#btn-cal-confirm-back"])
            page.click("#btn-cal-confirm-back")
            page.click("#btn-cal-back")
            page.wait_for_selector("#staff-actions:not([hidden])")
            page.click("#btn-logout")
            page.wait_for_url(ui.url)
        page.close()
        assert daemon.state is State.IDLE and daemon.decisions == 0   # the events showed, nothing ran
    finally:
        daemon.stop()
        pen.close_all()


def test_staff_view_tells_the_link_health(tmp_path: Path, browser: Any, link_pki: LinkPki) -> None:
    """Connected; the broker goes away: "not connected since HH:MM" with the reason, and a
    decision made meanwhile waits in the outbox ("1 decision waiting to be sent"); the broker is
    back: connected, and the reason is gone."""
    broker = start_broker(link_pki, tmp_path / "broker")
    genuine, _ = writers()["001"]
    cfg = write_config(tmp_path, ui=True, link=link_table(link_pki, broker.port, tmp_path))
    daemon, pen, config = start_daemon(cfg)
    ui = daemon.ui
    assert ui is not None
    TemplateStore(config.storage.templates_dir, config.storage.template_key).put("cust-7", as_replayed(genuine[:5]))
    OperatorStore(config.staff.operators_file).set("alice", "246810")
    page = browser.new_page(viewport={"width": 800, "height": 480})
    try:
        wait_for(lambda: daemon.status()["link_connected"], what="link connected")
        page.goto(ui.start_url)
        page.goto(ui.url + "staff")
        page.fill("#operator", "alice")
        page.fill("#pin", "246810")
        page.click("#btn-login")
        _until(page, "document.body.dataset.link === 'connected'")
        assert page.inner_text("#link-status") == "Central server: connected, no decisions waiting"

        broker.stop()
        wait_for(lambda: not daemon.status()["link_connected"], what="link down")
        since = daemon.status()["link_since"]
        assert isinstance(since, float)
        down_at = time.localtime(since)
        daemon.submit("verify", "cust-7")
        wait_for(lambda: daemon.state is State.CAPTURE, what="sign screen")
        pen.sign(genuine[6])
        wait_idle(daemon, 60)
        assert daemon.decisions == 1
        # The page polls every 5 s.
        _until(page, "document.getElementById('link-status').textContent.includes('1 decision waiting')",
                               timeout=12)
        status = page.inner_text("#link-status")
        assert status.startswith("Central server: not connected since ")
        assert time.strftime("%M", down_at) in status.split(" since ")[1]   # the time it went down
        assert page.inner_text("#link-problem").strip(), "no reason given for the broken link"
        page.screenshot(path=str(tmp_path / "staff-link-down.png"))

        broker = start_broker(link_pki, tmp_path / "broker2", port=broker.port)
        _until(page, "document.body.dataset.link === 'connected'", timeout=30)
        # Connected again; no collector has taken the decision yet, so it still waits in the outbox.
        assert page.inner_text("#link-status").startswith("Central server: connected, ")
        assert page.inner_text("#link-problem") == ""

        # A collector whose session is kept while it is away: the broker takes the decision for it,
        # so it is sent, but not stored centrally until the collector is back and says so.
        db = str(tmp_path / "central.sqlite")
        away = Collector(link_pki.collector_config(broker.port, db, fresh_session=True))
        away.start()
        assert away.wait_ready()
        away.stop()
        _until(page, "document.getElementById('link-status').textContent.includes('not yet confirmed')", timeout=20)
        assert page.inner_text("#link-status") == ("Central server: connected, no decisions waiting; "
                                                   "1 decision sent, not yet confirmed stored")
        back = Collector(link_pki.collector_config(broker.port, db))
        back.start()
        try:
            _until(page, "document.getElementById('link-status').textContent === "
                         "'Central server: connected, no decisions waiting'", timeout=20)
            assert back.store.count("decisions") == 1
        finally:
            back.stop()
    finally:
        page.close()
        daemon.stop()
        pen.close_all()
        broker.stop()


def test_camera_attempts_are_paced_with_a_live_preview(tmp_path: Path, browser: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A dark photo: three attempts, each after a countdown with live preview frames (the camera's
    own, downscaled), not three photos in 0.3 s; the page counts down and draws the preview."""
    caplog.set_level(logging.DEBUG)
    camera = tmp_path / "camera" / "frame.png"
    camera.parent.mkdir()
    cv2.imwrite(str(camera), _dark_photo())
    cfg = write_config(tmp_path, ui=True, extra=f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\n'
                                                 'attempts = 3\ncountdown_s = 1.5\n')
    daemon = Daemon(load_config(cfg))
    daemon.start()
    assert daemon.store is not None and daemon.ui is not None
    ui = daemon.ui
    daemon.store.put("cust-paper", list(writers()["001"][0][:5]))
    page = browser.new_page(viewport={"width": 800, "height": 480})
    try:
        page.goto(ui.start_url)
        _until(page, "document.body.dataset.connected === 'yes'")
        events = daemon.bus.subscribe()
        t0 = time.monotonic()
        req = daemon.submit("verify_paper", "cust-paper", source="screen")
        page.wait_for_selector("#screen-paper:not([hidden])")
        _until(page, "Number(document.body.dataset.previews) > 0", timeout=5)
        assert page.inner_text("#paper-countdown").startswith(("Taking it in", "Taking the photo"))
        out = req.wait(60)
        elapsed = time.monotonic() - t0
        seen: list[tuple[float, dict[str, Any]]] = []
        while not events.empty():
            seen.append((time.monotonic(), events.get_nowait()))
        prompts = [ev for _, ev in seen if ev.get("screen") == "paper"]
        previews = [ev for _, ev in seen if ev.get("type") == "preview"]
        assert out["ok"] is False and out["error"] == "no_usable_photo" and "dark" in str(out["message"])
        assert [p["attempt"] for p in prompts] == [1, 2, 3] and all(p["countdown_s"] == 1.5 for p in prompts)
        # Paced: three countdowns of 1.5 s, not three photos in 0.3 s.
        assert elapsed >= 3 * 1.5, f"3 attempts in {elapsed:.2f} s"
        # Live: about 4 frames a second during each countdown (and the refused photo after each).
        assert len(previews) >= 3 * 4, f"only {len(previews)} preview frames"
        frame = cv2.imdecode(np.frombuffer(base64.b64decode(previews[0]["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None, "the preview is not a JPEG"
        assert (frame.shape[1], frame.shape[0]) == (480, previews[0]["height"]) and previews[0]["width"] == 480
        assert frame.mean() < 80, "the preview is not the camera's dark frame"
        # Advice from the first refusal is on the second attempt's screen, to act on.
        assert "dark" in prompts[1]["message"]
        # Biometric: the preview is not kept for a page that connects later, nor logged.
        assert daemon.bus.screen.get("type") == "screen"
        assert previews[0]["jpeg"][100:140] not in caplog.text
        print(f"3 attempts in {elapsed:.2f} s, {len(previews)} previews of {len(previews[0]['jpeg'])} base64 chars")

        # The Cancel button ends a countdown at once, not after it.
        wait_idle(daemon)
        req = daemon.submit("verify_paper", "cust-paper", source="screen")
        page.wait_for_selector("#screen-paper:not([hidden])")
        t1 = time.monotonic()
        page.click("#btn-paper-cancel")
        out = req.wait(10)
        assert out["ok"] is False and out["error"] == "cancelled" and time.monotonic() - t1 < 1.0
        _until(page, "document.body.dataset.previews === '0'")   # the preview is wiped with the screen
    finally:
        page.close()
        daemon.stop()


def _ink_in(png: bytes) -> int:
    """Dark (ink) pixels in a screenshot of an element."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    return int((img < 110).sum())


def test_paper_decision_shows_the_picture_that_was_checked(tmp_path: Path, browser: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A paper decision's box shows the signature found on the photo (it was blank: the pen's ink
    box, cleared for the camera step); the picture goes only to the screen, is not kept for a page
    that connects later, is never logged, leaves with the decision screen, and is not sent at all
    when the decision is withheld from the customer."""
    caplog.set_level(logging.DEBUG)
    genuine, _ = writers()["001"]
    rng = np.random.default_rng(11)
    camera = tmp_path / "camera" / "frame.png"
    camera.parent.mkdir()
    cv2.imwrite(str(camera), make_photo(render_ink(genuine[6], rng=rng), rng, difficulty="clean").frame)
    paper = f'\n[paper]\nenabled = true\ncamera = "{camera}"\nwarmup_s = 0.0\ncountdown_s = 0.0\n'
    daemon = Daemon(load_config(write_config(tmp_path, ui=True, extra=paper)))
    daemon.start()
    assert daemon.store is not None and daemon.ui is not None
    daemon.store.put("cust-paper", list(genuine[:5]))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(daemon.ui.start_url)
        _until(page, "document.body.dataset.connected === 'yes'")
        events = daemon.bus.subscribe()
        out = daemon.submit("verify_paper", "cust-paper", source="screen").wait(60)
        assert out["ok"] is True, out
        page.wait_for_selector("#screen-decision:not([hidden])")
        _until(page, "document.body.dataset.checkedPicture === '1'")
        shot = page.locator("#decision-ink").screenshot(path=str(tmp_path / "paper-decision.png"))
        page.screenshot(path=str(tmp_path / "paper-decision-page.png"))
        assert _ink_in(shot) > 300, "the decision's box is blank"
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        pictures = [ev for ev in seen if ev.get("type") == "checked_picture"]
        assert len(pictures) == 1
        found = cv2.imdecode(np.frombuffer(base64.b64decode(pictures[0]["jpeg"]), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert found is not None and (found.shape[1], found.shape[0]) == (pictures[0]["width"], pictures[0]["height"])
        ink = int((found < 110).sum())
        assert ink > 200, f"the picture holds {ink} ink pixels"
        # Not kept for a page that connects later, and never logged.
        assert daemon.bus.screen.get("screen") == "idle" and "jpeg" not in daemon.bus.screen
        late = daemon.bus.subscribe()   # the browser restarted: not the last customer's decision
        assert late.get_nowait().get("screen") == "idle"
        daemon.bus.unsubscribe(late)
        assert pictures[0]["jpeg"][100:140] not in caplog.text
        page.click("#btn-finish")
        _until(page, "document.body.dataset.checkedPicture === '0'")
        painted = page.evaluate("""() => { const c = document.getElementById("decision-ink");
            return c.getContext("2d").getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v).length; }""")
        assert painted == 0, "the picture lingers after the decision"
    finally:
        page.close()
        daemon.stop()

    # [ui] customer_decision = "wait_for_staff": a refused check shows nothing of it, picture included.
    root = tmp_path / "withheld"
    root.mkdir()
    cfg = write_config(root, ui=True, extra=paper)
    cfg.write_text(cfg.read_text().replace("show_decision_s = 30.0", 'show_decision_s = 30.0\ncustomer_decision = "wait_for_staff"'))
    scribble = np.full((300, 700), 255, np.uint8)
    cv2.rectangle(scribble, (60, 60), (640, 240), 0, 9)
    cv2.line(scribble, (60, 240), (640, 60), 0, 9)
    cv2.imwrite(str(root / "scan.png"), scribble)
    daemon = Daemon(load_config(cfg))
    daemon.start()
    assert daemon.store is not None
    daemon.store.put("cust-paper", list(genuine[:5]))
    try:
        events = daemon.bus.subscribe()
        out = daemon.submit("verify_paper", "cust-paper", image=root / "scan.png").wait(60)
        assert out["ok"] is True and out["decision"] == "SUSPICIOUS", out
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        assert [ev.get("decision") for ev in seen if ev.get("screen") == "decision"] == ["WAIT"]
        assert not [ev for ev in seen if ev.get("type") == "checked_picture"]
    finally:
        daemon.stop()
