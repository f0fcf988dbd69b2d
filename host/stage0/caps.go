package stage0

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/span"
)

// kernelCaps are a kernel's capabilities, backed by the ledger under the
// kernel's service principal.
type kernelCaps struct {
	h *Host
	p ledger.Principal
	m *Manifest

	mu     sync.Mutex
	leases map[string]*ledger.Lease
	// invoked are the functions and policies this run has exec'd, found,
	// verified and loaded once: a kernel passing an array of runs of one
	// function would otherwise read and verify its span for every element.
	// Within a run, the latest version read first is the one that runs.
	invoked map[string]*invoked
}

// invoked is the outcome of Host.invoke for one span id, computed once.
type invoked struct {
	once sync.Once
	inv  *invocation
	err  error
}

// invoke is Host.invoke, once per span id and run; each call gets its own
// copy of the request with its own input.
func (c *kernelCaps) invoke(ctx context.Context, id string, input json.RawMessage) (*invocation, error) {
	c.mu.Lock()
	if c.invoked == nil {
		c.invoked = map[string]*invoked{}
	}
	o := c.invoked[id]
	if o == nil {
		o = &invoked{}
		c.invoked[id] = o
	}
	c.mu.Unlock()
	o.once.Do(func() { o.inv, o.err = c.h.invoke(ctx, c.p, id, nil, c.m) })
	if o.err != nil {
		return nil, o.err
	}
	inv := *o.inv
	inv.req.Input = input
	return &inv, nil
}

var _ sandbox.Capabilities = (*kernelCaps)(nil)

// HTTP caps.
const (
	maxHTTPBody    = 1 << 20
	httpCallBudget = 10 * time.Second
)

func callErr(code int32, format string, a ...any) error {
	return sandbox.CallErrorf(code, format, a...)
}

// ledgerErr maps ledger errors to ABI codes.
func ledgerErr(err error) error {
	switch {
	case errors.Is(err, ledger.ErrInvalid), errors.Is(err, ledger.ErrSeqConflict), errors.Is(err, ledger.ErrChain):
		return callErr(abi.ErrInvalid, "%v", err)
	case errors.Is(err, ledger.ErrForbidden):
		return callErr(abi.ErrCapabilityDenied, "%v", err)
	case errors.Is(err, ledger.ErrNotFound):
		return callErr(abi.ErrNotFound, "%v", err)
	case errors.Is(err, ledger.ErrTimeout):
		return callErr(abi.ErrTimeout, "%v", err)
	}
	var fe *span.FieldError
	if errors.As(err, &fe) {
		return callErr(abi.ErrInvalid, "%v", err)
	}
	return callErr(abi.ErrFailed, "%v", err)
}

func (c *kernelCaps) SQL(ctx context.Context, req abi.SQLRequest) ([]byte, error) {
	params, err := sqlParams(req.Params)
	if err != nil {
		return nil, err
	}
	rows, err := c.h.ledger.GuestSQL(ctx, c.p, req.Query, params, ledger.GuestLimits{})
	switch {
	case errors.Is(err, ledger.ErrTimeout):
		return nil, callErr(abi.ErrTimeout, "%v", err)
	case err != nil:
		// The database refused it (syntax, privileges, read-only): the
		// guest reads Postgres' own message.
		return nil, callErr(abi.ErrFailed, "%v", err)
	}
	var b bytes.Buffer
	b.WriteString(`{"rows":[`)
	for i, r := range rows.Rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(r)
	}
	b.WriteString(`]`)
	if rows.Truncated {
		b.WriteString(`,"truncated":true`)
	}
	b.WriteString(`}`)
	return b.Bytes(), nil
}

// InsertSpan appends a span a kernel emits, or an array of spans together
// (one transaction: all or none). The host seals them: whatever proofs the
// guest supplies are dropped, so guests never sign anything.
func (c *kernelCaps) InsertSpan(ctx context.Context, raw []byte) ([]byte, error) {
	if err := span.CheckStorable(raw); err != nil {
		// No answer makes this right (no span built from it could be
		// stored): the run ends, with invalid_output in its execution.
		return nil, &sandbox.Error{Code: abi.CodeInvalidOutput, Message: "insert_span: the span JSON " + err.Error()}
	}
	items := []json.RawMessage{raw}
	array := false
	if sandbox.IsJSONArray(raw) {
		array = true
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, callErr(abi.ErrInvalid, "insert_span: %v", err)
		}
	}
	spans := make([]span.Span, 0, len(items))
	for i, item := range items {
		s, err := kernelSpan(item)
		if err != nil {
			if array {
				return nil, callErr(abi.ErrInvalid, "insert_span: span %d of the array: %v", i, err)
			}
			return nil, callErr(abi.ErrInvalid, "insert_span: %v", err)
		}
		spans = append(spans, s)
	}
	out, err := c.h.ledger.Append(ctx, c.p, spans...)
	if err != nil {
		return nil, ledgerErr(err)
	}
	if !array {
		return json.Marshal(&out[0])
	}
	return json.Marshal(out)
}

// kernelSpan decodes one span a kernel emits, as the host will seal it:
// whatever proofs the guest supplies are dropped, so guests never sign
// anything.
func kernelSpan(item []byte) (span.Span, error) {
	one, err := span.Decode(bytes.NewReader(item))
	if err == nil && len(one) != 1 {
		err = fmt.Errorf("want one span object, got %d", len(one))
	}
	if err != nil {
		return span.Span{}, err
	}
	s := one[0]
	s.At, s.PrevHash, s.CurrHash, s.Signature, s.PublicKey = "", "", "", "", ""
	return s, nil
}

// CheckSpans judges an array of spans as InsertSpan would take them, and
// appends nothing (abi.InsertRequest.Check).
func (c *kernelCaps) CheckSpans(ctx context.Context, raw []byte) ([]byte, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, callErr(abi.ErrInvalid, "insert_span: %v", err)
	}
	verdicts := make([]*abi.Error, len(items))
	var spans []span.Span
	var at []int // index in items of each of spans
	for i, item := range items {
		if err := span.CheckStorable(item); err != nil {
			verdicts[i] = &abi.Error{Code: abi.CodeInvalidOutput, Message: "the span JSON " + err.Error()}
			continue
		}
		s, err := kernelSpan(item)
		if err != nil {
			verdicts[i] = &abi.Error{Code: abi.ErrName(abi.ErrInvalid), Message: span.CleanText(err.Error())}
			continue
		}
		spans = append(spans, s)
		at = append(at, i)
	}
	var errs []error
	if len(spans) > 0 {
		var err error
		if errs, err = c.h.ledger.Check(ctx, c.p, spans); err != nil {
			return nil, ledgerErr(err)
		}
	}
	for j, e := range errs {
		if e == nil {
			continue
		}
		code := abi.ErrName(abi.ErrInvalid)
		switch {
		case errors.Is(e, ledger.ErrForbidden):
			code = "forbidden"
		case errors.Is(e, ledger.ErrSeqConflict), errors.Is(e, ledger.ErrChain):
			code = "conflict"
		}
		verdicts[at[j]] = &abi.Error{Code: code, Message: span.CleanText(e.Error())}
	}
	return json.Marshal(verdicts)
}

func (c *kernelCaps) Lock(ctx context.Context, key string, _ time.Duration) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, held := c.leases[key]; held {
		return true, nil
	}
	lease, ok, err := c.h.ledger.TryLock(ctx, c.p, key)
	if err != nil {
		return false, ledgerErr(err)
	}
	if ok {
		if c.leases == nil {
			c.leases = map[string]*ledger.Lease{}
		}
		c.leases[key] = lease
	}
	return ok, nil
}

func (c *kernelCaps) Unlock(ctx context.Context, key string) error {
	c.mu.Lock()
	lease := c.leases[key]
	delete(c.leases, key)
	c.mu.Unlock()
	if lease == nil {
		return callErr(abi.ErrNotFound, "lock %q is not held by this run", key)
	}
	lease.Release(ctx)
	return nil
}

// Exec runs a function or policy for the kernel's principal and returns
// the outcome; it appends nothing (the kernel records the execution).
func (c *kernelCaps) Exec(ctx context.Context, req abi.ExecRequest) (abi.ExecResult, error) {
	var input []byte
	if req.Input != nil {
		var err error
		if input, err = json.Marshal(req.Input); err != nil {
			return abi.ExecResult{}, callErr(abi.ErrInvalid, "exec input: %v", err)
		}
	}
	inv, err := c.invoke(ctx, req.SpanID, input)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			switch r.Code {
			case CodeNotFound:
				return abi.ExecResult{}, callErr(abi.ErrNotFound, "%s", r.Message)
			case abi.CodeNotAllowed:
				return abi.ExecResult{}, callErr(abi.ErrInvalid, "%s", r.Message)
			}
			return abi.ExecResult{Status: "error", Error: &abi.Error{Code: r.Code, Message: r.Message}}, nil
		}
		return abi.ExecResult{}, ledgerErr(err)
	}
	trace := traced(&inv.req)
	res := inv.mod.run(ctx, inv.req)
	if req.TraceID != "" {
		trace = req.TraceID
	}
	traceRun(ctx, trace, &inv.code, inv.req, res)
	out := abi.ExecResult{
		Status: "complete", FuelUsed: res.FuelUsed, DurationMs: res.Duration.Milliseconds(),
		CodeSeq: int(inv.code.Seq), ModuleHash: inv.mod.hash,
	}
	if res.Err != nil {
		out.Status, out.Error = "error", res.Err
	} else if len(res.Output) > 0 {
		out.Output = asJSON(res.Output)
	}
	return out, nil
}

// HTTP sends a request to a URL the manifest's http_allowlist permits, with
// a time budget and a capped response body. Redirects are not followed: a
// redirect could leave the allowlist. A secret (auth_env) goes where
// auth_in says — a bearer header, or the URL's path — and nothing that goes
// back to the guest carries it: errors name the URL as the guest wrote it.
func (c *kernelCaps) HTTP(ctx context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error) {
	if !c.m.AllowsURL(req.URL) {
		return abi.HTTPResponse{}, callErr(abi.ErrCapabilityDenied, "http: %q is not in the manifest's http_allowlist", req.URL)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	switch req.AuthIn {
	case "", abi.AuthInHeader, abi.AuthInPath:
	default:
		return abi.HTTPResponse{}, callErr(abi.ErrInvalid, "http: auth_in %q: want %q or %q", req.AuthIn, abi.AuthInHeader, abi.AuthInPath)
	}
	var secret string
	if req.AuthEnv != "" {
		if !slices.Contains(c.m.ProviderSecrets, req.AuthEnv) {
			return abi.HTTPResponse{}, callErr(abi.ErrCapabilityDenied, "http: auth_env %q is not in the manifest's provider_secrets", req.AuthEnv)
		}
		if secret = os.Getenv(req.AuthEnv); secret == "" {
			return abi.HTTPResponse{}, callErr(abi.ErrNotFound, "http: the host has no %s set", req.AuthEnv)
		}
	} else if req.AuthIn == abi.AuthInPath {
		return abi.HTTPResponse{}, callErr(abi.ErrInvalid, "http: auth_in %q needs auth_env, the secret to put in the path", abi.AuthInPath)
	}
	target := req.URL
	if req.AuthIn == abi.AuthInPath {
		var err error
		if target, err = c.secretInPath(req.URL, secret); err != nil {
			return abi.HTTPResponse{}, err
		}
	}
	hide := redactor(secret)
	budget := httpCallBudget
	if req.TimeoutMs > 0 {
		budget = min(budget, time.Duration(req.TimeoutMs)*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, method, target, strings.NewReader(req.Body))
	if err != nil {
		return abi.HTTPResponse{}, callErr(abi.ErrInvalid, "http: %s", hide(err.Error()))
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	if secret != "" && req.AuthIn != abi.AuthInPath {
		hr.Header.Set("Authorization", "Bearer "+secret)
	}
	start := time.Now()
	resp, err := httpClient.Do(hr)
	if err != nil {
		// Go's client errors quote the URL it sent, secret and all: name
		// the one the guest wrote instead (and redact, to be sure).
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = req.URL
		}
		if ctx.Err() != nil {
			return abi.HTTPResponse{}, callErr(abi.ErrTimeout, "http: %s", hide(err.Error()))
		}
		return abi.HTTPResponse{}, callErr(abi.ErrFailed, "http: %s", hide(err.Error()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return abi.HTTPResponse{}, callErr(abi.ErrTimeout, "http: reading the body: %s", hide(err.Error()))
		}
		return abi.HTTPResponse{}, callErr(abi.ErrFailed, "http: reading the body: %s", hide(err.Error()))
	}
	if len(body) > maxHTTPBody {
		return abi.HTTPResponse{}, callErr(abi.ErrLimit, "http: response body over %d bytes", maxHTTPBody)
	}
	// A server that echoes the request must not hand the secret back.
	out := abi.HTTPResponse{Status: resp.StatusCode, Body: hide(string(body)), Headers: map[string]string{},
		DurationMs: time.Since(start).Milliseconds()}
	for k := range resp.Header {
		out.Headers[k] = hide(resp.Header.Get(k))
	}
	return out, nil
}

// secretInPath puts secret, path-escaped, in place of the one
// abi.AuthPlaceholder in raw's path. The result must still be allowed: a
// secret cannot move the request out of the allowlist (a "..", say, where
// the placeholder is a whole segment).
func (c *kernelCaps) secretInPath(raw, secret string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", callErr(abi.ErrInvalid, "http: %v", err)
	}
	if strings.Count(raw, abi.AuthPlaceholder) != 1 || strings.Count(u.Path, abi.AuthPlaceholder) != 1 ||
		strings.Contains(u.RawQuery, abi.AuthPlaceholder) || strings.Contains(u.Fragment, abi.AuthPlaceholder) {
		return "", callErr(abi.ErrInvalid, "http: auth_in %q needs exactly one %s in the URL's path, got %q",
			abi.AuthInPath, abi.AuthPlaceholder, raw)
	}
	target := strings.Replace(raw, abi.AuthPlaceholder, url.PathEscape(secret), 1)
	if !c.m.AllowsURL(target) {
		return "", callErr(abi.ErrCapabilityDenied, "http: %q with the secret in its path is not in the manifest's http_allowlist", raw)
	}
	return target, nil
}

// redact removes a secret from what a guest will see.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[redacted]")
}

// redactor removes a secret from text in every form a request may have
// carried it: as is, and escaped as a path segment or a query value.
func redactor(secret string) func(string) string {
	forms := []string{secret}
	for _, f := range []string{url.PathEscape(secret), url.QueryEscape(secret)} {
		if f != secret && !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	return func(s string) string {
		for _, f := range forms {
			s = redact(s, f)
		}
		return s
	}
}

// httpClient never follows redirects: the guest sees the 3xx and may ask
// for the new location, which is then checked against the allowlist.
var httpClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// release gives back every lock the run still holds.
func (c *kernelCaps) release(ctx context.Context) {
	c.mu.Lock()
	leases := c.leases
	c.leases = nil
	c.mu.Unlock()
	for _, l := range leases {
		l.Release(ctx)
	}
}

// sqlParams turns JSON parameter values into what Postgres can bind:
// objects and arrays as JSON text (for jsonb), everything else as is.
func sqlParams(in []any) ([]any, error) {
	out := make([]any, len(in))
	for i, v := range in {
		switch v.(type) {
		case map[string]any, []any:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, callErr(abi.ErrInvalid, "sql: param $%d: %v", i+1, err)
			}
			out[i] = string(b)
		case float64:
			// JSON has one number type; a whole number binds as an
			// integer, so it can fill an integer parameter (LIMIT $1).
			f := v.(float64)
			if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
				out[i] = int64(f)
			} else {
				out[i] = f
			}
		default:
			out[i] = v
		}
	}
	return out, nil
}
