package sandbox

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
)

// cacheDir is shared by the tests' runtimes, so that the Go guest compiles
// once per test binary rather than once per runtime (slow under -race).
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sandbox-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func newTestRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	if cfg.CompilationCacheDir == "" {
		cfg.CompilationCacheDir = cacheDir
	}
	r, err := New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close(context.Background())) })
	return r
}

func mustLoad(t testing.TB, r *Runtime, wasm []byte) *Module {
	t.Helper()
	m, err := r.Load(context.Background(), wasm)
	require.NoError(t, err)
	return m
}

// fixedClock is a deterministic Request.Clock.
func fixedClock() time.Time { return time.Unix(1_700_000_000, 0).UTC() }

func requireCode(t testing.TB, res Result, code string) {
	t.Helper()
	require.NotNil(t, res.Err, "want %s, the run completed with output %q", code, res.Output)
	require.Equal(t, code, res.Err.Code, "message: %s", res.Err.Message)
}

func requireOK(t testing.TB, res Result) {
	t.Helper()
	require.Nil(t, res.Err, "run failed: %+v, logs %v", res.Err, res.Logs)
}

// fakeCaps records the capability calls it gets.
type fakeCaps struct {
	mu       sync.Mutex
	calls    []string
	unlocked []string
	busy     bool          // Lock reports the key held
	block    bool          // SQL waits for its context
	err      error         // returned by SQL when set
	delay    time.Duration // SQL and Lock sleep this long
}

func (f *fakeCaps) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeCaps) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeCaps) SQL(ctx context.Context, req abi.SQLRequest) ([]byte, error) {
	f.record("sql " + req.Query)
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.err != nil {
		return nil, f.err
	}
	return json.Marshal(abi.SQLResult{Rows: []map[string]any{{"n": 1}}})
}

func (f *fakeCaps) CheckSpans(_ context.Context, spans []byte) ([]byte, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(spans, &items); err != nil {
		return nil, err
	}
	return json.Marshal(make([]*abi.Error, len(items)))
}

func (f *fakeCaps) InsertSpan(_ context.Context, span []byte) ([]byte, error) {
	f.record("insert_span " + string(span))
	return []byte(`{"id":"s1"}`), nil
}

func (f *fakeCaps) Lock(_ context.Context, key string, ttl time.Duration) (bool, error) {
	f.record("lock " + key + " " + ttl.String())
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	return !f.busy, nil
}

func (f *fakeCaps) Unlock(_ context.Context, key string) error {
	f.record("unlock " + key)
	f.mu.Lock()
	f.unlocked = append(f.unlocked, key)
	f.mu.Unlock()
	return nil
}

func (f *fakeCaps) Exec(_ context.Context, req abi.ExecRequest) (abi.ExecResult, error) {
	f.record("exec " + req.SpanID)
	return abi.ExecResult{Status: "complete", Output: "ok", FuelUsed: 5}, nil
}

func (f *fakeCaps) HTTP(_ context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error) {
	f.record("http " + req.URL)
	return abi.HTTPResponse{Status: 200, Body: "pong"}, nil
}
