package quickjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/guests/quickjs"
	"github.com/logline/logline/host/sandbox"
)

// The benchmarks print one BENCH line each (contract §11): the QuickJS guest
// (ours) beside the same work in a Go guest (baseline), measured in the same
// process, interleaved in rounds; the best round counts (the machine is
// shared, and noise only ever adds time). b.N does not change what they
// print: `make bench` runs them with -benchtime 1x.

var benchOnce sync.Map // name -> *sync.Once

func benchLine(name string, ours, baseline float64, unit, better string) {
	once, _ := benchOnce.LoadOrStore(name, &sync.Once{})
	once.(*sync.Once).Do(func() {
		fmt.Printf("BENCH %s ours=%.2f baseline=%.2f unit=%s better=%s\n", name, ours, baseline, unit, better)
	})
}

// fastest runs f rounds times over n iterations, alternating with g, and
// returns the best time per iteration of each.
func fastest(rounds, n int, f, g func()) (time.Duration, time.Duration) {
	bf, bg := time.Duration(1<<63-1), time.Duration(1<<63-1)
	for r := 0; r < rounds; r++ {
		for _, side := range []struct {
			fn   func()
			best *time.Duration
		}{{f, &bf}, {g, &bg}} {
			start := time.Now()
			for i := 0; i < n; i++ {
				side.fn()
			}
			*side.best = min(*side.best, time.Since(start)/time.Duration(n))
		}
	}
	return bf, bg
}

var goGuests struct {
	once sync.Once
	wasm map[string][]byte
	skip string
	err  error
}

// buildGoGuests compiles the Go baselines (GOOS=wasip1, c-shared) once per
// test binary: the go-function example, and testdata/goreaper.
func buildGoGuests(tb testing.TB) map[string][]byte {
	tb.Helper()
	goGuests.once.Do(func() {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				goGuests.skip = "no Go toolchain to build the Go baselines"
				return
			}
		}
		dir, err := os.MkdirTemp("", "quickjs-bench-")
		if err != nil {
			goGuests.err = err
			return
		}
		defer os.RemoveAll(dir)
		goGuests.wasm = map[string][]byte{}
		for name, pkg := range map[string]string{
			"go-function": "../examples/go-function",
			"goreaper":    "./testdata/goreaper",
		} {
			out := filepath.Join(dir, name+".wasm")
			cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-o", out, pkg)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
			if msg, err := cmd.CombinedOutput(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					goGuests.err = fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
				} else {
					goGuests.skip = "cannot run the Go toolchain: " + err.Error()
				}
				return
			}
			if goGuests.wasm[name], err = os.ReadFile(out); err != nil {
				goGuests.err = err
				return
			}
		}
	})
	if goGuests.skip != "" {
		tb.Skip(goGuests.skip)
	}
	require.NoError(tb, goGuests.err)
	return goGuests.wasm
}

func readExample(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "sdk", "js", "examples", name))
	require.NoError(tb, err)
	return string(b)
}

// reaperBatch is n small spans as the policy_agent passes them: a third
// expired prompt blocks, a third fresh ones, a third other spans.
func reaperBatch(n int) []byte {
	batch := make([]any, n)
	for i := range batch {
		switch i % 3 {
		case 0:
			batch[i] = promptBlock(fmt.Sprintf("b%d", i), time.Hour, 5)
		case 1:
			batch[i] = promptBlock(fmt.Sprintf("b%d", i), time.Minute, 5)
		default:
			batch[i] = map[string]any{"id": fmt.Sprintf("e%d", i), "seq": 0, "entity_type": "execution", "who": "edge:run_code",
				"this": "run_code", "at": clock.Format("2006-01-02T15:04:05.000000Z"), "status": "complete", "duration_ms": 12}
		}
	}
	in, _ := json.Marshal(map[string]any{"batch": batch})
	return in
}

// BenchmarkTTLReaperBatch: the seed's ttl_reaper on small spans, 50 per run
// (the policy_agent's default batch), in policy evaluations per second on
// one core, against the same policy in Go.
func BenchmarkTTLReaperBatch(b *testing.B) {
	const n = 50
	ctx := context.Background()
	rt, base := guest(b)
	js, err := rt.Prepare(ctx, base, quickjs.Init(quickjs.KindPolicy, ttlReaper, "ttl_reaper_policy.js"))
	require.NoError(b, err)
	gm, err := rt.Load(ctx, buildGoGuests(b)["goreaper"])
	require.NoError(b, err)
	in := reaperBatch(n)
	// Fuel to spare: this measures speed; the fuel a batch burns is
	// reported beside it.
	req := sandbox.Request{Tenant: "bench", Tier: abi.TierPolicy, Input: in, Clock: fixedClock,
		Limits: sandbox.Limits{Fuel: 100 * sandbox.DefaultFuel}}
	var jsOut, goOut []byte
	var jsFuel, goFuel int64
	runJS := func() {
		res := rt.Run(ctx, js, req)
		if res.Err != nil {
			b.Fatalf("js: %+v", res.Err)
		}
		jsOut, jsFuel = res.Output, res.FuelUsed
	}
	runGo := func() {
		res := rt.Run(ctx, gm, req)
		if res.Err != nil {
			b.Fatalf("go: %+v", res.Err)
		}
		goOut, goFuel = res.Output, res.FuelUsed
	}
	runJS()
	runGo()
	require.JSONEq(b, string(goOut), string(jsOut), "the same work: the same answers")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runJS()
	}
	b.StopTimer()
	tjs, tgo := fastest(5, 10, runJS, runGo)
	perSec := func(d time.Duration) float64 { return n / d.Seconds() }
	benchLine("quickjs_ttl_reaper_batch50", perSec(tjs), perSec(tgo), "evals/s", "higher")
	benchLine("quickjs_ttl_reaper_batch50_fuel", float64(jsFuel)/n, float64(goFuel)/n, "fuel/eval", "lower")
	b.ReportMetric(perSec(tjs), "js-evals/s")
	b.ReportMetric(perSec(tgo), "go-evals/s")
}

// BenchmarkFunctionWarm: one run of a small function from its snapshot (a
// pooled instance, restored): guests/sdk/js/examples/function.js against its
// Go twin, guests/examples/go-function.
func BenchmarkFunctionWarm(b *testing.B) {
	ctx := context.Background()
	rt, base := guest(b)
	js, err := rt.Prepare(ctx, base, quickjs.Init(quickjs.KindFunction, readExample(b, "function.js"), "function.js"))
	require.NoError(b, err)
	gm, err := rt.Load(ctx, buildGoGuests(b)["go-function"])
	require.NoError(b, err)
	req := sandbox.Request{Tenant: "bench", Input: []byte(`{"a":1,"b":2}`), Clock: fixedClock}
	runOne := func(m *sandbox.Module) func() {
		return func() {
			res := rt.Run(ctx, m, req)
			if res.Err != nil || string(res.Output) != `{"sum":3}` {
				b.Fatalf("run: %+v %s", res.Err, res.Output)
			}
			if !res.Warm {
				// The first run of each module instantiates; later
				// ones must come from the pool.
				res = rt.Run(ctx, m, req)
				if !res.Warm {
					b.Fatal("a run did not start from the pool")
				}
			}
		}
	}
	runJS, runGo := runOne(js), runOne(gm)
	runJS()
	runGo()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runJS()
	}
	b.StopTimer()
	tjs, tgo := fastest(5, 50, runJS, runGo)
	benchLine("quickjs_function_warm_run", us(tjs), us(tgo), "us", "lower")
	b.ReportMetric(us(tjs), "js-us/run")
	b.ReportMetric(us(tgo), "go-us/run")
}

// BenchmarkColdRun: a run from nothing but the compiled module: a new
// instance, its initialisation (for JS: the QuickJS runtime and context, the
// prelude, then compiling the source in logline_prepare), the run. The
// baseline is the Go function's instance, _initialize and run.
func BenchmarkColdRun(b *testing.B) {
	ctx := context.Background()
	rt, err := sandbox.New(ctx, sandbox.Config{PoolSize: -1}) // no pool: every run instantiates
	require.NoError(b, err)
	b.Cleanup(func() { _ = rt.Close(ctx) })
	base, err := rt.Load(ctx, quickjs.Wasm)
	require.NoError(b, err)
	js, err := rt.Prepare(ctx, base, quickjs.Init(quickjs.KindFunction, readExample(b, "function.js"), "function.js"))
	require.NoError(b, err)
	gm, err := rt.Load(ctx, buildGoGuests(b)["go-function"])
	require.NoError(b, err)
	req := sandbox.Request{Tenant: "bench", Input: []byte(`{"a":1,"b":2}`), Clock: fixedClock}
	runOne := func(m *sandbox.Module) func() {
		return func() {
			res := rt.Run(ctx, m, req)
			if res.Err != nil || res.Warm {
				b.Fatalf("run: %+v warm=%v", res.Err, res.Warm)
			}
		}
	}
	runJS, runGo := runOne(js), runOne(gm)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runJS()
	}
	b.StopTimer()
	tjs, tgo := fastest(3, 5, runJS, runGo)
	benchLine("quickjs_function_cold_run", us(tjs), us(tgo), "us", "lower")
	b.ReportMetric(us(tjs), "js-us/run")
	b.ReportMetric(us(tgo), "go-us/run")
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
