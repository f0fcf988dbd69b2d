package extism

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	w "github.com/logline/logline/host/sandbox/wasmtest"
)

// imp is one function import of a hand-built plugin.
type imp struct {
	mod, name       string
	params, results []byte
}

var (
	I32 = []byte{w.I32}
	I64 = []byte{w.I64}
	II  = []byte{w.I64, w.I64}

	envInputOffset = imp{EnvModule, "input_offset", nil, I64}
	envInputLength = imp{EnvModule, "input_length", nil, I64}
	envOutputSet   = imp{EnvModule, "output_set", II, nil}
	envLength      = imp{EnvModule, "length", I64, I64}
	envErrorSet    = imp{EnvModule, "error_set", I64, nil}
)

func logline(fn string) imp { return imp{abi.Module, fn, I64, I64} }

// plugin builds a module importing imps (function indices 0..n-1), with one
// page of memory, exporting `run` () -> i32 with nI64 i64 locals and the
// given body (without the final end), and `memory`.
func plugin(imps []imp, nI64 int, body []byte) []byte {
	return pluginWithGlobals(imps, nil, nI64, body)
}

// mutableI32 is a global entry: a mutable i32 that starts at 0.
var mutableI32 = w.Cat([]byte{w.I32, 0x01}, w.I32Const(0), []byte{0x0b})

// pluginWithGlobals is plugin with a global section of the given entries
// (indices 0..len(globals)-1).
func pluginWithGlobals(imps []imp, globals [][]byte, nI64 int, body []byte) []byte {
	var types, imports [][]byte
	for i, im := range imps {
		types = append(types, w.FuncType(im.params, im.results))
		imports = append(imports, w.Cat(w.Name(im.mod), w.Name(im.name), []byte{0x00}, w.ULEB(uint64(i))))
	}
	runType := len(types)
	types = append(types, w.FuncType(nil, I32))
	m := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	m = append(m, w.Section(1, w.Vec(types...))...)
	if len(imports) > 0 {
		m = append(m, w.Section(2, w.Vec(imports...))...)
	}
	m = append(m, w.Section(3, w.Vec(w.ULEB(uint64(runType))))...)
	m = append(m, w.Section(5, w.Vec([]byte{0x00, 0x01}))...)
	if len(globals) > 0 {
		m = append(m, w.Section(6, w.Vec(globals...))...)
	}
	m = append(m, w.Section(7, w.Vec(
		w.Cat(w.Name("run"), []byte{0x00}, w.ULEB(uint64(len(imps)))),
		w.Cat(w.Name("memory"), []byte{0x02, 0x00}),
	))...)
	code := []byte{0x00}
	if nI64 > 0 {
		code = w.Cat([]byte{0x01}, w.ULEB(uint64(nI64)), I64)
	}
	code = append(append(code, body...), 0x0b)
	m = append(m, w.Section(10, w.Vec(w.Cat(w.ULEB(uint64(len(code))), code)))...)
	return m
}

var (
	drop        = []byte{0x1a}
	unreachable = []byte{0x00}
)

func localGet(i int) []byte { return []byte{0x20, byte(i)} }
func localSet(i int) []byte { return []byte{0x21, byte(i)} }

// echo outputs its input block as is.
func echo() []byte {
	return plugin([]imp{envInputOffset, envInputLength, envOutputSet}, 0, w.Cat(
		w.Call(0), w.Call(1), w.Call(2), w.I32Const(0)))
}

// calls sends its input block as the request of logline fn and outputs the
// answer block.
func calls(fn string) []byte {
	return plugin([]imp{envInputOffset, logline(fn), envLength, envOutputSet}, 1, w.Cat(
		w.Call(0), w.Call(1), localSet(0),
		localGet(0), localGet(0), w.Call(2), w.Call(3), w.I32Const(0)))
}

// callsN calls logline now n times (ignoring the answers) and returns 0.
func callsNow(n int32) []byte {
	// loop: now(0) drop; n--; br_if n != 0. The counter is an i64 local.
	return plugin([]imp{logline(abi.FnNow)}, 1, w.Cat(
		[]byte{0x42}, w.SLEB(int64(n)), localSet(0),
		[]byte{0x03, 0x40}, // loop
		[]byte{0x42, 0x00}, w.Call(0), drop,
		localGet(0), []byte{0x42, 0x01, 0x7d}, localSet(0), // n = n - 1
		localGet(0), []byte{0x50, 0x45}, []byte{0x0d, 0x00}, // i64.eqz, i32.eqz, br_if 0
		[]byte{0x0b},
		w.I32Const(0)))
}

// fails sets its input as the error and returns 1.
func fails() []byte {
	return plugin([]imp{envInputOffset, envErrorSet}, 0, w.Cat(w.Call(0), w.Call(1), w.I32Const(1)))
}

// grows asks for 100 more pages and traps if refused.
func grows() []byte {
	return plugin(nil, 0, w.Cat(
		w.I32Const(100), []byte{0x40, 0x00}, w.I32Const(-1), []byte{0x46},
		[]byte{0x04, 0x40}, unreachable, []byte{0x0b},
		w.I32Const(0)))
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	r, err := New(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

func load(t testing.TB, r *Runtime, wasm []byte) *Plugin {
	t.Helper()
	p, err := r.Load(context.Background(), wasm)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

func fixedClock() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC) }

// fakeCaps records the capability calls it gets.
type fakeCaps struct {
	mu      sync.Mutex
	calls   []string
	unlocks []string
}

func (f *fakeCaps) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeCaps) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeCaps) SQL(_ context.Context, req abi.SQLRequest) ([]byte, error) {
	f.note("sql " + req.Query)
	return []byte(`{"rows":[{"n":1}]}`), nil
}

func (f *fakeCaps) CheckSpans(_ context.Context, spans []byte) ([]byte, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(spans, &items); err != nil {
		return nil, err
	}
	return json.Marshal(make([]*abi.Error, len(items)))
}

func (f *fakeCaps) InsertSpan(_ context.Context, span []byte) ([]byte, error) {
	f.note("insert_span")
	return span, nil
}

func (f *fakeCaps) Lock(_ context.Context, key string, _ time.Duration) (bool, error) {
	f.note("lock " + key)
	return key != "busy", nil
}

func (f *fakeCaps) Unlock(_ context.Context, key string) error {
	f.note("unlock " + key)
	f.mu.Lock()
	f.unlocks = append(f.unlocks, key)
	f.mu.Unlock()
	return nil
}

func (f *fakeCaps) Exec(context.Context, abi.ExecRequest) (abi.ExecResult, error) {
	f.note("exec")
	return abi.ExecResult{Status: "complete"}, nil
}

func (f *fakeCaps) HTTP(context.Context, abi.HTTPRequest) (abi.HTTPResponse, error) {
	f.note("http")
	return abi.HTTPResponse{Status: 200}, nil
}

var _ sandbox.Capabilities = (*fakeCaps)(nil)
