// The LogLine console: a sign-in, then views over the API, each reading
// only what the signed-in token may (row-level security decides; the
// console adds no privilege). Hash routes: #/timeline, #/span/ID,
// #/functions, #/executions, #/prompts, #/system.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { html, ErrorLine, errorText } from "./ui.js";
import { session, onSession, signIn, signInWithCode, signOut } from "./session.js";
import { Timeline } from "./timeline.js";
import { SpanView } from "./span.js";
import { Functions } from "./functions.js";
import { Executions } from "./executions.js";
import { Prompts } from "./prompts.js";
import { System } from "./system.js";
import "uplot/dist/uPlot.min.css";
import "./style.css";

// A sign-in link (logline dev prints it) carries a one-time code in the
// fragment: drop it from the address bar and history before anything else.
let pendingCode = null;
{
  const m = /^#signin=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    pendingCode = m[1];
    history.replaceState(null, "", location.pathname + "#/timeline");
  }
}

const views = [
  ["timeline", "Timeline"],
  ["functions", "Functions"],
  ["executions", "Executions"],
  ["prompts", "Prompts"],
  ["system", "System"],
];

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: name || "timeline", arg: rest.join("/") };
}

function SignIn({ error }) {
  const [token, setToken] = useState("");
  const [err, setErr] = useState(error);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      await signIn(token);
    } catch (x) {
      setErr(errorText(x));
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <h1>LogLine</h1>
    <form onSubmit=${submit} id="signin-form">
      <label for="token">Bearer token</label>
      <textarea id="token" rows="4" autocomplete="off" spellcheck="false" placeholder="paste a token (logline token issue, or the TOKEN logline dev printed)"
        value=${token} onInput=${(e) => setToken(e.target.value)}></textarea>
      <button type="submit" disabled=${busy}>Sign in</button>
      <${ErrorLine} text=${err} />
    </form>
    <p class="hint">The token stays in this tab (memory and sessionStorage): closing the tab signs out.</p>
  </main>`;
}

function App() {
  const [s, setS] = useState(session());
  const [r, setR] = useState(route());
  const [codeErr, setCodeErr] = useState("");
  const [trading, setTrading] = useState(pendingCode !== null);
  useEffect(() => onSession(setS), []);
  useEffect(() => {
    const on = () => setR(route());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  useEffect(() => {
    if (pendingCode === null) return;
    const code = pendingCode;
    pendingCode = null;
    signInWithCode(code)
      .catch((x) => setCodeErr(errorText(x)))
      .finally(() => setTrading(false));
  }, []);
  if (trading) return html`<main class="signin"><p>Signing in…</p></main>`;
  if (!s) return html`<${SignIn} error=${codeErr} />`;
  let view;
  switch (r.name) {
    case "span": view = html`<${SpanView} id=${r.arg} />`; break;
    case "functions": view = html`<${Functions} />`; break;
    case "executions": view = html`<${Executions} />`; break;
    case "prompts": view = html`<${Prompts} family=${r.arg} />`; break;
    case "system": view = html`<${System} />`; break;
    default: view = html`<${Timeline} />`;
  }
  return html`<div class="shell">
    <header>
      <strong class="brand">LogLine</strong>
      <nav>${views.map(([k, label]) => html`<a href=${"#/" + k} class=${r.name === k ? "on" : ""} id=${"nav-" + k}>${label}</a>`)}</nav>
      <span class="who" id="who">${s.user} @ ${s.tenant}</span>
      <button class="link" id="signout" onClick=${signOut}>Sign out</button>
    </header>
    <main id="view" data-view=${r.name}>${view}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
