// The ward board: one tile per patient, sorted by acuity, coloured by alarm priority with text and icon.

import { age, alarmLevel, badge, formatValue, h, levelIcon, levelLabel, now, rank, SIGNALS } from "./util.js";
import { gatewayOf, subscribe, topAlarm, ward } from "./store.js";
import { news2Key, news2Line } from "./news2.js";
import { watchLine, watchOf, watchText } from "./watched.js";

const BOARD_SIGNALS = SIGNALS.filter((s) => s.key !== "perfusion_index");
const ROLE_LABEL = { pulse_oximeter: "Oximeter", heart_rate_strap: "HR strap" };

function latestReadingTime(patient) {
  const times = Object.values(patient.vitals).map((v) => v.t);
  return times.length ? Math.max(...times) : null;
}

function isStale(t) {
  return t === null || t === undefined || now() - t > ward.staleAfterS * 1000;
}

// Acuity: the open alarm's priority (a physiological alarm before a technical one of the same priority,
// unacknowledged before acknowledged), then NEWS2 (highest first), then staleness, then the patient id.
function acuityKey(patient) {
  const alarm = topAlarm(patient.patient);
  const alarmRank = alarm
    ? rank(alarm) * 4 + (alarm.category === "technical" ? 0 : 2) + (alarm.state === "active" ? 1 : 0)
    : 0;
  const stale = isStale(latestReadingTime(patient)) ? 1 : 0;
  return [alarmRank, patient.news2 ? patient.news2.score : -1, stale];
}

export function sortedPatients() {
  const keyed = [...ward.patients.values()].map((p) => [acuityKey(p), p]);
  keyed.sort(
    (a, b) => b[0][0] - a[0][0] || b[0][1] - a[0][1] || b[0][2] - a[0][2] || a[1].patient.localeCompare(b[1].patient),
  );
  return keyed.map(([, p]) => p);
}

// IEEE 11073 special values and device states, as a nurse reads them
const ABSENT = {
  nan: "no value",
  nres: "not resolved",
  positive_infinity: "over range",
  negative_infinity: "under range",
  reserved: "no value",
  unavailable: "unavailable",
};

// "12 s ago", or what is wrong with the reading on a line of its own above its age ("stale\n3 min ago",
// "no value\n4 s ago"): a tile is narrow, and the text wraps rather than being cut off.
function ageText(reading, stale) {
  if (!reading) return "no reading";
  const why = [stale ? "stale" : "", reading.value === null && reading.absent ? ABSENT[reading.absent] || "no value" : ""];
  const line = why.filter(Boolean).join(" · ");
  return line ? `${line}\n${age(reading.t)}` : age(reading.t);
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
      ageText(reading, stale),
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
    h("span", { class: connected ? "ok" : "warn" }, connected ? "● connected" : "○ DISCONNECTED"),
    h(
      "span",
      { class: low ? "warn" : "", title: "battery" },
      battery !== null && battery !== undefined ? `bat. ${battery} %${low ? " LOW" : ""}` : "bat. --",
    ),
  );
}

function gatewayText(patient) {
  const gateway = gatewayOf(patient);
  if (!gateway || gateway.online === null || gateway.online === undefined) return `unknown:${patient.gateway}`;
  return `${patient.gateway}:${gateway.online}`;
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
  const watch = alarm ? null : watchOf(patient.patient);
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
    : watch
      ? watchLine(watch) // resolved by hand while present: re-alarms unless it clears
      : h("div", { class: "tile-alarm tile-ok" }, h("span", { "aria-hidden": "true" }, "✓"), " No open alarm");
  const label = alarm
    ? `${patient.patient}: ${levelLabel(level)} priority alarm, ${alarm.text || alarm.rule}`
    : watch
      ? `${patient.patient}: no open alarm; ${watchText(watch)}`
      : `${patient.patient}: no open alarm`;
  const devices = Object.values(patient.devices || {});
  return h(
    "a",
    {
      class: classes.join(" "),
      href: `#/patient/${encodeURIComponent(patient.patient)}`,
      dataset: { patient: patient.patient, level, gateway: gatewayText(patient), news2: news2Key(patient.news2) },
      "aria-label": label,
    },
    h("div", { class: "tile-head" }, h("span", { class: "tile-patient" }, patient.patient), gatewayLine(patient)),
    title,
    news2Line(patient.news2),
    h("div", { class: "vitals" }, BOARD_SIGNALS.map((s) => vitalCell(patient, s))),
    devices.length ? h("ul", { class: "devices" }, devices.map(deviceLine)) : h("p", { class: "muted" }, "No device status yet"),
  );
}

export function renderBoard(main) {
  const grid = h("div", { class: "board", id: "board", role: "list" });
  const summary = h("p", { class: "board-summary", id: "board-summary" });
  main.replaceChildren(h("h1", { class: "view-title" }, "Ward board"), summary, grid);
  const tiles = new Map();
  const staleShown = new Map(); // patient -> stale when last placed (staleness moves a tile up)
  const news2Shown = new Map(); // patient -> NEWS2 score when last placed (a higher score moves it up)

  function summaryText() {
    const alarms = [...ward.alarms.values()];
    const count = (level) => alarms.filter((a) => alarmLevel(a) === level).length;
    return `${ward.patients.size} patients · ${count("high")} high · ${count("medium")} medium · ${count("technical")} technical`;
  }

  function place() {
    const order = sortedPatients();
    order.forEach((patient, index) => {
      staleShown.set(patient.patient, isStale(latestReadingTime(patient)));
      news2Shown.set(patient.patient, patient.news2 ? patient.news2.score : -1);
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

  // Readings changed: patch the tile's numbers in place (cheap for a full ward every quarter second).
  function patch(ids) {
    const rest = [];
    for (const id of ids) {
      const patient = ward.patients.get(id);
      const element = tiles.get(id);
      if (!patient || !element) continue;
      const devices = Object.values(patient.devices || {});
      const list = element.querySelector(".devices");
      const reshaped = element.dataset.gateway !== gatewayText(patient) || element.dataset.news2 !== news2Key(patient.news2);
      if (!list || list.children.length !== devices.length || reshaped) {
        rest.push(id); // the tile's shape changed: build it again
        continue;
      }
      for (const signal of BOARD_SIGNALS) {
        const cell = element.querySelector(`.vital[data-signal="${signal.key}"]`);
        const reading = patient.vitals[signal.key];
        const stale = reading ? isStale(reading.t) : false;
        cell.classList.toggle("stale", stale);
        cell.querySelector(".vital-value").firstChild.nodeValue = formatValue(reading, signal.digits);
        cell.querySelector(".vital-unit").textContent = reading && reading.value !== null ? signal.unit : "";
        const ageCell = cell.querySelector(".vital-age");
        ageCell.dataset.t = reading ? reading.t : "";
        ageCell.textContent = ageText(reading, stale);
      }
      devices.forEach((device, index) => list.children[index].replaceWith(deviceLine(device)));
    }
    refresh(rest);
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

  function staleChanged(ids) {
    return ids.some((id) => isStale(latestReadingTime(ward.patients.get(id))) !== staleShown.get(id));
  }

  function news2Changed(ids) {
    return ids.some((id) => {
      const news2 = ward.patients.get(id).news2;
      return (news2 ? news2.score : -1) !== news2Shown.get(id);
    });
  }

  place();
  const unsubscribe = subscribe((change) => {
    if (change.kind === "snapshot") {
      for (const element of tiles.values()) element.remove();
      tiles.clear();
      place();
    } else if (change.kind === "values") {
      const ids = new Set(change.patients);
      if (change.gateways.length) {
        const gateways = new Set(change.gateways);
        for (const patient of ward.patients.values()) if (gateways.has(patient.gateway)) ids.add(patient.patient);
      }
      const known = [...ids].filter((id) => tiles.has(id));
      patch(known);
      // a new patient, one went stale, or a NEWS2 changed: the order may have too
      if (known.length !== ids.size || staleChanged(known) || news2Changed(known)) place();
    } else if (change.kind === "alarm") {
      refresh(change.patients);
      place();
    } else if (change.kind === "roster") {
      place(); // admitted: a new tile; discharged: the tile goes
    }
  });
  const ticker = setInterval(() => {
    for (const element of grid.querySelectorAll(".vital-age[data-t]")) {
      const t = Number(element.dataset.t);
      if (!t) continue;
      const stale = isStale(t);
      const patient = ward.patients.get(element.closest("a.tile").dataset.patient);
      const reading = patient && patient.vitals[element.parentElement.dataset.signal];
      element.textContent = reading ? ageText(reading, stale) : `${stale ? "stale\n" : ""}${age(t)}`;
      element.parentElement.classList.toggle("stale", stale);
    }
    if (staleChanged([...tiles.keys()])) place();
  }, 1000);
  return () => {
    unsubscribe();
    clearInterval(ticker);
  };
}

export { levelIcon };
