// The timeline: the newest page of the selection, then every span after it
// live over the stream (fetch-based SSE with the token in a header, resumed
// by Last-Event-ID after a drop, so nothing is missed). Rows arrive in
// bursts: they are queued and drawn once per animation frame, rows already
// drawn are never re-rendered, and rows out of sight are neither laid out
// nor painted (content-visibility: a table's rows cannot skip that, so the
// timeline is a grid of divs).
import { Component } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { client } from "./session.js";
import { html, ErrorLine, report, time, short } from "./ui.js";

// MAX_ROWS bounds the page's memory: older rows leave the view (the API
// still has them, and the span view shows any).
const MAX_ROWS = 1000;
const FIRST_PAGE = 200;
const FLUSH_MS = 200;

class Row extends Component {
  shouldComponentUpdate() {
    return false; // a span version never changes
  }
  render({ item: { cursor, span } }) {
    return html`<div class="row" role="row" data-cursor=${cursor} data-id=${span.id} data-seq=${span.seq}>
      <span class="mono">${time(span.at)}</span>
      <span><span class="tag">${span.entity_type}</span></span>
      <span>${span.name || span.this}</span>
      <span class=${"status s-" + (span.status || "none")}>${span.status || ""}</span>
      <span>${span.who}</span>
      <span class="mono"><a href=${"#/span/" + span.id}>${short(span.id)}</a>${span.seq ? html` <small>seq ${span.seq}</small>` : ""}</span>
    </div>`;
  }
}

function query(f) {
  const q = {};
  for (const k of ["entity_type", "status", "trace_id"]) if (f[k]) q[k] = f[k];
  if (f.bookkeeping) q.include = "bookkeeping";
  return q;
}

export function Timeline() {
  const [filter, setFilter] = useState({ entity_type: "", status: "", trace_id: "", bookkeeping: false });
  const [draft, setDraft] = useState(filter);
  const [rows, setRows] = useState([]);
  const [received, setReceived] = useState(0);
  // The connection's state, of the subscription of the current filter
  // only: a stale "live" of the previous one never shows.
  const [conn, setConn] = useState({ key: "", state: "loading" });
  const key = JSON.stringify(query(filter));
  const state = conn.key === key ? conn.state : "loading";
  const [err, setErr] = useState("");
  const rowsRef = useRef([]);

  useEffect(() => {
    let pending = [];
    let frame = 0;
    let gone = false;
    let listed = false;
    let early = []; // what the stream sent before the first page arrived
    let count = 0;
    const seen = new Set(); // cursors shown: a span is never shown twice
    const q = query(filter);
    // A burst is drawn at most every FLUSH_MS: each draw diffs the whole
    // list and lays out what moved, so drawing every frame at 1,000
    // spans/s would leave the page no frames of its own.
    let last = 0;
    let timer = 0;
    const schedule = () => {
      if (frame || timer) return;
      const wait = FLUSH_MS - (performance.now() - last);
      if (wait <= 0) frame = requestAnimationFrame(flush);
      else timer = setTimeout(() => { timer = 0; frame = requestAnimationFrame(flush); }, wait);
    };
    const flush = () => {
      frame = 0;
      last = performance.now();
      setReceived(count);
      const fresh = pending.filter((it) => !seen.has(it.cursor));
      pending = [];
      if (!fresh.length) return;
      for (const it of fresh) seen.add(it.cursor);
      const next = fresh.reverse().concat(rowsRef.current);
      if (next.length > MAX_ROWS) {
        for (const it of next.splice(MAX_ROWS)) seen.delete(it.cursor);
      }
      rowsRef.current = next;
      setRows(next);
    };
    // The stream opens first: once it answers, its start position is
    // fixed, so the page listed afterwards holds everything before it and
    // the stream everything after — nothing falls between the two.
    const firstPage = async () => {
      try {
        const page = client.unwrap(await client.api.GET("/api/timeline", { params: { query: { ...q, limit: FIRST_PAGE } } }));
        if (gone) return;
        for (const it of page.items) seen.add(it.cursor);
        rowsRef.current = page.items;
        setRows(page.items);
        listed = true;
        pending = early;
        early = [];
        flush();
      } catch (x) {
        if (!gone) report(setErr)(x);
      }
    };
    setErr("");
    rowsRef.current = [];
    setRows([]);
    setReceived(0);
    const sub = client.stream({
      query: q,
      onSpan(span, cursor) {
        // (Counted here, shown by flush: a state change per span would
        // re-render the table per network chunk, not per frame.)
        count++;
        if (!listed) {
          early.push({ span, cursor });
          return;
        }
        pending.push({ span, cursor });
        schedule();
      },
      onState(s, e) {
        if (gone) return;
        setConn({ key, state: s });
        if (s === "open" && !listed && !firstPage.started) {
          firstPage.started = true;
          firstPage();
        }
        if (s === "closed" && e) report(setErr)(e);
      },
    });
    return () => {
      gone = true;
      sub.close();
      if (frame) cancelAnimationFrame(frame);
      clearTimeout(timer);
    };
  }, [key]);

  const field = (k, label, ph) => html`<label>${label}
    <input name=${k} id=${"filter-" + k} value=${draft[k]} placeholder=${ph} onInput=${(e) => setDraft({ ...draft, [k]: e.target.value.trim() })} /></label>`;
  return html`<section class="timeline">
    <form class="filters" id="timeline-filters" onSubmit=${(e) => { e.preventDefault(); setFilter({ ...draft }); }}>
      ${field("entity_type", "Entity type", "any")}
      ${field("status", "Status", "any")}
      ${field("trace_id", "Trace", "any")}
      <label class="check"><input type="checkbox" id="filter-bookkeeping" checked=${draft.bookkeeping}
        onChange=${(e) => setDraft({ ...draft, bookkeeping: e.target.checked })} /> engine bookkeeping</label>
      <button type="submit">Apply</button>
      <span class=${"live " + state} id="stream-state" title="the stream's connection">${state === "open" ? "live" : state}</span>
    </form>
    <${ErrorLine} text=${err} />
    <p class="count" id="timeline-count" data-received=${received} data-rows=${rows.length}>
      ${rows.length} span versions shown${received ? `, ${received} arrived live` : ""}${rows.length >= MAX_ROWS ? ` (the newest ${MAX_ROWS})` : ""}</p>
    <div class="rows" id="timeline" role="table">
      <div class="row head" role="row"><span>At</span><span>Type</span><span>Name</span><span>Status</span><span>Who</span><span>Id</span></div>
      <div id="timeline-body" role="rowgroup">${rows.map((it) => html`<${Row} key=${it.cursor} item=${it} />`)}</div>
    </div>
    ${rows.length === 0 && state !== "loading" ? html`<p class="empty">Nothing yet: spans appear here as they are appended.</p>` : ""}
  </section>`;
}
