package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/tools/fakellm/standin"
)

// promptKeyEnv is the host variable holding the stand-in provider's API
// key, as the provider span names it (auth_env).
const promptKeyEnv = "LOGLINE_CLI_TEST_PROMPT_KEY"

// promptEnv is a database seeded by `logline seed`, a stand-in provider on
// loopback the manifest allows (its key in the host environment, with
// t.Setenv: not parallel), and a provider and a variant of acme's own.
type promptEnv struct {
	env      map[string]string
	l        *ledger.Ledger // the test's own view
	llm      *standin.Server
	provider string
	variant  string
}

var cliAlice = ledger.User("acme", "alice")

func newPromptEnv(t *testing.T) *promptEnv {
	t.Helper()
	ctx := context.Background()
	env := newEnv(t)
	dir := t.TempDir()
	adminFile, node := filepath.Join(dir, "admin.key"), filepath.Join(dir, "node.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", adminFile).code)
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", node).code)
	env["LOGLINE_KEY_FILE"] = node
	r := cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_KEY_FILE": node}, "", "seed", "--key", adminFile)
	require.Equal(t, 0, r.code, r.err)

	key := "sk-cli-" + strings.ReplaceAll(t.Name(), "/", "-") + "-never-in-a-span"
	t.Setenv(promptKeyEnv, key)
	llm := standin.New(key)
	srv := httptest.NewServer(llm)
	t.Cleanup(srv.Close)

	admin, err := span.LoadKey(adminFile)
	require.NoError(t, err)
	l, err := ledger.Open(ctx, env["DATABASE_URL"], ledger.WithKey(admin))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	// The operator allows the stand-in and its key.
	operator := ledger.User("logline", "operator")
	m, err := l.Latest(ctx, ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(m.Metadata, &meta))
	meta["http_allowlist"] = []string{srv.URL + "/"}
	meta["provider_secrets"] = []string{promptKeyEnv}
	next := m
	next.Seq, next.PrevHash, next.At, next.CurrHash, next.Signature, next.PublicKey = m.Seq+1, m.CurrHash, "", "", "", ""
	next.Metadata = mustJSON(t, meta)
	require.NoError(t, ledger.Fill(operator, &next, span.FormatTime(time.Now())))
	require.NoError(t, admin.Seal(&next))
	_, err = l.Append(ctx, operator, next)
	require.NoError(t, err)

	pe := &promptEnv{env: env, l: l, llm: llm}
	pe.provider = pe.append(t, cliAlice, span.Span{EntityType: "provider", Who: "alice", This: "provider", Status: "active",
		Visibility: "tenant", Metadata: mustJSON(t, map[string]any{"api": "openai", "base_url": srv.URL + "/v1", "model": "stand-in",
			"auth_env": promptKeyEnv, "timeout_ms": 5000})}).ID
	var blocks []map[string]any
	for i := 1; i <= 4; i++ {
		blocks = append(blocks, map[string]any{"id": "aaaa0000-0000-4000-8000-0b1c0000000" + string(rune('0'+i))})
	}
	pe.variant = pe.append(t, cliAlice, span.Span{EntityType: "prompt_variant", Who: "alice", This: "prompt_variant", Status: "active",
		Name: "cli_faq@v1", Visibility: "tenant", Metadata: mustJSON(t, map[string]any{
			"family": "cli_faq", "version": "v1", "blocks": blocks,
			"template": "Question: {{user_input}}\nContext: {{context}}",
			"output_schema": map[string]any{"type": "object", "required": []string{"answer", "confidence"},
				"properties": map[string]any{"answer": map[string]any{"type": "string", "minLength": 1},
					"confidence": map[string]any{"type": "number", "minimum": 0, "maximum": 1}}},
			"model": map[string]any{"temperature": 0, "max_tokens": 200}, "provider_id": pe.provider})}).ID
	return pe
}

func (pe *promptEnv) append(t *testing.T, p ledger.Principal, s span.Span) span.Span {
	t.Helper()
	out, err := pe.l.Append(context.Background(), p, s)
	require.NoError(t, err)
	return out[0]
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// Bad flags are usage errors (exit 2) that name them, before anything is
// opened or written.
func TestPromptUsage(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	const v = "0190a0a0-0000-7000-8000-000000000001"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"prompt"}, "subcommand"},
		{[]string{"prompt", "bogus"}, "bogus"},
		{[]string{"prompt", "build"}, "--variant"},
		{[]string{"prompt", "build", "--variant", v, "--colour", "red"}, "colour"},
		{[]string{"prompt", "build", "--variant", v, "extra"}, "extra"},
		{[]string{"prompt", "run", "--input", "x"}, "--variant or --family"},
		{[]string{"prompt", "run", "--variant", v, "--family", "f", "--input", "x"}, "--family"},
		{[]string{"prompt", "run", "--variant", v}, "--input"},
		{[]string{"prompt", "run", "--family", "no spaces", "--input", "x"}, "--family"},
		{[]string{"prompt", "run", "--variant", v, "--input", "a\x00b"}, "NUL"},
		{[]string{"prompt", "eval", "--variant", v}, "--eval"},
		{[]string{"prompt", "eval", "--eval", v}, "--variant"},
		{[]string{"prompt", "eval", "--variant", v, "--eval", v, "--repeats", "0"}, "--repeats"},
		{[]string{"prompt", "eval", "--variant", v, "--eval", v, "--repeats", "many"}, "repeats"},
		{[]string{"prompt", "bandit"}, "--family"},
		{[]string{"prompt", "bandit", "--family", "f", "--seed", "-1"}, "seed"},
		{[]string{"prompt", "bandit", "--family", "f", "--seed", "4294967296"}, "seed"},
		{[]string{"prompt", "bandit", "--family", "f", "--window-days", "0"}, "--window-days"},
		{[]string{"prompt", "show"}, "family"},
		{[]string{"prompt", "show", "a", "b"}, "family"},
		{[]string{"prompt", "show", "no/slash"}, "no/slash"},
		// Ids the principal cannot see are bad input too, refused before
		// any kernel runs (a failed kernel run would be recorded).
		{[]string{"prompt", "build", "--variant", "not-a-uuid"}, "--variant"},
		{[]string{"prompt", "build", "--variant", v}, v},
		{[]string{"prompt", "run", "--variant", v, "--input", "x"}, v},
	} {
		before := rows(t, env["DATABASE_URL"])
		r := cli(t, env, "", c.args...)
		require.Equal(t, 2, r.code, "%v: %s", c.args, r.err)
		require.Contains(t, r.err, c.want, "%v", c.args)
		require.Empty(t, r.out, "%v", c.args)
		require.Equal(t, before, rows(t, env["DATABASE_URL"]), "%v: nothing is written", c.args)
	}
	// No principal, no database: usage errors as for every command.
	r := cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"]}, "", "prompt", "show", "f")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "--tenant")
	r = cli(t, map[string]string{"LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}, "", "prompt", "build", "--variant", v)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "DATABASE_URL")
}

var compiledHash = regexp.MustCompile(`(?m)^compiled_hash ([0-9a-f]{64})$`)

// The prompt commands against a stand-in provider: build (idempotent),
// run, eval, bandit, a run that follows the routing, show.
func TestPromptCommands(t *testing.T) {
	pe := newPromptEnv(t)
	env := pe.env

	// build: a 64-hex compiled_hash; again: the same, reused.
	r := cli(t, env, "", "prompt", "build", "--variant", pe.variant)
	require.Equal(t, 0, r.code, r.err)
	m := compiledHash.FindStringSubmatch(r.out)
	require.NotNil(t, m, r.out)
	require.Contains(t, r.out, "(new)")
	require.Contains(t, r.out, "aaaa0000-0000-4000-8000-0b1c00000001", "the blocks applied")
	again := cli(t, env, "", "prompt", "build", "--variant", pe.variant)
	require.Equal(t, 0, again.code, again.err)
	require.Equal(t, m[1], compiledHash.FindStringSubmatch(again.out)[1])
	require.Contains(t, again.out, "reused")
	js := cli(t, env, "", "prompt", "build", "--variant", pe.variant, "--json")
	require.Equal(t, 0, js.code, js.err)
	var build struct {
		CompiledHash string `json:"compiled_hash"`
		Reused       bool   `json:"reused"`
		Blocks       []any  `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal([]byte(js.out), &build), js.out)
	require.Equal(t, m[1], build.CompiledHash)
	require.True(t, build.Reused)
	require.Len(t, build.Blocks, 4)

	// run: the answer, and the run's telemetry.
	pe.llm.Script("When was it founded?", standin.Reply{Content: `{"answer":"In 2012.","confidence":0.9}`})
	r = cli(t, env, "", "prompt", "run", "--variant", pe.variant, "--input", "When was it founded?", "--context", "Founded in 2012.")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "status complete\n")
	require.Contains(t, r.out, `answer {"answer":"In 2012.","confidence":0.9}`)
	require.Contains(t, r.out, "compiled_hash "+m[1]+"\n")
	require.Contains(t, r.out, "model stand-in\n")
	require.Regexp(t, `tokens \d+ in, \d+ out`, r.out)
	require.Regexp(t, `latency \d+(\.\d+)? ms`, r.out)
	// One that breaks the contract: exit 1, with the error.
	pe.llm.Script("Break it", standin.Reply{Content: `{"answer":""}`})
	r = cli(t, env, "", "prompt", "run", "--variant", pe.variant, "--input", "Break it")
	require.Equal(t, 1, r.code, r.out+r.err)
	require.Contains(t, r.out, "status error\n")
	require.Contains(t, r.out, "error contract_violation: ")
	r = cli(t, env, "", "prompt", "run", "--variant", pe.variant, "--input", "Break it", "--json")
	require.Equal(t, 1, r.code, r.out+r.err)
	var res struct {
		Status string
		Error  struct{ Code string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.out), &res), r.out)
	require.Equal(t, "contract_violation", res.Error.Code)
	// A family with no routing yet: the kernel says not_found, bad input.
	r = cli(t, env, "", "prompt", "run", "--family", "cli_faq", "--input", "When was it founded?")
	require.Equal(t, 2, r.code, r.out+r.err)
	require.Contains(t, r.err, "not_found")
	require.Contains(t, r.err, "no routing")

	// eval: totals per kind and the verdict.
	card := pe.append(t, cliAlice, span.Span{EntityType: "prompt_eval", Who: "alice", This: "prompt_eval", Status: "active",
		Visibility: "tenant", Metadata: mustJSON(t, map[string]any{"family": "cli_faq", "repeats": 3, "fixtures": []map[string]any{
			{"name": "founded", "kind": "happy", "input": map[string]any{"user_input": "When was it founded?", "context": "Founded in 2012."},
				"assert": []map[string]any{{"type": "json_schema"}, {"type": "contains", "path": "answer", "value": "2012"}}},
			{"name": "missing", "kind": "stress", "stress": "missing_context", "input": map[string]any{"user_input": "Who is the CEO?", "context": ""},
				"assert": []map[string]any{{"type": "insufficient_evidence"}}},
		}})}).ID
	r = cli(t, env, "", "prompt", "eval", "--variant", pe.variant, "--eval", card, "--repeats", "2")
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Regexp(t, `(?m)^happy\s+1\s+2\s+2\s+1\s+1\s+1$`, r.out)
	require.Regexp(t, `(?m)^stress\s+1\s+2\s+2\s+1\s+1\s+1$`, r.out)
	require.Contains(t, r.out, "pass_rate 1: passed\n")
	// One that fails: exit 1.
	bad := pe.append(t, cliAlice, span.Span{EntityType: "prompt_eval", Who: "alice", This: "prompt_eval", Status: "active",
		Visibility: "tenant", Metadata: mustJSON(t, map[string]any{"repeats": 1, "fixtures": []map[string]any{
			{"name": "wrong", "kind": "happy", "input": map[string]any{"user_input": "When was it founded?", "context": "Founded in 2012."},
				"assert": []map[string]any{{"type": "contains", "path": "answer", "value": "1999"}}},
		}})}).ID
	r = cli(t, env, "", "prompt", "eval", "--variant", pe.variant, "--eval", bad)
	require.Equal(t, 1, r.code, r.out+r.err)
	require.Contains(t, r.out, "not passed")
	// The card is not a variant: bad input, named.
	r = cli(t, env, "", "prompt", "eval", "--variant", card, "--eval", card)
	require.Equal(t, 2, r.code, r.out+r.err)
	require.Contains(t, r.err, "--variant")

	// bandit: the only variant, with a passing eval of its build, takes
	// every draw; the seed is the one given.
	r = cli(t, env, "", "prompt", "bandit", "--family", "cli_faq", "--seed", "7")
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Regexp(t, `(?m)^`+pe.variant+`\s+1$`, r.out)
	require.Contains(t, r.out, "seed 7\n")
	r = cli(t, env, "", "prompt", "bandit", "--family", "nobody_has_it")
	require.Equal(t, 2, r.code, r.out+r.err)
	require.Contains(t, r.err, "not_found")
	// Now a family run follows the routing.
	r = cli(t, env, "", "prompt", "run", "--family", "cli_faq", "--input", "When was it founded?")
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Contains(t, r.out, "variant "+pe.variant+"\n")

	// show: the variant with its latest eval (the failed one), and the
	// routing's weights.
	r = cli(t, env, "", "prompt", "show", "cli_faq")
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Regexp(t, pe.variant+`\s+cli_faq@v1\s+v1\s+0\s+active\s+0 failed\s+`+m[1][:12], r.out)
	require.Regexp(t, `(?m)^routing [0-9a-f-]{36} seq 0 `, r.out)
	require.Regexp(t, `(?m)^`+pe.variant+`\s+1$`, r.out)
	r = cli(t, env, "", "prompt", "show", "cli_faq", "--json")
	require.Equal(t, 0, r.code, r.out+r.err)
	var fam struct {
		Variants []struct {
			Variant    span.Span `json:"variant"`
			LatestEval struct {
				Passed bool `json:"passed"`
			} `json:"latest_eval"`
		} `json:"variants"`
		Routing *span.Span `json:"routing"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.out), &fam), r.out)
	require.Len(t, fam.Variants, 1)
	require.Equal(t, pe.variant, fam.Variants[0].Variant.ID)
	require.NotNil(t, fam.Routing)
	// Another tenant sees none of it.
	r = cli(t, env, "", "prompt", "show", "cli_faq", "--tenant", "globex", "--user", "mallory")
	require.Equal(t, 1, r.code, r.out+r.err)
	require.Contains(t, r.err, "not found")
}
