// provider_exec (seed §3.5): calls a model provider through the http
// capability and records a provider_execution span with the raw output,
// the model, the latency and the token counts.
//   env PROVIDER_ID       the provider span (entity_type "provider"), whose
//                         metadata says {api: "openai"|"ollama", base_url,
//                         model, auth_env?, timeout_ms?}
//   env PROVIDER_PAYLOAD  JSON {messages, temperature?, model?}
// The API key never enters the guest or a span: the request names the host
// environment variable (auth_env, which the manifest must list in
// provider_secrets) and the host adds the Authorization header itself.
globalThis.default = async function main(ctx) {
  const { sql, insertSpan, crypto, env } = ctx;
  const providerId = env.PROVIDER_ID;
  if (!providerId) throw new Error('provider_exec: env PROVIDER_ID is required');
  let payload;
  try { payload = JSON.parse(env.PROVIDER_PAYLOAD || '{}'); }
  catch (e) { throw new Error(`provider_exec: PROVIDER_PAYLOAD is not JSON: ${e.message}`); }
  const prov = (await latestOf(sql, [providerId])).get(providerId);
  if (!prov || prov.entity_type !== 'provider') throw new Error(`provider_exec: provider ${providerId} not found`);
  const r = await callProvider(ctx, prov, payload);
  const { error, latency, usage, output } = r;
  const span = {
    id: crypto.randomUUID(), seq: 0, entity_type: 'provider_execution', who: 'edge:provider_exec', did: 'called',
    this: 'provider.exec', status: error ? 'error' : 'complete', input: payload, output: error ? null : output, error,
    duration_ms: latency, owner_id: prov.owner_id, visibility: prov.visibility || 'private',
    related_to: [prov.id], trace_id: env.TRACE_ID || crypto.randomUUID(),
    metadata: Object.assign({ provider_id: prov.id, api: r.api, model: r.model, latency_ms: latency }, usage),
  };
  const stored = await insertSpan(span);
  if (error) throw new Error(`provider_exec: ${error.message}`);
  return { provider_execution: stored.id, model: span.metadata.model, latency_ms: latency, usage };
};
