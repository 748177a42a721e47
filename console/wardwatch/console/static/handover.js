// The ward handover: the last hours' alarms and how they ended, patients whose NEWS2 rose, patients
// stale or disconnected now, and the review notes written. Printable (print.css); reading it is audited.

import { get } from "./api.js";
import { badge, clock, dateTime, h } from "./util.js";

const WINDOWS = [4, 8, 12, 24];

function patientLink(patient) {
  return h("a", { href: `#/patient/${encodeURIComponent(patient)}` }, patient);
}

function outcome(alarm) {
  const parts = [];
  if (alarm.acknowledged_by) parts.push(`Acknowledged by ${alarm.acknowledged_by} at ${clock(alarm.acknowledged_at)}`);
  if (alarm.silenced_by) parts.push(`Silenced by ${alarm.silenced_by}`);
  if (alarm.outcome === "re-alarmed") {
    parts.push(`Resolved by ${alarm.resolved_by} while present at ${clock(alarm.resolved_at)}: “${alarm.resolution_note}”`);
    parts.push(`Re-alarmed at ${clock(alarm.realarmed_at)} as ${alarm.reraised_as}`);
  } else if (alarm.outcome === "resolved") {
    parts.push(`Resolved by ${alarm.resolved_by} at ${clock(alarm.resolved_at)}: “${alarm.resolution_note}”`);
    if (alarm.realarm_at) parts.push(`Resolved while present: re-alarms at ${clock(alarm.realarm_at)} unless it clears`);
  }
  else if (alarm.outcome === "cleared") parts.push(`Cleared by itself at ${clock(alarm.resolved_at)}`);
  else parts.push(`Still open (${alarm.state})`);
  return parts;
}

function section(id, title, content) {
  return h("section", { class: "panel handover-section", "aria-labelledby": id }, h("h2", { id }, title), content);
}

function table(caption, columns, rows) {
  return h(
    "table",
    {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

function render(data) {
  const alarms = data.alarms.length
    ? table(
        "Alarms and how they ended",
        ["Started", "Patient", "Priority", "Alarm", "How it ended"],
        data.alarms.map((a) =>
          h(
            "tr",
            { dataset: { alarmId: a.alarm_id, outcome: a.outcome } },
            h("td", {}, dateTime(a.started)),
            h("td", {}, patientLink(a.patient)),
            h("td", {}, badge(a)),
            h("td", {}, a.text || a.rule.replaceAll("_", " ")),
            h("td", {}, outcome(a).map((line) => h("div", {}, line))),
          ),
        ),
      )
    : h("p", { class: "empty" }, "No alarms.");
  const rose = data.news2_rose.length
    ? table(
        "Patients whose NEWS2 rose",
        ["Patient", "NEWS2 then", "NEWS2 now", "Highest"],
        data.news2_rose.map((r) =>
          h(
            "tr",
            { dataset: { patient: r.patient } },
            h("td", {}, patientLink(r.patient)),
            h("td", {}, `${r.first.score} at ${clock(r.first.t)}${r.first.full ? "" : " (partial)"}`),
            h("td", {}, h("strong", {}, String(r.last.score)), r.last.full ? "" : " (partial)"),
            h("td", {}, String(r.highest)),
          ),
        ),
      )
    : h("p", { class: "empty" }, "No patient's NEWS2 rose.");
  const attention = data.attention.length
    ? table(
        "Patients stale or disconnected now",
        ["Patient", "Newest reading", "Disconnected devices", "Gateway"],
        data.attention.map((a) =>
          h(
            "tr",
            { dataset: { patient: a.patient } },
            h("td", {}, patientLink(a.patient)),
            h("td", {}, a.newest_reading === null ? "none yet" : `${dateTime(a.newest_reading)}${a.stale ? " (stale)" : ""}`),
            h("td", {}, a.disconnected.join(", ") || "—"),
            h("td", {}, a.gateway ? `${a.gateway}${a.gateway_offline ? " (offline)" : ""}` : "—"),
          ),
        ),
      )
    : h("p", { class: "empty" }, "Every patient is reporting.");
  const notes = data.notes.length
    ? table(
        "Review notes written",
        ["When", "Patient", "By", "Note"],
        data.notes.map((n) =>
          h(
            "tr",
            { dataset: { noteId: n.id } },
            h("td", {}, dateTime(n.t)),
            h("td", {}, patientLink(n.patient)),
            h("td", {}, `${n.author} (${n.role.replace("_", " ")})`),
            h("td", { class: "note-text" }, n.text),
          ),
        ),
      )
    : h("p", { class: "empty" }, "No review notes.");
  const cut = data.truncated.alarms || data.truncated.notes ? h("p", { class: "warn" }, "Only the newest 500 alarms and notes are listed.") : null;
  return [
    cut,
    section("handover-alarms", `Alarms (${data.alarms.length})`, alarms),
    section("handover-news2", "NEWS2 rose", rose),
    section("handover-attention", "Stale or disconnected now", attention),
    section("handover-notes", `Review notes (${data.notes.length})`, notes),
  ];
}

export function renderHandover(main, params) {
  const hours = WINDOWS.includes(Number(params.get("hours"))) ? Number(params.get("hours")) : 12;
  const period = h("p", { class: "muted", id: "handover-period" }, "Loading…");
  const body = h("div", { id: "handover" });
  const print = h("button", { type: "button", class: "btn", onclick: () => window.print() }, "Print");
  main.replaceChildren(
    h("div", { class: "handover-head" }, h("h1", { class: "view-title" }, `Handover: the last ${hours} hours`), print),
    h(
      "nav",
      { class: "tabs no-print", "aria-label": "Handover period" },
      WINDOWS.map((w) => h("a", { class: w === hours ? "tab tab-current" : "tab", href: `#/handover?hours=${w}`, "aria-current": w === hours ? "page" : null }, `${w} h`)),
    ),
    period,
    body,
  );
  (async () => {
    try {
      const data = await get(`/api/handover?hours=${hours}`);
      period.textContent = `Ward ${data.ward}, ${dateTime(data.since)} to ${dateTime(data.until)}. Reading the handover is audited.`;
      body.replaceChildren(...render(data).filter(Boolean));
    } catch (failure) {
      period.textContent = "";
      body.replaceChildren(h("p", { class: "error" }, failure.message));
    }
  })();
  return () => {};
}
