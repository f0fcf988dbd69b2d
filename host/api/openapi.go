package api

import (
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/span"
)

// The OpenAPI 3.1 document is generated from the route table (routes.go),
// the one place where a route's method, path, parameters, body and
// responses are declared; the same table registers the echo routes and
// decides which query parameters a handler accepts.

// op is one route: how echo serves it and how the document describes it.
type op struct {
	method, path string // echo form (":id")
	id, summary  string
	description  string
	public       bool // served without a token
	params       []param
	body         *media
	responses    []response
	handle       func(*Server, echo.Context) error
}

type param struct {
	name, in, description string
	schema                schema
	required              bool
}

type media struct {
	description string
	required    bool
	types       []string // content types; the first is also the schema's
	schema      schema
}

type response struct {
	status      int
	description string
	media       *media
	headers     map[string]string // name -> description
}

type schema = map[string]any

func ref(name string) schema { return schema{"$ref": "#/components/schemas/" + name} }

func str(desc string) schema      { return schema{"type": "string", "description": desc} }
func arrayOf(items schema) schema { return schema{"type": "array", "items": items} }
func object(props schema, required ...string) schema {
	s := schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// openAPIPath turns echo's ":id" into OpenAPI's "{id}".
func openAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// OpenAPIDocument is the OpenAPI 3.1 document of the API: the very bytes
// GET /api/openapi.json serves. tools/openapi writes it to
// host/api/client/openapi.json, from which the TypeScript client's types
// are generated.
func OpenAPIDocument() ([]byte, error) { return document(routes) }

// document builds the OpenAPI 3.1 document of ops.
func document(ops []op) ([]byte, error) {
	paths := schema{}
	for _, o := range ops {
		item, _ := paths[openAPIPath(o.path)].(schema)
		if item == nil {
			item = schema{}
			paths[openAPIPath(o.path)] = item
		}
		item[strings.ToLower(o.method)] = operation(o)
	}
	doc := schema{
		"openapi": "3.1.0",
		"info": schema{
			"title":   "LogLine API",
			"version": "1",
			"description": "The span ledger over HTTP: append and read signed spans, schedule executions, follow the " +
				"ledger as Server-Sent Events. Every request acts as the (tenant, user) of its bearer token; row-level " +
				"security decides what it may read and write.",
		},
		"paths": paths,
		"components": schema{
			"securitySchemes": schema{"bearer": schema{"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
				"description": "A token from `logline token create` (JWS " + TokenAlg + ", or EdDSA), signed by the node key or a key the manifest trusts."}},
			"schemas": componentSchemas(),
		},
		"security": []schema{{"bearer": []string{}}},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func operation(o op) schema {
	out := schema{"operationId": o.id, "summary": o.summary}
	if o.description != "" {
		out["description"] = o.description
	}
	if o.public {
		out["security"] = []schema{}
	}
	var params []schema
	for _, p := range o.params {
		ps := schema{"name": p.name, "in": p.in, "schema": p.schema}
		if p.description != "" {
			ps["description"] = p.description
		}
		if p.required || p.in == "path" {
			ps["required"] = true
		}
		params = append(params, ps)
	}
	if params != nil {
		out["parameters"] = params
	}
	if o.body != nil {
		out["requestBody"] = mediaObject(o.body)
	}
	responses := schema{}
	for _, r := range allResponses(o) {
		rs := schema{"description": r.description}
		if r.media != nil {
			rs["content"] = mediaObject(r.media)["content"]
		}
		if len(r.headers) > 0 {
			hs := schema{}
			for name, desc := range r.headers {
				hs[name] = schema{"description": desc, "schema": schema{"type": "string"}}
			}
			rs["headers"] = hs
		}
		responses[strconv.Itoa(r.status)] = rs
	}
	out["responses"] = responses
	return out
}

// allResponses is what an operation declares plus what every operation of
// its kind can answer: 401 without a valid token, 400 for a malformed or
// unknown parameter (every route refuses query parameters it does not
// declare), 500.
func allResponses(o op) []response {
	rs := append([]response(nil), o.responses...)
	has := map[int]bool{}
	for _, r := range rs {
		has[r.status] = true
	}
	add := func(st int, desc string) {
		if !has[st] {
			rs = append(rs, response{status: st, description: desc, media: problemMedia})
			has[st] = true
		}
	}
	if !o.public {
		add(http.StatusUnauthorized, "No token, or a token that is malformed, expired or signed by an untrusted key.")
	}
	add(http.StatusBadRequest, "A parameter is malformed or unknown (query parameters the operation does not list are refused; "+
		"a value must be valid UTF-8 without NUL or control characters, within its maxLength); field names it.")
	add(http.StatusInternalServerError, "Internal error (details are in the server log).")
	return rs
}

func mediaObject(m *media) schema {
	content := schema{}
	for _, t := range m.types {
		content[t] = schema{"schema": m.schema}
	}
	out := schema{"content": content}
	if m.description != "" {
		out["description"] = m.description
	}
	if m.required {
		out["required"] = true
	}
	return out
}

var problemMedia = &media{types: []string{"application/problem+json"}, schema: ref("Problem")}

func problemResponse(st int, desc string) response {
	return response{status: st, description: desc, media: problemMedia}
}

func jsonResponse(st int, desc string, s schema) response {
	return response{status: st, description: desc, media: &media{types: []string{"application/json"}, schema: s}}
}

func componentSchemas() schema {
	item := object(schema{
		"cursor": str("The span's position in commit order; pass it as cursor (or Last-Event-ID) to continue after it."),
		"span":   ref("Span"),
	}, "cursor", "span")
	out := schema{
		"Span": spanSchema(),
		"Problem": schema{
			"type":        "object",
			"description": "RFC 9457 problem details. code is stable; field names the input at fault.",
			"properties": schema{
				"type": str(""), "title": str(""), "status": schema{"type": "integer"}, "detail": str(""),
				"code": str("Stable error code: malformed, unauthorized, forbidden, not_found, conflict, too_large, " +
					"unsupported_media_type, invalid, idempotency_key_reused, unavailable, internal."),
				"field": str("The field, parameter or header at fault."),
				"span":  schema{"type": "integer", "description": "1-based span of an NDJSON batch."},
				"line":  schema{"type": "integer", "description": "1-based line of the body."},
			},
			"required": []string{"type", "title", "status", "code"},
		},
		"Item": item,
		"Page": object(schema{
			"items": arrayOf(ref("Item")),
			"next":  str("Cursor continuing the listing in the same order (empty at the start of an empty ledger)."),
			"more":  schema{"type": "boolean", "description": "The page was full: there may be more after next."},
		}, "items", "next", "more"),
		"Versions": object(schema{"id": str(""), "versions": arrayOf(ref("Span"))}, "id", "versions"),
		"VerifyReport": object(schema{
			"id":      str(""),
			"ok":      schema{"type": "boolean"},
			"checked": schema{"type": "integer"},
			"signed":  schema{"type": "integer"},
			"failures": arrayOf(object(schema{
				"seq": schema{"type": "integer"}, "reason": str(""),
			}, "seq", "reason")),
		}, "id", "ok", "checked", "signed", "failures"),
		"ExecuteRequest": schema{
			"type":        "object",
			"description": "Exactly these keys, each at most once; names are case-sensitive.",
			"properties": schema{
				"span_id": schema{"type": "string", "format": "uuid", "description": "The function span to run (entity_type function)."},
				"input":   schema{"description": "Any JSON value, passed to the run as its input (the span schema's rules for input apply)."},
			},
			"required":             []string{"span_id"},
			"additionalProperties": false,
		},
		"ExecuteResult": object(schema{
			"request_id": schema{"type": "string", "format": "uuid"},
			"trace_id":   str(""),
			"status": schema{"type": "string", "enum": []string{"scheduled", "complete", "error"},
				"description": "scheduled (202): not closed yet. complete or error (200): the status the engine closed the request with."},
			"error": schema{"type": "object", "properties": schema{"code": str(""), "message": str("")},
				"description": "With status error: why. code quota_exceeded (the tenant's daily execution limit; see policy_violation) " +
					"or not_found (the engine found no function to run) from the request's closing version, or else the " +
					"execution's own error."},
			"execution": schema{"$ref": "#/components/schemas/Span",
				"description": "The execution span (entity_type execution, parent_id the function, metadata.request_id the request), when the function ran."},
			"policy_violation": schema{"$ref": "#/components/schemas/Span",
				"description": "The policy_violation span (metadata.request_id the request), when the quota refused the run."},
			"request": schema{"$ref": "#/components/schemas/Span",
				"description": "The request's closing version (seq > 0; status complete or error; metadata.execution_id when it ran)."},
		}, "request_id", "trace_id", "status"),
		"Metrics": object(schema{
			"counts": arrayOf(object(schema{
				"day": schema{"type": "string", "format": "date"}, "status": str(""), "n": schema{"type": "integer"},
			}, "day", "status", "n")),
			"latency": arrayOf(object(schema{
				"day":    schema{"type": "string", "format": "date"},
				"avg_ms": schema{"type": []string{"number", "null"}},
				"p95_ms": schema{"type": []string{"number", "null"}},
			}, "day", "avg_ms", "p95_ms")),
		}, "counts", "latency"),
		"Health": object(schema{"status": str(""), "detail": str("")}, "status"),
		"HourlyMetrics": object(schema{
			"since": schema{"type": "string", "format": "date-time", "description": "The first hour of the window."},
			"hours": arrayOf(object(schema{
				"hour":     schema{"type": "string", "format": "date-time"},
				"counts":   schema{"type": "object", "additionalProperties": schema{"type": "integer"}, "description": "Status → executions (\"\" when none)."},
				"p50_ms":   schema{"type": []string{"number", "null"}},
				"p95_ms":   schema{"type": []string{"number", "null"}},
				"fuel_p50": schema{"type": []string{"number", "null"}},
				"fuel_p95": schema{"type": []string{"number", "null"}},
				"fuel":     schema{"type": "integer", "description": "Fuel used, all executions of the hour."},
			}, "hour", "counts", "p50_ms", "p95_ms", "fuel_p50", "fuel_p95", "fuel")),
		}, "since", "hours"),
		"LedgerVerifyReport": object(schema{
			"ok":      schema{"type": "boolean"},
			"checked": schema{"type": "integer"},
			"signed":  schema{"type": "integer"},
			"failures": arrayOf(object(schema{
				"id": str(""), "seq": schema{"type": "integer"}, "reason": str(""),
			}, "id", "seq", "reason")),
			"next": str("The cursor to continue after."),
			"more": schema{"type": "boolean", "description": "The page was full: go on from next."},
		}, "ok", "checked", "signed", "failures", "next", "more"),
		"Status": object(schema{
			"version":       str("The server's version."),
			"abi_version":   schema{"type": "integer"},
			"notifications": schema{"type": "string", "enum": []string{"listening", "polling", "down"}},
			"engine": schema{"description": "null: this process runs no engine. Else the loops' latest passes for the principal's tenant.",
				"anyOf": []schema{{"type": "null"}, arrayOf(object(schema{
					"loop": str(""), "lane": schema{"type": "integer"}, "passes": schema{"type": "integer"}, "failures": schema{"type": "integer"},
					"last_pass": schema{"type": "string", "format": "date-time"},
					"outcome":   schema{"type": "string", "enum": []string{"ok", "failed", "refused"}},
					"error":     str(""),
				}, "loop", "lane", "passes", "failures", "last_pass", "outcome", "error"))}},
		}, "version", "abi_version", "notifications", "engine"),
	}
	maps.Copy(out, promptSchemas())
	maps.Copy(out, telegramSchemas())
	return out
}

// spanSchema is the Span schema, derived from span.Span's fields so that it
// cannot drift from the type the server decodes.
func spanSchema() schema {
	props := schema{}
	t := reflect.TypeFor[span.Span]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		var s schema
		switch ft := f.Type; {
		case ft == reflect.TypeFor[json.RawMessage]():
			s = schema{"description": "Any JSON value (at most " + strconv.Itoa(span.MaxJSONBytes) + " bytes)."}
		case ft.Kind() == reflect.String:
			s = schema{"type": "string"}
		case ft.Kind() == reflect.Bool:
			s = schema{"type": "boolean"}
		case ft.Kind() == reflect.Int32, ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Int32:
			s = schema{"type": "integer", "minimum": 0}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			s = arrayOf(schema{"type": "string", "format": "uuid"})
		default:
			panic("api: no schema for span field " + f.Name)
		}
		switch name {
		case "id", "parent_id":
			s["format"] = "uuid"
		case "at":
			s["format"] = "date-time"
			s["description"] = "UTC, exactly six fractional digits; set by the server."
		case "visibility":
			s["enum"] = []string{span.VisibilityPrivate, span.VisibilityTenant, span.VisibilityPublic}
		case "tenant_id", "owner_id":
			s["description"] = "Set from the token; a body naming anyone else is refused (403)."
		case "seq":
			s["description"] = "0 for a new span (the server assigns its id); latest+1 for a new version of id."
		case "prev_hash", "curr_hash", "signature", "public_key":
			s["description"] = "Proofs: set by the server, or by the signer of a span that arrives signed."
		}
		props[name] = s
	}
	return schema{
		"type":                 "object",
		"description":          "One row of the ledger (contract §3). A body needs entity_type, who and this; the server fills the rest.",
		"properties":           props,
		"additionalProperties": false,
		"required":             []string{"entity_type", "who", "this"},
	}
}
