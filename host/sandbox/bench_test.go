package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	wasi "github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The benchmarks print one BENCH line each (contract §11), measured once per
// process whatever b.N is: each side runs rounds of a fixed number of
// iterations, interleaved, and the fastest round counts (the machine is
// shared; noise only ever adds time).

var benchOnce sync.Map // benchmark name -> *sync.Once

func benchLine(b *testing.B, name string, ours, baseline time.Duration) {
	once, _ := benchOnce.LoadOrStore(name, &sync.Once{})
	once.(*sync.Once).Do(func() {
		fmt.Printf("BENCH %s ours=%.2f baseline=%.2f unit=us better=lower\n", name,
			float64(ours.Nanoseconds())/1e3, float64(baseline.Nanoseconds())/1e3)
	})
	b.ReportMetric(float64(ours.Nanoseconds())/1e3, "ours-us/op")
	b.ReportMetric(float64(baseline.Nanoseconds())/1e3, "baseline-us/op")
}

// fastest runs f rounds times over n iterations and returns the best time
// per iteration.
func fastest(rounds, n int, f func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for r := 0; r < rounds; r++ {
		start := time.Now()
		for i := 0; i < n; i++ {
			f()
		}
		best = min(best, time.Since(start)/time.Duration(n))
	}
	return best
}

// rawRuntime is the baseline: plain wazero with WASI and a `logline` module
// whose input and output do the least they can (copy the bytes).
type rawRuntime struct {
	rt     wazero.Runtime
	input  []byte
	output []byte
}

func newRawRuntime(b *testing.B) *rawRuntime {
	ctx := context.Background()
	raw := &rawRuntime{rt: wazero.NewRuntime(ctx)}
	b.Cleanup(func() { _ = raw.rt.Close(ctx) })
	wasi.MustInstantiate(ctx, raw.rt)
	hb := raw.rt.NewHostModuleBuilder("logline")
	hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, m api.Module, stack []uint64) {
		n := min(int(uint32(stack[1])), len(raw.input))
		m.Memory().Write(uint32(stack[0]), raw.input[:n])
		stack[0] = uint64(len(raw.input))
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("input")
	hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, m api.Module, stack []uint64) {
		out, _ := m.Memory().Read(uint32(stack[0]), uint32(stack[1]))
		raw.output = append(raw.output[:0], out...)
		stack[0] = 0
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("output")
	// The rest of what the Go guest imports, doing nothing.
	stub := func(name string, params []api.ValueType, result api.ValueType) {
		hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
			stack[0] = 0
		}), params, []api.ValueType{result}).Export(name)
	}
	stub("log", []api.ValueType{i32, i32, i32}, i32)
	stub("random", []api.ValueType{i32, i32}, i32)
	stub("result", []api.ValueType{i32, i32}, i32)
	stub("env", []api.ValueType{i32, i32}, i64)
	stub("sql", []api.ValueType{i32, i32}, i64)
	stub("now", nil, i64)
	if _, err := hb.Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkWarmCall: a warm run of a guest with 100 B in and 100 B out,
// through Run (pool, fuel, limits, host calls, restore), against calling
// `run` of one instance of the same (unmetered) module in plain wazero.
func BenchmarkWarmCall(b *testing.B) {
	ctx := context.Background()
	input := bytes.Repeat([]byte("x"), 100)

	r, err := New(ctx, Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(ctx) })
	m, err := r.Load(ctx, echoModule())
	if err != nil {
		b.Fatal(err)
	}
	req := Request{Tenant: "bench", Input: input}
	ours := func() {
		if res := r.Run(ctx, m, req); res.Err != nil || len(res.Output) != 100 {
			b.Fatalf("run: %+v", res.Err)
		}
	}

	raw := newRawRuntime(b)
	raw.input = input
	mod, err := raw.rt.Instantiate(ctx, echoModule())
	if err != nil {
		b.Fatal(err)
	}
	run := mod.ExportedFunction("run")
	stack := make([]uint64, 1)
	baseline := func() {
		if err := run.CallWithStack(ctx, stack); err != nil || len(raw.output) != 100 {
			b.Fatal(err)
		}
	}

	ours()
	baseline()
	var o, bl time.Duration = 1<<63 - 1, 1<<63 - 1
	for i := 0; i < 5; i++ {
		o = min(o, fastest(1, 20_000, ours))
		bl = min(bl, fastest(1, 20_000, baseline))
	}
	benchLine(b, "sandbox_warm_call_100B", o, bl)
}

// BenchmarkColdInstantiate: a run on a new instance of a tiny module (one
// page of memory, two imports), pooling off, against instantiating and
// closing the same module in plain wazero.
func BenchmarkColdInstantiate(b *testing.B) {
	ctx := context.Background()
	r, err := New(ctx, Config{PoolSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(ctx) })
	m, err := r.Load(ctx, echoModule())
	if err != nil {
		b.Fatal(err)
	}
	req := Request{Input: []byte("x")}
	ours := func() {
		if res := r.Run(ctx, m, req); res.Err != nil || res.Warm {
			b.Fatalf("run: %+v", res.Err)
		}
	}

	raw := newRawRuntime(b)
	compiled, err := raw.rt.CompileModule(ctx, echoModule())
	if err != nil {
		b.Fatal(err)
	}
	cfg := wazero.NewModuleConfig().WithName("")
	baseline := func() {
		mod, err := raw.rt.InstantiateModule(ctx, compiled, cfg)
		if err != nil {
			b.Fatal(err)
		}
		_ = mod.Close(ctx)
	}

	ours()
	baseline()
	var o, bl time.Duration = 1<<63 - 1, 1<<63 - 1
	for i := 0; i < 5; i++ {
		o = min(o, fastest(1, 2000, ours))
		bl = min(bl, fastest(1, 2000, baseline))
	}
	benchLine(b, "sandbox_cold_instantiate_tiny", o, bl)
}

// BenchmarkGoGuestWarm: a warm run of the Go guest, restored from its
// snapshot, against what a run would cost without snapshots: instantiating
// the Go guest and running _initialize (plain wazero, unmetered).
func BenchmarkGoGuestWarm(b *testing.B) {
	ctx := context.Background()
	wasm := buildGoGuest(b)
	r, err := New(ctx, Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(ctx) })
	m, err := r.Load(ctx, wasm)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{Input: []byte("echo hello")}
	ours := func() {
		if res := r.Run(ctx, m, req); res.Err != nil || string(res.Output) != "hello" {
			b.Fatalf("run: %+v", res.Err)
		}
	}

	raw := newRawRuntime(b)
	compiled, err := raw.rt.CompileModule(ctx, wasm)
	if err != nil {
		b.Fatal(err)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize")
	baseline := func() {
		mod, err := raw.rt.InstantiateModule(ctx, compiled, cfg)
		if err != nil {
			b.Fatal(err)
		}
		_ = mod.Close(ctx)
	}

	ours()
	baseline()
	var o, bl time.Duration = 1<<63 - 1, 1<<63 - 1
	for i := 0; i < 5; i++ {
		o = min(o, fastest(1, 200, ours))
		bl = min(bl, fastest(1, 20, baseline))
	}
	benchLine(b, "sandbox_go_guest_warm_run", o, bl)
}
