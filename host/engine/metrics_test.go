package engine_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// /metrics, scraped over HTTP from a real server, shows the engine and its
// sandbox: executions by status and error code, quota violations, passes,
// fuel, open requests, instances and compile-cache hits — and no tenant.
func TestEngineMetricsScrape(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"throttle": map[string]any{"per_tenant_daily_exec_limit": 2}})
	addr, _ := serveWithEngine(t, w)

	// One that completes, one that throws, one past the quota of 2.
	ok := w.append(t, alice, jsFunction(`return 1`, "scheduled", nil))[0]
	bad := w.append(t, alice, jsFunction(`throw new Error("no")`, "scheduled", nil))[0]
	w.execution(t, ok.ID, testTimeout)
	w.execution(t, bad.ID, testTimeout)
	late := w.append(t, alice, jsFunction(`return 2`, "scheduled", nil))[0]
	eventually(t, testTimeout, "a quota violation", func() bool { return len(w.spans(t, "policy_violation", late.ID)) > 0 })

	scrape := func() string {
		res, err := http.Get("http://" + addr + "/metrics")
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return string(b)
	}
	value := func(body, series string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return -1
		}
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		return v
	}
	var body string
	eventually(t, testTimeout, "the counters", func() bool {
		body = scrape()
		// (Every loop's series, once it has run a pass.)
		return value(body, `logline_quota_violations_total`) >= 1 &&
			value(body, `logline_executions_total{code="guest_error",status="error"}`) >= 1 &&
			value(body, `logline_engine_pass_fuel_total{loop="policy_agent"}`) > 0 &&
			strings.Contains(body, `logline_engine_pass_duration_seconds_bucket{loop="observer"`)
	})
	require.GreaterOrEqual(t, value(body, `logline_executions_total{code="",status="complete"}`), 1.0)
	require.Positive(t, value(body, `logline_execution_fuel_total`))
	require.Positive(t, value(body, `logline_engine_passes_total{loop="request_worker",outcome="ok"}`))
	require.Positive(t, value(body, `logline_engine_pass_fuel_total{loop="policy_agent"}`))
	require.Contains(t, body, `logline_engine_pass_duration_seconds_bucket{loop="observer"`)
	require.GreaterOrEqual(t, value(body, `logline_open_requests`), 0.0)
	require.GreaterOrEqual(t, value(body, `logline_open_prompt_requests`), 0.0)
	require.Positive(t, value(body, `logline_sandbox_instances_created_total`))
	require.Positive(t, value(body, `logline_sandbox_instances_reused_total`))
	require.Positive(t, value(body, `logline_sandbox_module_cache_hits_total`))
	require.GreaterOrEqual(t, value(body, `logline_sandbox_instances_pooled`), 0.0)
	require.Zero(t, value(body, `logline_engine_passes_backing_off`))
	require.NotContains(t, body, "acme", "no tenant id in a label")
}

// serveWithEngine runs an engine and the API server it reports to, in one
// process as `logline serve` does, until the test ends; it returns the
// server's address and node key.
func serveWithEngine(t *testing.T, w *world) (string, *span.Key) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, w.url, ledger.WithKey(node))
	require.NoError(t, err)
	rt, err := sandbox.New(ctx, sandbox.Config{CompilationCacheDir: cacheDir})
	require.NoError(t, err)
	ext, err := extism.New(ctx, extism.Config{})
	require.NoError(t, err)
	e := engine.New(l, stage0.New(l, rt, ext), engine.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv, err := api.New(api.Config{Ledger: l, Key: node, Collectors: e.Collectors()})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(ctx, ln); done <- struct{}{} }()
	go func() { _ = e.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		_ = rt.Close(context.Background())
		_ = ext.Close(context.Background())
		l.Close()
	})
	return ln.Addr().String(), node
}
