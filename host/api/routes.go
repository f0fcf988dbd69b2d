package api

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Listing parameters shared by GET /api/spans and GET /api/timeline.
var (
	pLimit = param{name: "limit", in: "query", description: "Page size, 1 to " + strconv.Itoa(ledger.MaxLimit) + ".",
		schema: schema{"type": "integer", "minimum": 1, "maximum": ledger.MaxLimit, "default": ledger.DefaultLimit}}
	pOrder = param{name: "order", in: "query",
		description: "desc: newest first (browsing). asc: commit order; following next never skips a span that commits late.",
		schema:      schema{"type": "string", "enum": []string{"desc", "asc"}, "default": "desc"}}
	pCursor = param{name: "cursor", in: "query", description: "Continue after this cursor (a page's next), in the same order.",
		schema: schema{"type": "string", "maxLength": maxCursorLen}}
	pSince = param{name: "since", in: "query", description: "Only spans at or after this time.",
		schema: schema{"type": "string", "format": "date-time", "maxLength": 64}}
	pVisibility = param{name: "visibility", in: "query", description: "Only spans of this visibility.",
		schema: schema{"type": "string", "enum": []string{"private", "tenant", "public"}}}
	pID = param{name: "id", in: "path", schema: schema{"type": "string", "format": "uuid", "maxLength": uuidLen}}
)

const (
	uuidLen = 36
	// maxCursorLen fits the longest cursor, two 64-bit integers and a dot.
	maxCursorLen = 41
)

// strMax is a string parameter of at most n characters.
func strMax(desc string, n int) schema {
	return schema{"type": "string", "description": desc, "maxLength": n}
}

// routes is the API: every route echo serves and the OpenAPI document
// describes.
var routes = []op{
	{
		method: http.MethodGet, path: "/api/spans", id: "listSpans", summary: "List spans",
		description: "Spans the token's principal may read, filtered, one page at a time.",
		params: []param{
			{name: "entity_type", in: "query", schema: strMax("Only this entity_type.", span.MaxEntityTypeLen)},
			{name: "status", in: "query", schema: strMax("Only this status.", span.MaxShortText)},
			pVisibility,
			{name: "trace_id", in: "query", schema: strMax("Only this trace_id.", span.MaxShortText)},
			{name: "parent_id", in: "query", schema: schema{"type": "string", "format": "uuid", "maxLength": uuidLen, "description": "Only children of this span."}},
			pSince, pLimit, pOrder, pCursor,
		},
		responses: []response{jsonResponse(http.StatusOK, "One page.", ref("Page"))},
		handle:    (*Server).listSpans,
	},
	{
		method: http.MethodPost, path: "/api/spans", id: "appendSpans", summary: "Append spans",
		description: "One span (application/json) or a batch (application/x-ndjson, one span per line), stored in one " +
			"transaction: all or none. The server sets id (for a new span), at, tenant_id and owner_id, hashes and " +
			"signs. A new version of a span names its id and seq = latest+1. With Idempotency-Key, a retry returns " +
			"the spans the first attempt stored.",
		params: []param{{name: "Idempotency-Key", in: "header",
			description: "1 to 255 printable ASCII characters. The same key with the same body returns the stored spans (200); with a different body, 422.",
			schema:      schema{"type": "string", "maxLength": 255}}},
		body: &media{required: true, types: []string{"application/json", "application/x-ndjson"}, schema: ref("Span")},
		responses: []response{
			{status: http.StatusCreated, description: "Stored: the span (application/json) or the spans, one per line (application/x-ndjson).",
				media:   &media{types: []string{"application/json", "application/x-ndjson"}, schema: ref("Span")},
				headers: map[string]string{"Location": "The stored span (single span only)."}},
			{status: http.StatusOK, description: "An Idempotency-Key retry: what the first attempt stored.",
				media:   &media{types: []string{"application/json", "application/x-ndjson"}, schema: ref("Span")},
				headers: map[string]string{"Idempotent-Replayed": "true"}},
			problemResponse(http.StatusBadRequest, "Not JSON, a wrong type, an unknown field, or a bad header; field names it."),
			problemResponse(http.StatusForbidden, "The body names another tenant or owner."),
			problemResponse(http.StatusConflict, "seq is not latest+1 for its id (someone else appended first)."),
			problemResponse(http.StatusRequestEntityTooLarge, "The body, or the batch, is too large."),
			problemResponse(http.StatusUnsupportedMediaType, "Content-Type is neither application/json nor application/x-ndjson."),
			problemResponse(http.StatusUnprocessableEntity, "The span breaks the schema (field names it), or the Idempotency-Key was used with another body."),
		},
		handle: (*Server).appendSpans,
	},
	{
		method: http.MethodGet, path: "/api/spans/:id", id: "getSpan", summary: "Every version of a span, oldest first",
		params: []param{pID},
		responses: []response{
			jsonResponse(http.StatusOK, "Every version visible to the principal.", ref("Versions")),
			problemResponse(http.StatusNotFound, "No such span visible to the principal (another tenant's spans are not found, never forbidden: existence is not leaked)."),
		},
		handle: (*Server).getSpan,
	},
	{
		method: http.MethodGet, path: "/api/spans/:id/verify", id: "verifySpan", summary: "Verify every version of a span",
		description: "Recomputes each version's hash, checks its signature and its link to the previous version.",
		params:      []param{pID},
		responses: []response{
			jsonResponse(http.StatusOK, "The report; ok is false when a version fails (failures say why).", ref("VerifyReport")),
			problemResponse(http.StatusNotFound, "No such span visible to the principal."),
		},
		handle: (*Server).verifySpan,
	},
	{
		method: http.MethodGet, path: "/api/timeline", id: "timeline", summary: "The visible timeline",
		description: "Spans the principal may read, deleted ones (is_deleted) left out, newest first by default.",
		params:      []param{pVisibility, pSince, pLimit, pOrder, pCursor},
		responses:   []response{jsonResponse(http.StatusOK, "One page (it may hold fewer than limit spans; more says whether to go on).", ref("Page"))},
		handle:      (*Server).timeline,
	},
	{
		method: http.MethodGet, path: "/api/timeline/stream", id: "streamTimeline", summary: "New spans as Server-Sent Events",
		description: "Each event is one span the principal may read: `id` is its cursor, `data` the span as JSON (a default `message` event). " +
			"Reconnect with Last-Event-ID (or ?cursor=) to resume: nothing is skipped, even a span that commits late. The first " +
			"message carries the start position as an id. Comments (`: ping`) are heartbeats. A client that falls too far " +
			"behind is disconnected and may resume from its last id.",
		params: []param{
			{name: "Last-Event-ID", in: "header", description: "Resume after this cursor.", schema: schema{"type": "string", "maxLength": maxCursorLen}},
			{name: "cursor", in: "query", description: "Resume after this cursor (for clients that cannot set headers).", schema: schema{"type": "string", "maxLength": maxCursorLen}},
		},
		responses: []response{{status: http.StatusOK, description: "The stream.",
			media: &media{types: []string{"text/event-stream"}, schema: schema{"type": "string"}}}},
		handle: (*Server).stream,
	},
	{
		method: http.MethodPost, path: "/api/execute", id: "execute", summary: "Schedule a run of a function",
		description: "Appends a request span (entity_type request, status scheduled, parent_id and related_to the function) as the " +
			"principal; the engine runs it and closes the request with a next version of it (status complete or error). " +
			"With ?wait, waits up to that long for that outcome, whatever it is: the execution, or the engine's refusal " +
			"(error.code quota_exceeded, with the policy_violation; not_found). Every outcome the engine recorded is a 200; " +
			"status and error say what it was.",
		params: []param{{name: "wait", in: "query", description: "How long to wait for the outcome (a Go duration such as 10s, or whole seconds; capped by the server).",
			schema: schema{"type": "string", "maxLength": 32}}},
		body: &media{required: true, types: []string{"application/json"}, schema: ref("ExecuteRequest")},
		responses: []response{
			jsonResponse(http.StatusAccepted, "Scheduled, and not closed by the engine when the wait ended (or no wait): status is scheduled.", ref("ExecuteResult")),
			jsonResponse(http.StatusOK, "The engine closed the request within the wait. status complete: execution holds the run. "+
				"status error: error says why, error.code quota_exceeded (policy_violation holds the violation), not_found, "+
				"or the execution's own error (execution holds the run); request is the request's closing version.", ref("ExecuteResult")),
			problemResponse(http.StatusBadRequest, "Not JSON, a wrong type, an unknown field (names are case-sensitive), a field given twice, or a bad parameter; field names it."),
			problemResponse(http.StatusNotFound, "No such span visible to the principal."),
			problemResponse(http.StatusRequestEntityTooLarge, "The body is too large."),
			problemResponse(http.StatusUnsupportedMediaType, "Content-Type is not application/json."),
			problemResponse(http.StatusUnprocessableEntity, "span_id is missing or not a UUID, or names a span that is not a function "+
				"(detail says its entity_type; nothing is written), or the input breaks the span schema (too large, \\u0000, duplicate keys); field names it."),
		},
		handle: (*Server).execute,
	},
	{
		method: http.MethodGet, path: "/api/metrics", id: "metrics", summary: "Execution metrics of the principal's tenant",
		description: "Per UTC day: executions by status, and mean and 95th-percentile duration.",
		params: []param{{name: "days", in: "query", description: "How many days back, 1 to 366.",
			schema: schema{"type": "integer", "minimum": 1, "maximum": 366, "default": 30}}},
		responses: []response{jsonResponse(http.StatusOK, "The metrics.", ref("Metrics"))},
		handle:    (*Server).metrics,
	},
	{
		method: http.MethodGet, path: "/api/openapi.json", id: "openapi", summary: "This document", public: true,
		responses: []response{jsonResponse(http.StatusOK, "OpenAPI 3.1.", schema{"type": "object"})},
		handle:    (*Server).openapi,
	},
	{
		method: http.MethodGet, path: "/healthz", id: "healthz", summary: "Liveness: the process serves", public: true,
		responses: []response{jsonResponse(http.StatusOK, "Alive.", ref("Health"))},
		handle:    (*Server).healthz,
	},
	{
		method: http.MethodGet, path: "/readyz", id: "readyz", summary: "Readiness: the database answers and the stream listener is connected", public: true,
		responses: []response{
			jsonResponse(http.StatusOK, "Ready.", ref("Health")),
			{status: http.StatusServiceUnavailable, description: "Not ready; detail says why.", media: &media{types: []string{"application/json"}, schema: ref("Health")}},
		},
		handle: (*Server).readyz,
	},
	{
		method: http.MethodGet, path: "/metrics", id: "prometheus", summary: "Prometheus metrics", public: true,
		responses: []response{{status: http.StatusOK, description: "Prometheus text exposition.",
			media: &media{types: []string{"text/plain"}, schema: schema{"type": "string"}}}},
		handle: (*Server).prometheus,
	},
}

// register adds every route of the table to e, each behind its parameter
// check (paramChecker) and its token check (unless public).
func (s *Server) register(e *echo.Echo) error {
	for _, o := range routes {
		h := o.handle
		pc, err := newParamChecker(o)
		if err != nil {
			return err
		}
		mw := []echo.MiddlewareFunc{pc.middleware}
		if !o.public {
			mw = append(mw, s.authenticate)
		}
		e.Add(o.method, o.path, func(c echo.Context) error { return h(s, c) }, mw...)
	}
	return nil
}

// principalKey is where authenticate leaves the principal in the context.
const principalKey = "logline.principal"

func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, prob := s.auth.principal(c.Request().Header.Get(echo.HeaderAuthorization))
		if prob != nil {
			return prob
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func principal(c echo.Context) ledger.Principal { return c.Get(principalKey).(ledger.Principal) }
