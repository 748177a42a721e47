// The audit log (charge nurses, doctors, admins): who did what, when, why.

import { get } from "./api.js";
import { dateTime, h } from "./util.js";

// What changed, for the entries whose details a nurse needs: threshold changes, observations entered.
function detailText(entry) {
  const details = entry.details || {};
  if (entry.action === "thresholds_set") {
    const old = details.old || {};
    const fresh = details.new || {};
    const keys = [...new Set([...Object.keys(old), ...Object.keys(fresh)])].sort();
    const changes = keys
      .filter((k) => old[k] !== fresh[k])
      .map((k) => `${k} ${k in old ? old[k] : "—"} → ${k in fresh ? fresh[k] : "—"}`);
    return changes.length ? changes.join("; ") : "no change";
  }
  if (entry.action === "observation_recorded") {
    const names = ["respiration", "spo2", "supplemental_o2", "systolic", "pulse", "consciousness", "temperature"];
    return names.filter((n) => n in details).map((n) => `${n} ${details[n]}`).join(", ");
  }
  return "";
}

export function renderAudit(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(
    h("h1", { class: "view-title" }, "Audit log"),
    h("p", { class: "muted" }, "The last 12 hours, newest first (up to 300 entries). Reading the audit log is itself audited."),
    body,
  );
  (async () => {
    try {
      // the last 12 hours, oldest first in pages of 10,000: keep the newest 300
      let entries = [];
      let afterSeq = 0;
      const since = Date.now() - 12 * 3600 * 1000;
      for (let page = 0; page < 5; page += 1) {
        const data = await get(`/api/audit?since=${since}&after_seq=${afterSeq}&limit=10000`);
        entries = entries.concat(data.entries).slice(-300);
        if (data.entries.length < 10000) break;
        afterSeq = data.entries[data.entries.length - 1].seq;
      }
      entries = entries.reverse();
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
                h("td", {}, e.reason || "", detailText(e) ? h("div", { class: "audit-detail" }, detailText(e)) : null),
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
