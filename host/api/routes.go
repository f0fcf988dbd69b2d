package api

import (
	"net/http"
	"strconv"
	"strings"

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
	pID   = param{name: "id", in: "path", schema: schema{"type": "string", "format": "uuid", "maxLength": uuidLen}}
	pWait = param{name: "wait", in: "query", description: "How long to wait for the outcome (a Go duration such as 10s, or whole seconds; capped by the server).",
		schema: schema{"type": "string", "maxLength": 32}}
	// The engine's bookkeeping (ledger.Bookkeeping: cursors, quota
	// counters) is left out unless asked for, or named by entity_type.
	pInclude = param{name: "include", in: "query",
		description: "bookkeeping: also the engine's own spans (" + strings.Join(ledger.Bookkeeping, ", ") + "), left out by default.",
		schema:      schema{"type": "string", "enum": []string{"bookkeeping"}}}
	pExcludeType = param{name: "exclude_type", in: "query", description: "Leave out these entity types (comma-separated).",
		schema: schema{"type": "string", "maxLength": 1000}}
)

// pSelect are the parameters that choose which spans a listing or the
// stream returns (selection parses them).
func pSelect() []param {
	return []param{
		{name: "entity_type", in: "query", schema: strMax("Only this entity_type.", span.MaxEntityTypeLen)},
		{name: "status", in: "query", schema: strMax("Only this status.", span.MaxShortText)},
		pVisibility,
		{name: "trace_id", in: "query", schema: strMax("Only this trace_id.", span.MaxShortText)},
		{name: "parent_id", in: "query", schema: schema{"type": "string", "format": "uuid", "maxLength": uuidLen, "description": "Only children of this span."}},
		pSince, pInclude, pExcludeType,
	}
}

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
		params:      append(pSelect(), pLimit, pOrder, pCursor),
		responses:   []response{jsonResponse(http.StatusOK, "One page.", ref("Page"))},
		handle:      (*Server).listSpans,
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
		params:      append(pSelect(), pLimit, pOrder, pCursor),
		responses:   []response{jsonResponse(http.StatusOK, "One page (it may hold fewer than limit spans; more says whether to go on).", ref("Page"))},
		handle:      (*Server).timeline,
	},
	{
		method: http.MethodGet, path: "/api/timeline/stream", id: "streamTimeline", summary: "New spans as Server-Sent Events",
		description: "Each event is one span the principal may read and the selection keeps (as the listings select: the engine's " +
			"bookkeeping is left out unless include=bookkeeping): `id` is its cursor, `data` the span as JSON (a default `message` event). " +
			"Reconnect with Last-Event-ID (or ?cursor=) to resume: nothing is skipped, even a span that commits late. The first " +
			"message carries the start position as an id. Comments (`: ping`) are heartbeats. A client that falls too far " +
			"behind is disconnected and may resume from its last id.",
		params: append(pSelect(),
			param{name: "Last-Event-ID", in: "header", description: "Resume after this cursor.", schema: schema{"type": "string", "maxLength": maxCursorLen}},
			param{name: "cursor", in: "query", description: "Resume after this cursor (for clients that cannot set headers).", schema: schema{"type": "string", "maxLength": maxCursorLen}},
		),
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
		method: http.MethodPost, path: "/api/prompts/run", id: "runPrompt", summary: "Schedule a prompt run",
		description: "Appends a prompt_request span as the principal (status scheduled, visibility private, parent_id the " +
			"variant when one is named, the caller's traceparent trace or a new one); the engine's prompt_worker runs it — " +
			"the variant named, or for a family the variant its routing draws — records a prompt_run and closes the request " +
			"with a next version of it (status complete or error, metadata.prompt_run_id the run). With ?wait, waits up to " +
			"that long for that outcome, whatever it is: 200 with the closing version and the prompt_run. A variant_id or " +
			"provider_id is checked first (visible to the principal, a live span of that type): nothing is written otherwise.",
		params: []param{pWait},
		body:   &media{required: true, types: []string{"application/json"}, schema: ref("PromptRunRequest")},
		responses: []response{
			jsonResponse(http.StatusAccepted, "Scheduled, and not closed by the engine when the wait ended (or no wait): "+
				"request is the prompt_request as appended (status scheduled), prompt_run null.", ref("PromptRunResult")),
			jsonResponse(http.StatusOK, "The engine closed the request within the wait: request is its closing version "+
				"(status complete or error), prompt_run the run (status complete, or error with error.code contract_violation, "+
				"provider_error, timeout, invalid_response, invalid_input, not_found).", ref("PromptRunResult")),
			problemResponse(http.StatusBadRequest, "Not JSON, a wrong type, an unknown field (names are case-sensitive), a field given twice, or a bad parameter; field names it."),
			problemResponse(http.StatusNotFound, "variant_id or provider_id names no span visible to the principal; field names it."),
			problemResponse(http.StatusRequestEntityTooLarge, "The body is too large."),
			problemResponse(http.StatusUnsupportedMediaType, "Content-Type is not application/json."),
			problemResponse(http.StatusUnprocessableEntity, "input is missing or empty; neither or both of family and variant_id; "+
				"a malformed UUID or family name; variant_id or provider_id names a span of another type, deleted or archived; "+
				"text the ledger cannot store (\\u0000, a lone surrogate); field names it."),
		},
		handle: (*Server).runPrompt,
	},
	{
		method: http.MethodGet, path: "/api/prompts/:family", id: "getPromptFamily", summary: "A prompt family: its variants, their latest evals, the routing",
		description: "As the principal (row-level security): the latest version of each prompt_variant of the family that " +
			"serves the principal's tenant — the tenant's own and the operator's stock (public) ones — and that the principal " +
			"may read, deleted ones left out, at most " + strconv.Itoa(MaxFamilyVariants) + " by id; each with its newest " +
			"prompt_eval_run in the tenant (parent_id the variant) in brief; and the tenant's latest prompt_routing of the " +
			"family (the bandit's weights), never another tenant's.",
		params: []param{{name: "family", in: "path", description: "The family: 1 to 100 letters, digits, _ . -",
			schema: schema{"type": "string", "pattern": familyPattern, "minLength": 1, "maxLength": MaxFamilyLen}}},
		responses: []response{
			jsonResponse(http.StatusOK, "The family.", ref("PromptFamily")),
			problemResponse(http.StatusNotFound, "No prompt_variant of the family is visible to the principal."),
		},
		handle: (*Server).promptFamily,
	},
	{
		method: http.MethodPost, path: "/api/adapters/telegram/:bot", id: "telegramWebhook", summary: "A Telegram bot's webhook",
		public: true,
		description: "The Bot API's webhook for a bot the manifest binds to a tenant (telegram.bots): setWebhook with this URL and " +
			"secret_token the value of the bot's secret_env. No bearer token: the secret token header authenticates, compared in " +
			"constant time. A text message is appended as a telegram_message span (status received, visibility private) of the " +
			"bot's tenant, owned by the bot's user — tenant and user come from the manifest, never from the body — with an id " +
			"derived from (tenant, bot, update_id), so a redelivered update writes nothing. The engine's telegram_worker answers " +
			"it through sendMessage; nothing is answered here. Other update kinds are acknowledged and ignored.",
		params: []param{
			{name: "bot", in: "path", description: "The bot's name in the manifest's telegram.bots.", schema: schema{"type": "string", "maxLength": 64}},
			{name: TelegramSecretHeader, in: "header", required: true,
				description: "The webhook's secret token (setWebhook secret_token), the value of the bot's secret_env.",
				schema:      schema{"type": "string", "maxLength": maxTelegramSecret}},
		},
		body: &media{required: true, types: []string{"application/json"}, schema: ref("TelegramUpdate")},
		responses: []response{
			jsonResponse(http.StatusCreated, "Recorded: the telegram_message span's id.", ref("TelegramWebhookResult")),
			jsonResponse(http.StatusOK, "Recorded before (status duplicate), or not a text message (status ignored): nothing written.", ref("TelegramWebhookResult")),
			problemResponse(http.StatusBadRequest, "Not a JSON object, a wrong type, or update_id, message.message_id or message.chat missing; field names it."),
			problemResponse(http.StatusUnauthorized, "No such bot, or a wrong or absent secret token (the same answer for each)."),
			problemResponse(http.StatusRequestEntityTooLarge, "The body is over "+strconv.Itoa(MaxTelegramBody)+" bytes."),
			problemResponse(http.StatusUnsupportedMediaType, "Content-Type is not application/json."),
			problemResponse(http.StatusUnprocessableEntity, "A number beyond 2^53-1, or text the ledger cannot store (\\u0000); field names it."),
		},
		handle: (*Server).telegramWebhook,
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
		method: http.MethodGet, path: "/api/prompts", id: "listPromptFamilies", summary: "The prompt families of the principal's tenant",
		description: "Every family (at most " + strconv.Itoa(MaxFamilies) + ", by name) that has a live prompt_variant serving the " +
			"principal's tenant and visible to the principal (its own and the operator's stock), with how many.",
		responses: []response{jsonResponse(http.StatusOK, "The families.", object(schema{
			"families": arrayOf(object(schema{"family": str(""), "variants": schema{"type": "integer"}}, "family", "variants")),
		}, "families"))},
		handle: (*Server).promptFamilies,
	},
	{
		method: http.MethodGet, path: "/api/metrics/hourly", id: "metricsHourly", summary: "Execution metrics per hour",
		description: "Per UTC hour, oldest first, of the principal's tenant's executions the principal may read: counts by status, " +
			"duration percentiles, fuel percentiles and total (metadata.fuel_used). Hours without executions are left out.",
		params: []param{{name: "hours", in: "query", description: "How many hours back, the current one included.",
			schema: schema{"type": "integer", "minimum": 1, "maximum": ledger.MaxSeriesHours, "default": 48}}},
		responses: []response{jsonResponse(http.StatusOK, "The series.", ref("HourlyMetrics"))},
		handle:    (*Server).executionSeries,
	},
	{
		method: http.MethodGet, path: "/api/verify", id: "verifyLedger", summary: "Verify the ledger, a page at a time",
		description: "Verifies the next page (in commit order, after cursor) of every span the principal may read, the engine's " +
			"bookkeeping included: each version's hash, signature and link to the previous version. Follow next while more.",
		params: []param{pCursor, {name: "limit", in: "query", description: "Spans per page.",
			schema: schema{"type": "integer", "minimum": 1, "maximum": ledger.MaxLimit, "default": ledger.MaxLimit}}},
		responses: []response{jsonResponse(http.StatusOK, "The page's report; ok is false when a span fails (failures say which and why).", ref("LedgerVerifyReport"))},
		handle:    (*Server).verifyLedger,
	},
	{
		method: http.MethodGet, path: "/api/manifest", id: "getManifest", summary: "The manifest",
		description: "The latest version of the manifest (the kernels the host may boot, its keys, limits and policies), when the principal may read it.",
		responses: []response{
			jsonResponse(http.StatusOK, "The manifest span.", ref("Span")),
			problemResponse(http.StatusNotFound, "No manifest visible to the principal."),
		},
		handle: (*Server).manifest,
	},
	{
		method: http.MethodGet, path: "/api/status", id: "status", summary: "The server and the engine, as the principal sees them",
		description: "The version, how the stream follows the ledger (listening, polling, down) and, when the process runs an engine, " +
			"how its loops last ran for the principal's tenant (never another tenant's).",
		responses: []response{jsonResponse(http.StatusOK, "The status.", ref("Status"))},
		handle:    (*Server).status,
	},
	{
		method: http.MethodGet, path: "/api/whoami", id: "whoami", summary: "The token's principal",
		responses: []response{jsonResponse(http.StatusOK, "The tenant and user every request with this token acts as.",
			object(schema{"tenant": str(""), "user": str("")}, "tenant", "user"))},
		handle: (*Server).whoami,
	},
	{
		method: http.MethodPost, path: "/api/signin", id: "signin", summary: "Trade a sign-in link's code for its token", public: true,
		description: "`logline dev` prints a console link carrying a one-time code in its fragment (/#signin=CODE); the console " +
			"trades it here for the token, once, within 15 minutes. The code is kept in the server's memory only.",
		body: &media{required: true, types: []string{"application/json"},
			schema: schema{"type": "object", "properties": schema{"code": str("The code of the link.")}, "required": []string{"code"}, "additionalProperties": false}},
		responses: []response{
			jsonResponse(http.StatusOK, "The token and its principal.", object(schema{"token": str(""), "tenant": str(""), "user": str("")}, "token", "tenant", "user")),
			problemResponse(http.StatusBadRequest, "Not JSON, an unknown field, or a field given twice; field names it."),
			problemResponse(http.StatusUnauthorized, "The code is unknown, used already or expired (the same answer for each)."),
			problemResponse(http.StatusUnprocessableEntity, "code is missing."),
		},
		handle: (*Server).signin,
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

// register adds every route of ops to e, each behind its parameter check
// (paramChecker) and, unless public, auth: the API's routes with
// authenticate, the HTML adapter's with ssrAuthenticate.
func (s *Server) register(e *echo.Echo, ops []op, auth echo.MiddlewareFunc) error {
	for _, o := range ops {
		h := o.handle
		pc, err := newParamChecker(o)
		if err != nil {
			return err
		}
		mw := []echo.MiddlewareFunc{pc.middleware}
		if !o.public {
			mw = append(mw, auth)
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

// promptSchemas are the components of the prompt routes and the span
// shapes of the prompt system (guests/kernels/prompt.js): each entity is a
// Span whose entity_type, input, output and metadata hold what the kernels
// write and read. Metadata objects stay open (a span may carry more).
func promptSchemas() schema {
	uuidS := func(desc string) schema { return schema{"type": "string", "format": "uuid", "description": desc} }
	typed := func(t any, desc string) schema { return schema{"type": t, "description": desc} }
	integer := func(desc string) schema { return typed("integer", desc) }
	number := func(desc string) schema { return typed("number", desc) }
	nullable := func(t, desc string) schema { return typed([]string{t, "null"}, desc) }
	open := func(desc string, props schema, required ...string) schema {
		s := schema{"type": "object", "description": desc, "properties": props}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	}
	orNull := func(s schema) schema { return schema{"anyOf": []schema{s, {"type": "null"}}} }
	entity := func(entityType, desc string, props schema) schema {
		props["entity_type"] = schema{"const": entityType}
		return schema{"description": desc, "allOf": []schema{ref("Span"), {"type": "object", "properties": props}}}
	}
	family := schema{"type": "string", "pattern": familyPattern, "description": "The family: 1 to 100 letters, digits, _ . -"}
	hash := schema{"type": "string", "pattern": "^[0-9a-f]{64}$",
		"description": "compiled_hash: the BLAKE3-256 (hex) of the RFC 8785 form of the compiled prompt (the prompt_build's output)."}
	weights := schema{"type": "object", "additionalProperties": schema{"type": "number", "minimum": 0, "maximum": 1},
		"description": "Variant id → its share of the family's traffic (Thompson draws won; 0 for a variant not eligible)."}
	hashes := schema{"type": "object", "additionalProperties": hash, "description": "Variant id → the compiled_hash of its current build."}
	errorS := func(codes ...string) schema {
		return object(schema{"code": schema{"type": "string", "enum": codes}, "message": str("")}, "code", "message")
	}
	slots := open("The template's slots.", schema{"user_input": str(""), "context": str("")}, "user_input", "context")
	modelParams := open("Model parameters: null where the variant sets none.", schema{
		"name":        nullable("string", "Model name; null: the provider's model."),
		"temperature": nullable("number", ""),
		"max_tokens":  nullable("integer", ""),
	}, "name", "temperature", "max_tokens")
	blockRef := open("A block applied by a build, exactly.", schema{
		"id": uuidS(""), "seq": integer(""), "curr_hash": str("The block version's hash."),
	}, "id", "seq", "curr_hash")
	assertion := open("One check of an answer.", schema{
		"type": schema{"type": "string", "enum": []string{"equals", "contains", "not_contains", "icontains", "not_icontains", "regex",
			"is_json", "json_schema", "insufficient_evidence", "not_insufficient_evidence", "max_latency", "max_tokens", "max_tool_calls", "js"}},
		"value":       schema{"description": "What to compare with (needed by equals, contains, not_contains, icontains, not_icontains, regex, max_latency, max_tokens, max_tool_calls); an object for equals compares the parsed answer."},
		"path":        str("Dot path into the parsed answer the string checks read (default: the answer's text)."),
		"flags":       str("regex flags."),
		"schema":      schema{"description": "json_schema: the schema to check against (default the variant's output_schema)."},
		"function_id": uuidS("js: a function span run as a tier-2 sandbox with {text, parsed, insufficient_evidence, error, fixture, value}; it passes with true or {pass: true}, else {pass: false, why}."),
	}, "type")
	evalTotals := schema{"type": "object", "description": "Per fixture kind (happy, stress).",
		"additionalProperties": open("", schema{
			"fixtures": integer(""), "runs": integer(""), "passed": integer(""),
			"pass_rate": number("passed / runs."), "pass_at_k": number("Mean over the kind's fixtures."), "pass_pow_k": number("Mean over the kind's fixtures."),
		}, "fixtures", "runs", "passed", "pass_rate", "pass_at_k", "pass_pow_k")}
	evalSummary := open("The newest prompt_eval_run of the variant in the principal's tenant, in brief (null fields: the run does not record them, "+
		"as a scheduled eval that failed to run).", schema{
		"id": uuidS(""), "at": schema{"type": "string", "format": "date-time"}, "status": str("complete, or error"),
		"compiled_hash": orNull(hash), "model": nullable("string", ""), "passed": nullable("boolean", ""),
		"pass_rate": nullable("number", ""), "totals": orNull(evalTotals),
	}, "id", "at", "compiled_hash", "model", "passed", "pass_rate", "totals")

	return schema{
		"PromptRunRequest": schema{
			"type": "object",
			"description": "Exactly these keys, each at most once (names are case-sensitive; null is the same as absent): " +
				"family or variant_id, not both, and input.",
			"properties": schema{
				"family":      family,
				"variant_id":  uuidS("The prompt_variant to run (visible to the principal)."),
				"input":       schema{"type": "string", "minLength": 1, "description": "The user input: the template's {{user_input}}."},
				"context":     str("The template's {{context}} (default empty)."),
				"provider_id": uuidS("The provider to call instead of the variant's metadata.provider_id."),
			},
			"required":             []string{"input"},
			"oneOf":                []schema{{"required": []string{"family"}}, {"required": []string{"variant_id"}}},
			"additionalProperties": false,
		},
		"PromptRunResult": object(schema{
			"request": schema{"$ref": "#/components/schemas/PromptRequest",
				"description": "202: the prompt_request as appended (status scheduled). 200: its closing version (seq 1, status complete or error, metadata.prompt_run_id)."},
			"prompt_run": orNull(ref("PromptRun")),
		}, "request", "prompt_run"),
		"PromptFamily": object(schema{
			"family": family,
			"variants": arrayOf(object(schema{
				"variant":     ref("PromptVariant"),
				"latest_eval": orNull(ref("PromptEvalSummary")),
			}, "variant", "latest_eval")),
			"routing": schema{"anyOf": []schema{ref("PromptRouting"), {"type": "null"}},
				"description": "The principal's tenant's latest prompt_routing of the family, or null (no bandit decision yet)."},
		}, "family", "variants", "routing"),
		"PromptEvalSummary": evalSummary,

		"PromptBlock": entity("prompt_block", "A block of prompt text. A variant names it (metadata.blocks), or it applies "+
			"itself (metadata.applies_to) to the builds of its own tenant. An archived one (status archived, or archived "+
			"by a later status_patch status=archived) applies no more.", schema{
			"status": schema{"type": "string", "enum": []string{"active", "archived"}},
			"metadata": open("", schema{
				"kind":        str("doctrine, product, app, behavioral_prior, circuit_breaker (injected by the prompt_circuit_breaker policy), or another."),
				"priority":    number("Blocks are compiled highest first (then by id); default 0."),
				"text":        str("The text the system prompt gets."),
				"ttl_minutes": number("The ttl_reaper archives the block this long after it was appended."),
				"applies_to": open("Injects the block into builds of these variants or families (of the block's tenant only).", schema{
					"families": arrayOf(family), "variants": arrayOf(uuidS("")),
				}),
				"reason": schema{"type": "string", "enum": []string{"tool_call_spam", "error_burst"}, "description": "circuit_breaker blocks: why."},
			}, "text"),
		}),
		"PromptVariant": entity("prompt_variant", "A prompt of a family: blocks, a template with slots, an output contract, model parameters and a provider.", schema{
			"metadata": open("", schema{
				"family":  family,
				"version": str("e.g. v1 (gen_ai.prompt.version; default the span's seq)."),
				"blocks": arrayOf(open("", schema{
					"id":  uuidS("A prompt_block."),
					"seq": schema{"type": "integer", "minimum": 0, "description": "Pins that version; absent: the latest."},
				}, "id")),
				"template": schema{"type": "string", "minLength": 1, "description": "The user message, with the slots {{user_input}} and {{context}} (no others)."},
				"output_schema": schema{"type": []string{"object", "boolean"}, "description": "The output contract: a JSON Schema of the keywords type, " +
					"properties, required, additionalProperties, items, enum, const, minLength, maxLength, pattern, minimum, maximum, minItems, " +
					"maxItems, anyOf, description, title, $schema (any other is refused). When it cannot be satisfied the model answers " +
					`{"error":"Insufficient evidence."}, which keeps the contract.`},
				"model":       open("", schema{"name": str(""), "temperature": number(""), "max_tokens": integer("")}),
				"provider_id": uuidS("The provider span a run calls unless the run names one."),
			}, "family", "template"),
		}),
		"PromptBuild": entity("prompt_build", "A compiled variant, one per (tenant, compiled_hash): parent_id the variant, related_to the variant and the blocks applied.", schema{
			"output": open("The compiled prompt; compiled_hash is the BLAKE3 of its RFC 8785 form.", schema{
				"format": schema{"const": "logline.prompt/v1"},
				"variant": open("", schema{"id": uuidS(""), "seq": integer(""), "curr_hash": str(""), "family": family,
					"version": nullable("string", "")}, "id", "seq", "curr_hash", "family", "version"),
				"blocks": arrayOf(open("", schema{"id": uuidS(""), "seq": integer(""), "curr_hash": str(""), "kind": nullable("string", "")},
					"id", "seq", "curr_hash", "kind")),
				"system":        str("The system prompt: the blocks' text in priority order, then the output contract."),
				"template":      str(""),
				"output_schema": schema{"type": []string{"object", "boolean", "null"}},
				"model":         modelParams,
			}, "format", "variant", "blocks", "system", "template", "output_schema", "model"),
			"metadata": open("", schema{
				"compiled_hash": hash, "variant_id": uuidS(""), "variant_seq": integer(""), "family": family,
				"version": nullable("string", ""), "blocks": arrayOf(blockRef),
			}, "compiled_hash", "variant_id", "variant_seq", "blocks"),
		}),
		"PromptRequest": entity("prompt_request", "A prompt run asked for (POST /api/prompts/run, or the CLI): status scheduled "+
			"(running when the CLI runs it itself), then a next version complete or error. Owned by the principal.", schema{
			"status": schema{"type": "string", "enum": []string{"scheduled", "running", "complete", "error"}},
			"input": open("", schema{
				"variant_id": uuidS(""), "family": family, "user_input": str(""), "context": str(""), "provider_id": uuidS(""),
			}, "user_input", "context"),
			"metadata": open("", schema{"prompt_run_id": uuidS("The closing version: the prompt_run (its id derives from the request's).")}),
		}),
		"PromptRun": entity("prompt_run", "One run of a prompt_request: parent_id the variant, related_to [variant, build, provider, request, "+
			"provider_execution], id derived from the request's, owned by the requester, trace_id the request's.", schema{
			"status": schema{"type": "string", "enum": []string{"complete", "error"}},
			"input": open("Before the variant is resolved (a failed run) only slots.", schema{
				"compiled_hash": hash, "variant_id": uuidS(""), "slots": slots,
			}, "slots"),
			"output": open("", schema{
				"text":                  nullable("string", "The model's answer as it came."),
				"parsed":                schema{"description": "The answer as JSON (a ```json fence accepted), or null."},
				"contract":              open("", schema{"ok": typed("boolean", ""), "errors": arrayOf(str(""))}, "ok", "errors"),
				"insufficient_evidence": typed("boolean", `The answer was {"error":"Insufficient evidence."}.`),
				"confidence":            nullable("number", "parsed.confidence, when a number."),
				"tool_calls":            integer(""),
				"latency_ms":            number(""),
				"model":                 nullable("string", "The model that answered."),
				"usage":                 open("", schema{"input_tokens": nullable("integer", ""), "output_tokens": nullable("integer", "")}),
				"finish_reason":         nullable("string", ""),
			}),
			"error": errorS("contract_violation", "provider_error", "timeout", "invalid_response", "invalid_input", "not_found", "invalid_output"),
			"metadata": open("OpenTelemetry GenAI attribute names (gen_ai.*) next to the run's own.", schema{
				"request_id": uuidS(""), "variant_id": uuidS(""), "variant_seq": integer(""), "build_id": uuidS(""),
				"compiled_hash": hash, "provider_id": uuidS(""), "family": family,
				"routing": open("A family run: the routing followed and the draw.", schema{
					"id": uuidS(""), "seq": integer(""), "weights": weights, "draw": number("In [0, 1)."),
				}),
				"evidence": open("What the prompt policies judge.", schema{
					"tool_calls": integer(""), "recent_errors": integer("Failed runs of the variant in the burst window, this one included (0 when it did not fail)."),
					"breaker_active": typed("boolean", "A circuit_breaker block was applied."),
				}),
				"thresholds": open("The manifest's prompt settings the run ran under.", schema{
					"confidence": number(""), "max_tool_calls": integer(""), "error_burst": integer(""), "breaker_ttl_minutes": number(""),
				}),
				"gen_ai.operation.name":          schema{"const": "chat"},
				"gen_ai.provider.name":           schema{"type": "string", "enum": []string{"openai", "ollama"}},
				"gen_ai.request.model":           nullable("string", ""),
				"gen_ai.response.model":          nullable("string", ""),
				"gen_ai.usage.input_tokens":      nullable("integer", ""),
				"gen_ai.usage.output_tokens":     nullable("integer", ""),
				"gen_ai.response.finish_reasons": arrayOf(str("")),
				"gen_ai.prompt.name":             str("The family."),
				"gen_ai.prompt.version":          str(""),
			}, "request_id"),
		}),
		"PromptEval": entity("prompt_eval", "An eval card: fixtures (happy paths and stress cases) with assertions, run against a variant.", schema{
			"metadata": open("", schema{
				"family":      family,
				"repeats":     schema{"type": "integer", "minimum": 1, "maximum": 100, "description": "Runs per fixture (default 3)."},
				"k":           schema{"type": "integer", "minimum": 1, "description": "k of pass@k and pass^k (default repeats)."},
				"provider_id": uuidS("Default provider of the card's runs (before the variant's)."),
				"fixtures": schema{"type": "array", "minItems": 1, "items": open("", schema{
					"name":   schema{"type": "string", "minLength": 1},
					"kind":   schema{"type": "string", "enum": []string{"happy", "stress"}},
					"stress": str("injection, missing_context, tool_spam, oversize, unicode, contradictory, …"),
					"input":  open("", schema{"user_input": str(""), "context": str("")}),
					"assert": schema{"type": "array", "minItems": 1, "items": assertion},
				}, "name", "kind", "input", "assert")},
			}, "fixtures"),
		}),
		"PromptEvalRun": entity("prompt_eval_run", "One evaluation of a variant's build by a card: parent_id the variant, related_to "+
			"[variant, card, build, provider]. A scheduled eval that could not run is status error with error and metadata {family, scheduled}.", schema{
			"status": schema{"type": "string", "enum": []string{"complete", "error"}},
			"input": open("", schema{"variant_id": uuidS(""), "eval_id": uuidS(""), "eval_seq": integer(""), "repeats": integer(""),
				"k": integer(""), "tick": str("The schedule's tick, for a scheduled eval.")}),
			"output": open("", schema{
				"fixtures": arrayOf(open("", schema{
					"name": str(""), "kind": str(""), "stress": str(""), "passed": integer("Passing runs."), "runs": integer("Runs (repeats)."),
					"pass_at_k": number("1 - C(runs-passed, k)/C(runs, k)."), "pass_pow_k": number("C(passed, k)/C(runs, k)."),
					"results": arrayOf(open("One repeat.", schema{
						"pass": typed("boolean", ""),
						"failed": open("The first failing assertion (or the provider failure: type provider).", schema{
							"type": str(""), "index": integer("The assertion's index."), "why": str(""),
						}, "type", "why"),
						"latency_ms":    nullable("number", ""),
						"output_tokens": nullable("integer", ""),
						"text":          nullable("string", "The answer, cut to 500 characters."),
					}, "pass")),
				}, "name", "kind", "passed", "runs", "pass_at_k", "pass_pow_k", "results")),
				"totals": evalTotals,
			}, "fixtures", "totals"),
			"metadata": open("", schema{
				"variant_id": uuidS(""), "variant_seq": integer(""), "family": family, "eval_id": uuidS(""), "build_id": uuidS(""),
				"compiled_hash": hash, "model": nullable("string", ""), "provider_id": uuidS(""), "repeats": integer(""), "k": integer(""),
				"passed": typed("boolean", "pass_rate ≥ threshold."), "pass_rate": number("Passing runs / runs, all fixtures."),
				"threshold": number("The manifest's prompt.eval_pass_threshold."), "scheduled": typed("boolean", "A scheduled eval that failed to run."),
			}),
		}),
		"PromptBandit": entity("prompt_bandit", "A routing decision of a family by Thompson sampling over the window's evidence; "+
			"it replays from the seed it records.", schema{
			"input":  open("", schema{"family": family, "window_days": number(""), "since": schema{"type": "string", "format": "date-time"}, "tick": str("")}),
			"output": open("", schema{"weights": weights, "eligible": arrayOf(uuidS(""))}),
			"metadata": open("", schema{
				"family": family, "window_days": number(""),
				"seed":   schema{"type": "integer", "minimum": 0, "maximum": 4294967295},
				"draws":  integer(""),
				"priors": open("", schema{"alpha": number(""), "beta": number("")}),
				"posteriors": schema{"type": "object", "description": "Variant id → Beta(alpha, beta).",
					"additionalProperties": open("", schema{"alpha": number(""), "beta": number("")})},
				"evidence": schema{"type": "object", "description": "Variant id → the window's evidence.",
					"additionalProperties": open("", schema{
						"eval_passed": integer(""), "eval_failed": integer(""), "runs_ok": integer(""), "runs_failed": integer(""),
						"escalations": integer(""), "feedback": number(""), "feedback_negative": number(""),
						"eligible": typed("boolean", "A passing eval of the variant's current build."),
					})},
				"compiled_hashes": hashes, "weights": weights,
				"eligible":   arrayOf(uuidS("")),
				"routing_id": uuidS("The family's prompt_routing."),
			}, "family", "seed", "weights"),
		}),
		"PromptRouting": entity("prompt_routing", "A family's traffic in a tenant: one id per (tenant, family), a new version per decision "+
			"(parent_id the decision). A run of the family draws its variant from weights.", schema{
			"metadata": open("", schema{
				"family": family, "weights": weights, "decision_id": uuidS("The prompt_bandit."), "compiled_hashes": hashes,
			}, "family", "weights", "decision_id"),
		}),
	}
}
