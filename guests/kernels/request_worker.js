// request_worker (seed §3.3): runs the open requests of the tenant it is
// booted for, oldest first, a batch per pass. The engine boots it per tenant
// whenever requests are open (heads index: O(open requests)).
globalThis.default = async function main(ctx) {
  const { sql, lock, env } = ctx;
  if (!(await lock('request_worker', 120000))) return { busy: true };
  const batch = Math.max(1, Math.min(Number(env.BATCH || 25), 30));
  const { rows } = await sql`SELECT * FROM ledger.open_requests ORDER BY ord LIMIT ${batch}`;
  const res = await runRequests(ctx, rows);
  res.more = rows.length === batch; // a full batch: the engine runs another pass
  return res;
};
