// The console's single page: login, the live stream, views (board, alarms, patient, audit), tones, idle logout.

import { ApiError, get, post, setCsrf, whenLoggedOut } from "./api.js";
import { canManagePatients, renderAdmit, setRegistryRole } from "./admission.js";
import { renderAlarms, setCanAct } from "./alarms.js";
import { renderAudit } from "./audit.js";
import { renderBoard } from "./board.js";
import { renderHandover } from "./handover.js";
import { setNotesRole } from "./notes.js";
import { renderPatient } from "./patient.js";
import * as sound from "./sound.js";
import { applyAdmitted, applyAlarm, applyDischarged, applySnapshot, applyValues, highestActiveLevel, subscribe, ward } from "./store.js";
import { alarmLevel, h, levelLabel } from "./util.js";

const AUDIT_ROLES = new Set(["charge_nurse", "doctor", "admin"]);
const ACT_ROLES = new Set(["nurse", "charge_nurse", "doctor", "admin"]);

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const banner = document.getElementById("banner");
const announcer = document.getElementById("announcer");
const connStatus = document.getElementById("conn-status");
const soundToggle = document.getElementById("sound-toggle");

let session = null;
let stream = null;
let leaveView = () => {};
let lastInput = Date.now();
let lastReported = 0;
let timers = [];

function showBanner(text, kind = "info") {
  banner.textContent = text;
  banner.className = `banner banner-${kind}`;
  banner.hidden = !text;
}

function announce(text) {
  announcer.textContent = "";
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

// -- login and logout ------------------------------------------------------------------------------

function renderLogin(message) {
  topbar.hidden = true;
  leaveView();
  leaveView = () => {};
  const error = h("p", { class: "error", id: "login-error", role: "alert" });
  const info = message ? h("p", { class: "notice", id: "login-notice", role: "status" }, message) : null;
  const name = h("input", { id: "login-name", name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "btn btn-primary btn-wide" }, "Log in");
  const form = h(
    "form",
    { class: "login-card", "aria-labelledby": "login-title" },
    h("div", { class: "login-brand", "aria-hidden": "true" }, "◆ wardwatch"),
    h("h1", { id: "login-title" }, "Nurses' console"),
    info,
    h("label", { for: "login-name" }, "User name"),
    name,
    h("label", { for: "login-password" }, "Password"),
    password,
    error,
    button,
    h(
      "p",
      { class: "muted small" },
      "While logged out this screen shows and sounds no alarms; pages still reach the staff on call. " +
        "Tones and notifications start when you log in.",
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sound.enableAudio(); // the click is the user gesture browsers need for sound
    button.disabled = true;
    error.textContent = "";
    try {
      const data = await post("/api/login", { name: name.value.trim(), password: password.value });
      startSession(data);
    } catch (failure) {
      error.textContent = failure.status === 401 ? "Wrong user name or password." : failure.message;
      button.disabled = false;
      password.select();
    }
  });
  main.replaceChildren(h("div", { class: "login-page" }, form));
  name.focus();
}

function endSession(message) {
  if (session === null) return;
  session = null;
  if (stream) stream.close();
  stream = null;
  for (const timer of timers) clearInterval(timer);
  timers = [];
  showBanner("");
  renderLogin(message);
}

whenLoggedOut((reason) => endSession(reason));

function startSession(data) {
  session = data;
  setCsrf(data.csrf);
  ward.staleAfterS = data.stale_after_s;
  ward.role = data.role; // what the patient view offers (observations, threshold editing)
  setCanAct(ACT_ROLES.has(data.role));
  setRegistryRole(data.role);
  document.getElementById("nav-admit").hidden = !canManagePatients();
  setNotesRole(data.role);
  topbar.hidden = false;
  document.getElementById("ward-name").textContent = data.ward;
  document.getElementById("user-name").textContent = `${data.name} (${data.role.replace("_", " ")})`;
  document.getElementById("nav-audit").hidden = !AUDIT_ROLES.has(data.role);
  lastInput = Date.now();
  connect();
  timers.push(setInterval(tick, 1000));
  if (!sound.audioReady()) showBanner("Sound is off until you click or press a key on this page.", "warn");
  if (!location.hash || location.hash === "#/login") location.hash = "#/board";
  route();
}

// -- the live stream ---------------------------------------------------------------------------------

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/api/stream");
  connStatus.textContent = "Connecting…";
  connStatus.className = "conn conn-wait";
  stream.addEventListener("snapshot", (event) => {
    applySnapshot(JSON.parse(event.data));
    connStatus.textContent = "Live";
    connStatus.className = "conn conn-live";
  });
  stream.addEventListener("values", (event) => applyValues(JSON.parse(event.data)));
  stream.addEventListener("admitted", (event) => applyAdmitted(JSON.parse(event.data)));
  stream.addEventListener("discharged", (event) => applyDischarged(JSON.parse(event.data)));
  stream.addEventListener("alarm", (event) => {
    const alarm = JSON.parse(event.data);
    if (applyAlarm(alarm) === "new") {
      const level = alarmLevel(alarm);
      sound.announceAlarm(alarm, level);
      announce(`${levelLabel(level)} priority alarm: ${alarm.patient}, ${alarm.text || alarm.rule}`);
    }
  });
  stream.addEventListener("logout", () => endSession("You were logged out after a period without activity."));
  stream.addEventListener("error", async () => {
    connStatus.textContent = "Reconnecting…";
    connStatus.className = "conn conn-down";
    if (session === null) return;
    try {
      await get("/api/session"); // a 401 ends the session (whenLoggedOut)
    } catch (failure) {
      if (!(failure instanceof ApiError) || failure.status !== 401) {
        showBanner("The live connection is down; reconnecting. Alarms still page staff as usual.", "error");
      }
    }
  });
  stream.addEventListener("open", () => {
    if (banner.classList.contains("banner-error")) showBanner("");
  });
}

// -- inactivity, tones, mute -------------------------------------------------------------------------

function userInput() {
  lastInput = Date.now();
  if (!sound.audioReady() && session) {
    sound.enableAudio();
    if (banner.classList.contains("banner-warn")) showBanner("");
  }
  const every = Math.min(15000, (session ? session.idle_logout_s : 60) * 250);
  if (session && Date.now() - lastReported > every) {
    lastReported = Date.now();
    post("/api/activity", {}).catch(() => {});
  }
}

for (const type of ["keydown", "pointerdown", "touchstart", "wheel"]) {
  window.addEventListener(type, userInput, { passive: true, capture: true });
}

function tick() {
  if (session === null) return;
  const idleS = (Date.now() - lastInput) / 1000;
  const left = session.idle_logout_s - idleS;
  if (left <= 0) {
    get("/api/session").catch(() => {}); // the server decides; a 401 ends the session here
  } else if (left <= Math.min(60, session.idle_logout_s / 2) && !banner.classList.contains("banner-error")) {
    showBanner(`No activity: you will be logged out in ${Math.ceil(left)} s. Touch or press a key to stay.`, "warn");
  } else if (banner.textContent.startsWith("No activity")) {
    showBanner("");
  }
  const level = highestActiveLevel();
  if (level) sound.remind(level);
  soundToggle.textContent = sound.isMuted() ? `Muted ${sound.mutedFor()} s · unmute` : "Mute 2 min";
  soundToggle.setAttribute("aria-pressed", String(sound.isMuted()));
  showAlarmCount();
}

function showAlarmCount() {
  const count = ward.alarms.size;
  document.getElementById("alarm-count").textContent = count ? String(count) : "";
}

soundToggle.addEventListener("click", () => {
  if (sound.isMuted()) sound.unmute();
  else sound.mute();
});
sound.whenMuteChanges(() => {
  soundToggle.textContent = sound.isMuted() ? `Muted ${sound.mutedFor()} s · unmute` : "Mute 2 min";
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await post("/api/logout", {});
  } catch (failure) {
    // logged out anyway
  }
  endSession("You have logged out.");
});

// -- views -------------------------------------------------------------------------------------------

function route() {
  if (session === null) return;
  leaveView();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] || "board";
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "alarms") leaveView = renderAlarms(main, params);
  else if (view === "patient" && parts[1]) leaveView = renderPatient(main, decodeURIComponent(parts[1]));
  else if (view === "audit" && AUDIT_ROLES.has(session.role)) leaveView = renderAudit(main);
  else if (view === "admit" && canManagePatients()) leaveView = renderAdmit(main);
  else if (view === "handover") leaveView = renderHandover(main, params);
  else leaveView = renderBoard(main);
  main.focus({ preventScroll: true }); // keyboard users start at the view's content
}

window.addEventListener("hashchange", route);

subscribe((change) => {
  if (change.kind === "alarm" || change.kind === "snapshot") showAlarmCount(); // with the board, not a tick later
  if (change.kind === "alarm" && change.meaning === "new") document.title = `(!) wardwatch console`;
  if (change.kind === "snapshot") document.title = "wardwatch console";
});

async function start() {
  try {
    startSession(await get("/api/session"));
  } catch (failure) {
    renderLogin(failure.status === 401 ? "" : failure.message);
  }
}

start();
