package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// fakeEngine stands in for the engine (issue 5) by its contract: for every
// new request span it appends an execution span with metadata.request_id
// and related_to naming the request, written as the tenant's service
// principal on behalf of the requester. It follows the ledger the way the
// engine will, with LISTEN and a forward cursor, as the system principal.
func fakeEngine(t *testing.T, b *bundle, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	wake := make(chan struct{}, 1)
	go func() {
		_ = b.ledger.Listen(ctx, func(ledger.Notice) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
	}()
	go func() {
		defer close(done)
		cur, err := b.ledger.Tail(ctx)
		if err != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-time.After(100 * time.Millisecond):
			}
			pg, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{After: cur, EntityType: "request"})
			if err != nil {
				continue
			}
			for _, it := range pg.Items {
				req := it.Span
				time.Sleep(delay)
				meta, _ := json.Marshal(map[string]any{"request_id": req.ID, "fuel_used": 42})
				_, err := b.ledger.Append(ctx, ledger.Service(req.TenantID, "engine"), span.Span{
					EntityType: "execution", Who: "engine", Did: "executed", This: "run_code", Status: "complete",
					OwnerID: req.OwnerID, ParentID: req.ParentID, RelatedTo: []string{req.ParentID, req.ID},
					TraceID: req.TraceID, Output: json.RawMessage(`{"sum":3}`), Metadata: meta, DurationMs: ptr(int32(5)),
				})
				if err != nil && ctx.Err() == nil {
					t.Errorf("fake engine: %v", err)
				}
			}
			cur = pg.Next
		}
	}()
}

func TestExecute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "alice", This: "function",
		Name: "sum", Code: "return input.a + input.b", Language: "javascript", Runtime: "quickjs"})[0]

	// Without wait: 202 and the request, as the principal.
	r := b.do(t, http.MethodPost, "/api/execute", tok, map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		map[string]any{"span_id": fn.ID, "input": map[string]int{"a": 1, "b": 2}})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	var res executeResult
	r.json(t, &res)
	require.Equal(t, "scheduled", res.Status)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", res.TraceID, "the caller's trace continues")
	require.Nil(t, res.Execution)
	require.Equal(t, "/api/spans/"+res.RequestID, r.header.Get("Location"))
	req, err := b.ledger.Latest(context.Background(), ledger.User("acme", "alice"), res.RequestID)
	require.NoError(t, err)
	require.Equal(t, "request", req.EntityType)
	require.Equal(t, "scheduled", req.Status)
	require.Equal(t, fn.ID, req.ParentID)
	require.Equal(t, []string{fn.ID}, req.RelatedTo)
	require.Equal(t, "api", req.Who)
	require.Equal(t, "requested", req.Did)
	require.Equal(t, "run_code", req.This)
	require.Equal(t, "alice", req.OwnerID)
	require.Equal(t, "acme", req.TenantID)
	require.JSONEq(t, `{"a":1,"b":2}`, string(req.Input))
	require.NoError(t, span.VerifySignedBy(&req, b.key.PublicHex()))

	// Nobody runs it: the wait ends with 202.
	start := time.Now()
	r = b.do(t, http.MethodPost, "/api/execute?wait=300ms", tok, nil, map[string]any{"span_id": fn.ID})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	// With the engine: 200 and the execution.
	fakeEngine(t, b, 50*time.Millisecond)
	r = b.do(t, http.MethodPost, "/api/execute?wait=10s", tok, nil, map[string]any{"span_id": fn.ID, "input": map[string]int{"a": 1, "b": 2}})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &res)
	require.Equal(t, "complete", res.Status)
	require.NotNil(t, res.Execution)
	require.Equal(t, "execution", res.Execution.EntityType)
	require.Contains(t, res.Execution.RelatedTo, res.RequestID)
	require.JSONEq(t, `{"sum":3}`, string(res.Execution.Output))
}

// A wait sees only executions its principal may read and that belong to its
// request: neither another tenant's nor a forgery by another user of the
// tenant answers it.
func TestExecuteWaitIgnoresOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "alice", This: "function",
		Name: "f", Code: "1", Visibility: "public"})[0]
	done := make(chan reply, 1)
	go func() {
		done <- b.do(t, http.MethodPost, "/api/execute?wait=1500ms", b.token(t, "acme", "alice"), nil, map[string]any{"span_id": fn.ID})
	}()
	// Find alice's request (as the system would) and answer it with
	// executions that must not count.
	var reqID string
	eventually(t, func() bool {
		pg, err := b.ledger.Query(context.Background(), ledger.System(), ledger.Filter{EntityType: "request", Desc: true, Limit: 1})
		if err == nil && len(pg.Items) == 1 {
			reqID = pg.Items[0].Span.ID
		}
		return reqID != ""
	})
	meta := json.RawMessage(`{"request_id":"` + reqID + `"}`)
	forged := span.Span{EntityType: "execution", Who: "x", This: "x", Status: "complete", RelatedTo: []string{reqID}, Metadata: meta, Visibility: "tenant"}
	b.appendAs(t, ledger.User("acme", "bob"), forged)                         // same tenant, not the requester
	b.appendAs(t, ledger.User("globex", "alice"), forged)                     // another tenant, same user name
	b.appendAs(t, ledger.User("acme", "alice"), note("unrelated", "private")) // alice's, not an execution
	r := <-done
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
}

func TestExecuteErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	tok := b.token(t, "acme", "alice")
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "a", This: "f", Code: "1"})[0]
	cases := []struct {
		name, query, body string
		header            map[string]string
		status            int
		field             string
	}{
		{"not JSON", "", `{"span_id":`, nil, 400, "body"},
		{"empty", "", ``, nil, 400, "body"},
		{"wrong type", "", `{"span_id":42}`, nil, 400, "span_id"},
		{"unknown field", "", `{"span_id":"` + fn.ID + `","tenant_id":"globex"}`, nil, 400, "tenant_id"},
		{"trailing data", "", `{"span_id":"` + fn.ID + `"} {}`, nil, 400, "body"},
		{"missing span_id", "", `{"input":1}`, nil, 422, "span_id"},
		{"bad span_id", "", `{"span_id":"fn-1"}`, nil, 422, "span_id"},
		{"unknown span", "", `{"span_id":"0190a0a0-0000-7000-8000-000000000001"}`, nil, 404, ""},
		{"bad wait", "?wait=soon", `{"span_id":"` + fn.ID + `"}`, nil, 400, "wait"},
		{"negative wait", "?wait=-1s", `{"span_id":"` + fn.ID + `"}`, nil, 400, "wait"},
		{"unknown parameter", "?sync=1", `{"span_id":"` + fn.ID + `"}`, nil, 400, "sync"},
		{"too large", "", `{"span_id":"` + fn.ID + `","input":"` + strings.Repeat("x", 2000) + `"}`, nil, 413, "body"},
		{"content type", "", `{"span_id":"` + fn.ID + `"}`, map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type"},
		{"no token", "", `{"span_id":"` + fn.ID + `"}`, map[string]string{"Authorization": ""}, 401, "Authorization"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := b.rows(t)
			r := b.do(t, http.MethodPost, "/api/execute"+tc.query, tok, tc.header, tc.body)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			p := r.problem(t)
			if tc.field != "" {
				require.Equal(t, tc.field, p.Field, "%s", r.body)
			}
			require.Equal(t, n, b.rows(t), "nothing is written on error")
		})
	}
}
