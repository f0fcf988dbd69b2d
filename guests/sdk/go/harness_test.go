//go:build !wasip1

package logline_test

// A stand-in for host/sandbox: it builds the Go guests with the toolchain
// that runs the tests and runs them in wazero against a fake `logline`
// module that follows abi/abi.go (pending results, error JSON, tiers) over
// in-memory fakes.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	logline "github.com/logline/logline/guests/sdk/go"
)

// guestPackages are the modules the tests build, by short name.
var guestPackages = map[string]string{
	"go-function": "./guests/examples/go-function",
	"go-kernel":   "./guests/examples/go-kernel",
	"roundtrip":   "./guests/sdk/go/testdata/roundtrip",
}

var built struct {
	once  sync.Once
	goBin string
	root  string // of the module
	wasm  map[string][]byte
	times map[string]time.Duration
	skip  string
	err   error
}

// buildGuests compiles every guest once per test binary with
// GOOS=wasip1 GOARCH=wasm -buildmode=c-shared. It skips only when the
// toolchain cannot be run at all; a failing build fails the test.
func buildGuests(t *testing.T) map[string][]byte {
	t.Helper()
	built.once.Do(func() { buildAll(t.TempDir()) })
	if built.skip != "" {
		t.Skip("cannot build Go guests here: " + built.skip)
	}
	require.NoError(t, built.err)
	return built.wasm
}

func buildAll(out string) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			built.skip = "no Go toolchain (GOROOT/bin/go or go on PATH)"
			return
		}
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		built.skip = err.Error()
		return
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		built.skip = "module root not found at " + root
		return
	}
	built.goBin, built.root = goBin, root
	built.wasm = map[string][]byte{}
	built.times = map[string]time.Duration{}
	for name, pkg := range guestPackages {
		file := filepath.Join(out, name+".wasm")
		cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-o", file, pkg)
		cmd.Dir = root
		cmd.Env = append(toolEnv(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		start := time.Now()
		msg, err := cmd.CombinedOutput()
		built.times[name] = time.Since(start)
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				built.err = fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
			} else {
				built.skip = "running " + goBin + ": " + err.Error()
			}
			return
		}
		if built.wasm[name], err = os.ReadFile(file); err != nil {
			built.err = err
			return
		}
	}
}

// engine is one wazero runtime with WASI and the fake `logline` module,
// shared by every test; per-run state travels in the context.
type engine struct {
	rt           wazero.Runtime
	compiled     map[string]wazero.CompiledModule
	compileTimes map[string]time.Duration
}

var shared struct {
	once sync.Once
	eng  *engine
	err  error
}

func getEngine(t *testing.T) *engine {
	t.Helper()
	wasm := buildGuests(t)
	shared.once.Do(func() {
		ctx := context.Background()
		cfg := wazero.NewRuntimeConfig()
		if raceEnabled {
			cache, cleanup, err := precompile(wasm)
			if err != nil {
				t.Logf("precompiling without -race failed, compiling under it (slow): %v", err)
			} else {
				defer cleanup()
				cfg = cfg.WithCompilationCache(cache)
			}
		}
		rt := wazero.NewRuntimeWithConfig(ctx, cfg)
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		if err := instantiateFakeHost(ctx, rt); err != nil {
			shared.err = err
			return
		}
		e := &engine{rt: rt, compiled: map[string]wazero.CompiledModule{}, compileTimes: map[string]time.Duration{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, b := range wasm {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				c, err := rt.CompileModule(ctx, b)
				mu.Lock()
				defer mu.Unlock()
				e.compileTimes[name] = time.Since(start)
				if err != nil {
					shared.err = errors.Join(shared.err, fmt.Errorf("compiling %s: %w", name, err))
					return
				}
				e.compiled[name] = c
			}()
		}
		wg.Wait()
		if shared.err == nil {
			shared.eng = e
		}
	})
	require.NoError(t, shared.err)
	return shared.eng
}

type logLine struct {
	Level int32
	Msg   string
}

// fakeHost is the host side of one run.
type fakeHost struct {
	eng   *engine
	tier  abi.Tier
	input []byte
	env   map[string]string
	now   int64
	busy  map[string]bool // locks held by other runs

	mu        sync.Mutex
	output    []byte
	outputSet bool
	logs      []logLine
	pending   []byte
	calls     []string
	denied    []string
	sqls      []abi.SQLRequest
	spans     []map[string]any
	held      map[string]int32 // lock key -> ttl ms
	lockCalls []string
	execs     []abi.ExecRequest
	https     []abi.HTTPRequest
	randCount int
	stdout    bytes.Buffer
	stderr    bytes.Buffer
	initTime  time.Duration
	pages     uint32 // memory size after the run
}

func newHost(tier abi.Tier, input string) *fakeHost {
	return &fakeHost{
		tier:  tier,
		input: []byte(input),
		env:   map[string]string{},
		now:   time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC).UnixNano(),
		busy:  map[string]bool{"busy": true},
		held:  map[string]int32{},
	}
}

type hostKey struct{}

// run instantiates the named guest, calls _initialize and then run.
func (e *engine) run(t testing.TB, name string, h *fakeHost) int32 {
	t.Helper()
	code, err := e.runErr(name, h)
	require.NoError(t, err, "stderr: %s", h.stderr.String())
	return code
}

func (e *engine) runErr(name string, h *fakeHost) (int32, error) {
	h.eng = e
	ctx := context.WithValue(context.Background(), hostKey{}, h)
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithStdout(&h.stdout).WithStderr(&h.stderr)
	mod, err := e.rt.InstantiateModule(ctx, e.compiled[name], cfg)
	if err != nil {
		return 0, fmt.Errorf("instantiating %s: %w", name, err)
	}
	defer mod.Close(ctx)
	start := time.Now()
	if _, err := mod.ExportedFunction("_initialize").Call(ctx); err != nil {
		return 0, fmt.Errorf("%s: _initialize: %w", name, err)
	}
	h.initTime = time.Since(start)
	res, err := mod.ExportedFunction(abi.Entry).Call(ctx)
	h.pages = mod.Memory().Size() / 65536
	if err != nil {
		return 0, fmt.Errorf("%s: run: %w", name, err)
	}
	return api.DecodeI32(res[0]), nil
}

func (h *fakeHost) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, l := range h.logs {
		fmt.Fprintf(&b, "[%d] %s\n", l.Level, l.Msg)
	}
	return b.String()
}

// Host function plumbing.

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type hostFn struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      func(h *fakeHost, m api.Module, s []uint64)
}

func instantiateFakeHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(abi.Module)
	for _, f := range hostFns {
		f := f
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, s []uint64) {
			h := ctx.Value(hostKey{}).(*fakeHost)
			h.mu.Lock()
			defer h.mu.Unlock()
			if f.name != abi.FnResult {
				h.calls = append(h.calls, f.name)
			}
			f.fn(h, m, s)
		}), f.params, f.results).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// read copies guest memory; out of bounds traps, as the real host does.
func read(m api.Module, ptr, n uint64) []byte {
	b, ok := m.Memory().Read(uint32(ptr), uint32(n))
	if !ok {
		panic(fmt.Errorf("out of bounds: %d+%d", uint32(ptr), uint32(n)))
	}
	return bytes.Clone(b)
}

func write(m api.Module, ptr uint64, b []byte) {
	if !m.Memory().Write(uint32(ptr), b) {
		panic(fmt.Errorf("out of bounds: %d+%d", uint32(ptr), len(b)))
	}
}

// answer sets the pending result and returns its length (an i64 result).
func (h *fakeHost) answer(s []uint64, b []byte) {
	h.pending = b
	s[0] = api.EncodeI64(int64(len(b)))
}

func (h *fakeHost) answerJSON(s []uint64, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	h.answer(s, b)
}

// fail sets the pending result to an abi.Error and returns code, as an i32
// or i64 result (both are the two's complement in the low bits).
func (h *fakeHost) fail(s []uint64, wide bool, code int32, msg string) {
	b, _ := json.Marshal(abi.Error{Code: logline.CodeName(code), Message: msg})
	h.pending = b
	if wide {
		s[0] = api.EncodeI64(int64(code))
	} else {
		s[0] = api.EncodeI32(code)
	}
}

// kernelOnly refuses a lower tier's call, as the host does.
func (h *fakeHost) kernelOnly(s []uint64, wide bool, fn string) bool {
	if !h.tier.Pure() {
		return true
	}
	h.denied = append(h.denied, fn)
	h.fail(s, wide, abi.ErrCapabilityDenied, fmt.Sprintf("%s is not available to %s-tier modules", fn, h.tier))
	return false
}

var hostFns = []hostFn{
	{abi.FnLog, []api.ValueType{i32, i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		h.logs = append(h.logs, logLine{api.DecodeI32(s[0]), string(read(m, s[1], s[2]))})
		s[0] = 0
	}},
	{abi.FnNow, nil, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		s[0] = api.EncodeI64(h.now)
	}},
	{abi.FnRandom, []api.ValueType{i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		b := read(m, s[0], s[1])
		for i := range b {
			b[i] = byte(h.randCount*31 + i*7 + 1)
		}
		h.randCount++
		write(m, s[0], b)
		s[0] = 0
	}},
	{abi.FnInput, []api.ValueType{i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		n := min(int(uint32(s[1])), len(h.input))
		write(m, s[0], h.input[:n])
		s[0] = api.EncodeI32(int32(len(h.input)))
	}},
	{abi.FnOutput, []api.ValueType{i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		h.output, h.outputSet = read(m, s[0], s[1]), true
		s[0] = 0
	}},
	{abi.FnEnv, []api.ValueType{i32, i32}, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		k := string(read(m, s[0], s[1]))
		v, ok := h.env[k]
		if !ok {
			h.fail(s, true, abi.ErrNotFound, "no env "+k)
			return
		}
		h.answer(s, []byte(v))
	}},
	{abi.FnSQL, []api.ValueType{i32, i32}, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, true, abi.FnSQL) {
			return
		}
		var req abi.SQLRequest
		if err := json.Unmarshal(read(m, s[0], s[1]), &req); err != nil {
			h.fail(s, true, abi.ErrInvalid, "sql request: "+err.Error())
			return
		}
		h.sqls = append(h.sqls, req)
		h.fakeSQL(s, req)
	}},
	{abi.FnInsertSpan, []api.ValueType{i32, i32}, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, true, abi.FnInsertSpan) {
			return
		}
		raw := read(m, s[0], s[1])
		var span map[string]any
		if err := json.Unmarshal(raw, &span); err != nil || span["entity_type"] == nil {
			h.fail(s, true, abi.ErrInvalid, "span needs an entity_type")
			return
		}
		if span["id"] == nil {
			span["id"] = fmt.Sprintf("00000000-0000-4000-8000-%012d", len(h.spans)+1)
		}
		span["seq"] = 0
		span["at"] = time.Unix(0, h.now).UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		d := blake3.Sum256(raw)
		span["curr_hash"] = hex.EncodeToString(d[:])
		h.spans = append(h.spans, span)
		h.answerJSON(s, span)
	}},
	{abi.FnLock, []api.ValueType{i32, i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, false, abi.FnLock) {
			return
		}
		k, ttl := string(read(m, s[0], s[1])), api.DecodeI32(s[2])
		h.lockCalls = append(h.lockCalls, fmt.Sprintf("lock %s %d", k, ttl))
		switch {
		case ttl <= 0:
			h.fail(s, false, abi.ErrInvalid, "ttl must be positive")
		case h.busy[k]:
			h.fail(s, false, abi.ErrBusy, "lock "+k+" is held by another run")
		default:
			h.held[k] = ttl
			s[0] = 0
		}
	}},
	{abi.FnUnlock, []api.ValueType{i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, false, abi.FnUnlock) {
			return
		}
		k := string(read(m, s[0], s[1]))
		h.lockCalls = append(h.lockCalls, "unlock "+k)
		if _, ok := h.held[k]; !ok {
			h.fail(s, false, abi.ErrNotFound, "lock "+k+" is not held by this run")
			return
		}
		delete(h.held, k)
		s[0] = 0
	}},
	{abi.FnExec, []api.ValueType{i32, i32}, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, true, abi.FnExec) {
			return
		}
		var req abi.ExecRequest
		if err := json.Unmarshal(read(m, s[0], s[1]), &req); err != nil {
			h.fail(s, true, abi.ErrInvalid, "exec request: "+err.Error())
			return
		}
		h.execs = append(h.execs, req)
		if req.SpanID != "fn-1" && req.SpanID != kernelTarget {
			h.fail(s, true, abi.ErrNotFound, "no function span "+req.SpanID)
			return
		}
		h.answerJSON(s, h.execFunction(req))
	}},
	{abi.FnHTTP, []api.ValueType{i32, i32}, []api.ValueType{i64}, func(h *fakeHost, m api.Module, s []uint64) {
		if !h.kernelOnly(s, true, abi.FnHTTP) {
			return
		}
		var req abi.HTTPRequest
		if err := json.Unmarshal(read(m, s[0], s[1]), &req); err != nil {
			h.fail(s, true, abi.ErrInvalid, "http request: "+err.Error())
			return
		}
		h.https = append(h.https, req)
		h.answerJSON(s, abi.HTTPResponse{
			Status:  201,
			Headers: map[string]string{"Content-Type": "text/plain", "X-Echo": req.Headers["X-A"]},
			Body:    req.Method + " " + req.URL + " " + req.Body,
		})
	}},
	{abi.FnBlake3, []api.ValueType{i32, i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		d := blake3.Sum256(read(m, s[0], s[1]))
		write(m, s[2], d[:])
		s[0] = 0
	}},
	{abi.FnEd25519Verify, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		pub, msg, sig := read(m, s[0], 32), read(m, s[1], s[2]), read(m, s[3], 64)
		s[0] = 0
		if ed25519.Verify(pub, msg, sig) {
			s[0] = 1
		}
	}},
	{abi.FnResult, []api.ValueType{i32, i32}, []api.ValueType{i32}, func(h *fakeHost, m api.Module, s []uint64) {
		p := h.pending
		write(m, s[0], p[:min(int(uint32(s[1])), len(p))])
		s[0] = api.EncodeI32(int32(len(p)))
	}},
}

// kernelTarget is the function span the go-kernel tests run.
const kernelTarget = "6f1f3c1e-0d5b-4c1e-9a51-2b0c7f0e9a01"

func (h *fakeHost) fakeSQL(s []uint64, req abi.SQLRequest) {
	switch req.Query {
	case `SELECT id, seq, name FROM ledger.visible_timeline WHERE id = $1`:
		rows := []map[string]any{}
		if len(req.Params) == 1 && req.Params[0] == kernelTarget {
			rows = append(rows,
				map[string]any{"id": kernelTarget, "seq": 0, "name": "adder"},
				map[string]any{"id": kernelTarget, "seq": 2, "name": "adder v3"},
				map[string]any{"id": kernelTarget, "seq": 1, "name": "adder v2"})
		}
		h.answerJSON(s, abi.SQLResult{Rows: rows})
	case "SELECT 1 AS one, $1::text AS echo, $2::int AS n":
		h.answerJSON(s, abi.SQLResult{Rows: []map[string]any{{"one": 1, "echo": req.Params[0], "n": req.Params[1]}}})
	case "truncated":
		h.answerJSON(s, abi.SQLResult{Rows: []map[string]any{{"i": 1}, {"i": 2}}, Truncated: true})
	case "empty":
		h.answerJSON(s, abi.SQLResult{Rows: []map[string]any{}})
	case "bad":
		h.fail(s, true, abi.ErrFailed, `syntax error at or near "bad"`)
	case "big":
		h.fail(s, true, abi.ErrLimit, strings.Repeat("z", 10_000))
	default:
		h.fail(s, true, abi.ErrInvalid, "unexpected query "+req.Query)
	}
}

// execFunction runs go-function as a nested function-tier run, the way the
// host's exec does (a fresh sandbox, its own limits).
func (h *fakeHost) execFunction(req abi.ExecRequest) abi.ExecResult {
	in, _ := json.Marshal(req.Input)
	if req.Input == nil {
		in = nil
	}
	sub := newHost(abi.TierFunction, string(in))
	start := time.Now()
	code, err := h.eng.runErr("go-function", sub)
	res := abi.ExecResult{FuelUsed: 4242, DurationMs: time.Since(start).Milliseconds()}
	switch {
	case err != nil:
		res.Status, res.Error = "error", &abi.Error{Code: abi.CodeTrap, Message: err.Error()}
	case code != 0:
		msg := ""
		for _, l := range sub.logs {
			if l.Level == abi.LogError {
				msg = l.Msg
			}
		}
		res.Status, res.Error = "error", &abi.Error{Code: abi.CodeGuestError, Message: msg}
	default:
		res.Status = "complete"
		if err := json.Unmarshal(sub.output, &res.Output); err != nil {
			res.Status, res.Error = "error", &abi.Error{Code: abi.CodeGuestError, Message: "output is not JSON"}
		}
	}
	return res
}

// precompile compiles the guests into a wazero compilation cache in a
// process built without -race (see testdata/precompile), so that the race
// detector does not slow wazero's compiler down to minutes per guest. The
// cache holds the same machine code either way.
func precompile(wasm map[string][]byte) (wazero.CompilationCache, func(), error) {
	dir, err := os.MkdirTemp("", "logline-guests-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	// The cache is keyed and stamped with wazero's idea of its own version,
	// which it reads from the build info: a test binary has none ("dev").
	args := []string{"run", "-ldflags=-X github.com/tetratelabs/wazero/internal/version.version=" + wazeroVersion(),
		"./guests/sdk/go/testdata/precompile", filepath.Join(dir, "cache")}
	for name, b := range wasm {
		file := filepath.Join(dir, name+".wasm")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			cleanup()
			return nil, nil, err
		}
		args = append(args, file)
	}
	cmd := exec.Command(built.goBin, args...)
	cmd.Dir = built.root
	cmd.Env = toolEnv()
	if msg, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%v: %s", err, msg)
	}
	cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(dir, "cache"))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return cache, cleanup, nil
}

// wazeroVersion is what wazero's internal/version finds in this binary.
func wazeroVersion() string {
	v := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if strings.Contains(d.Path, "github.com/tetratelabs/wazero") {
				v = d.Version
			}
		}
		if v == "" || v == "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return v
}

// toolEnv is the environment of the go commands the tests run: the test's
// own, without a -race from GOFLAGS (wasip1 has no race detector, and the
// precompiler is meant to run without it).
func toolEnv() []string {
	var flags []string
	for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
		if f != "-race" && f != "--race" && f != "-race=true" {
			flags = append(flags, f)
		}
	}
	return append(os.Environ(), "GOFLAGS="+strings.Join(flags, " "), "GOWORK=off")
}
