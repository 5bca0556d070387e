// The staff view: operator login, then verification under an application profile, template
// management (enroll / add / replace / delete) and, with [calibration], the site threshold
// (revert to the shipped one and hold it; resume).
// The server holds the session (an HttpOnly cookie) and enforces everything; this page only asks.
"use strict";
const $ = (id) => document.getElementById(id);
let idleTimer = null;
let idleMs = 120000;
let pending = null;   // {kind, mode, customer} waiting for its confirmation
let statusTimer = null;
const STATUS_EVERY_MS = 5000;

function show(name) {
  for (const s of ["login", "actions", "confirm", "calibration", "cal-confirm"]) $("staff-" + s).hidden = s !== name;
  document.body.dataset.staff = name;
  if (name === "actions" || name === "calibration") refreshStatus();   // ...and every few seconds while it is shown
}

function say(text) { $("staff-message").textContent = text || ""; }

function call(method, path, body) {
  const init = { method, headers: { "Content-Type": "application/json" } };
  if (method === "POST") init.body = JSON.stringify(body || {});
  return fetch(path, init).then((r) => r.json().then((j) => {
    if (!r.ok) { const e = new Error(j.error || r.statusText); e.status = r.status; throw e; }
    return j;
  }));
}

function toCustomerScreen() { window.location.href = "/"; }

function logout() { return call("POST", "/api/staff/logout").catch(() => {}).then(toCustomerScreen); }

// The server ends an idle session; the page also leaves it, so it is not left open at the counter.
function touch() {
  clearTimeout(idleTimer);
  if (document.body.dataset.staff !== "login") idleTimer = setTimeout(logout, idleMs);
}

function clock(epochS) {
  const t = new Date(epochS * 1000);
  const time = t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return t.toDateString() === new Date().toDateString() ? time : t.toLocaleDateString() + " " + time;
}

function plural(n, one, many) { return n === 1 ? "1 " + one : n + " " + many; }

// One line on the central server's link: connected or since when not, and what waits to be sent
// (the outbox keeps decisions until the collector has them).
function showLink(s) {
  const line = $("link-status"), why = $("link-problem");
  why.textContent = "";
  if (!s.link_configured) {
    line.className = "link-status";
    line.textContent = "Central server: not set up on this kiosk (no [link] in its configuration)";
    document.body.dataset.link = "none";
    return;
  }
  // queue_depth counts every decision not yet stored centrally; awaiting_receipt those of them the
  // broker has taken and no collector has yet confirmed (kiosk.receipts).
  const unconfirmed = (s.awaiting_receipt && s.awaiting_receipt.decision) || 0;
  const waiting = ((s.queue_depth && s.queue_depth.decision) || 0) - unconfirmed;
  let queued = waiting === 0 ? "no decisions waiting" : plural(waiting, "decision", "decisions") + " waiting to be sent";
  if (unconfirmed > 0) {
    queued += "; " + plural(unconfirmed, "decision", "decisions") + " sent, not yet confirmed stored";
    // Receipts come within seconds while a collector runs: ten minutes without says it does not.
    if (s.oldest_unconfirmed_s >= 600) queued += " (the oldest for " + Math.floor(s.oldest_unconfirmed_s / 60) + " min: is the central collector running, and may this kiosk read its receipts at the broker?)";
  }
  if (s.link_connected) {
    line.className = "link-status up";
    line.textContent = "Central server: connected, " + queued;
    document.body.dataset.link = "connected";
  } else {
    line.className = "link-status down";
    line.textContent = "Central server: not connected" + (s.link_since ? " since " + clock(s.link_since) : "") + ", " + queued;
    why.textContent = s.link_problem || "";
    document.body.dataset.link = "disconnected";
  }
}

function refreshStatus() {
  clearTimeout(statusTimer);
  call("GET", "/api/status").then((s) => {
    showLink(s); showPen(s); showCalibration(s.calibration);
    $("paper-actions").hidden = !s.paper; $("btn-verify-paper").hidden = !s.paper;
  }).catch((e) => {
    $("link-status").className = "link-status down";
    $("link-status").textContent = "Central server: status not available (" + e.message + ")";
  }).finally(() => {
    const on = document.body.dataset.staff;
    if (on === "actions" || on === "calibration") statusTimer = setTimeout(refreshStatus, STATUS_EVERY_MS);
  });
}

// The site threshold ([calibration]; null: off, and the button stays hidden).
const REASONS = {
  calibrated: "Moving with this kiosk's customers",
  clamped: "Moved as far as its bounds allow",
  too_few_customers: "Not moved: too few customers enrolled yet",
  held: "Held at the shipped threshold by staff",
};
function fmt(x) { return typeof x === "number" ? x.toFixed(4) : "-"; }
function showCalibration(c) {
  $("btn-calibration").hidden = !c;
  if (!c) { delete document.body.dataset.calibration; return; }
  document.body.dataset.calibration = c.held ? "held" : "moving";
  $("cal-state").textContent = REASONS[c.reason] || "Starting";
  $("cal-state").className = "cal-state" + (c.held ? " held" : "");
  $("cal-threshold").textContent = fmt(c.threshold);
  $("cal-shipped").textContent = fmt(c.shipped);
  $("cal-bounds").textContent = fmt(c.lower) + " to " + fmt(c.upper) +
    (c.scale === "probability" ? " (match probability)" : " (distance)");
  $("cal-target").textContent = (c.target_frr * 100).toFixed(1).replace(/\.0$/, "") + " % of genuine refused";
  $("cal-customers").textContent = plural(c.customers, "customer", "customers") + " (moves from " + c.min_customers + ")";
  $("cal-moved").textContent = c.moved_ms ? clock(c.moved_ms / 1000) : "never";
  $("btn-cal-revert").hidden = !!c.held;
  $("btn-cal-resume").hidden = !c.held;
}

let calPending = null;   // "revert" | "resume", waiting for its confirmation
function askCalibration(action) {
  calPending = action;
  $("cal-confirm-title").textContent = action === "revert" ? "Revert to the shipped threshold?" : "Resume the calibration?";
  $("cal-confirm-text").textContent = action === "revert"
    ? "The kiosk decides at the shipped threshold from the next signature on, and stays there until staff resume. Recorded under your name."
    : "The kiosk moves its threshold to its customers' signatures again, within its bounds. Recorded under your name.";
  $("btn-cal-confirm").textContent = action === "revert" ? "Revert" : "Resume";
  $("btn-cal-confirm").className = action === "revert" ? "danger" : "primary";
  say("");
  show("cal-confirm");
}

function sendCalibration() {
  const action = calPending;
  if (!action) return;
  calPending = null;
  call("POST", "/api/staff/calibration", { action, confirm: action }).then((j) => {
    showCalibration(j.calibration);
    show("calibration");
    say(action === "revert" ? "Reverted: the shipped threshold is held." : "Resumed: the threshold follows the customers again.");
  }).catch((e) => { show("calibration"); failed(e); });
}

// The profile picker: the kiosk's [profiles], its default preselected.
function showProfiles(profiles) {
  const sel = $("s-profile");
  sel.textContent = "";
  for (const p of profiles || []) {
    const o = document.createElement("option");
    o.value = p.name;
    o.textContent = p.label + (p.default ? " (default)" : "");
    o.selected = !!p.default;
    sel.appendChild(o);
  }
}

function showLastDecision(d) {
  const line = $("last-decision");
  if (!d) { line.textContent = ""; delete line.dataset.decision; return; }
  const by = d.operator ? (d.operator.startsWith("central") ? "the central server" : d.operator) : "the customer";
  line.textContent = "Last decision: " + d.decision + " under profile " + (d.profile || "-") + ", asked by " + by
    + (d.at ? " at " + clock(d.at) : "");
  line.dataset.decision = d.decision;
  line.dataset.profile = d.profile || "";
}

function loggedIn(j) {
  idleMs = (j.idle_timeout_s || 120) * 1000;
  $("who").textContent = j.operator;
  showProfiles(j.profiles);
  showLastDecision(j.last_decision);
  $("pin").value = "";
  show("actions");
  touch();
  $("s-customer").focus();
}

function failed(e) {
  if (e.status === 401 && document.body.dataset.staff !== "login") { show("login"); }
  say(e.message);
}

function act(kind, mode) {
  const customer = $("s-customer").value.trim();
  if (!customer) { say("Please enter the customer number first."); return; }
  if (kind === "delete" || mode === "replace") {
    pending = { kind, mode, customer };
    const which = kind === "enroll_paper" ? "paper signatures" : "signatures";
    $("confirm-title").textContent = kind === "delete" ? "Delete all signatures?" : "Replace all " + which + "?";
    $("confirm-text").textContent = (kind === "delete" ? "The signatures on file for " + customer + " will be deleted."
      : "The " + which + " on file for " + customer + " will be replaced by new ones.") + " This cannot be undone.";
    $("confirm").value = "";
    show("confirm");
    $("confirm").focus();
    return;
  }
  send(kind, mode, customer, null);
}

function send(kind, mode, customer, confirm) {
  const body = { customer, mode };
  if (confirm !== null) body.confirm = confirm;
  call("POST", "/api/staff/" + kind, body).then((j) => {
    if (kind === "enroll" || kind === "enroll_paper") { toCustomerScreen(); return; }   // the customer's turn; logged out
    show("actions");
    say("Delete requested for " + customer + ".");
  }).catch(failed);
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  say("");
  call("POST", "/api/staff/login", { operator: $("operator").value.trim(), pin: $("pin").value })
    .then(loggedIn).catch((err) => { $("pin").value = ""; say(err.message); });
});
for (const id of ["btn-enroll", "btn-add", "btn-replace"]) $(id).addEventListener("click", (e) => act("enroll", e.target.dataset.mode));
for (const id of ["btn-paper-enroll", "btn-paper-add", "btn-paper-replace"]) {
  $(id).addEventListener("click", (e) => act("enroll_paper", e.target.dataset.mode));
}
$("btn-delete").addEventListener("click", () => act("delete", null));
function verify(paper) {
  const customer = $("s-customer").value.trim();
  if (!customer) { say("Please enter the customer number first."); return; }
  // The customer signs now, on the customer screen; the staff session has ended.
  call("POST", "/api/staff/verify", { customer, profile: $("s-profile").value, paper })
    .then(toCustomerScreen).catch(failed);
}
$("btn-verify").addEventListener("click", () => verify(false));
$("btn-verify-paper").addEventListener("click", () => verify(true));
$("confirm-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (pending) send(pending.kind, pending.mode || "new", pending.customer, $("confirm").value.trim());
});
$("btn-confirm-back").addEventListener("click", () => { pending = null; show("actions"); });
$("btn-logout").addEventListener("click", logout);
$("btn-calibration").addEventListener("click", () => { say(""); show("calibration"); });
$("btn-cal-back").addEventListener("click", () => { say(""); show("actions"); });
$("btn-cal-revert").addEventListener("click", () => askCalibration("revert"));
$("btn-cal-resume").addEventListener("click", () => askCalibration("resume"));
$("btn-cal-confirm").addEventListener("click", sendCalibration);
$("btn-cal-confirm-back").addEventListener("click", () => { calPending = null; show("calibration"); });
$("btn-back").addEventListener("click", toCustomerScreen);
for (const ev of ["keydown", "pointerdown"]) document.addEventListener(ev, touch);

// The pen, as the daemon sees it now: "No pen connected" before anyone starts an enrollment.
// Refreshed with the link's line while the actions are shown; the login screen shows it once.
function showPen(s) {
  const pen = s.pen || {};
  const what = pen.device || pen.source || "pen";
  $("pen-status").textContent = pen.connected ? "Pen: " + what : "No pen connected (" + what + ")";
  $("pen-status").dataset.connected = pen.connected ? "yes" : "no";
}
call("GET", "/api/status").then(showPen).catch(() => {});

show("login");
call("GET", "/api/staff/session").then(loggedIn).catch(() => { show("login"); $("operator").focus(); });
