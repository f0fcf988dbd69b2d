package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

type executeRequest struct {
	SpanID string
	Input  json.RawMessage
}

// executeResult is the answer of POST /api/execute. Without a wait, or when
// the wait ends first, only the first three fields are set (status
// scheduled); once the engine has closed the request, the rest say how.
type executeResult struct {
	RequestID string `json:"request_id"`
	TraceID   string `json:"trace_id"`
	Status    string `json:"status"`
	// Error is why a request failed: the closing version's error
	// (quota_exceeded, not_found), else the execution's.
	Error           json.RawMessage `json:"error,omitempty"`
	Execution       *span.Span      `json:"execution,omitempty"`
	PolicyViolation *span.Span      `json:"policy_violation,omitempty"`
	// Request is the request's closing version, as the engine wrote it.
	Request *span.Span `json:"request,omitempty"`
}

// executeFields are the keys of an execute body, exactly.
var executeFields = []string{"span_id", "input"}

// decodeExecute parses the body strictly: unknown fields (names are
// case-sensitive), duplicate fields and wrong types are malformed (400), a
// missing or malformed span_id is invalid (422).
func decodeExecute(body []byte) (executeRequest, error) {
	var req executeRequest
	members, prob := strictObject(body, executeFields, "{\"span_id\": \"<uuid>\", \"input\": ...}")
	if prob != nil {
		return req, prob
	}
	if v := members["span_id"]; v != nil && !isNull(v) {
		id, prob := jsonString("span_id", v)
		if prob != nil {
			return req, prob
		}
		req.SpanID = id
	}
	if v := members["input"]; v != nil && !isNull(v) {
		req.Input = v
	}
	switch {
	case req.SpanID == "":
		return req, fail(codeInvalid, "span_id", "span_id is required")
	case !isUUID(req.SpanID):
		return req, fail(codeInvalid, "span_id", "span_id must be a lowercase UUID, got %s", quoteShort(req.SpanID))
	}
	return req, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// strictObject cuts a body that must be one JSON object into its members,
// refusing what encoding/json lets through: a key that matches a field only
// when case is ignored (encoding/json would take "SPAN_ID" for span_id), a
// key given twice (encoding/json keeps the last), and anything after the
// object. Every problem is malformed (400) and names the key, or body.
func strictObject(body []byte, fields []string, shape string) (map[string]json.RawMessage, *problem) {
	body = bytes.TrimPrefix(body, utf8BOM)
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fail(codeMalformed, "body", "the body is empty; send %s", shape)
	}
	invalid := func(field string, err error) *problem {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(codeMalformed, field, "invalid JSON: the body ends inside the object")
		}
		return fail(codeMalformed, field, "invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("body", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fail(codeMalformed, "body", "the body must be a JSON object: %s", shape)
	}
	out := make(map[string]json.RawMessage, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalid("body", err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, invalid("body", err)
		}
		if !slices.Contains(fields, key) {
			for _, f := range fields {
				if strings.EqualFold(f, key) {
					return nil, fail(codeMalformed, fieldName(key), "unknown field %s: field names are case-sensitive; did you mean %q?", quoteShort(key), f)
				}
			}
			return nil, fail(codeMalformed, fieldName(key), "unknown field %s (the body is %s)", quoteShort(key), shape)
		}
		if _, dup := out[key]; dup {
			return nil, fail(codeMalformed, key, "field %q appears more than once", key)
		}
		out[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, invalid("body", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fail(codeMalformed, "body", "trailing data after the object")
	}
	return out, nil
}

// jsonString decodes a member that must be a JSON string of clean text:
// invalid UTF-8 (which encoding/json would turn into U+FFFD) and control
// characters are malformed (400).
func jsonString(field string, v json.RawMessage) (string, *problem) {
	if len(v) == 0 || v[0] != '"' {
		return "", fail(codeMalformed, field, "%s must be a JSON string", field)
	}
	if !utf8.Valid(v) {
		return "", fail(codeMalformed, field, "%s is not valid UTF-8", field)
	}
	var str string
	if err := json.Unmarshal(v, &str); err != nil {
		return "", fail(codeMalformed, field, "%s must be a JSON string", field)
	}
	if r := textReason(str); r != "" {
		return "", fail(codeMalformed, field, "%s %s", field, r)
	}
	return str, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// waitParam parses ?wait: a Go duration (10s, 1m) or whole seconds, capped.
func (s *Server) waitParam(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, fail(codeMalformed, "wait", "wait must be a duration such as 10s, got %q", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, fail(codeMalformed, "wait", "wait must not be negative")
	}
	return min(d, s.cfg.MaxWait), nil
}

// traceID continues the caller's W3C trace (traceparent) or starts one:
// the request's span's, when telemetry traces it.
func traceID(c echo.Context) string {
	if sc := oteltrace.SpanContextFromContext(c.Request().Context()); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	parts := strings.Split(c.Request().Header.Get("traceparent"), "-")
	if len(parts) == 4 && len(parts[1]) == 32 && parts[1] != strings.Repeat("0", 32) {
		if _, err := hex.DecodeString(parts[1]); err == nil {
			return strings.ToLower(parts[1])
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) execute(c echo.Context) error {
	p := principal(c)
	if _, err := mediaType(c, mimeJSON); err != nil {
		return err
	}
	wait, err := s.waitParam(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	in, err := decodeExecute(body)
	if err != nil {
		return err
	}
	// The whole request span is checked before anything reaches the
	// ledger, its input included.
	req := span.Span{EntityType: "request", Who: "api", Did: "requested", This: "run_code", Status: "scheduled",
		ParentID: in.SpanID, RelatedTo: []string{in.SpanID}, Input: in.Input, TraceID: traceID(c)}
	if err := req.Validate(); err != nil {
		var fe *span.FieldError
		if errors.As(err, &fe) {
			return fail(codeInvalid, fe.Field, "%s", fe.Reason)
		}
		return fail(codeInvalid, "", "%v", err)
	}
	ctx := c.Request().Context()
	target, err := s.l.Latest(ctx, p, in.SpanID)
	if err != nil {
		return err // not found, or not visible: the same 404
	}
	if target.EntityType != "function" {
		// The engine runs functions only; it would close the request as
		// not_found, so refuse it here and write nothing.
		return fail(codeInvalid, "span_id", "span %s is a %s span, not a function: only functions can be executed",
			target.ID, quoteShort(target.EntityType))
	}

	// Join the stream before appending: the engine closes the request
	// after it sees it, so the outcome cannot come before the join.
	var w *waiter
	var g *group
	if wait > 0 {
		w = &waiter{p: p, found: make(chan struct{}, 1)}
		if g, _, err = s.hub.joinAt(ctx, p, w); err != nil {
			return err
		}
		defer s.hub.leave(g, w)
	}
	stored, err := s.l.Append(ctx, p, req)
	if err != nil {
		return err
	}
	out := executeResult{RequestID: stored[0].ID, TraceID: stored[0].TraceID, Status: stored[0].Status}
	c.Response().Header().Set(echo.HeaderLocation, "/api/spans/"+out.RequestID)
	if w == nil {
		return writeJSON(c, http.StatusAccepted, mimeJSON, out)
	}
	w.setRequest(out.RequestID)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.found:
		s.outcome(ctx, w, &out)
		return writeJSON(c, http.StatusOK, mimeJSON, out)
	case <-t.C:
	case <-s.hub.ctx.Done():
	case <-ctx.Done():
		return nil
	}
	return writeJSON(c, http.StatusAccepted, mimeJSON, out)
}

// outcome fills out with what the engine recorded for w's request, once w
// has seen it closed or executed. The engine appends the closing version
// together with the execution or the policy_violation (one transaction), so
// what the stream has not delivered yet is committed and can be read.
func (s *Server) outcome(ctx context.Context, w *waiter, out *executeResult) {
	w.mu.Lock()
	ex, closing, violation := w.execution, w.closing, w.violation
	w.mu.Unlock()
	read := func(id string) *span.Span {
		sp, err := s.l.Latest(ctx, w.p, id)
		if err != nil {
			if !errors.Is(err, ledger.ErrNotFound) {
				s.log.Warn("execute: reading the outcome", "id", id, "err", err)
			}
			return nil
		}
		return &sp
	}
	if closing == nil {
		if sp := read(w.request); sp != nil && isClosingOf(sp, w.p, w.requestType(), w.request) {
			closing = sp
		}
	}
	if ex == nil && closing != nil {
		if id := metaString(closing.Metadata, "execution_id"); isUUID(id) {
			if sp := read(id); sp != nil && isExecutionOf(sp, w.p, w.request) {
				ex = sp
			}
		}
	}
	out.Execution, out.Request, out.PolicyViolation = ex, closing, violation
	switch {
	case closing != nil:
		out.Status = closing.Status
	case ex != nil:
		out.Status = ex.Status
	}
	if out.Status == "error" {
		switch {
		case closing != nil && len(closing.Error) > 0:
			out.Error = closing.Error
		case ex != nil && len(ex.Error) > 0:
			out.Error = ex.Error
		}
	}
}

// waiter is a sink that looks for the outcome of one request: by the
// engine's contract (runRequests in guests/kernels/lib.js) a next version
// of the request that is no longer scheduled, written together with an
// execution span (metadata.request_id, or related_to naming the request)
// or, when the quota refused it, a policy_violation span (the same).
type waiter struct {
	p ledger.Principal
	// kind is the entity_type of the request waited for: "" for a request
	// (POST /api/execute), or "prompt_request" (POST /api/prompts/run),
	// whose closing version is the only outcome looked for.
	kind  string
	found chan struct{} // buffered 1: the request was closed or executed

	// The request id is known only after the append, and events can
	// arrive before that: keep them until then.
	mu                            sync.Mutex
	request                       string
	early                         []*event
	execution, closing, violation *span.Span
}

// requestType is the entity_type of the request w waits for.
func (w *waiter) requestType() string {
	if w.kind == "" {
		return "request"
	}
	return w.kind
}

func (w *waiter) setRequest(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.request = id
	w.match(w.early)
	w.early = nil
}

func (w *waiter) deliver(evs []*event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.request == "" {
		for _, ev := range evs {
			switch ev.span.EntityType {
			case "execution", "policy_violation", w.requestType():
				w.early = append(w.early, ev)
			}
		}
		return
	}
	w.match(evs)
}

func (w *waiter) match(evs []*event) {
	kind := w.requestType()
	for _, ev := range evs {
		sp := ev.span
		switch {
		case kind == "request" && w.execution == nil && isExecutionOf(sp, w.p, w.request):
			w.execution = copySpan(sp)
		case kind == "request" && w.violation == nil && isViolationOf(sp, w.p, w.request):
			w.violation = copySpan(sp)
		case w.closing == nil && isClosingOf(sp, w.p, kind, w.request):
			w.closing = copySpan(sp)
		}
	}
	if w.closing != nil || w.execution != nil {
		select {
		case w.found <- struct{}{}:
		default:
		}
	}
}

// copySpan copies an event's span: events are shared by every sink.
func copySpan(s *span.Span) *span.Span { c := *s; return &c }

// ownedBy reports whether s is in p's tenant and owned by p. Only the
// requester or its tenant's service principal (the engine) can write such a
// span, so another user of the tenant cannot answer someone else's request
// with a forged outcome.
func ownedBy(s *span.Span, p ledger.Principal) bool {
	return s.TenantID == p.Tenant && s.OwnerID == p.User
}

// isExecutionOf reports whether s is the execution of request.
func isExecutionOf(s *span.Span, p ledger.Principal, requestID string) bool {
	return s.EntityType == "execution" && ownedBy(s, p) && namesRequest(s, requestID)
}

// isViolationOf reports whether s is the policy violation that refused
// request.
func isViolationOf(s *span.Span, p ledger.Principal, requestID string) bool {
	return s.EntityType == "policy_violation" && ownedBy(s, p) && namesRequest(s, requestID)
}

// isClosingOf reports whether s is a version of request (of entityType:
// request or prompt_request) that closes it: the engine closes a request
// complete or error, and nothing else.
func isClosingOf(s *span.Span, p ledger.Principal, entityType, requestID string) bool {
	return s.EntityType == entityType && s.ID == requestID && s.Seq > 0 &&
		(s.Status == "complete" || s.Status == "error") && ownedBy(s, p)
}

func namesRequest(s *span.Span, requestID string) bool {
	if requestID == "" {
		return false
	}
	return slices.Contains(s.RelatedTo, requestID) || metaString(s.Metadata, "request_id") == requestID
}

// metaString is the string metadata[key], or "".
func metaString(meta json.RawMessage, key string) string {
	if len(meta) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(meta, &m) != nil {
		return ""
	}
	var v string
	if json.Unmarshal(m[key], &v) != nil {
		return ""
	}
	return v
}
