package extism

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/wasmtest"
)

const benchIters = 2000

var benchOnce sync.Once

// BenchmarkExtismWarmCall measures a warm Run of a no-op plugin (100 B in,
// the same 100 B out) through this package against extism/go-sdk calling
// the same, unmetered plugin on one reused instance with no logline host
// functions; and a warm run of the same no-op written against our own ABI
// (host/sandbox) against that go-sdk call. It times a fixed number of
// iterations itself and prints two BENCH lines, whatever b.N is.
func BenchmarkExtismWarmCall(b *testing.B) {
	ctx := context.Background()
	wasm := echo()
	input := bytes.Repeat([]byte("x"), 100)

	r := newRuntime(b)
	p := load(b, r, wasm)
	req := sandbox.Request{Input: input}
	ours := measure(b, func() {
		res := r.Run(ctx, p, req)
		if res.Err != nil || len(res.Output) != 100 {
			b.Fatalf("run: %+v", res.Err)
		}
	})

	compiled, err := extism.NewCompiledPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}}, extism.PluginConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer compiled.Close(ctx)
	inst, err := compiled.Instance(ctx, extism.PluginInstanceConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close(ctx)
	baseline := measure(b, func() {
		rc, out, err := inst.CallWithContext(ctx, "run", input)
		if err != nil || rc != 0 || len(out) != 100 {
			b.Fatalf("baseline call: %d %v", rc, err)
		}
	})

	// The same no-op written against our own ABI (runtime wasm): what a
	// guest author gains over calling an Extism plugin with go-sdk.
	sb, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close(ctx)
	io := []wasmtest.Import{
		{Name: abi.FnInput, Params: []byte{wasmtest.I32, wasmtest.I32}, Results: []byte{wasmtest.I32}},
		{Name: abi.FnOutput, Params: []byte{wasmtest.I32, wasmtest.I32}, Results: []byte{wasmtest.I32}},
	}
	m, err := sb.Load(ctx, wasmtest.Module(io, nil, 0, wasmtest.Cat(
		wasmtest.I32Const(0), wasmtest.I32Const(0), wasmtest.I32Const(65536), wasmtest.Call(0), wasmtest.Call(1))))
	if err != nil {
		b.Fatal(err)
	}
	sreq := sandbox.Request{Tenant: "bench", Input: input}
	native := measure(b, func() {
		if res := sb.Run(ctx, m, sreq); res.Err != nil || len(res.Output) != 100 {
			b.Fatalf("run: %+v", res.Err)
		}
	})

	benchOnce.Do(func() {
		fmt.Printf("BENCH extism_warm_call ours=%.2f baseline=%.2f unit=us better=lower\n", ours, baseline)
		fmt.Printf("BENCH sandbox_warm_call_vs_extism_sdk ours=%.2f baseline=%.2f unit=us better=lower\n", native, baseline)
	})
	b.ReportMetric(ours, "ours-us/call")
	b.ReportMetric(baseline, "baseline-us/call")
}

// measure warms f up, then returns its mean time over benchIters calls in
// microseconds.
func measure(b *testing.B, f func()) float64 {
	b.Helper()
	for range 50 {
		f()
	}
	start := time.Now()
	for range benchIters {
		f()
	}
	return float64(time.Since(start).Nanoseconds()) / benchIters / 1e3
}
