// prompt_worker: the engine's loop of the prompt system, for the tenant it
// is booted for (env TENANT).
//   - Runs the tenant's open prompt_requests (POST /api/prompts/run), oldest
//     first, a batch per pass: each run's spans are derived from its
//     request, so two engines never record one twice, and all of a pass is
//     appended together. A request that cannot run (an unknown variant, a
//     family without routing, a provider error) is closed as failed with
//     why; it never holds up the ones behind it.
//   - Runs the schedules (seed §10) of the manifest's prompt section: an
//     eval per variant and card of a family (eval_schedule, nightly by
//     default) and a bandit decision per family (bandit_schedule, daily),
//     for the families the tenant has variants or routing of. The span of a
//     scheduled job has an id derived from (tenant, job, tick): exactly once
//     across engines, one job per pass.
globalThis.default = async function main(ctx) {
  const { sql, lock, env } = ctx;
  const tenant = env.TENANT;
  if (!tenant) throw new Error('prompt_worker: env TENANT is required');
  if (!(await lock('prompt_worker', 120000))) return { busy: true };
  const manifest = await latestManifest(sql);
  const cfg = promptConfig(manifest);
  // A run costs ~3M fuel (JSON of the request and the answer, the
  // contract, three spans): 16 stay well inside one pass's 200M.
  const batch = Math.max(1, Math.min(Number(env.BATCH || 16), 16));
  const { rows } = await sql(`SELECT ur.id, ur.seq, ur.parent_id, ur.related_to, ur.owner_id, ur.tenant_id, ur.visibility,
      ur.trace_id, ur.input, ur.metadata
    FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
    WHERE h.tenant_id = $1 AND h.entity_type = 'prompt_request' AND h.status = 'scheduled'
    ORDER BY h.ord LIMIT $2`, [tenant, batch]);
  const res = { processed: rows.length };
  if (rows.length) {
    const builds = new Map();
    const out = [];
    for (const r of rows) out.push(...(await runGuarded(ctx, tenant, r, cfg, builds)).out);
    await recordRuns(ctx, out);
    if (rows.length === batch) return Object.assign(res, { more: true });
  }
  let due;
  try {
    due = await dueJobs(ctx, tenant, cfg);
  } catch (e) {
    // The schedules never hold up the requests: a failing pass would put
    // the tenant's prompt_worker in back-off.
    console.error(`prompt_worker: reading the schedules: ${e.message}`);
    return Object.assign(res, { schedule_error: String(e.message) });
  }
  if (!due.length) return res;
  const job = due[0];
  // A job that cannot run (a card or variant that no longer checks, a
  // provider that is gone) is recorded as failed under the job's id, once:
  // it never fails the pass, which would hold up the tenant's requests.
  let spans;
  try {
    if (job.kind === 'eval') {
      const ev = await evaluate(ctx, tenant, job.variant, job.card, { cfg, id: job.id, tick: job.tick, trace_id: ctx.crypto.randomUUID() });
      spans = [ev.span];
    } else {
      // The seed derives from the job: a scheduled decision replays too.
      const seed = parseInt(job.id.slice(0, 8), 16);
      const b = await bandit(ctx, tenant, job.family, { cfg, window_days: 1, seed, id: job.id, tick: job.tick });
      spans = [b.decision, b.route];
    }
  } catch (e) {
    if (!e.code) throw e;
    spans = [{
      id: job.id, seq: 0, entity_type: job.kind === 'eval' ? 'prompt_eval_run' : 'prompt_bandit', who: 'kernel:prompt_worker',
      did: 'failed', this: job.kind === 'eval' ? 'prompt.eval' : 'prompt.bandit', status: 'error', visibility: 'tenant',
      parent_id: job.variant ? job.variant.id : undefined, error: { code: e.code, message: e.message },
      input: { tick: job.tick, family: job.family || (job.variant && job.variant.metadata.family), eval_id: job.card ? job.card.id : undefined },
      metadata: { family: job.family || (job.variant && job.variant.metadata.family), scheduled: true },
    }];
  }
  await ctx.insertSpan({ spans, result: 'refs' });
  return Object.assign(res, { scheduled: job.kind, job: job.id, more: due.length > 1 });
};

// dueJobs lists the scheduled evals and bandit decisions whose latest
// tick has no span yet.
async function dueJobs(ctx, tenant, cfg) {
  const { sql, crypto, now } = ctx;
  const stock = await manifestTenant(sql);
  // Families this tenant serves: its own variants' and those it routes.
  const { rows: fams } = await sql`SELECT DISTINCT ur.metadata->>'family' AS family
    FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
    WHERE h.tenant_id = ${tenant} AND h.entity_type IN ('prompt_variant', 'prompt_routing') AND ur.metadata ? 'family'
    ORDER BY 1`;
  const families = fams.map((r) => r.family).filter(Boolean);
  if (!families.length) return [];
  const t = Date.parse(now());
  const wanted = [];
  const tickOf = (schedule, since) => {
    if (!schedule) return null;
    try {
      const tick = latestTick(String(schedule), t, since);
      return tick === null ? null : new Date(tick).toISOString();
    } catch (e) {
      console.error(`prompt_worker: manifest prompt schedule ${schedule}: ${e.message}`);
      return null;
    }
  };
  const cards = [];
  for (const family of families) cards.push(...(await familyEntities(sql, tenant, stock, 'prompt_eval', family)));
  for (const family of families) {
    const variants = await familyVariants(sql, tenant, family, stock);
    for (const card of cards) {
      if (card.metadata.family !== family) continue;
      for (const v of variants) {
        const tick = tickOf(cfg.eval_schedule, Math.max(Date.parse(v.at || 0) || 0, Date.parse(card.at) || 0));
        if (!tick) continue;
        try { checkVariant(v); checkCard(card); } catch (e) { console.error(`prompt_worker: ${e.message}`); continue; }
        wanted.push({ kind: 'eval', id: derivedId(crypto, 'prompt_eval_run', tenant, v.id, card.id, tick), tick, variant: v, card });
      }
    }
    if (variants.length) {
      const since = Math.min(...variants.map((v) => Date.parse(v.at || 0) || 0));
      const tick = tickOf(cfg.bandit_schedule, since);
      if (tick) wanted.push({ kind: 'bandit', id: derivedId(crypto, 'prompt_bandit', tenant, family, tick), tick, family });
    }
  }
  const have = await existing(sql, wanted.map((w) => w.id));
  // Evals first: a bandit decision wants the night's evidence.
  return wanted.filter((w) => !have.has(w.id)).sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'eval' ? -1 : 1));
}
