// request_worker (seed §3.3): runs the open requests of the tenant it is
// booted for, oldest first, a batch per pass. The engine boots it per tenant
// whenever requests are open (heads index: O(batch)), once per lane (env
// LANE of LANES; see runRequests in lib.js).
globalThis.default = async function main(ctx) {
  const { sql, lock, env } = ctx;
  const batch = Math.max(1, Math.min(Number(env.BATCH || 50), MAX_BATCH));
  const lanes = Math.max(1, Math.min(Number(env.LANES || 1), MAX_LANES));
  const lane = Math.max(0, Math.min(Number(env.LANE || 0), lanes - 1));
  const tenant = env.TENANT;
  // The oldest open requests (of one lane, or of all): the first entries of
  // the heads index of the tenant's open requests (migrations/004), and
  // only the columns a run needs (every byte of the answer costs fuel to
  // parse).
  const open = async (ofLane) => (tenant
    ? await sql(`SELECT ur.id, ur.seq, ur."this", ur.parent_id, ur.related_to, ur.owner_id, ur.tenant_id,
          ur.visibility, ur.trace_id, ur.input, ur.metadata
        FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
        WHERE h.tenant_id = $1 AND h.entity_type = 'request' AND h.status = 'scheduled'
          AND ($2 = 1 OR get_byte(uuid_send(h.id), 15) % $2 = $3)
        ORDER BY h.ord LIMIT $4`, [tenant, ofLane ? lanes : 1, lane, batch])
    : await sql`SELECT * FROM ledger.open_requests ORDER BY ord LIMIT ${batch}`).rows;
  const perLane = !!tenant && lanes > 1;

  if (lane > 0) {
    // Near the daily limit lane 0 runs every lane's requests: this lane
    // steps aside without taking its lease, which lane 0 needs.
    if ((await quota(ctx, tenant)).near) return { processed: 0, near: true, more: (await open(true)).length > 0 };
  }
  if (!(await lock(laneLock(lane), 120000))) return { busy: true };
  const rows = await open(perLane);
  let res = await runRequests(ctx, rows, lane, false);
  if (lane === 0 && !res.near && !rows.length && perLane) {
    // Nothing of its own: lane 0 still takes over the others' near the
    // limit.
    res = { processed: 0, near: (await quota(ctx, tenant)).near };
  }
  if (!res.near) {
    res.more = rows.length === batch; // a full batch: the engine runs another pass
    return res;
  }
  if (lane > 0) return { processed: 0, near: true, more: true };
  // Lane 0 near the limit: every lane's lease, then the oldest requests of
  // all lanes, counted exactly.
  if (!(await takeAllLanes(ctx))) return { busy: true, more: true };
  const all = await open(false);
  res = await runRequests(ctx, all, 0, true);
  res.more = all.length === batch;
  return res;
};
