package meter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero/api"
)

func BenchmarkInstrumentGo(b *testing.B) {
	wasm := buildGoGuest(b)
	b.SetBytes(int64(len(wasm)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Instrument(wasm, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

var fuelOverheadOnce sync.Once

// BenchmarkFuelOverhead runs the CPU-bound Go guest metered and unmetered
// in wazero's compiler engine and prints one BENCH line with the fastest
// run time of each (instantiation excluded; runs interleaved, and the
// minimum rather than the median because the machine is shared and noise
// only ever adds time). The measurement is done once per process, whatever
// b.N is.
func BenchmarkFuelOverhead(b *testing.B) {
	const (
		rounds = "15" // about 0.1 s per unmetered run here
		runs   = 9
	)
	wasm := buildGoGuest(b)
	// As the sandbox instruments: fuel in slices, writes tracked.
	metered, err := Instrument(wasm, Options{Refuel: true, TrackWrites: true, WriteShift: 16})
	require.NoError(b, err)
	ctx := context.Background()
	r := newWASIRuntime(b)
	_, err = r.NewHostModuleBuilder(RefuelModule).NewFunctionBuilder().
		WithFunc(func(_ context.Context, m api.Module) { m.ExportedGlobal(ExportName).(api.MutableGlobal).Set(1 << 62) }).
		Export(RefuelName).Instantiate(ctx)
	require.NoError(b, err)
	cmOrig, err := r.CompileModule(ctx, wasm)
	require.NoError(b, err)
	cmMetered, err := r.CompileModule(ctx, metered)
	require.NoError(b, err)

	timeRun := func(metered bool) time.Duration {
		cm, fuel := cmOrig, int64(0)
		if metered {
			cm, fuel = cmMetered, 1<<62
		}
		res := runGoGuest(b, r, cm, fuel, rounds)
		require.NoError(b, res.err)
		require.Zero(b, res.exitCode)
		return res.elapsed
	}
	b.ResetTimer()
	fuelOverheadOnce.Do(func() {
		timeRun(false) // warm up
		timeRun(true)
		var base, ours []time.Duration
		for i := 0; i < runs; i++ { // interleaved, so drift hits both
			base = append(base, timeRun(false))
			ours = append(ours, timeRun(true))
		}
		fastest := func(d []time.Duration) float64 {
			return float64(slices.Min(d).Microseconds()) / 1000
		}
		o, bl := fastest(ours), fastest(base)
		b.ReportMetric(o/bl, "metered/unmetered")
		fmt.Printf("BENCH fuel_overhead_cpu ours=%.1f baseline=%.1f unit=ms better=lower\n", o, bl)
	})
	for i := 1; i < b.N; i++ {
		// The measurement above is the benchmark; extra iterations add
		// nothing.
	}
}
