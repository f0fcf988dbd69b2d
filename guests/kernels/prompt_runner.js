// prompt_runner (seed §4.2): runs a prompt once — a prompt_request, then
// the provider call through the same path as provider_exec, the answer
// read against the variant's output contract, and a prompt_run with its
// telemetry (compiled_hash, model, tokens, latency, finish reason, trace,
// OpenTelemetry GenAI attributes), all appended together.
//   env VARIANT_ID | PROMPT_FAMILY  what to run (a family follows its routing)
//   env PROVIDER_ID                 optional: the variant's provider_id otherwise
//   env USER_INPUT, CONTEXT_TEXT    the slots
//   env REQUEST_ID, TRACE_ID        optional
//   env USER_ID                     who asks (the CLI's principal): owns the request and run
// Bad input is refused before anything is written. The API's POST
// /api/prompts/run records a prompt_request that the engine's prompt_worker
// runs the same way.
globalThis.default = async function main(ctx) {
  if (!ctx.env.TENANT) throw new Error('prompt_runner: env TENANT (the tenant it works for) is required');
  const { sql, env } = ctx;
  const tenant = env.TENANT;
  const input = { user_input: env.USER_INPUT || '', context: env.CONTEXT_TEXT || '' };
  if (env.VARIANT_ID) input.variant_id = env.VARIANT_ID;
  else if (env.PROMPT_FAMILY) input.family = env.PROMPT_FAMILY;
  else throw new Error('prompt_runner: env VARIANT_ID or PROMPT_FAMILY is required');
  if (env.PROVIDER_ID) input.provider_id = env.PROVIDER_ID;
  const cfg = promptConfig(await latestManifest(sql));
  let pre;
  try {
    const resolved = await resolveVariant(ctx, tenant, input);
    const v = resolved.variant;
    pre = { resolved, prov: await readProvider(sql, input.provider_id || v.metadata.provider_id, `prompt_variant ${v.id}`) };
  } catch (e) {
    if (e.code) throw new Error(`prompt_runner: ${e.code}: ${e.message}`);
    throw e;
  }
  // The request and everything that records its run, appended together:
  // its seq 0 ("running") and its closing version in one array.
  const req = newRequest(ctx, env, input);
  const res = await runGuarded(ctx, tenant, Object.assign({ tenant_id: tenant }, req), cfg, new Map(), pre);
  await recordRuns(ctx, [req, ...res.out]);
  return { prompt_run: res.runId, request_id: req.id, status: res.status,
    variant_id: res.variant ? res.variant.id : null, compiled_hash: res.build ? res.build.compiled_hash : null,
    output: res.run ? res.run.output : null, error: res.error };
};
