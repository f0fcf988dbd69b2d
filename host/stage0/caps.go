package stage0

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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

// InsertSpan appends one span a kernel emits. The host seals it: whatever
// proofs the guest supplies are dropped, so guests never sign anything.
func (c *kernelCaps) InsertSpan(ctx context.Context, raw []byte) ([]byte, error) {
	spans, err := span.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, callErr(abi.ErrInvalid, "%v", err)
	}
	if len(spans) != 1 {
		return nil, callErr(abi.ErrInvalid, "insert_span takes exactly one span, got %d", len(spans))
	}
	s := spans[0]
	s.At, s.PrevHash, s.CurrHash, s.Signature, s.PublicKey = "", "", "", "", ""
	out, err := c.h.ledger.Append(ctx, c.p, s)
	if err != nil {
		return nil, ledgerErr(err)
	}
	return json.Marshal(&out[0])
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

func (c *kernelCaps) Exec(ctx context.Context, req abi.ExecRequest) (abi.ExecResult, error) {
	input, err := json.Marshal(req.Input)
	if err != nil {
		return abi.ExecResult{}, callErr(abi.ErrInvalid, "exec input: %v", err)
	}
	if req.Input == nil {
		input = nil
	}
	ex, err := c.h.Run(ctx, c.p, req.SpanID, input)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			if r.Code == CodeNotFound {
				return abi.ExecResult{}, callErr(abi.ErrNotFound, "%s", r.Message)
			}
			return abi.ExecResult{Status: "error", Error: &abi.Error{Code: r.Code, Message: r.Message}}, nil
		}
		return abi.ExecResult{}, ledgerErr(err)
	}
	res := abi.ExecResult{Status: ex.Status}
	var meta struct {
		FuelUsed int64 `json:"fuel_used"`
	}
	_ = json.Unmarshal(ex.Metadata, &meta)
	res.FuelUsed = meta.FuelUsed
	if ex.DurationMs != nil {
		res.DurationMs = int64(*ex.DurationMs)
	}
	if len(ex.Output) > 0 {
		res.Output = json.RawMessage(ex.Output)
	}
	if len(ex.Error) > 0 {
		res.Error = &abi.Error{}
		_ = json.Unmarshal(ex.Error, res.Error)
	}
	return res, nil
}

// HTTP sends a request to a URL the manifest's http_allowlist permits, with
// a time budget and a capped response body. Redirects are not followed: a
// redirect could leave the allowlist.
func (c *kernelCaps) HTTP(ctx context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error) {
	if !c.m.AllowsURL(req.URL) {
		return abi.HTTPResponse{}, callErr(abi.ErrCapabilityDenied, "http: %q is not in the manifest's http_allowlist", req.URL)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(ctx, httpCallBudget)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, method, req.URL, strings.NewReader(req.Body))
	if err != nil {
		return abi.HTTPResponse{}, callErr(abi.ErrInvalid, "http: %v", err)
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := httpClient.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return abi.HTTPResponse{}, callErr(abi.ErrTimeout, "http: %v", err)
		}
		return abi.HTTPResponse{}, callErr(abi.ErrFailed, "http: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		return abi.HTTPResponse{}, callErr(abi.ErrFailed, "http: reading the body: %v", err)
	}
	if len(body) > maxHTTPBody {
		return abi.HTTPResponse{}, callErr(abi.ErrLimit, "http: response body over %d bytes", maxHTTPBody)
	}
	out := abi.HTTPResponse{Status: resp.StatusCode, Body: string(body), Headers: map[string]string{}}
	for k := range resp.Header {
		out.Headers[k] = resp.Header.Get(k)
	}
	return out, nil
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
		default:
			out[i] = v
		}
	}
	return out, nil
}
