// One span: every version (oldest first), its proofs, and verify.
import { useEffect, useState } from "preact/hooks";
import { client } from "./session.js";
import { html, ErrorLine, report, time, json } from "./ui.js";

const SHOWN = ["entity_type", "who", "did", "this", "name", "status", "visibility", "tenant_id", "owner_id",
  "parent_id", "related_to", "trace_id", "runtime", "language", "duration_ms", "is_deleted"];
const BODIES = ["input", "output", "error", "metadata", "code"];

export function SpanView({ id }) {
  const [versions, setVersions] = useState(null);
  const [verdict, setVerdict] = useState(null);
  const [err, setErr] = useState("");
  useEffect(() => {
    setVersions(null);
    setVerdict(null);
    setErr("");
    client.api.GET("/api/spans/{id}", { params: { path: { id } } })
      .then((r) => setVersions(client.unwrap(r).versions))
      .catch(report(setErr));
  }, [id]);
  const verify = async () => {
    setVerdict("checking");
    try {
      setVerdict(client.unwrap(await client.api.GET("/api/spans/{id}/verify", { params: { path: { id } } })));
    } catch (x) {
      setVerdict(null);
      report(setErr)(x);
    }
  };
  return html`<section class="span-view" id="span-view">
    <p><a href="#/timeline">← timeline</a></p>
    <h2 class="mono">${id}</h2>
    <${ErrorLine} text=${err} />
    ${versions && html`<div class="actions">
      <button id="verify" onClick=${verify}>Verify</button>
      ${verdict === "checking" ? html`<span>checking…</span>` : verdict && html`<span id="verdict" class=${verdict.ok ? "ok" : "bad"}>
        ${verdict.ok ? `verified: ${verdict.checked} versions (${verdict.signed} signed), hashes, signatures and chain intact`
          : `FAILED: ${verdict.failures.map((f) => `seq ${f.seq}: ${f.reason}`).join("; ")}`}</span>`}
    </div>`}
    ${versions?.map((v) => html`<article class="version" data-seq=${v.seq}>
      <h3>seq ${v.seq} <small>${time(v.at)}</small></h3>
      <dl>${SHOWN.filter((k) => v[k] !== undefined && v[k] !== "" && v[k] !== null).map((k) => html`<dt>${k}</dt><dd>${Array.isArray(v[k]) ? v[k].join(", ") : String(v[k])}</dd>`)}</dl>
      ${BODIES.filter((k) => v[k] !== undefined && v[k] !== null && v[k] !== "").map((k) => html`<details open=${k !== "code"}><summary>${k}</summary><pre>${typeof v[k] === "string" ? v[k] : json(v[k])}</pre></details>`)}
      <details class="proofs" open><summary>proofs</summary><dl class="mono">
        <dt>curr_hash</dt><dd>${v.curr_hash}</dd>
        <dt>prev_hash</dt><dd>${v.prev_hash || "—"}</dd>
        <dt>signature</dt><dd>${v.signature || "—"}</dd>
        <dt>public_key</dt><dd>${v.public_key || "—"}</dd>
      </dl></details>
    </article>`)}
  </section>`;
}
