// Review notes on the patient view: the list (newest first) and, for clinical roles, a form to add one.
// The API stores them append-only and audits every write and read; the text is required.

import { get, post } from "./api.js";
import { dateTime, h } from "./util.js";

const WRITE_ROLES = new Set(["nurse", "charge_nurse", "doctor"]);
const MAX_LENGTH = 2000;

let canWrite = false;

export function setNotesRole(role) {
  canWrite = WRITE_ROLES.has(role);
}

function noteItem(note) {
  return h(
    "li",
    { class: "note", dataset: { noteId: note.id } },
    h("div", { class: "note-meta" }, h("strong", {}, note.author), ` (${note.role.replace("_", " ")}) · `, h("time", {}, dateTime(note.t))),
    h("p", { class: "note-text" }, note.text),
  );
}

export function renderNotes(section, patient) {
  const list = h("ol", { class: "notes", "aria-label": "Review notes, newest first" });
  const status = h("p", { class: "muted" }, "Loading notes…");
  const heading = h("h2", { id: "notes-title" }, "Review notes");
  section.replaceChildren(heading, status, list);
  if (canWrite) {
    const text = h("textarea", { id: "note-text", rows: 3, maxlength: MAX_LENGTH, "aria-required": "true" });
    const error = h("p", { class: "error", id: "note-error", role: "alert" });
    const button = h("button", { type: "submit", class: "btn btn-primary" }, "Add note");
    const form = h(
      "form",
      { class: "note-form", "aria-label": "Add a review note" },
      h("label", { for: "note-text" }, "New note (required)"),
      text,
      error,
      h("div", {}, button),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = text.value.trim();
      if (!value) {
        error.textContent = "A note is required.";
        text.focus();
        return;
      }
      button.disabled = true;
      error.textContent = "";
      try {
        const note = await post(`/api/patients/${encodeURIComponent(patient)}/notes`, { text: value });
        text.value = "";
        list.prepend(noteItem(note));
        status.textContent = "";
      } catch (failure) {
        error.textContent = failure.message;
      } finally {
        button.disabled = false;
      }
    });
    section.append(form);
  }
  (async () => {
    try {
      const data = await get(`/api/patients/${encodeURIComponent(patient)}/notes`);
      list.replaceChildren(...data.notes.map(noteItem));
      status.textContent = data.notes.length ? "" : "No review notes yet.";
    } catch (failure) {
      status.textContent = failure.status === 404 ? "This patient is not in the registry." : failure.message;
    }
  })();
}
