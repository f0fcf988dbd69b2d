package sandbox

import (
	"container/list"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	wasi "github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox/meter"
)

// Config configures a Runtime. Zero values take the defaults below.
type Config struct {
	// CompilationCacheDir keeps compiled modules on disk across
	// processes; "" keeps them in memory only.
	CompilationCacheDir string
	// PoolSize is the number of idle instances kept per (module hash,
	// tenant); default 4, negative for none (every run instantiates).
	PoolSize int
	// MaxModules is the number of compiled modules kept; loading one more
	// evicts the least recently used (its idle instances are closed; a
	// *Module still held recompiles on its next Run). Default 256.
	MaxModules int
	// MaxIdleInstances caps the idle instances of all pools together;
	// beyond it the least recently used is closed. Default 256.
	MaxIdleInstances int
	// MaxMemoryPages is the hard cap of any instance's linear memory, in
	// 64 KiB pages (wazero's memory limit); Limits.MemoryPages is clamped
	// to it. Default 16384 (1 GiB).
	MaxMemoryPages uint32
	// InitFuel is the least fuel an instance's initialization gets (the
	// start function, _initialize and logline_prepare together), whatever
	// the run's Limits.Fuel: initialization happens once per instance and
	// ends in the snapshot every run starts from, so its cost is not the
	// run's. Default 250,000,000: QuickJS compiling a kernel that ships
	// the prompt system (lib.js and prompt.js, ~70 KB of source) takes
	// ~60,000,000.
	InitFuel int64
}

// Defaults of Config.
const (
	DefaultPoolSize         = 4
	DefaultMaxModules       = 256
	DefaultMaxIdleInstances = 256
	DefaultMaxMemoryPages   = 16384
	DefaultInitFuel         = 250_000_000
)

// GlobalPrefix is the export name prefix of the mutable globals, reserved
// for the host (see meter.ExportGlobals); package extism reserves it too.
const GlobalPrefix = "logline_global_"

const globalPrefix = GlobalPrefix

// startExport is the export name of a module's start function, which the
// sandbox calls itself, with fuel set (see meter.ExportStart).
const startExport = "logline_start"

// abiVersionExport is the optional export that names the ABI version a
// module was built against.
const abiVersionExport = "logline_abi_version"

// prepareExport is the export Prepare calls once per instance, after
// _initialize, with the prepared bytes as its input.
const prepareExport = "logline_prepare"

// Runtime compiles and runs guests. It is safe for concurrent use.
type Runtime struct {
	cfg   Config
	rt    wazero.Runtime
	cache wazero.CompilationCache
	mcfg  wazero.ModuleConfig

	// Signatures of the functions a module may import, by module.
	provided map[string]map[string]meter.FuncType

	compiles atomic.Int64 // modules compiled (and a Stats counter)

	// Stats counters (Prometheus reads them through Stats).
	created, reused, cacheHits atomic.Int64

	mu      sync.Mutex
	closed  bool
	modules map[string]*Module // by hash
	modLRU  list.List          // of *Module, most recent first
	loading map[string]*loadCall
	idle    IdlePool[poolKey, *instance]
}

type loadCall struct {
	done chan struct{}
	m    *Module
	err  error
}

// New creates a Runtime. Close it to release compiled code and instances.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.PoolSize == 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	if cfg.PoolSize < 0 {
		cfg.PoolSize = 0
	}
	if cfg.MaxModules <= 0 {
		cfg.MaxModules = DefaultMaxModules
	}
	if cfg.MaxIdleInstances <= 0 {
		cfg.MaxIdleInstances = DefaultMaxIdleInstances
	}
	if cfg.MaxMemoryPages == 0 {
		cfg.MaxMemoryPages = DefaultMaxMemoryPages
	}
	cfg.MaxMemoryPages = min(cfg.MaxMemoryPages, 65536)
	if cfg.InitFuel <= 0 {
		cfg.InitFuel = DefaultInitFuel
	}

	rc := wazero.NewRuntimeConfig().
		WithCoreFeatures(api.CoreFeaturesV2).
		WithMemoryLimitPages(cfg.MaxMemoryPages)
	// No WithCloseOnContextDone: it makes compiled code leave for Go at
	// every loop header (and starts a goroutine per call). Fuel bounds
	// computation; the wall clock is checked at each slice of fuel
	// (hostRefuel) and in host calls.
	r := &Runtime{
		cfg:      cfg,
		modules:  map[string]*Module{},
		loading:  map[string]*loadCall{},
		idle:     IdlePool[poolKey, *instance]{PerKey: cfg.PoolSize, Total: cfg.MaxIdleInstances},
		provided: map[string]map[string]meter.FuncType{},
	}
	if cfg.CompilationCacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CompilationCacheDir)
		if err != nil {
			return nil, fmt.Errorf("error opening the compilation cache %s: %w", cfg.CompilationCacheDir, err)
		}
		r.cache = cache
		rc = rc.WithCompilationCache(cache)
	}
	r.rt = wazero.NewRuntimeWithConfig(ctx, rc)

	// Deny by default: no mounts, no env, no args beyond argv0, empty
	// stdin. No start functions: _start is refused at Load and
	// _initialize is called by the sandbox with fuel set.
	r.mcfg = wazero.NewModuleConfig().
		WithName("").
		WithArgs("guest").
		WithStartFunctions()

	host := r.rt.NewHostModuleBuilder(abi.Module)
	exportHostFuncs(host)
	hostMod, err := host.Instantiate(ctx)
	if err != nil {
		_ = r.close(ctx)
		return nil, fmt.Errorf("error instantiating the %s host module: %w", abi.Module, err)
	}
	// The meter's refuel import, in a module of its own that guests
	// cannot import (it is not in r.provided).
	if _, err := r.rt.NewHostModuleBuilder(meter.RefuelModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostRefuel), nil, nil).
		Export(meter.RefuelName).Instantiate(ctx); err != nil {
		_ = r.close(ctx)
		return nil, fmt.Errorf("error instantiating the %s host module: %w", meter.RefuelModule, err)
	}
	w := r.rt.NewHostModuleBuilder(wasi.ModuleName)
	wasi.NewFunctionExporter().ExportFunctions(w)
	overrideWASI(w)
	wasiMod, err := w.Instantiate(experimental.WithFunctionListenerFactory(ctx, untrackedWASI{}))
	if err != nil {
		_ = r.close(ctx)
		return nil, fmt.Errorf("error instantiating the %s host module: %w", wasi.ModuleName, err)
	}
	for _, m := range []api.Module{hostMod, wasiMod} {
		sigs := map[string]meter.FuncType{}
		for name, def := range m.ExportedFunctionDefinitions() {
			sigs[name] = meter.FuncType{Params: valTypes(def.ParamTypes()), Results: valTypes(def.ResultTypes())}
		}
		r.provided[m.Name()] = sigs
	}
	return r, nil
}

func valTypes(ts []api.ValueType) []byte {
	out := make([]byte, len(ts))
	for i, t := range ts {
		out[i] = t
	}
	return out
}

// Stats are the runtime's counters since New, for metrics.
type Stats struct {
	// InstancesCreated and InstancesReused count runs that instantiated a
	// module afresh and runs that took a pristine pooled instance.
	InstancesCreated, InstancesReused int64
	// InstancesIdle is how many pristine instances are pooled now.
	InstancesIdle int
	// ModulesCompiled counts compilations; ModuleCacheHits loads that found
	// the module compiled already.
	ModulesCompiled, ModuleCacheHits int64
}

// Stats reads the counters.
func (r *Runtime) Stats() Stats {
	r.mu.Lock()
	idle := r.idle.Len()
	r.mu.Unlock()
	return Stats{InstancesCreated: r.created.Load(), InstancesReused: r.reused.Load(), InstancesIdle: idle,
		ModulesCompiled: r.compiles.Load(), ModuleCacheHits: r.cacheHits.Load()}
}

// Close closes every instance and compiled module. Runs in progress fail.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	idle := r.idle.Remove(func(poolKey) bool { return true })
	r.modules = map[string]*Module{}
	r.modLRU.Init()
	r.mu.Unlock()
	for _, inst := range idle {
		inst.close()
	}
	return r.close(ctx)
}

func (r *Runtime) close(ctx context.Context) error {
	err := r.rt.Close(ctx)
	if r.cache != nil {
		err = errors.Join(err, r.cache.Close(ctx))
	}
	return err
}

// Module is a loaded module: checked, metered and compiled. It belongs to
// the Runtime that loaded it.
type Module struct {
	// Hash is the lowercase hex BLAKE3-256 of the original bytes; a
	// prepared module has the hash of the module it was prepared from.
	Hash string

	r   *Runtime
	key string // in Runtime.modules and pools: Hash, plus the init's hash when prepared
	// init is the input of logline_prepare (nil: not prepared).
	init       []byte
	metered    []byte
	hasInit    bool
	hasStart   bool
	hasPrepare bool
	fresh      string // why every run needs a fresh instance, "" if none
	globals    []meter.GlobalExport
	minPages   uint64
	writeShift uint8 // log2 of the chunk size of write tracking; 0: not tracked

	cmu sync.Mutex // serializes recompilation after eviction

	// Guarded by r.mu.
	compiled wazero.CompiledModule
	evicted  bool
	live     int // instances alive (idle or running)
	lru      *list.Element

	snapMu sync.Mutex
	snap   *Snapshot
}

// Load checks, meters and compiles a module, or returns the one already
// loaded with the same hash (each hash compiles once). Its errors are
// *Error with code invalid_module or forbidden_import.
func (r *Runtime) Load(ctx context.Context, wasm []byte) (*Module, error) {
	sum := blake3.Sum256(wasm)
	hash := hex.EncodeToString(sum[:])
	return r.load(ctx, hash, func() (*Module, error) { return r.prepare(wasm, hash) })
}

// Prepare returns a module that runs m's code, but whose instances, after
// _initialize, call the export logline_prepare () -> i32 once with init as
// their input (what input() returns), before the snapshot is taken: every
// run of the prepared module starts from the state logline_prepare left.
// An interpreter guest uses it to parse and compile a script once, so that
// its runs start with the code ready (the QuickJS guest does). Pools and
// snapshots are per (m, init, tenant); prepared modules are cached like
// loaded ones, by (m.Hash, BLAKE3 of init).
//
// Prepare instantiates the module once to check that init prepares: a
// non-zero return or a failure of logline_prepare comes back as an *Error
// (guest_error, or the code of the limit it hit) whose message is what
// logline_prepare passed to output(), if anything, else the failure and
// its logs.
func (r *Runtime) Prepare(ctx context.Context, m *Module, init []byte) (*Module, error) {
	switch {
	case m == nil || m.r != r:
		return nil, errors.New("sandbox: module not loaded by this runtime")
	case m.init != nil:
		return nil, errorf(abi.CodeInvalidModule, "module %s is already prepared", m.Hash)
	case !m.hasPrepare:
		return nil, errorf(abi.CodeInvalidModule, "module %s has no %s export () -> i32 to prepare with", m.Hash, prepareExport)
	}
	sum := blake3.Sum256(init)
	key := m.Hash + "+" + hex.EncodeToString(sum[:16])
	return r.load(ctx, key, func() (*Module, error) {
		pm := &Module{
			Hash: m.Hash, r: r, key: key, init: append([]byte{}, init...),
			metered: m.metered, hasInit: m.hasInit, hasStart: m.hasStart, hasPrepare: true,
			fresh: m.fresh, globals: m.globals, minPages: m.minPages,
		}
		return pm, nil
	})
}

// load returns the module registered under key, or builds, compiles and
// registers it; concurrent loads of one key wait for the first.
func (r *Runtime) load(ctx context.Context, key string, build func() (*Module, error)) (*Module, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("sandbox: runtime closed")
	}
	if m := r.modules[key]; m != nil {
		r.modLRU.MoveToFront(m.lru)
		r.mu.Unlock()
		r.cacheHits.Add(1)
		return m, nil
	}
	if c := r.loading[key]; c != nil {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.m, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &loadCall{done: make(chan struct{})}
	r.loading[key] = c
	r.mu.Unlock()

	m, err := build()
	var compiled wazero.CompiledModule
	if err == nil {
		compiled, err = r.compile(ctx, m)
	}
	if err == nil && m.init != nil {
		err = r.tryPrepare(ctx, m, compiled)
		if err != nil {
			closeCompiled(ctx, []wazero.CompiledModule{compiled})
		}
	}

	r.mu.Lock()
	delete(r.loading, key)
	var toClose []wazero.CompiledModule
	if err == nil {
		if r.closed {
			err = errors.New("sandbox: runtime closed")
			toClose = append(toClose, compiled)
		} else {
			m.compiled = compiled
			toClose = r.register(m)
		}
	}
	r.mu.Unlock()
	closeCompiled(ctx, toClose)
	if err != nil {
		m = nil
	}
	c.m, c.err = m, err
	close(c.done)
	return m, err
}

// tryPrepare instantiates a prepared module once, which takes its snapshot,
// and reports how logline_prepare failed, if it did.
func (r *Runtime) tryPrepare(ctx context.Context, m *Module, compiled wazero.CompiledModule) error {
	lim := DefaultLimits().WithDefaults(r.cfg.MaxMemoryPages)
	inst, e, _ := r.instantiate(ctx, m, compiled, poolKey{m.key, ""}, lim)
	if e != nil {
		return &Error{Code: e.Code, Message: e.Message}
	}
	inst.close()
	return nil
}

// prepare checks a module against the ABI and rewrites it: mutable globals
// exported for the snapshot, then fuel metering.
func (r *Runtime) prepare(wasm []byte, hash string) (*Module, error) {
	info, err := meter.Inspect(wasm)
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	for _, imp := range info.Imports {
		if err := r.checkImport(imp); err != nil {
			return nil, err
		}
	}
	m := &Module{Hash: hash, r: r, key: hash}
	switch {
	case len(info.Memories) > 1:
		return nil, errorf(abi.CodeInvalidModule, "%d memories: at most one is supported", len(info.Memories))
	case len(info.Memories) == 1:
		if info.Memories[0].Shared {
			return nil, errorf(abi.CodeInvalidModule, "shared memory is not supported")
		}
		m.minPages = info.Memories[0].Min
	}
	if _, ok := info.Export("_start"); ok {
		return nil, errorf(abi.CodeInvalidModule, "command module (exports _start): build a reactor that exports %s (Go: -buildmode=c-shared)", abi.Entry)
	}
	run, ok := info.Export(abi.Entry)
	if !ok {
		return nil, errorf(abi.CodeInvalidModule, "no %s export", abi.Entry)
	}
	want := meter.FuncType{Results: []byte{meter.ValI32}}
	if run.Kind != meter.KindFunc || int(run.Index) >= len(info.Funcs) || !info.Funcs[run.Index].Equal(want) {
		return nil, errorf(abi.CodeInvalidModule, "export %s must be a function %s", abi.Entry, want)
	}
	if e, ok := info.Export("_initialize"); ok {
		if e.Kind != meter.KindFunc || int(e.Index) >= len(info.Funcs) || !info.Funcs[e.Index].Equal(meter.FuncType{}) {
			return nil, errorf(abi.CodeInvalidModule, "export _initialize must be a function () -> ()")
		}
		m.hasInit = true
	}
	if e, ok := info.Export(prepareExport); ok {
		if e.Kind != meter.KindFunc || int(e.Index) >= len(info.Funcs) || !info.Funcs[e.Index].Equal(want) {
			return nil, errorf(abi.CodeInvalidModule, "export %s must be a function %s", prepareExport, want)
		}
		m.hasPrepare = true
	}
	if e, ok := info.Export(abiVersionExport); ok {
		if e.Kind != meter.KindGlobal || int(e.Index) >= len(info.Globals) {
			return nil, errorf(abi.CodeInvalidModule, "export %s must be an i32 global", abiVersionExport)
		}
		g := info.Globals[e.Index]
		if g.Type != meter.ValI32 || !g.HasConstI32 || g.Mutable {
			return nil, errorf(abi.CodeInvalidModule, "export %s must be an immutable i32 constant", abiVersionExport)
		}
		if g.ConstI32 != abi.Version {
			return nil, errorf(abi.CodeInvalidModule, "built for ABI version %d, the host speaks version %d", g.ConstI32, abi.Version)
		}
	}
	for _, e := range info.Exports {
		if strings.HasPrefix(e.Name, globalPrefix) || e.Name == meter.ExportName || e.Name == meter.DirtyExportName || e.Name == startExport {
			return nil, errorf(abi.CodeInvalidModule, "export %q uses a name reserved for the host", e.Name)
		}
	}
	rewritten, globals, err := meter.ExportGlobals(wasm, globalPrefix)
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	m.fresh = Unrestorable(info, globals)
	m.globals = globals
	rewritten, m.hasStart, err = meter.ExportStart(rewritten, startExport)
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	m.writeShift = writeShift(m.minPages)
	m.metered, err = meter.Instrument(rewritten, meter.Options{Refuel: true, TrackWrites: true, WriteShift: m.writeShift})
	if err != nil {
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	return m, nil
}

// Unrestorable says why a snapshot of linear memory and globals cannot
// bring an instance of the module back to its pristine state, "" if it
// can: the code mutates tables or drops segments (info.StateOps), or a
// mutable global (those ExportGlobals exported) is a v128 or a reference,
// which the host does not restore. Such a module needs a fresh instance for
// every run.
func Unrestorable(info *meter.Info, globals []meter.GlobalExport) string {
	if len(info.StateOps) > 0 {
		names := make([]string, len(info.StateOps))
		for i, op := range info.StateOps {
			names[i] = opName(op)
		}
		return "uses " + strings.Join(names, ", ")
	}
	for _, g := range globals {
		switch g.Type {
		case meter.ValI32, meter.ValI64, meter.ValF32, meter.ValF64:
		default:
			return "has a mutable " + meter.ValTypeName(g.Type) + " global"
		}
	}
	return ""
}

func opName(op meter.Opcode) string {
	switch op {
	case meter.OpTableSet:
		return "table.set"
	case meter.OpTableGrow:
		return "table.grow"
	case meter.OpTableFill:
		return "table.fill"
	case meter.OpTableCopy:
		return "table.copy"
	case meter.OpTableInit:
		return "table.init"
	case meter.OpElemDrop:
		return "elem.drop"
	case meter.OpDataDrop:
		return "data.drop"
	}
	return op.String()
}

// checkImport accepts functions the host provides with their exact
// signature.
func (r *Runtime) checkImport(imp meter.Import) error {
	sigs, ok := r.provided[imp.Module]
	if !ok {
		return errorf(abi.CodeForbiddenImport, "import %q.%q: module %q is not provided (only %q and %q are)",
			imp.Module, imp.Name, imp.Module, abi.Module, wasi.ModuleName)
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

func (r *Runtime) compile(ctx context.Context, m *Module) (wazero.CompiledModule, error) {
	r.compiles.Add(1)
	c, err := r.rt.CompileModule(ctx, m.metered)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errorf(abi.CodeInvalidModule, "%v", err)
	}
	return c, nil
}

// register adds a compiled module to the cache and evicts beyond
// MaxModules. It returns compiled modules to close. r.mu is held.
func (r *Runtime) register(m *Module) []wazero.CompiledModule {
	m.evicted = false
	if other := r.modules[m.key]; other != nil && other != m {
		// The same bytes loaded again while m was evicted: m runs on,
		// outside the cache, until the runtime closes.
		return nil
	}
	r.modules[m.key] = m
	m.lru = r.modLRU.PushFront(m)
	var toClose []wazero.CompiledModule
	for len(r.modules) > r.cfg.MaxModules {
		victim := r.modLRU.Back().Value.(*Module)
		r.modLRU.Remove(victim.lru)
		delete(r.modules, victim.key)
		victim.evicted = true
		for _, inst := range r.idle.Remove(func(k poolKey) bool { return k.module == victim.key }) {
			toCloseInst(inst)
		}
		if victim.live == 0 && victim.compiled != nil {
			toClose = append(toClose, victim.compiled)
			victim.compiled = nil
		}
	}
	return toClose
}

// toCloseInst closes an idle instance of an evicted module. r.mu is held;
// closing an instance only marks it closed in wazero, so it is cheap.
func toCloseInst(inst *instance) {
	inst.mod.live--
	inst.close()
}

func closeCompiled(ctx context.Context, cs []wazero.CompiledModule) {
	for _, c := range cs {
		_ = c.Close(ctx)
	}
}

// ensureCompiled makes an evicted module runnable again. It is called
// without r.mu.
func (r *Runtime) ensureCompiled(ctx context.Context, m *Module) error {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("sandbox: runtime closed")
	}
	if !m.evicted {
		r.mu.Unlock()
		return nil
	}
	if m.compiled != nil {
		toClose := r.register(m)
		r.mu.Unlock()
		closeCompiled(ctx, toClose)
		return nil
	}
	r.mu.Unlock()
	c, err := r.compile(ctx, m)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = c.Close(ctx)
		return errors.New("sandbox: runtime closed")
	}
	m.compiled = c
	toClose := r.register(m)
	r.mu.Unlock()
	closeCompiled(ctx, toClose)
	return nil
}
