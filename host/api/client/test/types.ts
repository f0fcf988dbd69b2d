// Compile-only: `npm run check` type-checks this file (it never runs). It
// pins what the generated types promise callers — the right shapes
// compile, and the wrong ones are errors (each @ts-expect-error must
// fail to compile, or tsc reports the directive as unused).
import { createLogLine, ProblemError, type Span, type Page, type StreamOptions, type Subscription } from "../src/index.ts";

export async function usage(): Promise<void> {
  const ll = createLogLine({ baseUrl: "http://127.0.0.1:8080", token: () => "t" });

  // Append: one span, its Idempotency-Key as a typed header parameter.
  const r = await ll.api.POST("/api/spans", {
    params: { header: { "Idempotency-Key": "k-1" } },
    body: { entity_type: "note", who: "alice", this: "note" },
  });
  const stored: Span = ll.unwrap(r);
  stored.curr_hash satisfies string | undefined;
  // @ts-expect-error a span needs entity_type, who and this
  await ll.api.POST("/api/spans", { body: { entity_type: "note" } });
  // @ts-expect-error the header is Idempotency-Key, nothing else
  await ll.api.POST("/api/spans", { params: { header: { "Idempotency-Kee": "k" } }, body: stored });

  // List: the query is typed, order is an enum, the page carries cursors.
  const page: Page = ll.unwrap(await ll.api.GET("/api/spans", { params: { query: { order: "asc", limit: 10, entity_type: "note" } } }));
  page.items[0]?.cursor satisfies string | undefined;
  // @ts-expect-error order is asc or desc
  await ll.api.GET("/api/spans", { params: { query: { order: "up" } } });
  // @ts-expect-error no such route
  await ll.api.GET("/api/spanz");

  // A path parameter is required where the path has one.
  // @ts-expect-error the id is missing
  await ll.api.GET("/api/spans/{id}", {});
  const v = ll.unwrap(await ll.api.GET("/api/spans/{id}", { params: { path: { id: stored.id ?? "" } } }));
  v.versions satisfies Span[];

  // Execute: span_id and input (openapi-fetch infers the body, so an extra
  // key is not caught here: the server refuses it, 400 naming it).
  const ex = ll.unwrap(await ll.api.POST("/api/execute", { params: { query: { wait: "10s" } }, body: { span_id: "x", input: { a: 1 } } }));
  ex.status satisfies "scheduled" | "complete" | "error";
  // @ts-expect-error span_id is required
  await ll.api.POST("/api/execute", { body: { input: 1 } });

  // The stream's query is the route's.
  const opts: StreamOptions = {
    query: { entity_type: "note", include: "bookkeeping", exclude_type: "metric" },
    onSpan(span: Span, cursor: string) {
      void span.entity_type;
      void cursor;
    },
    onState(state) {
      state satisfies "connecting" | "open" | "retrying" | "closed";
    },
  };
  const sub: Subscription = ll.stream(opts);
  sub.lastEventId satisfies string | undefined;
  // @ts-expect-error include takes bookkeeping only
  ll.stream({ query: { include: "everything" }, onSpan() {} });
  sub.close();

  try {
    await ll.appendSpans([stored], { idempotencyKey: "k-2" });
  } catch (e) {
    if (e instanceof ProblemError) {
      e.status satisfies number;
      e.problem.code satisfies string;
    }
  }
}
