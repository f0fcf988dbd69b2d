// metrics_exec_duration: one metric span per execution, with its duration,
// status and fuel, for dashboards that read metrics rather than executions.
export default function on(span) {
  if (span.entity_type !== 'execution') return [];
  return [{
    emit_span: {
      entity_type: 'metric', who: 'policy:metrics_exec_duration', did: 'measured', this: 'exec.duration_ms',
      status: 'complete', parent_id: span.id, related_to: [span.id], trace_id: span.trace_id,
      metadata: {
        value: Number(span.duration_ms || 0), unit: 'ms', status: span.status,
        fuel_used: span.metadata?.fuel_used ?? null, function_id: span.parent_id ?? null,
      },
    },
  }];
}
