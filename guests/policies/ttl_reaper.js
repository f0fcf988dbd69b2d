export default function on(span){
  // expire prompt_block with metadata.ttl_minutes elapsed
  if (span.entity_type!=='prompt_block') return [];
  const ttl = Number(span.metadata?.ttl_minutes||0);
  if (!ttl) return [];
  const created = new Date(span["when"]||span.at||Date.now());
  const expired = (Date.now() - created.getTime()) > (ttl*60*1000);
  if (!expired) return [];
  return [{
    emit_span: {
      entity_type:'status_patch', who:'policy:ttl', did:'expired', this:'status=archived',
      status:'complete', parent_id: span.id, related_to:[span.id],
      metadata:{ reason:'ttl' }
    }
  }];
}
