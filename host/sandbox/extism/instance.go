package extism

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/meter"
)

// An instance of a plugin is two wasm modules: Extism's kernel (input,
// output, memory blocks, the error) and the plugin's own module. Between
// runs both go back to their pristine state with package sandbox's
// snapshot machinery (sandbox.Restorable):
//
//   - the plugin's memory and mutable globals to the plugin's snapshot,
//     taken at the first entry of `run` in its first instance, copying only
//     the chunks the meter recorded as written (meter.Options.TrackWrites);
//   - the kernel's memory to its state right after instantiation (all
//     zeros), and its one mutable global. The kernel is not metered, so the
//     host records what may have been written: the kernel allocates blocks
//     upwards from its root (a bump allocator: every block it hands out,
//     and every byte go-sdk or the host write into one, lies below the end
//     of the highest block), and go-sdk's store_u8 and store_u64 write
//     where the plugin says. Listeners on the kernel's alloc and on those
//     two record them; the root is always restored.
//
// go-sdk's own per-instance state (vars, HTTP status, the logger) is reset
// by hand. What a restore cannot undo makes a plugin fresh (Plugin.fresh):
// every run then instantiates. The first run of an instance goes through
// go-sdk's Plugin.CallWithContext; later ones through warmCall, the same
// sequence of kernel calls with the functions looked up once.
type instance struct {
	p   *Plugin
	key poolKey
	ext *extism.Plugin
	// The memories wazero allocated for the instance: the kernel's and
	// the plugin's (if it has one).
	mems   []*sandbox.LinearMemory
	limit  uint64     // bytes, for a memory allocated now
	kmem   api.Memory // the kernel's memory, as go-sdk hands it out
	kernel sandbox.Restorable
	kglobs sandbox.Restorable // the kernel's globals
	main   sandbox.Restorable
	// bound: main and kglobs are set (at the first entry of run);
	// broken: something the restore needs is missing, so the instance
	// serves one run only.
	bound, broken bool
	allocN        uint64 // the size of the kernel allocation in progress
	calls         warmCalls
}

// warmCalls are the functions a warm call uses (warmCall), looked up once:
// go-sdk looks each one up again in every call, and every lookup allocates
// a call engine with its own stack, which is most of a go-sdk call's cost.
type warmCalls struct {
	kernel                                                   api.Module
	reset, alloc, inputSet, errorGet, length, outOff, outLen api.Function
	run                                                      api.Function // the plugin's
	stack                                                    [2]uint64
}

// kernelGlobals are the mutable globals of Extism's kernel (go-sdk's
// extism-runtime.wasm). TestKernelState checks that there are no others.
var kernelGlobals = []string{"extism_context"}

// errUntracked is the panic of a kernel write the host cannot attribute to
// a run: it fails that call rather than let the write outlive the run.
var errUntracked = errors.New("extism: Extism's kernel memory written outside a run: the write cannot be tracked")

// kernels maps the memory of every open instance's kernel (api.Memory) to
// the instance: go-sdk calls the kernel's alloc without the run's context
// (it sets the input with context.Background()), so allocListener finds the
// instance by the memory of the module it is called in.
var kernels sync.Map

// Allocate implements experimental.MemoryAllocator for the memories of the
// instance (the kernel's and the plugin's): each refuses to grow past the
// limit of the run it serves.
func (inst *instance) Allocate(_, maxBytes uint64) experimental.LinearMemory {
	lm := sandbox.NewLinearMemory(maxBytes, inst.limit)
	inst.mems = append(inst.mems, lm)
	return lm
}

// instantiate creates an instance of p for the run of rs, whose context
// callCtx is; the start function, if any, runs here.
func (r *Runtime) instantiate(callCtx context.Context, rs *runState, p *Plugin, key poolKey) (*instance, *abi.Error) {
	inst := &instance{p: p, key: key, limit: uint64(rs.lim.MemoryPages) * pageSize}
	rs.inst = inst
	ext, err := p.compiled.Instance(experimental.WithMemoryAllocator(callCtx, inst), extism.PluginInstanceConfig{ModuleConfig: r.mcfg})
	if err != nil {
		e := rs.instanceError(err)
		inst.close()
		rs.inst = nil
		return nil, e
	}
	inst.ext = ext
	if rs.memRefused() {
		inst.close()
		rs.inst = nil
		return nil, rs.memoryError("the module's minimum memory exceeds it")
	}
	inst.kmem = ext.Memory()
	kernels.Store(inst.kmem, inst)
	view, _ := inst.kmem.Read(0, 1)
	for _, lm := range inst.mems {
		switch {
		case lm.Holds(view) && inst.kernel.Mem == nil:
			inst.kernel = sandbox.Restorable{Mem: lm, Shift: sandbox.WriteShift(lm.Size() / pageSize)}
		case inst.main.Mem == nil:
			inst.main = sandbox.Restorable{Mem: lm, Shift: p.writeShift}
		default:
			inst.broken = true
		}
	}
	if inst.kernel.Mem == nil || p.fresh != "" {
		inst.broken = true
		return inst, nil
	}
	r.kernelMu.Lock()
	if r.kernelMem == nil {
		r.kernelMem = inst.kernel.Snapshot()
	}
	r.kernelMu.Unlock()
	return inst, nil
}

// bind finds, at the first entry of run, what the restore of the plugin's
// module and of the kernel's globals needs, and takes the plugin's snapshot
// if it has none: nothing has run in the plugin since its instantiation
// (and its start function), and go-sdk calls no initializer in a plugin
// that is not fresh.
func (inst *instance) bind(ctx context.Context, mod api.Module) {
	inst.bound = true
	if inst.broken {
		return
	}
	kernel, _ := ctx.Value(extism.PluginCtxKey("extism")).(api.Module)
	dirty, ok := mod.ExportedGlobal(meter.DirtyExportName).(api.MutableGlobal)
	inst.main.Dirty = dirty
	for _, g := range inst.p.globals {
		mg, isMutable := mod.ExportedGlobal(g.Name).(api.MutableGlobal)
		ok = ok && isMutable
		inst.main.Globals = append(inst.main.Globals, mg)
	}
	if kernel == nil {
		inst.broken = true
		return
	}
	for _, name := range kernelGlobals {
		if g, isMutable := kernel.ExportedGlobal(name).(api.MutableGlobal); isMutable {
			inst.kglobs.Globals = append(inst.kglobs.Globals, g)
		}
	}
	c := &inst.calls
	c.kernel, c.run = kernel, mod.ExportedFunction(abi.Entry)
	for _, f := range []struct {
		fn   *api.Function
		name string
	}{{&c.reset, "reset"}, {&c.alloc, "alloc"}, {&c.inputSet, "input_set"}, {&c.errorGet, "error_get"},
		{&c.length, "length"}, {&c.outOff, "output_offset"}, {&c.outLen, "output_length"}} {
		*f.fn = kernel.ExportedFunction(f.name)
		ok = ok && *f.fn != nil
	}
	if !ok || c.run == nil {
		inst.broken = true
		return
	}
	inst.main.ClearDirty()
	p := inst.p
	p.snapMu.Lock()
	if p.snap == nil {
		p.snap = inst.main.Snapshot()
	}
	p.snapMu.Unlock()
	r := p.r
	r.kernelMu.Lock()
	if r.kernelGlobs == nil {
		r.kernelGlobs = inst.kglobs.Snapshot()
	}
	r.kernelMu.Unlock()
}

// restore brings the instance back to the pristine state after a run that
// ended normally. It reports false if it cannot (a memory grew).
func (inst *instance) restore() bool {
	if inst.broken || !inst.bound {
		return false
	}
	p, r := inst.p, inst.p.r
	p.snapMu.Lock()
	snap := p.snap
	p.snapMu.Unlock()
	r.kernelMu.Lock()
	kmem, kglobs := r.kernelMem, r.kernelGlobs
	r.kernelMu.Unlock()
	if snap == nil || kmem == nil || kglobs == nil {
		return false
	}
	inst.kernel.MarkHost(0, 1) // the root: every kernel call may write it
	if !inst.main.Restore(snap) || !inst.kernel.Restore(kmem) || !inst.kglobs.Restore(kglobs) {
		return false
	}
	ext := inst.ext
	clear(ext.Var)
	clear(ext.LastResponseHeaders)
	ext.LastStatusCode = 0
	ext.SetLogger(dropLog)
	return true
}

func dropLog(extism.LogLevel, string) {}

// warmCall is go-sdk's Plugin.CallWithContext for an instance that has
// served a run already (so go-sdk's initialization of the guest runtime is
// done), with the functions looked up once: it resets the kernel, sets the
// input, calls run with the context values go-sdk's host functions read,
// and returns run's result, the output and the error the plugin set, as
// go-sdk does.
func (inst *instance) warmCall(ctx context.Context, input []byte) (uint32, []byte, error) {
	c := &inst.calls
	ctx = context.WithValue(ctx, extism.PluginCtxKey("extism"), c.kernel)
	ctx = context.WithValue(ctx, extism.PluginCtxKey("plugin"), inst.ext)
	s := c.stack[:]
	if err := c.reset.CallWithStack(ctx, s); err != nil {
		return 1, nil, err
	}
	s[0] = uint64(len(input))
	if err := c.alloc.CallWithStack(ctx, s); err != nil {
		return 1, nil, err
	}
	ptr := s[0]
	if len(input) > 0 && (ptr == 0 || !inst.kmem.Write(uint32(ptr), input)) {
		return 1, nil, fmt.Errorf("no room for the input (%d bytes) in Extism memory", len(input))
	}
	s[0], s[1] = ptr, uint64(len(input))
	if err := c.inputSet.CallWithStack(ctx, s); err != nil {
		return 1, nil, err
	}
	ctx = context.WithValue(ctx, extism.InputOffsetKey("inputOffset"), ptr)
	s[0] = 0
	if err := c.run.CallWithStack(ctx, s); err != nil {
		return 1, nil, err
	}
	rc := uint32(s[0])
	var pluginErr error
	if err := c.errorGet.CallWithStack(ctx, s); err != nil {
		return rc, nil, err
	}
	if off := s[0]; off != 0 {
		if err := c.length.CallWithStack(ctx, s); err != nil {
			return rc, nil, err
		}
		msg, _ := inst.kmem.Read(uint32(off), uint32(s[0]))
		pluginErr = errors.New(string(msg))
	}
	if err := c.outOff.CallWithStack(ctx, s); err != nil {
		return rc, nil, err
	}
	off := s[0]
	if err := c.outLen.CallWithStack(ctx, s); err != nil {
		return rc, nil, err
	}
	out, _ := inst.kmem.Read(uint32(off), uint32(s[0]))
	return rc, bytes.Clone(out), pluginErr
}

// setLimit applies the run's memory limit; it reports false if a memory
// is already larger.
func (inst *instance) setLimit(lim sandbox.Limits) bool {
	limit := uint64(lim.MemoryPages) * pageSize
	ok := true
	for _, lm := range inst.mems {
		lm.SetLimit(limit)
		ok = ok && lm.Size() <= limit
	}
	return ok
}

// close closes the instance (both modules) and releases its memories.
func (inst *instance) close() {
	if inst.ext != nil {
		_ = inst.ext.Close(context.Background())
		kernels.Delete(inst.kmem)
	}
	for _, lm := range inst.mems {
		lm.Release()
	}
	inst.mems = nil
}

// acquire returns a pristine idle instance of (p, tenant), restored after
// its last run, or a new one; warm tells which.
func (r *Runtime) acquire(callCtx context.Context, rs *runState, p *Plugin, tenant string) (inst *instance, warm bool, e *abi.Error) {
	key := poolKey{p.Hash, tenant}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, false, &abi.Error{Code: abi.CodeTimeout, Message: "extism: runtime closed"}
		}
		inst, ok := r.idle.Take(key)
		r.mu.Unlock()
		if !ok {
			break
		}
		if !inst.setLimit(rs.lim) {
			// Pristine, but larger than this run may use.
			inst.close()
			continue
		}
		rs.inst = inst
		return inst, true, nil
	}
	inst, e = r.instantiate(callCtx, rs, p, key)
	return inst, false, e
}

// release pools an instance after a run that may be reused, restored to
// the pristine state; otherwise, or if its pool is full, it closes it.
func (r *Runtime) release(inst *instance, reusable bool) {
	if !reusable || !inst.restore() {
		inst.close()
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		inst.close()
		return
	}
	evicted, kept := r.idle.Put(inst.key, inst)
	r.mu.Unlock()
	if !kept {
		inst.close()
	}
	for _, old := range evicted {
		old.close()
	}
}

// allocListener records the block the kernel's alloc hands out: blocks
// are allocated upwards, so everything up to the block's end may have
// been written (its header, the root, earlier blocks reused or split). In
// a module that is no instance's kernel (a plugin's own export named
// alloc) it does nothing.
type allocListener struct{}

func kernelOf(mod api.Module) *instance {
	if mem := mod.Memory(); mem != nil {
		if inst, ok := kernels.Load(mem); ok {
			return inst.(*instance)
		}
	}
	return nil
}

func (allocListener) Before(_ context.Context, mod api.Module, _ api.FunctionDefinition, params []uint64, _ experimental.StackIterator) {
	if inst := kernelOf(mod); inst != nil && len(params) == 1 {
		inst.allocN = params[0]
	}
}

func (allocListener) After(_ context.Context, mod api.Module, _ api.FunctionDefinition, results []uint64) {
	if inst := kernelOf(mod); inst != nil && len(results) == 1 && results[0] != 0 {
		inst.kernel.MarkHost(0, results[0]+inst.allocN)
	}
}

func (allocListener) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

// storeListener records the 8 bytes at the offset go-sdk's store_u8 or
// store_u64 writes in kernel memory, wherever the plugin points (a 32-bit
// offset: the high bits of the i64 are dropped). The plugin calls them, so
// the run is in the context; outside a run it fails the call.
type storeListener struct{}

func (storeListener) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, params []uint64, _ experimental.StackIterator) {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil || rs.inst == nil {
		panic(errUntracked)
	}
	if len(params) > 0 {
		off := uint64(uint32(params[0]))
		rs.inst.kernel.MarkHost(off, off+8)
	}
}

func (storeListener) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (storeListener) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}
