package extism

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"

	"github.com/logline/logline/host/sandbox"
)

const benchIters = 2000

var benchOnce sync.Once

// BenchmarkExtismWarmCall measures a warm Run of a no-op plugin (100 B in,
// the same 100 B out) through this package against extism/go-sdk calling
// the same, unmetered plugin on one reused instance with no logline host
// functions. It times a fixed number of iterations itself and prints one
// BENCH line, whatever b.N is.
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

	benchOnce.Do(func() {
		fmt.Printf("BENCH extism_warm_call ours=%.2f baseline=%.2f unit=us better=lower\n", ours, baseline)
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
