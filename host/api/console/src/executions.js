// Executions: the newest runs of the tenant's code (status, duration,
// fuel, error), and charts per hour.
import { useEffect, useRef, useState } from "preact/hooks";
import { client } from "./session.js";
import { html, ErrorLine, report, time, short } from "./ui.js";

export function Executions() {
  const [items, setItems] = useState(null);
  const [hours, setHours] = useState(null);
  const [err, setErr] = useState("");
  const charts = useRef(null);
  useEffect(() => {
    client.api.GET("/api/spans", { params: { query: { entity_type: "execution", limit: 200 } } })
      .then((r) => setItems(client.unwrap(r).items))
      .catch(report(setErr));
    client.api.GET("/api/metrics/hourly", { params: { query: { hours: 48 } } })
      .then((r) => setHours(client.unwrap(r)))
      .catch(report(setErr));
  }, []);
  useEffect(() => {
    if (!hours || !hours.hours.length || !charts.current) return;
    let undo = null;
    let gone = false;
    import("./charts.js").then((m) => {
      if (!gone) undo = m.draw(charts.current, hours.since, hours.hours);
    });
    return () => {
      gone = true;
      undo?.();
    };
  }, [hours]);
  return html`<section class="executions">
    <h2>Executions</h2>
    <${ErrorLine} text=${err} />
    ${hours && hours.hours.length === 0 && html`<p class="empty">No executions in the last 48 hours.</p>`}
    <div id="charts" class="charts" ref=${charts} data-hours=${hours?.hours.length ?? ""}></div>
    <table class="spans" id="executions">
      <thead><tr><th>At</th><th>Status</th><th>Function</th><th>Duration</th><th>Fuel</th><th>Error</th><th>Id</th></tr></thead>
      <tbody>${(items || []).map(({ cursor, span: s }) => html`<tr key=${cursor} data-id=${s.id}>
        <td class="mono">${time(s.at)}</td>
        <td class=${"status s-" + (s.status || "none")}>${s.status}</td>
        <td class="mono">${s.parent_id ? html`<a href=${"#/span/" + s.parent_id}>${short(s.parent_id)}</a>` : ""}</td>
        <td>${s.duration_ms ?? ""}${s.duration_ms != null ? " ms" : ""}</td>
        <td>${s.metadata?.fuel_used ?? ""}</td>
        <td>${s.error?.code ?? ""}</td>
        <td class="mono"><a href=${"#/span/" + s.id}>${short(s.id)}</a></td></tr>`)}</tbody>
    </table>
    ${items?.length === 0 && html`<p class="empty">No executions yet.</p>`}
  </section>`;
}
