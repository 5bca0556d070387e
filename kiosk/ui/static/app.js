// The kiosk screen: follows the daemon's events (Server-Sent Events) and posts the customer's actions.
"use strict";
const $ = (id) => document.getElementById(id);
const screens = ["idle", "sign", "paper", "verify", "decision", "message"];
let decisionTimer = null;
let countdownTimer = null;
let previewSeq = 0;   // the latest preview wins; a slow decode of an older one is dropped
let pictureSeq = 0;   // the same for the picture a paper decision was made on
let last = null;      // last ink point, to join segments
let aspect = 160 / 60;

function show(name) {
  for (const s of screens) $("screen-" + s).hidden = s !== name;
  document.body.dataset.screen = name;
  if (name !== "paper") {
    clearInterval(countdownTimer);
    clearPreview();   // a photo of a signature does not linger once the camera step is over
  }
  if (name !== "decision") clearChecked();   // nor the picture a paper decision was made on
}

function clearChecked() {
  pictureSeq += 1;
  const c = $("decision-ink");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
  document.body.dataset.checkedPicture = "0";
}

// The signature a paper decision was made on, drawn where the pen's ink is for a pen decision
// (from bytes, like the preview: no image URL).
function showChecked(ev) {
  if (document.body.dataset.screen !== "decision") return;
  const seq = ++pictureSeq;
  const bytes = Uint8Array.from(atob(ev.jpeg), (ch) => ch.charCodeAt(0));
  createImageBitmap(new Blob([bytes], { type: "image/jpeg" })).then((bmp) => {
    if (seq === pictureSeq && document.body.dataset.screen === "decision") {
      const c = $("decision-ink"), g = c.getContext("2d");
      const scale = Math.min(c.width / bmp.width, c.height / bmp.height);
      const w = bmp.width * scale, h = bmp.height * scale;
      g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
      g.drawImage(bmp, (c.width - w) / 2, (c.height - h) / 2, w, h);
      document.body.dataset.checkedPicture = "1";
    }
    bmp.close();
  }).catch(() => {});
}

// Aspect labels are nouns, two plural ("Proportions", "Stroke directions"): "Shape matches",
// "Proportions differ".
const PLURAL_ASPECTS = new Set(["proportions", "strokes"]);

function aspectText(a) {
  const plural = PLURAL_ASPECTS.has(a.code);
  const verb = a.ok ? (plural ? " match" : " matches") : (plural ? " differ" : " differs");
  return (a.ok ? "\u2714 " : "\u2716 ") + a.label + verb + " (" + a.similarity + "%)";
}

function clearPreview() {
  previewSeq += 1;
  const c = $("paper-preview");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
  document.body.dataset.previews = "0";
}

// The live preview: a small JPEG of what the camera sees, drawn on a canvas (no image URL, so the
// page's Content-Security-Policy stays 'self' only).
function showPreview(ev) {
  if (document.body.dataset.screen !== "paper") return;
  const seq = ++previewSeq;
  const bytes = Uint8Array.from(atob(ev.jpeg), (ch) => ch.charCodeAt(0));
  createImageBitmap(new Blob([bytes], { type: "image/jpeg" })).then((bmp) => {
    if (seq === previewSeq && document.body.dataset.screen === "paper") {
      const c = $("paper-preview");
      if (c.width !== bmp.width || c.height !== bmp.height) { c.width = bmp.width; c.height = bmp.height; }
      c.getContext("2d").drawImage(bmp, 0, 0);
      document.body.dataset.previews = String(Number(document.body.dataset.previews || 0) + 1);
    }
    bmp.close();
  }).catch(() => {});
}

// "Photo in 3, 2, 1": the daemon takes the photo when its own countdown ends.
function countDown(seconds) {
  clearInterval(countdownTimer);
  let left = Math.ceil(seconds || 0);
  const tick = () => {
    $("paper-countdown").textContent = left > 0 ? "Taking it in " + left + " s" : "Taking the photo\u2026";
    document.body.dataset.countdown = String(Math.max(left, 0));
    left -= 1;
    if (left < 0) clearInterval(countdownTimer);
  };
  tick();
  if (left >= 0) countdownTimer = setInterval(tick, 1000);
}

function post(path, body) {
  return fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) })
    .then((r) => r.json().then((j) => { if (!r.ok) throw new Error(j.error || r.statusText); return j; }));
}

function clearPad() {
  const c = $("pad");
  c.height = Math.round(c.width / aspect);
  const g = c.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
  last = null;
}

function drawInk(points) {
  const c = $("pad"), g = c.getContext("2d");
  g.strokeStyle = "#0b1f4d"; g.lineCap = "round"; g.lineJoin = "round";
  for (const [x, y, p, down] of points) {
    const px = x * c.width, py = y * c.height;
    if (down && last && last.down) {
      g.lineWidth = 3 + 7 * p;
      g.beginPath(); g.moveTo(last.x, last.y); g.lineTo(px, py); g.stroke();
    }
    last = { x: px, y: py, down };
  }
}

function onScreen(ev) {
  clearTimeout(decisionTimer);
  switch (ev.screen) {
    case "sign":
    case "enroll": {
      const enrolling = ev.screen === "enroll";
      $("sign-title").textContent = ev.title || "Please sign";
      $("sign-sub").textContent = enrolling ? "Sign on the pad as you usually do." : "Sign on the pad with the pen, as you usually do.";
      const fb = $("enroll-feedback");
      fb.className = "feedback";
      fb.textContent = "";
      if (ev.saved) { fb.textContent = ev.saved + " \u2714"; fb.classList.add("saved"); }
      if (ev.refused) { fb.textContent = ev.refused.map((r) => r.message).join("\n"); fb.classList.add("refused"); }
      $("notice").textContent = "";
      clearPad();
      show("sign");
      break;
    }
    case "paper":
      $("paper-title").textContent = ev.title || "Hold the signed paper under the camera";
      $("paper-attempt").textContent = ev.attempts > 1 ? "Photo " + ev.attempt + " of " + ev.attempts : "";
      $("paper-notice").textContent = ev.message || "";
      clearPad();
      if (document.body.dataset.screen !== "paper") clearPreview();
      show("paper");
      countDown(ev.countdown_s);
      break;
    case "identify":
    case "verify":
      if (ev.screen === "verify") show("verify");
      break;
    case "decision": {
      const v = $("verdict");
      if (ev.decision === "WAIT") {
        // [ui] customer_decision = "wait_for_staff": no verdict, score or aspects for the customer.
        v.textContent = "Please wait";
        v.className = "verdict wait";
        $("match-rate").textContent = "";
        $("match-rate").parentElement.hidden = true;
        $("aspects").replaceChildren();
        $("explanations").replaceChildren();
        $("decision-ink").getContext("2d").clearRect(0, 0, $("decision-ink").width, $("decision-ink").height);
        $("decision-note").textContent = "A member of staff will help you in a moment."
          + (ev.recorded === false ? " Test kiosk: this result is not recorded anywhere." : "");
        document.body.dataset.recorded = ev.recorded === false ? "no" : "yes";
        document.body.dataset.decision = "wait";
        show("decision");
        decisionTimer = setTimeout(() => showIdle(""), (ev.show_s || 8) * 1000);
        break;
      }
      const ok = ev.decision === "APPROVED";
      document.body.dataset.decision = ok ? "approved" : "suspicious";
      v.textContent = ok ? "APPROVED" : "SUSPICIOUS";
      v.className = "verdict " + (ok ? "approved" : "suspicious");
      $("match-rate").textContent = ev.match_rate + "%";
      $("match-rate").parentElement.hidden = false;
      const pad = $("pad"), di = $("decision-ink");
      di.height = Math.round(di.width * pad.height / pad.width);
      di.getContext("2d").drawImage(pad, 0, 0, di.width, di.height);
      const ul = $("aspects");
      ul.replaceChildren();
      for (const a of ev.aspects) {
        const li = document.createElement("li");
        li.className = a.ok ? "ok" : "off";
        li.textContent = aspectText(a);
        ul.appendChild(li);
      }
      const ex = $("explanations");
      ex.replaceChildren();
      for (const text of ev.explanations || []) {
        const li = document.createElement("li");
        li.textContent = text;
        ex.appendChild(li);
      }
      $("decision-note").textContent = (ev.too_similar ? "This signature is identical to a stored one: a copy, not a fresh signature."
        : ok ? "Thank you." : "Staff will assist you.")
        + (ev.recorded === false ? " Test kiosk: this result is not recorded anywhere." : "");
      document.body.dataset.recorded = ev.recorded === false ? "no" : "yes";
      show("decision");
      decisionTimer = setTimeout(() => showIdle(""), (ev.show_s || 8) * 1000);
      break;
    }
    case "no_pen":   // the kiosk waits for the pen: stays up until it is plugged or the request ends
      $("message-title").textContent = ev.title || "No pen connected";
      $("message-text").textContent = ev.message || "";
      show("message");
      break;
    case "enrolled":
    case "error":
      $("message-title").textContent = ev.title || (ev.screen === "error" ? "Sorry" : "Done");
      $("message-text").textContent = ev.message || "";
      show("message");
      decisionTimer = setTimeout(() => showIdle(""), 10000);
      break;
    case "idle":
      if (document.body.dataset.screen !== "decision") showIdle(ev.message || "");
      break;
    default:
      break;
  }
}

function showIdle(message) {
  $("idle-message").textContent = message;
  show("idle");
  $("customer").value = "";
  $("customer").focus();
}

function connect() {
  const es = new EventSource("/events");
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "screen") onScreen(ev);
    else if (ev.type === "ink_start") { aspect = ev.aspect || aspect; clearPad(); }
    else if (ev.type === "ink") drawInk(ev.points);
    else if (ev.type === "preview") showPreview(ev);
    else if (ev.type === "checked_picture") showChecked(ev);
    else if (ev.type === "notice") {
      $("notice").textContent = ev.message;
      $("paper-notice").textContent = ev.message;
      clearPad();
    }
  };
  es.onerror = () => {
    document.body.dataset.connected = "no";
    // Refused (no screen secret) or the daemon is restarting: say so instead of a dead page.
    $("idle-message").textContent = "This screen is not connected to the kiosk. Please ask staff.";
  };
  es.onopen = () => {
    document.body.dataset.connected = "yes";
    if ($("idle-message").textContent.startsWith("This screen is not connected")) $("idle-message").textContent = "";
  };
}

function start(kind) {
  const customer = $("customer").value.trim();
  if (!customer) { $("idle-message").textContent = "Please enter the customer number first."; return; }
  post("/api/" + kind, { customer }).catch((e) => { $("idle-message").textContent = e.message; });
}

$("identify").addEventListener("submit", (e) => { e.preventDefault(); start("verify"); });
$("btn-done").addEventListener("click", () => post("/api/done"));
$("btn-cancel").addEventListener("click", () => post("/api/cancel"));
$("btn-paper").addEventListener("click", () => start("verify_paper"));
$("btn-paper-cancel").addEventListener("click", () => post("/api/cancel"));
$("btn-finish").addEventListener("click", () => showIdle(""));
$("btn-ok").addEventListener("click", () => showIdle(""));
clearPad();
showIdle("");
connect();
