// prompt_eval (seed §4.3): runs the eval card EVAL_ID against variant
// VARIANT_ID — every fixture (happy or stress) REPEATS times, each an
// uncached provider call judged by the fixture's assertions — and records
// one prompt_eval_run: per fixture and repeat pass/fail with the failing
// assertion and why, pass@k and pass^k, totals per kind, tied to the
// variant, compiled_hash and model.
//   env VARIANT_ID, EVAL_ID
//   env PROVIDER_ID   optional (the card's, then the variant's provider_id)
//   env REPEATS       optional (the card's metadata.repeats, else 3)
//   env USER_ID       who asks
globalThis.default = async function main(ctx) {
  if (!ctx.env.TENANT) throw new Error('prompt_eval: env TENANT (the tenant it works for) is required');
  const { sql, insertSpan, env, crypto } = ctx;
  if (!env.VARIANT_ID || !env.EVAL_ID) throw new Error('prompt_eval: env VARIANT_ID and EVAL_ID are required');
  const repeats = env.REPEATS === undefined ? undefined : Number(env.REPEATS);
  if (repeats !== undefined && !(Number.isInteger(repeats) && repeats >= 1 && repeats <= 100)) {
    throw new Error(`prompt_eval: env REPEATS ${JSON.stringify(env.REPEATS)} must be an integer 1-100`);
  }
  const cfg = promptConfig(await latestManifest(sql));
  let res;
  try {
    const v = await readVariant(sql, env.VARIANT_ID);
    const card = await readCard(sql, env.EVAL_ID);
    res = await evaluate(ctx, env.TENANT, v, card, { cfg, repeats, provider_id: env.PROVIDER_ID, id: crypto.randomUUID(),
      owner_id: env.USER_ID, trace_id: env.TRACE_ID || crypto.randomUUID() });
  } catch (e) {
    if (e.code) throw new Error(`prompt_eval: ${e.code}: ${e.message}`);
    throw e;
  }
  await insertSpan({ spans: [res.span], result: 'refs' });
  return Object.assign({ prompt_eval_run: res.span.id }, res.summary);
};
