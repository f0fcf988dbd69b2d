// @logline/client: the LogLine HTTP API from TypeScript, in browsers and
// Node 20 alike (fetch, ReadableStream and TextDecoder only).
//
// The types are generated from the server's OpenAPI document (schema.d.ts,
// `make client`); requests go through openapi-fetch, which checks paths,
// parameters and bodies against those types. What the document cannot
// express by itself is hand-written here: problems as a typed error, NDJSON
// batches, and the Server-Sent Events stream over fetch.

import createClient from "openapi-fetch";
import type { Client, Middleware } from "openapi-fetch";
import type { components, paths } from "./schema.js";
import { SSEParser } from "./sse.ts";

export type { paths, components } from "./schema.js";
export type { Client } from "openapi-fetch";
export { SSEParser, type SSEEvent } from "./sse.ts";

type Schemas = components["schemas"];
/** One row of the ledger, as the API returns it (and takes it: entity_type, who and this are required). */
export type Span = Schemas["Span"];
/** RFC 9457 problem details with LogLine's extensions (code, field, span, line). */
export type Problem = Schemas["Problem"];
/** A page of a listing: items with their cursors, next, more. */
export type Page = Schemas["Page"];
/** One listed span with its cursor. */
export type Item = Schemas["Item"];
/** Every version of a span, oldest first. */
export type Versions = Schemas["Versions"];
export type VerifyReport = Schemas["VerifyReport"];
export type ExecuteRequest = Schemas["ExecuteRequest"];
export type ExecuteResult = Schemas["ExecuteResult"];
export type Metrics = Schemas["Metrics"];
export type Health = Schemas["Health"];
export type PromptRunRequest = Schemas["PromptRunRequest"];
export type PromptRunResult = Schemas["PromptRunResult"];
export type PromptFamily = Schemas["PromptFamily"];
/** The query parameters of GET /api/timeline/stream (entity_type, status, trace_id, include, exclude_type, ...). */
export type StreamQuery = NonNullable<paths["/api/timeline/stream"]["get"]["parameters"]["query"]>;
/** The query parameters of GET /api/spans. */
export type ListQuery = NonNullable<paths["/api/spans"]["get"]["parameters"]["query"]>;

export interface LogLineOptions {
  /** The server, e.g. "http://127.0.0.1:8080", or "" for the page's own origin (browsers). */
  baseUrl: string;
  /** Sent as Authorization: Bearer; a function is read per request (and per stream connection). */
  token?: string | (() => string | undefined);
  /** The fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
}

/**
 * Every non-2xx answer the API gives, as the problem it sent (RFC 9457:
 * status, code, field). An answer that is not a problem (a proxy's page) is
 * wrapped as one with code "http_error" and its text as detail.
 */
export class ProblemError extends Error {
  status: number;
  code?: string;
  field?: string;
  problem: Problem;

  constructor(problem: Problem) {
    const where = problem.field ? ` (${problem.field})` : "";
    super(`${problem.status} ${problem.code}${where}: ${problem.detail ?? problem.title}`);
    this.name = "ProblemError";
    this.problem = problem;
    this.status = problem.status;
    this.code = problem.code;
    this.field = problem.field;
  }

  /** The error for a response: its parsed body (openapi-fetch's error, or read here) as a problem. */
  static from(response: Response, body: unknown): ProblemError {
    if (isProblem(body)) return new ProblemError(body);
    const text = typeof body === "string" ? body.trim().slice(0, 500) : "";
    return new ProblemError({
      type: "about:blank",
      title: response.statusText || `HTTP ${response.status}`,
      status: response.status,
      code: "http_error",
      detail: text || undefined,
    });
  }

  /** Reads a failed response's body and makes its error. */
  static async read(response: Response): Promise<ProblemError> {
    let body: unknown;
    try {
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    } catch {
      body = undefined;
    }
    return ProblemError.from(response, body);
  }
}

function isProblem(v: unknown): v is Problem {
  if (typeof v !== "object" || v === null) return false;
  const p = v as Record<string, unknown>;
  return typeof p.status === "number" && typeof p.code === "string" && typeof p.title === "string";
}

export interface StreamOptions {
  /** Which spans: the stream's query parameters (as the listings select). */
  query?: StreamQuery;
  /** Resume after this cursor (a span's cursor, or a Subscription's lastEventId). */
  lastEventId?: string;
  /** Every span, in commit order, each once, across reconnects. An exception closes the subscription (reported through onState). */
  onSpan(span: Span, cursor: string): void;
  /**
   * connecting (each attempt), open (the server answered with the
   * stream), retrying (the connection failed or ended: err says how; a new
   * attempt follows after a backoff), closed (by close() or the signal: no
   * err; or for good: err is the ProblemError of a 4xx answer, or what
   * else made it give up).
   */
  onState?(state: "connecting" | "open" | "retrying" | "closed", err?: unknown): void;
  /** Aborting it closes the subscription. */
  signal?: AbortSignal;
  /**
   * Reconnect backoff: minBackoffMs doubling per failed attempt up to
   * maxBackoffMs, jittered (between half and all of it). The server's
   * retry: raises the floor: no attempt comes sooner (nor later than
   * maxBackoffMs). Defaults 250 and 10000. A connection that opened starts
   * the backoff over.
   */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * A connection that brings nothing (not even the server's heartbeat
   * comment, every 15 s) for this long is taken as dead and replaced.
   * Default 45000; 0 never.
   */
  idleTimeoutMs?: number;
}

export interface Subscription {
  /** Ends the stream for good (onState "closed"). Idempotent. */
  close(): void;
  /** The cursor of the last span delivered, or the position the server started at; pass it to resume. */
  readonly lastEventId: string | undefined;
  /** Whether a connection is open now. */
  readonly connected: boolean;
}

/** The result of appendSpans: what the server stored, and whether it was an Idempotency-Key replay. */
export interface Appended {
  spans: Span[];
  /** 200 with Idempotent-Replayed: the first attempt's spans, nothing written now. */
  replayed: boolean;
  status: number;
}

export interface LogLine {
  /** The typed openapi-fetch client; Authorization is added by a middleware (unless a request sets its own). */
  api: Client<paths>;
  /** The data of a successful answer, or throws its ProblemError. */
  unwrap<T>(r: { data?: T; error?: unknown; response: Response }): T;
  /** Follows GET /api/timeline/stream (fetch-based SSE: EventSource cannot send Authorization). */
  stream(opts: StreamOptions): Subscription;
  /**
   * POST /api/spans as NDJSON: the spans are stored in one transaction, all
   * or none. With idempotencyKey, a retry returns what the first attempt
   * stored. Throws ProblemError (span and line name the one at fault).
   */
  appendSpans(spans: Span[], opts?: { idempotencyKey?: string; signal?: AbortSignal }): Promise<Appended>;
}

const NDJSON = "application/x-ndjson";

export function createLogLine(opts: LogLineOptions): LogLine {
  const baseUrl = opts.baseUrl.replace(/\/+$/, "");
  // Called unbound: a browser's fetch refuses to run with another `this`.
  const doFetch: typeof fetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const token = (): string | undefined => (typeof opts.token === "function" ? opts.token() : opts.token);
  const auth: Middleware = {
    onRequest({ request }) {
      const t = token();
      if (t && !request.headers.has("Authorization")) request.headers.set("Authorization", `Bearer ${t}`);
      return request;
    },
  };
  const api = createClient<paths>({ baseUrl, fetch: (req: Request) => doFetch(req) });
  api.use(auth);

  function unwrap<T>(r: { data?: T; error?: unknown; response: Response }): T {
    if (!r.response.ok || r.error !== undefined) throw ProblemError.from(r.response, r.error);
    return r.data as T;
  }

  async function appendSpans(spans: Span[], o: { idempotencyKey?: string; signal?: AbortSignal } = {}): Promise<Appended> {
    const r = await api.POST("/api/spans", {
      // The body's type is one Span; the serializer writes the batch.
      body: spans as unknown as Span,
      bodySerializer: () => spans.map((s) => JSON.stringify(s)).join("\n") + "\n",
      headers: { "Content-Type": NDJSON, Accept: NDJSON },
      params: { header: o.idempotencyKey !== undefined ? { "Idempotency-Key": o.idempotencyKey } : {} },
      parseAs: "text",
      signal: o.signal,
    });
    const text = unwrap(r);
    const stored = text
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as Span);
    return { spans: stored, replayed: r.response.headers.get("Idempotent-Replayed") === "true", status: r.response.status };
  }

  function stream(so: StreamOptions): Subscription {
    return new Stream(baseUrl, doFetch, token, so);
  }

  return { api, unwrap, stream, appendSpans };
}

// cursorKey orders the server's cursors ("<tx>.<ord>") to drop a span
// already delivered, should a server ever send one again after a
// reconnect; cursors are otherwise opaque, and one that does not parse is
// never held back.
function cursorKey(c: string | undefined): [bigint, bigint] | undefined {
  const m = c === undefined ? null : /^(\d+)\.(-?\d+)$/.exec(c);
  return m ? [BigInt(m[1]!), BigInt(m[2]!)] : undefined;
}

function after(a: [bigint, bigint], b: [bigint, bigint]): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

// Fatal says the stream must not reconnect.
class Fatal {
  constructor(readonly err: unknown) {}
}

class Stream implements Subscription {
  private last: string | undefined;
  private open = false;
  private done = false;
  private readonly abort = new AbortController();
  private wake: (() => void) | undefined; // ends a backoff wait early

  constructor(
    private readonly baseUrl: string,
    private readonly doFetch: typeof fetch,
    private readonly token: () => string | undefined,
    private readonly o: StreamOptions,
  ) {
    this.last = o.lastEventId === "" ? undefined : o.lastEventId;
    const signal = o.signal;
    if (signal) {
      if (signal.aborted) queueMicrotask(() => this.close());
      else signal.addEventListener("abort", () => this.close(), { once: true });
    }
    void this.run();
  }

  get lastEventId(): string | undefined {
    return this.last;
  }

  get connected(): boolean {
    return this.open;
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.abort.abort();
    this.wake?.();
  }

  private state(s: "connecting" | "open" | "retrying" | "closed", err?: unknown): void {
    try {
      this.o.onState?.(s, err);
    } catch {
      // A state callback that throws must not stop the stream.
    }
  }

  private async run(): Promise<void> {
    const min = Math.max(1, this.o.minBackoffMs ?? 250);
    const max = Math.max(min, this.o.maxBackoffMs ?? 10_000);
    let serverRetry = 0;
    let failures = 0;
    let fatal: unknown;
    while (!this.done) {
      this.state("connecting");
      let err: unknown;
      try {
        await this.connect((ms) => (serverRetry = ms), () => (failures = 0));
        err = new Error("the stream ended");
      } catch (e) {
        if (e instanceof Fatal) {
          fatal = e.err;
          break;
        }
        err = e;
      } finally {
        this.open = false;
      }
      if (this.done) break;
      this.state("retrying", err);
      failures++;
      // Jittered so that clients a restart dropped together do not come
      // back together; never sooner than the server's retry: asks.
      const base = Math.min(max, Math.max(min, serverRetry) * 2 ** Math.min(failures - 1, 30));
      await this.sleep(Math.min(max, Math.max(serverRetry, base / 2 + (Math.random() * base) / 2)));
    }
    this.done = true;
    this.abort.abort();
    this.state("closed", fatal);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  // connect runs one connection until it ends (returns) or fails (throws;
  // Fatal for what a reconnect cannot fix).
  private async connect(onRetry: (ms: number) => void, opened: () => void): Promise<void> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(this.o.query ?? {})) {
      if (v !== undefined && v !== null) qs.set(k, String(v));
    }
    const q = qs.toString();
    const headers = new Headers({ Accept: "text/event-stream" });
    const t = this.token();
    if (t) headers.set("Authorization", `Bearer ${t}`);
    if (this.last !== undefined) headers.set("Last-Event-ID", this.last);
    // One controller per connection: the idle timer aborts this one only.
    const conn = new AbortController();
    const onAbort = () => conn.abort();
    this.abort.signal.addEventListener("abort", onAbort, { once: true });
    const idleMs = this.o.idleTimeoutMs ?? 45_000;
    let idle: ReturnType<typeof setTimeout> | undefined;
    let idled = false;
    const touch = () => {
      if (idleMs <= 0) return;
      if (idle !== undefined) clearTimeout(idle);
      idle = setTimeout(() => {
        idled = true;
        conn.abort();
      }, idleMs);
    };
    try {
      touch();
      const res = await this.doFetch(`${this.baseUrl}/api/timeline/stream${q ? `?${q}` : ""}`, {
        headers,
        cache: "no-store",
        signal: conn.signal,
      });
      if (!res.ok) {
        const pe = await ProblemError.read(res);
        // 4xx is an answer (a bad token, a bad parameter): asking again
        // gets the same. Only a timeout or too many requests may pass.
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) throw new Fatal(pe);
        throw pe;
      }
      const ct = res.headers.get("Content-Type") ?? "";
      if (!/^text\/event-stream\b/i.test(ct) || !res.body) {
        throw new Fatal(new Error(`the stream answered ${res.status} with Content-Type ${JSON.stringify(ct)}, not text/event-stream`));
      }
      this.open = true;
      opened();
      this.state("open");
      const reader = res.body.getReader();
      const decoder = new TextDecoder("utf-8");
      let failure: unknown;
      const parser = new SSEParser(
        (ev) => {
          if (failure !== undefined || this.done) return;
          if (ev.type !== "message" || ev.data === undefined) {
            // An id without data (the start position) still moves the
            // position: a reconnect before any span resumes there.
            if (ev.lastEventId !== "" && ev.lastEventId !== this.last) this.advance(ev.lastEventId);
            return;
          }
          const cursor = ev.lastEventId;
          const cur = cursorKey(cursor);
          const prev = cursorKey(this.last);
          if (cur && prev && !after(cur, prev)) return; // delivered already
          let sp: Span;
          try {
            sp = JSON.parse(ev.data) as Span;
          } catch (e) {
            failure = new Fatal(new Error(`the stream sent an event that is not JSON (id ${cursor}): ${String(e)}`));
            return;
          }
          try {
            this.o.onSpan(sp, cursor);
          } catch (e) {
            failure = new Fatal(e);
            return;
          }
          this.last = cursor === "" ? this.last : cursor;
        },
        onRetry,
        this.last ?? "",
      );
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        touch();
        parser.push(decoder.decode(value, { stream: true }));
        if (failure !== undefined) {
          void reader.cancel().catch(() => {});
          throw failure;
        }
        if (this.done) {
          void reader.cancel().catch(() => {});
          return;
        }
      }
    } catch (e) {
      if (idled) throw new Error(`the stream was idle for ${idleMs} ms`);
      throw e;
    } finally {
      if (idle !== undefined) clearTimeout(idle);
      this.abort.signal.removeEventListener("abort", onAbort);
    }
  }

  // advance moves the position to a cursor the server named without a span.
  private advance(id: string): void {
    const cur = cursorKey(id);
    const prev = cursorKey(this.last);
    if (cur && prev && !after(cur, prev)) return; // never backwards
    this.last = id;
  }
}
