package extism

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/meter"
	w "github.com/logline/logline/host/sandbox/wasmtest"
)

// Instance reuse (instance.go): whatever a run writes (the plugin's memory
// and globals, Extism's kernel memory anywhere, the error), the next run on
// the same instance sees none of it; a run that ended abnormally leaves no
// instance behind; tenants never share one.

var (
	envAlloc   = imp{EnvModule, "alloc", I64, I64}
	envStore64 = imp{EnvModule, "store_u64", II, nil}
	envLoad64  = imp{EnvModule, "load_u64", I64, I64}
	envStore8  = imp{EnvModule, "store_u8", []byte{w.I64, w.I32}, nil}
	envInLen   = imp{EnvModule, "input_length", nil, I64}
	envInLoad  = imp{EnvModule, "input_load_u64", I64, I64}
)

// Offsets in Extism's kernel memory (1 MiB) far above anything a run
// allocates, which go-sdk's reset does not clear: only the restore does.
const (
	kernelFar   = 700_000
	kernelOdd   = 300_001
	kernelStash = 900_000
)

func i64Const(v int64) []byte { return append([]byte{0x42}, w.SLEB(v)...) }

var (
	i32Load  = []byte{0x28, 0x02, 0x00}
	i32Store = []byte{0x36, 0x02, 0x00}
	i64Load  = []byte{0x29, 0x03, 0x00}
	i64Store = []byte{0x37, 0x03, 0x00}
	i32Add   = []byte{0x6a}
	i64Add   = []byte{0x7c}
	i64Mul   = []byte{0x7e}
	i64Eq    = []byte{0x51}
	i64ExtU  = []byte{0xad}
	ifThen   = []byte{0x04, 0x40}
	end      = []byte{0x0b}
)

func globalGet(i int) []byte { return []byte{0x23, byte(i)} }
func globalSet(i int) []byte { return []byte{0x24, byte(i)} }

// Modes of hostile, chosen by the input's length.
const (
	modeOK = iota
	modeTrap
	modeLoop
	modeGrow
)

// hostile counts its runs in memory (i32 at 100) and in a global, reads
// two places of kernel memory, scribbles on them (store_u64 at kernelFar,
// store_u8 at kernelOdd), then per mode returns, traps, loops forever or
// grows its memory by 100 pages (trapping if refused). It outputs 24
// bytes: counter*1000 + global, then the two kernel words it read.
// On a pristine instance that is 1001, 0, 0.
func hostile() []byte {
	const (
		inLen = iota
		alloc
		store64
		load64
		store8
		outSet
	)
	imps := []imp{envInLen, envAlloc, envStore64, envLoad64, envStore8, envOutputSet}
	const out, mode = 0, 1 // i64 locals
	return pluginWithGlobals(imps, [][]byte{mutableI32}, 2, w.Cat(
		w.Call(inLen), localSet(mode),
		// memory[100]++, global 0 ++
		w.I32Const(100), w.I32Const(100), i32Load, w.I32Const(1), i32Add, i32Store,
		globalGet(0), w.I32Const(1), i32Add, globalSet(0),
		i64Const(24), w.Call(alloc), localSet(out),
		localGet(out),
		w.I32Const(100), i32Load, i64ExtU, i64Const(1000), i64Mul, globalGet(0), i64ExtU, i64Add,
		w.Call(store64),
		localGet(out), i64Const(8), i64Add, i64Const(kernelFar), w.Call(load64), w.Call(store64),
		localGet(out), i64Const(16), i64Add, i64Const(kernelOdd), w.Call(load64), w.Call(store64),
		i64Const(kernelFar), i64Const(-1), w.Call(store64),
		i64Const(kernelOdd), w.I32Const(0xab), w.Call(store8),
		localGet(mode), i64Const(modeTrap), i64Eq, ifThen, unreachable, end,
		localGet(mode), i64Const(modeLoop), i64Eq, ifThen, w.LoopForever, end,
		localGet(mode), i64Const(modeGrow), i64Eq, ifThen,
		w.I32Const(100), []byte{0x40, 0x00}, w.I32Const(-1), []byte{0x46}, ifThen, unreachable, end,
		end,
		localGet(out), i64Const(24), w.Call(outSet),
		w.I32Const(0)))
}

// wantPristine checks hostile's output of a run that started pristine.
func wantPristine(t *testing.T, res sandbox.Result) {
	t.Helper()
	mustOK(t, res)
	if len(res.Output) != 24 {
		t.Fatalf("output %x", res.Output)
	}
	counter := binary.LittleEndian.Uint64(res.Output)
	far := binary.LittleEndian.Uint64(res.Output[8:])
	odd := binary.LittleEndian.Uint64(res.Output[16:])
	if counter != 1001 || far != 0 || odd != 0 {
		t.Fatalf("counter %d (want 1001: memory and global as instantiated), kernel words %#x %#x (want 0) (warm %v)",
			counter, far, odd, res.Warm)
	}
}

func hostileRequest(mode int) sandbox.Request {
	return sandbox.Request{Tenant: "t", Input: bytes.Repeat([]byte("m"), mode), Clock: fixedClock}
}

// checkIdlePristine takes every idle instance of p and tenant out of the
// pool and checks that Extism's kernel memory is all zeros again, as right
// after instantiation, whatever the runs scribbled.
func checkIdlePristine(t *testing.T, r *Runtime, p *Plugin, tenant string) {
	t.Helper()
	r.mu.Lock()
	var idle []*instance
	for {
		inst, ok := r.idle.Take(poolKey{p.Hash, tenant})
		if !ok {
			break
		}
		idle = append(idle, inst)
	}
	r.mu.Unlock()
	if len(idle) == 0 {
		t.Fatal("no idle instance")
	}
	for _, inst := range idle {
		mem, _ := inst.kmem.Read(0, inst.kmem.Size())
		if i := bytes.IndexFunc(mem, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("kernel memory of an idle instance is not pristine at %d: %x", i, mem[i:min(i+16, len(mem))])
		}
		r.release(inst, true)
	}
}

func TestReuseCounterSameEveryRun(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, hostile())
	if p.fresh != "" {
		t.Fatalf("hostile is fresh: %s", p.fresh)
	}
	var first sandbox.Result
	for i := range 30 {
		res := r.Run(context.Background(), p, hostileRequest(modeOK))
		wantPristine(t, res)
		if i == 0 {
			first = res
			if res.Warm {
				t.Fatal("the first run found a pooled instance")
			}
			continue
		}
		if !res.Warm {
			t.Fatalf("run %d instantiated afresh: the instance was not reused", i)
		}
		if res.FuelUsed != first.FuelUsed {
			t.Fatalf("run %d used %d fuel, the first %d", i, res.FuelUsed, first.FuelUsed)
		}
	}
	checkIdlePristine(t, r, p, "t")
}

// After a trap, fuel exhaustion or the memory limit the instance is gone,
// and the next run is clean and correct.
func TestReuseAfterAbnormalEnd(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, hostile())
	ctx := context.Background()
	for _, c := range []struct {
		mode int
		lim  sandbox.Limits
		code string
	}{
		{modeTrap, sandbox.Limits{}, abi.CodeTrap},
		{modeLoop, sandbox.Limits{Fuel: 100_000}, abi.CodeFuelExhausted},
		{modeGrow, sandbox.Limits{MemoryPages: 50}, abi.CodeMemoryLimit},
		{modeOK, sandbox.Limits{OutputBytes: 10}, abi.CodeOutputLimit}, // ends normally: reusable
	} {
		t.Run(c.code, func(t *testing.T) {
			wantPristine(t, r.Run(ctx, p, hostileRequest(modeOK))) // an idle instance
			req := hostileRequest(c.mode)
			req.Limits = c.lim
			res := r.Run(ctx, p, req)
			wantCode(t, res, c.code)
			if !res.Warm {
				t.Fatal("the failing run did not reuse the idle instance")
			}
			r.mu.Lock()
			idle := r.idle.KeyLen(poolKey{p.Hash, "t"})
			r.mu.Unlock()
			next := r.Run(ctx, p, hostileRequest(modeOK))
			wantPristine(t, next)
			if c.code == abi.CodeOutputLimit {
				if idle != 1 || !next.Warm {
					t.Fatalf("after output_limit: %d idle, next warm %v; want the instance reused", idle, next.Warm)
				}
				return
			}
			if idle != 0 || next.Warm {
				t.Fatalf("after %s: %d idle, next warm %v; want the instance discarded", c.code, idle, next.Warm)
			}
		})
	}
}

// stash outputs what it finds at 200 in its memory and at kernelStash in
// kernel memory (16 bytes), then leaves its input's first 8 bytes in both.
func stash() []byte {
	const (
		inLoad = iota
		alloc
		store64
		load64
		outSet
	)
	imps := []imp{envInLoad, envAlloc, envStore64, envLoad64, envOutputSet}
	const out = 0
	return plugin(imps, 1, w.Cat(
		i64Const(16), w.Call(alloc), localSet(out),
		localGet(out), w.I32Const(200), i64Load, w.Call(store64),
		localGet(out), i64Const(8), i64Add, i64Const(kernelStash), w.Call(load64), w.Call(store64),
		w.I32Const(200), i64Const(0), w.Call(inLoad), i64Store,
		i64Const(kernelStash), i64Const(0), w.Call(inLoad), w.Call(store64),
		localGet(out), i64Const(16), w.Call(outSet),
		w.I32Const(0)))
}

func TestReuseTenantsIsolated(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, stash())
	ctx := context.Background()
	run := func(tenant string) sandbox.Result {
		t.Helper()
		res := r.Run(ctx, p, sandbox.Request{Tenant: tenant, Input: []byte("secret-" + tenant)})
		mustOK(t, res)
		if !bytes.Equal(res.Output, make([]byte, 16)) {
			t.Fatalf("tenant %s saw %q", tenant, res.Output)
		}
		return res
	}
	run("a")
	if run("a"); !run("a").Warm {
		t.Fatal("tenant a's instance was not reused")
	}
	// b never gets a's idle instance, and a's next run finds b's data
	// nowhere.
	if run("b").Warm {
		t.Fatal("tenant b got a pooled instance before it had one")
	}
	run("a")
	run("b")
	checkIdlePristine(t, r, p, "a")
	checkIdlePristine(t, r, p, "b")
}

func TestReuseConcurrent(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, hostile())
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 24 { // the last run of each is not a trap
				req := hostileRequest(modeOK)
				req.Tenant = fmt.Sprint(g % 3)
				if i%7 == 3 {
					req = hostileRequest(modeTrap)
					req.Tenant = fmt.Sprint(g % 3)
				}
				res := r.Run(context.Background(), p, req)
				switch {
				case i%7 == 3 && (res.Err == nil || res.Err.Code != abi.CodeTrap):
					errs <- fmt.Sprintf("trap run: %+v", res.Err)
				case i%7 != 3 && (res.Err != nil || binary.LittleEndian.Uint64(res.Output) != 1001 ||
					!bytes.Equal(res.Output[8:], make([]byte, 16))):
					errs <- fmt.Sprintf("run: %+v output %x", res.Err, res.Output)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for tenant := range 3 {
		checkIdlePristine(t, r, p, fmt.Sprint(tenant))
	}
}

// The plugin's error, set in one run, is not the next one's.
func TestReuseErrorState(t *testing.T) {
	r := newRuntime(t)
	// Sets its input as the error (and returns 0) if there is one.
	p := load(t, r, plugin([]imp{envInputOffset, envInLen, envErrorSet}, 0, w.Cat(
		w.Call(1), []byte{0x50}, []byte{0x45}, ifThen, w.Call(0), w.Call(2), end, w.I32Const(0))))
	ctx := context.Background()
	for i := range 6 {
		msg := fmt.Sprintf("error of run %d", i)
		res := r.Run(ctx, p, sandbox.Request{Input: []byte(msg)})
		wantCode(t, res, abi.CodeGuestError)
		if !strings.Contains(res.Err.Message, msg) {
			t.Fatalf("run %d: message %q", i, res.Err.Message)
		}
		res = r.Run(ctx, p, sandbox.Request{})
		mustOK(t, res)
		if !res.Warm {
			t.Fatal("not reused after a guest error")
		}
	}
}

// An input that does not fit in Extism's memory under the run's limit is
// memory_limit on a pooled instance too, which is then discarded.
func TestReuseInputOverLimit(t *testing.T) {
	r := newRuntime(t)
	p := load(t, r, echo())
	ctx := context.Background()
	mustOK(t, r.Run(ctx, p, sandbox.Request{Input: []byte("small")}))
	res := r.Run(ctx, p, sandbox.Request{Input: make([]byte, 2<<20), Limits: sandbox.Limits{MemoryPages: 20}})
	wantCode(t, res, abi.CodeMemoryLimit)
	if !res.Warm {
		t.Fatal("the run did not take the pooled instance")
	}
	res = r.Run(ctx, p, sandbox.Request{Input: []byte("small again")})
	mustOK(t, res)
	if string(res.Output) != "small again" || res.Warm {
		t.Fatalf("output %q warm %v: want a fresh instance", res.Output, res.Warm)
	}
	// A large input within the limit grows the kernel's memory: that
	// instance cannot be restored (memory does not shrink) and is closed.
	big := bytes.Repeat([]byte("b"), 2<<20)
	res = r.Run(ctx, p, sandbox.Request{Input: big, Limits: sandbox.Limits{OutputBytes: len(big)}})
	mustOK(t, res)
	if !bytes.Equal(res.Output, big) {
		t.Fatal("big output differs")
	}
	if next := r.Run(ctx, p, sandbox.Request{Input: []byte("x")}); next.Err != nil || next.Warm || string(next.Output) != "x" {
		t.Fatalf("after a grown kernel: %+v warm %v", next.Err, next.Warm)
	}
}

// Without a pool every run instantiates, and the answers are the same.
func TestNoPool(t *testing.T) {
	r, err := New(context.Background(), Config{PoolSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	p := load(t, r, hostile())
	for range 3 {
		res := r.Run(context.Background(), p, hostileRequest(modeOK))
		wantPristine(t, res)
		if res.Warm {
			t.Fatal("a run reused an instance without a pool")
		}
	}
}

// A plugin whose state a restore cannot undo is never reused.
func TestFreshPlugins(t *testing.T) {
	ctx := context.Background()
	r, err := New(ctx, Config{EnableWASI: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	externref := []byte{0x6f, 0x01, 0xd0, 0x6f, 0x0b} // mutable, ref.null extern
	fdWrite := imp{"wasi_snapshot_preview1", "fd_write", []byte{w.I32, w.I32, w.I32, w.I32}, I32}
	for _, c := range []struct {
		name, why string
		wasm      []byte
	}{
		{"reference global", "has a mutable externref global", pluginWithGlobals(nil, [][]byte{externref}, 0, w.I32Const(0))},
		{"WASI", "imports WASI", plugin([]imp{fdWrite}, 0, w.I32Const(0))},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := load(t, r, c.wasm)
			if !strings.Contains(p.fresh, c.why) {
				t.Fatalf("fresh %q, want %q", p.fresh, c.why)
			}
			for range 2 {
				res := r.Run(ctx, p, sandbox.Request{})
				mustOK(t, res)
				if res.Warm {
					t.Fatal("a fresh plugin's instance was reused")
				}
			}
		})
	}
}

// TestKernelState checks what the restore assumes of go-sdk's Extism kernel
// (extism-runtime.wasm in go-sdk's module directory): its only mutable
// globals are those of kernelGlobals, exported under those names, and its
// code mutates no table nor drops a segment. A go-sdk upgrade that breaks
// this fails here.
func TestKernelState(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	wasm, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "extism-runtime.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := meter.Inspect(wasm)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.StateOps) > 0 || info.HasStart || len(info.Imports) > 0 {
		t.Fatalf("kernel: state ops %v, start %v, imports %v", info.StateOps, info.HasStart, info.Imports)
	}
	exported := map[uint32]string{}
	for _, e := range info.Exports {
		if e.Kind == meter.KindGlobal {
			exported[e.Index] = e.Name
		}
	}
	var mutable []string
	for i, g := range info.Globals {
		if g.Mutable {
			name, ok := exported[uint32(i)]
			if !ok {
				t.Fatalf("kernel global %d is mutable and not exported: the host cannot restore it", i)
			}
			mutable = append(mutable, name)
		}
	}
	if fmt.Sprint(mutable) != fmt.Sprint(kernelGlobals) {
		t.Fatalf("kernel's mutable globals %v, kernelGlobals %v", mutable, kernelGlobals)
	}
}
