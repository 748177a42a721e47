// NEWS2 (RCP 2017) as nurses read it: the score, its risk band, full or partial with what is missing,
// the parameters behind it, and its history (uPlot, as the trends).

import uPlot from "./vendor/uPlot.esm.js";
import { get } from "./api.js";
import { age, h } from "./util.js";

export const BAND_LABEL = { low: "Low", "low-medium": "Low-medium", medium: "Medium", high: "High" };
export const PARAMETERS = [
  { key: "respiration", short: "RR", label: "Respiratory rate", unit: "/min" },
  { key: "spo2", short: "SpO₂", label: "SpO₂", unit: "%" },
  { key: "supplemental_o2", short: "O₂", label: "Air or oxygen", unit: "" },
  { key: "systolic", short: "BP", label: "Systolic BP", unit: "mmHg" },
  { key: "pulse", short: "HR", label: "Pulse", unit: "/min" },
  { key: "consciousness", short: "ACVPU", label: "Consciousness (ACVPU)", unit: "" },
  { key: "temperature", short: "Temp", label: "Temperature", unit: "°C" },
];
const SHORT = Object.fromEntries(PARAMETERS.map((p) => [p.key, p.short]));
export const ACVPU = { A: "Alert", C: "New confusion", V: "Voice", P: "Pain", U: "Unresponsive" };

export function missingText(news2) {
  return news2.missing.map((m) => SHORT[m] || m).join(", ");
}

// The same key for the same score (the board rebuilds a tile's NEWS2 line only when it changes).
export function news2Key(news2) {
  return news2 ? `${news2.score}|${news2.full}|${news2.band}|${news2.missing.join(",")}` : "";
}

// The tile's NEWS2 line: "NEWS2 5 · Medium" and, when partial, "partial · missing RR, ACVPU, …".
export function news2Line(news2) {
  if (!news2) return h("div", { class: "news2 news2-none", dataset: { news2: "none" } }, h("span", { class: "news2-missing" }, "NEWS2 not scored yet"));
  // nothing recent to score: a 0 would read as "low risk" when nothing is known (the wearables' first minute)
  if (!news2.full && Object.keys(news2.points || {}).length === 0) {
    return h("div", { class: "news2 news2-none", dataset: { news2: "none" } }, h("span", { class: "news2-missing" }, "NEWS2 not scored: no recent parameters"));
  }
  const band = news2.band || "low";
  const label = `NEWS2 ${news2.score}, ${BAND_LABEL[band]} risk${news2.full ? "" : `, partial: missing ${missingText(news2)}`}`;
  return h(
    "div",
    {
      class: `news2 news2-${band}${news2.full ? " news2-full" : " news2-is-partial"}`,
      dataset: { news2: news2.full ? "full" : "partial", news2Score: news2.score, band },
      title: label,
    },
    h("span", { class: "news2-score" }, `NEWS2 ${news2.score}`),
    h("span", { class: "news2-band" }, BAND_LABEL[band]),
    news2.full
      ? h("span", { class: "news2-complete" }, "full")
      : [h("span", { class: "news2-partial" }, "partial"), h("span", { class: "news2-missing" }, `missing ${missingText(news2)}`)],
  );
}

function valueText(key, value) {
  if (key === "supplemental_o2") return value ? "Oxygen" : "Air";
  if (key === "consciousness") return `${value} — ${ACVPU[value] || value}`;
  const parameter = PARAMETERS.find((p) => p.key === key);
  return `${typeof value === "number" ? Number(value.toFixed(1)) : value} ${parameter ? parameter.unit : ""}`.trim();
}

// The parameters behind the score now: value, points, where it came from and when.
export function parameterTable(score) {
  const rows = PARAMETERS.map((p) => {
    const used = score.parameters[p.key];
    if (!used) {
      return h(
        "tr",
        { class: "param-missing", dataset: { parameter: p.key } },
        h("th", { scope: "row" }, p.label),
        h("td", { colspan: "4" }, "not recent — missing from the score"),
      );
    }
    return h(
      "tr",
      { dataset: { parameter: p.key } },
      h("th", { scope: "row" }, p.label),
      h("td", {}, valueText(p.key, used.value)),
      h("td", { class: `points points-${used.points}` }, String(used.points)),
      h("td", {}, used.source === "nurse" ? "nurse" : "device"),
      h("td", {}, age(used.t)),
    );
  });
  return h(
    "table",
    { class: "params" },
    h("caption", { class: "sr-only" }, "Parameters of the current NEWS2"),
    h("thead", {}, h("tr", {}, ["Parameter", "Value", "Points", "Source", "Taken"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

const SPAN_S = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };

// A uPlot plugin: the band limits (5: medium, 7: high) as dashed lines with their names.
function bandLines() {
  return {
    hooks: {
      draw: [
        (u) => {
          const { ctx } = u;
          const { left, top, width, height } = u.bbox;
          ctx.save();
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          for (const [value, colour, label] of [[5, "#a04400", "medium 5"], [7, "#b71c1c", "high 7"]]) {
            const y = u.valToPos(value, "y", true);
            if (y < top || y > top + height) continue;
            ctx.strokeStyle = colour;
            ctx.beginPath();
            ctx.moveTo(left, y);
            ctx.lineTo(left + width, y);
            ctx.stroke();
            ctx.fillStyle = colour;
            ctx.fillText(label, left + width - ctx.measureText(label).width - 4 * devicePixelRatio, y - 3 * devicePixelRatio);
          }
          ctx.restore();
        },
      ],
    },
  };
}

// The score over time: full scores solid, partial ones (a lower bound) dashed grey.
export function historyChart(container, points, range) {
  const xs = points.map((p) => p[0] / 1000);
  const full = points.map((p) => (p[2] ? p[1] : null));
  const partial = points.map((p) => (p[2] ? null : p[1]));
  const nowS = Date.now() / 1000;
  const top = Math.max(8, ...points.map((p) => p[1])) + 1;
  const options = {
    width: Math.max(280, container.clientWidth - 8),
    height: 190,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: [nowS - SPAN_S[range], nowS] }, y: { range: [0, top] } },
    axes: [{ stroke: "#333", grid: { stroke: "#e3e6ea" } }, { stroke: "#333", grid: { stroke: "#e3e6ea" }, size: 40, incrs: [1, 2, 5, 10] }],
    series: [
      {},
      { label: "NEWS2 (full)", stroke: "#0b3954", width: 2.5, paths: uPlot.paths.stepped({ align: 1 }), points: { show: true, size: 7 } },
      { label: "NEWS2 (partial)", stroke: "#6b7680", width: 2, dash: [5, 4], paths: uPlot.paths.stepped({ align: 1 }), points: { show: true, size: 6 } },
    ],
    plugins: [bandLines()],
  };
  return new uPlot(options, [xs, full, partial], container);
}

export async function readHistory(patient, range) {
  return get(`/api/patients/${encodeURIComponent(patient)}/news2/history?range=${range}`);
}
