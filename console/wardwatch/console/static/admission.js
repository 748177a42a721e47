// Admission, kits, device swaps, discharge and identity, through the registry API (relayed by the console).
// The identity is typed into the admission form and shown on request in the patient view: it travels only in
// JSON bodies (never a URL), is never stored by the page (no localStorage), and is cleared on leaving the view.

import { get, post } from "./api.js";
import { h } from "./util.js";

const MANAGE_ROLES = new Set(["charge_nurse", "doctor", "admin"]); // the registry's manage_patients
const IDENTITY_ROLES = new Set(["nurse", "charge_nurse", "doctor"]); // its read_identity (clinical roles)
const ROLE_LABEL = { pulse_oximeter: "Pulse oximeter", heart_rate_strap: "Heart-rate strap" };
const PROFILES = [
  { value: "", label: "Virtual ward (default thresholds)" },
  { value: "arrhythmia", label: "Arrhythmia (monitoring-grade heart rhythm alarms)" },
];

// wardwatch.core.ids.ID_PATTERN: what the registry accepts as a device id (checked by the browser first)
const DEVICE_ID_PATTERN = "[a-z0-9][a-z0-9_.\\-]{0,63}";
const DEVICE_ID_RULE = "Lower-case letters, digits, '_', '.' and '-' (up to 64), starting with a letter or digit.";

let role = "";

export function setRegistryRole(value) {
  role = value;
}

export const canManagePatients = () => MANAGE_ROLES.has(role);
export const canReadIdentity = () => IDENTITY_ROLES.has(role);

let fieldCount = 0;

// A labelled input (or select / textarea) with a unique id.
function field(label, control, hint) {
  fieldCount += 1;
  const id = control.id || `reg-field-${fieldCount}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("span", { class: "muted small", id: hintId }, hint) : null,
    control,
  );
}

function input(attrs) {
  return h("input", { autocomplete: "off", spellcheck: "false", ...attrs });
}

function reasonField(id, placeholder) {
  return field("Reason (required, kept in the audit log)", h("textarea", { id, rows: 2, maxlength: 500, "aria-required": "true", placeholder }));
}

// The registry's refusal as the nurse should read it (its 400 / 403 / 409 messages are written for people).
function refusal(failure) {
  if (failure.status === 403) return `Not allowed for your role: ${failure.message}`;
  if (failure.status === 409) return `Refused: ${failure.message}`;
  if (failure.status === 503) return `The registry is unavailable: ${failure.message}`;
  return failure.message;
}

function required(value, error, what, control) {
  if (value) return true;
  error.textContent = `${what} is required.`;
  control.focus();
  return false;
}

function submitting(form, busy) {
  for (const button of form.querySelectorAll("button")) button.disabled = busy;
}

// -- kit ------------------------------------------------------------------------------------------------

function gatewayLabel(gateway) {
  const free = gateway.capacity - gateway.bound;
  const home = gateway.home ? ` (${gateway.home})` : "";
  return `${gateway.gateway}${home} · ${gateway.bound} of ${gateway.capacity} slots used${free <= 0 ? " · FULL" : ""}`;
}

// Assign a kit (gateway + oximeter and/or strap) to `patient`; onDone(bindings) after the registry took it.
export function kitForm(patient, onDone) {
  const gatewaySelect = h("select", { id: `kit-gateway-${patient}`, "aria-required": "true" }, h("option", { value: "" }, "Loading gateways…"));
  const devices = ["pulse_oximeter", "heart_rate_strap"].map((deviceRole) => ({
    role: deviceRole,
    id: input({ id: `kit-${deviceRole}-${patient}`, pattern: DEVICE_ID_PATTERN, title: DEVICE_ID_RULE, placeholder: deviceRole === "pulse_oximeter" ? "e.g. plx-0042" : "e.g. hrs-0042" }),
    name: input({ id: `kit-${deviceRole}-name-${patient}`, maxlength: 64 }),
  }));
  const reason = reasonField(`kit-reason-${patient}`, "e.g. kit delivered at admission");
  const error = h("p", { class: "error", role: "alert" });
  const button = h("button", { type: "submit", class: "btn btn-primary" }, "Assign kit");
  const form = h(
    "form",
    { class: "reg-form", "aria-label": `Assign a kit to ${patient}`, dataset: { form: "kit" } },
    field("Gateway (the patient's home hub)", gatewaySelect, "Each gateway has a fixed number of connection slots for continuous devices."),
    devices.map((device) =>
      h(
        "fieldset",
        { class: "device-fields" },
        h("legend", {}, ROLE_LABEL[device.role]),
        field("Device id", device.id, `${DEVICE_ID_RULE} Leave empty if not part of the kit.`),
        field("Advertised Bluetooth name (optional)", device.name),
      ),
    ),
    reason,
    error,
    h("div", { class: "reg-buttons" }, button),
  );
  get("/api/registry/gateways")
    .then((data) => {
      gatewaySelect.replaceChildren(
        h("option", { value: "" }, data.gateways.length ? "Choose a gateway" : "No gateway registered for this ward"),
        ...data.gateways.map((g) => h("option", { value: g.gateway }, gatewayLabel(g))),
      );
    })
    .catch((failure) => {
      error.textContent = refusal(failure);
    });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!required(gatewaySelect.value, error, "A gateway", gatewaySelect)) return;
    const chosen = devices
      .filter((d) => d.id.value.trim())
      .map((d) => {
        const device = { id: d.id.value.trim(), role: d.role };
        if (d.name.value.trim()) device.name = d.name.value.trim();
        return device;
      });
    if (!chosen.length) {
      error.textContent = "Enter at least one device id.";
      devices[0].id.focus();
      return;
    }
    const why = reason.querySelector("textarea");
    if (!required(why.value.trim(), error, "A reason", why)) return;
    submitting(form, true);
    try {
      const answer = await post(`/api/registry/patients/${encodeURIComponent(patient)}/kit`, {
        gateway: gatewaySelect.value,
        devices: chosen,
        reason: why.value.trim(),
      });
      onDone(answer.bindings);
    } catch (failure) {
      error.textContent = refusal(failure);
    } finally {
      submitting(form, false);
    }
  });
  return form;
}

function bindingsTable(bindings, caption, onSwap) {
  const current = bindings.filter((b) => b.until === null || b.until === undefined);
  if (!current.length) return h("p", { class: "muted", id: "kit-empty" }, "No device is bound to this patient.");
  return h(
    "table",
    { id: "kit-table" },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Kind"), h("th", {}, "Gateway"), h("th", {}, "Since"), onSwap ? h("th", {}, "Action") : null)),
    h(
      "tbody",
      {},
      current.map((b) =>
        h(
          "tr",
          { dataset: { device: b.device } },
          h("td", { class: "mono" }, b.device),
          h("td", {}, ROLE_LABEL[b.role] || b.role),
          h("td", { class: "mono" }, b.gateway),
          h("td", {}, new Date(b.since).toLocaleString([], { dateStyle: "short", timeStyle: "short" })),
          onSwap ? h("td", {}, h("button", { type: "button", class: "btn", onclick: () => onSwap(b), "aria-label": `Swap ${b.device}` }, "Swap")) : null,
        ),
      ),
    ),
  );
}

// -- the admission view ------------------------------------------------------------------------------

export function renderAdmit(main) {
  const name = input({ id: "admit-name", maxlength: 200, "aria-required": "true", autocomplete: "off" });
  const birth = input({ id: "admit-dob", type: "date", max: new Date().toISOString().slice(0, 10) });
  const number = input({ id: "admit-number", maxlength: 200, inputmode: "text" });
  const profile = h("select", { id: "admit-profile" }, PROFILES.map((p) => h("option", { value: p.value }, p.label)));
  const reason = reasonField("admit-reason", "e.g. referral from the respiratory team");
  const error = h("p", { class: "error", id: "admit-error", role: "alert" });
  const button = h("button", { type: "submit", class: "btn btn-primary" }, "Admit patient");
  const form = h(
    "form",
    { class: "reg-form", id: "admit-form", "aria-labelledby": "admit-identity-title" },
    h("h2", { id: "admit-identity-title" }, "1. Who is the patient"),
    h("p", { class: "muted small" }, "The identity is stored encrypted by the registry and shown only to clinical staff, each view audited. Everywhere else the patient is known by the id the registry issues."),
    field("Full name (required)", name),
    field("Date of birth", birth),
    field("NHS number or local MRN", number),
    field("Alarm profile", profile),
    reason,
    error,
    h("div", { class: "reg-buttons" }, button),
  );
  const result = h("section", { class: "panel", id: "admit-result", "aria-live": "polite", hidden: true });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/board", class: "back" }, "← Ward board")),
    h("h1", { class: "view-title" }, "Admit a patient"),
    h("section", { class: "panel" }, form),
    result,
  );

  form.addEventListener("input", () => {
    error.textContent = ""; // the message was about what is being corrected
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!required(name.value.trim(), error, "The patient's name", name)) return;
    const why = reason.querySelector("textarea");
    if (!required(why.value.trim(), error, "A reason", why)) return;
    const identity = { name: name.value.trim() };
    if (birth.value) identity.date_of_birth = birth.value;
    if (number.value.trim()) identity.hospital_number = number.value.trim();
    const body = { reason: why.value.trim(), identity };
    if (profile.value) body.profile = profile.value;
    submitting(form, true);
    try {
      const admitted = await post("/api/registry/patients", body);
      form.reset(); // the identity leaves the page once the registry holds it
      form.querySelectorAll("input, select, textarea, button").forEach((control) => {
        control.disabled = true;
      });
      showAdmitted(admitted.patient);
    } catch (failure) {
      error.textContent = refusal(failure);
      submitting(form, false);
    }
  });

  function showAdmitted(patient) {
    const kitResult = h("div", { id: "kit-result", "aria-live": "polite" });
    result.hidden = false;
    result.replaceChildren(
      h("h2", { id: "admitted-title" }, "2. Kit"),
      h(
        "p",
        { class: "notice", id: "admitted-notice", role: "status" },
        "Admitted as ",
        h("strong", { class: "mono", id: "admitted-id" }, patient),
        ". Use this id on the phone and on the kit's label; the name stays in the registry.",
      ),
      kitForm(patient, (bindings) => {
        kitResult.replaceChildren(
          h("p", { class: "notice", role: "status" }, `Kit assigned to ${patient}. The patient's tile is on the board; readings appear when the gateway connects the devices.`),
          bindingsTable(bindings, `Devices of ${patient}`, null),
          h("p", {}, h("a", { href: `#/patient/${encodeURIComponent(patient)}`, class: "btn" }, `Open ${patient}`), " ", h("a", { href: "#/admit", class: "btn", onclick: () => setTimeout(() => renderAdmit(main), 0) }, "Admit another")),
        );
        kitResult.querySelector("a").focus();
      }),
      kitResult,
    );
    result.querySelector("select").focus();
  }

  return () => {
    form.reset();
  };
}

// -- the patient view's registry panel -----------------------------------------------------------------

function confirmDischarge(patient, onDone) {
  const reason = h("textarea", { id: "discharge-reason", rows: 3, maxlength: 500, "aria-required": "true" });
  const error = h("p", { class: "error", id: "discharge-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-danger" }, "Discharge");
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  const dialog = h(
    "dialog",
    { id: "discharge-dialog", "aria-labelledby": "discharge-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "discharge-title" }, `Discharge ${patient}?`),
      h("p", { class: "muted" }, "Monitoring stops: open alarms are resolved, the devices are freed, later readings are refused. This cannot be undone."),
      h("label", { for: "discharge-reason" }, "Reason (required)"),
      reason,
      error,
      h("div", { class: "dialog-buttons" }, cancel, submit),
    ),
  );
  const close = () => {
    dialog.close();
    dialog.remove();
  };
  cancel.addEventListener("click", close);
  dialog.addEventListener("cancel", () => dialog.remove());
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!required(reason.value.trim(), error, "A reason", reason)) return;
    submit.disabled = true;
    try {
      await post(`/api/registry/patients/${encodeURIComponent(patient)}/discharge`, { reason: reason.value.trim() });
      close();
      onDone();
    } catch (failure) {
      error.textContent = refusal(failure);
      submit.disabled = false;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

function swapForm(patient, binding, onDone, onCancel) {
  const id = input({ id: "swap-new-id", "aria-required": "true", pattern: DEVICE_ID_PATTERN, title: DEVICE_ID_RULE });
  const kind = h("select", { id: "swap-role" }, ["pulse_oximeter", "heart_rate_strap"].map((r) => h("option", { value: r, selected: r === binding.role }, ROLE_LABEL[r])));
  const name = input({ id: "swap-name", maxlength: 64 });
  const reason = reasonField("swap-reason", "e.g. battery failed");
  const error = h("p", { class: "error", id: "swap-error", role: "alert" });
  const form = h(
    "form",
    { class: "reg-form", id: "swap-form", "aria-labelledby": "swap-title" },
    h("h3", { id: "swap-title" }, `Swap ${binding.device}`),
    h("p", { class: "muted small" }, `From now on readings of ${binding.device} are refused and those of the new device accepted.`),
    field("New device id", id),
    field("Kind", kind),
    field("Advertised Bluetooth name (optional)", name),
    reason,
    error,
    h("div", { class: "reg-buttons" }, h("button", { type: "button", class: "btn", onclick: onCancel }, "Cancel"), h("button", { type: "submit", class: "btn btn-primary" }, "Swap device")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!required(id.value.trim(), error, "The new device's id", id)) return;
    const why = reason.querySelector("textarea");
    if (!required(why.value.trim(), error, "A reason", why)) return;
    const device = { id: id.value.trim(), role: kind.value };
    if (name.value.trim()) device.name = name.value.trim();
    submitting(form, true);
    try {
      const answer = await post(`/api/registry/patients/${encodeURIComponent(patient)}/swap`, { old_device: binding.device, new: device, reason: why.value.trim() });
      onDone(answer.bindings);
    } catch (failure) {
      error.textContent = refusal(failure);
      submitting(form, false);
    }
  });
  setTimeout(() => id.focus(), 0);
  return form;
}

function identityBlock(patient) {
  const box = h("div", { id: "identity", class: "identity" });
  const show = () => {
    const button = h("button", { type: "button", class: "btn", id: "identity-show" }, "Show identity");
    box.replaceChildren(
      h("p", { class: "muted small" }, "Name, date of birth and hospital number, from the registry. Each view is audited under your name."),
      button,
      h("p", { class: "error", id: "identity-error", role: "alert" }),
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const answer = await post(`/api/registry/patients/${encodeURIComponent(patient)}/identity/reveal`, {});
        reveal(answer.identity);
      } catch (failure) {
        box.querySelector("#identity-error").textContent = failure.status === 404 ? "No identity is stored for this patient." : refusal(failure);
        button.disabled = false;
      }
    });
  };
  const reveal = (identity) => {
    const rows = [
      ["Name", identity.name],
      ["Date of birth", identity.date_of_birth],
      ["NHS number / MRN", identity.hospital_number],
      ["Phone", identity.phone],
      ["Address", identity.address],
    ].filter(([, value]) => value);
    const hide = h("button", { type: "button", class: "btn", id: "identity-hide", onclick: show }, "Hide identity");
    box.replaceChildren(
      h("dl", { class: "identity-list", id: "identity-details" }, rows.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value)])),
      h("p", { class: "muted small" }, "This view was recorded in the audit log."),
      hide,
    );
    hide.focus();
  };
  show();
  return { element: box, clear: () => box.replaceChildren() };
}

// The patient view's "Admission and devices" panel; returns {element, leave} (leave clears the identity).
export function registryPanel(patient) {
  const manage = canManagePatients();
  const identity = canReadIdentity() ? identityBlock(patient) : null;
  const kit = h("div", { id: "kit" });
  const status = h("p", { class: "muted", id: "registry-status" });
  const actions = h("div", { class: "reg-actions" });
  const element = h(
    "section",
    { class: "panel", "aria-labelledby": "registry-title", id: "registry-panel" },
    h("h2", { id: "registry-title" }, "Admission and devices"),
    identity ? h("section", { "aria-label": "Identity" }, identity.element) : null,
    status,
    kit,
    actions,
  );

  function drawKit(row) {
    const current = row.bindings.filter((b) => b.until === null || b.until === undefined);
    const admitted = row.status === "admitted";
    status.textContent = admitted
      ? `Admitted ${new Date(row.admitted_at).toLocaleString([], { dateStyle: "short", timeStyle: "short" })}${row.profile ? ` · profile ${row.profile}` : ""}`
      : `Discharged: ${row.discharge_reason || ""}`;
    const onSwap =
      manage && admitted
        ? (binding) => {
            kit.querySelector("#swap-form")?.remove(); // one swap at a time
            kit.append(swapForm(patient, binding, (bindings) => drawKit({ ...row, bindings }), () => load()));
          }
        : null;
    kit.replaceChildren(bindingsTable(row.bindings, `Devices of ${patient}`, onSwap));
    actions.replaceChildren();
    if (manage && admitted) {
      if (!current.length) {
        actions.append(h("h3", {}, "Assign a kit"), kitForm(patient, (bindings) => drawKit({ ...row, bindings })));
      }
      actions.append(
        h("div", { class: "reg-buttons reg-discharge" }, h("button", { type: "button", class: "btn btn-danger", id: "discharge" }, `Discharge ${patient}…`)),
      );
      actions.querySelector("#discharge").addEventListener("click", () =>
        confirmDischarge(patient, () => {
          const banner = document.getElementById("banner");
          banner.textContent = `${patient} was discharged.`;
          banner.className = "banner banner-info";
          banner.hidden = false;
          location.hash = "#/board";
        }),
      );
    }
  }

  async function load() {
    try {
      drawKit(await get(`/api/registry/patients/${encodeURIComponent(patient)}`));
    } catch (failure) {
      kit.replaceChildren(h("p", { class: failure.status === 404 ? "muted" : "error" }, failure.status === 404 ? "This patient is not in the registry." : refusal(failure)));
    }
  }

  load();
  return {
    element,
    leave: () => {
      if (identity) identity.clear();
      const dialog = document.getElementById("discharge-dialog");
      if (dialog) dialog.remove();
    },
  };
}
