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
// A policy may declare what it judges (metadata.judges: entity types, and
// values of status, who, did, this, name; see judgesOf at the end). Its
// candidates are then selected in SQL, a range of ur_idx_tenant_entity per
// declared type, so a pass costs the rows it wants, not the tenant's; its
// cursor moves past what it does not want — to the commit horizon when it
// read every row of its types below it — in the array of what it emits, or,
// when it has nothing to judge, once some span came after it, all such
// cursors of the pass in one append. A declaration that does not check
// (stored before hosts checked them) gets one policy_error per version of
// the policy, which then judges nothing: never "every span". A policy that
// declares nothing judges every span.
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
  // applies to every tenant (global_policies: public, active). Of their
  // metadata only the declaration matters here.
  const { rows: own } = await sql`SELECT id, seq, owner_id, visibility, name,
      CASE WHEN jsonb_typeof(metadata) = 'object' AND metadata ? 'judges'
        THEN jsonb_build_object('judges', metadata -> 'judges') END AS metadata
    FROM ledger.active_policies ORDER BY id`;
  const manifest = await latestManifest(sql);
  const globals = [...(await latestOf(sql, manifest.global_policies || [])).values()]
    .filter((p) => p.entity_type === 'policy' && p.status === 'active' && p.visibility === 'public')
    .map((p) => Object.assign(p, { global: true }));
  const policies = own.concat(globals.filter((g) => !own.some((p) => p.id === g.id)));
  // What each declares it judges: null for every span; a declaration that
  // does not check (an error) stops its policy, below.
  const decls = policies.map((p) => {
    try {
      return judgesOf(p);
    } catch (e) {
      return e;
    }
  });
  const cursorIds = policies.map((p) => derivedId(crypto, 'cursor', 'policy', p.id, tenant));
  const cursors = await latestOf(sql, cursorIds);
  // The expiries due, once for every policy: from the earliest window.
  const cut = expiryCut(now());
  const froms = cursorIds.map((id) => expiryFrom(cursors.get(id), cut));
  const due = await expiries(sql, tenant, policies, decls, cursorIds.map((id) => cursors.get(id)), froms, cut, batch);
  // The tenant's latest span, read once when some policy declares.
  const latest = decls.some((d) => d && !(d instanceof Error)) ? await latestSpan(sql, tenant) : null;
  const idle = []; // declaring policies' cursors moved past what they do not want
  let evaluated = 0, rejudged = 0, actions = 0, policyErrors = 0, more = due.more;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i], cursorId = cursorIds[i], cursor = cursors.get(cursorId), decl = decls[i];
    if (decl instanceof Error) {
      policyErrors += await refuseDeclaration(ctx, p, decl);
      continue;
    }
    const at = cursor && cursor.metadata && cursor.metadata.cursor;
    // The candidates and where the cursor may move past them: a declaring
    // policy's selected in SQL, anyone else's every row after the cursor.
    let spans, to, full;
    if (decl) {
      const sel = await selectJudged(sql, tenant, at, decl, batch);
      spans = sel.spans.filter((r) => r.id !== p.id);
      to = { cursor: sel.to, at: sel.spans.length ? sel.spans[sel.spans.length - 1].at : undefined };
      full = sel.more;
    } else {
      const rows = await rowsAfter(sql, tenant, at, batch);
      spans = rows.filter((r) => !INTERNAL_TYPES.includes(r.entity_type) && r.id !== p.id);
      const last = rows[rows.length - 1];
      to = { cursor: last ? cursorOf(last) : undefined, at: last ? last.at : undefined };
      full = rows.length === batch;
    }
    if (full) more = true;
    const { again, to: expiryTo } = dueFor(due, p, decl, cursor, froms[i], cut);
    const moved = keyAfter(expiryTo, froms[i]);
    // Nothing to evaluate. The cursor moves past internal rows only when
    // they fill a whole batch (else a cursor written for them would itself
    // be new, and the next pass would write another, for ever), and past
    // expiries only when a full page of them went by. A declaring policy's
    // moves past spans it does not want when some came after it (the
    // tenant's latest span is past it: never for its own bookkeeping),
    // with the others' in one append.
    if (!spans.length && !again.length) {
      if (decl) {
        if (full || (due.full && moved) || (latest && to.cursor && after(latest, at) && after(parseCursor(to.cursor), at))) {
          idle.push(advance(cursor, cursorId, p, to, expiryTo));
        }
      } else if (full || (due.full && moved)) {
        await insertSpan(advance(cursor, cursorId, p, to, expiryTo));
      }
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
    out.push(advance(cursor, cursorId, p, to, expiryTo));
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
  if (idle.length) await insertSpan({ spans: idle, result: 'refs' });
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

// advance is the policy's cursor moved to position to ({cursor, at}: where,
// and the at of the last span passed; undefined: where it was) and its
// expiry window moved to expiryTo.
function advance(cursor, cursorId, p, to, expiryTo) {
  const m = (cursor && cursor.metadata) || {};
  return nextVersion(cursor, {
    id: cursorId, entity_type: 'policy_cursor', who: 'edge:policy_agent', did: 'advanced', this: 'cursor',
    status: 'active', owner_id: 'edge:policy_agent', visibility: 'tenant', related_to: [p.id],
    metadata: {
      cursor: to.cursor || m.cursor, policy_id: p.id, last_at: to.at || m.last_at,
      expiry_cursor: expiryTo.at || undefined, expiry_cursor_id: expiryTo.at && expiryTo.id !== MAX_UUID ? expiryTo.id : undefined,
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
  return !after({ tx: r.cursor_tx, ord: r.ord }, cursor);
}

// after tells whether position pos ({tx, ord}) is past a cursor's.
function after(pos, cursor) {
  const c = parseCursor(cursor);
  const tx = BigInt(pos.tx), at = BigInt(c.tx);
  return tx > at || (tx === at && BigInt(pos.ord) > BigInt(c.ord));
}

// eligible tells whether policy p, whose declaration is decl and cursor is
// cursor, judges the span of key k again at its expiry: one it judged (one
// it declares it wants, behind its cursor).
function eligible(k, p, decl, cursor) {
  return !!cursor && !(decl instanceof Error) && k.has_ttl && !INTERNAL_TYPES.includes(k.entity_type) && k.id !== p.id &&
    wants(decl, k) && behind(k, cursor.metadata && cursor.metadata.cursor);
}

// expiries reads the page of expiries after the earliest window start, up
// to cut: the keys (small: a page never truncates), then the spans that
// some policy will judge again. A page of `limit` keys is full (its end is
// its last key); spans past the byte cap are read on the next pass.
async function expiries(sql, tenant, policies, decls, cursors, froms, cut, limit) {
  const none = { keys: [], spans: new Map(), full: false, more: false };
  const lo = froms.reduce((a, b) => (keyAfter(a, b) ? b : a), { at: cut, id: MAX_UUID });
  if (!keyAfter({ at: cut, id: MAX_UUID }, lo)) return none;
  const { rows: keys } = await sql(`SELECT id, seq, entity_type, status, who, did, "this", name, metadata ? 'ttl_minutes' AS has_ttl, ord,
      tx_id::text AS cursor_tx, to_char(timezone('UTC', expires_at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expiry
    FROM (SELECT id AS head_id, seq AS head_seq, expires_at FROM ledger.heads
      WHERE tenant_id = $1 AND expires_at IS NOT NULL
        AND (expires_at, id) > ($2::timestamptz, $3::uuid) AND expires_at <= $4::timestamptz
      ORDER BY expires_at, id LIMIT $5) x
    JOIN ledger.universal_registry ON id = head_id AND seq = head_seq
    ORDER BY expires_at, id`, [tenant, lo.at || '-infinity', lo.id || '00000000-0000-0000-0000-000000000000', cut, limit]);
  if (!keys.length) return none;
  for (const k of keys) k.at = k.expiry;
  const wanted = keys.filter((k) => policies.some((p, i) => keyAfter(k, froms[i]) && eligible(k, p, decls[i], cursors[i])));
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
function dueFor(page, p, decl, cursor, from, cut) {
  const again = [];
  let to = from;
  for (const k of page.keys) {
    if (!keyAfter(k, from)) continue;
    if (eligible(k, p, decl, cursor)) {
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

// Declarations. A policy span may say what it judges in metadata.judges:
// {entity_types: [...], where: {field: value | [values], ...}}, checked by
// the host when the span is appended (host/span/judges.go; the same rules
// here, for a span a host stored before it checked them). Such a policy is
// shown only the spans of those types whose fields hold those values,
// selected in SQL (selectJudged), and judges them again at expiry only if
// they still do (eligible).
const JUDGE_FIELDS = ['status', 'who', 'did', 'this', 'name'];
const MAX_JUDGED_TYPES = 16, MAX_JUDGED_VALUES = 32, MAX_SHORT_TEXT = 256;

// judgesOf is policy p's declaration, {types, where: [[field, values], ...]},
// or null when it declares nothing (it judges every span). A declaration
// that does not check throws an Error whose field names what is wrong.
function judgesOf(p) {
  const m = p.metadata;
  if (!isObject(m) || !Object.prototype.hasOwnProperty.call(m, 'judges')) return null;
  const at = 'metadata.judges';
  const j = m.judges;
  if (!isObject(j)) badDeclaration(at, `must be an object {"entity_types": [...], "where": {...}}, got ${short(j)}`);
  for (const k of Object.keys(j).sort()) {
    if (k !== 'entity_types' && k !== 'where') badDeclaration(`${at}.${k}`, 'is not part of a declaration (want entity_types and, optionally, where)');
  }
  if (!('entity_types' in j)) badDeclaration(`${at}.entity_types`, 'is required: the entity types the policy judges');
  const types = valueList(`${at}.entity_types`, j.entity_types, MAX_JUDGED_TYPES);
  types.forEach((t, i) => {
    const f = `${at}.entity_types[${i}]`;
    if (!/^[a-z0-9_.:-]{1,64}$/.test(t)) badDeclaration(f, `must be 1-64 characters of [a-z0-9_.:-], got ${short(t)}`);
    if (INTERNAL_TYPES.includes(t)) badDeclaration(f, `${t} is the engine's bookkeeping, which no policy judges`);
    if (types.indexOf(t) < i) badDeclaration(f, `${t} is listed twice`);
  });
  const where = [];
  if ('where' in j) {
    if (!isObject(j.where)) badDeclaration(`${at}.where`, `must be an object of field: value or [values], got ${short(j.where)}`);
    const keys = Object.keys(j.where).sort();
    if (!keys.length) badDeclaration(`${at}.where`, 'must name at least one field (or be left out)');
    for (const k of keys) {
      const f = `${at}.where.${k}`;
      if (!JUDGE_FIELDS.includes(k)) badDeclaration(f, `is not a field a declaration filters on (want one of ${JUDGE_FIELDS.join(', ')})`);
      const v = j.where[k];
      if (typeof v !== 'string') {
        where.push([k, valueList(f, v, MAX_JUDGED_VALUES)]);
        continue;
      }
      if (!v) badDeclaration(f, 'must be a non-empty string or a list of them');
      if (utf8Length(v) > MAX_SHORT_TEXT) badDeclaration(f, `is ${utf8Length(v)} bytes, more than the limit of ${MAX_SHORT_TEXT}`);
      where.push([k, [v]]);
    }
  }
  return { types, where };
}

function valueList(field, v, limit) {
  if (!Array.isArray(v)) badDeclaration(field, `must be a list of strings, got ${short(v)}`);
  if (!v.length) badDeclaration(field, 'must not be empty (a policy that judges nothing has no use)');
  if (v.length > limit) badDeclaration(field, `lists ${v.length} values, at most ${limit}`);
  v.forEach((x, i) => {
    if (typeof x !== 'string' || !x) badDeclaration(`${field}[${i}]`, `must be a non-empty string, got ${short(x)}`);
    if (utf8Length(x) > MAX_SHORT_TEXT) badDeclaration(`${field}[${i}]`, `is ${utf8Length(x)} bytes, more than the limit of ${MAX_SHORT_TEXT}`);
  });
  return v.slice();
}

function badDeclaration(field, why) {
  const e = new Error(`${field}: ${why}`);
  e.field = field;
  throw e;
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function short(v) {
  const s = v === undefined ? 'undefined' : JSON.stringify(v);
  return s.length > 40 ? s.slice(0, 40) + '...' : s;
}

function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

// wants tells whether a declaration (null: every span) wants span s.
function wants(decl, s) {
  return !decl || (decl.types.includes(s.entity_type) && decl.where.every(([f, vals]) => vals.includes(s[f])));
}

// selectJudged reads a declaring policy's candidates: the tenant's spans
// after its cursor and below the commit horizon (rows are read only below
// the oldest running transaction, so a late commit never lands behind a
// cursor), of its declared types, with where tested in SQL. Each type is a
// range of ur_idx_tenant_entity (tenant_id, entity_type, tx_id, ord) of at
// most `limit` rows, and only the rows where holds for are read whole: a
// pass costs the declared types' rows, never the tenant's others.
//
// It returns the wanted spans in commit order (at most limit) and where
// the cursor may move: when no range was full, the batch not cut and the
// answer not truncated, every row of those types below the horizon was
// read, so to the horizon itself ("H.0": ord starts at 1, so the next read
// starts at the horizon's first row); else to the last row read that
// every range covers, and more.
async function selectJudged(sql, tenant, cursor, decl, limit) {
  const c = parseCursor(cursor);
  const params = [tenant, c.tx, c.ord, limit];
  const tests = decl.where.map(([f, vals]) => {
    params.push(JSON.stringify(vals));
    return `$${params.length}::jsonb ? ${f === 'this' ? '"this"' : f}`;
  });
  const wanted = tests.length ? `coalesce(${tests.join(' AND ')}, false)` : 'true';
  const ranges = decl.types.map((t) => {
    params.push(t);
    return `(SELECT id, seq, entity_type, tx_id, ord, ${wanted} AS wanted FROM ledger.universal_registry
      WHERE tenant_id = $1 AND entity_type = $${params.length} AND (tx_id, ord) > ($2::xid8, $3::bigint)
        AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY tx_id, ord LIMIT $4)`;
  });
  const { rows, truncated } = await sql(`SELECT h.horizon, s.entity_type AS range_type, s.tx_id::text AS range_tx,
      s.ord AS range_ord, s.wanted, r.*
    FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon) h
    LEFT JOIN (${ranges.join('\n    UNION ALL ')}) s ON true
    LEFT JOIN LATERAL (SELECT ${SPAN_COLUMNS}, ord, tx_id::text AS cursor_tx FROM ledger.universal_registry u
      WHERE s.wanted AND u.id = s.id AND u.seq = s.seq) r ON true
    ORDER BY s.tx_id, s.ord`, params);
  if (!rows.length) return { spans: [], to: undefined, more: false }; // one span over the answer's byte cap: stuck, as rowsAfter
  const read = rows.filter((r) => r.range_tx !== null);
  const pos = (r) => ({ tx: r.range_tx, ord: r.range_ord });
  // The last position every range covers: a full range's last row, or the
  // last row of an answer cut short.
  let bound = truncated && read.length ? pos(read[read.length - 1]) : null;
  const counts = new Map();
  for (const r of read) counts.set(r.range_type, (counts.get(r.range_type) || 0) + 1);
  for (const t of decl.types) {
    if (counts.get(t) !== limit) continue;
    const last = read.filter((r) => r.range_type === t).pop();
    if (!bound || after(bound, `${last.range_tx}.${last.range_ord}`)) bound = pos(last);
  }
  const spans = [];
  let passed = null, cut = !!bound;
  for (const r of read) {
    if (bound && after(pos(r), `${bound.tx}.${bound.ord}`)) break;
    if (r.wanted && !INTERNAL_TYPES.includes(r.entity_type)) {
      if (spans.length === limit) {
        cut = true;
        break;
      }
      const { horizon, range_type, range_tx, range_ord, wanted, ...span } = r;
      spans.push(span);
    }
    passed = r;
  }
  if (!cut) return { spans, to: `${rows[0].horizon}.0`, more: false };
  return { spans, to: passed ? `${passed.range_tx}.${passed.range_ord}` : undefined, more: true };
}

// latestSpan is the position ({tx, ord}) of the tenant's latest span below
// the commit horizon that is not bookkeeping, or null: a backward step of
// ur_idx_tenant_cursor past the cursors the last pass wrote.
async function latestSpan(sql, tenant) {
  const { rows } = await sql(`SELECT tx_id::text AS cursor_tx, ord FROM ledger.universal_registry
    WHERE tenant_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
      AND entity_type NOT IN (SELECT jsonb_array_elements_text($2::jsonb))
    ORDER BY tx_id DESC, ord DESC LIMIT 1`, [tenant, JSON.stringify(INTERNAL_TYPES)]);
  return rows.length ? { tx: rows[0].cursor_tx, ord: rows[0].ord } : null;
}

// refuseDeclaration records, once per version of policy p, that its
// declaration does not check (err names the field), and reports how many
// policy_errors it appended. The policy judges nothing until a version that
// checks: read as "every span", it would do what its author ruled out.
async function refuseDeclaration(ctx, p, err) {
  const { sql, insertSpan, crypto } = ctx;
  const id = derivedId(crypto, 'policy_error', p.id, p.seq, 'judges');
  if ((await existing(sql, [id])).size) return 0;
  await insertSpan({
    id, seq: 0, entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy',
    status: 'error', parent_id: p.id, related_to: [p.id], owner_id: 'edge:policy_agent', visibility: 'tenant',
    error: { code: 'invalid_input', message: `policy ${p.id} seq ${p.seq}: ${err.message}`, field: err.field },
    metadata: { policy_id: p.id, policy_seq: p.seq, field: err.field },
  });
  return 1;
}
