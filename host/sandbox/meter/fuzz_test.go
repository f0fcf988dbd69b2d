package meter

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
)

// fuzzRuntime validates and compiles fuzz inputs (no compilation cache, so
// that fuzzing does not accumulate compiled code).
var fuzzRuntime = wazero.NewRuntimeWithConfig(context.Background(),
	wazero.NewRuntimeConfigCompiler().WithCoreFeatures(testFeatures))

func compiles(wasm []byte) error {
	ctx := context.Background()
	cm, err := fuzzRuntime.CompileModule(ctx, wasm)
	if err == nil {
		_ = cm.Close(ctx)
	}
	return err
}

// FuzzInstrument checks that Instrument never panics nor modifies its
// input, and that whenever it succeeds on a module the compiler accepts, the
// result compiles too. Inputs Instrument rejects are not given to the
// compiler: wazero's decoder allocates by the counts a module claims, and
// screening those lies is part of Instrument's job (see sections.go); the
// seeds check that it rejects no module the compiler accepts
// (TestAcceptsWhatCompiles).
func FuzzInstrument(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
		if len(s) > 9 {
			f.Add(s[:len(s)-1]) // truncated
		}
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		in := append([]byte(nil), wasm...)
		for _, refuel := range []bool{false, true} {
			out, err := Instrument(wasm, Options{Refuel: refuel, TrackWrites: refuel})
			if string(in) != string(wasm) {
				t.Fatal("Instrument modified its input")
			}
			if err != nil {
				continue
			}
			if compiles(wasm) != nil {
				return
			}
			if err := compiles(out); err != nil {
				t.Fatalf("instrumented module (refuel %v) does not compile: %v", refuel, err)
			}
		}
	})
}

func fuzzSeeds(tb testing.TB) [][]byte {
	seeds := [][]byte{
		testModule(),
		tailCallModule(),
		importsModule(),
		simdModule(),
		startLoopModule(),
		mustInstrument(tb, testModule()), // exports ExportName already
	}
	for _, m := range minimalModules() {
		seeds = append(seeds, m)
	}
	return seeds
}

func TestAcceptsWhatCompiles(t *testing.T) {
	t.Parallel()
	seeds := fuzzSeeds(t)
	if !raceEnabled { // TestGoToolchainModule covers it there
		seeds = append(seeds, buildGoGuestOrNil(t))
	}
	for i, m := range seeds {
		if m == nil || compiles(m) != nil {
			continue
		}
		for _, refuel := range []bool{false, true} {
			_, err := Instrument(m, Options{Refuel: refuel, TrackWrites: refuel})
			if errors.Is(err, ErrExportConflict) {
				continue
			}
			require.NoError(t, err, "seed %d, refuel %v", i, refuel)
		}
	}
}
