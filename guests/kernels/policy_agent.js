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
globalThis.default = async function main(ctx) {
  const { sql, lock, insertSpan, crypto, env, exec } = ctx;
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
  let evaluated = 0, actions = 0, more = false;
  for (const p of policies) {
    const cursorId = derivedId(crypto, 'cursor', 'policy', p.id, tenant);
    const cursor = (await latestOf(sql, [cursorId])).get(cursorId);
    const rows = await rowsAfter(sql, tenant, cursor && cursor.metadata && cursor.metadata.cursor, batch);
    if (rows.length === batch) more = true;
    const spans = rows.filter((r) => !INTERNAL_TYPES.includes(r.entity_type) && r.id !== p.id);
    // Only internal rows: nothing to evaluate. The cursor moves past them
    // only when they fill a whole batch (else a cursor written for them
    // would itself be new, and the next pass would write another, for ever).
    if (!spans.length) {
      if (rows.length === batch) await insertSpan(advance(cursor, cursorId, p, rows));
      continue;
    }
    const candidates = spans.map(({ cursor_tx, ord, ...s }) => Object.assign(s, { when: s.at }));
    // What a policy emits belongs to the policy's owner — or, for a stock
    // policy of the manifest, to the owner of the span it is about, with
    // that span's visibility (never public because the policy is).
    const baseFor = (s) => p.global ? { owner_id: s.owner_id, visibility: s.visibility === 'public' ? 'tenant' : s.visibility }
      : { owner_id: p.owner_id, visibility: p.visibility || 'private' };
    const base = baseFor(candidates[0]);
    const out = [];
    const actionOf = new Map(); // span appended for an action → the action's span and index
    const res = await exec(p.id, { batch: candidates });
    const results = res.status === 'complete' && Array.isArray(res.output) ? res.output : null;
    if (!results || results.length !== candidates.length) {
      const error = res.error || { code: 'guest_error', message: `policy returned ${JSON.stringify(res.output)}, want one result per span` };
      out.push(Object.assign({
        id: derivedId(crypto, 'policy_error', p.id, candidates[0].id, candidates[0].seq), seq: 0,
        entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
        parent_id: p.id, related_to: [p.id], error,
        metadata: { policy_id: p.id, policy_seq: p.seq, spans: candidates.map((s) => `${s.id}/${s.seq}`) },
      }, base));
    } else {
      results.forEach((r, i) => {
        const s = candidates[i];
        if (r && r.error) {
          out.push(Object.assign({
            id: derivedId(crypto, 'policy_error', p.id, s.id, s.seq), seq: 0,
            entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
            parent_id: p.id, related_to: [p.id, s.id], error: { code: 'guest_error', message: String(r.error.message || r.error) },
            metadata: { policy_id: p.id, policy_seq: p.seq, spans: [`${s.id}/${s.seq}`] },
          }, baseFor(s)));
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
            }, baseFor(s)));
          } else if (a && a.emit_span && typeof a.emit_span === 'object') {
            const e = Object.assign({}, baseFor(s), a.emit_span);
            e.id = e.id || id;
            e.seq = e.seq || 0;
            delete e.tenant_id; // always the policy's tenant
            out.push(e);
          } else {
            console.warn(`policy ${p.id}: span ${s.id}: unknown action ${JSON.stringify(a)}`);
          }
          if (out.length > before) actionOf.set(out[out.length - 1], { s, j });
        });
      });
    }
    out.push(advance(cursor, cursorId, p, rows));
    // An action the ledger refuses (a span the policy emitted that is not
    // a valid span, names an id that exists, ...) becomes a policy_error
    // naming it; the other actions and the cursor are appended all the
    // same.
    await appendAll(insertSpan, out, (x, v) => {
      const a = actionOf.get(x);
      if (!a) return undefined;
      return Object.assign({
        id: derivedId(crypto, 'policy_error', p.id, a.s.id, a.s.seq, 'action', a.j), seq: 0,
        entity_type: 'policy_error', who: 'edge:policy_agent', did: 'failed', this: p.name || 'policy', status: 'error',
        parent_id: p.id, related_to: [p.id, a.s.id],
        error: { code: 'invalid_output', message: `action ${a.j} on span ${a.s.id}: the ledger refused what it emits: ${v.message}` },
        metadata: { policy_id: p.id, policy_seq: p.seq, spans: [`${a.s.id}/${a.s.seq}`], action: a.j },
      }, baseFor(a.s));
    });
    evaluated += candidates.length;
    actions += out.length - 1;
  }
  return { evaluated, actions, more };
};

// advance is the policy's cursor moved past rows.
function advance(cursor, cursorId, p, rows) {
  const last = rows[rows.length - 1];
  return nextVersion(cursor, {
    id: cursorId, entity_type: 'policy_cursor', who: 'edge:policy_agent', did: 'advanced', this: 'cursor',
    status: 'active', owner_id: 'edge:policy_agent', visibility: 'tenant', related_to: [p.id],
    metadata: { cursor: cursorOf(last), policy_id: p.id, last_at: last.at },
  });
}
