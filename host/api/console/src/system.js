// The system: the server's and the engine's status for this tenant, the
// manifest (read only), and a verification of every span the token may
// read, a page at a time.
import { useEffect, useState } from "preact/hooks";
import { client } from "./session.js";
import { html, ErrorLine, report, time, json } from "./ui.js";

export function System() {
  const [status, setStatus] = useState(null);
  const [manifest, setManifest] = useState(null);
  const [err, setErr] = useState("");
  const [verify, setVerify] = useState(null);
  useEffect(() => {
    client.api.GET("/api/status").then((r) => setStatus(client.unwrap(r))).catch(report(setErr));
    client.api.GET("/api/manifest").then((r) => setManifest(client.unwrap(r))).catch(report(setErr));
  }, []);
  const run = async () => {
    let acc = { running: true, checked: 0, signed: 0, failures: [] };
    setVerify(acc);
    try {
      let cursor;
      for (;;) {
        const q = cursor ? { cursor } : {};
        const r = client.unwrap(await client.api.GET("/api/verify", { params: { query: q } }));
        acc = { ...acc, checked: acc.checked + r.checked, signed: acc.signed + r.signed, failures: acc.failures.concat(r.failures) };
        setVerify(acc);
        if (!r.more) break;
        cursor = r.next;
      }
      setVerify({ ...acc, running: false });
    } catch (x) {
      setVerify(null);
      report(setErr)(x);
    }
  };
  return html`<section class="system">
    <${ErrorLine} text=${err} />
    <h2>Status</h2>
    ${status && html`<dl id="status">
      <dt>version</dt><dd>${status.version || "(unknown)"} (ABI ${status.abi_version})</dd>
      <dt>stream</dt><dd>${status.notifications}</dd>
      <dt>engine</dt><dd>${status.engine === null ? "not running in this process" : `${status.engine.length} loops for this tenant`}</dd>
    </dl>
    ${status.engine?.length > 0 && html`<table class="spans" id="loops">
      <thead><tr><th>Loop</th><th>Lane</th><th>Passes</th><th>Failures</th><th>Last pass</th><th>Outcome</th><th>Error</th></tr></thead>
      <tbody>${status.engine.map((l) => html`<tr><td>${l.loop}</td><td>${l.lane}</td><td>${l.passes}</td><td>${l.failures}</td>
        <td class="mono">${time(l.last_pass)}</td><td class=${"status s-" + l.outcome}>${l.outcome}</td><td>${l.error}</td></tr>`)}</tbody>
    </table>`}`}
    <h2>Ledger verification</h2>
    <p>Recomputes every hash, checks every signature and prev_hash link of the spans this token may read.</p>
    <button id="verify-ledger" onClick=${run} disabled=${verify?.running}>Verify the ledger</button>
    ${verify && html`<p id="ledger-verdict" class=${verify.failures.length ? "bad" : verify.running ? "" : "ok"} data-done=${!verify.running}>
      ${verify.running ? "checking… " : verify.failures.length ? "FAILED: " : "verified: "}${verify.checked} versions (${verify.signed} signed)${verify.failures.length ? `, ${verify.failures.length} failing` : ""}</p>
    ${verify.failures.length > 0 && html`<ul class="failures">${verify.failures.slice(0, 100).map((f) => html`<li class="mono"><a href=${"#/span/" + f.id}>${f.id}</a> seq ${f.seq}: ${f.reason}</li>`)}</ul>`}`}
    <h2>Manifest <small>(read only)</small></h2>
    ${manifest && html`<p>seq ${manifest.seq}, ${time(manifest.at)}, signed by <span class="mono">${manifest.public_key || "—"}</span></p>
    <pre id="manifest">${json(manifest.metadata)}</pre>`}
  </section>`;
}
