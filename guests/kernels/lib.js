// lib.js — shared by the stock kernels. tools/seedgen prepends it to each
// kernel's source, so a kernel span is one self-contained script.
//
// Exactly-once comes from the ledger itself: every span a kernel emits for a
// piece of work has an id derived from that work (derivedId), so a second
// engine that does the same work again cannot append it (seq 0 of an id that
// exists is refused), and a kernel appends all it emits for one pass as one
// array (insert_span of an array: all or none). Per-tenant leases (ctx.lock)
// keep two engines from doing the same work at the same time; a lease dies
// with the host that holds it.

const MANIFEST_ID = '00000000-0000-4000-8000-0000000000aa';

// The heap a pass needs, taken before the snapshot every run starts from
// (top-level code runs when the kernel is prepared). A run that grows the
// guest's memory cannot be restored to that snapshot, so the sandbox
// discards its instance and the next pass starts cold: measured, a pass of
// 25 requests took 43 ms instead of 10. QuickJS frees the buffer at once;
// the memory stays, free for the runs' allocations (a larger pass still
// works, and only then pays the cold start).
new ArrayBuffer(4 << 20);

// Entity types the engine writes for its own bookkeeping: never candidates
// of a policy, never a reason to wake one.
const INTERNAL_TYPES = ['policy_cursor', 'engine_cursor', 'quota_counter'];

async function latestManifest(sql) {
  const { rows } = await sql`SELECT metadata FROM ledger.universal_registry
    WHERE id = ${MANIFEST_ID} ORDER BY seq DESC LIMIT 1`;
  return (rows[0] && rows[0].metadata) || {};
}

// derivedId is a UUID (version 8, RFC 9562 "custom") made from the BLAKE3 of
// its parts: the same work always gets the same id.
function derivedId(crypto, ...parts) {
  const h = crypto.hex(crypto.blake3(parts.map(String).join('\u0000')));
  const variant = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// derivedIdNear is derivedId(...parts) laid out after anchor when that is a
// UUIDv7 (as the ledger makes ids): anchor's 48-bit timestamp first, so the
// ids of recent work sort near each other and their index entries land on
// the few hot pages at the keys' right edge. A random id lands on a cold
// page of the primary key and of heads' once they outgrow the server's
// buffers: at 10M spans that cost the engine 15% of its rate (issue 15).
// Still a pure function of its inputs, so exactly-once holds as before.
function derivedIdNear(crypto, anchor, ...parts) {
  const id = derivedId(crypto, ...parts);
  return anchor[14] === '7' && anchor[8] === '-' && anchor.length === 36 ? anchor.slice(0, 13) + id.slice(13) : id;
}

// latestOf returns the latest version of each id (visible to the kernel),
// without its code. Each id is one backward step of the primary key (id,
// seq): a counter or cursor gains a version every pass, and reading all of
// them (DISTINCT ON) made a pass cost grow through the day.
async function latestOf(sql, ids) {
  if (!ids.length) return new Map();
  const { rows } = await sql(`SELECT r.* FROM (SELECT DISTINCT jsonb_array_elements_text($1::jsonb)::uuid AS id) x
    CROSS JOIN LATERAL (SELECT ${SPAN_COLUMNS} FROM ledger.universal_registry u
      WHERE u.id = x.id ORDER BY u.seq DESC LIMIT 1) r`, [JSON.stringify(ids)]);
  return new Map(rows.map((r) => [r.id, r]));
}

// existing returns the ids among ids that already exist.
async function existing(sql, ids) {
  if (!ids.length) return new Set();
  const { rows } = await sql`SELECT id FROM ledger.heads
    WHERE id IN (SELECT jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb)::uuid)`;
  return new Set(rows.map((r) => r.id));
}

// nextVersion is the next version of an entity the kernel keeps (a cursor,
// a counter): seq 0 for a new one, else latest + 1 (the host links prev_hash).
function nextVersion(latest, span) {
  return Object.assign(span, { seq: latest ? latest.seq + 1 : 0 });
}

// appendAll appends spans as one array (all or none). When the ledger
// refuses the array, it asks which spans are at fault (insertSpan's check,
// which appends nothing) and appends the others, each bad one replaced by
// what repair(span, verdict) gives in its place (null: dropped), so that
// one bad item never fails its neighbours. A bad span repair has nothing
// for (undefined) keeps the refusal and the pass fails: that is how a
// conflict on bookkeeping (a cursor, a counter: another engine did the
// work) must end.
async function appendAll(insertSpan, spans, repair) {
  try {
    return await insertSpan({ spans, result: 'refs' });
  } catch (e) {
    if (!e || (e.code !== 'invalid' && e.code !== 'failed')) throw e;
    const verdicts = await insertSpan({ spans, check: true });
    if (!verdicts.some(Boolean)) throw e;
    const kept = [];
    for (let i = 0; i < spans.length; i++) {
      if (!verdicts[i]) {
        kept.push(spans[i]);
        continue;
      }
      const r = repair(spans[i], verdicts[i]);
      if (r === undefined) throw e;
      if (r) kept.push(r);
    }
    return kept.length ? insertSpan({ spans: kept, result: 'refs' }) : [];
  }
}

// Cursors are positions in commit order, "tx.ord" (see ledger.Query): rows
// are read only below the oldest running transaction, so a row that commits
// late never lands behind a cursor.
function parseCursor(c) {
  const m = /^(\d+)\.(\d+)$/.exec(String(c || ''));
  return m ? { tx: m[1], ord: m[2] } : { tx: '0', ord: '0' };
}

// SPAN_COLUMNS is every column of a span but code (a module can weigh
// megabytes; no policy judges code), plus the row's cursor position.
const SPAN_COLUMNS = `id, seq, entity_type, who, did, "this", at, parent_id, related_to, owner_id,
  tenant_id, visibility, status, is_deleted, name, description, language, runtime, input, output, error,
  duration_ms, trace_id, prev_hash, curr_hash, signature, public_key, metadata`;

// rowsAfter reads a tenant's spans after a cursor, oldest first: the
// columns of SPAN_COLUMNS, or just those a caller needs (JSON costs fuel),
// of one entity type when entityType is set.
async function rowsAfter(sql, tenant, cursor, limit, entityType, columns) {
  const c = parseCursor(cursor);
  const cols = columns || SPAN_COLUMNS;
  const { rows } = await sql(`SELECT ${cols}, ord, tx_id::text AS cursor_tx
    FROM ledger.universal_registry
    WHERE tenant_id = $1
      AND (tx_id, ord) > ($2::xid8, $3::bigint)
      AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
      AND ($4 = '' OR entity_type = $4)
    ORDER BY tx_id, ord LIMIT $5`, [tenant, c.tx, c.ord, entityType || '', limit]);
  return rows;
}

function cursorOf(row) {
  return `${row.cursor_tx}.${row.ord}`;
}

// Lanes: the engine may run several request_worker passes of a tenant at
// once (manifest engine.request_lanes), each on the open requests of its
// lane (the last byte of the request id modulo the lanes) under a lease of
// its own, each with a quota counter of its own; the day's count is the sum
// of the counters of every lane there may be (MAX_LANES). A lane runs its
// requests only while the count leaves room for a full batch in flight in
// every lane. Nearer the limit lane 0 alone runs, holding every lane's
// lease, so that nothing else is in flight and the count it reads is exact:
// the daily limit holds under any concurrency. Across lanes, requests do
// not run in commit order.
const MAX_LANES = 8;
const MAX_BATCH = 60;

function laneLock(lane) {
  return lane ? `request_worker:${lane}` : 'request_worker';
}

function quotaCounterIds(crypto, tenant, day) {
  const ids = [derivedId(crypto, 'quota', tenant, day)];
  for (let k = 1; k < MAX_LANES; k++) ids.push(derivedId(crypto, 'quota', tenant, day, k));
  return ids;
}

// quota reads the manifest's daily limit and the day's count (of every
// lane), with extra ids read in the same query; near tells whether a lane
// may no longer run on its own.
async function quota(ctx, tenant, extra) {
  const { sql, now, crypto } = ctx;
  const day = now().slice(0, 10); // UTC
  const counterIds = quotaCounterIds(crypto, tenant, day);
  const latest = await latestOf(sql, [MANIFEST_ID, ...counterIds, ...(extra || [])]);
  const manifest = (latest.get(MANIFEST_ID) || {}).metadata || {};
  const limit = Number((manifest.throttle && manifest.throttle.per_tenant_daily_exec_limit) || 100);
  const countOf = (id) => { const c = latest.get(id); return Number((c && c.metadata && c.metadata.count) || 0); };
  const total = counterIds.reduce((n, id) => n + countOf(id), 0);
  return { day, counterIds, latest, manifest, limit, total, countOf, near: total + MAX_LANES * MAX_BATCH > limit };
}

// takeAllLanes takes every lane's lease (the caller holds lane 0's), or
// reports false if a pass of another lane is in flight.
async function takeAllLanes(ctx) {
  for (let k = 1; k < MAX_LANES; k++) {
    if (!(await ctx.lock(laneLock(k), 120000))) return false;
  }
  return true;
}

// runRequests runs the requests of one tenant: quota, the function, its
// execution span (id derived from the request), the request's next version
// (complete or error), a status_patch for slow runs, and the lane's quota
// counter — all appended together. The caller holds the lease of its lane,
// or (exclusive) of every lane.
async function runRequests(ctx, reqs, lane, exclusive) {
  const { insertSpan, crypto, exec } = ctx;
  if (!reqs.length) return { processed: 0 };
  lane = lane || 0;
  const tenant = reqs[0].tenant_id;
  // One read for the manifest, the day's quota counters and the functions.
  const q = await quota(ctx, tenant, [...new Set(reqs.map((r) => r.parent_id).filter(Boolean))]);
  if (q.near && !exclusive) return { processed: 0, near: true, more: true }; // lane 0's, now
  const { day, latest, manifest, limit } = q;
  const counterId = q.counterIds[lane];
  const slowMs = Number((manifest.policy && manifest.policy.slow_ms) || 5000);
  const override = String(manifest.override_pubkey_hex || '').toLowerCase();
  const counter = latest.get(counterId);
  const own = q.countOf(counterId);
  let used = q.total;
  const fns = latest;

  // First decide every request (quota in order), then run the functions
  // that may run in one exec call (the host runs them concurrently), then
  // record, in request order.
  const out = [];
  const runs = [];
  let blocked = 0;
  const closeRequest = (r, base, status, extra) => out.push(Object.assign({
    id: r.id, seq: r.seq + 1, entity_type: 'request', who: 'edge:run_code', did: status === 'complete' ? 'completed' : 'failed',
    this: r.this || 'run_code', status, parent_id: r.parent_id, related_to: r.related_to, trace_id: r.trace_id,
    input: r.input, metadata: Object.assign({}, r.metadata),
  }, base, extra || {}));
  for (const r of reqs) {
    const fn = fns.get(r.parent_id);
    const base = { owner_id: r.owner_id, visibility: r.visibility || 'private' };
    if (!fn || fn.entity_type !== 'function') {
      closeRequest(r, base, 'error', { error: { code: 'not_found', message: `request ${r.id}: no function ${r.parent_id} visible to this tenant` } });
      continue;
    }
    const forced = !!(fn.metadata && fn.metadata.force) && !!fn.public_key && override !== '' &&
      fn.public_key.toLowerCase() === override;
    if (used >= limit && !forced) {
      blocked++;
      const message = `tenant ${tenant} used ${used} of its ${limit} executions on ${day} (UTC)`;
      out.push(Object.assign({
        id: derivedId(crypto, 'violation', r.id), seq: 0, entity_type: 'policy_violation',
        who: 'edge:run_code', did: 'blocked', this: 'quota.exec.per_tenant.daily', status: 'error',
        parent_id: fn.id, related_to: [fn.id, r.id], trace_id: r.trace_id,
        error: { code: 'quota_exceeded', message }, metadata: { limit, today: used, request_id: r.id },
      }, base));
      closeRequest(r, base, 'error', { error: { code: 'quota_exceeded', message } });
      continue;
    }
    used++;
    const input = r.input !== undefined && r.input !== null ? r.input : fn.input;
    runs.push({ r, fn, base, forced, input: input === undefined ? null : input });
  }
  // Each run's execution id is derived from its request (and sorts next
  // to it: derivedIdNear); a request with
  // no trace (and a function with none) is traced under that id, which
  // costs nothing to make (crypto.randomUUID was a tenth of a request's
  // fuel) and is the same on any engine. The hot loop writes its spans as
  // literals: every object and call is fuel, per request.
  for (const x of runs) {
    x.execId = derivedIdNear(crypto, x.r.id, 'execution', x.r.id);
    x.trace = x.r.trace_id || x.fn.trace_id || x.execId;
  }
  const results = runs.length ? await exec(runs.map((x) => ({ span_id: x.fn.id, input: x.input, trace_id: x.trace }))) : [];
  const codes = {}; // what the engine's metrics count: outcomes by error code, fuel
  let fuel = 0, failed = 0;
  for (let i = 0; i < runs.length; i++) {
    const { r, fn, forced, input, execId, trace } = runs[i];
    const res = results[i];
    const complete = res.status === 'complete';
    fuel += Number(res.fuel_used) || 0;
    const ex = {
      id: execId, seq: 0, entity_type: 'execution', who: 'edge:run_code', did: 'executed', this: 'run_code',
      status: complete ? 'complete' : 'error', parent_id: fn.id, related_to: [fn.id, r.id], trace_id: trace,
      input, duration_ms: res.duration_ms, owner_id: r.owner_id, visibility: r.visibility || 'private',
      metadata: { request_id: r.id, fuel_used: res.fuel_used, code_seq: res.code_seq, module_hash: res.module_hash, forced: forced || undefined },
    };
    if (complete) {
      ex.output = res.output === undefined ? null : res.output;
    } else {
      ex.error = res.error;
      failed++;
      const c = (res.error && res.error.code) || 'guest_error';
      codes[c] = (codes[c] || 0) + 1;
    }
    out.push(ex);
    if (complete && res.duration_ms > slowMs) {
      out.push({
        id: derivedId(crypto, 'slow', execId), seq: 0, entity_type: 'status_patch',
        who: 'edge:run_code', did: 'labeled', this: 'status=slow', status: 'complete',
        parent_id: execId, related_to: [execId], metadata: { status: 'slow', duration_ms: res.duration_ms },
        owner_id: ex.owner_id, visibility: ex.visibility,
      });
    }
    const metadata = Object.assign({}, r.metadata);
    metadata.execution_id = execId;
    out.push({
      id: r.id, seq: r.seq + 1, entity_type: 'request', who: 'edge:run_code', did: complete ? 'completed' : 'failed',
      this: r.this || 'run_code', status: ex.status, parent_id: r.parent_id, related_to: r.related_to, trace_id: r.trace_id,
      input: r.input, metadata, owner_id: ex.owner_id, visibility: ex.visibility,
    });
  }
  const ran = runs.length;
  if (ran > 0) {
    out.push(nextVersion(counter, {
      id: counterId, entity_type: 'quota_counter', who: 'edge:run_code', did: 'counted',
      this: 'quota.exec.per_tenant.daily', status: 'active', owner_id: 'edge:run_code', visibility: 'tenant',
      metadata: { day, count: own + ran, limit, lane },
    }));
  }
  // refs: the stored spans are not needed back (parsing them is a fifth
  // of a pass's fuel). An execution the ledger refuses is recorded as
  // failed with why; a status_patch is dropped; anything else refused
  // fails the pass (another engine did this work).
  await appendAll(insertSpan, out, (s, v) => {
    if (s.entity_type === 'execution') {
      return Object.assign({}, s, { status: 'error', output: undefined,
        error: { code: 'invalid_output', message: `the execution could not be recorded as it ran: ${v.message}` } });
    }
    return s.entity_type === 'status_patch' ? null : undefined;
  });
  return { processed: reqs.length, ran, blocked, failed, codes, fuel };
}

// Schedules (observer: recurring functions; prompt_worker: evals and
// bandits): cron "m h dom mon dow" with an optional leading seconds field,
// or "@every 30s|5m|1h", in UTC.
// latestTick is the latest tick of schedule at or before t (ms), not before
// since (the function's own time), or null.
function latestTick(schedule, t, since) {
  const every = /^@every\s+(\d+)(s|m|h)$/.exec(schedule.trim());
  if (every) {
    const ms = Number(every[1]) * { s: 1000, m: 60000, h: 3600000 }[every[2]];
    if (ms <= 0) throw new Error(`schedule ${schedule}: empty period`);
    const tick = Math.floor(t / ms) * ms;
    return tick >= since - ms ? tick : null;
  }
  const f = schedule.trim().split(/\s+/);
  if (f.length !== 5 && f.length !== 6) throw new Error(`schedule ${schedule}: want 5 or 6 cron fields or @every`);
  const withSeconds = f.length === 6;
  const [sec, min, hour, dom, mon, dow] = withSeconds ? f : ['0', ...f];
  const m = [field(sec, 0, 59), field(min, 0, 59), field(hour, 0, 23), field(dom, 1, 31), field(mon, 1, 12), field(dow, 0, 7)];
  if (m[5].has(7)) m[5].add(0);
  const step = withSeconds ? 1000 : 60000;
  let tick = Math.floor(t / step) * step;
  // Look back at most a day (minutes) or an hour (seconds).
  for (let i = 0; i < (withSeconds ? 3600 : 1440); i++, tick -= step) {
    if (tick < since - step) return null;
    const d = new Date(tick);
    if (m[0].has(d.getUTCSeconds()) && m[1].has(d.getUTCMinutes()) && m[2].has(d.getUTCHours()) &&
        m[3].has(d.getUTCDate()) && m[4].has(d.getUTCMonth() + 1) && m[5].has(d.getUTCDay())) return tick;
  }
  return null;
}

function field(spec, lo, hi) {
  const set = new Set();
  for (const part of spec.split(',')) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`cron field "${spec}"`);
    let a = lo, b = hi;
    if (m[2] !== undefined) { a = Number(m[2]); b = m[3] !== undefined ? Number(m[3]) : (m[4] ? hi : a); }
    const by = m[4] ? Number(m[4]) : 1;
    if (a < lo || b > hi || a > b || by < 1) throw new Error(`cron field "${spec}" out of range ${lo}-${hi}`);
    for (let v = a; v <= b; v += by) set.add(v);
  }
  return set;
}

// callProvider calls a model provider — a provider span whose metadata says
// {api: "openai"|"ollama", base_url, model, auth_env?, timeout_ms?} — with
// payload {messages, model?, temperature?, max_tokens?, timeout_ms?}
// through the http capability (the manifest's allowlist; the API key is
// named by auth_env and added by the host, never seen here). It never
// throws for what the provider does: an HTTP error, a timeout or a body
// that is not the wire format is a typed error ({code: provider_error |
// timeout | invalid_response, message}). The guest's clock stands still
// during a run: latency is the host's measure of the call.
async function callProvider(ctx, prov, payload) {
  const meta = prov.metadata || {};
  const base = String(meta.base_url || '').replace(/\/+$/, '');
  const api = meta.api || (base.includes('11434') ? 'ollama' : 'openai');
  const model = payload.model || meta.model;
  const temperature = payload.temperature === undefined ? 0.2 : payload.temperature;
  // The shorter of the provider's timeout and the caller's.
  const timeouts = [payload.timeout_ms, meta.timeout_ms].map(Number).filter((x) => x > 0);
  const req = { method: 'POST', headers: { 'content-type': 'application/json' },
    timeout_ms: timeouts.length ? Math.min(...timeouts) : undefined };
  if (api === 'openai') {
    req.url = `${base}/chat/completions`;
    const body = { model, messages: payload.messages || [], temperature };
    if (payload.max_tokens) body.max_tokens = payload.max_tokens;
    req.body = JSON.stringify(body);
    if (meta.auth_env) req.auth_env = meta.auth_env;
  } else if (api === 'ollama') {
    req.url = `${base}/api/chat`;
    const options = { temperature };
    if (payload.max_tokens) options.num_predict = payload.max_tokens;
    req.body = JSON.stringify({ model: model || 'llama3', messages: payload.messages || [], stream: false, options });
  } else {
    throw new Error(`provider ${prov.id}: unsupported api ${JSON.stringify(api)} (want openai or ollama)`);
  }
  const r = { api, model, output: null, error: null, usage: {}, latency: 0, content: null, finish_reason: null, tool_calls: 0 };
  let res;
  try {
    res = await ctx.http(req);
  } catch (e) {
    r.error = { code: e.code === 'timeout' ? 'timeout' : 'provider_error', message: String(e.message || e) };
    return r;
  }
  r.latency = res.duration_ms;
  if (res.status < 200 || res.status >= 300) {
    r.error = { code: 'provider_error', message: `${api} answered HTTP ${res.status}: ${String(res.body).slice(0, 500)}` };
    return r;
  }
  try {
    r.output = JSON.parse(res.body);
  } catch (e) {
    r.error = { code: 'invalid_response', message: `${api} answered HTTP ${res.status} with a body that is not JSON: ${String(res.body).slice(0, 200)}` };
    return r;
  }
  const o = r.output || {};
  let msg;
  if (api === 'openai') {
    const choice = (o.choices && o.choices[0]) || {};
    msg = choice.message;
    r.finish_reason = choice.finish_reason || null;
    if (o.usage) {
      r.usage = { prompt_tokens: o.usage.prompt_tokens, completion_tokens: o.usage.completion_tokens, total_tokens: o.usage.total_tokens };
    }
  } else {
    msg = o.message;
    r.finish_reason = o.done_reason || (o.done ? 'stop' : null);
    r.usage = { prompt_tokens: o.prompt_eval_count, completion_tokens: o.eval_count,
      total_tokens: (o.prompt_eval_count || 0) + (o.eval_count || 0) };
  }
  r.model = o.model || model;
  if (!msg || (typeof msg.content !== 'string' && !Array.isArray(msg.tool_calls))) {
    r.error = { code: 'invalid_response', message: `${api} answered without a message: ${String(res.body).slice(0, 200)}` };
    return r;
  }
  r.content = typeof msg.content === 'string' ? msg.content : '';
  r.tool_calls = Array.isArray(msg.tool_calls) ? msg.tool_calls.length : 0;
  return r;
}
