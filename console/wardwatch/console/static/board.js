// The ward board: one tile per patient, sorted by acuity, coloured by alarm priority with text and icon.

import { age, alarmLevel, badge, formatValue, h, levelIcon, levelLabel, now, rank, SIGNALS } from "./util.js";
import { gatewayOf, subscribe, topAlarm, ward } from "./store.js";

const BOARD_SIGNALS = SIGNALS.filter((s) => s.key !== "perfusion_index");
const ROLE_LABEL = { pulse_oximeter: "Oximeter", heart_rate_strap: "HR strap" };

function latestReadingTime(patient) {
  const times = Object.values(patient.vitals).map((v) => v.t);
  return times.length ? Math.max(...times) : null;
}

function isStale(t) {
  return t === null || t === undefined || now() - t > ward.staleAfterS * 1000;
}

// Acuity: the open alarm's priority (unacknowledged first), then staleness, then the patient id.
function acuityKey(patient) {
  const alarm = topAlarm(patient.patient);
  const alarmRank = alarm ? rank(alarm) * 2 + (alarm.state === "active" ? 1 : 0) : 0;
  const stale = isStale(latestReadingTime(patient)) ? 1 : 0;
  return [alarmRank, stale];
}

export function sortedPatients() {
  const keyed = [...ward.patients.values()].map((p) => [acuityKey(p), p]);
  keyed.sort((a, b) => b[0][0] - a[0][0] || b[0][1] - a[0][1] || a[1].patient.localeCompare(b[1].patient));
  return keyed.map(([, p]) => p);
}

function vitalCell(patient, signal) {
  const reading = patient.vitals[signal.key];
  const stale = reading ? isStale(reading.t) : false;
  return h(
    "div",
    { class: `vital${stale ? " stale" : ""}`, dataset: { signal: signal.key } },
    h("span", { class: "vital-label" }, signal.label),
    h(
      "span",
      { class: "vital-value" },
      formatValue(reading, signal.digits),
      h("span", { class: "vital-unit" }, reading && reading.value !== null ? signal.unit : ""),
    ),
    h(
      "span",
      { class: "vital-age", dataset: { t: reading ? reading.t : "" } },
      reading ? `${stale ? "stale · " : ""}${age(reading.t)}` : "no reading",
    ),
  );
}

function deviceLine(device) {
  const connected = device.connected;
  const battery = device.battery;
  const low = battery !== null && battery !== undefined && battery <= 20;
  return h(
    "li",
    { class: `device${connected ? "" : " device-off"}` },
    h("span", { class: "device-role" }, ROLE_LABEL[device.role] || device.role || device.device),
    h("span", { class: connected ? "ok" : "warn" }, connected ? "● connected" : "○ disconnected"),
    h("span", { class: low ? "warn" : "" }, battery !== null && battery !== undefined ? `Battery ${battery} %` : "Battery --"),
  );
}

function gatewayLine(patient) {
  const gateway = gatewayOf(patient);
  if (!gateway || gateway.online === null || gateway.online === undefined) {
    return h("span", { class: "gateway" }, `Gateway ${patient.gateway || "unknown"}`);
  }
  return h(
    "span",
    { class: `gateway ${gateway.online ? "ok" : "warn"}` },
    `Gateway ${gateway.online ? "online" : "OFFLINE"}`,
  );
}

export function tile(patient) {
  const alarm = topAlarm(patient.patient);
  const level = alarm ? alarmLevel(alarm) : "none";
  const acknowledged = alarm && alarm.state !== "active";
  const classes = ["tile", `tile-${level}`];
  if (acknowledged) classes.push("tile-acknowledged");
  const title = alarm
    ? h(
        "div",
        { class: "tile-alarm" },
        badge(alarm),
        h("span", { class: "tile-alarm-text" }, alarm.text || alarm.rule),
        acknowledged ? h("span", { class: "tile-alarm-state" }, alarm.state === "silenced" ? "silenced" : "ack'd") : null,
      )
    : h("div", { class: "tile-alarm tile-ok" }, h("span", { "aria-hidden": "true" }, "✓"), " No open alarm");
  const label = alarm
    ? `${patient.patient}: ${levelLabel(level)} priority alarm, ${alarm.text || alarm.rule}`
    : `${patient.patient}: no open alarm`;
  const devices = Object.values(patient.devices || {});
  return h(
    "a",
    {
      class: classes.join(" "),
      href: `#/patient/${encodeURIComponent(patient.patient)}`,
      dataset: { patient: patient.patient, level },
      "aria-label": label,
    },
    h("div", { class: "tile-head" }, h("span", { class: "tile-patient" }, patient.patient), gatewayLine(patient)),
    title,
    h("div", { class: "vitals" }, BOARD_SIGNALS.map((s) => vitalCell(patient, s))),
    devices.length ? h("ul", { class: "devices" }, devices.map(deviceLine)) : h("p", { class: "muted" }, "No device status yet"),
  );
}

export function renderBoard(main) {
  const grid = h("div", { class: "board", id: "board", role: "list" });
  const summary = h("p", { class: "board-summary", id: "board-summary" });
  main.replaceChildren(h("h1", { class: "view-title" }, "Ward board"), summary, grid);
  const tiles = new Map();

  function summaryText() {
    const alarms = [...ward.alarms.values()];
    const count = (level) => alarms.filter((a) => alarmLevel(a) === level).length;
    return `${ward.patients.size} patients · ${count("high")} high · ${count("medium")} medium · ${count("technical")} technical`;
  }

  function place() {
    const order = sortedPatients();
    order.forEach((patient, index) => {
      let element = tiles.get(patient.patient);
      if (!element) {
        element = tile(patient);
        tiles.set(patient.patient, element);
      }
      element.setAttribute("role", "listitem");
      if (grid.children[index] !== element) grid.insertBefore(element, grid.children[index] || null);
    });
    for (const [id, element] of tiles) {
      if (!ward.patients.has(id)) {
        element.remove();
        tiles.delete(id);
      }
    }
    summary.textContent = summaryText();
  }

  function refresh(ids) {
    for (const id of ids) {
      const patient = ward.patients.get(id);
      const old = tiles.get(id);
      if (!patient || !old) continue;
      const fresh = tile(patient);
      fresh.setAttribute("role", "listitem");
      const hadFocus = document.activeElement === old;
      old.replaceWith(fresh);
      tiles.set(id, fresh);
      if (hadFocus) fresh.focus();
    }
  }

  place();
  const unsubscribe = subscribe((change) => {
    if (change.kind === "snapshot") {
      for (const element of tiles.values()) element.remove();
      tiles.clear();
      place();
    } else if (change.kind === "values") {
      refresh(change.patients);
      place();
    } else if (change.kind === "alarm") {
      refresh(change.patients);
      place();
    }
  });
  const ticker = setInterval(() => {
    for (const element of grid.querySelectorAll(".vital-age[data-t]")) {
      const t = Number(element.dataset.t);
      if (!t) continue;
      const stale = isStale(t);
      element.textContent = `${stale ? "stale · " : ""}${age(t)}`;
      element.parentElement.classList.toggle("stale", stale);
    }
  }, 1000);
  return () => {
    unsubscribe();
    clearInterval(ticker);
  };
}

export { levelIcon };
