package engine_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

const providerKernel = "00000000-0000-4000-8000-000000000005"

// A fake provider speaking the OpenAI and Ollama chat wire formats.
func fakeProvider(t *testing.T, secret string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Model    string `json:"model"`
			Messages []struct{ Role, Content string }
		}
		if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", 400)
			return
		}
		w.Header().Set("content-type", "application/json")
		switch r.URL.Path {
		case "/v1/chat/completions":
			if r.Header.Get("Authorization") != "Bearer "+secret {
				http.Error(w, `{"error":"bad key"}`, 401)
				return
			}
			if req.Model == "broken" {
				http.Error(w, `{"error":"overloaded"}`, 500)
				return
			}
			if req.Model == "slow" {
				time.Sleep(3 * time.Second)
			}
			// An echo of the key must never reach a span.
			_, _ = io.WriteString(w, `{"id":"c1","model":"`+req.Model+`","choices":[{"message":{"role":"assistant","content":"hi `+
				req.Messages[0].Content+`"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10},"echo":"`+r.Header.Get("Authorization")+`"}`)
		case "/api/chat":
			_, _ = io.WriteString(w, `{"model":"`+req.Model+`","message":{"role":"assistant","content":"hello"},"done":true,"prompt_eval_count":5,"eval_count":2}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestProviderExec(t *testing.T) {
	// Not parallel: it sets a host environment variable (the API key).
	const secret = "sk-test-9d2f0c1e-never-in-a-span"
	t.Setenv("LOGLINE_TEST_OPENAI_KEY", secret)
	srv := fakeProvider(t, secret)
	w := newWorld(t, manifestPatch{
		"http_allowlist":   []string{srv.URL + "/"},
		"provider_secrets": []string{"LOGLINE_TEST_OPENAI_KEY"},
	})
	ctx := context.Background()
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, w.url, ledger.WithKey(node))
	require.NoError(t, err)
	defer l.Close()
	rt, err := sandbox.New(ctx, sandbox.Config{CompilationCacheDir: cacheDir})
	require.NoError(t, err)
	defer rt.Close(ctx)
	ext, err := extism.New(ctx, extism.Config{})
	require.NoError(t, err)
	defer ext.Close(ctx)
	h := stage0.New(l, rt, ext)

	provider := func(api, base string, extra map[string]any) string {
		meta := map[string]any{"api": api, "base_url": base, "model": "gpt-test"}
		for k, v := range extra {
			meta[k] = v
		}
		m, _ := json.Marshal(meta)
		return w.append(t, alice, span.Span{EntityType: "provider", Who: "alice", This: "provider", Status: "active", Metadata: m})[0].ID
	}
	call := func(id, payload string) (sandbox.Result, []span.Span) {
		res, err := h.Tick(ctx, providerKernel, "acme", map[string]string{"PROVIDER_ID": id, "PROVIDER_PAYLOAD": payload}, nil)
		require.NoError(t, err)
		return res, w.spans(t, "provider_execution", id)
	}

	openai := provider("openai", srv.URL+"/v1", map[string]any{"auth_env": "LOGLINE_TEST_OPENAI_KEY"})
	res, pe := call(openai, `{"messages":[{"role":"user","content":"there"}]}`)
	require.Nil(t, res.Err, "%+v", res.Err)
	require.Len(t, pe, 1)
	require.Equal(t, "complete", pe[0].Status)
	m := meta(t, pe[0])
	require.Equal(t, "gpt-test", m["model"])
	require.EqualValues(t, 7, m["prompt_tokens"])
	require.EqualValues(t, 3, m["completion_tokens"])
	require.EqualValues(t, 10, m["total_tokens"])
	require.Contains(t, m, "latency_ms")
	require.Contains(t, string(pe[0].Output), "hi there")
	require.Contains(t, string(pe[0].Output), "[redacted]", "the echoed key is redacted")

	ollama := provider("ollama", srv.URL, nil)
	res, pe = call(ollama, `{"model":"llama3","messages":[{"role":"user","content":"x"}]}`)
	require.Nil(t, res.Err, "%+v", res.Err)
	require.Len(t, pe, 1)
	m = meta(t, pe[0])
	require.Equal(t, "llama3", m["model"])
	require.EqualValues(t, 7, m["total_tokens"])

	// HTTP 500: an error provider_execution and an error execution.
	res, pe = call(openai, `{"model":"broken","messages":[{"role":"user","content":"x"}]}`)
	require.NotNil(t, res.Err)
	require.Equal(t, abi.CodeGuestError, res.Err.Code)
	require.Contains(t, res.Err.Message, "HTTP 500")
	require.Equal(t, "error", pe[len(pe)-1].Status)

	// A provider slower than its timeout: an error, well before it answers.
	slow := provider("openai", srv.URL+"/v1", map[string]any{"auth_env": "LOGLINE_TEST_OPENAI_KEY", "timeout_ms": 300})
	start := time.Now()
	res, pe = call(slow, `{"model":"slow","messages":[{"role":"user","content":"x"}]}`)
	require.Less(t, time.Since(start), 2*time.Second, "nothing hangs: the 300 ms timeout ends the call, not the 3 s answer")
	require.NotNil(t, res.Err)
	require.Len(t, pe, 1)
	require.Equal(t, "error", pe[0].Status)

	// A key the manifest does not list is refused.
	other := provider("openai", srv.URL+"/v1", map[string]any{"auth_env": "HOME"})
	res, _ = call(other, `{"messages":[{"role":"user","content":"x"}]}`)
	require.NotNil(t, res.Err)
	require.Contains(t, res.Err.Message, "provider_secrets")

	// The key is nowhere in the ledger.
	require.Zero(t, w.count(t, `SELECT count(*) FROM ledger.universal_registry r WHERE to_jsonb(r)::text LIKE '%' || $1 || '%'`, secret))
	require.Positive(t, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND status = 'error'`))
	require.NotEmpty(t, os.Getenv("LOGLINE_TEST_OPENAI_KEY"))
}

// A recurring function runs once per tick, however many engines watch it.
func TestCronOncePerTick(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	for range 3 {
		startEngine(t, w.url, engine.Config{})
	}
	f := jsFunction(`return "tick"`, "scheduled", nil)
	f.Metadata = json.RawMessage(`{"schedule":"@every 1s"}`)
	fn := w.append(t, alice, f)[0]
	// (The engines' first passes compile the QuickJS guest: give them time.)
	var reqs []span.Span
	eventually(t, testTimeout, "requests of 4 ticks", func() bool {
		reqs = w.spans(t, "request", fn.ID)
		return len(reqs) >= 4
	})
	ticks := map[string]int{}
	for _, r := range reqs {
		ticks[meta(t, r)["tick"].(string)]++
	}
	for tick, n := range ticks {
		require.Equal(t, 1, n, "tick %s requested %d times", tick, n)
		require.True(t, strings.HasSuffix(tick, ".000Z"), tick)
	}
	eventually(t, testTimeout, "every tick executed", func() bool {
		return len(w.spans(t, "execution", fn.ID)) >= len(reqs)
	})
}
