// Small helpers: element creation without innerHTML, times and ages, alarm priority presentation.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let serverOffsetMs = 0; // server clock - browser clock

export function syncClock(serverNowMs) {
  if (typeof serverNowMs === "number") serverOffsetMs = serverNowMs - Date.now();
}

export function now() {
  return Date.now() + serverOffsetMs;
}

export function age(t) {
  if (t === null || t === undefined) return "never";
  const seconds = Math.max(0, Math.round((now() - t) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

export function until(t) {
  if (t === null || t === undefined) return "";
  const seconds = Math.round((t - now()) / 1000);
  if (seconds <= 0) return "due now";
  if (seconds < 60) return `in ${seconds} s`;
  return `in ${Math.round(seconds / 60)} min`;
}

export function clock(t) {
  if (t === null || t === undefined) return "";
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function dateTime(t) {
  if (t === null || t === undefined) return "";
  return new Date(t).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

// IEC 60601-1-8: high = red "!!!", medium = yellow "!!", low = cyan "!"; technical alarms are cyan.
const RANK = { high: 3, medium: 2, low: 1 };

export function rank(alarm) {
  return RANK[alarm.priority] || 0;
}

export function alarmLevel(alarm) {
  if (alarm.category === "technical" && alarm.priority !== "high") return "technical";
  return alarm.priority;
}

export function levelLabel(level) {
  return { high: "High", medium: "Medium", low: "Low", technical: "Technical" }[level] || level;
}

export function levelIcon(level) {
  return { high: "!!!", medium: "!!", low: "!", technical: "⚙" }[level] || "";
}

export function badge(alarm) {
  const level = alarmLevel(alarm);
  return h(
    "span",
    { class: `badge badge-${level}` },
    h("span", { class: "badge-icon", "aria-hidden": "true" }, levelIcon(level)),
    ` ${levelLabel(level)}`,
  );
}

export const SIGNALS = [
  { key: "heart_rate", label: "HR", unit: "/min", digits: 0 },
  { key: "spo2", label: "SpO₂", unit: "%", digits: 0 },
  { key: "pulse_rate", label: "PR", unit: "/min", digits: 0 },
  { key: "perfusion_index", label: "PI", unit: "%", digits: 1 },
];

export function formatValue(reading, digits) {
  if (!reading || reading.value === null || reading.value === undefined) return "--";
  return Number(reading.value).toFixed(digits);
}

export function stateLabel(alarm) {
  if (alarm.state === "acknowledged") return "Acknowledged";
  if (alarm.state === "silenced") return "Silenced";
  if (alarm.state === "resolved") return "Resolved";
  return alarm.condition_active ? "Active" : "Active (latched)";
}
