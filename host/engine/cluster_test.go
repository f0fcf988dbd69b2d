package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// childEnv, when set to a database URL, makes the test binary an engine
// process (TestMain), for the tests that kill one.
const childEnv = "LOGLINE_ENGINE_TEST_CHILD"

// childCacheEnv passes the shared compilation cache to a child.
const childCacheEnv = "LOGLINE_ENGINE_TEST_CACHE"

// runChild runs an engine until it is killed. It prints its node's public
// key first, so the parent can tell the spans it signed.
func runChild(url string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	node, err := span.GenerateKey()
	if err == nil {
		fmt.Println(node.PublicHex())
	}
	l, err := ledger.Open(ctx, url, ledger.WithKey(node))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rt, err := sandbox.New(ctx, sandbox.Config{CompilationCacheDir: cacheDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ext, err := extism.New(ctx, extism.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e := engine.New(l, stage0.New(l, rt, ext), engine.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := e.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild starts an engine process and returns it with its public key.
func startChild(t *testing.T, url string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+url, childCacheEnv+"="+cacheDir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	key, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	return cmd, strings.TrimSpace(key)
}

// scheduleMany appends n scheduled functions spread over tenants, in
// batches, and returns their ids.
func (w *world) scheduleMany(t *testing.T, n int, tenants []string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for start := 0; start < n; start += 100 {
		byTenant := map[string][]span.Span{}
		for i := start; i < min(start+100, n); i++ {
			tenant := tenants[i%len(tenants)]
			// One source for all: one prepared QuickJS module.
			byTenant[tenant] = append(byTenant[tenant], jsFunction(`return input * 2`, "scheduled", i))
		}
		for tenant, spans := range byTenant {
			for _, s := range w.append(t, ledger.User(tenant, "alice"), spans...) {
				ids[s.ID] = true
			}
		}
	}
	return ids
}

// checkExactlyOnce waits until every function has run and checks that each
// has exactly one execution, one request, and the right output.
func (w *world) checkExactlyOnce(t *testing.T, ids map[string]bool, timeout time.Duration) {
	t.Helper()
	n := len(ids)
	eventually(t, timeout, fmt.Sprintf("%d executions", n), func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.heads WHERE entity_type = 'request' AND status <> 'scheduled'`) >= n
	})
	// (A kernel pass that fails on a loaded machine is an execution too,
	// of the kernel, by edge:stage0: not counted here.)
	require.Equal(t, n, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code'`), "none twice")
	require.Equal(t, n, w.count(t, `SELECT count(DISTINCT metadata->>'request_id') FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code'`))
	require.Equal(t, n, w.count(t, `SELECT count(DISTINCT parent_id) FROM ledger.universal_registry WHERE entity_type = 'execution' AND status = 'complete'`))
	require.Equal(t, n, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'request' AND seq = 0`), "one request per function")
	require.Zero(t, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code' AND (output #>> '{}')::int <> (input #>> '{}')::int * 2`))
	rows, err := w.l.Pool().Query(context.Background(), `SELECT DISTINCT parent_id::text FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code'`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		require.True(t, ids[id], "an execution of an unknown function %s", id)
	}
	require.NoError(t, rows.Err())
}

func TestThreeEnginesExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 executions")
	}
	t.Parallel()
	w := newWorld(t, manifestPatch{"throttle": map[string]any{"per_tenant_daily_exec_limit": 100000}})
	for range 3 {
		startEngine(t, w.url, engine.Config{})
	}
	ids := w.scheduleMany(t, 1000, []string{"t1", "t2", "t3", "t4"})
	w.checkExactlyOnce(t, ids, testTimeout)
}

func TestKilledEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 executions")
	}
	t.Parallel()
	w := newWorld(t, manifestPatch{"throttle": map[string]any{"per_tenant_daily_exec_limit": 100000}})
	child, childKey := startChild(t, w.url)
	ids := w.scheduleMany(t, 1000, []string{"t1", "t2", "t3", "t4"})
	// Let the child alone make progress, then kill it mid-flight and let
	// two other engines finish.
	eventually(t, testTimeout, "the child engine at work", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code' AND public_key = $1`, childKey) >= 50
	})
	startEngine(t, w.url, engine.Config{})
	startEngine(t, w.url, engine.Config{})
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	byChild := w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'execution' AND who = 'edge:run_code' AND public_key = $1`, childKey)
	require.Less(t, byChild, 1000, "killed mid-flight")
	w.checkExactlyOnce(t, ids, testTimeout)
}
