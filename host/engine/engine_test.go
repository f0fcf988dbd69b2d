package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/ledger/ledgertest"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/seeds"
)

var testPG *ledgertest.Server

// cacheDir is the wazero compilation cache the tests' engines share (the
// child processes too): the QuickJS guest compiles once per test binary,
// not once per engine, which on a loaded machine under -race takes
// seconds each.
var cacheDir string

func TestMain(m *testing.M) {
	if url := os.Getenv(childEnv); url != "" {
		// The SIGKILL test's engine process (see TestKilledEngine).
		cacheDir = os.Getenv(childCacheEnv)
		os.Exit(runChild(url))
	}
	dir, err := os.MkdirTemp("", "engine-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := ledgertest.Main(m, "engine", &testPG)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// testTimeout bounds the tests' waits: generous, for a loaded machine
// running everything under -race.
const testTimeout = 3 * time.Minute

var operator = ledger.User("logline", "operator")

// world is one database seeded like `logline dev` does it: the stock
// kernels and policies signed by admin, the manifest trusting admin.
type world struct {
	url   string
	admin *span.Key
	l     *ledger.Ledger // the test's own view, as system or a user
}

// manifestPatch changes the seeded manifest's metadata for a test.
type manifestPatch map[string]any

func newWorld(t testing.TB, patch manifestPatch) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{url: testPG.Database(t, "engine")}
	var err error
	w.admin, err = span.GenerateKey()
	require.NoError(t, err)
	w.l, err = ledger.Open(ctx, w.url, ledger.WithKey(w.admin))
	require.NoError(t, err)
	t.Cleanup(w.l.Close)
	_, _, err = seeds.Load(ctx, w.l, operator, w.admin)
	require.NoError(t, err)
	// Fast loops for tests, plus the test's own settings.
	meta := manifestPatch{"engine": map[string]any{"observer_ms": 200, "request_worker_ms": 200, "policy_agent_ms": 300}}
	for k, v := range patch {
		meta[k] = v
	}
	w.patchManifest(t, meta)
	return w
}

func (w *world) patchManifest(t testing.TB, patch manifestPatch) {
	t.Helper()
	ctx := context.Background()
	m, err := w.l.Latest(ctx, ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(m.Metadata, &meta))
	for k, v := range patch {
		meta[k] = v
	}
	next := m
	next.Seq, next.PrevHash, next.At, next.CurrHash, next.Signature, next.PublicKey = m.Seq+1, m.CurrHash, "", "", "", ""
	next.Metadata, err = json.Marshal(meta)
	require.NoError(t, err)
	require.NoError(t, ledger.Fill(operator, &next, span.FormatTime(time.Now())))
	require.NoError(t, w.admin.Seal(&next))
	_, err = w.l.Append(ctx, operator, next)
	require.NoError(t, err)
}

// startEngine runs an engine as another host would: its own pool, sandbox,
// node key and Stage-0 host (opts configure its ledger). The returned
// function stops it and waits.
func startEngine(t testing.TB, url string, cfg engine.Config, opts ...ledger.Option) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, url, append([]ledger.Option{ledger.WithKey(node)}, opts...)...)
	require.NoError(t, err)
	rt, err := sandbox.New(ctx, sandbox.Config{CompilationCacheDir: cacheDir})
	require.NoError(t, err)
	ext, err := extism.New(ctx, extism.Config{})
	require.NoError(t, err)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	e := engine.New(l, stage0.New(l, rt, ext), cfg)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(testTimeout):
				t.Errorf("the engine did not stop within %s", testTimeout)
			}
			_ = rt.Close(context.Background())
			_ = ext.Close(context.Background())
			l.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// jsFunction is a user function span in JavaScript.
func jsFunction(code string, status string, input any) span.Span {
	in, _ := json.Marshal(input)
	if input == nil {
		in = nil
	}
	return span.Span{EntityType: "function", Who: "alice", Did: "defined", This: "function", Status: status,
		Name: "f", Runtime: stage0.RuntimeQuickJS, Language: "javascript", Code: code, Input: in, Visibility: "private"}
}

func (w *world) append(t testing.TB, p ledger.Principal, spans ...span.Span) []span.Span {
	t.Helper()
	out, err := w.l.Append(context.Background(), p, spans...)
	require.NoError(t, err)
	return out
}

// spans lists, as the system principal, the spans of an entity type whose
// related_to holds id ("" for all), oldest first.
func (w *world) spans(t testing.TB, entityType, related string) []span.Span {
	t.Helper()
	ctx := context.Background()
	var out []span.Span
	q := `SELECT id FROM ledger.universal_registry WHERE entity_type = $1 AND ($2 = '' OR $2::uuid = ANY(related_to)) AND seq = 0 ORDER BY ord`
	rows, err := w.l.Pool().Query(ctx, q, entityType, related)
	require.NoError(t, err)
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	for _, id := range ids {
		s, err := w.l.Latest(ctx, ledger.System(), id)
		require.NoError(t, err)
		out = append(out, s)
	}
	return out
}

func (w *world) count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, w.l.Pool().QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// execution waits for the execution span of function fn.
func (w *world) execution(t *testing.T, fn string, timeout time.Duration) span.Span {
	t.Helper()
	var ex []span.Span
	eventually(t, timeout, "the execution of "+fn, func() bool {
		ex = w.spans(t, "execution", fn)
		return len(ex) > 0
	})
	require.Len(t, ex, 1, "exactly one execution of %s", fn)
	return ex[0]
}

func meta(t *testing.T, s span.Span) map[string]any {
	t.Helper()
	var m map[string]any
	if len(s.Metadata) > 0 {
		require.NoError(t, json.Unmarshal(s.Metadata, &m))
	}
	return m
}

var alice = ledger.User("acme", "alice")

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"policy": map[string]any{"slow_ms": 1}})
	startEngine(t, w.url, engine.Config{})

	// Scheduled → exactly one request → one signed execution with output.
	fn := w.append(t, alice, jsFunction(`return { sum: input.a + input.b }`, "scheduled", map[string]int{"a": 1, "b": 2}))[0]
	ex := w.execution(t, fn.ID, testTimeout)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `{"sum":3}`, string(ex.Output))
	require.Equal(t, "acme", ex.TenantID)
	require.Equal(t, "alice", ex.OwnerID)
	require.NotEmpty(t, ex.TraceID)
	require.NotNil(t, ex.DurationMs)
	require.NotEmpty(t, ex.Signature, "signed by the engine's node key")
	require.NoError(t, span.Verify(&ex))
	m := meta(t, ex)
	require.Positive(t, m["fuel_used"])
	reqs := w.spans(t, "request", fn.ID)
	require.Len(t, reqs, 1)
	require.Equal(t, reqs[0].ID, m["request_id"])
	require.Equal(t, "complete", reqs[0].Status, "the request's next version closes it")

	// A throwing function: an error execution, and the stock error_report
	// policy opens a report on it.
	bad := w.append(t, alice, jsFunction(`throw new Error("boom: no such thing")`, "scheduled", nil))[0]
	ex = w.execution(t, bad.ID, testTimeout)
	require.Equal(t, "error", ex.Status)
	var e struct{ Code, Message string }
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, "guest_error", e.Code)
	require.Contains(t, e.Message, "boom: no such thing")
	eventually(t, testTimeout, "an error_report", func() bool { return len(w.spans(t, "error_report", ex.ID)) == 1 })

	// A slow one (over the manifest's 1 ms, with fuel of its own asked in
	// its span; it takes several ms on an idle machine): status_patch slow.
	slowFn := jsFunction(`for (var i = 0; i < 60000; i++) {} return i`, "scheduled", nil)
	slowFn.Metadata = json.RawMessage(`{"limits":{"fuel":150000000}}`)
	slow := w.append(t, alice, slowFn)[0]
	ex = w.execution(t, slow.ID, testTimeout)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.Greater(t, *ex.DurationMs, int32(1))
	patches := w.spans(t, "status_patch", ex.ID)
	require.NotEmpty(t, patches)
	require.Equal(t, "slow", meta(t, patches[0])["status"])

	// Stock policies saw the executions.
	eventually(t, testTimeout, "duration metrics", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'metric' AND "this" = 'exec.duration_ms' AND tenant_id = 'acme'`) >= 3
	})
}

func TestQuota(t *testing.T) {
	t.Parallel()
	override, err := span.GenerateKey()
	require.NoError(t, err)
	w := newWorld(t, manifestPatch{
		"throttle":            map[string]any{"per_tenant_daily_exec_limit": 3},
		"override_pubkey_hex": override.PublicHex(),
	})
	startEngine(t, w.url, engine.Config{})
	var fns []span.Span
	for i := 0; i < 4; i++ {
		fns = append(fns, w.append(t, alice, jsFunction(fmt.Sprintf(`return %d`, i), "scheduled", nil))[0])
	}
	eventually(t, testTimeout, "4 requests closed", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.heads WHERE entity_type = 'request' AND status <> 'scheduled'`) == 4
	})
	require.Equal(t, 3, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code'`))
	v := w.spans(t, "policy_violation", "")
	require.Len(t, v, 1, "the 4th execution of the day is blocked")
	var e struct{ Code string }
	require.NoError(t, json.Unmarshal(v[0].Error, &e))
	require.Equal(t, "quota_exceeded", e.Code)
	// The stock throttle policy labels the function.
	eventually(t, testTimeout, "a throttled label", func() bool { return len(w.spans(t, "status_patch", v[0].ParentID)) > 0 })

	// A force override signed by the manifest's override key runs anyway.
	forced := jsFunction(`return "forced"`, "scheduled", nil)
	forced.Metadata = json.RawMessage(`{"force":true}`)
	require.NoError(t, ledger.Fill(alice, &forced, span.FormatTime(time.Now())))
	require.NoError(t, override.Seal(&forced))
	f := w.append(t, alice, forced)[0]
	ex := w.execution(t, f.ID, testTimeout)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `"forced"`, string(ex.Output))
	require.Equal(t, true, meta(t, ex)["forced"])

	// The same force flag signed by someone else is blocked.
	fake := jsFunction(`return "sneaky"`, "scheduled", nil)
	fake.Metadata = json.RawMessage(`{"force":true}`)
	f2 := w.append(t, alice, fake)[0]
	eventually(t, testTimeout, "the fake override blocked", func() bool { return len(w.spans(t, "policy_violation", f2.ID)) == 1 })
	require.Empty(t, w.spans(t, "execution", f2.ID))
}

// Tenants never see each other's work: acme's requests run in acme, globex's
// in globex, and each execution is invisible to the other tenant.
func TestTenantsStayApart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	startEngine(t, w.url, engine.Config{})
	bob := ledger.User("globex", "bob")
	fa := w.append(t, alice, jsFunction(`return "acme"`, "scheduled", nil))[0]
	fb := w.append(t, bob, jsFunction(`return "globex"`, "scheduled", nil))[0]
	ea := w.execution(t, fa.ID, testTimeout)
	eb := w.execution(t, fb.ID, testTimeout)
	require.Equal(t, "acme", ea.TenantID)
	require.Equal(t, "globex", eb.TenantID)
	_, err := w.l.Latest(context.Background(), bob, ea.ID)
	require.ErrorIs(t, err, ledger.ErrNotFound)
	_, err = w.l.Latest(context.Background(), alice, eb.ID)
	require.ErrorIs(t, err, ledger.ErrNotFound)
}

func jsPolicy(code string) span.Span {
	return span.Span{EntityType: "policy", Who: "alice", Did: "defined", This: "policy", Status: "active",
		Name: "p", Runtime: stage0.RuntimeQuickJS, Language: "javascript", Code: code, Visibility: "private"}
}

// Policies: actions are taken (emit_span, run_code); a policy that throws
// on a span gets a policy_error naming that span, one that runs out of fuel
// gets one naming its whole batch; neither stops the others, and no span is
// skipped silently.
func TestPolicies(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	target := w.append(t, alice, jsFunction(`return "triggered by " + input.why`, "active", nil))[0]
	good := w.append(t, alice, jsPolicy(`export default function on(span) {
		if (span.entity_type !== 'note') return [];
		if (span.name === 'bad') throw new Error('cannot judge ' + span.name);
		return [{ emit_span: { entity_type: 'verdict', who: 'policy', this: 'verdict', metadata: { note: span.id } } },
		        { run: 'run_code', span_id: '`+target.ID+`', input: { why: span.name } }];
	}`))[0]
	spin := w.append(t, alice, jsPolicy(`export default function on(span) { for (;;) {} }`))[0]
	startEngine(t, w.url, engine.Config{})

	note := func(name string) span.Span {
		return w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "note", Name: name})[0]
	}
	n1, bad, n2 := note("one"), note("bad"), note("two")

	eventually(t, testTimeout, "two verdicts", func() bool { return len(w.spans(t, "verdict", "")) == 2 })
	var judged []string
	for _, v := range w.spans(t, "verdict", "") {
		judged = append(judged, meta(t, v)["note"].(string))
	}
	require.ElementsMatch(t, []string{n1.ID, n2.ID}, judged)
	// run_code actions became requests, then executions.
	eventually(t, testTimeout, "two executions", func() bool { return len(w.spans(t, "execution", target.ID)) == 2 })
	var outs []string
	for _, ex := range w.spans(t, "execution", target.ID) {
		outs = append(outs, string(ex.Output))
	}
	require.ElementsMatch(t, []string{`"triggered by one"`, `"triggered by two"`}, outs)

	// The throw: a policy_error about the bad note only.
	errs := w.spans(t, "policy_error", bad.ID)
	require.Len(t, errs, 1)
	require.Equal(t, good.ID, errs[0].ParentID)
	require.Contains(t, string(errs[0].Error), "cannot judge bad")

	// The spinning policy: policy_errors (fuel) naming every note, so its
	// cursor moved on without skipping anything silently.
	eventually(t, testTimeout, "the spinning policy's errors", func() bool {
		named := map[string]bool{}
		for _, e := range w.spans(t, "policy_error", spin.ID) {
			var m struct{ Spans []string }
			require.NoError(t, json.Unmarshal(e.Metadata, &m))
			for _, s := range m.Spans {
				named[strings.SplitN(s, "/", 2)[0]] = true
			}
			require.Contains(t, string(e.Error), "fuel_exhausted")
		}
		return named[n1.ID] && named[bad.ID] && named[n2.ID]
	})
}

// `logline boot run_code --env SPAN_ID=...` (Stage-0's run_code kernel) runs a
// function of the kernel's tenant at once, accounted like any request.
func TestBootRunCode(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	ctx := context.Background()
	rt, err := sandbox.New(ctx, sandbox.Config{CompilationCacheDir: cacheDir})
	require.NoError(t, err)
	defer rt.Close(ctx)
	// The host has a node key of its own: the world's key is the
	// operator's, which the manifest trusts.
	node, err := span.GenerateKey()
	require.NoError(t, err)
	hl, err := ledger.Open(ctx, w.url, ledger.WithKey(node))
	require.NoError(t, err)
	defer hl.Close()
	h := stage0.New(hl, rt, nil)
	fn := w.append(t, operator, jsFunction(`return "now"`, "active", nil))[0]
	boot, err := h.Boot(ctx, "00000000-0000-4000-8000-000000000001", map[string]string{"SPAN_ID": fn.ID})
	require.NoError(t, err)
	require.Equal(t, "complete", boot.Status, string(boot.Error))
	ex := w.spans(t, "execution", fn.ID)
	require.Len(t, ex, 1)
	require.JSONEq(t, `"now"`, string(ex[0].Output))
	req := w.spans(t, "request", fn.ID)
	require.Len(t, req, 1)
	require.Equal(t, req[0].ID, meta(t, ex[0])["request_id"])

	// Not a function: refused, nothing run.
	boot, err = h.Boot(ctx, "00000000-0000-4000-8000-000000000001", map[string]string{"SPAN_ID": stage0.ManifestID})
	require.NoError(t, err)
	require.Equal(t, "error", boot.Status)
	require.Contains(t, string(boot.Error), "only executes entity_type=function")
}

// The seed's ttl_reaper, as a stock policy of the manifest, expires an old
// prompt_block of any tenant and leaves a fresh one alone.
func TestTTLReaper(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	startEngine(t, w.url, engine.Config{})
	block := func(ageMin int) span.Span {
		s := span.Span{EntityType: "prompt_block", Who: "alice", This: "block", Metadata: json.RawMessage(`{"ttl_minutes":5}`)}
		// Signed by its author, a span keeps its own time.
		require.NoError(t, ledger.Fill(alice, &s, span.FormatTime(time.Now().Add(-time.Duration(ageMin)*time.Minute))))
		require.NoError(t, w.admin.Seal(&s))
		return w.append(t, alice, s)[0]
	}
	old, fresh := block(10), block(1)
	eventually(t, testTimeout, "the old block expired", func() bool { return len(w.spans(t, "status_patch", old.ID)) == 1 })
	p := w.spans(t, "status_patch", old.ID)[0]
	require.Equal(t, "status=archived", p.This)
	require.Equal(t, "acme", p.TenantID)
	require.Equal(t, "alice", p.OwnerID, "a stock policy's span belongs to the owner of the span it judged")
	// The fresh block was judged in the same pass and left alone.
	eventually(t, testTimeout, "a policy cursor past the fresh block", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'policy_cursor' AND tenant_id = 'acme'`) > 0
	})
	require.Empty(t, w.spans(t, "status_patch", fresh.ID))
}

// Lanes run one tenant's requests side by side while the day's count is far
// from the limit; near it, lane 0 alone runs, counting exactly. 700
// requests against a limit of 590 (lanes run on their own while the count
// leaves room for a full batch, 60, in each of 8 lanes), over 4 lanes:
// exactly 590 executions and 110 violations, and the lanes' counters add up
// to 590 (four lanes that each took 50 from the same count would pass it).
func TestQuotaAcrossLanes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{
		"throttle":        map[string]any{"per_tenant_daily_exec_limit": 590},
		"global_policies": []string{},
		"engine":          map[string]any{"observer_ms": 200, "request_worker_ms": 200, "policy_agent_ms": 300, "request_lanes": 4},
	})
	startEngine(t, w.url, engine.Config{Concurrency: 4})
	p := ledger.User("lanes", "alice")
	fn := w.append(t, p, jsFunction(`return input`, "active", nil))[0]
	for chunk := 0; chunk < 7; chunk++ {
		reqs := make([]span.Span, 100)
		for i := range reqs {
			reqs[i] = span.Span{EntityType: "request", Who: "test", Did: "requested", This: "run_code", Status: "scheduled",
				ParentID: fn.ID, RelatedTo: []string{fn.ID}, Input: []byte(strconv.Itoa(chunk*100 + i)), Visibility: "private"}
		}
		w.append(t, p, reqs...)
	}
	eventually(t, testTimeout, "700 requests closed", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.heads WHERE tenant_id = 'lanes' AND entity_type = 'request' AND status <> 'scheduled'`) == 700
	})
	require.Equal(t, 590, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE tenant_id = 'lanes' AND entity_type = 'execution' AND who = 'edge:run_code'`))
	require.Equal(t, 110, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE tenant_id = 'lanes' AND entity_type = 'policy_violation'`))
	require.Equal(t, 590, w.count(t, `SELECT coalesce(sum((u.metadata->>'count')::int), 0) FROM ledger.heads h
		JOIN ledger.universal_registry u ON u.id = h.id AND u.seq = h.seq
		WHERE h.tenant_id = 'lanes' AND h.entity_type = 'quota_counter'`))
	require.Greater(t, w.count(t, `SELECT count(DISTINCT metadata->>'lane') FROM ledger.universal_registry
		WHERE tenant_id = 'lanes' AND entity_type = 'quota_counter'`), 1, "more than one lane ran")
}
