// A patient's alarm thresholds and rule profile: the effective values and this patient's overrides,
// editable by the roles the API lets (charge nurse, doctor, admin) within the API's own ranges (from its
// OpenAPI document), with a reason that is required and audited. Others see them read-only.

import { ApiError, get, post } from "./api.js";
import { formBounds } from "./observations.js";
import { ward } from "./store.js";
import { h } from "./util.js";

const WRITE_ROLES = new Set(["charge_nurse", "doctor", "admin"]);
// The settings nurses change most, first; every other one is under "All settings".
const MAIN = [
  ["profile", "Rule profile", ""],
  ["spo2_low", "SpO₂ low", "%"],
  ["spo2_delay_s", "SpO₂ low delay", "s"],
  ["spo2_severe_margin", "SpO₂ severe: below low by", "%"],
  ["hr_high", "Heart rate high", "/min"],
  ["hr_high_delay_s", "Heart rate high delay", "s"],
  ["hr_low", "Heart rate low", "/min"],
  ["hr_low_delay_s", "Heart rate low delay", "s"],
  ["hr_low_severe", "Heart rate severe low", "/min"],
  ["news2_scale", "NEWS2 SpO₂ scale", ""],
  ["supplemental_o2", "On supplemental oxygen (profile)", ""],
  ["bp_systolic_low", "Systolic BP low", "mmHg"],
  ["temp_high", "Temperature high", "°C"],
  ["temp_low", "Temperature low", "°C"],
];
const LABELS = Object.fromEntries(MAIN.map(([key, label, unit]) => [key, { label, unit }]));

function labelOf(key) {
  return LABELS[key] ? LABELS[key].label : key.replaceAll("_", " ").replace(/\bs$/, "(s)");
}

function shown(value) {
  if (value === true) return "yes";
  if (value === false) return "no";
  return String(value);
}

function rangeText(schema, unit) {
  if (!schema) return "";
  if (schema.enum) return schema.enum.join(" or ");
  if (schema.type === "boolean") return "yes or no";
  return `${schema.minimum}–${schema.maximum}${unit ? ` ${unit}` : ""}`;
}

function control(key, schema, override, disabled) {
  const id = `th-${key}`;
  const set = override !== undefined;
  if (schema && (schema.enum || schema.type === "boolean")) {
    const choices = schema.enum || [true, false];
    return h(
      "select",
      { id, name: key, disabled, dataset: { key, kind: schema.enum ? typeof schema.enum[0] : "boolean" } },
      h("option", { value: "" }, "no override"),
      choices.map((c) => h("option", { value: String(c), selected: set && String(override) === String(c) }, shown(c))),
    );
  }
  return h("input", {
    id,
    name: key,
    type: "number",
    disabled,
    min: schema ? schema.minimum : undefined,
    max: schema ? schema.maximum : undefined,
    step: schema && schema.type === "integer" ? 1 : "any",
    value: set ? String(override) : "",
    placeholder: "no override",
    dataset: { key, kind: schema && schema.type === "integer" ? "integer" : "number" },
  });
}

function row(key, schema, effective, overrides, disabled) {
  const unit = LABELS[key] ? LABELS[key].unit : "";
  const overridden = Object.hasOwn(overrides, key);
  return h(
    "tr",
    { dataset: { setting: key }, class: overridden ? "overridden" : "" },
    h("th", { scope: "row" }, h("label", { for: `th-${key}` }, labelOf(key))),
    h("td", { class: "th-effective" }, `${shown(effective[key])}${unit && typeof effective[key] === "number" ? ` ${unit}` : ""}`, overridden ? h("span", { class: "chip" }, "override") : null),
    h("td", {}, control(key, schema, overrides[key], disabled)),
    h("td", { class: "hint" }, rangeText(schema, unit)),
  );
}

function table(keys, bounds, effective, overrides, disabled, caption) {
  return h(
    "table",
    { class: "thresholds" },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, ["Setting", "Effective", "Patient override", "Allowed"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, keys.map((key) => row(key, bounds[key], effective, overrides, disabled))),
  );
}

function readOverrides(form) {
  const overrides = {};
  for (const element of form.querySelectorAll("[data-key]")) {
    const raw = element.value.trim();
    if (raw === "") continue;
    const kind = element.dataset.kind;
    if (kind === "boolean") overrides[element.dataset.key] = raw === "true";
    else if (kind === "string") overrides[element.dataset.key] = raw;
    else overrides[element.dataset.key] = Number(raw);
  }
  return overrides;
}

// ``firstRead``: the view's read of the thresholds (a promise), used for the first drawing instead of another
// read; after a save the panel reads them again.
export function renderThresholdsPanel(box, patient, firstRead = null) {
  const canWrite = WRITE_ROLES.has(ward.role);
  let pending = firstRead;
  box.replaceChildren(h("h2", { id: "thresholds-title" }, "Thresholds and rule profile"), h("p", { class: "muted" }, "Loading…"));

  async function draw(message) {
    let current;
    let bounds;
    try {
      const read = pending || get(`/api/patients/${encodeURIComponent(patient)}/thresholds`);
      pending = null;
      [current, bounds] = await Promise.all([read, formBounds()]);
    } catch (failure) {
      box.replaceChildren(h("h2", { id: "thresholds-title" }, "Thresholds and rule profile"), h("p", { class: "error" }, failure.message));
      return;
    }
    const { effective, overrides } = current;
    const known = Object.keys(bounds.thresholds);
    const main = MAIN.map(([key]) => key).filter((key) => known.includes(key));
    const rest = known.filter((key) => !main.includes(key)).sort();
    const disabled = !canWrite;
    const count = Object.keys(overrides).length;
    const error = h("p", { class: "error", id: "th-error", role: "alert" });
    const done = h("p", { class: "notice-ok", id: "th-done", role: "status" }, message || "");
    const reasonMax = bounds.reason.maxLength || 500;
    const form = h(
      "form",
      { id: "thresholds-form", novalidate: true, "aria-labelledby": "thresholds-title" },
      h(
        "p",
        { class: "muted small" },
        count ? `${count} override${count === 1 ? "" : "s"} for this patient; the rest come from the ward's rules.` : "No overrides: the ward's rules apply.",
        disabled ? " Your role can view these but not change them." : " Empty a field to remove its override. A reason is required; every change is audited.",
      ),
      table(main, bounds.thresholds, effective, overrides, disabled, "Main thresholds"),
      h(
        "details",
        { class: "all-settings" },
        h("summary", {}, `All settings (${rest.length} more)`),
        table(rest, bounds.thresholds, effective, overrides, disabled, "All other thresholds"),
      ),
    );
    if (!disabled) {
      const reason = h("textarea", { id: "th-reason", rows: 2, maxlength: reasonMax, "aria-required": "true" });
      const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Save thresholds");
      form.append(h("label", { for: "th-reason", class: "block-label" }, "Reason for the change (required)"), reason, error, done, h("div", { class: "form-buttons" }, submit));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        error.textContent = "";
        done.textContent = "";
        for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
        if (!reason.value.trim()) {
          error.textContent = "A reason is required.";
          reason.focus();
          return;
        }
        submit.disabled = true;
        try {
          const saved = await post(`/api/patients/${encodeURIComponent(patient)}/thresholds`, {
            overrides: readOverrides(form),
            reason: reason.value.trim(),
          });
          const n = Object.keys(saved.overrides).length;
          await draw(`Saved and audited: ${n} override${n === 1 ? "" : "s"} now apply to this patient.`);
        } catch (failure) {
          error.textContent = failure instanceof ApiError ? failure.message : String(failure);
          const named = /:\s*([a-z0-9_]+):/.exec(error.textContent);
          const field = named && form.querySelector(`[data-key="${named[1]}"]`);
          if (field) {
            if (field.closest("details")) field.closest("details").open = true;
            field.setAttribute("aria-invalid", "true");
            field.focus();
          }
          submit.disabled = false;
        }
      });
    } else {
      form.append(done);
    }
    box.replaceChildren(h("h2", { id: "thresholds-title" }, "Thresholds and rule profile"), form);
  }

  draw();
  return () => {};
}
