package extism

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	w "github.com/logline/logline/host/sandbox/wasmtest"
)

func mustOK(t *testing.T, res sandbox.Result) {
	t.Helper()
	if res.Err != nil {
		t.Fatalf("run failed: %s: %s (logs %v)", res.Err.Code, res.Err.Message, res.Logs)
	}
}

func wantCode(t *testing.T, res sandbox.Result, code string) {
	t.Helper()
	if res.Err == nil {
		t.Fatalf("run completed with output %q, want %s", res.Output, code)
	}
	if res.Err.Code != code {
		t.Fatalf("run failed with %s (%s), want %s", res.Err.Code, res.Err.Message, code)
	}
	if res.Output != nil {
		t.Fatalf("a failed run has output %q", res.Output)
	}
}

type envelope struct {
	OK    json.RawMessage `json:"ok"`
	Error *abi.Error      `json:"error"`
}

func parse(t *testing.T, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return e
}

func TestEcho(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, echo())
	res := r.Run(context.Background(), p, sandbox.Request{Input: []byte("hello")})
	mustOK(t, res)
	if string(res.Output) != "hello" {
		t.Fatalf("output %q", res.Output)
	}
	if res.FuelUsed <= 0 {
		t.Fatalf("fuel used %d", res.FuelUsed)
	}
	// Loading again is the same compiled plugin.
	if p2 := load(t, r, echo()); p2 != p {
		t.Fatal("a second Load compiled again")
	}
}

func TestFuelDeterministic(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, calls(abi.FnBlake3))
	var first sandbox.Result
	for i := range 20 {
		res := r.Run(context.Background(), p, sandbox.Request{Input: []byte("same input"), Seed: 7, Clock: fixedClock})
		mustOK(t, res)
		if i == 0 {
			first = res
			if res.FuelUsed < 100 {
				t.Fatalf("fuel used %d, want at least the host call's 100", res.FuelUsed)
			}
			continue
		}
		if res.FuelUsed != first.FuelUsed || !bytes.Equal(res.Output, first.Output) {
			t.Fatalf("run %d: fuel %d output %q, first run: fuel %d output %q", i, res.FuelUsed, res.Output, first.FuelUsed, first.Output)
		}
	}
	sum := blake3.Sum256([]byte("same input"))
	if e := parse(t, first.Output); string(e.OK) != `"`+hex.EncodeToString(sum[:])+`"` {
		t.Fatalf("blake3 answer %s", first.Output)
	}
}

func TestInfiniteLoopFuel(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, plugin(nil, 0, w.Cat(w.LoopForever, w.I32Const(0))))
	res := r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{Fuel: 100_000}})
	wantCode(t, res, abi.CodeFuelExhausted)
	if res.FuelUsed != 100_000 {
		t.Fatalf("fuel used %d, want the limit", res.FuelUsed)
	}
}

func TestWallTimeout(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, plugin(nil, 0, w.Cat(w.LoopForever, w.I32Const(0))))
	start := time.Now()
	res := r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{Fuel: 1 << 60, Wall: 100 * time.Millisecond}})
	wantCode(t, res, abi.CodeTimeout)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestLoadErrors(t *testing.T) {
	r := newRuntime(t)
	cases := []struct {
		name string
		wasm []byte
		code string
	}{
		{"garbage", []byte("this is not wasm at all"), abi.CodeInvalidModule},
		{"empty", nil, abi.CodeInvalidModule},
		{"unknown module", plugin([]imp{{"env", "foo", nil, nil}}, 0, w.I32Const(0)), abi.CodeForbiddenImport},
		{"wasi off", plugin([]imp{{"wasi_snapshot_preview1", "fd_write", []byte{w.I32, w.I32, w.I32, w.I32}, I32}}, 0, w.I32Const(0)), abi.CodeForbiddenImport},
		{"unknown logline fn", plugin([]imp{logline("nope")}, 0, w.I32Const(0)), abi.CodeForbiddenImport},
		{"wrong logline sig", plugin([]imp{{abi.Module, abi.FnSQL, []byte{w.I32, w.I32}, I64}}, 0, w.I32Const(0)), abi.CodeForbiddenImport},
		{"wrong env sig", plugin([]imp{{EnvModule, "alloc", I32, I32}}, 0, w.I32Const(0)), abi.CodeForbiddenImport},
		{"run is an import", reexportsImport(), abi.CodeInvalidModule},
		{"no run", w.Cat([]byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}), abi.CodeInvalidModule},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Load(context.Background(), c.wasm)
			if got := sandbox.CodeOf(err); got != c.code {
				t.Fatalf("Load: %v (code %q), want %s", err, got, c.code)
			}
		})
	}
}

func TestOutputLimit(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, echo())
	res := r.Run(context.Background(), p, sandbox.Request{Input: bytes.Repeat([]byte("x"), 101), Limits: sandbox.Limits{OutputBytes: 100}})
	wantCode(t, res, abi.CodeOutputLimit)
	res = r.Run(context.Background(), p, sandbox.Request{Input: bytes.Repeat([]byte("x"), 100), Limits: sandbox.Limits{OutputBytes: 100}})
	mustOK(t, res)
}

func TestMemoryLimit(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, grows())
	res := r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{MemoryPages: 50}})
	wantCode(t, res, abi.CodeMemoryLimit)
	mustOK(t, r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{MemoryPages: 200}}))
}

func TestHostCallLimit(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, callsNow(10))
	mustOK(t, r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{HostCalls: 10}}))
	res := r.Run(context.Background(), p, sandbox.Request{Limits: sandbox.Limits{HostCalls: 9}})
	wantCode(t, res, abi.CodeHostCallLimit)
	if res.HostCalls != 10 {
		t.Fatalf("host calls %d", res.HostCalls)
	}
}

func TestGuestError(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, fails())
	res := r.Run(context.Background(), p, sandbox.Request{Input: []byte("it broke")})
	wantCode(t, res, abi.CodeGuestError)
	if !strings.Contains(res.Err.Message, "it broke") {
		t.Fatalf("message %q does not carry the plugin's error", res.Err.Message)
	}
}

func TestTrap(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, plugin(nil, 0, w.Cat(unreachable, w.I32Const(0))))
	wantCode(t, r.Run(context.Background(), p, sandbox.Request{}), abi.CodeTrap)
}

func TestPureTierDenied(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, calls(abi.FnSQL))
	for _, tier := range []abi.Tier{"", abi.TierFunction, abi.TierPolicy} {
		caps := &fakeCaps{}
		res := r.Run(context.Background(), p, sandbox.Request{Tier: tier, Caps: caps, Input: []byte(`{"query":"select 1"}`)})
		mustOK(t, res) // the plugin outputs the answer and returns 0
		e := parse(t, res.Output)
		if e.Error == nil || e.Error.Code != "capability_denied" || e.OK != nil {
			t.Fatalf("tier %q: answer %s", tier, res.Output)
		}
		if c := caps.Calls(); len(c) != 0 {
			t.Fatalf("tier %q: capabilities called: %v", tier, c)
		}
	}
}

func TestDeniedThenFailIsCapabilityDenied(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, plugin([]imp{envInputOffset, logline(abi.FnHTTP)}, 0, w.Cat(
		w.Call(0), w.Call(1), drop, unreachable, w.I32Const(0))))
	res := r.Run(context.Background(), p, sandbox.Request{Tier: abi.TierFunction, Caps: &fakeCaps{}, Input: []byte(`{}`)})
	wantCode(t, res, abi.CodeCapabilityDenied)
}

func TestKernelSQL(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, calls(abi.FnSQL))
	caps := &fakeCaps{}
	res := r.Run(context.Background(), p, sandbox.Request{Tier: abi.TierKernel, Caps: caps, Input: []byte(`{"query":"select 1 as n"}`)})
	mustOK(t, res)
	if string(res.Output) != `{"ok":{"rows":[{"n":1}]}}` {
		t.Fatalf("answer %s", res.Output)
	}
	if c := caps.Calls(); len(c) != 1 || c[0] != "sql select 1 as n" {
		t.Fatalf("calls %v", c)
	}
	// Without Caps a kernel is denied too.
	res = r.Run(context.Background(), p, sandbox.Request{Tier: abi.TierKernel, Input: []byte(`{"query":"select 1"}`)})
	mustOK(t, res)
	if e := parse(t, res.Output); e.Error == nil || e.Error.Code != "capability_denied" {
		t.Fatalf("answer %s", res.Output)
	}
	// Malformed request.
	res = r.Run(context.Background(), p, sandbox.Request{Tier: abi.TierKernel, Caps: caps, Input: []byte(`nope`)})
	mustOK(t, res)
	if e := parse(t, res.Output); e.Error == nil || e.Error.Code != "invalid" {
		t.Fatalf("answer %s", res.Output)
	}
}

func TestLocksReleasedAtEnd(t *testing.T) {
	r := newRuntime(t)
	caps := &fakeCaps{}
	// Takes the lock, then traps.
	p := load(t, r, plugin([]imp{envInputOffset, logline(abi.FnLock)}, 0, w.Cat(
		w.Call(0), w.Call(1), drop, unreachable, w.I32Const(0))))
	res := r.Run(context.Background(), p, sandbox.Request{Tier: abi.TierKernel, Caps: caps, Input: []byte(`{"key":"k","ttl_ms":1000}`)})
	wantCode(t, res, abi.CodeTrap)
	if len(caps.unlocks) != 1 || caps.unlocks[0] != "k" {
		t.Fatalf("unlocks %v (calls %v)", caps.unlocks, caps.Calls())
	}
	// busy
	p2 := load(t, r, calls(abi.FnLock))
	res = r.Run(context.Background(), p2, sandbox.Request{Tier: abi.TierKernel, Caps: caps, Input: []byte(`{"key":"busy","ttl_ms":1000}`)})
	mustOK(t, res)
	if e := parse(t, res.Output); e.Error == nil || e.Error.Code != "busy" {
		t.Fatalf("answer %s", res.Output)
	}
}

func TestPureFunctions(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	req := sandbox.Request{Clock: fixedClock, Seed: 42, Env: map[string]string{"K": "v"}}

	run := func(fn, input string) envelope {
		t.Helper()
		req := req
		req.Input = []byte(input)
		res := r.Run(ctx, load(t, r, calls(fn)), req)
		mustOK(t, res)
		return parse(t, res.Output)
	}
	if e := run(abi.FnNow, ""); string(e.OK) != "1704164645000000006" {
		t.Fatalf("now: %s", e.OK)
	}
	if e := run(abi.FnEnv, "K"); string(e.OK) != `"v"` {
		t.Fatalf("env: %s", e.OK)
	}
	if e := run(abi.FnEnv, "missing"); e.Error == nil || e.Error.Code != "not_found" {
		t.Fatalf("env missing: %+v", e)
	}
	a, b := run(abi.FnRandom, `{"len":16}`), run(abi.FnRandom, `{"len":16}`)
	if len(a.OK) != 34 || string(a.OK) != string(b.OK) {
		t.Fatalf("random: %s vs %s", a.OK, b.OK)
	}
	if e := run(abi.FnLog, `{"level":2,"message":"hi"}`); string(e.OK) != "null" {
		t.Fatalf("log: %+v", e)
	}
	if e := run(abi.FnEd25519Verify, `{"public_key":"","message":"","signature":""}`); string(e.OK) != "false" {
		t.Fatalf("ed25519_verify: %+v", e)
	}
}

func TestLogRecorded(t *testing.T) {
	r := newRuntime(t)
	res := r.Run(context.Background(), load(t, r, calls(abi.FnLog)), sandbox.Request{Input: []byte(`{"level":2,"message":"hello log"}`)})
	mustOK(t, res)
	found := false
	for _, l := range res.Logs {
		if l.Source == "log" && l.Text == "hello log" && l.Level == abi.LogWarn {
			found = true
		}
	}
	if !found {
		t.Fatalf("logs %+v", res.Logs)
	}
}

func TestConcurrentRuns(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, calls(abi.FnBlake3))
	done := make(chan sandbox.Result)
	for i := range 8 {
		go func() {
			done <- r.Run(context.Background(), p, sandbox.Request{Input: []byte{byte(i)}})
		}()
	}
	for range 8 {
		mustOK(t, <-done)
	}
}

// reexportsImport exports the imported get_log_level () -> i32 as run.
func reexportsImport() []byte {
	m := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	m = append(m, w.Section(1, w.Vec(w.FuncType(nil, I32)))...)
	m = append(m, w.Section(2, w.Vec(w.Cat(w.Name(EnvModule), w.Name("get_log_level"), []byte{0x00, 0x00})))...)
	return append(m, w.Section(7, w.Vec(w.Cat(w.Name("run"), []byte{0x00, 0x00})))...)
}
