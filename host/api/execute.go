package api

import (
	"bytes"
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

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

type executeRequest struct {
	SpanID string          `json:"span_id"`
	Input  json.RawMessage `json:"input"`
}

type executeResult struct {
	RequestID string     `json:"request_id"`
	TraceID   string     `json:"trace_id"`
	Status    string     `json:"status"`
	Execution *span.Span `json:"execution,omitempty"`
}

// decodeExecute parses the body strictly: unknown fields and wrong types
// are malformed (400), a missing or malformed span_id is invalid (422).
func decodeExecute(body []byte) (executeRequest, error) {
	var req executeRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the object")
	} else if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("trailing data after the object")
		}
	}
	if err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return req, fail(codeMalformed, te.Field, "%s must be a JSON %s", te.Field, jsonTypeName(te.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return req, fail(codeMalformed, f, "unknown field %q (the body is {\"span_id\": ..., \"input\": ...})", f)
		case errors.Is(err, io.EOF):
			return req, fail(codeMalformed, "body", "the body is empty; send {\"span_id\": \"<uuid>\"}")
		default:
			return req, fail(codeMalformed, "body", "invalid JSON: %v", err)
		}
	}
	switch {
	case req.SpanID == "":
		return req, fail(codeInvalid, "span_id", "span_id is required")
	case !isUUID(req.SpanID):
		return req, fail(codeInvalid, "span_id", "span_id must be a lowercase UUID, got %q", req.SpanID)
	}
	if bytes.Equal(bytes.TrimSpace(req.Input), []byte("null")) {
		req.Input = nil
	}
	return req, nil
}

func jsonTypeName(kind string) string {
	if kind == "string" {
		return "string"
	}
	return kind
}

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

// traceID continues the caller's W3C trace (traceparent) or starts one.
func traceID(c echo.Context) string {
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
	ctx := c.Request().Context()
	target, err := s.l.Latest(ctx, p, in.SpanID)
	if err != nil {
		return err
	}
	req := span.Span{EntityType: "request", Who: "api", Did: "requested", This: "run_code", Status: "scheduled",
		ParentID: target.ID, RelatedTo: []string{target.ID}, Input: in.Input, TraceID: traceID(c)}
	if err := req.Validate(); err != nil {
		var fe *span.FieldError
		if errors.As(err, &fe) {
			return fail(codeInvalid, fe.Field, "%s", fe.Reason)
		}
		return fail(codeInvalid, "", "%v", err)
	}

	// Join the stream before appending: the engine writes the execution
	// after it sees the request, so it cannot come before the join.
	var w *waiter
	var g *group
	if wait > 0 {
		w = &waiter{p: p, found: make(chan span.Span, 1)}
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
	case ex := <-w.found:
		out.Status, out.Execution = ex.Status, &ex
		return writeJSON(c, http.StatusOK, mimeJSON, out)
	case <-t.C:
	case <-s.hub.done:
	case <-ctx.Done():
		return nil
	}
	return writeJSON(c, http.StatusAccepted, mimeJSON, out)
}

// waiter is a sink that looks for the execution of one request: by the
// engine's contract an execution span with metadata.request_id set to the
// request's id (or naming it in related_to).
type waiter struct {
	p     ledger.Principal
	found chan span.Span

	// The request id is known only after the append, and events can
	// arrive before that: keep them until then.
	mu      sync.Mutex
	request string
	early   []*event
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
			if ev.span.EntityType == "execution" {
				w.early = append(w.early, ev)
			}
		}
		return
	}
	w.match(evs)
}

func (w *waiter) match(evs []*event) {
	for _, ev := range evs {
		if isExecutionOf(ev.span, w.p, w.request) {
			select {
			case w.found <- *ev.span:
			default:
			}
			return
		}
	}
}

// isExecutionOf reports whether s is the execution of request. It must be
// owned by the requester too: only the requester or its tenant's service
// principal (the engine) can write such a span, so another user of the
// tenant cannot answer someone else's request with a forged execution.
func isExecutionOf(s *span.Span, p ledger.Principal, requestID string) bool {
	if s.EntityType != "execution" || s.TenantID != p.Tenant || s.OwnerID != p.User {
		return false
	}
	if slices.Contains(s.RelatedTo, requestID) {
		return true
	}
	var meta struct {
		RequestID string `json:"request_id"`
	}
	return len(s.Metadata) > 0 && json.Unmarshal(s.Metadata, &meta) == nil && meta.RequestID == requestID
}
