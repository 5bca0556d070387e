// The staff view: operator login, then verification under an application profile and template
// management (enroll / add / replace / delete).
// The server holds the session (an HttpOnly cookie) and enforces everything; this page only asks.
"use strict";
const $ = (id) => document.getElementById(id);
let idleTimer = null;
let idleMs = 120000;
let pending = null;   // {kind, mode, customer} waiting for its confirmation
let statusTimer = null;
const STATUS_EVERY_MS = 5000;

function show(name) {
  for (const s of ["login", "actions", "confirm"]) $("staff-" + s).hidden = s !== name;
  document.body.dataset.staff = name;
  if (name === "actions") refreshStatus();   // ...and every few seconds while it is shown
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
  const waiting = (s.queue_depth && s.queue_depth.decision) || 0;
  const queued = waiting === 0 ? "no decisions waiting" : plural(waiting, "decision", "decisions") + " waiting to be sent";
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
  call("GET", "/api/status").then((s) => { showLink(s); showPen(s); $("paper-actions").hidden = !s.paper; $("btn-verify-paper").hidden = !s.paper; }).catch((e) => {
    $("link-status").className = "link-status down";
    $("link-status").textContent = "Central server: status not available (" + e.message + ")";
  }).finally(() => {
    if (document.body.dataset.staff === "actions") statusTimer = setTimeout(refreshStatus, STATUS_EVERY_MS);
  });
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
