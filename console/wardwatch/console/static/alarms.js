// Alarm lists (active / acknowledged / silenced / resolved) and the acknowledge / silence / resolve dialog.

import { get, post } from "./api.js";
import { subscribe, ward } from "./store.js";
import { age, badge, clock, dateTime, h, stateLabel, until } from "./util.js";

const TABS = [
  { state: "active", label: "Active" },
  { state: "acknowledged", label: "Acknowledged" },
  { state: "silenced", label: "Silenced" },
  { state: "resolved", label: "Resolved" },
];

const VERBS = { acknowledge: "Acknowledge", silence: "Silence", resolve: "Resolve" };

// Resolving does not end a condition that is still present: the API re-alarms it after the ward's hold
// (resolved_recheck_s, at most max_silence_s; docs/alerting.md). Say so before the nurse resolves.
const STILL_PRESENT =
  "The condition is still present. Resolving does not end it: if it has not cleared within the ward's hold, a new " +
  "alarm opens and pages again. To stop escalation while you attend, acknowledging is enough.";

let canAct = false;

export function setCanAct(value) {
  canAct = value;
}

export function openActionDialog(alarm, action, onDone) {
  const dialog = document.getElementById("action-dialog");
  const note = document.getElementById("action-note");
  const minutes = document.getElementById("action-minutes");
  const error = document.getElementById("action-error");
  const submit = document.getElementById("action-submit");
  document.getElementById("action-title").textContent = `${VERBS[action]} alarm`;
  document.getElementById("action-alarm").textContent = `${alarm.patient} · ${alarm.text || alarm.rule}`;
  submit.textContent = VERBS[action];
  const hint = document.getElementById("action-hint");
  hint.hidden = !(action === "resolve" && alarm.state !== "resolved" && alarm.condition_active);
  hint.textContent = hint.hidden ? "" : STILL_PRESENT;
  minutes.hidden = action !== "silence";
  document.getElementById("action-minutes-label").hidden = action !== "silence";
  note.value = "";
  error.textContent = "";
  const form = document.getElementById("action-form");
  const cancel = document.getElementById("action-cancel");
  const close = () => {
    form.removeEventListener("submit", onSubmit);
    cancel.removeEventListener("click", close);
    dialog.close();
  };
  async function onSubmit(event) {
    event.preventDefault();
    const reason = note.value.trim();
    if (!reason) {
      error.textContent = "A note is required.";
      note.focus();
      return;
    }
    const body = action === "silence" ? { reason, minutes: Number(minutes.value) } : { reason };
    submit.disabled = true;
    try {
      const result = await post(`/api/alarms/${encodeURIComponent(alarm.alarm_id)}/${action}`, body);
      close();
      if (result && result.notice) announceNotice(result.notice);
      if (onDone) onDone();
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      submit.disabled = false;
    }
  }
  form.addEventListener("submit", onSubmit);
  cancel.addEventListener("click", close);
  dialog.showModal();
  note.focus();
}

// The API's answer to a resolve while the condition lasts ("a new alarm opens in 60 min unless it clears").
function announceNotice(text) {
  const announcer = document.getElementById("announcer");
  if (announcer) announcer.textContent = text;
  const banner = document.getElementById("banner");
  if (banner && banner.hidden) {
    banner.textContent = text;
    banner.className = "banner banner-warn";
    banner.hidden = false;
    setTimeout(() => {
      if (banner.textContent === text) banner.hidden = true;
    }, 15000);
  }
}

export function actionButtons(alarm, onDone) {
  if (!canAct || alarm.state === "resolved") return null;
  const buttons = [];
  if (alarm.state !== "acknowledged") {
    buttons.push(
      h("button", { type: "button", class: "btn btn-primary", onclick: () => openActionDialog(alarm, "acknowledge", onDone) }, "Acknowledge"),
    );
  }
  if (alarm.state === "active") {
    buttons.push(h("button", { type: "button", class: "btn", onclick: () => openActionDialog(alarm, "silence", onDone) }, "Silence"));
  }
  buttons.push(h("button", { type: "button", class: "btn", onclick: () => openActionDialog(alarm, "resolve", onDone) }, "Resolve"));
  return h("div", { class: "actions" }, buttons);
}

function escalationText(alarm) {
  const e = alarm.escalation || {};
  if (alarm.state === "resolved") return "—";
  const step = e.step >= 0 ? `step ${e.step + 1}` : "not paged yet";
  const next = e.next_step_at ? `, next ${until(e.next_step_at)} (${clock(e.next_step_at)})` : "";
  return `${step}${next}`;
}

function whoWhen(alarm) {
  if (alarm.state === "acknowledged" && alarm.actor) return `${alarm.actor}, ${clock(alarm.acknowledged_at)}`;
  if (alarm.state === "silenced") return `${alarm.actor || ""} until ${clock(alarm.silenced_until)}`;
  if (alarm.state === "resolved") {
    const who = `${alarm.actor || "condition cleared"}, ${clock(alarm.resolved_at)}`;
    if (alarm.realarm_at) return `${who} · condition still present: re-alarms ${clock(alarm.realarm_at)} unless it clears`;
    if (alarm.reraised_as) return `${who} · condition outlasted the hold: re-alarmed`;
    return who;
  }
  return "";
}

export function alarmRow(alarm, onDone) {
  return h(
    "tr",
    { dataset: { alarm: alarm.alarm_id, level: alarm.priority } },
    h("td", {}, badge(alarm)),
    h("td", {}, h("a", { href: `#/patient/${encodeURIComponent(alarm.patient)}` }, alarm.patient)),
    h("td", {}, alarm.text || alarm.rule),
    h("td", {}, h("time", { datetime: new Date(alarm.started).toISOString() }, clock(alarm.started)), h("div", { class: "muted" }, age(alarm.started))),
    h("td", {}, stateLabel(alarm)),
    h("td", {}, whoWhen(alarm)),
    h("td", {}, escalationText(alarm)),
    h("td", {}, actionButtons(alarm, onDone)),
  );
}

export function alarmTable(alarms, onDone, caption) {
  if (!alarms.length) return h("p", { class: "empty" }, "No alarms here.");
  return h(
    "table",
    { class: "alarms" },
    h("caption", { class: "sr-only" }, caption),
    h(
      "thead",
      {},
      h("tr", {}, ["Priority", "Patient", "Alarm", "Started", "State", "By / when", "Escalation", "Actions"].map((c) => h("th", { scope: "col" }, c))),
    ),
    h("tbody", {}, alarms.map((a) => alarmRow(a, onDone))),
  );
}

export function renderAlarms(main, params) {
  const current = TABS.some((t) => t.state === params.get("state")) ? params.get("state") : "active";
  const tabs = h(
    "div",
    { class: "tabs", role: "tablist", "aria-label": "Alarm states" },
    TABS.map((t) =>
      h(
        "a",
        {
          role: "tab",
          href: `#/alarms?state=${t.state}`,
          class: t.state === current ? "tab tab-current" : "tab",
          "aria-selected": t.state === current ? "true" : "false",
        },
        t.label,
      ),
    ),
  );
  const body = h("div", { class: "alarm-list", role: "tabpanel" }, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("h1", { class: "view-title" }, "Alarms"), tabs, body);

  async function load() {
    try {
      const data = await get(`/api/alarms?state=${current}&limit=500`);
      const alarms = data.alarms.sort((a, b) => (current === "resolved" ? b.updated - a.updated : b.started - a.started));
      body.replaceChildren(alarmTable(alarms, load, `${current} alarms`));
    } catch (failure) {
      body.replaceChildren(h("p", { class: "error" }, failure.message));
    }
  }
  load();
  let pending = null;
  const unsubscribe = subscribe((change) => {
    if (change.kind !== "alarm" && change.kind !== "snapshot") return;
    if (document.querySelector("dialog[open]")) return; // do not redraw under the nurse's note
    clearTimeout(pending);
    pending = setTimeout(load, 300);
  });
  const ticker = setInterval(() => {
    if (!document.querySelector("dialog[open]") && ward.alarms.size) load();
  }, 15000);
  return () => {
    unsubscribe();
    clearInterval(ticker);
    clearTimeout(pending);
  };
}

export { dateTime };
