// Functions and policies: the tenant's JavaScript and wasm code, an editor
// that publishes JavaScript (syntax checked as you type, refused with its
// line and column), and a run of a function with an input, its execution
// shown as it arrives.
import { useEffect, useRef, useState } from "preact/hooks";
import { client, session } from "./session.js";
import { html, ErrorLine, report, time, short, json, latest } from "./ui.js";

const SAMPLE = "// input is the run's input JSON\nreturn { sum: input.a + input.b };\n";

export function Functions() {
  const [code, setCode] = useState([]);
  const [err, setErr] = useState("");
  const [chosen, setChosen] = useState(null);
  const reload = async () => {
    try {
      const all = [];
      for (const entity_type of ["function", "policy"]) {
        const page = client.unwrap(await client.api.GET("/api/spans", { params: { query: { entity_type, limit: 1000 } } }));
        all.push(...latest(page.items));
      }
      all.sort((a, b) => (a.at < b.at ? 1 : -1));
      setCode(all);
    } catch (x) {
      report(setErr)(x);
    }
  };
  useEffect(() => { reload(); }, []);
  return html`<section class="functions">
    <div class="cols">
      <div>
        <h2>Functions and policies</h2>
        <${ErrorLine} text=${err} />
        <table class="spans" id="functions">
          <thead><tr><th>Name</th><th>Kind</th><th>Runtime</th><th>Seq</th><th>At</th><th>Id</th></tr></thead>
          <tbody>${code.map((s) => html`<tr data-id=${s.id} class=${chosen?.id === s.id ? "on" : ""} onClick=${() => setChosen(s)}>
            <td>${s.name || s.this}</td><td>${s.entity_type}</td><td>${s.runtime || ""}</td><td>${s.seq}</td>
            <td class="mono">${time(s.at)}</td><td class="mono"><a href=${"#/span/" + s.id}>${short(s.id)}</a></td></tr>`)}</tbody>
        </table>
        ${code.length === 0 && html`<p class="empty">No code yet: publish some.</p>`}
      </div>
      <div>
        <${Editor} onPublished=${(s) => { reload(); setChosen(s); }} />
        ${chosen?.entity_type === "function" && html`<${Run} fn=${chosen} />`}
      </div>
    </div>
  </section>`;
}

function Editor({ onPublished }) {
  const [name, setName] = useState("adder");
  const [kind, setKind] = useState("function");
  const [src, setSrc] = useState(SAMPLE);
  const [syntax, setSyntax] = useState(null);
  const [err, setErr] = useState("");
  const [done, setDone] = useState(null);
  const [checker, setChecker] = useState(null);
  // acorn is loaded with the editor, not with the first page; whatever
  // was typed meanwhile is checked once it is there.
  useEffect(() => {
    import("./jscheck.js").then((m) => setChecker(() => m.check));
  }, []);
  useEffect(() => {
    if (checker) setSyntax(checker(kind, src));
  }, [checker, kind, src]);
  const publish = async (e) => {
    e.preventDefault();
    setErr("");
    setDone(null);
    if (!name.trim()) return setErr("name is required");
    const problem = checker ? checker(kind, src) : null;
    if (problem) return setSyntax(problem);
    try {
      const s = client.unwrap(await client.api.POST("/api/spans", { body: {
        entity_type: kind, who: session().user, did: "defined", this: kind, name: name.trim(), status: "active",
        code: src, language: "javascript", runtime: "quickjs",
      } }));
      setDone(s);
      onPublished(s);
    } catch (x) {
      report(setErr)(x);
    }
  };
  return html`<form class="editor" id="editor" onSubmit=${publish}>
    <h2>Publish JavaScript</h2>
    <div class="row">
      <label>Name <input id="fn-name" value=${name} onInput=${(e) => setName(e.target.value)} /></label>
      <label>Kind <select id="fn-kind" value=${kind} onChange=${(e) => setKind(e.target.value)}>
        <option value="function">function (a body receiving input)</option>
        <option value="policy">policy (exports on(span))</option>
      </select></label>
    </div>
    <textarea id="fn-code" rows="12" spellcheck="false" value=${src} onInput=${(e) => setSrc(e.target.value)}></textarea>
    <p id="syntax" class=${syntax ? "error" : "ok"}>${!checker ? "checking…" : syntax ? `line ${syntax.line}, column ${syntax.column}: ${syntax.message}` : "no syntax errors"}</p>
    <button type="submit" id="publish" disabled=${!checker || !!syntax}>Publish</button>
    <${ErrorLine} text=${err} />
    ${done && html`<p class="ok" id="published">published ${done.name} as <a href=${"#/span/" + done.id} class="mono">${done.id}</a> seq ${done.seq}</p>`}
  </form>`;
}

function Run({ fn }) {
  const [input, setInput] = useState('{"a": 1, "b": 2}');
  const [busy, setBusy] = useState(false);
  const [out, setOut] = useState(null);
  const [err, setErr] = useState("");
  const sub = useRef(null);
  useEffect(() => () => sub.current?.close(), [fn.id]);
  const run = async (e) => {
    e.preventDefault();
    setErr("");
    setOut(null);
    let value;
    try {
      value = input.trim() ? JSON.parse(input) : null;
    } catch (x) {
      return setErr("input is not JSON: " + x.message);
    }
    setBusy(true);
    try {
      const r = client.unwrap(await client.api.POST("/api/execute", { params: { query: { wait: "30s" } }, body: { span_id: fn.id, input: value } }));
      if (r.status !== "scheduled") {
        setOut(r);
        return;
      }
      // Not done within the wait: the execution arrives on the stream.
      setOut(r);
      sub.current?.close();
      sub.current = client.stream({
        query: { entity_type: "execution", parent_id: fn.id },
        onSpan(span) {
          if (span.metadata?.request_id === r.request_id) {
            sub.current.close();
            setOut({ ...r, status: span.status, execution: span, error: span.error });
          }
        },
      });
    } catch (x) {
      report(setErr)(x);
    } finally {
      setBusy(false);
    }
  };
  const ex = out?.execution;
  return html`<form class="run" id="run" onSubmit=${run}>
    <h2>Run ${fn.name || short(fn.id)}</h2>
    <label for="run-input">Input (JSON)</label>
    <textarea id="run-input" rows="3" spellcheck="false" value=${input} onInput=${(e) => setInput(e.target.value)}></textarea>
    <button type="submit" id="run-button" disabled=${busy}>${busy ? "Running…" : "Run"}</button>
    <${ErrorLine} text=${err} />
    ${out && html`<div id="run-result" class=${"result s-" + out.status} data-status=${out.status}>
      <p><strong>${out.status}</strong>${ex ? html` — ${ex.duration_ms ?? "?"} ms, fuel ${ex.metadata?.fuel_used ?? "?"}, execution <a class="mono" href=${"#/span/" + ex.id}>${short(ex.id)}</a>` : ""}</p>
      ${ex?.output !== undefined && ex?.output !== null && html`<pre id="run-output">${json(ex.output)}</pre>`}
      ${out.error && html`<pre id="run-error" class="error">${json(out.error)}</pre>`}
    </div>`}
  </form>`;
}

