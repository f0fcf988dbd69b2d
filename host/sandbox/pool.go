package sandbox

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox/meter"
)

const pageSize = 65536

type poolKey struct {
	module, tenant string // Module.key
}

// pool holds the idle instances of one (module hash, tenant), most recently
// released last.
type pool struct {
	idle []*instance
}

// instance is one instantiated module, used by one run at a time.
type instance struct {
	mod  *Module
	key  poolKey
	m    api.Module
	run  api.Function
	fuel api.MutableGlobal
	// dirty is the guest's record of its writes (nil if the module is not
	// tracked), hostDirty the host's, both since the last restore.
	dirty     api.MutableGlobal
	hostDirty uint64
	globals   []api.MutableGlobal // in the order of mod.globals
	mem       linearMemory
	stack     [1]uint64
	// monoBase is the guest's monotonic clock at the start of a run:
	// after whatever _initialize saw, the same for every instance of the
	// module.
	monoBase int64
	rs       runState // of the current call into the guest
	callCtx  runCtx   // of the current run
	rng      rand.ChaCha8
	// The idle LRU list (Runtime.idle*), while in a pool.
	prev, next *instance
	idle       bool
}

// Allocate implements experimental.MemoryAllocator: the instance's memory
// is a linearMemory that refuses to grow past the run's limit.
func (inst *instance) Allocate(_, maxBytes uint64) experimental.LinearMemory {
	inst.mem.max = maxBytes
	return &inst.mem
}

// linearMemory backs an instance's linear memory. It enforces the per-run
// page limit (wazero's own limit is the runtime-wide Config.MaxMemoryPages)
// and remembers a refused grow, which tells memory_limit from other
// failures. On Linux the memory is a private anonymous mapping that reserves
// the run's limit up front, so growing never copies and closing an instance
// gives its pages back at once; elsewhere it is a Go slice.
type linearMemory struct {
	buf     []byte // the memory: len is its size, cap what is reserved
	mapping []byte // the mmap behind buf, nil if buf is in the Go heap
	max     uint64 // bytes: the module's maximum or the runtime's cap
	limit   uint64 // bytes: the current run's limit
	refused bool
}

// reservedBytes is the memory reserved for linear memories, in all
// runtimes: mapped (on Linux) or allocated in the Go heap.
var reservedBytes atomic.Int64

// Reallocate implements experimental.LinearMemory.
func (lm *linearMemory) Reallocate(size uint64) []byte {
	if lm.buf != nil && (size > lm.limit || size > lm.max) {
		lm.refused = true
		return nil
	}
	if lm.buf == nil && size > lm.limit {
		// The initial size is over the limit: allocate it (wazero
		// cannot fail here) and let the caller refuse the instance.
		lm.refused = true
	}
	if size <= uint64(cap(lm.buf)) {
		// The bytes between len and cap were never exposed: memory
		// does not shrink, so they are still zero.
		lm.buf = lm.buf[:size]
		return lm.buf
	}
	reserve := max(size, min(lm.limit, lm.max))
	if m := MapMemory(reserve); m != nil {
		copy(m, lm.buf)
		lm.release()
		lm.mapping = m
		lm.buf = m[:size]
		reservedBytes.Add(int64(len(m)))
		return lm.buf
	}
	// In the Go heap: grow geometrically within the limit, so that a
	// guest growing page by page does not copy its memory every time.
	newCap := max(size, min(2*uint64(cap(lm.buf)), lm.limit, lm.max))
	nb := make([]byte, size, newCap)
	copy(nb, lm.buf)
	lm.release()
	lm.buf = nb
	reservedBytes.Add(int64(cap(nb)))
	return nb
}

// Free implements experimental.LinearMemory. It does nothing: wazero may
// call it while the guest's call is unwinding, so the sandbox releases the
// memory itself once the instance is closed (release).
func (lm *linearMemory) Free() {}

// release returns the memory to the system.
func (lm *linearMemory) release() {
	if lm.mapping != nil {
		reservedBytes.Add(-int64(len(lm.mapping)))
		UnmapMemory(lm.mapping)
		lm.mapping = nil
	} else {
		reservedBytes.Add(-int64(cap(lm.buf)))
	}
	lm.buf = nil
}

func (lm *linearMemory) pages() uint64 { return uint64(len(lm.buf)) / pageSize }

// snapshot is the pristine state of a module's instances, taken after
// instantiation and _initialize.
type snapshot struct {
	mem     []byte
	globals []uint64
}

// acquire returns an idle instance of (m, tenant) restored to its snapshot,
// or a new one. A failure to instantiate comes back as a run error, with
// the logs of the failed initialization.
func (r *Runtime) acquire(ctx context.Context, m *Module, tenant string, lim Limits) (*instance, bool, *abi.Error, []LogLine) {
	key := poolKey{m.key, tenant}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, false, runtimeClosed(), nil
		}
		if m.evicted {
			r.mu.Unlock()
			if err := r.ensureCompiled(ctx, m); err != nil {
				var e *Error
				if errors.As(err, &e) {
					return nil, false, e.ABI(), nil
				}
				return nil, false, &abi.Error{Code: abi.CodeTimeout, Message: "recompiling the evicted module: " + err.Error()}, nil
			}
			continue
		}
		if r.modules[m.key] == m {
			r.modLRU.MoveToFront(m.lru)
		}
		if p := r.pools[key]; p != nil && len(p.idle) > 0 {
			inst := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			if len(p.idle) == 0 {
				delete(r.pools, key)
			}
			r.unlinkIdle(inst)
			r.mu.Unlock()
			if uint64(len(inst.mem.buf)) > uint64(lim.MemoryPages)*pageSize {
				// Pristine, but larger than this run may use.
				r.discard(inst)
				continue
			}
			r.reused.Add(1)
			return inst, true, nil, nil
		}
		compiled := m.compiled
		m.live++
		r.mu.Unlock()

		inst, rerr, logs := r.instantiate(ctx, m, compiled, key, lim)
		if rerr == nil {
			r.created.Add(1)
		}
		if rerr != nil {
			r.mu.Lock()
			m.live--
			toClose := r.maybeCloseCompiled(m)
			r.mu.Unlock()
			closeCompiled(ctx, toClose)
		}
		return inst, false, rerr, logs
	}
}

func runtimeClosed() *abi.Error {
	return &abi.Error{Code: abi.CodeTimeout, Message: "sandbox: runtime closed"}
}

// instantiate creates an instance, runs _initialize, and takes the module's
// snapshot if it has none yet.
func (r *Runtime) instantiate(ctx context.Context, m *Module, compiled wazero.CompiledModule, key poolKey, lim Limits) (*instance, *abi.Error, []LogLine) {
	inst := &instance{mod: m, key: key}
	inst.mem.limit = uint64(lim.MemoryPages) * pageSize
	rs := newInitState(ctx, inst, lim)
	defer func() { inst.rs = runState{} }()
	if m.minPages > uint64(lim.MemoryPages) {
		return nil, &abi.Error{Code: abi.CodeMemoryLimit, Message: memoryMessage(lim, "the module's initial memory of "+pagesString(m.minPages)+" exceeds the limit")}, nil
	}

	rs.deadline = time.Now().Add(lim.Wall)
	callCtx := context.WithValue(experimental.WithMemoryAllocator(ctx, inst), runKey{}, rs)
	mod, err := r.rt.InstantiateModule(callCtx, compiled, r.mcfg)
	inst.m = mod
	if err != nil {
		inst.close()
		e := rs.classify(err, 0, 0, false)
		if e == nil {
			e = &abi.Error{Code: abi.CodeTrap, Message: err.Error()}
		}
		e.Message = "instantiating: " + e.Message
		return nil, e, rs.logs.finish()
	}
	inst.run = mod.ExportedFunction(abi.Entry)
	inst.fuel, _ = mod.ExportedGlobal(meter.ExportName).(api.MutableGlobal)
	ok := inst.run != nil && inst.fuel != nil
	if m.writeShift != 0 {
		inst.dirty, _ = mod.ExportedGlobal(meter.DirtyExportName).(api.MutableGlobal)
		ok = ok && inst.dirty != nil
	}
	for _, g := range m.globals {
		mg, isMutable := mod.ExportedGlobal(g.Name).(api.MutableGlobal)
		ok = ok && isMutable
		inst.globals = append(inst.globals, mg)
	}
	if !ok {
		inst.close()
		return nil, &abi.Error{Code: abi.CodeInvalidModule, Message: "instantiated module lacks its run export, fuel or globals"}, nil
	}
	if e := rs.checkMemory(); e != nil {
		inst.close()
		return nil, e, rs.logs.finish()
	}
	// The start function, _initialize and logline_prepare share one
	// budget of fuel, at least Config.InitFuel.
	rs.lim.Fuel = max(lim.Fuel, r.cfg.InitFuel)
	rs.fuel.Start(inst.fuel, rs.lim.Fuel)
	for _, fn := range []struct {
		name string
		has  bool
	}{{startExport, m.hasStart}, {"_initialize", m.hasInit}, {prepareExport, m.init != nil}} {
		if !fn.has {
			continue
		}
		var err error
		var ret uint32
		if fn.name == prepareExport {
			rs.input = m.init
			inst.stack[0] = 0
			err = mod.ExportedFunction(fn.name).CallWithStack(callCtx, inst.stack[:])
			ret = uint32(inst.stack[0])
		} else {
			err = mod.ExportedFunction(fn.name).CallWithStack(callCtx, nil)
		}
		e := rs.classify(err, ret, rs.fuel.Left(), true)
		if e == nil && mod.IsClosed() {
			e = &abi.Error{Code: abi.CodeGuestError, Message: "exited"}
		}
		if e != nil {
			inst.close()
			if fn.name == startExport {
				fn.name = "start function"
			}
			if fn.name == prepareExport && e.Code == abi.CodeGuestError && len(rs.output) > 0 {
				// The guest's own account of what it could not prepare
				// (a syntax error, with its line and column).
				e.Message = clip(string(rs.output))
			}
			e.Message = fn.name + ": " + e.Message
			return nil, e, rs.logs.finish()
		}
		if e := rs.checkMemory(); e != nil {
			inst.close()
			return nil, e, rs.logs.finish()
		}
	}
	rs.output = nil
	inst.monoBase = rs.mono() + 1_000_000 // 1 ms after the last reading of _initialize
	inst.clearDirty()                     // the instance is as the snapshot

	if m.fresh == "" {
		m.snapMu.Lock()
		if m.snap == nil {
			s := &snapshot{mem: append([]byte(nil), inst.mem.buf...)}
			for _, g := range inst.globals {
				s.globals = append(s.globals, g.Get())
			}
			m.snap = s
		}
		m.snapMu.Unlock()
	}
	return inst, nil, nil
}

// restore resets an instance to its module's snapshot. It reports false if
// it cannot (the memory grew, or the module has no snapshot).
func (inst *instance) restore() bool {
	m := inst.mod
	if m.fresh != "" || inst.m.IsClosed() {
		return false
	}
	m.snapMu.Lock()
	s := m.snap
	m.snapMu.Unlock()
	if s == nil || len(inst.mem.buf) != len(s.mem) {
		return false
	}
	inst.restoreMemory(s.mem)
	for i, g := range inst.globals {
		g.Set(s.globals[i])
	}
	return true
}

// release returns an instance to its pool after a run that may be reused,
// restored to its snapshot; otherwise, or if the pool is full, it closes
// the instance.
func (r *Runtime) release(inst *instance, reusable bool) {
	if !reusable || r.cfg.PoolSize == 0 || !inst.restore() {
		r.discard(inst)
		return
	}
	var evict []*instance
	r.mu.Lock()
	if r.closed || inst.mod.evicted {
		r.mu.Unlock()
		r.discard(inst)
		return
	}
	p := r.pools[inst.key]
	if p == nil {
		p = &pool{}
		r.pools[inst.key] = p
	}
	if len(p.idle) >= r.cfg.PoolSize {
		r.mu.Unlock()
		r.discard(inst)
		return
	}
	p.idle = append(p.idle, inst)
	r.pushIdle(inst)
	for r.idleCount > r.cfg.MaxIdleInstances {
		old := r.idleTail
		r.unlinkIdle(old)
		op := r.pools[old.key]
		for i, x := range op.idle {
			if x == old {
				op.idle = append(op.idle[:i], op.idle[i+1:]...)
				break
			}
		}
		if len(op.idle) == 0 {
			delete(r.pools, old.key)
		}
		evict = append(evict, old)
	}
	r.mu.Unlock()
	for _, old := range evict {
		r.discard(old)
	}
}

// pushIdle puts an instance at the head of the idle LRU list. r.mu is held.
func (r *Runtime) pushIdle(inst *instance) {
	inst.prev, inst.next, inst.idle = nil, r.idleHead, true
	if r.idleHead != nil {
		r.idleHead.prev = inst
	} else {
		r.idleTail = inst
	}
	r.idleHead = inst
	r.idleCount++
}

// unlinkIdle takes an instance off the idle LRU list. r.mu is held.
func (r *Runtime) unlinkIdle(inst *instance) {
	if !inst.idle {
		return
	}
	if inst.prev != nil {
		inst.prev.next = inst.next
	} else {
		r.idleHead = inst.next
	}
	if inst.next != nil {
		inst.next.prev = inst.prev
	} else {
		r.idleTail = inst.prev
	}
	inst.prev, inst.next, inst.idle = nil, nil, false
	r.idleCount--
}

// close closes the wazero module and releases the memory.
func (inst *instance) close() {
	if inst.m != nil {
		_ = inst.m.Close(context.Background())
	}
	inst.mem.release()
}

// discard closes an instance that is in no pool.
func (r *Runtime) discard(inst *instance) {
	inst.close()
	r.mu.Lock()
	inst.mod.live--
	toClose := r.maybeCloseCompiled(inst.mod)
	r.mu.Unlock()
	closeCompiled(context.Background(), toClose)
}

// maybeCloseCompiled returns the compiled code of an evicted module that no
// instance uses any more. r.mu is held.
func (r *Runtime) maybeCloseCompiled(m *Module) []wazero.CompiledModule {
	if m.evicted && m.live == 0 && m.compiled != nil {
		c := m.compiled
		m.compiled = nil
		return []wazero.CompiledModule{c}
	}
	return nil
}
