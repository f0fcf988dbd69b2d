// prompt_circuit_breaker (seed §5): a prompt_run that shows tool-call spam
// (more tool calls than the manifest's prompt.max_tool_calls) or an error
// burst (prompt.error_burst failed runs of its variant within
// burst_window_minutes) injects a temporary anti-spam prompt_block for that
// variant, with ttl_minutes: the next build includes it, the ttl_reaper
// archives it when it expires, and the build after that drops it. The run
// carries the evidence and the thresholds it ran under (a policy cannot
// read the manifest). One block per variant and TTL window: its id derives
// from both, so a burst injects one block, not one per run.
const injected = new Set(); // within one batch

export default function on(span) {
  if (span.entity_type !== 'prompt_run' || span.seq !== 0) return [];
  const m = span.metadata || {};
  const ev = m.evidence || {};
  const th = m.thresholds || {};
  if (!m.variant_id || ev.breaker_active) return [];
  const spam = Number(ev.tool_calls) > Number(th.max_tool_calls === undefined ? 3 : th.max_tool_calls);
  const burst = span.status === 'error' && Number(ev.recent_errors) >= Number(th.error_burst === undefined ? 5 : th.error_burst);
  if (!spam && !burst) return [];
  const ttl = Number(th.breaker_ttl_minutes) > 0 ? Number(th.breaker_ttl_minutes) : 30;
  const bucket = Math.floor(Date.parse(span.at) / (ttl * 60000));
  const id = uuidOf(`prompt_circuit_breaker\u0000${span.tenant_id}\u0000${m.variant_id}\u0000${bucket}`);
  if (injected.has(id)) return [];
  injected.add(id);
  return [{
    emit_span: {
      id, entity_type: 'prompt_block', who: 'policy:prompt_circuit_breaker', did: 'injected', this: 'prompt_block',
      status: 'active', name: `circuit_breaker:${m.family || m.variant_id}`, parent_id: span.id,
      related_to: [span.id, m.variant_id], visibility: 'tenant', trace_id: span.trace_id,
      metadata: {
        kind: 'circuit_breaker', priority: 1000, ttl_minutes: ttl, applies_to: { variants: [m.variant_id] },
        reason: spam ? 'tool_call_spam' : 'error_burst', tool_calls: ev.tool_calls, recent_errors: ev.recent_errors,
        text: 'Do not call tools. Answer directly from the context you were given, in the required JSON format, ' +
          'or answer {"error":"Insufficient evidence."} when the context does not contain the answer.',
      },
    },
  }];
}

// uuidOf is a version 8 UUID from the BLAKE3 of s (as the kernels derive ids).
function uuidOf(s) {
  const h = crypto.hex(crypto.blake3(s));
  const variant = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
