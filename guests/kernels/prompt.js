// prompt.js — the prompt system (seed §4, §9, §12), shared by the prompt
// kernels: tools/seedgen prepends lib.js and this file to build_prompt,
// prompt_runner, prompt_eval, prompt_bandit and prompt_worker, so each is
// one self-contained script and the five agree on every rule.
//
// A prompt is a contract assembled from priority blocks: a prompt_variant
// names its blocks (pinned by seq or following the latest) and a template
// with slots; blocks of the build's own tenant that say they apply to the
// variant or its family are injected (a circuit breaker's); an archived
// block applies no more. The build compiles them into the system prompt,
// the output contract (a JSON Schema; when it cannot be satisfied the model
// answers {"error":"Insufficient evidence."}) and the model parameters, and
// hashes the canonical form: compiled_hash. Nothing in it depends on time,
// so the same ledger gives the same hash on any engine, any day.

const INSUFFICIENT = 'Insufficient evidence.';

// Defaults of the manifest's "prompt" section.
const PROMPT_DEFAULTS = {
  eval_schedule: '0 3 * * *', // nightly, per variant of a family with an eval card
  bandit_schedule: '0 4 * * *', // daily, per family
  confidence_threshold: 0.6, // a run below it is escalated to human review
  max_tool_calls: 3, // a run with more trips the circuit breaker
  error_burst: 5, // errors of a variant within burst_window_minutes trip it too
  burst_window_minutes: 10,
  breaker_ttl_minutes: 30, // how long the injected anti-spam block applies
  eval_pass_threshold: 0.8, // an eval run passes at this share of passing runs
  max_input_bytes: 32768, // user input plus context
  // Thompson draws behind the traffic weights: each Beta draw costs ~70k
  // fuel in QuickJS, so 200 draws of 3 arms is ~45M (weights to ±0.035).
  bandit_draws: 200,
  bandit_prior: { alpha: 1, beta: 1 },
  timeout_ms: 30000,
};

function promptConfig(manifest) {
  const p = (manifest && manifest.prompt) || {};
  const out = Object.assign({}, PROMPT_DEFAULTS);
  for (const k of Object.keys(PROMPT_DEFAULTS)) if (p[k] !== undefined && p[k] !== null) out[k] = p[k];
  return out;
}

// canonical is RFC 8785 (JCS) for the JSON values a build holds: object
// keys sorted by UTF-16 code units, ECMAScript number and string forms —
// what the host's span canonical form is, so a hash can be checked outside
// the sandbox.
function canonical(v) {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new Error('canonical: a number that is not finite');
    return JSON.stringify(v === undefined ? null : v);
  }
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
}

// A typed failure of a prompt kernel: bad input says what was wrong and
// nothing is written.
function promptError(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

const BLOCK_COLUMNS = `id, seq, entity_type, tenant_id, owner_id, visibility, status, is_deleted, name, metadata,
  curr_hash, tx_id::text AS tx, ord`;

// readVariant is the latest version of a prompt_variant visible to the
// kernel, checked.
async function readVariant(sql, id) {
  if (!isUUID(id)) throw promptError('invalid_input', `VARIANT_ID ${JSON.stringify(id)} is not a UUID`);
  const v = (await latestOf(sql, [id])).get(id);
  if (!v) throw promptError('not_found', `prompt_variant ${id}: no such span visible to this tenant`);
  if (v.entity_type !== 'prompt_variant') throw promptError('invalid_input', `${id} is a ${v.entity_type}, not a prompt_variant`);
  if (v.is_deleted || v.status === 'archived') throw promptError('invalid_input', `prompt_variant ${id} is ${v.is_deleted ? 'deleted' : 'archived'}`);
  checkVariant(v);
  return v;
}

function isUUID(s) {
  return typeof s === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
}

const SLOT_RE = /\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}/g;
const SLOTS = ['user_input', 'context'];

function checkVariant(v) {
  const m = v.metadata || {};
  const where = `prompt_variant ${v.id} seq ${v.seq}`;
  if (typeof m.family !== 'string' || !/^[a-z0-9_.-]{1,100}$/i.test(m.family)) {
    throw promptError('invalid_input', `${where}: metadata.family must be a name of 1-100 letters, digits, _ . -`);
  }
  if (typeof m.template !== 'string' || !m.template) throw promptError('invalid_input', `${where}: metadata.template must be a non-empty string`);
  for (const [, slot] of m.template.matchAll(SLOT_RE)) {
    if (!SLOTS.includes(slot)) throw promptError('invalid_input', `${where}: template slot {{${slot}}} is not one of ${SLOTS.join(', ')}`);
  }
  if (m.blocks !== undefined && !Array.isArray(m.blocks)) throw promptError('invalid_input', `${where}: metadata.blocks must be an array`);
  (m.blocks || []).forEach((b, i) => {
    if (!b || !isUUID(b.id)) throw promptError('invalid_input', `${where}: metadata.blocks[${i}].id must be a UUID`);
    if (b.seq !== undefined && !(Number.isInteger(b.seq) && b.seq >= 0)) {
      throw promptError('invalid_input', `${where}: metadata.blocks[${i}].seq must be an integer ≥ 0 (or absent: the latest)`);
    }
  });
  if (m.output_schema !== undefined) {
    const bad = schemaProblem(m.output_schema, 'output_schema');
    if (bad) throw promptError('invalid_input', `${where}: metadata.${bad}`);
  }
  if (m.model !== undefined && (typeof m.model !== 'object' || m.model === null || Array.isArray(m.model))) {
    throw promptError('invalid_input', `${where}: metadata.model must be an object {name?, temperature?, max_tokens?}`);
  }
  if (m.provider_id !== undefined && !isUUID(m.provider_id)) throw promptError('invalid_input', `${where}: metadata.provider_id must be a UUID`);
}

// applies reports whether an injected block names the variant or its family.
function appliesTo(block, variant) {
  const a = (block.metadata && block.metadata.applies_to) || {};
  return (Array.isArray(a.variants) && a.variants.includes(variant.id)) ||
    (Array.isArray(a.families) && a.families.includes(variant.metadata.family));
}

function checkBlock(b, where) {
  const m = b.metadata || {};
  if (typeof m.text !== 'string') throw promptError('invalid_input', `${where}: prompt_block ${b.id} seq ${b.seq}: metadata.text must be a string`);
  if (m.priority !== undefined && typeof m.priority !== 'number') {
    throw promptError('invalid_input', `${where}: prompt_block ${b.id} seq ${b.seq}: metadata.priority must be a number`);
  }
}

// compile builds variant v for tenant: the blocks that apply, in priority
// order (higher first, then id), the compiled prompt and its hash.
async function compile(sql, tenant, v) {
  const m = v.metadata;
  const where = `prompt_variant ${v.id}`;
  const refs = m.blocks || [];
  // One query (a build is on every run's path): the referenced blocks (a
  // pinned version, else the latest), the latest prompt_block versions of
  // this tenant — never another's, public or not — that apply to the
  // variant or its family, and for each whether a status_patch
  // "status=archived" of the build's tenant or the block's own archived it
  // after that version was appended (commit order; a later version applies
  // again; another tenant's patch never strips a public block).
  const { rows } = await sql(`WITH refs AS (
      SELECT (r->>'id')::uuid AS rid, (r->>'seq')::bigint AS rseq, i FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY x(r, i)),
    picked AS (
      SELECT refs.i, b.* FROM refs CROSS JOIN LATERAL (SELECT ${BLOCK_COLUMNS}, tx_id AS txr FROM ledger.universal_registry u
        WHERE u.id = refs.rid AND (refs.rseq IS NULL OR u.seq = refs.rseq) ORDER BY u.seq DESC LIMIT 1) b),
    injected AS (
      SELECT NULL::bigint AS i, ${BLOCK_COLUMNS.split(',').map((c) => 'ur.' + c.trim()).join(', ')}, ur.tx_id AS txr
      FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
      WHERE h.tenant_id = $2 AND h.entity_type = 'prompt_block' AND ur.tenant_id = $2
        AND (ur.metadata->'applies_to'->'variants' ? $3 OR ur.metadata->'applies_to'->'families' ? $4)),
    blocks AS (SELECT * FROM picked UNION ALL SELECT * FROM injected)
    SELECT b.i, ${BLOCK_COLUMNS.replace('tx_id::text AS tx', 'tx').split(',').map((c) => 'b.' + c.trim()).join(', ')},
      EXISTS (SELECT 1 FROM ledger.universal_registry p WHERE p.parent_id = b.id AND p.entity_type = 'status_patch'
        AND p."this" = 'status=archived' AND p.tenant_id IN ($2, b.tenant_id) AND (p.tx_id, p.ord) > (b.txr, b.ord)) AS archived
    FROM blocks b`,
  [JSON.stringify(refs.map((r) => ({ id: r.id, seq: r.seq === undefined ? null : r.seq }))), tenant, v.id, m.family]);
  const byIndex = new Map(rows.filter((r) => r.i !== null).map((r) => [Number(r.i) - 1, r]));
  const chosen = new Map();
  refs.forEach((r, i) => {
    const b = byIndex.get(i);
    if (!b) throw promptError('not_found', `${where}: metadata.blocks[${i}]: prompt_block ${r.id}${r.seq !== undefined ? ` seq ${r.seq}` : ''} is not visible to this tenant`);
    if (b.entity_type !== 'prompt_block') throw promptError('invalid_input', `${where}: metadata.blocks[${i}]: ${r.id} is a ${b.entity_type}, not a prompt_block`);
    checkBlock(b, where);
    chosen.set(b.id, b);
  });
  for (const b of rows) {
    if (b.i !== null || chosen.has(b.id) || !appliesTo(b, v) || b.tenant_id !== tenant) continue;
    checkBlock(b, where);
    chosen.set(b.id, b);
  }
  const candidates = [...chosen.values()].filter((b) => !b.is_deleted && (b.status || 'active') === 'active');
  const archived = new Set(candidates.filter((b) => b.archived).map((b) => b.id));
  const blocks = candidates.filter((b) => !archived.has(b.id)).sort((a, b) =>
    (Number(b.metadata.priority) || 0) - (Number(a.metadata.priority) || 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const schema = m.output_schema || null;
  let system = blocks.map((b) => b.metadata.text.trim()).filter(Boolean).join('\n\n');
  if (schema) {
    system += (system ? '\n\n' : '') + 'Answer with one JSON value and nothing else, valid against this JSON Schema: ' +
      canonical(schema) + `\nIf the schema cannot be satisfied from what you were given, answer exactly {"error":"${INSUFFICIENT}"}`;
  }
  const model = m.model || {};
  const compiled = {
    format: 'logline.prompt/v1',
    variant: { id: v.id, seq: Number(v.seq), curr_hash: v.curr_hash, family: m.family, version: m.version || null },
    blocks: blocks.map((b) => ({ id: b.id, seq: Number(b.seq), curr_hash: b.curr_hash, kind: b.metadata.kind || null })),
    system,
    template: m.template,
    output_schema: schema,
    model: { name: model.name || null, temperature: model.temperature === undefined ? null : model.temperature,
      max_tokens: model.max_tokens === undefined ? null : model.max_tokens },
  };
  const compiledHash = logline.crypto.hex(logline.crypto.blake3(canonical(compiled)));
  return { compiled, compiledHash, blocks };
}

// build compiles variant v and appends its prompt_build unless this tenant
// has one of the same compiled_hash (the build id derives from it), so
// builds are idempotent.
async function build(ctx, tenant, v) {
  const { sql, insertSpan, crypto } = ctx;
  const c = await compile(sql, tenant, v);
  const id = derivedId(crypto, 'prompt_build', tenant, c.compiledHash);
  const out = { build_id: id, compiled_hash: c.compiledHash, variant_id: v.id, variant_seq: Number(v.seq),
    blocks: c.compiled.blocks.map((b) => ({ id: b.id, seq: b.seq, curr_hash: b.curr_hash })), reused: true, compiled: c.compiled };
  if ((await existing(sql, [id])).has(id)) return out;
  try {
    await insertSpan({ spans: [{
      id, seq: 0, entity_type: 'prompt_build', who: 'kernel:build_prompt', did: 'compiled', this: 'prompt.build',
      status: 'complete', name: v.name || v.metadata.family, parent_id: v.id,
      related_to: [v.id, ...c.blocks.map((b) => b.id)].slice(0, 64),
      owner_id: v.tenant_id === tenant ? v.owner_id : undefined, visibility: 'tenant',
      // The compiled prompt itself: compiled_hash is the BLAKE3 of its
      // RFC 8785 form, which anyone can check from this span alone.
      output: c.compiled,
      metadata: { compiled_hash: c.compiledHash, variant_id: v.id, variant_seq: Number(v.seq), family: v.metadata.family,
        version: v.metadata.version || null, blocks: out.blocks },
    }], result: 'refs' });
    out.reused = false;
  } catch (e) {
    // Another engine built the same hash meanwhile: the same build.
    if (!(await existing(sql, [id])).has(id)) throw e;
  }
  return out;
}

// fill puts the slots into the template.
function fill(template, slots) {
  return template.replace(SLOT_RE, (_, name) => String(slots[name] === undefined || slots[name] === null ? '' : slots[name]));
}

// messagesOf is what the provider is sent for a compiled prompt and slots.
function messagesOf(compiled, slots) {
  const msgs = [];
  if (compiled.system) msgs.push({ role: 'system', content: compiled.system });
  msgs.push({ role: 'user', content: fill(compiled.template, slots) });
  return msgs;
}

// parseAnswer reads the model's content as the contract wants: one JSON
// value (a fenced ```json block is accepted), the insufficient-evidence
// answer, and the schema's verdict.
function parseAnswer(content, schema) {
  const r = { parsed: null, is_json: false, insufficient_evidence: false, contract: { ok: false, errors: [] } };
  let text = String(content || '').trim();
  const fence = /^```(?:json)?\s*([\s\S]*?)\s*```$/i.exec(text);
  if (fence) text = fence[1];
  try {
    r.parsed = JSON.parse(text);
    r.is_json = true;
  } catch (e) {
    r.contract.errors.push(`the answer is not JSON: ${e.message}`);
    if (!schema) r.contract = { ok: true, errors: [] }; // no contract: any text
    return r;
  }
  const p = r.parsed;
  if (p && typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 1 && p.error === INSUFFICIENT) {
    r.insufficient_evidence = true;
    r.contract.ok = true; // the contract's own way out
    return r;
  }
  r.contract.errors = schema ? validate(schema, p, '$') : [];
  r.contract.ok = r.contract.errors.length === 0;
  return r;
}

// JSON Schema: the subset a contract needs (draft 2020-12 keywords type,
// properties, required, additionalProperties, items, enum, const,
// minLength, maxLength, pattern, minimum, maximum, minItems, maxItems,
// anyOf, description, title, $schema). A schema with any other keyword is
// refused where it is declared, rather than silently not checked.
const SCHEMA_KEYWORDS = ['type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'minLength',
  'maxLength', 'pattern', 'minimum', 'maximum', 'minItems', 'maxItems', 'anyOf', 'description', 'title', '$schema'];
const SCHEMA_TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];

function schemaProblem(s, path) {
  if (typeof s === 'boolean') return null;
  if (!s || typeof s !== 'object' || Array.isArray(s)) return `${path} must be a JSON Schema object`;
  for (const k of Object.keys(s)) {
    if (!SCHEMA_KEYWORDS.includes(k)) return `${path}: keyword ${JSON.stringify(k)} is not supported (supported: ${SCHEMA_KEYWORDS.join(', ')})`;
  }
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  for (const t of types) if (!SCHEMA_TYPES.includes(t)) return `${path}.type: ${JSON.stringify(t)} is not a JSON Schema type`;
  if (s.pattern !== undefined) {
    try { new RegExp(s.pattern, 'u'); } catch (e) { return `${path}.pattern: ${e.message}`; }
  }
  if (s.required !== undefined && !(Array.isArray(s.required) && s.required.every((x) => typeof x === 'string'))) return `${path}.required must be an array of names`;
  for (const [k, sub] of Object.entries(s.properties || {})) {
    const bad = schemaProblem(sub, `${path}.properties.${k}`);
    if (bad) return bad;
  }
  for (const [k, sub] of [['items', s.items], ['additionalProperties', s.additionalProperties]]) {
    if (sub !== undefined) {
      const bad = schemaProblem(sub, `${path}.${k}`);
      if (bad) return bad;
    }
  }
  if (s.anyOf !== undefined) {
    if (!Array.isArray(s.anyOf)) return `${path}.anyOf must be an array`;
    for (let i = 0; i < s.anyOf.length; i++) {
      const bad = schemaProblem(s.anyOf[i], `${path}.anyOf[${i}]`);
      if (bad) return bad;
    }
  }
  return null;
}

function typeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

// validate lists what is wrong with v against schema s, each naming where.
function validate(s, v, at) {
  if (s === true) return [];
  if (s === false) return [`${at}: no value is allowed here`];
  const errs = [];
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    const t = typeOf(v);
    const ok = types.some((x) => x === t || (x === 'integer' && t === 'number' && Number.isInteger(v)) || (x === 'number' && t === 'number'));
    if (!ok) return [`${at}: want ${types.join(' or ')}, got ${t}`];
  }
  if (s.const !== undefined && canonical(s.const) !== canonical(v)) errs.push(`${at}: want ${canonical(s.const)}`);
  if (s.enum !== undefined && !s.enum.some((e) => canonical(e) === canonical(v))) errs.push(`${at}: want one of ${canonical(s.enum)}`);
  if (typeof v === 'string') {
    const n = [...v].length;
    if (s.minLength !== undefined && n < s.minLength) errs.push(`${at}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && n > s.maxLength) errs.push(`${at}: longer than ${s.maxLength}`);
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) errs.push(`${at}: does not match ${s.pattern}`);
  }
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) errs.push(`${at}: less than ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) errs.push(`${at}: more than ${s.maximum}`);
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) errs.push(`${at}: fewer than ${s.minItems} items`);
    if (s.maxItems !== undefined && v.length > s.maxItems) errs.push(`${at}: more than ${s.maxItems} items`);
    if (s.items !== undefined) v.forEach((x, i) => errs.push(...validate(s.items, x, `${at}[${i}]`)));
  }
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const k of s.required || []) if (!(k in v)) errs.push(`${at}: missing ${k}`);
    const props = s.properties || {};
    for (const [k, x] of Object.entries(v)) {
      if (k in props) errs.push(...validate(props[k], x, `${at}.${k}`));
      else if (s.additionalProperties !== undefined) errs.push(...validate(s.additionalProperties, x, `${at}.${k}`));
    }
  }
  if (s.anyOf !== undefined && !s.anyOf.some((sub) => validate(sub, v, at).length === 0)) errs.push(`${at}: matches none of anyOf`);
  return errs;
}

// readProvider is the provider span a run calls.
async function readProvider(sql, id, where) {
  if (!isUUID(id)) throw promptError('invalid_input', `${where}: provider ${JSON.stringify(id)} is not a UUID (set PROVIDER_ID or the variant's metadata.provider_id)`);
  const p = (await latestOf(sql, [id])).get(id);
  if (!p || p.entity_type !== 'provider') throw promptError('not_found', `${where}: provider ${id} not found`);
  return p;
}

// invoke sends a compiled prompt with slots to a provider and reads the
// answer against the contract: what a run and an eval repeat both do.
async function invoke(ctx, compiled, prov, slots, cfg) {
  const payload = { messages: messagesOf(compiled, slots), timeout_ms: cfg.timeout_ms };
  if (compiled.model.name) payload.model = compiled.model.name;
  if (compiled.model.temperature !== null) payload.temperature = compiled.model.temperature;
  if (compiled.model.max_tokens !== null) payload.max_tokens = compiled.model.max_tokens;
  let call;
  try {
    call = await callProvider(ctx, prov, payload);
  } catch (e) {
    if (e && e.fn) throw e; // a host call that failed: the pass's problem
    // A provider span that cannot be called (an unknown api): the run's.
    call = { api: (prov.metadata || {}).api, model: null, output: null, usage: {}, latency: 0, content: null, finish_reason: null,
      tool_calls: 0, error: { code: 'invalid_input', message: String(e.message || e) } };
  }
  const r = { call, payload, text: call.content, parsed: null, is_json: false, insufficient_evidence: false,
    contract: { ok: false, errors: [] }, error: call.error, confidence: null };
  if (!call.error) {
    Object.assign(r, parseAnswer(call.content, compiled.output_schema));
    if (r.parsed && typeof r.parsed === 'object' && typeof r.parsed.confidence === 'number') r.confidence = r.parsed.confidence;
    if (!r.contract.ok) r.error = { code: 'contract_violation', message: `the answer breaks the output contract: ${r.contract.errors.slice(0, 5).join('; ')}` };
  }
  return r;
}

function inputBytes(slots) {
  return new TextEncoder().encode(String(slots.user_input || '') + String(slots.context || '')).length;
}

// resolveRequest decides what a prompt_request runs: the variant named, or
// for a family the routing of this tenant (the bandit's weights), drawn with
// the run's seeded random stream.
async function resolveVariant(ctx, tenant, input) {
  const { sql, crypto } = ctx;
  if (input.variant_id) return { variant: await readVariant(sql, input.variant_id), routing: null };
  const family = input.family;
  if (typeof family !== 'string' || !family) throw promptError('invalid_input', 'a prompt run names a variant_id or a family');
  const rid = derivedId(crypto, 'prompt_routing', tenant, family);
  const routing = (await latestOf(sql, [rid])).get(rid);
  if (!routing || routing.tenant_id !== tenant) {
    throw promptError('not_found', `family ${family} has no routing in tenant ${tenant}: run the bandit (logline prompt bandit --family ${family}) once a variant has passed an eval`);
  }
  const weights = routing.metadata.weights || {};
  const ids = Object.keys(weights).filter((k) => weights[k] > 0).sort();
  if (!ids.length) throw promptError('not_found', `family ${family}: no variant has passed an eval of its current build, so none gets traffic`);
  const total = ids.reduce((n, k) => n + weights[k], 0);
  const draw = crypto.randomBytes(4).reduce((n, b) => n * 256 + b, 0) / 4294967296 * total;
  let acc = 0, pick = ids[ids.length - 1];
  for (const k of ids) { acc += weights[k]; if (draw < acc) { pick = k; break; } }
  return { variant: await readVariant(sql, pick), routing: { id: routing.id, seq: Number(routing.seq), weights, draw: draw / total } };
}

// runPrompt runs one prompt_request (the latest version, status scheduled
// or running) and returns the spans that record it — the provider
// execution, the prompt_run and the request's closing version — for the
// caller to append with the rest of its pass.
async function runPrompt(ctx, tenant, req, cfg, builds, pre) {
  const { sql, crypto } = ctx;
  const input = req.input || {};
  const base = { owner_id: req.owner_id, visibility: req.visibility || 'private' };
  const runId = derivedId(crypto, 'prompt_run', req.id);
  const trace = req.trace_id || crypto.randomUUID();
  const out = [];
  const close = (status, extra) => out.push(Object.assign({
    id: req.id, seq: Number(req.seq) + 1, entity_type: 'prompt_request', who: 'kernel:prompt_runner',
    did: status === 'complete' ? 'completed' : 'failed', this: 'prompt.run', status, trace_id: trace,
    parent_id: req.parent_id, related_to: req.related_to, input: req.input,
    metadata: Object.assign({}, req.metadata, { prompt_run_id: runId }),
  }, base, extra || {}));
  let resolved, b, prov;
  try {
    resolved = (pre && pre.resolved) || await resolveVariant(ctx, tenant, input);
    const v = resolved.variant;
    const key = `${v.id}/${v.seq}`;
    b = builds.get(key);
    if (!b) { b = await build(ctx, tenant, v); builds.set(key, b); }
    // Providers are read once a pass (builds is the pass's cache).
    const pid = input.provider_id || v.metadata.provider_id;
    prov = (pre && pre.prov) || builds.get(`provider:${pid}`);
    if (!prov) { prov = await readProvider(sql, pid, `prompt_variant ${v.id}`); builds.set(`provider:${pid}`, prov); }
  } catch (e) {
    if (!e.code) throw e;
    const error = { code: e.code, message: e.message };
    out.push(Object.assign({ id: runId, seq: 0, entity_type: 'prompt_run', who: 'kernel:prompt_runner', did: 'failed',
      this: 'prompt.run', status: 'error', trace_id: trace, related_to: [req.id], input: { slots: slotsOf(input) }, error,
      metadata: { request_id: req.id, 'gen_ai.operation.name': 'chat' } }, base));
    close('error', { error });
    return { out, runId, status: 'error', error };
  }
  const v = resolved.variant;
  const slots = slotsOf(input);
  const peId = derivedId(crypto, 'provider_execution', req.id);
  let r;
  if (inputBytes(slots) > cfg.max_input_bytes) {
    r = { call: null, text: null, parsed: null, is_json: false, insufficient_evidence: false, confidence: null,
      contract: { ok: false, errors: [] }, error: { code: 'invalid_input', message: `user input and context are ${inputBytes(slots)} bytes, over the manifest's prompt.max_input_bytes ${cfg.max_input_bytes}` } };
  } else {
    r = await invoke(ctx, b.compiled, prov, slots, cfg);
  }
  const call = r.call || { api: (prov.metadata || {}).api, model: null, usage: {}, latency: 0, tool_calls: 0, finish_reason: null };
  const usage = { input_tokens: call.usage.prompt_tokens === undefined ? null : call.usage.prompt_tokens,
    output_tokens: call.usage.completion_tokens === undefined ? null : call.usage.completion_tokens };
  // Evidence the prompt policies judge, with the thresholds it is judged
  // by (a policy cannot read the manifest; the run says what it ran under).
  const breaker = b.compiled.blocks.some((x) => x.kind === 'circuit_breaker');
  let recentErrors = 0;
  if (r.error) {
    const since = new Date(Date.parse(ctx.now()) - cfg.burst_window_minutes * 60000).toISOString();
    const { rows } = await sql`SELECT count(*)::int AS n FROM ledger.universal_registry
      WHERE tenant_id = ${tenant} AND entity_type = 'prompt_run' AND parent_id = ${v.id} AND status = 'error' AND at >= ${since}::timestamptz`;
    recentErrors = rows[0].n + 1; // this one too
  }
  const related = [v.id, b.build_id, prov.id, req.id];
  if (r.call) {
    out.push(Object.assign({
      id: peId, seq: 0, entity_type: 'provider_execution', who: 'kernel:prompt_runner', did: 'called', this: 'provider.exec',
      status: r.call.error ? 'error' : 'complete', input: r.payload, output: r.call.error ? null : r.call.output, error: r.call.error,
      duration_ms: call.latency, related_to: [prov.id, req.id], trace_id: trace,
      metadata: Object.assign({ provider_id: prov.id, api: call.api, model: call.model, latency_ms: call.latency }, call.usage),
    }, base));
    related.push(peId);
  }
  const run = Object.assign({
    id: runId, seq: 0, entity_type: 'prompt_run', who: 'kernel:prompt_runner', did: r.error ? 'failed' : 'answered',
    this: 'prompt.run', status: r.error ? 'error' : 'complete', name: v.name || null, parent_id: v.id, related_to: related,
    trace_id: trace, duration_ms: call.latency,
    input: { compiled_hash: b.compiled_hash, variant_id: v.id, slots },
    output: { text: r.text, parsed: r.parsed, contract: r.contract, insufficient_evidence: r.insufficient_evidence,
      confidence: r.confidence, tool_calls: call.tool_calls, latency_ms: call.latency, model: call.model, usage,
      finish_reason: call.finish_reason },
    error: r.error || undefined,
    metadata: {
      request_id: req.id, variant_id: v.id, variant_seq: Number(v.seq), build_id: b.build_id, compiled_hash: b.compiled_hash,
      provider_id: prov.id, family: v.metadata.family, routing: resolved.routing || undefined,
      evidence: { tool_calls: call.tool_calls, recent_errors: recentErrors, breaker_active: breaker },
      thresholds: { confidence: cfg.confidence_threshold, max_tool_calls: cfg.max_tool_calls, error_burst: cfg.error_burst,
        breaker_ttl_minutes: cfg.breaker_ttl_minutes },
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': call.api === 'ollama' ? 'ollama' : 'openai',
      'gen_ai.request.model': b.compiled.model.name || (prov.metadata || {}).model || null,
      'gen_ai.response.model': call.model,
      'gen_ai.usage.input_tokens': usage.input_tokens,
      'gen_ai.usage.output_tokens': usage.output_tokens,
      'gen_ai.response.finish_reasons': call.finish_reason ? [call.finish_reason] : [],
      'gen_ai.prompt.name': v.metadata.family,
      'gen_ai.prompt.version': v.metadata.version || String(v.seq),
    },
  }, base);
  out.push(run);
  close(run.status, r.error ? { error: r.error } : {});
  return { out, runId, status: run.status, error: r.error || null, variant: v, build: b, run };
}

// runGuarded is runPrompt for a queue: whatever goes wrong with one
// request closes it as failed with why, so it never holds up the ones
// behind it.
async function runGuarded(ctx, tenant, req, cfg, builds, pre) {
  try {
    return await runPrompt(ctx, tenant, req, cfg, builds, pre);
  } catch (e) {
    const error = { code: (e && e.code) || 'guest_error', message: String((e && e.message) || e).slice(0, 1000) };
    const runId = derivedId(ctx.crypto, 'prompt_run', req.id);
    const base = { owner_id: req.owner_id, visibility: req.visibility || 'private' };
    const trace = req.trace_id || ctx.crypto.randomUUID();
    return { runId, status: 'error', error, out: [
      Object.assign({ id: runId, seq: 0, entity_type: 'prompt_run', who: 'kernel:prompt_runner', did: 'failed', this: 'prompt.run',
        status: 'error', trace_id: trace, related_to: [req.id], error, metadata: { request_id: req.id } }, base),
      Object.assign({ id: req.id, seq: Number(req.seq) + 1, entity_type: 'prompt_request', who: 'kernel:prompt_runner', did: 'failed',
        this: 'prompt.run', status: 'error', trace_id: trace, parent_id: req.parent_id, related_to: req.related_to, input: req.input,
        error, metadata: Object.assign({}, req.metadata, { prompt_run_id: runId }) }, base),
    ] };
  }
}

function slotsOf(input) {
  return { user_input: input.user_input === undefined ? '' : String(input.user_input),
    context: input.context === undefined || input.context === null ? '' : String(input.context) };
}

// recordRuns appends a pass's run spans (all or none); a run the ledger
// refuses (say an answer too large to store) is recorded as failed with
// why instead, so one bad answer never wedges the tenant's queue.
async function recordRuns(ctx, spans) {
  return appendAll(ctx.insertSpan, spans, (s, v) => {
    if (s.entity_type === 'prompt_run' || s.entity_type === 'provider_execution') {
      return Object.assign({}, s, { status: 'error', output: undefined,
        error: { code: 'invalid_output', message: `the ${s.entity_type} could not be recorded as it ran: ${v.message}` } });
    }
    return undefined;
  });
}

// newRequest is a prompt_request for a run asked for outside the API (the
// CLI, a boot): status "running", so no worker takes it meanwhile.
function newRequest(ctx, env, input) {
  const { crypto } = ctx;
  return {
    id: env.REQUEST_ID || crypto.randomUUID(), seq: 0, entity_type: 'prompt_request', who: env.USER_ID || 'edge:stage0',
    did: 'requested', this: 'prompt.run', status: 'running', owner_id: env.USER_ID || undefined, visibility: 'private',
    trace_id: env.TRACE_ID || crypto.randomUUID(), input,
  };
}

// ---- Evaluation ----

const ASSERTIONS = ['equals', 'contains', 'not_contains', 'icontains', 'not_icontains', 'regex', 'is_json', 'json_schema',
  'insufficient_evidence', 'not_insufficient_evidence', 'max_latency', 'max_tokens', 'max_tool_calls', 'js'];
const FIXTURE_KINDS = ['happy', 'stress'];

async function readCard(sql, id) {
  if (!isUUID(id)) throw promptError('invalid_input', `EVAL_ID ${JSON.stringify(id)} is not a UUID`);
  const c = (await latestOf(sql, [id])).get(id);
  if (!c) throw promptError('not_found', `prompt_eval ${id}: no such span visible to this tenant`);
  if (c.entity_type !== 'prompt_eval') throw promptError('invalid_input', `${id} is a ${c.entity_type}, not a prompt_eval card`);
  checkCard(c);
  return c;
}

// checkCard refuses a card with anything unknown before a single provider
// call: an assertion type nobody checks would pass silently.
function checkCard(c) {
  const m = c.metadata || {};
  const where = `prompt_eval ${c.id} seq ${c.seq}`;
  if (!Array.isArray(m.fixtures) || !m.fixtures.length) throw promptError('invalid_input', `${where}: metadata.fixtures must be a non-empty array`);
  if (m.repeats !== undefined && !(Number.isInteger(m.repeats) && m.repeats >= 1 && m.repeats <= 100)) throw promptError('invalid_input', `${where}: metadata.repeats must be an integer 1-100`);
  if (m.k !== undefined && !(Number.isInteger(m.k) && m.k >= 1 && m.k <= 100)) throw promptError('invalid_input', `${where}: metadata.k must be an integer 1-100 (at most the repeats)`);
  m.fixtures.forEach((f, i) => {
    const at = `${where}: fixtures[${i}]`;
    if (!f || typeof f.name !== 'string' || !f.name) throw promptError('invalid_input', `${at}.name must be a non-empty string`);
    if (!FIXTURE_KINDS.includes(f.kind)) throw promptError('invalid_input', `${at} (${f.name}).kind must be happy or stress`);
    if (!f.input || typeof f.input !== 'object') throw promptError('invalid_input', `${at} (${f.name}).input must be {user_input, context}`);
    if (!Array.isArray(f.assert) || !f.assert.length) throw promptError('invalid_input', `${at} (${f.name}).assert must be a non-empty array`);
    f.assert.forEach((a, j) => {
      if (!a || !ASSERTIONS.includes(a.type)) throw promptError('invalid_input', `${at} (${f.name}).assert[${j}].type ${JSON.stringify(a && a.type)} is not one of ${ASSERTIONS.join(', ')}`);
      const needs = { equals: 'value', contains: 'value', not_contains: 'value', icontains: 'value', not_icontains: 'value', regex: 'value',
        max_latency: 'value', max_tokens: 'value', max_tool_calls: 'value', js: 'function_id' }[a.type];
      if (needs && a[needs] === undefined) throw promptError('invalid_input', `${at} (${f.name}).assert[${j}] (${a.type}) needs ${needs}`);
      if (a.type === 'regex') {
        try { new RegExp(a.value, a.flags || ''); } catch (e) { throw promptError('invalid_input', `${at} (${f.name}).assert[${j}]: ${e.message}`); }
      }
      if (a.type === 'js' && !isUUID(a.function_id)) throw promptError('invalid_input', `${at} (${f.name}).assert[${j}].function_id must be a UUID`);
      if (a.type === 'json_schema' && a.schema !== undefined) {
        const bad = schemaProblem(a.schema, 'schema');
        if (bad) throw promptError('invalid_input', `${at} (${f.name}).assert[${j}].${bad}`);
      }
    });
  });
}

// subject is the string an assertion reads: the field at path of the
// parsed answer, or the answer's text.
function subject(r, a) {
  if (a.path) {
    let v = r.parsed;
    for (const k of String(a.path).split('.')) v = v && typeof v === 'object' ? v[k] : undefined;
    return v === undefined ? '' : typeof v === 'string' ? v : canonical(v);
  }
  return String(r.text === null || r.text === undefined ? '' : r.text);
}

// check runs one assertion; it returns null (pass) or why it failed. js
// assertions were run before (in one exec call for the whole repeat set).
function check(a, r, compiled, jsVerdict) {
  const s = () => subject(r, a);
  switch (a.type) {
    case 'equals':
      if (typeof a.value === 'object' && a.value !== null) return canonical(r.parsed) === canonical(a.value) ? null : `parsed answer is not ${canonical(a.value)}`;
      return s().trim() === String(a.value) ? null : `${JSON.stringify(s().slice(0, 80))} is not ${JSON.stringify(a.value)}`;
    case 'contains': return s().includes(String(a.value)) ? null : `does not contain ${JSON.stringify(a.value)}`;
    case 'not_contains': return !s().includes(String(a.value)) ? null : `contains ${JSON.stringify(a.value)}`;
    case 'icontains': return s().toLowerCase().includes(String(a.value).toLowerCase()) ? null : `does not contain ${JSON.stringify(a.value)} (any case)`;
    case 'not_icontains': return !s().toLowerCase().includes(String(a.value).toLowerCase()) ? null : `contains ${JSON.stringify(a.value)} (any case)`;
    case 'regex': return new RegExp(a.value, a.flags || '').test(s()) ? null : `does not match /${a.value}/${a.flags || ''}`;
    case 'is_json': return r.is_json ? null : 'the answer is not JSON';
    case 'json_schema': {
      if (!r.is_json) return 'the answer is not JSON';
      const errs = validate(a.schema || compiled.output_schema || true, r.parsed, '$');
      return errs.length ? errs.slice(0, 3).join('; ') : null;
    }
    case 'insufficient_evidence': return r.insufficient_evidence ? null : `want {"error":"${INSUFFICIENT}"}`;
    case 'not_insufficient_evidence': return !r.insufficient_evidence ? null : 'answered insufficient evidence';
    case 'max_latency': return r.call && r.call.latency <= a.value ? null : `took ${r.call ? r.call.latency : '?'} ms, over ${a.value}`;
    case 'max_tokens': {
      const n = r.call && r.call.usage.completion_tokens;
      return typeof n === 'number' && n <= a.value ? null : `${n} output tokens, over ${a.value}`;
    }
    case 'max_tool_calls': return r.call && r.call.tool_calls <= a.value ? null : `${r.call ? r.call.tool_calls : '?'} tool calls, over ${a.value}`;
    case 'js': return jsVerdict;
    default: return `unknown assertion ${a.type}`;
  }
}

// choose is the binomial coefficient C(n, k) (small n: repeats ≤ 100).
function choose(n, k) {
  if (k < 0 || k > n) return 0;
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return r;
}

// passAtK: the chance that at least one of k runs drawn from n passes
// (c passed) — the unbiased estimator 1 - C(n-c, k)/C(n, k); passPowK: that
// all k pass, C(c, k)/C(n, k).
function passAtK(n, c, k) { return n - c < k ? 1 : 1 - choose(n - c, k) / choose(n, k); }
function passPowK(n, c, k) { return choose(c, k) / choose(n, k); }

function round6(x) { return Math.round(x * 1e6) / 1e6; }

// evaluate runs every fixture of card against variant v repeats times
// (each an uncached provider call) and returns the prompt_eval_run span.
async function evaluate(ctx, tenant, v, card, opts) {
  const { sql, exec } = ctx;
  const cfg = opts.cfg;
  const b = await build(ctx, tenant, v);
  const prov = await readProvider(ctx.sql, opts.provider_id || card.metadata.provider_id || v.metadata.provider_id, `prompt_variant ${v.id}`);
  const repeats = opts.repeats || card.metadata.repeats || 3;
  const k = Math.min(card.metadata.k || repeats, repeats);
  const fixtures = [];
  const totals = {};
  let runsAll = 0, passedAll = 0, model = null;
  for (const f of card.metadata.fixtures) {
    const slots = slotsOf(f.input);
    const results = [];
    for (let i = 0; i < repeats; i++) {
      const r = inputBytes(slots) > cfg.max_input_bytes
        ? { call: null, text: null, parsed: null, is_json: false, insufficient_evidence: false, contract: { ok: false, errors: [] },
          error: { code: 'invalid_input', message: `input over prompt.max_input_bytes ${cfg.max_input_bytes}` } }
        : await invoke(ctx, b.compiled, prov, slots, cfg);
      if (r.call && r.call.model) model = r.call.model;
      results.push(r);
    }
    // Sandboxed assertions: policy-like functions at tier 2, all repeats
    // of all js assertions of the fixture in one exec call.
    const jsCalls = [];
    f.assert.forEach((a, j) => {
      if (a.type !== 'js') return;
      results.forEach((r, i) => jsCalls.push({ j, i, req: { span_id: a.function_id, input: {
        text: r.text, parsed: r.parsed, insufficient_evidence: r.insufficient_evidence, error: r.error,
        fixture: { name: f.name, kind: f.kind, input: f.input }, value: a.value === undefined ? null : a.value } } }));
    });
    const jsOut = jsCalls.length ? await exec(jsCalls.map((x) => x.req)) : [];
    const jsVerdicts = new Map();
    jsCalls.forEach((x, n) => {
      const res = jsOut[n];
      let why = null;
      if (res.status !== 'complete') why = `js assertion ${x.req.span_id} failed to run: ${(res.error && res.error.code) || 'error'}: ${(res.error && res.error.message) || ''}`.slice(0, 300);
      else if (res.output === true || (res.output && res.output.pass === true)) why = null;
      else why = (res.output && res.output.why) ? String(res.output.why).slice(0, 300) : `js assertion ${x.req.span_id} returned ${canonical(res.output === undefined ? null : res.output).slice(0, 100)}`;
      jsVerdicts.set(`${x.j}/${x.i}`, why);
    });
    const runs = results.map((r, i) => {
      let failed = null;
      // A provider failure fails the repeat whatever the assertions say
      // (a contract violation is for the assertions to judge).
      if (r.error && r.error.code !== 'contract_violation') failed = { type: 'provider', why: `${r.error.code}: ${r.error.message}`.slice(0, 300) };
      for (let j = 0; !failed && j < f.assert.length; j++) {
        const why = check(f.assert[j], r, b.compiled, jsVerdicts.get(`${j}/${i}`));
        if (why) failed = { type: f.assert[j].type, index: j, why };
      }
      return { pass: !failed, failed: failed || undefined, latency_ms: r.call ? r.call.latency : null,
        output_tokens: r.call && r.call.usage ? r.call.usage.completion_tokens : null, text: r.text === null ? null : String(r.text).slice(0, 500) };
    });
    const c = runs.filter((x) => x.pass).length;
    fixtures.push({ name: f.name, kind: f.kind, stress: f.stress || undefined, passed: c, runs: runs.length,
      pass_at_k: round6(passAtK(runs.length, c, k)), pass_pow_k: round6(passPowK(runs.length, c, k)), results: runs });
    const t = totals[f.kind] || (totals[f.kind] = { fixtures: 0, runs: 0, passed: 0, pass_at_k: 0, pass_pow_k: 0 });
    t.fixtures++; t.runs += runs.length; t.passed += c;
    t.pass_at_k += passAtK(runs.length, c, k); t.pass_pow_k += passPowK(runs.length, c, k);
    runsAll += runs.length; passedAll += c;
  }
  for (const t of Object.values(totals)) {
    t.pass_rate = round6(t.passed / t.runs);
    t.pass_at_k = round6(t.pass_at_k / t.fixtures);
    t.pass_pow_k = round6(t.pass_pow_k / t.fixtures);
  }
  const passRate = round6(passedAll / runsAll);
  const passed = passRate >= cfg.eval_pass_threshold;
  return {
    span: {
      id: opts.id, seq: 0, entity_type: 'prompt_eval_run', who: 'kernel:prompt_eval', did: 'evaluated', this: 'prompt.eval',
      status: 'complete', name: v.name || null, parent_id: v.id, related_to: [v.id, card.id, b.build_id, prov.id],
      owner_id: opts.owner_id, visibility: 'tenant', trace_id: opts.trace_id,
      input: { variant_id: v.id, eval_id: card.id, eval_seq: Number(card.seq), repeats, k, tick: opts.tick || undefined },
      output: { fixtures, totals },
      metadata: { variant_id: v.id, variant_seq: Number(v.seq), family: v.metadata.family, eval_id: card.id, build_id: b.build_id,
        compiled_hash: b.compiled_hash, model, provider_id: prov.id, repeats, k, passed, pass_rate: passRate,
        threshold: cfg.eval_pass_threshold },
    },
    summary: { variant_id: v.id, compiled_hash: b.compiled_hash, model, passed, pass_rate: passRate, totals },
  };
}

// ---- Bandit ----

// rng is a seeded stream (mulberry32): the decision replays from the
// seed it records, on any engine.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(u) {
  const u1 = Math.max(u(), 1e-12), u2 = u();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

// gamma draws Gamma(shape, 1) (Marsaglia and Tsang; boosted below 1).
function gamma(u, shape) {
  if (shape < 1) return gamma(u, shape + 1) * Math.pow(Math.max(u(), 1e-12), 1 / shape);
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x, v;
    do { x = normal(u); v = 1 + c * x; } while (v <= 0);
    v = v * v * v;
    const w = u();
    if (w < 1 - 0.0331 * x * x * x * x || Math.log(w) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

function beta(u, a, b) {
  const x = gamma(u, a), y = gamma(u, b);
  return x / (x + y);
}

// thompson: the share of draws each arm wins, arms sorted by id so the
// same seed gives the same weights.
function thompson(seed, arms, draws) {
  const u = rng(seed);
  const wins = Object.fromEntries(arms.map((a) => [a.id, 0]));
  for (let i = 0; i < draws; i++) {
    let best = null, bestX = -1;
    for (const a of arms) {
      const x = beta(u, a.alpha, a.beta);
      if (x > bestX) { bestX = x; best = a.id; }
    }
    wins[best]++;
  }
  return Object.fromEntries(arms.map((a) => [a.id, round6(wins[a.id] / draws)]));
}

// familyVariants are the variants of a family that serve tenant: its own
// and the operator's stock ones (public, in the manifest's tenant) — never
// another tenant's, public or not.
async function familyVariants(sql, tenant, family, stockTenant) {
  return familyEntities(sql, tenant, stockTenant, 'prompt_variant', family);
}

// familyEntities are the latest versions of a tenant's spans of an entity
// type whose metadata.family is family, and of the stock tenant's public
// ones (ledger.heads shows a kernel its own tenant's rows only, so the
// stock ones are found in the registry), active, by id.
async function familyEntities(sql, tenant, stockTenant, entityType, family) {
  const { rows: own } = await sql`SELECT h.id FROM ledger.heads h
    WHERE h.tenant_id = ${tenant} AND h.entity_type = ${entityType}`;
  const { rows: stock } = stockTenant && stockTenant !== tenant ? await sql`SELECT DISTINCT id FROM ledger.universal_registry
    WHERE tenant_id = ${stockTenant} AND entity_type = ${entityType} AND visibility = 'public'` : { rows: [] };
  const latest = await latestOf(sql, [...own, ...stock].map((r) => r.id));
  return [...latest.values()]
    .filter((v) => v.entity_type === entityType && (v.tenant_id === tenant || (v.tenant_id === stockTenant && v.visibility === 'public')))
    .filter((v) => v.metadata && (family === undefined || v.metadata.family === family))
    .filter((v) => !v.is_deleted && (v.status || 'active') === 'active')
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function manifestTenant(sql) {
  const { rows } = await sql`SELECT tenant_id FROM ledger.universal_registry WHERE id = ${MANIFEST_ID} AND seq = 0`;
  return rows[0] ? rows[0].tenant_id : '';
}

// bandit decides a family's traffic from the window's evidence.
async function bandit(ctx, tenant, family, opts) {
  const { sql, crypto } = ctx;
  const cfg = opts.cfg;
  const stock = await manifestTenant(sql);
  const variants = await familyVariants(sql, tenant, family, stock);
  if (!variants.length) throw promptError('not_found', `family ${family}: no prompt_variant of this tenant (or stock) is in it`);
  const since = new Date(Date.parse(ctx.now()) - opts.window_days * 86400000).toISOString();
  const prior = { alpha: Number(cfg.bandit_prior.alpha) || 1, beta: Number(cfg.bandit_prior.beta) || 1 };
  const arms = [], posteriors = {}, evidence = {}, hashes = {};
  for (const v0 of variants) {
    let v;
    try { v = await readVariant(sql, v0.id); } catch (e) { if (e.code) continue; throw e; }
    const b = await build(ctx, tenant, v);
    hashes[v.id] = b.compiled_hash;
    // Evals of the current build: any passing one makes the variant
    // eligible; the window's runs are evidence.
    const { rows: evals } = await sql`SELECT at, metadata->>'passed' AS passed,
        (SELECT sum((f->>'passed')::int) FROM jsonb_array_elements(output->'fixtures') f) AS ok,
        (SELECT sum((f->>'runs')::int) FROM jsonb_array_elements(output->'fixtures') f) AS n
      FROM ledger.universal_registry
      WHERE tenant_id = ${tenant} AND entity_type = 'prompt_eval_run' AND parent_id = ${v.id}
        AND metadata->>'compiled_hash' = ${b.compiled_hash}`;
    const eligible = evals.some((e) => e.passed === 'true');
    let s = 0, f = 0;
    for (const e of evals) {
      if (Date.parse(e.at) < Date.parse(since)) continue;
      s += Number(e.ok || 0); f += Number(e.n || 0) - Number(e.ok || 0);
    }
    const { rows: runs } = await sql`SELECT status, count(*)::int AS n FROM ledger.universal_registry
      WHERE tenant_id = ${tenant} AND entity_type = 'prompt_run' AND parent_id = ${v.id} AND at >= ${since}::timestamptz
        AND metadata->>'compiled_hash' = ${b.compiled_hash}
      GROUP BY status`;
    let ok = 0, bad = 0;
    for (const r of runs) { if (r.status === 'complete') ok += r.n; else bad += r.n; }
    const { rows: [esc] } = await sql`SELECT count(*)::int AS n FROM ledger.universal_registry
      WHERE tenant_id = ${tenant} AND entity_type = 'human_review' AND metadata->>'variant_id' = ${v.id} AND at >= ${since}::timestamptz
        AND metadata->>'compiled_hash' = ${b.compiled_hash}`;
    const escalated = Math.min(esc.n, ok);
    const { rows: fb } = await sql`SELECT f.metadata FROM ledger.universal_registry f
      JOIN ledger.universal_registry r ON r.id = f.related_to[1] AND r.seq = 0
      WHERE f.tenant_id = ${tenant} AND f.entity_type = 'prompt_feedback' AND f.at >= ${since}::timestamptz
        AND r.entity_type = 'prompt_run' AND r.parent_id = ${v.id} AND r.metadata->>'compiled_hash' = ${b.compiled_hash}`;
    let fs = 0, ff = 0;
    for (const { metadata: m } of fb) {
      const score = typeof m.score === 'number' ? Math.min(1, Math.max(0, m.score)) : m.positive === true ? 1 : m.positive === false ? 0 : null;
      if (score === null) continue;
      fs += score; ff += 1 - score;
    }
    const S = s + (ok - escalated) + fs, F = f + bad + escalated + ff;
    posteriors[v.id] = { alpha: round6(prior.alpha + S), beta: round6(prior.beta + F) };
    evidence[v.id] = { eval_passed: s, eval_failed: f, runs_ok: ok - escalated, runs_failed: bad, escalations: escalated,
      feedback: round6(fs), feedback_negative: round6(ff), eligible };
    if (eligible) arms.push({ id: v.id, alpha: prior.alpha + S, beta: prior.beta + F });
  }
  const seed = opts.seed === undefined ? crypto.randomBytes(4).reduce((n, x) => n * 256 + x, 0) : opts.seed;
  const weights = arms.length ? thompson(seed, arms, cfg.bandit_draws) : {};
  for (const id of Object.keys(posteriors)) if (weights[id] === undefined) weights[id] = 0;
  const decisionId = opts.id || derivedId(crypto, 'prompt_bandit', tenant, family, seed, ctx.now());
  const routingId = derivedId(crypto, 'prompt_routing', tenant, family);
  const routing = (await latestOf(sql, [routingId])).get(routingId);
  const decision = {
    id: decisionId, seq: 0, entity_type: 'prompt_bandit', who: 'kernel:prompt_bandit', did: 'decided', this: 'prompt.bandit',
    status: 'complete', name: family, related_to: Object.keys(posteriors).slice(0, 64), owner_id: opts.owner_id, visibility: 'tenant',
    input: { family, window_days: opts.window_days, since, tick: opts.tick || undefined },
    output: { weights, eligible: arms.map((a) => a.id) },
    metadata: { family, window_days: opts.window_days, seed, draws: cfg.bandit_draws, priors: prior, posteriors, evidence,
      compiled_hashes: hashes, weights, eligible: arms.map((a) => a.id), routing_id: routingId },
  };
  const route = nextVersion(routing && routing.tenant_id === tenant ? routing : null, {
    id: routingId, entity_type: 'prompt_routing', who: 'kernel:prompt_bandit', did: 'routed', this: 'prompt.routing',
    status: 'active', name: family, parent_id: decisionId, owner_id: opts.owner_id, visibility: 'tenant',
    metadata: { family, weights, decision_id: decisionId, compiled_hashes: hashes },
  });
  return { decision, route, summary: { prompt_bandit: decisionId, routing: routingId, family, seed, weights, posteriors } };
}
