-- The prompt system (guests/kernels/prompt.js): what the engine's
-- prompt_worker and the prompt kernels look up on every pass or run, as
-- indexes over what is open or small, never over the ledger's history.

-- Open prompt requests of a tenant, oldest first (POST /api/prompts/run;
-- the prompt_worker reads the first entries, as the request worker does).
CREATE INDEX IF NOT EXISTS heads_open_prompt_requests ON ledger.heads (tenant_id, ord)
  WHERE entity_type = 'prompt_request' AND status = 'scheduled';

-- The tenants with prompt families (variants, routing, eval cards) and
-- their blocks: the worker's schedules and the build's injected blocks.
CREATE INDEX IF NOT EXISTS heads_prompt_entities ON ledger.heads (tenant_id, entity_type)
  WHERE entity_type IN ('prompt_variant', 'prompt_routing', 'prompt_eval', 'prompt_block');

-- A variant's runs, evals and reviews in a window (the runner's error
-- burst, the bandit's evidence): by variant and time.
CREATE INDEX IF NOT EXISTS ur_idx_prompt_evidence ON ledger.universal_registry (tenant_id, parent_id, at)
  WHERE entity_type IN ('prompt_run', 'prompt_eval_run');
