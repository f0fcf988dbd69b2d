// The client against a live server: `go test ./host/api/client` starts
// `logline dev` and passes LOGLINE_URL, LOGLINE_TOKEN (acme/alice) and
// LOGLINE_OTHER_TOKEN (another tenant). Without them these tests skip.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLogLine, ProblemError } from "../dist/index.js";

const URL = process.env.LOGLINE_URL;
const TOKEN = process.env.LOGLINE_TOKEN;
const OTHER = process.env.LOGLINE_OTHER_TOKEN;
const skip = !URL || !TOKEN || !OTHER ? "needs LOGLINE_URL, LOGLINE_TOKEN and LOGLINE_OTHER_TOKEN (go test ./host/api/client sets them)" : false;

const ll = createLogLine({ baseUrl: URL ?? "", token: TOKEN });
// A mark of this run, so that tests select their own spans on a shared server.
const run = crypto.randomUUID();
const note = (name, extra = {}) => ({ entity_type: "note", who: "alice", this: "note", name, trace_id: run, ...extra });

async function append(span) {
  return ll.unwrap(await ll.api.POST("/api/spans", { body: span }));
}

// until polls cond (no fixed sleeps) until it holds or ms pass.
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// subscribe records a subscription's spans, states and errors.
function subscribe(opts) {
  const rec = { spans: [], cursors: [], states: [], errors: [] };
  rec.sub = ll.stream({
    ...opts,
    onSpan(span, cursor) {
      rec.spans.push(span);
      rec.cursors.push(cursor);
    },
    onState(state, err) {
      rec.states.push(state);
      if (err !== undefined) rec.errors.push(err);
    },
  });
  return rec;
}

const names = (spans) => spans.map((s) => s.name);

// closedWith starts a stream and resolves with the error its "closed"
// state reports, or rejects if it does not close within 20 s.
function closedWith(start) {
  return new Promise((resolve, reject) => {
    let sub;
    const t = setTimeout(() => {
      sub?.close();
      reject(new Error("the stream did not give up within 20 s"));
    }, 20_000);
    sub = start((state, err) => {
      if (state !== "closed") return;
      clearTimeout(t);
      resolve(err);
    });
  });
}

test("append: 201 with the stored span", { skip, timeout: 60_000 }, async () => {
  const r = await ll.api.POST("/api/spans", { body: note("append") });
  assert.equal(r.response.status, 201);
  const sp = ll.unwrap(r);
  assert.match(sp.id, /^[0-9a-f-]{36}$/);
  assert.equal(sp.seq, 0);
  assert.equal(sp.tenant_id, "acme");
  assert.equal(sp.owner_id, "alice");
  assert.match(sp.curr_hash, /^[0-9a-f]{64}$/);
  assert.ok(sp.signature, "the server signed it");
  assert.equal(r.response.headers.get("Location"), `/api/spans/${sp.id}`);
  const got = ll.unwrap(await ll.api.GET("/api/spans/{id}", { params: { path: { id: sp.id } } }));
  assert.deepEqual(got.versions, [sp]);
});

test("list with cursor: order asc, two pages, no overlap", { skip, timeout: 60_000 }, async () => {
  const trace = `${run}-list`;
  const stored = [];
  for (const n of ["l1", "l2", "l3"]) stored.push(await append(note(n, { trace_id: trace })));
  const query = { trace_id: trace, order: "asc", limit: 2 };
  const p1 = ll.unwrap(await ll.api.GET("/api/spans", { params: { query } }));
  assert.equal(p1.items.length, 2);
  assert.equal(p1.more, true);
  const p2 = ll.unwrap(await ll.api.GET("/api/spans", { params: { query: { ...query, cursor: p1.next } } }));
  assert.equal(p2.more, false);
  const all = [...p1.items, ...p2.items];
  assert.deepEqual(all.map((it) => it.span.id), stored.map((s) => s.id), "commit order, each once");
  assert.equal(new Set(all.map((it) => it.cursor)).size, 3);
});

test("idempotent retry: 200 Idempotent-Replayed with the same span; another body is a 422", { skip, timeout: 60_000 }, async () => {
  const key = `k-${run}`;
  const first = await ll.api.POST("/api/spans", { params: { header: { "Idempotency-Key": key } }, body: note("idem") });
  assert.equal(first.response.status, 201);
  // The same key as a plain fetch header (openapi-fetch merges both).
  const again = await ll.api.POST("/api/spans", { headers: { "Idempotency-Key": key }, body: note("idem") });
  assert.equal(again.response.status, 200);
  assert.equal(again.response.headers.get("Idempotent-Replayed"), "true");
  assert.deepEqual(ll.unwrap(again), ll.unwrap(first));
  const other = await ll.api.POST("/api/spans", { params: { header: { "Idempotency-Key": key } }, body: note("not idem") });
  assert.throws(() => ll.unwrap(other), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 422);
    assert.equal(e.code, "idempotency_key_reused");
    assert.equal(e.field, "Idempotency-Key");
    return true;
  });

  // A batch as NDJSON, all or nothing, replayed the same way.
  const batch = [note("b1"), note("b2")];
  const a = await ll.appendSpans(batch, { idempotencyKey: `${key}-batch` });
  assert.equal(a.status, 201);
  assert.equal(a.replayed, false);
  assert.deepEqual(names(a.spans), ["b1", "b2"]);
  const b = await ll.appendSpans(batch, { idempotencyKey: `${key}-batch` });
  assert.equal(b.status, 200);
  assert.equal(b.replayed, true);
  assert.deepEqual(b.spans, a.spans);
  await assert.rejects(ll.appendSpans([note("ok"), { entity_type: "note", who: "alice" }]), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 422);
    assert.equal(e.field, "this");
    assert.equal(e.problem.span, 2, "the second span of the batch");
    return true;
  });
});

test("execute with wait: a JavaScript function's output", { skip, timeout: 150_000 }, async () => {
  const fn = await append({
    entity_type: "function", who: "alice", this: "function", name: `sum-${run}`,
    language: "javascript", runtime: "quickjs", code: "return {sum: input.a+input.b}",
  });
  const r = await ll.api.POST("/api/execute", {
    params: { query: { wait: "30s" } },
    body: { span_id: fn.id, input: { a: 2, b: 3 } },
  });
  let res = ll.unwrap(r);
  let execution = res.execution;
  if (res.status === "scheduled") {
    // A cold machine compiles the QuickJS guest first: follow the request
    // until the engine closes it.
    assert.equal(r.response.status, 202);
    const closing = await until(async () => {
      const v = ll.unwrap(await ll.api.GET("/api/spans/{id}", { params: { path: { id: res.request_id } } }));
      const last = v.versions.at(-1);
      return last.seq > 0 ? last : undefined;
    }, 120_000, "the engine to close the request");
    res = { ...res, status: closing.status };
    const exID = closing.metadata.execution_id;
    execution = ll.unwrap(await ll.api.GET("/api/spans/{id}", { params: { path: { id: exID } } })).versions.at(-1);
  } else {
    assert.equal(r.response.status, 200);
  }
  assert.equal(res.status, "complete", JSON.stringify(res));
  assert.equal(execution.entity_type, "execution");
  assert.equal(execution.parent_id, fn.id);
  assert.deepEqual(execution.output, { sum: 5 });
});

test("stream with resume: exactly the spans after lastEventId, in order", { skip, timeout: 60_000 }, async () => {
  const trace = `${run}-stream`;
  const first = subscribe({ query: { trace_id: trace } });
  // The first message is the start position: from then on nothing is missed.
  await until(() => first.sub.connected && first.sub.lastEventId !== undefined, 20_000, "the stream's start position");
  const a = [];
  for (const n of ["a1", "a2", "a3"]) a.push(await append(note(n, { trace_id: trace })));
  await until(() => first.spans.length >= 3, 20_000, "three spans");
  first.sub.close();
  await until(() => first.states.at(-1) === "closed", 5_000, "closed");
  assert.deepEqual(names(first.spans), ["a1", "a2", "a3"]);
  assert.deepEqual(first.spans.map((s) => s.id), a.map((s) => s.id));
  assert.equal(first.sub.lastEventId, first.cursors.at(-1));
  assert.equal(first.sub.connected, false);
  assert.deepEqual(first.errors, [], "closed by close(): no error");

  for (const n of ["b1", "b2"]) await append(note(n, { trace_id: trace }));
  const second = subscribe({ query: { trace_id: trace }, lastEventId: first.sub.lastEventId });
  await until(() => second.spans.length >= 2, 20_000, "the two spans appended while away");
  // A marker after them: what arrives before it is all there was.
  await append(note("end", { trace_id: trace }));
  await until(() => second.spans.length >= 3, 20_000, "the marker");
  second.sub.close();
  assert.deepEqual(names(second.spans), ["b1", "b2", "end"]);
});

test("stream reconnects after a network error and resumes without gaps or repeats", { skip, timeout: 60_000 }, async () => {
  const trace = `${run}-reconnect`;
  // The real server behind a fetch whose connections the test can cut.
  const conns = [];
  const cutting = (input, init) => {
    const ac = new AbortController();
    init?.signal?.addEventListener("abort", () => ac.abort(init.signal.reason), { once: true });
    conns.push({ ac, lastEventId: new Headers(init?.headers).get("Last-Event-ID") });
    return fetch(input, { ...init, signal: ac.signal });
  };
  const client = createLogLine({ baseUrl: URL, token: () => TOKEN, fetch: cutting });
  const rec = { spans: [], states: [] };
  const sub = client.stream({
    query: { trace_id: trace },
    minBackoffMs: 10,
    onSpan: (s) => rec.spans.push(s),
    onState: (s) => rec.states.push(s),
  });
  await until(() => sub.connected && sub.lastEventId !== undefined, 20_000, "the start position");
  await append(note("r1", { trace_id: trace }));
  await until(() => rec.spans.length === 1, 20_000, "r1");
  const after = sub.lastEventId;
  conns[0].ac.abort(new TypeError("network error (cut by the test)"));
  await until(() => rec.states.includes("retrying"), 5_000, "retrying");
  for (const n of ["r2", "r3"]) await append(note(n, { trace_id: trace }));
  await until(() => rec.spans.length >= 3, 30_000, "r2 and r3 after the reconnect");
  await append(note("end", { trace_id: trace }));
  await until(() => rec.spans.length >= 4, 20_000, "the marker");
  sub.close();
  assert.deepEqual(names(rec.spans), ["r1", "r2", "r3", "end"]);
  assert.equal(conns.length, 2, "one reconnect");
  assert.equal(conns[0].lastEventId, null);
  assert.equal(conns[1].lastEventId, after, "resumed after the last span delivered");
  assert.deepEqual(rec.states.slice(0, 5), ["connecting", "open", "retrying", "connecting", "open"]);
});

test("errors are typed problems", { skip, timeout: 60_000 }, async () => {
  // 401: no token (and the stream gives up at once, reporting it).
  const anon = createLogLine({ baseUrl: URL });
  const unauth = await anon.api.GET("/api/spans");
  assert.throws(() => anon.unwrap(unauth), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 401);
    assert.equal(e.code, "unauthorized");
    assert.equal(e.field, "Authorization");
    assert.equal(e.problem.type, "about:blank");
    return true;
  });
  let calls = 0;
  const counting = createLogLine({ baseUrl: URL, fetch: (i, o) => (calls++, fetch(i, o)) });
  const closed = await closedWith((onState) => counting.stream({ onSpan() {}, onState, minBackoffMs: 1 }));
  assert.ok(closed instanceof ProblemError, String(closed));
  assert.equal(closed.status, 401);
  assert.equal(calls, 1, "a 401 is not retried");

  // 400: a bad parameter, named.
  const bad = await ll.api.GET("/api/spans", { params: { query: { limit: 0 } } });
  assert.throws(() => ll.unwrap(bad), (e) => e instanceof ProblemError && e.status === 400 && e.code === "malformed" && e.field === "limit");
  const badStream = await closedWith((onState) => ll.stream({ query: { visibility: "secret" }, onSpan() {}, onState }));
  assert.ok(badStream instanceof ProblemError);
  assert.equal(badStream.status, 400);
  assert.equal(badStream.field, "visibility");

  // 404: another tenant's span is not found (never forbidden).
  const mine = await append(note("private to acme"));
  const other = createLogLine({ baseUrl: URL, token: OTHER });
  const r = await other.api.GET("/api/spans/{id}", { params: { path: { id: mine.id } } });
  assert.throws(() => other.unwrap(r), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 404);
    assert.equal(e.code, "not_found");
    assert.ok(!e.message.includes(OTHER) && !e.message.includes(TOKEN), "no token in the message");
    return true;
  });
});
