// slow_exec: an execution that took longer than the slow threshold gets a
// status_patch "slow". run_code marks its own executions at once (with the
// manifest's policy.slow_ms), so this catches the others (logline run, exec
// by other kernels) with the seed's default threshold.
const SLOW_MS = 5000;

export default function on(span) {
  if (span.entity_type !== 'execution' || span.who === 'edge:run_code') return [];
  if (span.status !== 'complete' || !(Number(span.duration_ms) > SLOW_MS)) return [];
  return [{
    emit_span: {
      entity_type: 'status_patch', who: 'policy:slow_exec', did: 'labeled', this: 'status=slow',
      status: 'complete', parent_id: span.id, related_to: [span.id],
      metadata: { status: 'slow', duration_ms: span.duration_ms, threshold_ms: SLOW_MS },
    },
  }];
}
