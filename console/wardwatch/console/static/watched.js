// Alarms resolved by hand while their condition lasts: the alerting service watches them and opens a new
// alarm at realarm_at unless the condition clears. The board shows the watch on the patient's tile instead
// of "No open alarm" (docs/alerting.md, "Resolving while the condition lasts").

import { h } from "./util.js";

// alarm id -> the resolved alarm (state "resolved", realarm_at set), kept from the snapshot and alarm events
export const watches = new Map();

export function loadWatches(snapshot) {
  watches.clear();
  for (const alarm of snapshot.watched || []) watches.set(alarm.alarm_id, alarm);
}

// An alarm event: a resolved alarm with realarm_at is watched; any other state of it ends the watch.
export function noteAlarm(alarm) {
  if (alarm.state === "resolved" && alarm.realarm_at) watches.set(alarm.alarm_id, alarm);
  else watches.delete(alarm.alarm_id);
}

export function forgetPatient(patient) {
  for (const [id, alarm] of watches) if (alarm.patient === patient) watches.delete(id);
}

// The patient's watch that re-alarms first, if any.
export function watchOf(patient) {
  let first = null;
  for (const alarm of watches.values()) {
    if (alarm.patient === patient && (first === null || alarm.realarm_at < first.realarm_at)) first = alarm;
  }
  return first;
}

function hhmm(t) {
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function watchText(watch) {
  return `Resolved by ${watch.actor || "someone"} while present — re-alarms ${hhmm(watch.realarm_at)} unless it clears`;
}

// The tile's alarm line during the hold: neutral styling, an icon and the words (not colour alone).
export function watchLine(watch) {
  return h(
    "div",
    { class: "tile-alarm tile-watched", dataset: { realarmAt: String(watch.realarm_at) } },
    h("span", { "aria-hidden": "true" }, "⏱"),
    h("span", { class: "tile-alarm-text" }, `${watch.text || watch.rule}: ${watchText(watch)}`),
  );
}
