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
  const { sql, insertSpan, http, crypto, env } = ctx;
  const providerId = env.PROVIDER_ID;
  if (!providerId) throw new Error('provider_exec: env PROVIDER_ID is required');
  let payload;
  try { payload = JSON.parse(env.PROVIDER_PAYLOAD || '{}'); }
  catch (e) { throw new Error(`provider_exec: PROVIDER_PAYLOAD is not JSON: ${e.message}`); }
  const prov = (await latestOf(sql, [providerId])).get(providerId);
  if (!prov || prov.entity_type !== 'provider') throw new Error(`provider_exec: provider ${providerId} not found`);
  const meta = prov.metadata || {};
  const base = String(meta.base_url || '').replace(/\/+$/, '');
  const api = meta.api || (base.includes('11434') ? 'ollama' : 'openai');
  const model = payload.model || meta.model;
  const req = { method: 'POST', headers: { 'content-type': 'application/json' }, timeout_ms: meta.timeout_ms };
  if (api === 'openai') {
    req.url = `${base}/chat/completions`;
    req.body = JSON.stringify({ model, messages: payload.messages || [], temperature: payload.temperature === undefined ? 0.2 : payload.temperature });
    if (meta.auth_env) req.auth_env = meta.auth_env;
  } else if (api === 'ollama') {
    req.url = `${base}/api/chat`;
    req.body = JSON.stringify({ model: model || 'llama3', messages: payload.messages || [], stream: false });
  } else {
    throw new Error(`provider_exec: unsupported api ${api}`);
  }

  // The guest's clock stands still during a run: the host measures the call.
  let output = null, error = null, usage = {}, latency = 0;
  try {
    const res = await http(req);
    latency = res.duration_ms;
    if (res.status < 200 || res.status >= 300) {
      error = { code: 'provider_error', message: `${api} answered HTTP ${res.status}: ${String(res.body).slice(0, 500)}` };
    } else {
      output = JSON.parse(res.body);
      if (api === 'openai' && output.usage) {
        usage = { prompt_tokens: output.usage.prompt_tokens, completion_tokens: output.usage.completion_tokens, total_tokens: output.usage.total_tokens };
      } else if (api === 'ollama') {
        usage = { prompt_tokens: output.prompt_eval_count, completion_tokens: output.eval_count,
          total_tokens: (output.prompt_eval_count || 0) + (output.eval_count || 0) };
      }
    }
  } catch (e) {
    error = { code: e.code === 'timeout' ? 'timeout' : 'provider_error', message: String(e.message || e) };
  }
  const span = {
    id: crypto.randomUUID(), seq: 0, entity_type: 'provider_execution', who: 'edge:provider_exec', did: 'called',
    this: 'provider.exec', status: error ? 'error' : 'complete', input: payload, output: error ? null : output, error,
    duration_ms: latency, owner_id: prov.owner_id, visibility: prov.visibility || 'private',
    related_to: [prov.id], trace_id: env.TRACE_ID || crypto.randomUUID(),
    metadata: Object.assign({ provider_id: prov.id, api, model: (output && output.model) || model, latency_ms: latency }, usage),
  };
  const stored = await insertSpan(span);
  if (error) throw new Error(`provider_exec: ${error.message}`);
  return { provider_execution: stored.id, model: span.metadata.model, latency_ms: latency, usage };
};
