package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Outcomes the fake engine records, as runRequests (guests/kernels/lib.js)
// does: a run (complete, or error from the function), or a refusal.
const (
	ranComplete   = "complete"
	ranError      = "error"
	quotaExceeded = "quota_exceeded"
	notFound      = "not_found"
)

// fakeEngine stands in for the engine by its contract: for every new
// request span it appends, in one transaction and as the tenant's service
// principal on behalf of the requester, what runRequests appends: the
// execution (metadata.request_id, related_to the function and the request)
// or the policy_violation (the same), then the request's closing version
// (seq+1, status complete or error, metadata.execution_id or error.code).
// decide picks the outcome of a request (nil: every run completes). It
// follows the ledger the way the engine does, with LISTEN and a forward
// cursor, as the system principal.
func fakeEngine(t *testing.T, b *bundle, delay time.Duration, decide ...func(req span.Span) string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// The starting position is read before returning, so a request the
	// test appends next is after it.
	cur, err := b.ledger.Tail(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
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
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-time.After(100 * time.Millisecond):
			}
			pg, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{After: cur, EntityType: "request", Status: "scheduled"})
			if err != nil {
				continue
			}
			for _, it := range pg.Items {
				req := it.Span
				outcome := ranComplete
				if len(decide) > 0 {
					outcome = decide[0](req)
				}
				time.Sleep(delay)
				_, err := b.ledger.Append(ctx, ledger.Service(req.TenantID, "engine"), engineSpans(req, outcome)...)
				if err != nil && ctx.Err() == nil {
					t.Errorf("fake engine: %v", err)
				}
			}
			cur = pg.Next
		}
	}()
}

// engineSpans is what runRequests appends for req with outcome.
func engineSpans(req span.Span, outcome string) []span.Span {
	closing := span.Span{ID: req.ID, Seq: req.Seq + 1, EntityType: "request", Who: "edge:run_code", Did: "failed",
		This: req.This, Status: "error", ParentID: req.ParentID, RelatedTo: req.RelatedTo, TraceID: req.TraceID,
		Input: req.Input, OwnerID: req.OwnerID, Visibility: req.Visibility}
	errJSON := func(code, msg string) json.RawMessage {
		b, _ := json.Marshal(map[string]string{"code": code, "message": msg})
		return b
	}
	switch outcome {
	case notFound:
		closing.Error = errJSON(notFound, "request "+req.ID+": no function "+req.ParentID+" visible to this tenant")
		return []span.Span{closing}
	case quotaExceeded:
		msg := "tenant " + req.TenantID + " used 3 of its 3 executions on 2026-01-01 (UTC)"
		meta, _ := json.Marshal(map[string]any{"limit": 3, "today": 3, "request_id": req.ID})
		violation := span.Span{EntityType: "policy_violation", Who: "edge:run_code", Did: "blocked",
			This: "quota.exec.per_tenant.daily", Status: "error", ParentID: req.ParentID,
			RelatedTo: []string{req.ParentID, req.ID}, TraceID: req.TraceID, Error: errJSON(quotaExceeded, msg),
			Metadata: meta, OwnerID: req.OwnerID, Visibility: req.Visibility}
		closing.Error = errJSON(quotaExceeded, msg)
		return []span.Span{violation, closing}
	}
	execID := uuid.NewString()
	meta, _ := json.Marshal(map[string]any{"request_id": req.ID, "fuel_used": 42})
	ex := span.Span{ID: execID, EntityType: "execution", Who: "edge:run_code", Did: "executed", This: "run_code",
		Status: outcome, OwnerID: req.OwnerID, Visibility: req.Visibility, ParentID: req.ParentID,
		RelatedTo: []string{req.ParentID, req.ID}, TraceID: req.TraceID, Input: req.Input, Metadata: meta,
		DurationMs: ptr(int32(5))}
	if outcome == ranComplete {
		ex.Output = json.RawMessage(`{"sum":3}`)
		closing.Did = "completed"
	} else {
		ex.Error = errJSON("runtime_error", "boom")
	}
	closing.Status = outcome
	closing.Metadata, _ = json.Marshal(map[string]any{"execution_id": execID})
	return []span.Span{ex, closing}
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
	// Nor does a forged refusal: a policy_violation naming the request,
	// or a closing version of it, by anyone but the requester's tenant
	// acting for her.
	quota := json.RawMessage(`{"code":"quota_exceeded","message":"forged"}`)
	violation := span.Span{EntityType: "policy_violation", Who: "x", This: "x", Status: "error", RelatedTo: []string{reqID},
		Metadata: meta, Error: quota, Visibility: "tenant"}
	b.appendAs(t, ledger.User("acme", "bob"), violation)
	b.appendAs(t, ledger.User("globex", "alice"), violation)
	closing := span.Span{ID: reqID, Seq: 1, EntityType: "request", Who: "x", This: "run_code", Status: "error", Error: quota, Visibility: "tenant"}
	for _, p := range []ledger.Principal{ledger.User("acme", "bob"), ledger.User("globex", "alice"), ledger.Service("globex", "engine")} {
		_, _ = b.ledger.Append(context.Background(), p, closing) // refused by the ledger, or at least not counted
	}
	r := <-done
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	var res executeResult
	r.json(t, &res)
	require.Equal(t, "scheduled", res.Status)
	require.Nil(t, res.Execution)
	require.Nil(t, res.PolicyViolation)
	require.Nil(t, res.Request)
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
		// Keys are exact (encoding/json would match them case-insensitively)
		// and given once (it would keep the last).
		{"upper-case key", "", `{"SPAN_ID":"` + fn.ID + `"}`, nil, 400, "SPAN_ID"},
		{"mixed-case keys", "", `{"Span_Id":"` + fn.ID + `","INPUT":{"a":1}}`, nil, 400, "Span_Id"},
		{"mixed-case input", "", `{"span_id":"` + fn.ID + `","Input":1}`, nil, 400, "Input"},
		{"escaped key", "", `{"span_id":"` + fn.ID + `","\u0069nput":1,"input":2}`, nil, 400, "input"},
		{"duplicate span_id", "", `{"span_id":"` + fn.ID + `","span_id":"` + fn.ID + `"}`, nil, 400, "span_id"},
		{"duplicate span_id, other value", "", `{"span_id":"0190a0a0-0000-7000-8000-000000000001","span_id":"` + fn.ID + `"}`, nil, 400, "span_id"},
		{"duplicate input", "", `{"span_id":"` + fn.ID + `","input":1,"input":2}`, nil, 400, "input"},
		{"duplicate null", "", `{"span_id":"` + fn.ID + `","input":null,"input":null}`, nil, 400, "input"},
		{"not an object", "", `["` + fn.ID + `"]`, nil, 400, "body"},
		{"a string", "", `"` + fn.ID + `"`, nil, 400, "body"},
		{"null body", "", `null`, nil, 400, "body"},
		{"NUL in span_id", "", `{"span_id":"\u0000"}`, nil, 400, "span_id"},
		{"control character in span_id", "", `{"span_id":"` + fn.ID + `\n"}`, nil, 400, "span_id"},
		{"invalid UTF-8 in span_id", "", "{\"span_id\":\"\xff\"}", nil, 400, "span_id"},
		{"invalid UTF-8 in a key", "", "{\"span_id\":\"" + fn.ID + "\",\"\xc3\x28\":1}", nil, 400, "\uFFFD("},
		{"NUL in input", "", `{"span_id":"` + fn.ID + `","input":"\u0000"}`, nil, 422, "input"},
		{"invalid UTF-8 in input", "", "{\"span_id\":\"" + fn.ID + "\",\"input\":\"\xff\"}", nil, 422, "input"},
		{"duplicate key in input", "", `{"span_id":"` + fn.ID + `","input":{"a":1,"a":2}}`, nil, 422, "input"},
		{"unpaired surrogate in input", "", `{"span_id":"` + fn.ID + `","input":"\ud800"}`, nil, 422, "input"},
		{"huge integer in input", "", `{"span_id":"` + fn.ID + `","input":12345678901234567890}`, nil, 422, "input"},
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

// The body is decoded exactly: the same request with the right keys is
// accepted, and null stands for an absent field, as in span bodies.
func TestExecuteStrictBodyAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "a", This: "f", Code: "1"})[0]
	for _, body := range []string{
		`{"span_id":"` + fn.ID + `"}`,
		`{"input":{"a":[1,{"b":null}]},"span_id":"` + fn.ID + `"}`,
		`{"span_id":"` + fn.ID + `","input":null}`,
		"\xef\xbb\xbf" + `{"span_id":"` + fn.ID + `"}`,
		"\n {\"span_id\" : \"" + fn.ID + "\" }\n",
	} {
		r := b.do(t, http.MethodPost, "/api/execute", tok, nil, body)
		require.Equal(t, http.StatusAccepted, r.status, "%q: %s", body, r.body)
	}
}

// Only functions run: executing any other span is a 422 that names span_id
// and says what the span is, and writes nothing; a span the principal cannot
// see (another tenant's, or missing) stays a 404, with or without a wait.
func TestExecuteOnlyFunctions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, mallory := ledger.User("acme", "alice"), ledger.User("globex", "mallory")
	tok := b.token(t, "acme", "alice")
	mine := b.appendAs(t, alice, note("n", "private"))[0]
	policy := b.appendAs(t, alice, span.Span{EntityType: "policy", Who: "a", This: "p", Status: "active", Code: "1"})[0]
	theirsPublic := b.appendAs(t, mallory, note("pub", "public"))[0]
	theirFn := b.appendAs(t, mallory, span.Span{EntityType: "function", Who: "m", This: "f", Code: "1"})[0]
	for _, wait := range []string{"", "?wait=5s"} {
		for _, tc := range []struct {
			id, entityType string
		}{{mine.ID, "note"}, {policy.ID, "policy"}, {theirsPublic.ID, "note"}} {
			n := b.rows(t)
			r := b.do(t, http.MethodPost, "/api/execute"+wait, tok, nil, map[string]any{"span_id": tc.id})
			require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
			p := r.problem(t)
			require.Equal(t, "span_id", p.Field)
			require.Equal(t, codeInvalid, p.Code)
			require.Contains(t, p.Detail, `"`+tc.entityType+`"`)
			require.Contains(t, p.Detail, "not a function")
			require.Equal(t, n, b.rows(t), "nothing is written")
		}
		for _, id := range []string{theirFn.ID, "0190a0a0-0000-7000-8000-000000000001"} {
			n := b.rows(t)
			r := b.do(t, http.MethodPost, "/api/execute"+wait, tok, nil, map[string]any{"span_id": id})
			require.Equal(t, http.StatusNotFound, r.status, "%s", r.body)
			require.Equal(t, codeNotFound, r.problem(t).Code)
			require.Equal(t, n, b.rows(t), "nothing is written")
		}
	}
}

// ?wait returns whatever outcome the engine recorded, as soon as it
// recorded it: a run that completed or failed (the execution), a refusal
// for quota (the policy_violation) or for a function it could not find.
// Each is a 200 whose status and error.code say which, with the request's
// closing version.
func TestExecuteWaitOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "alice", This: "function",
		Name: "sum", Code: "return 1"})[0]
	// The test says which outcome to record in the request's input.
	fakeEngine(t, b, 0, func(req span.Span) string {
		var in struct{ Outcome string }
		_ = json.Unmarshal(req.Input, &in)
		return in.Outcome
	})
	type errorBody struct{ Code, Message string }
	for _, outcome := range []string{ranComplete, ranError, quotaExceeded, notFound} {
		t.Run(outcome, func(t *testing.T) {
			// A wait far longer than the test allows: answering 200 at all
			// means the outcome ended it, not the clock.
			r := b.do(t, http.MethodPost, "/api/execute?wait=30s", tok, nil, map[string]any{"span_id": fn.ID, "input": map[string]string{"outcome": outcome}})
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			var res executeResult
			r.json(t, &res)
			require.Equal(t, "/api/spans/"+res.RequestID, r.header.Get("Location"))

			// The request's closing version, as the engine wrote it.
			require.NotNil(t, res.Request, "%s", r.body)
			require.Equal(t, res.RequestID, res.Request.ID)
			require.Equal(t, int32(1), res.Request.Seq)
			require.Equal(t, "request", res.Request.EntityType)
			require.Equal(t, res.Request.Status, res.Status)
			latest, err := b.ledger.Latest(context.Background(), ledger.User("acme", "alice"), res.RequestID)
			require.NoError(t, err)
			require.Equal(t, latest.CurrHash, res.Request.CurrHash)

			var e errorBody
			switch outcome {
			case ranComplete:
				require.Equal(t, "complete", res.Status)
				require.Empty(t, res.Error)
				require.NotNil(t, res.Execution)
				require.Equal(t, "execution", res.Execution.EntityType)
				require.Equal(t, fn.ID, res.Execution.ParentID)
				require.JSONEq(t, `{"sum":3}`, string(res.Execution.Output))
				require.Equal(t, res.Execution.ID, metaString(res.Request.Metadata, "execution_id"))
				require.Nil(t, res.PolicyViolation)
			case ranError:
				require.Equal(t, "error", res.Status)
				require.NotNil(t, res.Execution)
				require.Equal(t, "error", res.Execution.Status)
				require.NoError(t, json.Unmarshal(res.Error, &e))
				require.Equal(t, "runtime_error", e.Code, "the execution's error")
				require.Nil(t, res.PolicyViolation)
			case quotaExceeded:
				require.Equal(t, "error", res.Status)
				require.NoError(t, json.Unmarshal(res.Error, &e))
				require.Equal(t, quotaExceeded, e.Code)
				require.NotEmpty(t, e.Message)
				require.Nil(t, res.Execution)
				require.NotNil(t, res.PolicyViolation, "%s", r.body)
				require.Equal(t, "policy_violation", res.PolicyViolation.EntityType)
				require.Equal(t, res.RequestID, metaString(res.PolicyViolation.Metadata, "request_id"))
			case notFound:
				require.Equal(t, "error", res.Status)
				require.NoError(t, json.Unmarshal(res.Error, &e))
				require.Equal(t, notFound, e.Code)
				require.Nil(t, res.Execution)
				require.Nil(t, res.PolicyViolation)
			}
		})
	}
}
