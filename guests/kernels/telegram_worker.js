// telegram_worker: answers the Telegram messages of the tenant it is booted
// for (env TENANT), oldest first, a batch per pass. The webhook (POST
// /api/adapters/telegram/{bot}) appends each message a bot receives as a
// telegram_message span (status received) of the bot's tenant; the
// manifest's telegram.bots say what answers it:
//   - a bot with a family: the prompt runner (prompt.js runGuarded), with a
//     prompt_request of its own (id derived from the message's), so the run
//     is recorded, judged and routed like any other;
//   - a bot with a function_id: that function, run with {text, chat_id,
//     from}; the reply is its output's text (or reply, or the output
//     itself when it is a string), and the run is an execution span.
// The reply goes out through the Bot API's sendMessage over the http
// capability: the bot token is the host variable the manifest names
// (token_env), which the host puts in the URL's path ({auth}); this kernel
// never sees it. Then the reply (telegram_reply, id derived from the
// message's) and the message's next version (status answered, or error with
// a typed code) are appended together with the answer's spans.
//
// Exactly once across engines: the tenant's lease keeps two passes apart,
// and every span a message leads to has an id derived from it, so a second
// engine can never record a second reply. Before sending, the records are
// checked (insertSpan check, nothing appended): a message someone already
// closed is a conflict and is not sent again. A host that dies between the
// send and the append has sent a reply it did not record: the next pass
// sends it again (at-least-once for that window, one Bot API answer and
// one append long). A failed send is recorded as error and never retried:
// one message never holds up the ones behind it.
globalThis.default = async function main(ctx) {
  const { sql, lock, env } = ctx;
  const tenant = env.TENANT;
  if (!tenant) throw new Error('telegram_worker: env TENANT is required');
  if (!(await lock('telegram_worker', 120000))) return { busy: true };
  const manifest = await latestManifest(sql);
  const bots = telegramBots(manifest, tenant);
  const cfg = promptConfig(manifest);
  const batch = Math.max(1, Math.min(Number(env.BATCH || 8), 16));
  const { rows } = await sql(`SELECT ur.id, ur.seq, ur.who, ur."this", ur.owner_id, ur.tenant_id, ur.visibility,
      ur.trace_id, ur.input, ur.metadata
    FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
    WHERE h.tenant_id = $1 AND h.entity_type = 'telegram_message' AND h.status = 'received'
    ORDER BY h.ord LIMIT $2`, [tenant, batch]);
  const res = { processed: 0, answered: 0, skipped: 0, errors: {} };
  const builds = new Map();
  // The guest's clock stands still during a run: the time a pass spends is
  // what the host measured of its calls. Past the budget, the next pass
  // takes the rest (the lease is held for the whole run).
  let spent = 0;
  for (const m of rows) {
    if (spent > TELEGRAM_PASS_MS) return Object.assign(res, { more: true });
    const r = await answerMessage(ctx, tenant, m, bots, cfg, builds);
    spent += r.ms;
    if (r.skipped) {
      res.skipped++;
      continue;
    }
    res.processed++;
    if (r.error) res.errors[r.error] = (res.errors[r.error] || 0) + 1;
    else res.answered++;
  }
  res.more = rows.length === batch;
  return res;
};

// How long a pass goes on answering (host-measured milliseconds of its
// answers and sends), and the Bot API's bounds.
const TELEGRAM_PASS_MS = 60000;
const TELEGRAM_SEND_TIMEOUT_MS = 10000;
const TELEGRAM_MAX_TEXT = 4096; // characters of a message (the Bot API's limit)
const TELEGRAM_API = 'https://api.telegram.org';

// telegramBots are the manifest's bots bound to tenant, by name (the host
// checked the section: stage0.Manifest.Check).
function telegramBots(manifest, tenant) {
  const all = (manifest.telegram && manifest.telegram.bots) || {};
  const out = {};
  for (const name of Object.keys(all)) if (all[name] && all[name].tenant === tenant) out[name] = all[name];
  return out;
}

// sendURL is the bot's sendMessage URL with the token's placeholder, as
// stage0.TelegramBot.SendURL writes it.
function sendURL(bot) {
  return String(bot.api_base || TELEGRAM_API).replace(/\/+$/, '') + '/bot{auth}/sendMessage';
}

function telegramError(code, message) {
  return { code, message: String(message).slice(0, 1000) };
}

// answerMessage answers one message and records what happened; it returns
// {error: code} for a message closed as failed, {skipped} for one another
// engine already closed, and ms, the host time it took.
async function answerMessage(ctx, tenant, msg, bots, cfg, builds) {
  const { crypto } = ctx;
  const input = msg.input || {};
  const name = input.bot || (msg.metadata && msg.metadata.bot);
  const bot = bots[name];
  const replyId = derivedId(crypto, 'telegram_reply', msg.id);
  const base = { owner_id: msg.owner_id, visibility: msg.visibility || 'private' };
  const trace = msg.trace_id || crypto.randomUUID();
  let ms = 0;
  // The message's next version: answered, or error with why.
  const close = (error, extra) => Object.assign({
    id: msg.id, seq: Number(msg.seq) + 1, entity_type: 'telegram_message', who: 'kernel:telegram_worker',
    did: error ? 'failed' : 'answered', this: msg.this || 'telegram.message', status: error ? 'error' : 'answered',
    trace_id: trace, input: msg.input, error: error || undefined,
    metadata: Object.assign({}, msg.metadata, extra || {}),
  }, base);
  // Records what happened to the message, with the time spent so far.
  const finish = async (spans, error) => {
    await appendAll(ctx.insertSpan, spans, repairAnswer);
    return { error: error ? error.code : null, ms };
  };

  if (!bot) {
    return finish([close(telegramError('bot_not_configured', `the manifest binds no bot ${JSON.stringify(name)} to tenant ${tenant}`))],
      { code: 'bot_not_configured' });
  }
  const text = input.text;
  const chatId = input.chat && input.chat.id;
  if (typeof text !== 'string' || !text || chatId === undefined || chatId === null) {
    const e = telegramError('invalid_input', 'the message has no text or no chat.id');
    return finish([close(e)], e);
  }

  // The answer: spans recording it, and the text to send.
  let answer;
  try {
    answer = bot.family
      ? await answerByPrompt(ctx, tenant, msg, bot, text, cfg, builds, base, trace)
      : await answerByFunction(ctx, msg, bot, text, chatId, base, trace);
  } catch (e) {
    if (e && e.fn) throw e; // a host call that failed: the pass's problem
    answer = { spans: [], error: telegramError('answer_failed', `${bot.family ? 'family ' + bot.family : 'function ' + bot.function_id}: ${(e && e.message) || e}`) };
  }
  ms += answer.ms || 0;
  const meta = Object.assign({ answered_by: bot.family ? 'prompt' : 'function' }, answer.ref || {});
  if (answer.error) return finish([...answer.spans, close(answer.error, meta)], answer.error);
  meta.reply_id = replyId; // from here on a reply is recorded, sent or not
  let reply = answer.text;
  const truncated = [...reply].length > TELEGRAM_MAX_TEXT;
  if (truncated) reply = [...reply].slice(0, TELEGRAM_MAX_TEXT).join('');

  const payload = { chat_id: chatId, text: reply };
  if (input.message_id !== undefined && input.message_id !== null) payload.reply_to_message_id = input.message_id;
  const replySpan = (status, output, error, duration) => Object.assign({
    id: replyId, seq: 0, entity_type: 'telegram_reply', who: 'kernel:telegram_worker', did: status === 'sent' ? 'sent' : 'failed',
    this: 'telegram.reply', status, parent_id: msg.id, related_to: [msg.id, ...(answer.related || [])], trace_id: trace,
    input: payload, output: output === undefined ? undefined : output, error: error || undefined, duration_ms: duration,
    metadata: Object.assign({ bot: name, message_id: msg.id, update_id: input.update_id, truncated: truncated || undefined }, answer.ref || {}),
  }, base);

  // Still ours, and recordable? (Nothing is appended by a check.) Someone
  // who closed the message first makes it a conflict: not sent again.
  const planned = [...answer.spans, replySpan('sent', null, null, 0), close(null, meta)];
  const verdicts = await ctx.insertSpan({ spans: planned, check: true });
  if (verdicts.some((v) => v && v.code === 'conflict')) return { skipped: true, ms };
  const bad = verdicts.findIndex(Boolean);
  if (bad >= 0) {
    const e = telegramError('invalid_output', `the reply could not be recorded, so it was not sent: ${planned[bad].entity_type}: ${verdicts[bad].message}`);
    return finish([...answer.spans, close(e, Object.assign({}, meta, { reply_id: undefined }))], e);
  }

  let sent;
  try {
    sent = await ctx.http({ method: 'POST', url: sendURL(bot), auth_env: bot.token_env, auth_in: 'path',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload), timeout_ms: TELEGRAM_SEND_TIMEOUT_MS });
  } catch (e) {
    if (!e || !e.fn) throw e;
    // Not delivered as far as we know (a timeout may have been: the Bot
    // API does not say), and never retried.
    const err = telegramError(e.code === 'timeout' ? 'send_timeout' : 'send_failed', `sendMessage: ${e.reason || e.message}`);
    return finish([...answer.spans, replySpan('error', undefined, err, 0), close(err, meta)], err);
  }
  ms += Number(sent.duration_ms) || 0;
  let body = null;
  try { body = JSON.parse(sent.body); } catch (e) { body = null; }
  if (sent.status < 200 || sent.status >= 300 || !body || body.ok !== true) {
    const desc = body && typeof body.description === 'string' ? body.description : String(sent.body).slice(0, 300);
    const err = telegramError('send_failed', `sendMessage answered HTTP ${sent.status}${body && body.error_code ? ` (error_code ${body.error_code})` : ''}: ${desc}`);
    return finish([...answer.spans, replySpan('error', undefined, err, sent.duration_ms), close(err, meta)], err);
  }
  const result = body.result || {};
  // Only what a span holds exactly: the append after a send must not fail
  // on the Bot API's answer (the message would be sent again).
  const safe = (n) => (Number.isSafeInteger(n) ? n : null);
  const out = { message_id: safe(result.message_id), date: safe(result.date) };
  return finish([...answer.spans, replySpan('sent', out, null, sent.duration_ms), close(null, meta)], null);
}

// answerByPrompt runs the bot's family on the message through the prompt
// runner: a prompt_request of its own (seq 0 running and its closing
// version, in the same array as the run), as the CLI's runs are recorded.
async function answerByPrompt(ctx, tenant, msg, bot, text, cfg, builds, base, trace) {
  const req = Object.assign({
    id: derivedId(ctx.crypto, 'telegram_prompt_request', msg.id), seq: 0, entity_type: 'prompt_request',
    who: 'kernel:telegram_worker', did: 'requested', this: 'prompt.run', status: 'running', trace_id: trace,
    related_to: [msg.id], input: { family: bot.family, user_input: text, context: bot.context || '' },
    metadata: { telegram_message_id: msg.id },
  }, base);
  const r = await runGuarded(ctx, tenant, Object.assign({ tenant_id: tenant }, req), cfg, builds);
  const spans = [req, ...r.out];
  const ref = { prompt_run_id: r.runId };
  const ms = r.run ? Number(r.run.duration_ms) || 0 : 0;
  if (r.status !== 'complete') {
    const e = r.error || {};
    return { spans, ref, ms, error: telegramError('answer_failed', `prompt run ${r.runId}: ${e.code || 'error'}: ${e.message || ''}`) };
  }
  const o = r.run.output || {};
  let reply = null;
  if (o.insufficient_evidence) reply = INSUFFICIENT;
  else if (o.parsed && typeof o.parsed === 'object' && typeof o.parsed.answer === 'string') reply = o.parsed.answer;
  else if (typeof o.parsed === 'string') reply = o.parsed;
  else if (typeof o.text === 'string') reply = o.text;
  if (!reply || !reply.trim()) return { spans, ref, ms, error: telegramError('empty_answer', `prompt run ${r.runId} gave no text to send`) };
  return { spans, ref, ms, text: reply, related: [r.runId] };
}

// answerByFunction runs the bot's function with {text, chat_id, from} and
// records the run as an execution span (id derived from the message's).
async function answerByFunction(ctx, msg, bot, text, chatId, base, trace) {
  const input = { text, chat_id: chatId, from: (msg.input && msg.input.from) || null };
  // The array form carries the trace and answers a refusal (no such
  // function) as the element's error rather than throwing.
  const [res] = await ctx.exec([{ span_id: bot.function_id, input, trace_id: trace }]);
  const execId = derivedId(ctx.crypto, 'telegram_execution', msg.id);
  const ex = Object.assign({
    id: execId, seq: 0, entity_type: 'execution', who: 'kernel:telegram_worker', did: 'executed', this: 'telegram.answer',
    status: res.status === 'complete' ? 'complete' : 'error', parent_id: bot.function_id, related_to: [bot.function_id, msg.id],
    trace_id: trace, input, duration_ms: res.duration_ms,
    metadata: { telegram_message_id: msg.id, fuel_used: res.fuel_used, code_seq: res.code_seq, module_hash: res.module_hash },
  }, base);
  const ref = { execution_id: execId, function_id: bot.function_id };
  const ms = Number(res.duration_ms) || 0;
  if (res.status !== 'complete') {
    ex.error = res.error;
    const e = res.error || {};
    return { spans: [ex], ref, ms, error: telegramError('answer_failed', `function ${bot.function_id}: ${e.code || 'error'}: ${e.message || ''}`) };
  }
  ex.output = res.output === undefined ? null : res.output;
  const o = res.output;
  const reply = typeof o === 'string' ? o
    : o && typeof o === 'object' ? (typeof o.text === 'string' ? o.text : typeof o.reply === 'string' ? o.reply : null) : null;
  if (!reply || !reply.trim()) {
    return { spans: [ex], ref, ms, error: telegramError('empty_answer', `function ${bot.function_id} gave no text (want a string, or {text} or {reply})`) };
  }
  return { spans: [ex], ref, ms, text: reply, related: [execId] };
}

// repairAnswer is appendAll's repair for a message's records: a run the
// ledger refuses is recorded as failed with why; anything else refused
// fails the pass (another engine did this work).
function repairAnswer(s, v) {
  if (s.entity_type === 'execution' || s.entity_type === 'prompt_run' || s.entity_type === 'provider_execution') {
    return Object.assign({}, s, { status: 'error', output: undefined,
      error: { code: 'invalid_output', message: `the ${s.entity_type} could not be recorded as it ran: ${v.message}` } });
  }
  return undefined;
}
