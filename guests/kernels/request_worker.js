// request_worker (seed §3.3): runs the open requests of the tenant it is
// booted for, oldest first, a batch per pass. The engine boots it per tenant
// whenever requests are open (heads index: O(batch)).
globalThis.default = async function main(ctx) {
  const { sql, lock, env } = ctx;
  if (!(await lock('request_worker', 120000))) return { busy: true };
  const batch = Math.max(1, Math.min(Number(env.BATCH || 25), 30));
  // The oldest open requests: the first entries of the heads index of the
  // tenant's open requests (migrations/004), and only the columns a run
  // needs (every byte of the answer costs fuel to parse).
  const tenant = env.TENANT;
  const { rows } = tenant
    ? await sql`SELECT ur.id, ur.seq, ur."this", ur.parent_id, ur.related_to, ur.owner_id, ur.tenant_id,
          ur.visibility, ur.trace_id, ur.input, ur.metadata
        FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
        WHERE h.tenant_id = ${tenant} AND h.entity_type = 'request' AND h.status = 'scheduled'
        ORDER BY h.ord LIMIT ${batch}`
    : await sql`SELECT * FROM ledger.open_requests ORDER BY ord LIMIT ${batch}`;
  const res = await runRequests(ctx, rows);
  res.more = rows.length === batch; // a full batch: the engine runs another pass
  return res;
};
