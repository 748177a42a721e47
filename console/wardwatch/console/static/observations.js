// The NEWS2 panel of the patient view: the score now and the parameters behind it, its history
// (1 h / 24 h / 7 d, from InfluxDB through the console), and, for clinical roles, the form to enter
// a nurse's observations. The API bounds every value and its message is shown as it is.

import { ApiError, get, post } from "./api.js";
import { ACVPU, BAND_LABEL, historyChart, missingText, news2Key, PARAMETERS, parameterTable, readHistory } from "./news2.js";
import { subscribe, ward } from "./store.js";
import { dateTime, h, now } from "./util.js";

const RECORD_ROLES = new Set(["nurse", "charge_nurse", "doctor"]);
// (short labels: the trends below have "1 hour", "24 hours", "7 days")
const RANGES = [
  ["1h", "1 h"],
  ["24h", "24 h"],
  ["7d", "7 d"],
];
// The numeric fields of the form, in the order nurses take them (bounds come from the API's schema).
const NUMBERS = [
  { key: "respiration", label: "Respiratory rate", unit: "/min", step: 1 },
  { key: "spo2", label: "SpO₂", unit: "%", step: 1 },
  { key: "systolic", label: "Systolic BP", unit: "mmHg", step: 1 },
  { key: "pulse", label: "Pulse", unit: "/min", step: 1 },
  { key: "temperature", label: "Temperature", unit: "°C", step: 0.1 },
];

let formsCache = null;

export async function formBounds() {
  if (formsCache === null) formsCache = await get("/api/forms");
  return formsCache;
}

// {minimum, maximum} of a field in the API's schema (an optional field is anyOf [bounded, null]).
export function bounds(schema) {
  if (!schema) return {};
  const options = schema.anyOf || [schema];
  const bounded = options.find((o) => o.minimum !== undefined || o.maximum !== undefined) || {};
  return { min: bounded.minimum, max: bounded.maximum };
}

function scoreSummary(score) {
  const band = score.band || "low";
  return h(
    "div",
    { class: `news2-now news2-${band}`, id: "news2-now", dataset: { news2: score.full ? "full" : "partial", score: score.score } },
    h("span", { class: "news2-big" }, String(score.score)),
    h(
      "div",
      {},
      h("p", { class: "news2-title" }, `NEWS2 ${score.score} · ${BAND_LABEL[band]} risk`, score.full ? " · full" : " · partial"),
      h("p", { class: "news2-tier" }, `Response: ${score.tier}`),
      score.full
        ? h("p", { class: "muted small" }, "All seven parameters are recent.")
        : h("p", { class: "news2-missing-line" }, `Partial: missing ${missingText(score)}. The score is a lower bound.`),
    ),
  );
}

// "YYYY-MM-DDTHH:MM" of ``ms`` in local time (a datetime-local input's value).
function localMinute(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}`;
}

function observationForm(patient, onSaved, schema) {
  const error = h("p", { class: "error", id: "obs-error", role: "alert" });
  const done = h("p", { class: "notice-ok", id: "obs-done", role: "status" });
  const fields = [];
  const inputs = {};
  for (const field of NUMBERS) {
    const { min, max } = bounds(schema[field.key]);
    const id = `obs-${field.key}`;
    const input = h("input", { id, name: field.key, type: "number", inputmode: field.step < 1 ? "decimal" : "numeric", min, max, step: field.step });
    inputs[field.key] = input;
    const hint = min !== undefined ? `${min}–${max} ${field.unit}` : field.unit;
    fields.push(h("div", { class: "field" }, h("label", { for: id }, `${field.label} (${field.unit})`), input, h("span", { class: "hint" }, hint)));
  }
  const oxygen = h(
    "select",
    { id: "obs-o2", name: "supplemental_o2" },
    h("option", { value: "" }, "not recorded"),
    h("option", { value: "air" }, "Air"),
    h("option", { value: "oxygen" }, "Oxygen"),
  );
  const consciousness = h(
    "select",
    { id: "obs-acvpu", name: "consciousness" },
    h("option", { value: "" }, "not recorded"),
    Object.entries(ACVPU).map(([letter, text]) => h("option", { value: letter }, `${letter} — ${text}`)),
  );
  fields.splice(
    1,
    0,
    h("div", { class: "field" }, h("label", { for: "obs-acvpu" }, "Consciousness (ACVPU)"), consciousness, h("span", { class: "hint" }, "new confusion scores 3")),
    h("div", { class: "field" }, h("label", { for: "obs-o2" }, "Supplemental oxygen"), oxygen, h("span", { class: "hint" }, "oxygen scores 2")),
  );
  // the date and time taken, bounded as the API bounds it (not in the future, not older than it accepts)
  const limits = schema.taken_at || {};
  const maxAgeMs = limits["x-max-age-ms"] || 0;
  const slackMs = limits["x-future-slack-ms"] || 0;
  const takenAt = h("input", { id: "obs-time", name: "taken_at", type: "datetime-local", required: true });
  const ageHint = maxAgeMs ? `not in the future, not more than ${Math.round(maxAgeMs / 3600000)} h ago` : "not in the future";
  const note = h("input", { id: "obs-note", name: "note", maxlength: 500, autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Record observations");
  const form = h(
    "form",
    { class: "obs-form", id: "obs-form", novalidate: true, "aria-labelledby": "obs-title" },
    h("h3", { id: "obs-title" }, "Enter observations"),
    h("p", { class: "muted small" }, "Enter what you measured; leave the rest empty. Every entry is audited and re-scores NEWS2 at once."),
    h("div", { class: "obs-grid" }, fields),
    h(
      "div",
      { class: "obs-grid" },
      h("div", { class: "field field-wide" }, h("label", { for: "obs-time" }, "Taken at (date and time)"), takenAt, h("span", { class: "hint" }, ageHint)),
      h("div", { class: "field field-wide" }, h("label", { for: "obs-note" }, "Note (optional)"), note, h("span", { class: "hint" }, "e.g. after a video call")),
    ),
    error,
    done,
    h("div", { class: "form-buttons" }, submit),
  );
  const setBounds = () => {
    takenAt.max = localMinute(now());
    if (maxAgeMs) takenAt.min = localMinute(now() - maxAgeMs + 60000);
  };
  const setNow = () => {
    takenAt.value = localMinute(now());
    setBounds();
  };
  setNow();
  takenAt.addEventListener("focus", setBounds); // time passes while the form is open
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    done.textContent = "";
    for (const input of Object.values(inputs)) input.removeAttribute("aria-invalid");
    const body = {};
    for (const field of NUMBERS) {
      const raw = inputs[field.key].value.trim();
      if (raw === "") continue;
      const value = Number(raw);
      if (!Number.isFinite(value)) {
        inputs[field.key].setAttribute("aria-invalid", "true");
        error.textContent = `${field.label}: enter a number.`;
        inputs[field.key].focus();
        return;
      }
      body[field.key] = value;
    }
    if (oxygen.value) body.supplemental_o2 = oxygen.value === "oxygen";
    if (consciousness.value) body.consciousness = consciousness.value;
    if (note.value.trim()) body.note = note.value.trim();
    takenAt.removeAttribute("aria-invalid");
    const taken = takenAt.value ? new Date(takenAt.value).getTime() : NaN; // "YYYY-MM-DDTHH:MM": local time
    const tooOld = maxAgeMs && taken < now() - maxAgeMs;
    if (!Number.isFinite(taken) || taken > now() + slackMs || tooOld) {
      takenAt.setAttribute("aria-invalid", "true");
      error.textContent = !Number.isFinite(taken)
        ? "Taken at: enter the date and time the observations were taken."
        : tooOld
          ? `Taken at: more than ${Math.round(maxAgeMs / 3600000)} h ago; too old to enter as an observation.`
          : "Taken at: that is in the future; enter the time the observations were taken.";
      takenAt.focus();
      return;
    }
    body.taken_at = taken;
    submit.disabled = true;
    try {
      const saved = await post(`/api/patients/${encodeURIComponent(patient)}/observations`, body);
      form.reset();
      setNow();
      done.textContent = `Recorded (taken ${dateTime(saved.taken_at)}, by ${saved.recorded_by}).`;
      onSaved();
    } catch (failure) {
      error.textContent = failure instanceof ApiError ? failure.message : String(failure);
      const named = NUMBERS.find((f) => error.textContent.includes(`$.${f.key}`) || error.textContent.includes(`${f.key}:`));
      if (named) {
        inputs[named.key].setAttribute("aria-invalid", "true");
        inputs[named.key].focus();
      }
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function renderNews2Panel(box, patient) {
  const summary = h("div", { class: "news2-summary" }, h("p", { class: "muted" }, "Loading NEWS2…"));
  const params = h("div", { class: "news2-params" });
  const rangeBar = h("div", { class: "tabs", role: "group", "aria-label": "NEWS2 history range" });
  const chartBox = h("div", { class: "chart", id: "news2-chart" });
  const chartNote = h("p", { class: "muted small", id: "news2-history-source" });
  const formBox = h("div", { class: "obs-box" });
  box.replaceChildren(
    h("h2", { id: "news2-title" }, "NEWS2"),
    h("div", { class: "news2-layout" }, h("div", {}, summary, params), h("div", {}, h("h3", {}, "History"), rangeBar, chartNote, chartBox)),
    formBox,
  );
  let range = "24h";
  let plot = null;
  let shownKey = null;

  async function drawNow() {
    try {
      const score = await get(`/api/patients/${encodeURIComponent(patient)}/news2`);
      if (score.score === null) {
        summary.replaceChildren(h("p", { class: "muted", id: "news2-now" }, "No NEWS2 yet: no readings or observations since the alarm service started."));
        params.replaceChildren();
        return;
      }
      summary.replaceChildren(scoreSummary(score));
      params.replaceChildren(parameterTable(score));
    } catch (failure) {
      summary.replaceChildren(h("p", { class: "muted", id: "news2-now" }, failure.message));
      params.replaceChildren();
    }
  }

  async function drawHistory() {
    for (const button of rangeBar.children) button.setAttribute("aria-pressed", String(button.dataset.range === range));
    try {
      const history = await readHistory(patient, range);
      if (plot) plot.destroy();
      chartBox.replaceChildren();
      const partial = history.points.filter((p) => !p[2]).length;
      chartNote.dataset.full = String(history.points.length - partial);
      chartNote.textContent = history.points.length
        ? `${history.points.length} score${history.points.length === 1 ? "" : "s"} (${history.bucket === "every score" ? "every score" : `worst per ${history.bucket}`}); solid line: full, dashed grey: partial (${partial}).`
        : "No scores stored in this range yet.";
      plot = historyChart(chartBox, history.points, range);
    } catch (failure) {
      chartBox.replaceChildren(h("p", { class: "error" }, failure.message));
    }
  }

  for (const [value, label] of RANGES) {
    rangeBar.append(
      h(
        "button",
        {
          type: "button",
          class: "btn",
          dataset: { range: value },
          onclick: () => {
            range = value;
            drawHistory();
          },
        },
        label,
      ),
    );
  }

  if (RECORD_ROLES.has(ward.role)) {
    formBounds()
      .then((schema) => formBox.replaceChildren(observationForm(patient, drawNow, schema.observation)))
      .catch((failure) => formBox.replaceChildren(h("p", { class: "error" }, failure.message)));
  } else {
    formBox.replaceChildren(h("p", { class: "muted small" }, "Observations are entered by nurses, charge nurses and doctors."));
  }
  drawNow();
  drawHistory();
  const live = ward.patients.get(patient);
  shownKey = news2Key(live && live.news2);
  let historyLater = null;
  const unsubscribe = subscribe((change) => {
    if (!(change.kind === "snapshot" || (change.patients && change.patients.includes(patient)))) return;
    const current = ward.patients.get(patient);
    const key = news2Key(current && current.news2);
    if (key !== shownKey) {
      shownKey = key;
      drawNow(); // the live score changed: show its parameters ...
      clearTimeout(historyLater); // ... and, once published and stored (up to ~10 s), its history
      historyLater = setTimeout(drawHistory, 10000);
    }
  });
  const refresh = setInterval(drawNow, 30000); // the ages of the parameters, and anything the stream missed
  const refreshHistory = setInterval(drawHistory, 60000);
  return () => {
    unsubscribe();
    clearTimeout(historyLater);
    clearInterval(refreshHistory);
    clearInterval(refresh);
    if (plot) plot.destroy();
  };
}

export { PARAMETERS };
