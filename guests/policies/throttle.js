// throttle: a function blocked by the daily quota (a policy_violation from
// run_code) is labeled "throttled", so its owner sees why it did not run.
export default function on(span) {
  if (span.entity_type !== 'policy_violation' || span.this !== 'quota.exec.per_tenant.daily') return [];
  if (!span.parent_id) return [];
  return [{
    emit_span: {
      entity_type: 'status_patch', who: 'policy:throttle', did: 'labeled', this: 'status=throttled',
      status: 'complete', parent_id: span.parent_id, related_to: [span.parent_id, span.id],
      metadata: { status: 'throttled', reason: 'quota_exceeded', limit: span.metadata?.limit ?? null },
    },
  }];
}
