// Device history on the patient view: the kit bindings over time (swaps marked) and the devices'
// connection and battery changes, newest first; gateway online/offline changes alongside.

import { get } from "./api.js";
import { dateTime, h } from "./util.js";

const ROLE_NAMES = { heart_rate_strap: "HR strap", pulse_oximeter: "Oximeter" };

function eventText(event) {
  if (event.event === "battery") return `battery ${event.battery} %`;
  const battery = event.battery === null || event.battery === undefined ? "" : ` (battery ${event.battery} %)`;
  const reason = event.reason ? `: ${event.reason.replaceAll("_", " ")}` : "";
  return `${event.event}${reason}${battery}`;
}

export function renderDeviceHistory(section, patient) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading device history…"));
  section.replaceChildren(h("h2", { id: "devices-title" }, "Device history"), body);
  (async () => {
    let data;
    try {
      data = await get(`/api/patients/${encodeURIComponent(patient)}/devices?limit=100`);
    } catch (failure) {
      body.replaceChildren(h("p", { class: "muted" }, failure.status === 404 ? "This patient is not in the registry." : failure.message));
      return;
    }
    const bindings = [...data.bindings].reverse();
    const kit = bindings.length
      ? h(
          "table",
          { class: "bindings" },
          h("caption", { class: "sr-only" }, "Devices bound to the patient"),
          h("thead", {}, h("tr", {}, ["Device", "Kind", "Gateway", "From", "Until"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            bindings.map((b) =>
              h(
                "tr",
                { dataset: { device: b.device } },
                h("td", { class: "mono" }, b.device),
                h("td", {}, ROLE_NAMES[b.role] || b.role),
                h("td", { class: "mono" }, b.gateway),
                h("td", {}, dateTime(b.since)),
                h("td", {}, b.until === null ? "in use" : `${dateTime(b.until)}${b.replaced_by ? ` (swapped for ${b.replaced_by})` : ""}`),
              ),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No kit assigned.");
    const events = [
      ...data.events.map((e) => ({ t: e.t, what: e.device, text: eventText(e) })),
      ...data.gateway_events.map((e) => ({ t: e.t, what: e.gateway, text: e.online ? "gateway online" : "gateway offline" })),
    ].sort((a, b) => b.t - a.t);
    const changes = events.length
      ? h(
          "table",
          { class: "device-events" },
          h("caption", { class: "sr-only" }, "Connection and battery changes, newest first"),
          h("thead", {}, h("tr", {}, ["When", "Device", "Change"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, events.map((e) => h("tr", {}, h("td", {}, dateTime(e.t)), h("td", { class: "mono" }, e.what), h("td", {}, e.text)))),
        )
      : h("p", { class: "empty" }, "No connection or battery changes recorded.");
    body.replaceChildren(kit, h("h3", { class: "subhead" }, "Connection and battery"), changes);
  })();
}
