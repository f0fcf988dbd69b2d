// policy_agent (seed §3.4): evaluates every active policy of the tenant it
// is booted for over the spans appended since that policy's cursor, a batch
// per run of the policy (one sandbox run for up to BATCH spans), and appends
// what the actions ask for together with the cursor's next position:
//   {run: "run_code", span_id}  → a request for that function
//   {emit_span: {...}}          → that span (tenant, owner and visibility
//                                 default to the policy's)
// Ids are derived from (policy, span, action index), so an action is never
// taken twice. A policy that throws on a span gets a policy_error naming it
// and the others go on; a policy whose run fails (fuel, syntax, memory) gets
// one policy_error naming every span of the batch, so its cursor moves on
// but never silently.
//
// Spans with a TTL are judged again at expiry. A span whose latest version
// carries metadata.ttl_minutes (a positive JSON number) expires at at +
// ttl_minutes (ledger.heads.expires_at, migration 007). Each pass reads the
// tenant's expiries in the window (expiry cursor, now - 2 ms], in order of
// (expiry, id), at most BATCH of them (an index range: the cost is the
// window's, never the history's), and every policy gets, in a run of its
// own, those already behind its cursor — judged once, when they were new —
// never an internal type, never itself. Spans not yet judged are not
// re-presented: they will be judged normally, after their expiry. Each
// policy's window moves in its cursor span (metadata.expiry_cursor, an ISO
// time, and expiry_cursor_id while paging through one instant), appended in
// the same array as what the re-judgment emits; the cursor gains a version
// for it only when something was re-presented or a full page went by, and
// a cursor from before this rule starts from the beginning, a page a pass.
// Exactly once: a re-judgment's actions have the ids of the first
// judgment's, and what already exists (that id, at that seq or later) is
// dropped before appending, so a block archived when first judged (already
// expired) is not archived again, and one judged fresh is archived now. Its
// policy_errors have ids of their own (…, 'expiry'): a failing re-judgment
// is recorded once, never silently. The 2 ms: a policy's clock is whole
// milliseconds read when its run starts (after the agent's), and Date.parse
// rounds `at` to the nearest one; 2 ms before the agent's clock, truncated,
// is past at + ttl_minutes for the policy, strictly, as the seed's
// ttl_reaper compares.
globalThis.default = async function main(ctx) {
  const { sql, lock, insertSpan, crypto, env, now } = ctx;
  const tenant = env.TENANT;
  if (!tenant) throw new Error('policy_agent: env TENANT is required');
  if (!(await lock('policy_agent', 120000))) return { busy: true };
  const batch = Math.max(1, Math.min(Number(env.BATCH || 50), 200));
  // The tenant's own active policies, and the stock ones the manifest
  // applies to every tenant (global_policies: public, active).
  const { rows: own } = await sql`SELECT id, seq, owner_id, visibility, name FROM ledger.active_policies ORDER BY id`;
  const manifest = await latestManifest(sql);
  const globals = [...(await latestOf(sql, manifest.global_policies || [])).values()]
    .filter((p) => p.entity_type === 'policy' && p.status === 'active' && p.visibility === 'public')
    .map((p) => Object.assign(p, { global: true }));
  const policies = own.concat(globals.filter((g) => !own.some((p) => p.id === g.id)));
  const cursorIds = policies.map((p) => derivedId(crypto, 'cursor', 'policy', p.id, tenant));
  const cursors = await latestOf(sql, cursorIds);
  // The expiries due, once for every policy: from the earliest window.
  const cut = expiryCut(now());
  const froms = cursorIds.map((id) => expiryFrom(cursors.get(id), cut));
  const due = await expiries(sql, tenant, policies, cursorIds.map((id) => cursors.get(id)), froms, cut, batch);
  let evaluated = 0, rejudged = 0, actions = 0, policyErrors = 0, more = due.more;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i], cursorId = cursorIds[i], cursor = cursors.get(cursorId);
    const rows = await rowsAfter(sql, tenant, cursor && cursor.metadata && cursor.metadata.cursor, batch);
    if (rows.length === batch) more = true;
    const spans = rows.filter((r) => !INTERNAL_TYPES.includes(r.entity_type) && r.id !== p.id);
    const { again, to } = dueFor(due, p, cursor, froms[i], cut);
    const moved = keyAfter(to, froms[i]);
    // Nothing to evaluate. The cursor moves past internal rows only when
    // they fill a whole batch (else a cursor written for them would itself
    // be new, and the next pass would write another, for ever), and past
    // expiries only when a full page of them went by.
    if (!spans.length && !again.length) {
      if (rows.length === batch || (due.full && moved)) await insertSpan(advance(cursor, cursorId, p, rows, to));
      continue;
    }
    const out = [];
    const actionOf = new Map(); // span appended for an action → the action's span and index
    if (spans.length) await judge(ctx, p, spans.map(candidate), false, out, actionOf);
    if (again.length) {
      const mark = out.length;
      await judge(ctx, p, again.map(candidate), true, out, actionOf);
      const kept = await unstored(sql, out.slice(mark));
      out.length = mark;
      out.push(...kept);
    }
    out.push(advance(cursor, cursorId, p, rows, to));
    // An action the ledger refuses (a span the policy emitted that is not
    // a valid span, names an id that exists, ...) becomes a policy_error
    // naming it; the other actions and the cursor are appended all the
    // same.
    await appendAll(insertSpan, out, (x, v) => {
      const a = actionOf.get(x);
      if (!a) return undefined;
      return Object.assign({
        id: derivedId(crypto, 'policy_error', p.id, a.s.id, a.s.seq, 'action', a.j, ...(a.again ? ['expiry'] : [])), seq: 0,
        entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
        parent_id: p.id, related_to: [p.id, a.s.id],
        error: { code: 'invalid_output', message: `action ${a.j} on span ${a.s.id}: the ledger refused what it emits: ${v.message}` },
        metadata: { policy_id: p.id, policy_seq: p.seq, spans: [`${a.s.id}/${a.s.seq}`], action: a.j },
      }, baseFor(p, a.s));
    });
    evaluated += spans.length;
    rejudged += again.length;
    actions += out.length - 1;
    policyErrors += out.filter((x) => x.entity_type === 'policy_error').length; // (before any repair: a count for metrics)
  }
  return { evaluated, rejudged, actions, policy_errors: policyErrors, more };
};

// candidate is a span as a policy gets it: every column but code, with the
// seed's `when`.
function candidate({ cursor_tx, ord, ...s }) {
  return Object.assign(s, { when: s.at });
}

// What a policy emits belongs to the policy's owner — or, for a stock
// policy of the manifest, to the owner of the span it is about, with that
// span's visibility (never public because the policy is).
function baseFor(p, s) {
  return p.global ? { owner_id: s.owner_id, visibility: s.visibility === 'public' ? 'tenant' : s.visibility }
    : { owner_id: p.owner_id, visibility: p.visibility || 'private' };
}

// judge runs policy p on candidates (one sandbox run) and pushes what the
// results ask for onto out, each action's span mapped to its origin in
// actionOf. again: the candidates are re-presented at expiry, so their
// policy_errors get ids of their own.
async function judge(ctx, p, candidates, again, out, actionOf) {
  const { crypto, exec } = ctx;
  const tag = again ? ['expiry'] : [];
  const res = await exec(p.id, { batch: candidates });
  const results = res.status === 'complete' && Array.isArray(res.output) ? res.output : null;
  if (!results || results.length !== candidates.length) {
    const error = res.error || { code: 'guest_error', message: `policy returned ${JSON.stringify(res.output)}, want one result per span` };
    out.push(Object.assign({
      id: derivedId(crypto, 'policy_error', p.id, candidates[0].id, candidates[0].seq, ...tag), seq: 0,
      entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
      parent_id: p.id, related_to: [p.id], error,
      metadata: { policy_id: p.id, policy_seq: p.seq, spans: candidates.map((s) => `${s.id}/${s.seq}`), expiry: again || undefined },
    }, baseFor(p, candidates[0])));
    return;
  }
  results.forEach((r, i) => {
    const s = candidates[i];
    if (r && r.error) {
      out.push(Object.assign({
        id: derivedId(crypto, 'policy_error', p.id, s.id, s.seq, ...tag), seq: 0,
        entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
        parent_id: p.id, related_to: [p.id, s.id], error: { code: 'guest_error', message: String(r.error.message || r.error) },
        metadata: { policy_id: p.id, policy_seq: p.seq, spans: [`${s.id}/${s.seq}`], expiry: again || undefined },
      }, baseFor(p, s)));
      return;
    }
    ((r && r.actions) || []).forEach((a, j) => {
      const id = derivedId(crypto, 'action', p.id, s.id, s.seq, j);
      const before = out.length;
      if (a && a.run === 'run_code' && a.span_id) {
        out.push(Object.assign({
          id, seq: 0, entity_type: 'request', who: 'edge:policy_agent', did: 'triggered', this: 'run_code',
          status: 'scheduled', parent_id: a.span_id, related_to: [p.id, a.span_id],
          trace_id: s.trace_id || crypto.randomUUID(), input: a.input === undefined ? null : a.input,
          metadata: { policy_id: p.id, trigger_span: s.id },
        }, baseFor(p, s)));
      } else if (a && a.emit_span && typeof a.emit_span === 'object') {
        const e = Object.assign({}, baseFor(p, s), a.emit_span);
        e.id = e.id || id;
        e.seq = e.seq || 0;
        delete e.tenant_id; // always the policy's tenant
        out.push(e);
      } else {
        console.warn(`policy ${p.id}: span ${s.id}: unknown action ${JSON.stringify(a)}`);
      }
      if (out.length > before) actionOf.set(out[out.length - 1], { s, j, again });
    });
  });
}

// advance is the policy's cursor moved past rows (none: where it was) and
// its expiry window moved to `to`.
function advance(cursor, cursorId, p, rows, to) {
  const last = rows[rows.length - 1];
  const m = (cursor && cursor.metadata) || {};
  return nextVersion(cursor, {
    id: cursorId, entity_type: 'policy_cursor', who: 'edge:policy_agent', did: 'advanced', this: 'cursor',
    status: 'active', owner_id: 'edge:policy_agent', visibility: 'tenant', related_to: [p.id],
    metadata: {
      cursor: last ? cursorOf(last) : m.cursor, policy_id: p.id, last_at: last ? last.at : m.last_at,
      expiry_cursor: to.at || undefined, expiry_cursor_id: to.at && to.id !== MAX_UUID ? to.id : undefined,
    },
  });
}

// Expiry keys are (at, id): at is an ISO time with six fractional digits in
// UTC ("" before every time), so keys compare as strings; MAX_UUID after an
// `at` means all of that instant.
const MAX_UUID = 'ffffffff-ffff-ffff-ffff-ffffffffffff';

function keyAfter(a, b) {
  return a.at !== b.at ? a.at > b.at : a.id > b.id;
}

// expiryCut is the window's end for a pass whose clock is now: 2 ms before
// it, truncated to the millisecond (see the top).
function expiryCut(now) {
  return new Date(Date.parse(String(now).slice(0, 23) + 'Z') - 2).toISOString().replace('Z', '000Z');
}

// expiryFrom is where a policy's window starts: nothing is behind a new
// cursor, and a cursor from before expiries were judged starts from the
// beginning.
function expiryFrom(cursor, cut) {
  if (!cursor) return { at: cut, id: MAX_UUID };
  const m = cursor.metadata || {};
  if (!m.expiry_cursor) return { at: '', id: '' };
  return { at: String(m.expiry_cursor), id: String(m.expiry_cursor_id || MAX_UUID) };
}

// behind tells whether a row's position is at or before a cursor's.
function behind(r, cursor) {
  const c = parseCursor(cursor);
  const tx = BigInt(r.cursor_tx), at = BigInt(c.tx);
  return tx < at || (tx === at && BigInt(r.ord) <= BigInt(c.ord));
}

// eligible tells whether policy p, whose cursor is cursor, judges the span
// of key k again at its expiry.
function eligible(k, p, cursor) {
  return !!cursor && k.has_ttl && !INTERNAL_TYPES.includes(k.entity_type) && k.id !== p.id &&
    behind(k, cursor.metadata && cursor.metadata.cursor);
}

// expiries reads the page of expiries after the earliest window start, up
// to cut: the keys (small: a page never truncates), then the spans that
// some policy will judge again. A page of `limit` keys is full (its end is
// its last key); spans past the byte cap are read on the next pass.
async function expiries(sql, tenant, policies, cursors, froms, cut, limit) {
  const none = { keys: [], spans: new Map(), full: false, more: false };
  const lo = froms.reduce((a, b) => (keyAfter(a, b) ? b : a), { at: cut, id: MAX_UUID });
  if (!keyAfter({ at: cut, id: MAX_UUID }, lo)) return none;
  const { rows: keys } = await sql(`SELECT id, seq, entity_type, metadata ? 'ttl_minutes' AS has_ttl, ord,
      tx_id::text AS cursor_tx, to_char(timezone('UTC', expires_at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expiry
    FROM (SELECT id AS head_id, seq AS head_seq, expires_at FROM ledger.heads
      WHERE tenant_id = $1 AND expires_at IS NOT NULL
        AND (expires_at, id) > ($2::timestamptz, $3::uuid) AND expires_at <= $4::timestamptz
      ORDER BY expires_at, id LIMIT $5) x
    JOIN ledger.universal_registry ON id = head_id AND seq = head_seq
    ORDER BY expires_at, id`, [tenant, lo.at || '-infinity', lo.id || '00000000-0000-0000-0000-000000000000', cut, limit]);
  if (!keys.length) return none;
  for (const k of keys) k.at = k.expiry;
  const wanted = keys.filter((k) => policies.some((p, i) => keyAfter(k, froms[i]) && eligible(k, p, cursors[i])));
  const full = keys.length === limit;
  const page = { keys, spans: new Map(), full, end: keys[keys.length - 1], more: full };
  if (!wanted.length) return page;
  const { rows, truncated } = await sql(`SELECT ${SPAN_COLUMNS}
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS w(k, n)
    JOIN ledger.universal_registry ON id = (k ->> 0)::uuid AND seq = (k ->> 1)::int
    ORDER BY n`, [JSON.stringify(wanted.map((k) => [k.id, k.seq]))]);
  for (const s of rows) page.spans.set(`${s.id}/${s.seq}`, s);
  if (truncated) page.more = true;
  return page;
}

// dueFor is policy p's share of the page: the spans it judges again, and
// where its window then ends — the page's end (its cut when not full), or
// just before a span the page could not read.
function dueFor(page, p, cursor, from, cut) {
  const again = [];
  let to = from;
  for (const k of page.keys) {
    if (!keyAfter(k, from)) continue;
    if (eligible(k, p, cursor)) {
      const s = page.spans.get(`${k.id}/${k.seq}`);
      if (!s) return { again, to };
      again.push(s);
    }
    to = k;
  }
  const end = page.full ? page.end : { at: cut, id: MAX_UUID };
  return { again, to: keyAfter(end, to) ? { at: end.at, id: end.id } : to };
}

// unstored drops what a re-judgment emits that is already in the ledger:
// that id at that seq, or a later one (the first judgment took it).
async function unstored(sql, spans) {
  const ids = [...new Set(spans.map((s) => String(s.id).toLowerCase()).filter((id) => UUID.test(id)))];
  if (!ids.length) return spans;
  const { rows } = await sql`SELECT id, seq FROM ledger.heads
    WHERE id IN (SELECT jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb)::uuid)`;
  const head = new Map(rows.map((r) => [r.id, r.seq]));
  return spans.filter((s) => {
    const seq = head.get(String(s.id).toLowerCase());
    return seq === undefined || seq < Number(s.seq || 0);
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
