// @ts-check
// A policy (runtime quickjs, tier policy: pure): for every execution that
// failed, ask for the function's error handler to run, and label executions
// slower than 5 s. The policy_agent kernel hands it the new spans of its
// tenant, a batch at a time, and appends what the actions ask for.
//
//   logline publish policy.js --kind policy --name error_handler \
//     --judges '{"entity_types":["execution"]}'
//
// --judges declares that it only wants executions: the agent shows it no
// other span, and the engine does not boot the agent for spans no policy
// wants.
/// <reference path="../logline.d.ts" />

const SLOW_MS = 5000;

/** @type {import('../logline').Policy} */
export default function on(span) {
  if (span.entity_type !== 'execution') return [];
  /** @type {import('../logline').Action[]} */
  const actions = [];
  const handler = span.metadata?.on_error;
  if (span.status === 'error' && typeof handler === 'string') {
    actions.push({ run: 'run_code', span_id: handler, input: { failed: span.id, error: span.error ?? null } });
  }
  if ((span.duration_ms ?? 0) > SLOW_MS) {
    actions.push({
      emit_span: {
        entity_type: 'status_patch', who: 'policy:slow', did: 'labeled', this: 'status=slow',
        status: 'complete', parent_id: span.id, related_to: [span.id],
        metadata: { status: 'slow', duration_ms: span.duration_ms },
      },
    });
  }
  return actions;
}
