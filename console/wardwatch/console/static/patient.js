// One patient: latest values, devices, open alarms with actions, and trends (1 h / 24 h / 7 d) with
// thresholds and alarm markers drawn on the charts (uPlot).

import uPlot from "./vendor/uPlot.esm.js";
import { get } from "./api.js";
import { registryPanel } from "./admission.js";
import { alarmTable } from "./alarms.js";
import { tile } from "./board.js";
import { renderDeviceHistory } from "./devices.js";
import { renderNotes } from "./notes.js";
import { renderNews2Panel } from "./observations.js";
import { patientAlarms, subscribe, ward } from "./store.js";
import { renderThresholdsPanel } from "./thresholds.js";
import { h, SIGNALS } from "./util.js";

const RANGES = ["1h", "24h", "7d"];
const COLOURS = { heart_rate: "#1b5e9e", spo2: "#6a1b9a", pulse_rate: "#00695c", perfusion_index: "#8d4e00" };
const PRIORITY_COLOURS = { high: "#c62828", medium: "#b58900", low: "#00838f" };

// Threshold lines per signal from the patient's effective thresholds.
function thresholdLines(signal, effective) {
  if (!effective) return [];
  if (signal === "spo2") {
    const severe = effective.spo2_low - effective.spo2_severe_margin;
    return [
      { value: effective.spo2_low, label: `low ${effective.spo2_low} %` },
      { value: severe, label: `severe ${severe} %` },
    ];
  }
  if (signal === "heart_rate" || signal === "pulse_rate") {
    return [
      { value: effective.hr_high, label: `high ${effective.hr_high}` },
      { value: effective.hr_low, label: `low ${effective.hr_low}` },
    ];
  }
  return [];
}

// A uPlot plugin drawing dashed threshold lines and vertical alarm markers.
function overlays(lines, markers) {
  return {
    hooks: {
      draw: [
        (u) => {
          const { ctx } = u;
          const { left, top, width, height } = u.bbox;
          ctx.save();
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          for (const line of lines) {
            if (typeof line.value !== "number") continue;
            const y = u.valToPos(line.value, "y", true);
            if (y < top || y > top + height) continue;
            ctx.strokeStyle = "#c62828";
            ctx.beginPath();
            ctx.moveTo(left, y);
            ctx.lineTo(left + width, y);
            ctx.stroke();
            ctx.fillStyle = "#8e0000";
            const textWidth = ctx.measureText(line.label).width;
            ctx.fillText(line.label, left + width - textWidth - 4 * devicePixelRatio, y - 3 * devicePixelRatio);
          }
          ctx.setLineDash([]);
          for (const marker of markers) {
            const x = u.valToPos(marker.t / 1000, "x", true);
            if (x < left || x > left + width) continue;
            ctx.strokeStyle = PRIORITY_COLOURS[marker.priority] || "#555";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.fillStyle = ctx.strokeStyle;
            ctx.fillText(marker.label, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
          }
          ctx.restore();
        },
      ],
    },
  };
}

function chart(container, signal, points, lines, markers, range) {
  const xs = points.map((p) => p[0] / 1000);
  const ys = points.map((p) => p[1]);
  const nowS = Date.now() / 1000;
  const spanS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 }[range];
  const values = [...ys, ...lines.map((l) => l.value).filter((v) => typeof v === "number")];
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 100;
  const pad = Math.max(2, (hi - lo) * 0.1);
  const width = Math.max(280, container.clientWidth - 8);
  const options = {
    width,
    height: 170,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: [nowS - spanS, nowS] }, y: { range: [lo - pad, hi + pad] } },
    axes: [{ stroke: "#333", grid: { stroke: "#e3e6ea" } }, { stroke: "#333", grid: { stroke: "#e3e6ea" }, size: 48 }],
    series: [{}, { label: signal.label, stroke: COLOURS[signal.key], width: 2, spanGaps: false, points: { show: false } }],
    plugins: [overlays(lines, markers)],
  };
  return new uPlot(options, [xs, ys], container);
}

export function renderPatient(main, id) {
  const header = h("div", { class: "patient-head" });
  const alarmsBox = h("section", { class: "panel", "aria-labelledby": "open-alarms" });
  const rangeBar = h("div", { class: "tabs", role: "group", "aria-label": "Trend range" });
  const charts = h("div", { class: "charts" });
  const source = h("p", { class: "muted", id: "trend-source" });
  const registry = registryPanel(id);
  const notesBox = h("section", { class: "panel", id: "notes", "aria-labelledby": "notes-title" });
  const devicesBox = h("section", { class: "panel", id: "device-history", "aria-labelledby": "devices-title" });
  const news2Box = h("section", { class: "panel", id: "news2-panel", "aria-labelledby": "news2-title" });
  const thresholdsBox = h("section", { class: "panel", id: "thresholds-panel", "aria-labelledby": "thresholds-title" });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/board", class: "back" }, "← Ward board")),
    h("h1", { class: "view-title" }, `Patient ${id}`),
    header,
    alarmsBox,
    news2Box,
    registry.element,
    h("section", { class: "panel", "aria-labelledby": "trends-title" }, h("h2", { id: "trends-title" }, "Trends"), rangeBar, source, charts),
    thresholdsBox,
    notesBox,
    devicesBox,
  );
  renderNotes(notesBox, id);
  renderDeviceHistory(devicesBox, id);
  const leaveNews2 = renderNews2Panel(news2Box, id);
  // one thresholds read per view open (each read is audited): the chart's lines and the panel share it
  const thresholdsRead = get(`/api/patients/${encodeURIComponent(id)}/thresholds`);
  thresholdsRead.catch(() => {}); // each reader handles a failure itself
  const leaveThresholds = renderThresholdsPanel(thresholdsBox, id, thresholdsRead);
  let range = "1h";
  let plots = [];
  let effective = null;

  function drawHeader() {
    const patient = ward.patients.get(id);
    header.replaceChildren(patient ? tile(patient) : h("p", { class: "muted" }, "No live data for this patient yet."));
    const current = header.querySelector("a.tile");
    if (current) current.removeAttribute("href");
    const open = patientAlarms(id);
    alarmsBox.replaceChildren(
      h("h2", { id: "open-alarms" }, "Open alarms"),
      alarmTable(open, null, `open alarms of ${id}`),
    );
  }

  async function drawTrends() {
    for (const button of rangeBar.children) button.setAttribute("aria-pressed", String(button.dataset.range === range));
    charts.replaceChildren(h("p", { class: "muted" }, "Loading trends…"));
    try {
      const [trend, alarms] = await Promise.all([
        get(`/api/patients/${encodeURIComponent(id)}/trends?range=${range}`),
        get(`/api/alarms?state=active,acknowledged,silenced,resolved&patient=${encodeURIComponent(id)}&limit=500`),
      ]);
      if (effective === null) {
        try {
          effective = (await thresholdsRead).effective;
        } catch (failure) {
          effective = {};
        }
      }
      for (const plot of plots) plot.destroy();
      plots = [];
      source.textContent = `Source: ${trend.source} data, ${trend.bucket} averages.`;
      charts.replaceChildren();
      for (const signal of SIGNALS) {
        const points = trend.series[signal.key] || [];
        const markers = alarms.alarms
          .filter((a) => a.rule.startsWith(signal.key === "spo2" ? "spo2" : signal.key === "perfusion_index" ? "perfusion" : "hr"))
          .map((a) => ({ t: a.started, priority: a.priority, label: a.rule.replaceAll("_", " ") }));
        const box = h("div", { class: "chart", dataset: { signal: signal.key } });
        charts.append(h("figure", { class: "chart-figure" }, h("figcaption", {}, `${signal.label} (${signal.unit})`, points.length ? "" : " — no data in this range"), box));
        plots.push(chart(box, signal, points, thresholdLines(signal.key, effective), markers, range));
      }
    } catch (failure) {
      charts.replaceChildren(h("p", { class: "error" }, failure.message));
    }
  }

  for (const r of RANGES) {
    rangeBar.append(
      h(
        "button",
        {
          type: "button",
          class: "btn",
          dataset: { range: r },
          onclick: () => {
            range = r;
            drawTrends();
          },
        },
        r === "1h" ? "1 hour" : r === "24h" ? "24 hours" : "7 days",
      ),
    );
  }
  drawHeader();
  drawTrends();
  const unsubscribe = subscribe((change) => {
    if (document.querySelector("dialog[open]")) return;
    if (change.kind === "snapshot" || (change.patients && change.patients.includes(id))) drawHeader();
  });
  const refresh = setInterval(() => {
    if (range === "1h") drawTrends();
  }, 30000);
  return () => {
    unsubscribe();
    registry.leave();
    clearInterval(refresh);
    for (const plot of plots) plot.destroy();
    leaveNews2();
    leaveThresholds();
  };
}
