// Prompts: the tenant's families, and a family's variants with their
// routing weights and latest eval.
import { useEffect, useState } from "preact/hooks";
import { client } from "./session.js";
import { html, ErrorLine, report, time, short } from "./ui.js";

export function Prompts({ family }) {
  const [families, setFamilies] = useState(null);
  const [err, setErr] = useState("");
  useEffect(() => {
    client.api.GET("/api/prompts").then((r) => setFamilies(client.unwrap(r).families)).catch(report(setErr));
  }, []);
  return html`<section class="prompts">
    <h2>Prompt families</h2>
    <${ErrorLine} text=${err} />
    <ul class="families" id="families">${(families || []).map((f) => html`<li class=${f.family === family ? "on" : ""}>
      <a href=${"#/prompts/" + encodeURIComponent(f.family)}>${f.family}</a> <small>${f.variants} variant${f.variants === 1 ? "" : "s"}</small></li>`)}</ul>
    ${families?.length === 0 && html`<p class="empty">No prompt variants yet.</p>`}
    ${family && html`<${Family} family=${decodeURIComponent(family)} />`}
  </section>`;
}

function pct(x) {
  return x == null ? "—" : (100 * x).toFixed(1) + "%";
}

function Family({ family }) {
  const [f, setF] = useState(null);
  const [err, setErr] = useState("");
  useEffect(() => {
    setF(null);
    client.api.GET("/api/prompts/{family}", { params: { path: { family } } })
      .then((r) => setF(client.unwrap(r))).catch(report(setErr));
  }, [family]);
  const weights = f?.routing?.metadata?.weights || {};
  return html`<div class="family" id="family">
    <h3>${family}</h3>
    <${ErrorLine} text=${err} />
    ${f && html`<p>${f.routing ? html`Routing decided ${time(f.routing.at)} (<a href=${"#/span/" + f.routing.id}>routing</a>)` : "No routing decision yet: runs of the family pick variants evenly."}</p>
    <table class="spans" id="variants">
      <thead><tr><th>Variant</th><th>Version</th><th>Weight</th><th>Latest eval</th><th>Pass rate</th><th>Model</th></tr></thead>
      <tbody>${f.variants.map(({ variant: v, latest_eval: e }) => html`<tr data-id=${v.id}>
        <td class="mono"><a href=${"#/span/" + v.id}>${v.name || short(v.id)}</a></td>
        <td>${v.metadata?.version ?? "seq " + v.seq}</td>
        <td>${weights[v.id] != null ? pct(weights[v.id]) : "—"}</td>
        <td>${e ? html`<a href=${"#/span/" + e.id}>${e.status}${e.passed != null ? (e.passed ? ", passed" : ", failed") : ""}</a> <small>${time(e.at)}</small>` : "none"}</td>
        <td>${pct(e?.pass_rate)}</td>
        <td>${e?.model ?? v.metadata?.model?.name ?? ""}</td></tr>`)}</tbody>
    </table>`}
  </div>`;
}
