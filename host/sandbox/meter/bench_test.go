package meter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
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
	// The metering alone (fuel in slices, as the sandbox hands it out), and
	// the module exactly as the sandbox instruments it (writes tracked too).
	metered, err := Instrument(wasm, Options{Refuel: true})
	require.NoError(b, err)
	tracked, err := Instrument(wasm, Options{Refuel: true, TrackWrites: true, WriteShift: 16})
	require.NoError(b, err)
	ctx := context.Background()
	r := newWASIRuntime(b)
	_, err = r.NewHostModuleBuilder(RefuelModule).NewFunctionBuilder().
		WithFunc(func(_ context.Context, m api.Module) { m.ExportedGlobal(ExportName).(api.MutableGlobal).Set(1 << 62) }).
		Export(RefuelName).Instantiate(ctx)
	require.NoError(b, err)
	var cms [3]wazero.CompiledModule // unmetered, metered, tracked
	for i, w := range [][]byte{wasm, metered, tracked} {
		cms[i], err = r.CompileModule(ctx, w)
		require.NoError(b, err)
	}

	timeRun := func(i int) time.Duration {
		fuel := int64(1 << 62)
		if i == 0 {
			fuel = 0
		}
		res := runGoGuest(b, r, cms[i], fuel, rounds)
		require.NoError(b, res.err)
		require.Zero(b, res.exitCode)
		return res.elapsed
	}
	b.ResetTimer()
	fuelOverheadOnce.Do(func() {
		var times [3][]time.Duration
		for i := range cms {
			timeRun(i) // warm up
		}
		for n := 0; n < runs; n++ { // interleaved, so drift hits all alike
			for i := range cms {
				times[i] = append(times[i], timeRun(i))
			}
		}
		fastest := func(d []time.Duration) float64 {
			return float64(slices.Min(d).Microseconds()) / 1000
		}
		bl, o, tr := fastest(times[0]), fastest(times[1]), fastest(times[2])
		b.ReportMetric(o/bl, "metered/unmetered")
		b.ReportMetric(tr/bl, "tracked/unmetered")
		fmt.Printf("BENCH fuel_overhead_cpu ours=%.1f baseline=%.1f unit=ms better=lower\n", o, bl)
		fmt.Printf("BENCH fuel_overhead_cpu_tracked_writes ours=%.1f baseline=%.1f unit=ms better=lower\n", tr, bl)
	})
	for i := 1; i < b.N; i++ {
		// The measurement above is the benchmark; extra iterations add
		// nothing.
	}
}
