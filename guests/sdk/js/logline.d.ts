// TypeScript declarations of the JavaScript surfaces of LogLine's QuickJS
// guest (runtime `quickjs`; abi/ABI.md, "JavaScript guests"). JS spans are
// plain JavaScript (ES2020, QuickJS 2021-03-27); these types are for editors
// and `tsc --checkJs`:
//
//   /// <reference path="logline.d.ts" />          (globals: logline, console, ...)
//   /** @type {import('./logline').Policy} */      (a policy's entry)
//
// Three kinds of source:
//   function  a function body; `input` is the run's input (JSON), what it
//             returns (or resolves to) is the output. Tier function: pure.
//   policy    export default function on(span) returning Action[] (or
//             nothing). Given {"batch": [span, ...]} the run returns one
//             PolicyResult per span. Tier policy: pure.
//   kernel    export default async function main(ctx: KernelContext).
//             Tier kernel: the whole ABI.
// The seed's script forms work too: globalThis.default = function ..., or a
// top-level function on (policies) / main (kernels).

/** A span as the ledger stores it (abi/ABI.md, DESIGN §3). */
export interface Span {
  id: string;
  seq: number;
  entity_type: string;
  who: string;
  did?: string | null;
  this: string;
  /** UTC, RFC 3339 with six fractional digits. */
  at: string;
  /** The seed's alias of `at`, as the policy_agent passes candidates. */
  when?: string;
  parent_id?: string | null;
  related_to?: string[] | null;
  owner_id?: string | null;
  tenant_id?: string | null;
  visibility: 'private' | 'tenant' | 'public';
  status?: string | null;
  is_deleted?: boolean;
  name?: string | null;
  description?: string | null;
  code?: string | null;
  language?: string | null;
  runtime?: string | null;
  input?: unknown;
  output?: unknown;
  error?: unknown;
  duration_ms?: number | null;
  trace_id?: string | null;
  prev_hash?: string | null;
  curr_hash?: string | null;
  signature?: string | null;
  public_key?: string | null;
  metadata?: { [key: string]: any } | null;
  [column: string]: unknown;
}

/** A span a guest asks the host to append; the host fills and signs the rest. */
export type NewSpan = Partial<Span> & { entity_type: string };

/** What a policy asks for (the policy_agent kernel carries it out). */
export type Action =
  | { run: 'run_code'; span_id: string; input?: unknown }
  | { emit_span: NewSpan }
  | { [key: string]: unknown };

/** A policy's entry: a span in, actions out (an empty array or nothing: no action). */
export type Policy = (span: Span, ctx: KernelContext) =>
  Action[] | null | undefined | false | Promise<Action[] | null | undefined | false>;

/**
 * What a policy declares it judges: its span's `metadata.judges` (not its
 * code). The policy_agent then shows it only spans of these entity types
 * whose fields hold one of the values given (all fields must), and the
 * engine boots the agent only when such a span arrives. Without it, a
 * policy judges every span. A declaration that does not check is refused
 * when the span is appended, naming the field (abi/ABI.md).
 */
export interface Judges {
  /** 1–16 entity types (never the engine's bookkeeping). */
  entity_types: string[];
  /** Equality on short text fields: a value or 1–32 of them. */
  where?: { [field in 'status' | 'who' | 'did' | 'this' | 'name']?: string | string[] };
}

/** One entry of a batch's output, in the order of the batch. */
export type PolicyResult = { actions: Action[] } | { error: { message: string } };

/** A kernel's entry; its return value (JSON) is the run's output. */
export type Kernel = (ctx: KernelContext) => unknown | Promise<unknown>;

/** abi.SQLResult */
export interface SQLResult<Row = { [column: string]: any }> {
  rows: Row[];
  /** A cap was reached: rows is a prefix. */
  truncated?: boolean;
}

/**
 * One read-only SELECT, parameterised: as a tagged template the values become
 * $1..$n and travel as parameters, never as text.
 *
 *   const { rows } = await sql`SELECT * FROM ledger.visible_timeline WHERE id = ${id}`;
 *   const { rows } = await sql('SELECT $1::int AS n', [5]);
 */
export interface SQL {
  <Row = { [column: string]: any }>(strings: TemplateStringsArray, ...values: unknown[]): Promise<SQLResult<Row>>;
  <Row = { [column: string]: any }>(query: string, params?: unknown[]): Promise<SQLResult<Row>>;
}

/** abi.ExecResult: a function that fails is a result with status "error", not a throw. */
export interface ExecResult {
  status: 'complete' | 'error';
  output?: unknown;
  error?: { code: string; message: string };
  fuel_used: number;
  duration_ms: number;
  code_seq?: number;
  module_hash?: string;
}

/** abi.HTTPRequest / abi.HTTPResponse (kernels only, allowlisted URLs). */
export interface HTTPRequest {
  method: string;
  url: string;
  headers?: { [name: string]: string };
  body?: string;
  /** A host variable in the manifest's provider_secrets; the guest never sees its value. */
  auth_env?: string;
  /** Where auth_env's value goes: a bearer header (default), or the URL's path in place of `{auth}`. */
  auth_in?: 'header' | 'path';
  /** Shortens the call's deadline. */
  timeout_ms?: number;
}
export interface HTTPResponse {
  status: number;
  headers?: { [name: string]: string };
  body: string;
  /** The call's wall time, measured by the host. */
  duration_ms: number;
}

/** Bytes: a string is hashed as its UTF-8. */
export type Bytes = string | ArrayBuffer | ArrayBufferView;

export interface Crypto {
  /** BLAKE3-256 (the host's), 32 bytes. */
  blake3(data: Bytes): Uint8Array;
  /** Lowercase hex. */
  hex(bytes: Uint8Array | ArrayBuffer): string;
  /** Hex to bytes; throws on anything else. */
  toU8(hex: string): Uint8Array;
  /** A version 4 UUID from the run's seeded random stream (recorded; not for secrets). */
  randomUUID(): string;
  randomBytes(n: number): Uint8Array;
  getRandomValues<T extends ArrayBufferView>(array: T): T;
  ed25519: {
    /** In @noble/ed25519's order. */
    verify(signature: Bytes, message: Bytes, publicKey: Bytes): boolean;
    /** Throws: guests never hold private keys; insertSpan has the host sign. */
    sign(...args: unknown[]): never;
    /** Throws, as sign. */
    getPublicKey(...args: unknown[]): never;
  };
}

/** What a failed host call throws. */
export interface LoglineError extends Error {
  name: 'LoglineError';
  /** The host function: sql, insert_span, exec, http, lock, unlock, env. */
  fn: string;
  /** abi.Err*: -1 capability_denied, -2 invalid, -3 not_found, -4 limit, -5 failed, -6 busy, -7 timeout. */
  errno: number;
  code: 'capability_denied' | 'invalid' | 'not_found' | 'limit' | 'failed' | 'busy' | 'timeout' | string;
  /** The host's message. */
  reason: string;
}

/** The `logline` global: every host call, for every kind of source. The host enforces tiers. */
export interface Logline {
  /** The raw value of an env key, or undefined. */
  env(key: string): string | undefined;
  sql: SQL;
  /** Appends a span (or an array of spans, all or none); resolves to what was stored. Kernels only. */
  insertSpan<T extends NewSpan | NewSpan[]>(span: T): Promise<T extends NewSpan[] ? Span[] : Span>;
  /** Runs the latest seq of a function (or policy) span in a sandbox of its own. Kernels only. */
  exec(spanId: string, input?: unknown): Promise<ExecResult>;
  /** Runs several, concurrently (at most 256): one result per request, a refused one included. */
  exec(requests: { span_id: string; input?: unknown; trace_id?: string }[]): Promise<ExecResult[]>;
  /** Kernels only; the URL must be on the manifest's allowlist. */
  http(req: HTTPRequest): Promise<HTTPResponse>;
  /** A tenant-wide lease: true taken (or renewed), false held by another run. Kernels only. */
  lock(key: string, ttlMs: number): Promise<boolean>;
  /** true released, false not held by this run. */
  unlock(key: string): Promise<boolean>;
  /** The run's clock as the ledger writes `at`: "2026-01-02T03:04:05.123456Z". */
  now(): string;
  crypto: Crypto;
  /** A log line at level 0 debug, 1 info, 2 warn, 3 error. */
  log(level: 0 | 1 | 2 | 3, ...args: unknown[]): void;
  LoglineError: { new (...args: any[]): LoglineError; prototype: LoglineError };
}

/** A kernel's ctx (policies get it as their second argument, with the pure tier's rights). */
export interface KernelContext {
  /** The run's input: a kernel's boot input, a policy's span or batch. */
  input: unknown;
  sql: SQL;
  insertSpan: Logline['insertSpan'];
  exec: Logline['exec'];
  http: Logline['http'];
  lock: Logline['lock'];
  unlock: Logline['unlock'];
  now: Logline['now'];
  crypto: Crypto;
  /** The env as an object: env.SPAN_ID is the value of SPAN_ID, or undefined. Not enumerable. */
  env: { readonly [key: string]: string | undefined };
  log: Logline['log'];
  console: Console;
}

declare global {
  const logline: Logline;
  /** Function bodies only: the run's input. */
  const input: any;
  /** Lines go to the run's log: debug 0, log/info 1, warn 2, error 3. */
  const console: Console;
  interface Console {
    debug(...args: unknown[]): void;
    log(...args: unknown[]): void;
    info(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
  }
  const crypto: Crypto;
  /** Milliseconds of the run's monotonic clock (it moves only by timers and host calls). */
  const performance: { now(): number };
  /** Virtual timers: they fire in order when no promise job is left, without waiting. */
  function setTimeout(fn: (...args: any[]) => void, ms?: number, ...args: any[]): number;
  function clearTimeout(id: number | undefined): void;
  function queueMicrotask(fn: () => void): void;
  function structuredClone<T>(value: T): T;
  class TextEncoder {
    readonly encoding: 'utf-8';
    encode(input?: string): Uint8Array;
  }
  class TextDecoder {
    readonly encoding: 'utf-8';
    decode(input?: ArrayBuffer | ArrayBufferView): string;
  }
}
