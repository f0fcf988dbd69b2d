// Charts of GET /api/metrics/hourly, drawn by uPlot (loaded with the
// executions view, not the first page; its CSS comes with main.js, as a
// lazy chunk's CSS would not be loaded).
import uPlot from "uplot";

const COLORS = { complete: "#2e7d32", error: "#c62828", "": "#757575" };
const PALETTE = ["#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457"];

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

// base is a chart over the whole window (not just the hours that had
// runs), its y axis in compact numbers (fuel runs to the millions).
function base(title, width, range, series) {
  return {
    title, width, height: 220, legend: { live: false },
    scales: { x: { time: true, range: () => range }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => (v == null ? "" : compact.format(v))) }],
    series: [{}, ...series],
  };
}

// draw renders the three charts of the window from since into el and
// returns a cleanup.
export function draw(el, since, hours) {
  el.textContent = "";
  const width = Math.max(320, Math.min(900, el.clientWidth || 640));
  const xs = hours.map((h) => Date.parse(h.hour) / 1000);
  const range = [Date.parse(since) / 1000, Math.ceil(Date.now() / 3600000) * 3600];
  const statuses = [...new Set(hours.flatMap((h) => Object.keys(h.counts)))].sort();
  const plots = [];
  const add = (opts, data) => {
    const box = document.createElement("div");
    box.className = "chart";
    el.appendChild(box);
    plots.push(new uPlot(opts, data, box));
  };
  add(base("Executions per hour, by status", width, range, statuses.map((s, i) => ({
    label: s || "(none)", stroke: COLORS[s] || PALETTE[i % PALETTE.length], width: 2, points: { show: true } }))),
  [xs, ...statuses.map((s) => hours.map((h) => h.counts[s] ?? 0))]);
  add(base("Duration (ms)", width, range, [
    { label: "p50", stroke: "#1565c0", width: 2, points: { show: true } },
    { label: "p95", stroke: "#ef6c00", width: 2, points: { show: true } }]),
  [xs, hours.map((h) => h.p50_ms), hours.map((h) => h.p95_ms)]);
  add(base("Fuel per execution", width, range, [
    { label: "p50", stroke: "#00838f", width: 2, points: { show: true } },
    { label: "p95", stroke: "#6a1b9a", width: 2, points: { show: true } }]),
  [xs, hours.map((h) => h.fuel_p50), hours.map((h) => h.fuel_p95)]);
  return () => plots.forEach((p) => p.destroy());
}
