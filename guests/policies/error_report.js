// error_report: an execution that ended in error opens an error_report
// naming the function, the error code and message.
export default function on(span) {
  if (span.entity_type !== 'execution' || span.status !== 'error') return [];
  const err = span.error || {};
  const related = [span.id];
  if (span.parent_id) related.push(span.parent_id);
  return [{
    emit_span: {
      entity_type: 'error_report', who: 'policy:error_report', did: 'opened', this: 'error_report',
      status: 'open', parent_id: span.id, related_to: related, trace_id: span.trace_id,
      error: { code: err.code || 'error', message: String(err.message || '') },
      metadata: { function_id: span.parent_id ?? null, execution_id: span.id },
    },
  }];
}
