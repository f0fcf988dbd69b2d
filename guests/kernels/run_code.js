// run_code (seed §3.1): runs function SPAN_ID now, for the tenant the kernel
// is booted for, with the same checks as every request (whitelist, tenant,
// daily quota with the signed force override, slow threshold) and the same
// execution span. It records a request for it first, so the run is
// accounted for like any other and a retry cannot run it twice.
globalThis.default = async function main(ctx) {
  const { sql, lock, insertSpan, crypto, env } = ctx;
  const spanId = env.SPAN_ID;
  if (!spanId) throw new Error('run_code: env SPAN_ID (the function to run) is required');
  const manifest = await latestManifest(sql);
  const allowed = manifest.allowed_boot_ids || [];
  const self = (manifest.kernels || {}).run_code;
  if (self && !allowed.includes(self)) throw new Error('run_code is not allowed by the manifest');
  const fn = (await latestOf(sql, [spanId])).get(spanId);
  if (!fn) throw new Error(`run_code: function ${spanId} not found`);
  if (fn.entity_type !== 'function') throw new Error(`run_code only executes entity_type=function, ${spanId} is a ${fn.entity_type}`);
  // Every lane's lease: the quota is counted exactly, whatever else runs.
  if (!(await lock('request_worker', 120000)) || !(await takeAllLanes(ctx))) {
    throw new Error('run_code: the request worker of this tenant is busy; retry');
  }
  const req = await insertSpan({
    id: env.REQUEST_ID || crypto.randomUUID(), seq: 0, entity_type: 'request', who: 'edge:run_code', did: 'requested',
    this: 'run_code', status: 'scheduled', parent_id: fn.id, related_to: [fn.id], owner_id: fn.owner_id,
    visibility: fn.visibility || 'private', trace_id: fn.trace_id || crypto.randomUUID(),
    input: fn.input === undefined ? null : fn.input,
  });
  return runRequests(ctx, [req], 0, true);
};
