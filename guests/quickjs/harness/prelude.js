// The JavaScript half of the QuickJS guest (harness.c is the other half).
// Evaluated once in _initialize, so everything here is in the sandbox's
// snapshot and costs a run nothing. It is a function of the natives, which
// stay in this closure: guest code sees only the globals defined below.
// The surfaces are documented in abi/ABI.md ("JavaScript guests") and typed
// in guests/sdk/js/logline.d.ts.
(function (native) {
  'use strict';
  const G = globalThis;
  const parseJSON = JSON.parse;
  const stringify = JSON.stringify;
  const isArray = Array.isArray;
  const defineHidden = (o, k, v) => Object.defineProperty(o, k, { value: v, writable: true, configurable: true });

  // ---- errors of host calls ----

  const ERRNO = { '-1': 'capability_denied', '-2': 'invalid', '-3': 'not_found', '-4': 'limit', '-5': 'failed', '-6': 'busy', '-7': 'timeout' };

  // LoglineError is what a failed host call throws: code is the ABI's name
  // (capability_denied, invalid, not_found, limit, failed, busy, timeout).
  class LoglineError extends Error {
    constructor(fn, errno, code, message) {
      super(`${message.startsWith(fn + ':') ? '' : fn + ': '}${message} (${code})`);
      this.name = 'LoglineError';
      this.fn = fn;
      this.errno = errno;
      this.code = code;
      this.reason = message;
    }
  }

  function hostError(fn, errno, text) {
    let e = null;
    try { e = parseJSON(text); } catch (_) { /* not JSON: keep the text */ }
    const code = (e && typeof e.code === 'string') ? e.code : (ERRNO[errno] || `error(${errno})`);
    const message = (e && typeof e.message === 'string') ? e.message : String(text);
    return new LoglineError(fn, errno, code, message);
  }

  const CALL = { env: 0, sql: 1, insert_span: 2, exec: 3, http: 4 };

  // callJSON sends a JSON request to an i64 host call; the natives parse
  // the answer (undefined: the call failed, and lastError says how).
  function callJSON(fn, req) {
    const r = native.call(CALL[fn], stringify(req));
    if (r === undefined) {
      const [errno, text] = native.lastError();
      throw hostError(fn, errno, text);
    }
    return r;
  }

  // Host calls are synchronous; the async surfaces hand back settled
  // promises, so seed code that awaits them runs as written.
  const promised = (f) => function () {
    try { return Promise.resolve(f.apply(this, arguments)); } catch (e) { return Promise.reject(e); }
  };

  function envGet(key) {
    const r = native.call(CALL.env, String(key));
    if (r !== undefined) return r;
    const [errno, text] = native.lastError();
    if (errno === -3) return undefined;
    throw hostError('env', errno, text);
  }

  // sql is a tagged template: sql`SELECT ... WHERE id = ${id}` sends
  // "... WHERE id = $1" with params [id]; values are never spliced into the
  // text. sql(query, params) is the plain form.
  function sql(strings, ...values) {
    let query, params;
    if (typeof strings === 'string') {
      query = strings;
      params = values.length === 1 && isArray(values[0]) ? values[0] : values;
    } else if (strings && isArray(strings.raw)) {
      // A segment with an escape JS does not know (say \d in a regular
      // expression) has no cooked text: Postgres gets it as written.
      const seg = (i) => (strings[i] === undefined ? strings.raw[i] : strings[i]);
      query = seg(0);
      for (let i = 0; i < values.length; i++) query += '$' + (i + 1) + seg(i + 1);
      params = values;
    } else {
      throw new TypeError('sql: use it as a tagged template (sql`SELECT ... ${value}`) or sql(query, params)');
    }
    const res = callJSON('sql', { query, params: params.map(sqlParam) });
    if (!isArray(res.rows)) res.rows = [];
    return res;
  }
  function sqlParam(v) {
    if (v === undefined) return null;
    if (v instanceof Date) return v.toISOString();
    if (typeof v === 'bigint') return v.toString();
    return v;
  }

  function lock(key, ttlMs) {
    const r = native.lock(String(key), Math.max(0, Math.floor(Number(ttlMs))));
    if (r === 0) return true;
    if (r === -6) return false;
    throw hostError('lock', r, native.pending());
  }
  function unlock(key) {
    const r = native.lock(String(key));
    if (r === 0) return true;
    if (r === -3) return false;
    throw hostError('unlock', r, native.pending());
  }

  // now is the run's clock as the ledger writes `at`: UTC, six fractional
  // digits.
  const now = () => native.nowISO();

  // ---- bytes and crypto (no key ever enters a guest: no signing here) ----

  const u8 = (ab) => new Uint8Array(ab);
  // raw is what the natives take: a string (as UTF-8) or an ArrayBuffer.
  function raw(b) {
    if (typeof b === 'string' || b instanceof ArrayBuffer) return b;
    if (ArrayBuffer.isView(b)) {
      return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer
        : b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    }
    throw new TypeError('expected a string, an ArrayBuffer or a typed array');
  }
  function hex(b) {
    if (typeof b === 'string') throw new TypeError('hex: expected bytes (an ArrayBuffer or a typed array), not a string');
    return native.hex(raw(b));
  }
  const toU8 = (h) => u8(native.fromHex(String(h)));
  const blake3 = (data) => u8(native.blake3(raw(data)));
  const randomBytes = (n) => u8(native.random(n));
  function getRandomValues(ta) {
    if (!ArrayBuffer.isView(ta)) throw new TypeError('getRandomValues: expected a typed array');
    const b = native.random(ta.byteLength);
    new Uint8Array(ta.buffer, ta.byteOffset, ta.byteLength).set(u8(b));
    return ta;
  }
  function randomUUID() {
    const b = randomBytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = hex(b);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  const noKeys = () => { throw new Error('ed25519: guests never hold private keys; insertSpan has the host sign'); };
  const ed25519 = Object.freeze({
    // verify(signature, message, publicKey), in @noble/ed25519's order.
    verify: (sig, msg, pub) => native.ed25519Verify(raw(pub), raw(msg), raw(sig)),
    sign: noKeys,
    getPublicKey: noKeys,
  });
  const crypto = Object.freeze({ blake3, hex, toU8, randomUUID, randomBytes, getRandomValues, ed25519 });

  class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(s = '') { return u8(native.utf8Encode(String(s))); }
  }
  class TextDecoder {
    get encoding() { return 'utf-8'; }
    decode(b) { return b === undefined ? '' : native.utf8Decode(raw(b)); }
  }

  // ---- logging ----

  function inspect(v) {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return describe(v);
    if (typeof v === 'function') return `[Function ${v.name || '(anonymous)'}]`;
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'symbol' || v === undefined) return String(v);
    try {
      const s = stringify(v, (k, x) => (typeof x === 'bigint' ? `${x}n` : x));
      return s === undefined ? String(v) : s;
    } catch (_) {
      return String(v);
    }
  }
  const logAt = (level) => (...args) => native.log(level, args.map(inspect).join(' '));
  const console = Object.freeze({
    debug: logAt(0), log: logAt(1), info: logAt(1), warn: logAt(2), error: logAt(3),
  });

  // ---- structuredClone (for the plain data of spans) ----

  function structuredClone(v, seen = new Map()) {
    if (v === null || typeof v !== 'object') {
      if (typeof v === 'function' || typeof v === 'symbol') throw new TypeError('structuredClone: cannot clone a ' + typeof v);
      return v;
    }
    if (seen.has(v)) return seen.get(v);
    let out;
    if (v instanceof Date) out = new Date(v.getTime());
    else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
    else if (v instanceof ArrayBuffer) out = v.slice(0);
    else if (ArrayBuffer.isView(v)) out = new v.constructor(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
    else if (v instanceof Map) { out = new Map(); seen.set(v, out); v.forEach((x, k) => out.set(structuredClone(k, seen), structuredClone(x, seen))); return out; }
    else if (v instanceof Set) { out = new Set(); seen.set(v, out); v.forEach((x) => out.add(structuredClone(x, seen))); return out; }
    else if (isArray(v)) { out = []; seen.set(v, out); for (let i = 0; i < v.length; i++) out[i] = structuredClone(v[i], seen); return out; }
    else { out = {}; seen.set(v, out); for (const k of Object.keys(v)) out[k] = structuredClone(v[k], seen); return out; }
    seen.set(v, out);
    return out;
  }

  // ---- virtual timers: they fire, in order, when nothing else can run ----

  const timers = new Map();
  let timerSeq = 0;
  let virtualNow = 0;
  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== 'function') throw new TypeError('setTimeout: the callback must be a function');
    const id = ++timerSeq;
    timers.set(id, { at: virtualNow + Math.max(0, Number(ms) || 0), id, fn, args });
    return id;
  }
  const clearTimeout = (id) => { timers.delete(id); };
  function pump() {
    let next = null;
    for (const t of timers.values()) {
      if (!next || t.at < next.at || (t.at === next.at && t.id < next.id)) next = t;
    }
    if (!next) return false;
    timers.delete(next.id);
    virtualNow = next.at;
    next.fn(...next.args);
    return true;
  }

  // ---- the global object guests see ----

  const logline = Object.freeze({
    env: envGet,
    sql: promised(sql),
    insertSpan: promised((span) => callJSON('insert_span', span)),
    // exec(spanId, input), or exec([{span_id, input}, ...]): the host runs
    // an array concurrently and answers one result per request.
    exec: promised((spanId, input) => callJSON('exec', isArray(spanId) ? spanId
      : input === undefined ? { span_id: spanId } : { span_id: spanId, input })),
    http: promised((req) => callJSON('http', req)),
    lock: promised(lock),
    unlock: promised(unlock),
    now,
    crypto,
    log: (level, ...args) => native.log(level | 0, args.map(inspect).join(' ')),
    LoglineError,
  });
  const envProxy = new Proxy(Object.create(null), {
    get: (_, k) => (typeof k === 'string' ? envGet(k) : undefined),
    has: (_, k) => typeof k === 'string' && envGet(k) !== undefined,
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
    ownKeys: () => [],
  });
  const t0 = native.monoMillis();
  const performance = Object.freeze({ now: () => native.monoMillis() - t0 });
  const queueMicrotask = (fn) => { Promise.resolve().then(() => fn()); };

  for (const [k, v] of Object.entries({
    logline, console, TextEncoder, TextDecoder, structuredClone: (v) => structuredClone(v),
    setTimeout, clearTimeout, queueMicrotask, performance, crypto,
  })) defineHidden(G, k, v);

  // ---- compile (logline_prepare) ----

  const FN_PREFIX = '(function (input) {';
  let kind = null;
  let name = '';
  let entry = null;

  // A policy or kernel whose source has a line starting with import or
  // export is an ES module; anything else is a script.
  const MODULE_RE = /^[ \t]*(import[\s{*'"]|export[\s{*])/m;

  let source = '';

  function prepare(init) {
    if (!init || typeof init.source !== 'string') throw new TypeError('logline_prepare: want {"kind","source","name"}');
    source = init.source;
    kind = init.kind;
    name = typeof init.name === 'string' && init.name !== '' ? init.name : `${kind}.js`;
    const src = init.source;
    switch (kind) {
      case 'function':
        // As the seed's new Function('input', code): a function body. The
        // body starts on line 1, so lines match the source.
        entry = native.evalScript(FN_PREFIX + src + '\n})', name);
        break;
      case 'policy':
      case 'kernel': {
        const want = kind === 'policy' ? 'on' : 'main';
        if (MODULE_RE.test(src)) {
          const ns = native.compileModule(src, name);
          entry = typeof ns.default === 'function' ? ns.default : ns[want];
        } else {
          native.evalScript(src, name);
          // The seed's forms: globalThis.default = function ..., or a
          // top-level function on / main.
          entry = typeof G.default === 'function' ? G.default
            : native.evalScript(`typeof ${want} === 'function' ? ${want} : undefined`, '<logline>');
        }
        if (typeof entry !== 'function') {
          throw new TypeError(kind === 'policy'
            ? `${name}: a policy exports default function on(span) (or sets globalThis.default)`
            : `${name}: a kernel exports default async function main(ctx) (or sets globalThis.default)`);
        }
        break;
      }
      default:
        throw new TypeError(`logline_prepare: kind ${stringify(kind)} is not function, policy or kernel`);
    }
  }

  // compileError is prepare's failure as one line for the author, with the
  // position of a syntax error.
  function compileError(e, src) {
    if (e instanceof SyntaxError && typeof e.lineNumber === 'number') {
      let line = e.lineNumber;
      let col = typeof e.columnNumber === 'number' ? e.columnNumber : 0;
      let msg = e.message;
      if (kind === 'function' && (e.fileName || name) === name) {
        const lines = src.split('\n');
        if (line === 1 && col > FN_PREFIX.length) col -= FN_PREFIX.length;
        if (line > lines.length) {
          // In the wrapper's closing "})": the body ended too early or
          // closed one brace too many. Point at its end.
          line = lines.length;
          col = lines[line - 1].length + 1;
          msg = 'unexpected end of the function body (is a bracket left open, or closed once too often?)';
        }
      }
      return `${e.fileName || name}:${line}:${col}: SyntaxError: ${msg}`;
    }
    return describe(e);
  }

  // ---- run ----

  let state = null; // {done, output} | {done, error}

  const json = (v) => {
    const s = stringify(v === undefined ? null : v);
    return s === undefined ? 'null' : s;
  };

  function actions(out) {
    if (!out) return [];
    if (!isArray(out)) throw new TypeError(`${name}: a policy returns an array of actions (or nothing), not ${typeof out}`);
    return out;
  }

  const isThenable = (v) => v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function';

  function settle(r, toOutput) {
    if (!isThenable(r)) {
      state = { done: true, output: toOutput(r) };
      return;
    }
    state = { done: false };
    Promise.resolve(r).then(
      (v) => { try { state = { done: true, output: toOutput(v) }; } catch (e) { state = { done: true, error: e }; } },
      (e) => { state = { done: true, error: e }; });
  }

  function makeCtx(input) {
    return {
      input, sql: logline.sql, insertSpan: logline.insertSpan, now, crypto, env: envProxy,
      exec: logline.exec, lock: logline.lock, unlock: logline.unlock, http: logline.http,
      log: logline.log, console,
    };
  }

  // The entries of a batch's output, as JSON text: cheaper than objects
  // for JSON.stringify to walk again.
  const EMPTY = '{"actions":[]}';
  const actionsEntry = (v) => {
    const a = actions(v);
    return a.length === 0 ? EMPTY : '{"actions":' + json(a) + '}';
  };
  const errorEntry = (e) => '{"error":{"message":' + stringify(String(e)) + '}}';

  function runPolicy(input) {
    if (input === null || typeof input !== 'object') throw new TypeError(`${name}: a policy's input is a span or {"batch": [span, ...]}`);
    const ctx = makeCtx(input);
    if (!isArray(input.batch)) return settle(entry(input, ctx), (v) => json(actions(v)));
    // One entry per span: a span whose evaluation throws gets an error and
    // the others go on.
    const spans = input.batch;
    const out = new Array(spans.length);
    const waits = [];
    // The common answers (nothing, an array) take no function call here:
    // each costs about as much as a small policy's own work.
    for (let i = 0; i < spans.length; i++) {
      try {
        const r = entry(spans[i], ctx);
        if (!r) out[i] = EMPTY;
        else if (isArray(r)) out[i] = r.length === 0 ? EMPTY : '{"actions":' + stringify(r) + '}';
        else if (isThenable(r)) {
          waits.push(Promise.resolve(r).then(
            (v) => { try { out[i] = actionsEntry(v); } catch (e) { out[i] = errorEntry(e); } },
            (e) => { out[i] = errorEntry(e); }));
        } else out[i] = actionsEntry(r); // not an array: its error
      } catch (e) {
        out[i] = errorEntry(e);
      }
    }
    const text = () => '[' + out.join(',') + ']';
    settle(waits.length ? Promise.all(waits).then(text) : text(), (s) => s);
  }

  // run gets the run's input parsed (none: null).
  function run(input) {
    switch (kind) {
      case 'function': return settle(entry(input), json);
      case 'policy': return runPolicy(input);
      case 'kernel': return settle(entry(makeCtx(input)), json);
      default: throw new Error('the module was not prepared: no source was compiled');
    }
  }

  function finish() {
    if (!state || !state.done) {
      throw new Error(`${name}: the run ended with its promise pending (nothing else can settle it: host calls are synchronous, and no timer was left)`);
    }
    if ('error' in state) throw state.error;
    return state.output;
  }

  // describe is an uncaught error for the run's log: String(e) and its
  // stack, without the prelude's own frames.
  function describe(e) {
    if (e instanceof Error) {
      const s = String(e);
      if (typeof e.stack !== 'string') return s;
      const frames = e.stack.split('\n').filter((l) => l.trim() !== '' && !PRELUDE_FRAME.test(l));
      return frames.length ? `${s}\n${frames.join('\n')}` : s;
    }
    return 'uncaught ' + inspect(e);
  }
  const PRELUDE_FRAME = /\(<logline prelude>(:\d+)?\)$|^\s*at apply \(native\)$/;

  return { prepare, compileError: (e) => compileError(e, source), run, pump, finish, describe };
})
