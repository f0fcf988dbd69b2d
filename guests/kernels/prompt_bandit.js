// prompt_bandit (seed §4.4): decides a family's traffic by Thompson
// sampling over its variants, from the evidence of the last WINDOW_DAYS
// (eval runs of each variant's current build, runs that kept or broke the
// contract, escalations, feedback), and appends the decision (priors,
// posteriors, the seed it sampled with, the weights) and the family's
// routing, which the runner follows when no variant is named. A variant
// with no passing eval of its current compiled_hash gets no traffic.
//   env PROMPT_FAMILY
//   env WINDOW_DAYS   optional, default 1
//   env SEED          optional uint32: replays a recorded decision
//   env USER_ID       who asks
globalThis.default = async function main(ctx) {
  if (!ctx.env.TENANT) throw new Error('prompt_bandit: env TENANT (the tenant it works for) is required');
  const { sql, insertSpan, env } = ctx;
  const family = env.PROMPT_FAMILY;
  if (!family) throw new Error('prompt_bandit: env PROMPT_FAMILY is required');
  const windowDays = env.WINDOW_DAYS === undefined ? 1 : Number(env.WINDOW_DAYS);
  if (!(windowDays > 0 && windowDays <= 366)) throw new Error(`prompt_bandit: env WINDOW_DAYS ${JSON.stringify(env.WINDOW_DAYS)} must be a number of days in (0, 366]`);
  let seed;
  if (env.SEED !== undefined) {
    seed = Number(env.SEED);
    if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff)) throw new Error(`prompt_bandit: env SEED ${JSON.stringify(env.SEED)} must be an integer 0-4294967295`);
  }
  const cfg = promptConfig(await latestManifest(sql));
  let res;
  try {
    res = await bandit(ctx, env.TENANT, family, { cfg, window_days: windowDays, seed, owner_id: env.USER_ID });
  } catch (e) {
    if (e.code) throw new Error(`prompt_bandit: ${e.code}: ${e.message}`);
    throw e;
  }
  await insertSpan({ spans: [res.decision, res.route], result: 'refs' });
  return res.summary;
};
