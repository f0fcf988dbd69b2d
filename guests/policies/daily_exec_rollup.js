// daily_exec_rollup: counts executions per UTC day, owner and status. A
// policy sees one span at a time, so it emits one increment per execution
// (metric exec.daily, count 1) keyed by day/owner/status; the day's totals
// are a sum over those metrics (GET /api/metrics does it).
export default function on(span) {
  if (span.entity_type !== 'execution') return [];
  const day = String(span.at || span.when || '').slice(0, 10);
  return [{
    emit_span: {
      entity_type: 'metric', who: 'policy:daily_exec_rollup', did: 'counted', this: 'exec.daily',
      status: 'complete', parent_id: span.id, related_to: [span.id],
      metadata: { day, owner_id: span.owner_id, status: span.status, count: 1 },
    },
  }];
}
