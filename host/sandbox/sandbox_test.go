package sandbox

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
)

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()

	withImport := func(module, name string, params, results []byte) []byte {
		b := newBuilder()
		b.importFunc(module, name, params, results)
		return b.run(nil, i32c(0)).bytes()
	}
	rawImport := func(module, name string, desc ...byte) []byte {
		b := newBuilder()
		b.importRaw(module, name, desc...)
		return b.run(nil, i32c(0)).bytes()
	}
	exporting := func(name string) []byte {
		b := newBuilder()
		f := b.fn(nil, nil, nil)
		return b.export(name, 0, f).run(nil, i32c(0)).bytes()
	}
	versioned := func(v int32) []byte {
		b := newBuilder()
		g := b.global(tI32, false, i32c(v))
		return b.export("logline_abi_version", 3, g).run(nil, i32c(0)).bytes()
	}

	for _, tc := range []struct {
		name, code, msg string
		wasm            []byte
	}{
		{"garbage", abi.CodeInvalidModule, "bad magic", []byte("this is not wasm at all")},
		{"empty", abi.CodeInvalidModule, "bad magic", nil},
		{"truncated", abi.CodeInvalidModule, "", echoModule()[:30]},
		{"unknown module", abi.CodeForbiddenImport, `"env"."foo"`, withImport("env", "foo", nil, nil)},
		{"the refuel import", abi.CodeForbiddenImport, `"logline_meter"."refuel"`, withImport("logline_meter", "refuel", nil, nil)},
		{"unknown logline function", abi.CodeForbiddenImport, `"logline"."spawn": no such function`, withImport("logline", "spawn", nil, nil)},
		{"wrong logline signature", abi.CodeForbiddenImport, `"logline"."log": signature (i32, i32) -> (i32)`, withImport("logline", "log", pI32x2, rI32)},
		{"unknown wasi function", abi.CodeForbiddenImport, `"wasi_snapshot_preview1"."fd_frobnicate"`, withImport("wasi_snapshot_preview1", "fd_frobnicate", nil, rI32)},
		{"wrong wasi signature", abi.CodeForbiddenImport, `"wasi_snapshot_preview1"."random_get"`, withImport("wasi_snapshot_preview1", "random_get", pI32x3, rI32)},
		{"imported memory", abi.CodeForbiddenImport, "only functions", rawImport("logline", "memory", 0x02, 0x00, 0x01)},
		{"imported global", abi.CodeForbiddenImport, "only functions", rawImport("wasi_snapshot_preview1", "g", 0x03, tI32, 0x00)},
		{"no run", abi.CodeInvalidModule, "no run export", func() []byte {
			b := newBuilder()
			return b.export("main", 0, b.fn(nil, rI32, nil, i32c(0))).bytes()
		}()},
		{"run signature", abi.CodeInvalidModule, "must be a function () -> (i32)", func() []byte {
			b := newBuilder()
			return b.export("run", 0, b.fn(nil, nil, nil)).bytes()
		}()},
		{"command module", abi.CodeInvalidModule, "command module", exporting("_start")},
		{"_initialize signature", abi.CodeInvalidModule, "_initialize", func() []byte {
			b := newBuilder()
			f := b.fn(nil, rI32, nil, i32c(0))
			return b.export("_initialize", 0, f).run(nil, i32c(0)).bytes()
		}()},
		{"reserved export", abi.CodeInvalidModule, "reserved", exporting("logline_global_0")},
		{"fuel export", abi.CodeInvalidModule, "reserved", exporting("logline_fuel")},
		{"abi version", abi.CodeInvalidModule, "ABI version 2", versioned(2)},
		{"memory over the hard cap", abi.CodeInvalidModule, "", newBuilder().mem(20000).run(nil, i32c(0)).bytes()},
		{"invalid code", abi.CodeInvalidModule, "", newBuilder().run(nil, op(opI32Add)).bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := r.Load(ctx, tc.wasm)
			require.Nil(t, m)
			require.Error(t, err)
			require.Equal(t, tc.code, CodeOf(err), "%v", err)
			require.Contains(t, err.Error(), tc.msg)
		})
	}

	// The version that matches is fine, and so is a module without one.
	mustLoad(t, r, versioned(abi.Version))
	mustLoad(t, r, constModule())
}

func TestLoadCompilesOncePerHash(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	wasm := echoModule()
	var wg sync.WaitGroup
	mods := make([]*Module, 16)
	for i := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mods[i] = mustLoad(t, r, wasm)
		}()
	}
	wg.Wait()
	for _, m := range mods {
		require.Same(t, mods[0], m)
	}
	require.EqualValues(t, 1, r.compiles.Load())
	sum := blake3.Sum256(wasm)
	require.Equal(t, hex.EncodeToString(sum[:]), mods[0].Hash)
}

// TestHostileGuests runs each hostile guest while another tenant's echo
// runs go on concurrently: only the hostile run ends, with its code.
func TestHostileGuests(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	echo := mustLoad(t, r, echoModule())

	stop := make(chan struct{})
	var bystanders sync.WaitGroup
	var good atomic.Int64
	for i := 0; i < 2; i++ {
		bystanders.Add(1)
		go func() {
			defer bystanders.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				in := fmt.Sprintf("bystander %d", good.Load())
				res := r.Run(ctx, echo, Request{Tenant: "other", Input: []byte(in)})
				if res.Err != nil || string(res.Output) != in {
					t.Errorf("bystander run failed: %+v %q", res.Err, res.Output)
					return
				}
				good.Add(1)
			}
		}()
	}

	for _, tc := range []struct {
		name, code, msg string
		wasm            []byte
		lim             Limits
	}{
		{"infinite loop", abi.CodeFuelExhausted, "fuel limit of 11000000 exhausted", loopModule(), Limits{}},
		{"unbounded recursion", abi.CodeTrap, "stack overflow", recursionModule(), Limits{Fuel: 1 << 40}},
		{"memory.grow bomb", abi.CodeMemoryLimit, "memory limit of 256 pages", growBombModule(), Limits{MemoryPages: 256}},
		{"100 MB output", abi.CodeOutputLimit, "output of 104857600 bytes exceeds the limit of 1048576 bytes", outputBombModule(), Limits{}},
		{"a million host calls", abi.CodeHostCallLimit, "host call limit of 10000", hostCallBombModule(), Limits{}},
		{"divide by zero", abi.CodeTrap, "integer divide by zero", divModule(), Limits{}},
		{"out-of-bounds host pointer", abi.CodeTrap, "output: memory access [65530, 65630) out of bounds", oobHostModule(), Limits{}},
		{"wall clock", abi.CodeTimeout, "wall clock limit of 100ms", loopModule(), Limits{Fuel: 1 << 60, Wall: 100 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustLoad(t, r, tc.wasm)
			res := r.Run(ctx, m, Request{Tenant: "hostile", Limits: tc.lim})
			requireCode(t, res, tc.code)
			require.Contains(t, res.Err.Message, tc.msg)
			require.Nil(t, res.Output)
			if tc.code == abi.CodeFuelExhausted {
				require.EqualValues(t, DefaultFuel, res.FuelUsed)
			}
			// The failed instance was discarded, not pooled.
			r.mu.Lock()
			require.Zero(t, r.idle.KeyLen(poolKey{m.Hash, "hostile"}))
			r.mu.Unlock()
		})
	}
	close(stop)
	bystanders.Wait()
	require.Positive(t, good.Load())
}

func TestWASIDenied(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	res := r.Run(context.Background(), mustLoad(t, r, wasiModule()), Request{})
	requireCode(t, res, abi.CodeGuestError)
	// path_open and sock_accept both fail with EBADF: no preopened
	// directory, no listener.
	require.Equal(t, "run returned 8008", res.Err.Message)
}

func TestMemoryBombBoundsHostMemory(t *testing.T) {
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	m := mustLoad(t, r, growBombModule())
	const runs, workers, limit = 16, 4, 256 // 16 MiB
	base := reservedBytes.Load()
	rss0 := residentBytes()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			peak.Store(max(peak.Load(), reservedBytes.Load()-base))
			select {
			case <-done:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < runs/workers; i++ {
				res := r.Run(ctx, m, Request{Limits: Limits{MemoryPages: limit}})
				requireCode(t, res, abi.CodeMemoryLimit)
				require.Contains(t, res.Err.Message, "memory.grow refused")
			}
		}()
	}
	wg.Wait()
	close(done)
	runtime.ReadMemStats(&after)

	// At most the limit per concurrent run is ever reserved, and all of it
	// is given back when the runs end.
	require.LessOrEqual(t, peak.Load(), int64(workers*limit*pageSize))
	require.Positive(t, peak.Load())
	require.Equal(t, base, reservedBytes.Load())
	// The Go heap is not where guest memory lives (or not for long).
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(runs*2*limit*pageSize))
	if rss0 > 0 {
		require.Less(t, residentBytes()-rss0, int64(workers*limit*pageSize), "resident memory kept after the runs")
	}
}

// residentBytes returns the process's resident set size, 0 if unknown.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

func TestOutputAndLogsCapped(t *testing.T) {
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	var before, after runtime.MemStats

	// 100 MB asked of output(): refused before anything is copied.
	m := mustLoad(t, r, outputBombModule())
	r.Run(ctx, m, Request{}) // warm up
	runtime.ReadMemStats(&before)
	requireCode(t, r.Run(ctx, m, Request{}), abi.CodeOutputLimit)
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20))

	// 100 MiB to stdout: the run completes, the log is capped.
	m = mustLoad(t, r, stdoutFloodModule())
	runtime.ReadMemStats(&before)
	res := r.Run(ctx, m, Request{})
	runtime.ReadMemStats(&after)
	requireOK(t, res)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20))
	total := 0
	for _, l := range res.Logs {
		total += len(l.Text)
	}
	require.LessOrEqual(t, total, DefaultLogBytes+200)
	last := res.Logs[len(res.Logs)-1]
	require.Equal(t, "host", last.Source)
	require.Contains(t, last.Text, "log truncated")

	// log() beyond the cap: truncated, not failed.
	res = r.Run(ctx, mustLoad(t, r, logFloodModule()), Request{Limits: Limits{LogBytes: 4500}})
	requireOK(t, res)
	require.Len(t, res.Logs, 6) // 4 full lines, a cut one, the note
	require.Len(t, res.Logs[4].Text, 4500-4*1001-1)
	require.Contains(t, res.Logs[5].Text, "log truncated")
	require.Equal(t, 200, res.HostCalls)
}

func TestFuelIsDeterministic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pooled := newTestRuntime(t, Config{})
	unpooled := newTestRuntime(t, Config{PoolSize: -1})

	check := func(t *testing.T, wasm []byte, input string, runs int) {
		var want int64
		var warm, cold int
		for _, r := range []*Runtime{pooled, unpooled} {
			m := mustLoad(t, r, wasm)
			for i := 0; i < runs; i++ {
				res := r.Run(ctx, m, Request{Input: []byte(input), Clock: fixedClock})
				requireOK(t, res)
				if want == 0 {
					want = res.FuelUsed
				}
				require.Equal(t, want, res.FuelUsed, "run %d, warm %v", i, res.Warm)
				if res.Warm {
					warm++
				} else {
					cold++
				}
			}
		}
		require.Positive(t, want)
		require.Positive(t, warm)
		require.GreaterOrEqual(t, cold, runs)
	}
	t.Run("hand-built", func(t *testing.T) {
		t.Parallel()
		check(t, echoModule(), "some input", 20)
	})
	t.Run("go guest", func(t *testing.T) {
		t.Parallel()
		wasm := buildGoGuest(t)
		check(t, wasm, "work 1", 20)
		check(t, wasm, "time", 5)
	})
}

func TestPristineState(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()

	m := mustLoad(t, r, counterModule())
	want := []byte{1, 0, 0, 0, 1, 0, 0, 0}
	for i := 0; i < 10; i++ {
		res := r.Run(ctx, m, Request{})
		requireOK(t, res)
		require.Equal(t, want, res.Output, "run %d", i)
		require.Equal(t, i > 0, res.Warm)
	}

	// A module that writes its table gets a fresh instance every time.
	m = mustLoad(t, r, tableSetModule())
	for i := 0; i < 3; i++ {
		res := r.Run(ctx, m, Request{})
		requireOK(t, res)
		require.Equal(t, []byte{1, 0, 0, 0}, res.Output)
		require.False(t, res.Warm)
	}

	t.Run("go guest", func(t *testing.T) {
		m := mustLoad(t, r, buildGoGuest(t))
		for i := 0; i < 5; i++ {
			res := r.Run(ctx, m, Request{Input: []byte("counter")})
			requireOK(t, res)
			require.Equal(t, "1", string(res.Output))
		}
	})
}

// Write tracking (dirty.go): whatever a run writes, wherever, in stores
// crossing chunk boundaries or fills of any length, the next run on the
// same instance sees the memory as instantiated.
func TestPristineAfterScribbles(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{PoolSize: 1})
	ctx := context.Background()
	m := mustLoad(t, r, scribbleModule())
	require.NotZero(t, m.writeShift, "the module is tracked")
	pristine := make([]byte, 4*65536)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		a := rng.Uint32N(4*65536 - 9)
		n := rng.Uint32N(min(4*65536-8-a, 20_000))
		if i%10 == 0 {
			n = 0
		}
		in := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, a), n)
		res := r.Run(ctx, m, Request{Input: in})
		requireOK(t, res)
		copy(pristine, in)
		if !bytes.Equal(pristine, res.Output) {
			for j := range pristine {
				require.Equal(t, pristine[j], res.Output[j], "run %d: byte %d is left over from an earlier run", i, j)
			}
		}
		require.Equal(t, i > 0, res.Warm)
	}
}

// What wazero's own WASI functions write is not in the host's record of
// writes: a call to one of them makes the restore copy everything.
func TestPristineAfterWazeroWASI(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{PoolSize: 1})
	m := mustLoad(t, r, fdstatModule())
	for i := 0; i < 3; i++ {
		res := r.Run(context.Background(), m, Request{})
		requireOK(t, res)
		require.Equal(t, make([]byte, 24), res.Output, "run %d", i)
		require.Equal(t, i > 0, res.Warm)
	}
}

func TestGoGuest(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	m := mustLoad(t, r, buildGoGuest(t))
	run := func(in string, mod ...func(*Request)) Result {
		req := Request{Input: []byte(in), Clock: fixedClock, Env: map[string]string{"GREETING": "hello"}, Seed: 42}
		for _, f := range mod {
			f(&req)
		}
		return r.Run(ctx, m, req)
	}

	res := run("echo hi")
	requireOK(t, res)
	require.Equal(t, "hi", string(res.Output))

	res = run("env GREETING")
	requireOK(t, res)
	require.Equal(t, "hello", string(res.Output))

	res = run("print")
	requireOK(t, res)
	require.Equal(t, []LogLine{{abi.LogInfo, "stdout", "to stdout"}, {abi.LogError, "stderr", "to stderr"}}, res.Logs)

	// Time stands still but for the guest's own sleep, which is virtual.
	res = run("time")
	requireOK(t, res)
	start := fixedClock().UnixNano()
	require.Equal(t, fmt.Sprintf("%d %d 1500", start+1_500_000_000, start), string(res.Output))
	require.Less(t, res.Duration, time.Second)
	require.Equal(t, []int64{start + 1_500_000_000}, res.Recorded.Now)
	require.Equal(t, fixedClock(), res.Recorded.Start)

	// The seed decides random(); the bytes are recorded.
	a, b := run("random"), run("random")
	requireOK(t, a)
	require.Equal(t, a.Output, b.Output)
	require.Equal(t, string(a.Output), hex.EncodeToString(a.Recorded.Random))
	c := run("random", func(r *Request) { r.Seed = 43 })
	require.NotEqual(t, a.Output, c.Output)

	// Denied, and the guest carries on: complete, with the denial logged.
	res = run("sql")
	requireOK(t, res)
	require.True(t, strings.HasPrefix(string(res.Output), "-1 "), string(res.Output))
	var perr abi.Error
	require.NoError(t, json.Unmarshal(res.Output[3:], &perr))
	require.Equal(t, "capability_denied", perr.Code)
	require.Equal(t, "host", res.Logs[0].Source)

	// No filesystem: os.ReadFile fails, the guest returns 1.
	res = run("fs")
	requireCode(t, res, abi.CodeGuestError)

	res = run("panic")
	requireCode(t, res, abi.CodeGuestError)
	require.Contains(t, res.Err.Message, "panic: guest panicked on purpose")

	res = run("exit")
	requireCode(t, res, abi.CodeGuestError)
	require.Equal(t, "exit code 3", res.Err.Message)

	res = run("fail")
	requireCode(t, res, abi.CodeGuestError)
	require.Equal(t, "run returned 7: failing on purpose", res.Err.Message)

	res = run("alloc", func(r *Request) { r.Limits.MemoryPages = 256 })
	requireCode(t, res, abi.CodeMemoryLimit)
	require.Contains(t, res.Err.Message, "out of memory")

	// A run after all that is served as usual.
	res = run("echo still here")
	requireOK(t, res)
	require.Equal(t, "still here", string(res.Output))
}

func TestTiers(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	caps := map[string]string{
		abi.FnSQL:        `{"query":"select 1"}`,
		abi.FnInsertSpan: `{"id":"x"}`,
		abi.FnExec:       `{"span_id":"f1"}`,
		abi.FnHTTP:       `{"method":"GET","url":"https://example.com"}`,
	}
	for fn, req := range caps {
		t.Run(fn, func(t *testing.T) {
			m := mustLoad(t, r, capModule(fn, req, 1))
			for _, tier := range []abi.Tier{abi.TierFunction, abi.TierPolicy, ""} {
				fake := &fakeCaps{}
				res := r.Run(ctx, m, Request{Tier: tier, Caps: fake})
				requireCode(t, res, abi.CodeCapabilityDenied)
				require.Contains(t, res.Err.Message, fn+": capability denied")
				require.Empty(t, fake.Calls())
			}
			// Returning 0 after the denial completes the run.
			m0 := mustLoad(t, r, capModule(fn, req, 0))
			fake := &fakeCaps{}
			res := r.Run(ctx, m0, Request{Tier: abi.TierFunction, Caps: fake})
			requireOK(t, res)
			require.JSONEq(t, `{"code":"capability_denied","message":"`+fn+`: capability denied: tier \"function\" may not call it"}`, string(res.Output))
			require.Equal(t, LogLine{abi.LogWarn, "host", fn + `: capability denied: tier "function" may not call it`}, res.Logs[0])
			require.Empty(t, fake.Calls())

			// A kernel without capabilities is denied too.
			res = r.Run(ctx, m, Request{Tier: abi.TierKernel})
			requireCode(t, res, abi.CodeCapabilityDenied)

			// A kernel reaches the capabilities.
			res = r.Run(ctx, m, Request{Tier: abi.TierKernel, Caps: fake})
			requireOK(t, res)
			require.Len(t, fake.Calls(), 1)
			require.True(t, strings.HasPrefix(fake.Calls()[0], fn+" "))
			require.True(t, json.Valid(res.Output), string(res.Output))
		})
	}

	t.Run("lock", func(t *testing.T) {
		m := mustLoad(t, r, lockModule(false))
		fake := &fakeCaps{}
		res := r.Run(ctx, m, Request{Tier: abi.TierFunction, Caps: fake})
		requireCode(t, res, abi.CodeCapabilityDenied) // lock returned -1
		require.Empty(t, fake.Calls())

		// Taken, and released when the run ends.
		res = r.Run(ctx, m, Request{Tier: abi.TierKernel, Caps: fake})
		requireOK(t, res)
		require.Equal(t, []string{"lock k 1s", "unlock k"}, fake.Calls())

		// Released even when the guest traps.
		fake = &fakeCaps{}
		res = r.Run(ctx, mustLoad(t, r, lockModule(true)), Request{Tier: abi.TierKernel, Caps: fake})
		requireCode(t, res, abi.CodeTrap)
		require.Equal(t, []string{"lock k 1s", "unlock k"}, fake.Calls())

		// Taken, but the run's deadline passed meanwhile: released.
		fake = &fakeCaps{delay: 60 * time.Millisecond}
		res = r.Run(ctx, m, Request{Tier: abi.TierKernel, Caps: fake, Limits: Limits{Wall: 30 * time.Millisecond}})
		requireCode(t, res, abi.CodeTimeout)
		require.Equal(t, []string{"lock k 1s", "unlock k"}, fake.Calls())

		// Taken and released by the guest: released once.
		b := newBuilder()
		lock := b.importFunc("logline", "lock", pI32x3, rI32)
		unlock := b.importFunc("logline", "unlock", pI32x2, rI32)
		b.mem(1).dataAt(0, []byte("k"))
		fake = &fakeCaps{}
		res = r.Run(ctx, mustLoad(t, r, b.run(nil,
			i32c(0), i32c(1), i32c(1000), call(lock), op(opDrop),
			i32c(0), i32c(1), call(unlock)).bytes()), Request{Tier: abi.TierKernel, Caps: fake})
		requireOK(t, res)
		require.Equal(t, []string{"lock k 1s", "unlock k"}, fake.Calls())

		// unlock of a key the run does not hold: ErrNotFound, and the
		// embedder is not asked.
		b = newBuilder()
		unlock = b.importFunc("logline", "unlock", pI32x2, rI32)
		b.mem(1).dataAt(0, []byte("k"))
		fake = &fakeCaps{}
		res = r.Run(ctx, mustLoad(t, r, b.run(nil, i32c(0), i32c(1), call(unlock)).bytes()), Request{Tier: abi.TierKernel, Caps: fake})
		requireCode(t, res, abi.CodeGuestError)
		require.Equal(t, fmt.Sprintf("run returned %d", abi.ErrNotFound), res.Err.Message)
		require.Empty(t, fake.Calls())

		// Busy: nothing to release.
		fake = &fakeCaps{busy: true}
		res = r.Run(ctx, m, Request{Tier: abi.TierKernel, Caps: fake})
		requireCode(t, res, abi.CodeGuestError)
		require.Equal(t, fmt.Sprintf("run returned %d", abi.ErrBusy), res.Err.Message)
		require.Equal(t, []string{"lock k 1s"}, fake.Calls())
	})
}

func TestCapabilityErrors(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	m := mustLoad(t, r, capModule(abi.FnSQL, `{"query":"select 1"}`, 0))
	pending := func(res Result) abi.Error {
		t.Helper()
		requireOK(t, res)
		var e abi.Error
		require.NoError(t, json.Unmarshal(res.Output, &e), string(res.Output))
		return e
	}
	kernel := func(caps Capabilities, lim Limits) Result {
		return r.Run(ctx, m, Request{Tier: abi.TierKernel, Caps: caps, Limits: lim})
	}

	e := pending(kernel(&fakeCaps{err: NotFound("no table %s", "t")}, Limits{}))
	require.Equal(t, abi.Error{Code: "not_found", Message: "no table t"}, e)
	e = pending(kernel(&fakeCaps{err: fmt.Errorf("connection reset")}, Limits{}))
	require.Equal(t, abi.Error{Code: "failed", Message: "sql: connection reset"}, e)
	e = pending(kernel(&fakeCaps{err: &CallError{Code: -99, Message: "odd"}}, Limits{}))
	require.Equal(t, "failed", e.Code)

	// The per-call deadline: the guest gets ErrTimeout and goes on.
	e = pending(kernel(&fakeCaps{block: true}, Limits{HostCallTimeout: 20 * time.Millisecond}))
	require.Equal(t, abi.Error{Code: "timeout", Message: "sql: deadline of 20ms passed"}, e)

	// The wall clock passing during a call ends the run.
	res := kernel(&fakeCaps{delay: 100 * time.Millisecond}, Limits{Wall: 30 * time.Millisecond})
	requireCode(t, res, abi.CodeTimeout)
	require.Contains(t, res.Err.Message, "during sql")

	// A denial by the embedder counts as one.
	res = r.Run(ctx, mustLoad(t, r, capModule(abi.FnSQL, `{"query":"x"}`, 1)),
		Request{Tier: abi.TierKernel, Caps: &fakeCaps{err: Denied("not on the allowlist")}})
	requireCode(t, res, abi.CodeCapabilityDenied)
	require.Contains(t, res.Err.Message, "not on the allowlist")

	// Malformed requests never reach the embedder.
	fake := &fakeCaps{}
	res = r.Run(ctx, mustLoad(t, r, capModule(abi.FnSQL, `{"query":`, 0)), Request{Tier: abi.TierKernel, Caps: fake})
	require.Equal(t, "invalid", pending(res).Code)
	require.Empty(t, fake.Calls())
}

func TestSpanLimit(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	// insert_span twice with a limit of one: the second gets ErrLimit.
	b := newBuilder()
	insert := b.importFunc("logline", "insert_span", pI32x2, rI64)
	span := `{"a":1}`
	b.mem(1).dataAt(0, []byte(span))
	m := mustLoad(t, r, b.run(nil,
		i32c(0), i32c(int32(len(span))), call(insert), op(opDrop),
		i32c(0), i32c(int32(len(span))), call(insert), op(opI32WrapI64)).bytes())
	fake := &fakeCaps{}
	res := r.Run(context.Background(), m, Request{Tier: abi.TierKernel, Caps: fake, Limits: Limits{Spans: 1}})
	requireCode(t, res, abi.CodeGuestError)
	require.Equal(t, fmt.Sprintf("run returned %d", abi.ErrLimit), res.Err.Message)
	require.Len(t, fake.Calls(), 1)

	// An array counts each of its spans: with a limit of 3, two pairs do
	// not fit; the second pair is refused whole, before the embedder sees it.
	b = newBuilder()
	insert = b.importFunc("logline", "insert_span", pI32x2, rI64)
	pair := `[{"a":1}, {"a":2}]`
	b.mem(1).dataAt(0, []byte(pair))
	m = mustLoad(t, r, b.run(nil,
		i32c(0), i32c(int32(len(pair))), call(insert), op(opDrop),
		i32c(0), i32c(int32(len(pair))), call(insert), op(opI32WrapI64)).bytes())
	fake = &fakeCaps{}
	res = r.Run(context.Background(), m, Request{Tier: abi.TierKernel, Caps: fake, Limits: Limits{Spans: 3}})
	requireCode(t, res, abi.CodeGuestError)
	require.Equal(t, fmt.Sprintf("run returned %d", abi.ErrLimit), res.Err.Message)
	require.Len(t, fake.Calls(), 1)
}

func TestPendingResultProtocol(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()

	// env of a missing key: ErrNotFound, the error pending.
	res := r.Run(ctx, mustLoad(t, r, capModule(abi.FnEnv, "NOPE", 0)), Request{})
	requireOK(t, res)
	require.JSONEq(t, `{"code":"not_found","message":"env: \"NOPE\" is not set"}`, string(res.Output))
	res = r.Run(ctx, mustLoad(t, r, capModule(abi.FnEnv, "K", 0)), Request{Env: map[string]string{"K": "value"}})
	requireOK(t, res)
	require.Equal(t, "value", string(res.Output))

	// result() with a short buffer copies a prefix and returns the length.
	b := newBuilder()
	env := b.importFunc("logline", "env", pI32x2, rI64)
	result := b.importFunc("logline", "result", pI32x2, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	b.mem(1).dataAt(0, []byte("K"))
	m := mustLoad(t, r, b.run(nil,
		i32c(0), i32c(1), call(env), op(opDrop),
		i32c(100), i32c(0), i32c(0), call(result), store(0), // result(0, 0) at 100
		i32c(104), i32c(2), call(result), op(opDrop), // two bytes at 104
		i32c(100), i32c(6), call(output)).bytes())
	res = r.Run(ctx, m, Request{Env: map[string]string{"K": "value"}})
	requireOK(t, res)
	require.Equal(t, []byte{5, 0, 0, 0, 'v', 'a'}, res.Output)
}

func TestCrypto(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	msg := []byte("hello")
	sig := ed25519.Sign(priv, msg)
	want := blake3.Sum256([]byte("abc"))

	res := r.Run(context.Background(), mustLoad(t, r, cryptoModule(pub, msg, sig)), Request{})
	requireOK(t, res)
	require.Equal(t, append(want[:], 1), res.Output)

	bad := bytes.Clone(sig)
	bad[0] ^= 1
	res = r.Run(context.Background(), mustLoad(t, r, cryptoModule(pub, msg, bad)), Request{})
	requireOK(t, res)
	require.Equal(t, append(want[:], 0), res.Output)
}

func TestMemoryLimits(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx := context.Background()

	// The initial memory over the run's limit.
	m := mustLoad(t, r, newBuilder().mem(300).run(nil, i32c(0)).bytes())
	res := r.Run(ctx, m, Request{Limits: Limits{MemoryPages: 256}})
	requireCode(t, res, abi.CodeMemoryLimit)
	requireOK(t, r.Run(ctx, m, Request{Limits: Limits{MemoryPages: 300}}))

	// A pooled instance larger than a later run's limit is not used.
	res = r.Run(ctx, m, Request{Limits: Limits{MemoryPages: 299}})
	requireCode(t, res, abi.CodeMemoryLimit)

	// A grow that fails at the run's limit returns -1 to the guest, which
	// may cope: memory.size after a refused grow of 2 pages.
	m = mustLoad(t, r, newBuilder().mem(1).run(nil, i32c(2), memGrow(), op(opDrop), memSize()).bytes())
	res = r.Run(ctx, m, Request{Limits: Limits{MemoryPages: 2}})
	requireCode(t, res, abi.CodeMemoryLimit) // returned 1, after the refusal
	res = r.Run(ctx, m, Request{Limits: Limits{MemoryPages: 3}})
	requireCode(t, res, abi.CodeGuestError)
	require.Equal(t, "run returned 3", res.Err.Message)
}

func TestEviction(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{MaxModules: 2})
	ctx := context.Background()
	a := mustLoad(t, r, echoModule())
	requireOK(t, r.Run(ctx, a, Request{Input: []byte("a")}))
	mustLoad(t, r, counterModule())
	mustLoad(t, r, leakModule()) // evicts a
	r.mu.Lock()
	require.True(t, a.evicted)
	require.Nil(t, a.compiled)
	require.Len(t, r.modules, 2)
	r.mu.Unlock()

	// A held module recompiles on its next run.
	res := r.Run(ctx, a, Request{Input: []byte("again")})
	requireOK(t, res)
	require.Equal(t, "again", string(res.Output))
	require.EqualValues(t, 4, r.compiles.Load())
}

func TestIdleInstancesBounded(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{PoolSize: 2, MaxIdleInstances: 3})
	ctx := context.Background()
	m := mustLoad(t, r, counterModule())
	var wg sync.WaitGroup
	for tenant := 0; tenant < 4; tenant++ {
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				requireOK(t, r.Run(ctx, m, Request{Tenant: fmt.Sprint(tenant)}))
			}()
		}
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.LessOrEqual(t, r.idle.Len(), 3)
	n := 0
	for tenant := 0; tenant < 4; tenant++ {
		k := r.idle.KeyLen(poolKey{m.key, fmt.Sprint(tenant)})
		require.LessOrEqual(t, k, 2)
		n += k
	}
	require.Equal(t, r.idle.Len(), n)
}

func TestClosedRuntime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, err := New(ctx, Config{})
	require.NoError(t, err)
	m := mustLoad(t, r, echoModule())
	requireOK(t, r.Run(ctx, m, Request{}))
	require.NoError(t, r.Close(ctx))
	require.NoError(t, r.Close(ctx))
	res := r.Run(ctx, m, Request{})
	require.NotNil(t, res.Err)
	_, err = r.Load(ctx, constModule())
	require.Error(t, err)

	other := newTestRuntime(t, Config{})
	requireCode(t, other.Run(ctx, m, Request{}), abi.CodeInvalidModule)
}

func TestCompilationCacheDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		r := newTestRuntime(t, Config{CompilationCacheDir: dir})
		res := r.Run(ctx, mustLoad(t, r, echoModule()), Request{Input: []byte("x")})
		requireOK(t, res)
	}
}

// TestHammer runs many goroutines over a few modules and tenants. Every
// run starts from a pristine instance, so no output ever shows another
// run's data.
func TestHammer(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{PoolSize: 2})
	ctx := context.Background()
	leak := mustLoad(t, r, leakModule())
	counter := mustLoad(t, r, counterModule())
	echo := mustLoad(t, r, echoModule())
	loop := mustLoad(t, r, loopModule())
	var gog *Module
	if !testing.Short() {
		gog = mustLoad(t, r, buildGoGuest(t))
	}

	P, N := 8, 60
	if testing.Short() {
		N = 20
	}
	zeros := make([]byte, 64)
	var wg sync.WaitGroup
	for p := 0; p < P; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < N; i++ {
				tenant := fmt.Sprintf("t%d", (p+i)%3)
				secret := fmt.Sprintf("%s secret %d/%d", tenant, p, i)
				switch i % 6 {
				case 0, 1:
					res := r.Run(ctx, leak, Request{Tenant: tenant, Input: []byte(secret)})
					requireOK(t, res)
					require.Equal(t, zeros, res.Output)
				case 2:
					res := r.Run(ctx, counter, Request{Tenant: tenant})
					requireOK(t, res)
					require.Equal(t, uint32(1), binary.LittleEndian.Uint32(res.Output))
				case 3:
					res := r.Run(ctx, echo, Request{Tenant: tenant, Input: []byte(secret)})
					requireOK(t, res)
					require.Equal(t, secret, string(res.Output))
				case 4:
					res := r.Run(ctx, loop, Request{Tenant: tenant, Limits: Limits{Fuel: 100_000}})
					requireCode(t, res, abi.CodeFuelExhausted)
				case 5:
					if gog == nil {
						continue
					}
					res := r.Run(ctx, gog, Request{Tenant: tenant, Input: []byte("counter")})
					requireOK(t, res)
					require.Equal(t, "1", string(res.Output))
				}
			}
		}()
	}
	wg.Wait()
}

func TestInitialization(t *testing.T) {
	t.Parallel()
	// Initialization gets the run's fuel when Config.InitFuel is lower.
	r := newTestRuntime(t, Config{InitFuel: 1})
	ctx := context.Background()

	withStart := func(b *builder, start uint32) []byte {
		b.start = &start
		return b.bytes()
	}
	// A start function runs once per instance, with fuel set: it sets a
	// global that run outputs.
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	g := b.global(tI32, true, i32c(0))
	b.mem(1)
	start := b.fn(nil, nil, nil, gget(g), i32c(5), op(opI32Add), gset(g))
	b.run(nil, i32c(0), gget(g), store(0), i32c(0), i32c(4), call(output), op(opDrop), i32c(0))
	m := mustLoad(t, r, withStart(b, start))
	for i := 0; i < 3; i++ {
		res := r.Run(ctx, m, Request{})
		requireOK(t, res)
		require.Equal(t, []byte{5, 0, 0, 0}, res.Output)
	}

	// A start function that never ends runs out of fuel.
	b = newBuilder()
	start = b.fn(nil, nil, nil, op(opLoop, bt0), br(0), op(opEnd))
	b.run(nil, i32c(0))
	res := r.Run(ctx, mustLoad(t, r, withStart(b, start)), Request{})
	requireCode(t, res, abi.CodeFuelExhausted)
	require.Equal(t, "start function: fuel limit of 11000000 exhausted", res.Err.Message)

	// _initialize that traps: every run says so.
	b = newBuilder()
	b.export("_initialize", 0, b.fn(nil, nil, nil, op(opUnreachable)))
	m = mustLoad(t, r, b.run(nil, i32c(0)).bytes())
	for i := 0; i < 2; i++ {
		res := r.Run(ctx, m, Request{})
		requireCode(t, res, abi.CodeTrap)
		require.True(t, strings.HasPrefix(res.Err.Message, "_initialize: wasm error: unreachable"), res.Err.Message)
	}
}

func TestCanceled(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res := r.Run(ctx, mustLoad(t, r, loopModule()), Request{Limits: Limits{Fuel: 1 << 60}})
	requireCode(t, res, abi.CodeTimeout)
	require.Equal(t, "run canceled by the host", res.Err.Message)
}

func TestStdioSurvivesFdClose(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	// fd_close(1), then write "hi\n" to stdout; twice, on the same
	// instance: the second run can still write.
	b := newBuilder()
	fdClose := b.importFunc("wasi_snapshot_preview1", "fd_close", []byte{tI32}, rI32)
	fdWrite := b.importFunc("wasi_snapshot_preview1", "fd_write", []byte{tI32, tI32, tI32, tI32}, rI32)
	b.mem(1).dataAt(0, []byte{16, 0, 0, 0, 3, 0, 0, 0}).dataAt(16, []byte("hi\n"))
	m := mustLoad(t, r, b.run(nil,
		i32c(1), call(fdClose), op(opDrop),
		i32c(1), i32c(0), i32c(1), i32c(8), call(fdWrite)).bytes())
	for i := 0; i < 2; i++ {
		res := r.Run(context.Background(), m, Request{})
		requireOK(t, res)
		require.Equal(t, []LogLine{{abi.LogInfo, "stdout", "hi"}}, res.Logs)
	}
}

// A guest computing without calling the host must not hold up the rest of
// the process: compiled wasm cannot be preempted, so a garbage collection
// waits for the guest to come back to Go, which it does at every slice of
// fuel (the refuel import). Without the slices this GC would wait for the
// whole run (here the 2 s wall clock) and, on a busy machine, everything
// else with it. Also: the run is ended by its wall clock, from the refuel
// call.
func TestComputingGuestDoesNotStallGC(t *testing.T) {
	r := newTestRuntime(t, Config{})
	ctx := context.Background()
	m := mustLoad(t, r, loopModule())
	done := make(chan Result)
	go func() { done <- r.Run(ctx, m, Request{Limits: Limits{Fuel: 1 << 60, Wall: 2 * time.Second}}) }()
	time.Sleep(100 * time.Millisecond) // the guest is in its loop
	var worst time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		runtime.GC()
		worst = max(worst, time.Since(start))
	}
	require.Less(t, worst, 500*time.Millisecond, "a garbage collection waited for the computing guest")
	res := <-done
	requireCode(t, res, abi.CodeTimeout)
	require.Contains(t, res.Err.Message, "wall clock limit of 2s")
	require.Greater(t, res.FuelUsed, int64(FuelSlice), "the run went on through many slices")
}
