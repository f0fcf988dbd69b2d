package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/seeds"
	"github.com/logline/logline/tools/fakellm/standin"
)

// The stock blocks of seeds/prompts.json.
var stockBlocks = []string{"aaaa0000-0000-4000-8000-0b1c00000001", "aaaa0000-0000-4000-8000-0b1c00000002",
	"aaaa0000-0000-4000-8000-0b1c00000003", "aaaa0000-0000-4000-8000-0b1c00000004"}

// promptKeyEnv is the host variable the stand-in provider's API key is
// in, as the provider span names it (auth_env); never in a span.
const promptKeyEnv = "LOGLINE_API_TEST_PROMPT_KEY"

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// promptBundle is a server on a database seeded as `logline dev` seeds it,
// with an engine running, a stand-in model provider on loopback that the
// manifest allows, and a provider and a variant of acme's own (the seeded
// variant calls 127.0.0.1:8089, which a test cannot rely on).
type promptBundle struct {
	*bundle
	llm      *standin.Server
	provider string
	variant  string
}

var alice = ledger.User("acme", "alice")

// newPromptBundle sets the provider key with t.Setenv: not parallel.
func newPromptBundle(t *testing.T) *promptBundle {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	admin, err := span.GenerateKey()
	require.NoError(t, err)
	operator := ledger.User("logline", "operator")
	_, _, err = seeds.Load(ctx, b.ledger, operator, admin)
	require.NoError(t, err)

	key := "sk-api-" + strings.ReplaceAll(t.Name(), "/", "-") + "-never-in-a-span"
	t.Setenv(promptKeyEnv, key)
	llm := standin.New(key)
	srv := httptest.NewServer(llm)
	t.Cleanup(srv.Close)

	// The manifest: fast loops, the stand-in allowed, its key a secret.
	m, err := b.ledger.Latest(ctx, ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(m.Metadata, &meta))
	meta["engine"] = map[string]any{"observer_ms": 200, "request_worker_ms": 200, "policy_agent_ms": 300, "prompt_worker_ms": 200}
	meta["http_allowlist"] = []string{srv.URL + "/"}
	meta["provider_secrets"] = []string{promptKeyEnv}
	next := m
	next.Seq, next.PrevHash, next.At, next.CurrHash, next.Signature, next.PublicKey = m.Seq+1, m.CurrHash, "", "", "", ""
	next.Metadata = mustJSON(t, meta)
	require.NoError(t, ledger.Fill(operator, &next, span.FormatTime(time.Now())))
	require.NoError(t, admin.Seal(&next))
	b.appendAs(t, operator, next)

	pb := &promptBundle{bundle: b, llm: llm}
	pb.provider = b.appendAs(t, alice, span.Span{EntityType: "provider", Who: "alice", This: "provider", Status: "active",
		Visibility: "tenant", Metadata: mustJSON(t, map[string]any{"api": "openai", "base_url": srv.URL + "/v1", "model": "stand-in",
			"auth_env": promptKeyEnv, "timeout_ms": 5000})})[0].ID
	pb.variant = pb.newVariant(t, alice, "api_faq", "v1")
	startTestEngine(t, b.dbURL)
	return pb
}

// newVariant appends a variant of family for p on the stock blocks,
// calling the bundle's provider.
func (pb *promptBundle) newVariant(t *testing.T, p ledger.Principal, family, version string) string {
	t.Helper()
	var blocks []map[string]any
	for _, id := range stockBlocks {
		blocks = append(blocks, map[string]any{"id": id})
	}
	return pb.appendAs(t, p, span.Span{EntityType: "prompt_variant", Who: p.User, This: "prompt_variant", Status: "active",
		Name: family + "@" + version, Visibility: "tenant", Metadata: mustJSON(t, map[string]any{
			"family": family, "version": version, "blocks": blocks,
			"template": "Question: {{user_input}}\nContext: {{context}}",
			"output_schema": map[string]any{"type": "object", "required": []string{"answer", "confidence"},
				"properties": map[string]any{"answer": map[string]any{"type": "string", "minLength": 1},
					"confidence": map[string]any{"type": "number", "minimum": 0, "maximum": 1}}},
			"model": map[string]any{"temperature": 0, "max_tokens": 200}, "provider_id": pb.provider})})[0].ID
}

// startTestEngine runs an engine as another host would: its own pool,
// node key, sandbox and Stage-0 host, until the test ends.
func startTestEngine(t *testing.T, url string) {
	t.Helper()
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(context.Background(), url, ledger.WithKey(node))
	require.NoError(t, err)
	t.Cleanup(l.Close) // after the engine stops: cleanups run last first
	runEngine(t, l)
}

// runEngine runs an engine on l (with a sandbox and Stage-0 host of its
// own) until the returned function is called or the test ends.
func runEngine(t testing.TB, l *ledger.Ledger) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := sandbox.Config{}
	// The QuickJS guest compiles once per machine, not once per test.
	if dir, err := os.UserCacheDir(); err == nil {
		cfg.CompilationCacheDir = filepath.Join(dir, "logline", "wazero")
	}
	rt, err := sandbox.New(ctx, cfg)
	require.NoError(t, err)
	ext, err := extism.New(ctx, extism.Config{})
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := engine.New(l, stage0.New(l, rt, ext), engine.Config{Log: log})
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(2 * time.Minute):
				t.Errorf("the engine did not stop")
			}
			_ = rt.Close(context.Background())
			_ = ext.Close(context.Background())
		})
	}
	t.Cleanup(stop)
	return stop
}

func decodeRun(t *testing.T, r reply) (req, run span.Span, hasRun bool) {
	t.Helper()
	var out struct {
		Request   *span.Span `json:"request"`
		PromptRun *span.Span `json:"prompt_run"`
	}
	require.NoError(t, json.Unmarshal(r.body, &out), "%s", r.body)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(r.body, &raw))
	require.Len(t, raw, 2, "exactly request and prompt_run: %s", r.body)
	require.Contains(t, raw, "prompt_run")
	require.NotNil(t, out.Request, "%s", r.body)
	if out.PromptRun != nil {
		return *out.Request, *out.PromptRun, true
	}
	return *out.Request, span.Span{}, false
}

func jsonMap(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	}
	return m
}

// Bad bodies and parameters are refused naming the field, and nothing is
// appended.
func TestPromptRunErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	tok := b.token(t, "acme", "alice")
	v := b.appendAs(t, alice, span.Span{EntityType: "prompt_variant", Who: "alice", This: "prompt_variant", Status: "active",
		Metadata: json.RawMessage(`{"family":"f","template":"{{user_input}}"}`)})[0]
	n := b.appendAs(t, alice, note("n", "tenant"))[0]
	archived := b.appendAs(t, alice, span.Span{EntityType: "prompt_variant", Who: "alice", This: "prompt_variant", Status: "archived",
		Metadata: json.RawMessage(`{"family":"f","template":"{{user_input}}"}`)})[0]
	theirs := b.appendAs(t, ledger.User("globex", "mallory"), span.Span{EntityType: "prompt_variant", Who: "m", This: "prompt_variant",
		Status: "active", Visibility: "tenant", Metadata: json.RawMessage(`{"family":"f","template":"{{user_input}}"}`)})[0]
	ok := `"variant_id":"` + v.ID + `","input":"q"`
	cases := []struct {
		name, query, body string
		header            map[string]string
		status            int
		field             string
	}{
		{"not JSON", "", `{"family":`, nil, 400, "body"},
		{"empty", "", ``, nil, 400, "body"},
		{"not an object", "", `["f"]`, nil, 400, "body"},
		{"trailing data", "", `{` + ok + `} {}`, nil, 400, "body"},
		{"unknown field", "", `{` + ok + `,"tenant_id":"globex"}`, nil, 400, "tenant_id"},
		{"a principal in the body", "", `{` + ok + `,"who":"bob"}`, nil, 400, "who"},
		{"upper-case key", "", `{"VARIANT_ID":"` + v.ID + `","input":"q"}`, nil, 400, "VARIANT_ID"},
		{"duplicate input", "", `{` + ok + `,"input":"again"}`, nil, 400, "input"},
		{"duplicate family", "", `{"family":"f","family":"f","input":"q"}`, nil, 400, "family"},
		{"input not a string", "", `{"variant_id":"` + v.ID + `","input":{"q":1}}`, nil, 400, "input"},
		{"context not a string", "", `{` + ok + `,"context":42}`, nil, 400, "context"},
		{"family not a string", "", `{"family":7,"input":"q"}`, nil, 400, "family"},
		{"control character in family", "", `{"family":"f\n","input":"q"}`, nil, 400, "family"},
		{"invalid UTF-8 in input", "", "{\"variant_id\":\"" + v.ID + "\",\"input\":\"\xff\"}", nil, 400, "input"},
		{"missing input", "", `{"variant_id":"` + v.ID + `"}`, nil, 422, "input"},
		{"empty input", "", `{"variant_id":"` + v.ID + `","input":""}`, nil, 422, "input"},
		{"NUL in input", "", `{"variant_id":"` + v.ID + `","input":"a\u0000b"}`, nil, 422, "input"},
		{"lone surrogate in context", "", `{` + ok + `,"context":"\ud800"}`, nil, 422, "context"},
		{"neither family nor variant", "", `{"input":"q"}`, nil, 422, "family"},
		{"both family and variant", "", `{"family":"f",` + ok + `}`, nil, 422, "variant_id"},
		{"bad variant_id", "", `{"variant_id":"v1","input":"q"}`, nil, 422, "variant_id"},
		{"bad family", "", `{"family":"faq answerer","input":"q"}`, nil, 422, "family"},
		{"long family", "", `{"family":"` + strings.Repeat("f", 101) + `","input":"q"}`, nil, 422, "family"},
		{"bad provider_id", "", `{` + ok + `,"provider_id":"p"}`, nil, 422, "provider_id"},
		{"not a variant", "", `{"variant_id":"` + n.ID + `","input":"q"}`, nil, 422, "variant_id"},
		{"archived variant", "", `{"variant_id":"` + archived.ID + `","input":"q"}`, nil, 422, "variant_id"},
		{"not a provider", "", `{` + ok + `,"provider_id":"` + v.ID + `"}`, nil, 422, "provider_id"},
		{"unknown variant", "", `{"variant_id":"0190a0a0-0000-7000-8000-000000000001","input":"q"}`, nil, 404, "variant_id"},
		{"another tenant's variant", "", `{"variant_id":"` + theirs.ID + `","input":"q"}`, nil, 404, "variant_id"},
		{"unknown provider", "", `{` + ok + `,"provider_id":"0190a0a0-0000-7000-8000-000000000001"}`, nil, 404, "provider_id"},
		{"bad wait", "?wait=soon", `{` + ok + `}`, nil, 400, "wait"},
		{"unknown parameter", "?sync=1", `{` + ok + `}`, nil, 400, "sync"},
		{"too large", "", `{` + ok + `,"context":"` + strings.Repeat("x", 5000) + `"}`, nil, 413, "body"},
		{"content type", "", `{` + ok + `}`, map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type"},
		{"no token", "", `{` + ok + `}`, map[string]string{"Authorization": ""}, 401, "Authorization"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.rows(t)
			r := b.do(t, http.MethodPost, "/api/prompts/run"+tc.query, tok, tc.header, tc.body)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			require.Equal(t, tc.field, r.problem(t).Field, "%s", r.body)
			require.Equal(t, before, b.rows(t), "nothing is written on error")
		})
	}

	// The same body, right: a prompt_request as the principal, nothing
	// taken from the body but what it may say.
	r := b.do(t, http.MethodPost, "/api/prompts/run", tok, map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		`{"variant_id":"`+v.ID+`","input":"line one\nline two","context":null}`)
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	req, _, hasRun := decodeRun(t, r)
	require.False(t, hasRun)
	require.Equal(t, "/api/spans/"+req.ID, r.header.Get("Location"))
	stored, err := b.ledger.Latest(context.Background(), alice, req.ID)
	require.NoError(t, err)
	require.Equal(t, req.CurrHash, stored.CurrHash)
	require.Equal(t, "prompt_request", stored.EntityType)
	require.Equal(t, "alice", stored.Who)
	require.Equal(t, "requested", stored.Did)
	require.Equal(t, "prompt.run", stored.This)
	require.Equal(t, "scheduled", stored.Status)
	require.Equal(t, "private", stored.Visibility)
	require.Equal(t, "alice", stored.OwnerID)
	require.Equal(t, "acme", stored.TenantID)
	require.Equal(t, v.ID, stored.ParentID)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", stored.TraceID)
	require.JSONEq(t, `{"variant_id":"`+v.ID+`","user_input":"line one\nline two","context":""}`, string(stored.Input))

	// A family run, with a provider: input says so, no parent.
	prov := b.appendAs(t, alice, span.Span{EntityType: "provider", Who: "alice", This: "provider", Visibility: "tenant"})[0]
	r = b.do(t, http.MethodPost, "/api/prompts/run", tok, nil,
		map[string]any{"family": "faq.v2-x", "input": "q", "context": "c", "provider_id": prov.ID})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	req, _, _ = decodeRun(t, r)
	require.Empty(t, req.ParentID)
	require.JSONEq(t, `{"family":"faq.v2-x","user_input":"q","context":"c","provider_id":"`+prov.ID+`"}`, string(req.Input))

	// GET: a malformed family is a 400 naming it; none visible, 404.
	for _, path := range []string{"/api/prompts/faq%20answerer", "/api/prompts/" + strings.Repeat("f", 101), "/api/prompts/f%0A"} {
		r := b.do(t, http.MethodGet, path, tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status, "%s: %s", path, r.body)
		require.Equal(t, "family", r.problem(t).Field)
	}
	r = b.do(t, http.MethodGet, "/api/prompts/nobody-has-it", tok, nil, nil)
	require.Equal(t, http.StatusNotFound, r.status, "%s", r.body)
	require.Equal(t, codeNotFound, r.problem(t).Code)
	r = b.do(t, http.MethodGet, "/api/prompts/f?limit=1", tok, nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
	require.Equal(t, "limit", r.problem(t).Field)
}

// A run through the API with the engine and a stand-in provider: ?wait
// answers with the closing request and the prompt_run; without a wait the
// request is run all the same; a family with no routing closes as failed.
// GET /api/prompts/{family} shows the variant, its latest eval and the
// tenant's routing, and nothing of one tenant to another.
func TestPromptRunWithEngine(t *testing.T) {
	pb := newPromptBundle(t)
	tok := pb.token(t, "acme", "alice")
	pb.llm.Script("When was it founded?", standin.Reply{Content: `{"answer":"In 2012.","confidence":0.9}`})

	r := pb.do(t, http.MethodPost, "/api/prompts/run?wait=30s", tok, nil,
		map[string]any{"variant_id": pb.variant, "input": "When was it founded?", "context": "Founded in 2012. Sells tea."})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	req, run, hasRun := decodeRun(t, r)
	require.True(t, hasRun, "%s", r.body)
	require.Equal(t, "/api/spans/"+req.ID, r.header.Get("Location"))
	require.Equal(t, "prompt_request", req.EntityType)
	require.Equal(t, int32(1), req.Seq, "the closing version")
	require.Equal(t, "complete", req.Status)
	require.Equal(t, run.ID, jsonMap(t, req.Metadata)["prompt_run_id"])
	require.Equal(t, "prompt_run", run.EntityType)
	require.Equal(t, "complete", run.Status, "%s", r.body)
	require.Equal(t, "alice", run.OwnerID)
	require.Equal(t, pb.variant, run.ParentID)
	require.Equal(t, req.ID, jsonMap(t, run.Metadata)["request_id"])
	require.Equal(t, req.TraceID, run.TraceID)
	out := jsonMap(t, run.Output)
	require.Equal(t, map[string]any{"answer": "In 2012.", "confidence": 0.9}, out["parsed"])
	require.Equal(t, "stand-in", out["model"])
	require.Regexp(t, `^[0-9a-f]{64}$`, jsonMap(t, run.Input)["compiled_hash"])
	// What the API answered is what the ledger holds.
	latest, err := pb.ledger.Latest(context.Background(), alice, req.ID)
	require.NoError(t, err)
	require.Equal(t, latest.CurrHash, req.CurrHash)
	// The key is in no span.
	var leaked int
	require.NoError(t, pb.admin.QueryRow(context.Background(),
		`SELECT count(*) FROM ledger.universal_registry r WHERE to_jsonb(r)::text LIKE '%sk-api-%'`).Scan(&leaked))
	require.Zero(t, leaked)

	// Without a wait: 202 with the request, which the engine then runs.
	r = pb.do(t, http.MethodPost, "/api/prompts/run", tok, nil, map[string]any{"variant_id": pb.variant, "input": "When was it founded?"})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	req, _, hasRun = decodeRun(t, r)
	require.False(t, hasRun)
	require.Equal(t, "scheduled", req.Status)
	eventuallyFor(t, time.Minute, func() bool {
		s, err := pb.ledger.Latest(context.Background(), alice, req.ID)
		return err == nil && s.Status == "complete"
	})

	// A family without routing: the engine closes the request as failed,
	// with a prompt_run that says why.
	r = pb.do(t, http.MethodPost, "/api/prompts/run?wait=30s", tok, nil, map[string]any{"family": "api_faq", "input": "q"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	req, run, hasRun = decodeRun(t, r)
	require.True(t, hasRun, "%s", r.body)
	require.Equal(t, "error", req.Status)
	require.Equal(t, "error", run.Status)
	require.Equal(t, "not_found", jsonMap(t, run.Error)["code"], "%s", run.Error)

	// The family: the variant, no eval yet, no routing.
	var fam struct {
		Family   string `json:"family"`
		Variants []struct {
			Variant    span.Span       `json:"variant"`
			LatestEval json.RawMessage `json:"latest_eval"`
		} `json:"variants"`
		Routing json.RawMessage `json:"routing"`
	}
	r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	require.Equal(t, "api_faq", fam.Family)
	require.Len(t, fam.Variants, 1)
	require.Equal(t, pb.variant, fam.Variants[0].Variant.ID)
	require.Equal(t, "null", string(fam.Variants[0].LatestEval))
	require.Equal(t, "null", string(fam.Routing))

	// Evals of the variant (the newest counts) and a routing of acme.
	evalRun := func(passed bool, rate float64) span.Span {
		return pb.appendAs(t, alice, span.Span{EntityType: "prompt_eval_run", Who: "kernel:prompt_eval", This: "prompt.eval",
			Status: "complete", ParentID: pb.variant, Visibility: "tenant",
			Output: mustJSON(t, map[string]any{"fixtures": []any{}, "totals": map[string]any{"happy": map[string]any{"runs": 4, "passed": 3}}}),
			Metadata: mustJSON(t, map[string]any{"variant_id": pb.variant, "compiled_hash": strings.Repeat("ab", 32), "model": "stand-in",
				"passed": passed, "pass_rate": rate})})[0]
	}
	evalRun(false, 0.5)
	newest := evalRun(true, 0.75)
	routing := pb.appendAs(t, alice, span.Span{EntityType: "prompt_routing", Who: "kernel:prompt_bandit", This: "prompt.routing",
		Status: "active", Visibility: "tenant", Metadata: mustJSON(t, map[string]any{"family": "api_faq",
			"weights": map[string]any{pb.variant: 1}, "decision_id": "0190a0a0-0000-7000-8000-000000000002"})})[0]
	r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	var ev EvalSummary
	require.NoError(t, json.Unmarshal(fam.Variants[0].LatestEval, &ev))
	require.Equal(t, newest.ID, ev.ID)
	require.Equal(t, newest.At, ev.At)
	require.Equal(t, "complete", ev.Status)
	require.Equal(t, strings.Repeat("ab", 32), *ev.CompiledHash)
	require.Equal(t, "stand-in", *ev.Model)
	require.True(t, *ev.Passed)
	require.Equal(t, 0.75, *ev.PassRate)
	require.JSONEq(t, `{"happy":{"runs":4,"passed":3}}`, string(ev.Totals))
	var rt span.Span
	require.NoError(t, json.Unmarshal(fam.Routing, &rt))
	require.Equal(t, routing.ID, rt.ID)

	// Another tenant: acme's family is not found, even by a user of a
	// tenant with the same user name.
	for _, other := range [][2]string{{"globex", "mallory"}, {"globex", "alice"}} {
		r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", pb.token(t, other[0], other[1]), nil, nil)
		require.Equal(t, http.StatusNotFound, r.status, "%s", r.body)
	}
	// With a variant of its own in the family it sees that one, and
	// never acme's routing; acme still sees only its own.
	mallory := ledger.User("globex", "mallory")
	theirs := pb.newVariant(t, mallory, "api_faq", "v9")
	r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", pb.token(t, "globex", "mallory"), nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	require.Len(t, fam.Variants, 1)
	require.Equal(t, theirs, fam.Variants[0].Variant.ID)
	require.Equal(t, "null", string(fam.Variants[0].LatestEval), "acme's evals are acme's")
	require.Equal(t, "null", string(fam.Routing), "acme's routing is acme's")
	// Even one acme made public.
	pub := routing
	pub.Seq, pub.PrevHash, pub.At, pub.CurrHash, pub.Signature, pub.PublicKey, pub.Visibility = 1, routing.CurrHash, "", "", "", "", "public"
	pb.appendAs(t, alice, pub)
	r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", pb.token(t, "globex", "mallory"), nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	require.Equal(t, "null", string(fam.Routing), "another tenant's routing is never shown")
	r = pb.do(t, http.MethodGet, "/api/prompts/api_faq", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	require.Len(t, fam.Variants, 1)
	require.Equal(t, pb.variant, fam.Variants[0].Variant.ID)

	// The stock family serves every tenant: its public variant shows.
	r = pb.do(t, http.MethodGet, "/api/prompts/faq_answerer", pb.token(t, "globex", "mallory"), nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &fam)
	require.Len(t, fam.Variants, 1)
	require.Equal(t, "bbbb0000-0000-4000-8000-0fa900000001", fam.Variants[0].Variant.ID)
}
