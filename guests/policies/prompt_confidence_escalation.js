// prompt_confidence_escalation (seed §5): a prompt_run whose confidence is
// below the manifest's prompt.confidence_threshold, or whose answer broke
// its output contract, opens a human_review linked to the run (the run
// carries the threshold it ran under). An insufficient-evidence answer is
// the contract's own way out, not a reason to escalate.
export default function on(span) {
  if (span.entity_type !== 'prompt_run' || span.seq !== 0) return [];
  const o = span.output || {};
  const m = span.metadata || {};
  const th = m.thresholds || {};
  const threshold = typeof th.confidence === 'number' ? th.confidence : 0.6;
  const low = typeof o.confidence === 'number' && !o.insufficient_evidence && o.confidence < threshold;
  const broke = !!(span.error && span.error.code === 'contract_violation');
  if (!low && !broke) return [];
  return [{
    emit_span: {
      entity_type: 'human_review', who: 'policy:prompt_confidence_escalation', did: 'escalated', this: 'prompt.review',
      status: 'open', name: m.family || null, parent_id: span.id, related_to: [span.id, m.variant_id].filter(Boolean),
      trace_id: span.trace_id, visibility: 'tenant', // for the tenant's reviewers; the run itself stays as private as it was
      metadata: {
        reason: broke ? 'contract_violation' : 'low_confidence', confidence: typeof o.confidence === 'number' ? o.confidence : null,
        threshold, variant_id: m.variant_id, compiled_hash: m.compiled_hash, family: m.family,
        contract_errors: (o.contract && o.contract.errors) || [],
      },
    },
  }];
}
