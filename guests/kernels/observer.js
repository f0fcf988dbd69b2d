// observer (seed §3.2): turns scheduled functions into requests, for the
// tenant it is booted for.
//   - A function version with status "scheduled" gets exactly one request,
//     id derived from (function id, seq): seen by a cursor over the tenant's
//     new function spans, so a pass costs what is new, not the history.
//   - A function whose latest version is scheduled with metadata.schedule
//     (cron "m h dom mon dow", with an optional leading seconds field, or
//     "@every 30s|5m|1h") gets one request per tick, id derived from
//     (function id, seq, tick): several engines, one request.
globalThis.default = async function main(ctx) {
  const { sql, lock, insertSpan, now, crypto, env } = ctx;
  const tenant = env.TENANT;
  if (!tenant) throw new Error('observer: env TENANT is required');
  if (!(await lock('observer', 60000))) return { busy: true };
  const out = [];

  // One-shot: new scheduled function versions since the cursor.
  const cursorId = derivedId(crypto, 'cursor', 'observer', tenant);
  const cursor = (await latestOf(sql, [cursorId])).get(cursorId);
  const fresh = await rowsAfter(sql, tenant, cursor && cursor.metadata && cursor.metadata.cursor, 100, 'function',
    'id, seq, status, owner_id, visibility, trace_id, input, metadata');
  const wanted = [];
  for (const f of fresh) {
    if (f.status !== 'scheduled' || (f.metadata && f.metadata.schedule)) continue;
    wanted.push({ id: derivedId(crypto, 'request', f.id, f.seq), fn: f, tick: null });
  }

  // Recurring: the latest tick of each cron function.
  const { rows: recurring } = await sql`SELECT * FROM ledger.recurring_functions ORDER BY id`;
  const t = Date.parse(now());
  for (const f of recurring) {
    let tick;
    try { tick = latestTick(String(f.metadata.schedule), t, Date.parse(f.at)); }
    catch (e) { console.error(`observer: function ${f.id}: ${e.message}`); continue; }
    if (tick === null) continue;
    const iso = new Date(tick).toISOString();
    wanted.push({ id: derivedId(crypto, 'request', f.id, f.seq, iso), fn: f, tick: iso });
  }

  const have = await existing(sql, wanted.map((w) => w.id));
  for (const w of wanted) {
    if (have.has(w.id)) continue;
    const f = w.fn;
    out.push({
      id: w.id, seq: 0, entity_type: 'request', who: 'edge:observer', did: 'scheduled', this: 'run_code',
      status: 'scheduled', parent_id: f.id, related_to: [f.id], owner_id: f.owner_id,
      visibility: f.visibility || 'private', trace_id: f.trace_id || crypto.randomUUID(),
      input: f.input === undefined ? null : f.input,
      metadata: w.tick ? { function_seq: f.seq, tick: w.tick } : { function_seq: f.seq },
    });
  }
  if (fresh.length) {
    out.push(nextVersion(cursor, {
      id: cursorId, entity_type: 'engine_cursor', who: 'edge:observer', did: 'advanced', this: 'cursor',
      status: 'active', owner_id: 'edge:observer', visibility: 'tenant',
      metadata: { cursor: cursorOf(fresh[fresh.length - 1]), kernel: 'observer' },
    }));
  }
  if (out.length) await insertSpan({ spans: out, result: 'refs' });
  return { requested: out.filter((s) => s.entity_type === 'request').length, more: fresh.length === 100 };
};
