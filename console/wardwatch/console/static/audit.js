// The audit log (charge nurses, doctors, admins): who did what, when, why.

import { get } from "./api.js";
import { dateTime, h } from "./util.js";

export function renderAudit(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(
    h("h1", { class: "view-title" }, "Audit log"),
    h("p", { class: "muted" }, "Newest first. Reading the audit log is itself audited."),
    body,
  );
  (async () => {
    try {
      const data = await get("/api/audit?limit=10000");
      const entries = data.entries.slice(-300).reverse();
      if (!entries.length) {
        body.replaceChildren(h("p", { class: "empty" }, "No entries."));
        return;
      }
      body.replaceChildren(
        h(
          "table",
          { class: "audit" },
          h("caption", { class: "sr-only" }, "Audit entries"),
          h("thead", {}, h("tr", {}, ["#", "When", "Who", "Action", "Patient", "Alarm", "Note"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            entries.map((e) =>
              h(
                "tr",
                { dataset: { action: e.action } },
                h("td", {}, e.seq ?? ""),
                h("td", {}, dateTime(e.t)),
                h("td", {}, e.actor),
                h("td", {}, e.action.replaceAll("_", " ")),
                h("td", {}, e.patient || ""),
                h("td", { class: "mono" }, e.alarm_id ? e.alarm_id.slice(0, 12) : ""),
                h("td", {}, e.reason || ""),
              ),
            ),
          ),
        ),
      );
    } catch (failure) {
      body.replaceChildren(h("p", { class: "error" }, failure.status === 403 ? "Your role may not read the audit log." : failure.message));
    }
  })();
  return () => {};
}
