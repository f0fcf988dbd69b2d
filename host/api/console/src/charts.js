// Charts of GET /api/metrics/hourly, drawn by uPlot (loaded with the
// executions view, not the first page; its CSS comes with main.js, as a
// lazy chunk's CSS would not be loaded).
import uPlot from "uplot";

const COLORS = { complete: "#2e7d32", error: "#c62828", "": "#757575" };
const PALETTE = ["#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457"];

function base(title, width, series) {
  return { title, width, height: 220, scales: { x: { time: true } }, series: [{}, ...series], legend: { live: false } };
}

// draw renders the three charts into el and returns a cleanup.
export function draw(el, hours) {
  el.textContent = "";
  const width = Math.max(320, Math.min(900, el.clientWidth || 640));
  const xs = hours.map((h) => Date.parse(h.hour) / 1000);
  const statuses = [...new Set(hours.flatMap((h) => Object.keys(h.counts)))].sort();
  const plots = [];
  const add = (opts, data) => {
    const box = document.createElement("div");
    box.className = "chart";
    el.appendChild(box);
    plots.push(new uPlot(opts, data, box));
  };
  add(base("Executions per hour, by status", width, statuses.map((s, i) => ({
    label: s || "(none)", stroke: COLORS[s] || PALETTE[i % PALETTE.length], width: 2, points: { show: true } }))),
  [xs, ...statuses.map((s) => hours.map((h) => h.counts[s] ?? 0))]);
  add(base("Duration (ms)", width, [
    { label: "p50", stroke: "#1565c0", width: 2, points: { show: true } },
    { label: "p95", stroke: "#ef6c00", width: 2, points: { show: true } }]),
  [xs, hours.map((h) => h.p50_ms), hours.map((h) => h.p95_ms)]);
  add(base("Fuel per execution", width, [
    { label: "p50", stroke: "#00838f", width: 2, points: { show: true } },
    { label: "p95", stroke: "#6a1b9a", width: 2, points: { show: true } }]),
  [xs, hours.map((h) => h.fuel_p50), hours.map((h) => h.fuel_p95)]);
  return () => plots.forEach((p) => p.destroy());
}
