// The ward's live state in the browser: patients, gateways and open alarms, kept by the live stream.

import { alarmLevel, rank, syncClock } from "./util.js";
import { forgetPatient, loadWatches, noteAlarm } from "./watched.js";

export const ward = {
  patients: new Map(),
  gateways: new Map(),
  alarms: new Map(), // open alarms by id
  staleAfterS: 60,
  role: null, // the logged-in user's role
};

const listeners = new Set();

export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function emit(change) {
  for (const listener of listeners) listener(change);
}

function ensurePatient(id) {
  let patient = ward.patients.get(id);
  if (!patient) {
    patient = { patient: id, gateway: null, vitals: {}, devices: {} };
    ward.patients.set(id, patient);
  }
  return patient;
}

export function applySnapshot(snapshot) {
  syncClock(snapshot.now);
  ward.patients.clear();
  ward.gateways.clear();
  ward.alarms.clear();
  for (const patient of snapshot.patients) ward.patients.set(patient.patient, patient);
  for (const gateway of snapshot.gateways) ward.gateways.set(gateway.gateway, gateway);
  loadWatches(snapshot);
  for (const alarm of snapshot.alarms) {
    ward.alarms.set(alarm.alarm_id, alarm);
    ensurePatient(alarm.patient);
  }
  emit({ kind: "snapshot" });
}

export function applyValues(data) {
  syncClock(data.now);
  const changed = [];
  for (const patient of data.patients) {
    ward.patients.set(patient.patient, patient);
    changed.push(patient.patient);
  }
  for (const gateway of data.gateways) ward.gateways.set(gateway.gateway, gateway);
  emit({ kind: "values", patients: changed, gateways: data.gateways.map((g) => g.gateway) });
}

// A patient admitted (a tile before the first reading) or discharged (the tile goes, with their alarms).
export function applyAdmitted(data) {
  syncClock(data.now);
  if (!ward.patients.has(data.patient.patient)) ward.patients.set(data.patient.patient, data.patient);
  emit({ kind: "roster", patients: [data.patient.patient] });
}

export function applyDischarged(data) {
  syncClock(data.now);
  ward.patients.delete(data.patient);
  for (const [id, alarm] of ward.alarms) if (alarm.patient === data.patient) ward.alarms.delete(id);
  forgetPatient(data.patient);
  emit({ kind: "roster", patients: [data.patient] });
}

// Returns what the change means for the nurse: "new" (raise tones), "update" or "closed".
export function applyAlarm(alarm) {
  const before = ward.alarms.get(alarm.alarm_id);
  noteAlarm(alarm);
  let meaning = "update";
  if (alarm.state === "resolved") {
    ward.alarms.delete(alarm.alarm_id);
    meaning = "closed";
  } else {
    ward.alarms.set(alarm.alarm_id, alarm);
    ensurePatient(alarm.patient);
    const reactivated = before && before.state !== "active" && alarm.state === "active";
    const escalated = before && rank(alarm) > rank(before);
    if ((!before && alarm.state === "active") || reactivated || escalated) meaning = "new";
  }
  emit({ kind: "alarm", alarm, meaning, patients: [alarm.patient] });
  return meaning;
}

export function patientAlarms(id) {
  return [...ward.alarms.values()].filter((a) => a.patient === id);
}

export function gatewayOf(patient) {
  return patient.gateway ? ward.gateways.get(patient.gateway) : undefined;
}

// The most urgent open alarm of a patient (unacknowledged first).
export function topAlarm(id) {
  let best = null;
  for (const alarm of patientAlarms(id)) {
    if (best === null || compareAlarms(alarm, best) < 0) best = alarm;
  }
  return best;
}

export function compareAlarms(a, b) {
  const byRank = rank(b) - rank(a);
  if (byRank) return byRank;
  const physiological = (b.category !== "technical") - (a.category !== "technical");
  if (physiological) return physiological;
  const active = (b.state === "active") - (a.state === "active");
  if (active) return active;
  return a.started - b.started;
}

export function highestActiveLevel() {
  let best = null;
  for (const alarm of ward.alarms.values()) {
    if (alarm.state !== "active") continue;
    if (best === null || rank(alarm) > rank(best)) best = alarm;
  }
  return best ? alarmLevel(best) : null;
}
