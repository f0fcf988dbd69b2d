// Package extism runs Extism plugins (span runtime `extism`) through
// github.com/extism/go-sdk under the same rules as the `wasm` runtime of
// package sandbox: the module is fuel-metered (host/sandbox/meter) before
// Extism compiles it, each run gets the fuel, memory, output, host-call and
// wall limits of sandbox.Limits, and a plugin reaches LogLine's capabilities
// only through the host functions of namespace `logline` (abi.Module),
// which enforce the tiers exactly as the `wasm` runtime does. Failures come
// back as the same stable abi.Code* in sandbox.Result.Err.
//
// # Plugins
//
// A plugin is one core module (Extism's "main"), importing functions only,
// from `extism:host/env` (Extism's kernel: input, output, memory blocks,
// errors, logs, config, vars, http), `logline` (the functions of
// abi/ABI.md §"Extism plugins", in Extism's calling convention: one i64
// offset in, one i64 offset out) and, only with Config.EnableWASI,
// `wasi_snapshot_preview1`. Any other import is refused at Load with
// forbidden_import. Its entry is the export `run` () -> i32, 0 = ok (the
// PDKs' `export function run(): i32`). The input is the Extism input, the
// output the Extism output; a non-zero return, or an error the plugin set
// (error_set, a PDK's setError), is guest_error with the plugin's message.
//
// # Instances
//
// Load meters and compiles a module once per BLAKE3 hash with
// extism.NewCompiledPlugin; it also exports the plugin's mutable globals
// (meter.ExportGlobals) and has the meter record its writes to memory
// (meter.Options.TrackWrites). An instance (the Extism kernel and the
// plugin) serves one run at a time and is pooled per (plugin hash, tenant):
// Config.PoolSize idle instances per pool, Config.MaxIdleInstances in all
// (sandbox.IdlePool). Tenants never share an instance. After a run that
// returned from `run` within its limits, the instance goes back to pristine
// with package sandbox's snapshot machinery (sandbox.Restorable): the
// plugin's memory and mutable globals to the plugin's snapshot, taken at the
// first entry of `run` (after instantiation and the start function), and the
// kernel's memory (input, output, blocks, the error) and globals to their
// state right after instantiation, copying only what the run may have
// written (instance.go says how the host knows that for the unmetered
// kernel); go-sdk's vars, HTTP status and logger are reset. So nothing a run
// writes is visible to the next one: a plugin must not rely on state
// persisting between runs. An instance whose run trapped, ran out of fuel,
// memory or time, was aborted by the host, or whose memory grew is closed,
// never reused. Plugins whose state a restore cannot undo instantiate for
// every run: code that mutates tables or drops segments, a mutable v128 or
// reference global, an hs_init export (go-sdk initializes a Haskell runtime
// in the first call only) and, with WASI, a WASI import or initializer.
//
// A pooled instance's memories keep the run's limit: each run sets it anew
// (sandbox.LinearMemory), and an idle instance already larger than a run's
// limit is closed in favour of a fresh one, which then fails with
// memory_limit as before. Warm runs call the kernel and `run` with functions
// looked up once rather than through go-sdk's Plugin.CallWithContext, which
// looks each one up (and allocates a call engine) in every call.
//
// # Determinism, and where Extism limits it
//
// The same plugin on the same Request burns the same fuel and produces the
// same output: the fuel counter is set right before `run` is entered, the
// clock (`logline.now`) is frozen at Request.Clock() and `logline.random`
// draws from a ChaCha8 stream seeded by Request.Seed, as in package
// sandbox. What Extism owns is outside the metering: its kernel (a
// separate, unmetered wasm module that holds the input, output and memory
// blocks) and its `extism:host/env` functions cost the guest only its own
// instructions around each call, not per byte they move; a plugin's start
// function runs at instantiation on the budget compiled into the module
// (meter.DefaultLimit), which is not part of FuelUsed. With WASI on, WASI
// is wazero's own (no mounts, no env, wazero's fake clocks and random
// source, which are deterministic but not the run's clock and seed).
// Extism's own log functions (log_info, ...) are dropped unless the
// embedder raises Extism's process-wide level with extism.SetLogLevel;
// plugins should log with `logline.log`. Extism's http_request is refused
// (no allowed hosts: the run traps) and its vars are disabled (var_set
// traps): kernels reach HTTP through `logline.http`.
package extism

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	wasi "github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/meter"
)

// EnvModule is the import module of Extism's kernel functions.
const EnvModule = "extism:host/env"

// Config configures a Runtime. Zero values take the defaults.
type Config struct {
	// EnableWASI lets plugins import wasi_snapshot_preview1 (wazero's
	// WASI with nothing mounted). Off by default: WASI imports are then
	// forbidden_import.
	EnableWASI bool
	// MaxMemoryPages is the hard cap of any memory of a plugin instance,
	// in 64 KiB pages; Limits.MemoryPages is clamped to it. Default
	// sandbox.DefaultMaxMemoryPages.
	MaxMemoryPages uint32
	// PoolSize is the number of idle instances kept per (plugin hash,
	// tenant); default sandbox.DefaultPoolSize, negative for none (every
	// run instantiates).
	PoolSize int
	// MaxIdleInstances caps the idle instances of all pools together;
	// beyond it the least recently used is closed. Default
	// sandbox.DefaultMaxIdleInstances.
	MaxIdleInstances int
}

// Runtime loads and runs Extism plugins. It is safe for concurrent use.
type Runtime struct {
	cfg   Config
	cache wazero.CompilationCache
	mcfg  wazero.ModuleConfig
	funcs []extism.HostFunction

	mu      sync.Mutex
	closed  bool
	plugins map[string]*loadCall // by hash
	idle    sandbox.IdlePool[poolKey, *instance]

	// The pristine state of Extism's kernel, the same module for every
	// plugin: its memory right after instantiation, its globals as the
	// first run found them (nothing writes them).
	kernelMu               sync.Mutex
	kernelMem, kernelGlobs *sandbox.Snapshot
}

type poolKey struct {
	plugin, tenant string // Plugin.Hash
}

type loadCall struct {
	done chan struct{}
	p    *Plugin
	err  error
}

// Plugin is a loaded (metered and compiled) Extism plugin.
type Plugin struct {
	// Hash is the hex BLAKE3-256 of the module as given to Load.
	Hash     string
	r        *Runtime
	compiled *extism.CompiledPlugin
	// fresh says why every run needs a fresh instance, "" if none.
	fresh      string
	globals    []meter.GlobalExport // the plugin's mutable globals, exported by ExportGlobals
	writeShift uint8                // of the meter's write tracking

	snapMu sync.Mutex
	snap   *sandbox.Snapshot // the plugin module's, at the first entry of run
}

// New creates a Runtime. Close it to release the compiled plugins.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.MaxMemoryPages == 0 {
		cfg.MaxMemoryPages = sandbox.DefaultMaxMemoryPages
	}
	cfg.MaxMemoryPages = min(cfg.MaxMemoryPages, 65536)
	if cfg.PoolSize == 0 {
		cfg.PoolSize = sandbox.DefaultPoolSize
	}
	cfg.PoolSize = max(cfg.PoolSize, 0)
	if cfg.MaxIdleInstances <= 0 {
		cfg.MaxIdleInstances = sandbox.DefaultMaxIdleInstances
	}
	r := &Runtime{
		cfg:     cfg,
		cache:   wazero.NewCompilationCache(),
		plugins: map[string]*loadCall{},
		// No start functions beyond what Extism calls, no args, no env,
		// no mounts, stdio discarded.
		mcfg:  wazero.NewModuleConfig(),
		funcs: hostFunctions(),
		idle:  sandbox.IdlePool[poolKey, *instance]{PerKey: cfg.PoolSize, Total: cfg.MaxIdleInstances},
	}
	if !cfg.EnableWASI {
		// Nothing can read it without WASI; wazero's default seeds a
		// math/rand source per instance, which costs more than a run.
		r.mcfg = r.mcfg.WithRandSource(zeroReader{})
	}
	return r, nil
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// Close releases every compiled plugin. Runs in flight fail.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	calls := r.plugins
	r.plugins = nil
	idle := r.idle.Remove(func(poolKey) bool { return true })
	r.mu.Unlock()
	for _, inst := range idle {
		inst.close()
	}
	var errs []error
	for _, c := range calls {
		<-c.done
		if c.p != nil {
			errs = append(errs, c.p.compiled.Close(ctx))
		}
	}
	errs = append(errs, r.cache.Close(ctx))
	return errors.Join(errs...)
}

// Load checks, meters and compiles a plugin, once per hash. Its errors are
// *sandbox.Error with Code invalid_module or forbidden_import (or the
// context's error).
func (r *Runtime) Load(ctx context.Context, wasm []byte) (*Plugin, error) {
	sum := blake3.Sum256(wasm)
	hash := hex.EncodeToString(sum[:])
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("extism: runtime closed")
	}
	if c := r.plugins[hash]; c != nil {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.p, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &loadCall{done: make(chan struct{})}
	r.plugins[hash] = c
	r.mu.Unlock()

	c.p, c.err = r.load(ctx, wasm, hash)
	r.mu.Lock()
	if c.err != nil && r.plugins != nil {
		// Failures are not cached: a canceled context must not stick,
		// and refusing again is cheap.
		delete(r.plugins, hash)
	}
	closed := r.closed
	r.mu.Unlock()
	close(c.done)
	if closed && c.p != nil {
		_ = c.p.compiled.Close(ctx)
		return nil, errors.New("extism: runtime closed")
	}
	return c.p, c.err
}

func errorf(code, format string, args ...any) *sandbox.Error {
	return &sandbox.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (r *Runtime) load(ctx context.Context, wasm []byte, hash string) (*Plugin, error) {
	info, err := meter.Inspect(wasm)
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	for _, imp := range info.Imports {
		if err := r.checkImport(imp); err != nil {
			return nil, err
		}
	}
	if len(info.Memories) > 1 {
		return nil, errorf(abi.CodeInvalidModule, "%d memories: at most one is supported", len(info.Memories))
	}
	if len(info.Memories) == 1 && info.Memories[0].Shared {
		return nil, errorf(abi.CodeInvalidModule, "shared memory is not supported")
	}
	run, ok := info.Export(abi.Entry)
	want := meter.FuncType{Results: []byte{meter.ValI32}}
	if !ok {
		return nil, errorf(abi.CodeInvalidModule, "no %s export", abi.Entry)
	}
	if run.Kind != meter.KindFunc || int(run.Index) >= len(info.Funcs) || !info.Funcs[run.Index].Equal(want) {
		return nil, errorf(abi.CodeInvalidModule, "export %s must be a function %s", abi.Entry, want)
	}
	if int(run.Index) < len(info.Imports) {
		return nil, errorf(abi.CodeInvalidModule, "export %s must be defined by the module, not imported", abi.Entry)
	}
	for _, e := range info.Exports {
		if strings.HasPrefix(e.Name, sandbox.GlobalPrefix) || e.Name == meter.ExportName || e.Name == meter.DirtyExportName {
			return nil, errorf(abi.CodeInvalidModule, "export %q uses a name reserved for the host", e.Name)
		}
	}
	// The plugin's mutable globals are exported so that the host can
	// snapshot and restore them, and its writes to memory are recorded
	// (see instance.go).
	rewritten, globals, err := meter.ExportGlobals(wasm, sandbox.GlobalPrefix)
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	var minPages uint64
	if len(info.Memories) == 1 {
		minPages = info.Memories[0].Min
	}
	shift := sandbox.WriteShift(minPages)
	metered, err := meter.Instrument(rewritten, meter.Options{Refuel: true, TrackWrites: true, WriteShift: shift})
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	rc := wazero.NewRuntimeConfig().
		WithCoreFeatures(api.CoreFeaturesV2).
		WithMemoryLimitPages(r.cfg.MaxMemoryPages).
		WithCompilationCache(r.cache)
		// No WithCloseOnContextDone: fuel bounds computation, and the
		// wall clock is checked at every slice of it (refuel).
	manifest := extism.Manifest{
		Wasm: []extism.Wasm{extism.WasmData{Data: metered, Name: "main"}},
		Memory: &extism.ManifestMemory{
			MaxPages:             r.cfg.MaxMemoryPages,
			MaxVarBytes:          0, // vars disabled
			MaxHttpResponseBytes: 0,
		},
	}
	cctx := experimental.WithFunctionListenerFactory(ctx, listenerFactory{})
	compiled, err := extism.NewCompiledPlugin(cctx, manifest, extism.PluginConfig{
		RuntimeConfig: rc,
		EnableWasi:    r.cfg.EnableWASI,
	}, r.funcs)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	return &Plugin{Hash: hash, r: r, compiled: compiled, fresh: r.fresh(info, globals),
		globals: globals, writeShift: shift}, nil
}

// fresh says why instances of a plugin cannot be reused, "" if they can:
// what package sandbox cannot restore (sandbox.Unrestorable), and what
// go-sdk does in the first call of an instance only (initialize a Haskell
// runtime, a WASI reactor or command) or keeps outside memory (WASI's file
// descriptors and fake clocks).
func (r *Runtime) fresh(info *meter.Info, globals []meter.GlobalExport) string {
	if why := sandbox.Unrestorable(info, globals); why != "" {
		return why
	}
	if _, ok := info.Export("hs_init"); ok {
		return "exports hs_init (go-sdk initializes the Haskell runtime in the first call only)"
	}
	if !r.cfg.EnableWASI {
		return ""
	}
	for _, name := range []string{"_initialize", "__wasm_call_ctors"} {
		if _, ok := info.Export(name); ok {
			return "exports " + name + " (go-sdk calls it in the first call only)"
		}
	}
	for _, imp := range info.Imports {
		if imp.Module == wasi.ModuleName {
			return "imports WASI (whose file descriptors and clocks live outside memory)"
		}
	}
	return ""
}

// checkImport accepts the functions of Extism's kernel, of `logline` and,
// with WASI enabled, of wasi_snapshot_preview1, with their exact signature.
func (r *Runtime) checkImport(imp meter.Import) error {
	var sigs map[string]meter.FuncType
	switch {
	case imp.Module == EnvModule:
		sigs = envSignatures
	case imp.Module == abi.Module:
		sigs = loglineSignatures
	case imp.Module == wasi.ModuleName && r.cfg.EnableWASI:
		if imp.Kind != meter.KindFunc {
			return errorf(abi.CodeForbiddenImport, "import %q.%q: only functions can be imported", imp.Module, imp.Name)
		}
		return nil // wazero checks names and signatures at instantiation
	default:
		allowed := []string{EnvModule, abi.Module}
		if r.cfg.EnableWASI {
			allowed = append(allowed, wasi.ModuleName)
		}
		return errorf(abi.CodeForbiddenImport, "import %q.%q: module %q is not provided (only %q are)",
			imp.Module, imp.Name, imp.Module, allowed)
	}
	if imp.Kind != meter.KindFunc {
		return errorf(abi.CodeForbiddenImport, "import %q.%q: only functions can be imported", imp.Module, imp.Name)
	}
	sig, ok := sigs[imp.Name]
	if !ok {
		return errorf(abi.CodeForbiddenImport, "import %q.%q: no such function", imp.Module, imp.Name)
	}
	if !sig.Equal(imp.Type) {
		return errorf(abi.CodeForbiddenImport, "import %q.%q: signature %s, the host's is %s", imp.Module, imp.Name, imp.Type, sig)
	}
	return nil
}

func sig(params, results string) meter.FuncType {
	conv := func(s string) []byte {
		var out []byte
		for _, c := range s {
			switch c {
			case 'I':
				out = append(out, meter.ValI64)
			case 'i':
				out = append(out, meter.ValI32)
			}
		}
		return out
	}
	return meter.FuncType{Params: conv(params), Results: conv(results)}
}

// envSignatures are the functions of extism:host/env in go-sdk v1.7
// (I = i64, i = i32).
var envSignatures = map[string]meter.FuncType{
	"alloc":            sig("I", "I"),
	"free":             sig("I", ""),
	"load_u8":          sig("I", "i"),
	"load_u64":         sig("I", "I"),
	"input_load_u8":    sig("I", "i"),
	"input_load_u64":   sig("I", "I"),
	"store_u8":         sig("Ii", ""),
	"store_u64":        sig("II", ""),
	"input_set":        sig("II", ""),
	"output_set":       sig("II", ""),
	"input_length":     sig("", "I"),
	"input_offset":     sig("", "I"),
	"output_length":    sig("", "I"),
	"output_offset":    sig("", "I"),
	"length":           sig("I", "I"),
	"length_unsafe":    sig("I", "I"),
	"reset":            sig("", ""),
	"error_set":        sig("I", ""),
	"error_get":        sig("", "I"),
	"memory_bytes":     sig("", "I"),
	"config_get":       sig("I", "I"),
	"var_get":          sig("I", "I"),
	"var_set":          sig("II", ""),
	"http_request":     sig("II", "I"),
	"http_status_code": sig("", "i"),
	"http_headers":     sig("", "I"),
	"get_log_level":    sig("", "i"),
	"log_trace":        sig("I", ""),
	"log_debug":        sig("I", ""),
	"log_info":         sig("I", ""),
	"log_warn":         sig("I", ""),
	"log_error":        sig("I", ""),
}

// Functions is the `logline` namespace of Extism plugins: every function
// takes the offset of an Extism memory block holding its request and
// returns the offset of a new block holding its answer (abi/ABI.md,
// "Extism plugins").
var Functions = []string{
	abi.FnLog, abi.FnNow, abi.FnRandom, abi.FnEnv, abi.FnBlake3, abi.FnEd25519Verify,
	abi.FnSQL, abi.FnInsertSpan, abi.FnLock, abi.FnUnlock, abi.FnExec, abi.FnHTTP,
}

var loglineSignatures = func() map[string]meter.FuncType {
	m := map[string]meter.FuncType{}
	for _, f := range Functions {
		m[f] = sig("I", "I")
	}
	return m
}()

// entries are the exports whose first entry in a run sets the fuel: `run`
// and the runtime initialisers Extism may call before it.
var entries = []string{abi.Entry, "_initialize", "hs_init", "__wasm_call_ctors"}

// listenerFactory attaches fuelListener to the plugin's entries, so that
// the host reaches the plugin's own module (its fuel counter, globals and
// record of writes) at the moment Extism calls into it; go-sdk does not
// expose the module otherwise. It also attaches the listeners that record
// where Extism's kernel memory is written (instance.go): the kernel's
// alloc, and go-sdk's store_u8 and store_u64, which write where the plugin
// says.
type listenerFactory struct{}

func (listenerFactory) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	names := def.ExportNames()
	if def.GoFunction() != nil {
		if def.ModuleName() == EnvModule && (slices.Contains(names, "store_u8") || slices.Contains(names, "store_u64")) {
			return storeListener{}
		}
		return nil
	}
	for _, name := range names {
		if slices.Contains(entries, name) {
			return &fuelListener{run: name == abi.Entry}
		}
	}
	if slices.Contains(names, "alloc") {
		return allocListener{}
	}
	return nil
}

type fuelListener struct{ run bool }

func (l *fuelListener) Before(ctx context.Context, mod api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil {
		return
	}
	if l.run && rs.depth == 0 && !rs.inst.bound {
		rs.inst.bind(ctx, mod)
	}
	if rs.fuel.Counter == nil {
		g, ok := mod.ExportedGlobal(meter.ExportName).(api.MutableGlobal)
		if !ok {
			return
		}
		rs.fuel.Start(g, rs.lim.Fuel)
	}
	if l.run {
		rs.depth++
	}
}

func (l *fuelListener) After(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64) {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil || !l.run {
		return
	}
	rs.depth--
	if rs.depth == 0 {
		rs.returned = true
	}
}

func (l *fuelListener) Abort(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ error) {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil || !l.run {
		return
	}
	rs.depth--
}
