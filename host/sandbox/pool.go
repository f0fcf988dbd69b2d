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

// instance is one instantiated module, used by one run at a time.
type instance struct {
	mod  *Module
	key  poolKey
	m    api.Module
	run  api.Function
	fuel api.MutableGlobal
	mem  LinearMemory
	// st is what a restore resets: mem, the globals in the order of
	// mod.globals, and the record of writes since the last restore.
	st    Restorable
	stack [1]uint64
	// monoBase is the guest's monotonic clock at the start of a run:
	// after whatever _initialize saw, the same for every instance of the
	// module.
	monoBase int64
	rs       runState // of the current call into the guest
	callCtx  runCtx   // of the current run
	rng      rand.ChaCha8
}

// Allocate implements experimental.MemoryAllocator: the instance's memory
// is a LinearMemory that refuses to grow past the run's limit.
func (inst *instance) Allocate(_, maxBytes uint64) experimental.LinearMemory {
	inst.mem.max = maxBytes
	return &inst.mem
}

// LinearMemory backs one linear memory of an instance (wazero's
// experimental.LinearMemory). It enforces the per-run page limit (wazero's
// own limit is the runtime-wide cap) and remembers a refused grow, which
// tells memory_limit from other failures. On Linux the memory is a private
// anonymous mapping that reserves the run's limit up front, so growing
// never copies and closing an instance gives its pages back at once;
// elsewhere it is a Go slice. Package extism backs the memories of its
// plugin instances (the plugin's and Extism's kernel's) with it too.
type LinearMemory struct {
	buf     []byte // the memory: len is its size, cap what is reserved
	mapping []byte // the mmap behind buf, nil if buf is in the Go heap
	max     uint64 // bytes: the module's maximum or the runtime's cap
	limit   uint64 // bytes: the current run's limit
	refused bool
}

// NewLinearMemory returns the memory for an experimental.MemoryAllocator's
// Allocate(_, maxBytes), limited to limit bytes until SetLimit.
func NewLinearMemory(maxBytes, limit uint64) *LinearMemory {
	return &LinearMemory{max: maxBytes, limit: limit}
}

// SetLimit sets the limit of the run about to start, in bytes, and
// forgets a grow refused in an earlier run.
func (lm *LinearMemory) SetLimit(limit uint64) {
	lm.limit, lm.refused = limit, false
}

// Refused reports whether a grow was refused (or the initial size was over
// the limit) since SetLimit.
func (lm *LinearMemory) Refused() bool { return lm.refused }

// Size is the memory's size in bytes.
func (lm *LinearMemory) Size() uint64 { return uint64(len(lm.buf)) }

// AtLimit reports whether the memory has reached the run's limit.
func (lm *LinearMemory) AtLimit() bool { return uint64(len(lm.buf)) >= lm.limit }

// Holds reports whether b is a view of this memory (starts inside it).
func (lm *LinearMemory) Holds(b []byte) bool {
	return len(b) > 0 && len(lm.buf) > 0 && &b[0] == &lm.buf[0]
}

// reservedBytes is the memory reserved for linear memories, in all
// runtimes: mapped (on Linux) or allocated in the Go heap.
var reservedBytes atomic.Int64

// Reallocate implements experimental.LinearMemory.
func (lm *LinearMemory) Reallocate(size uint64) []byte {
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
		lm.Release()
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
	lm.Release()
	lm.buf = nb
	reservedBytes.Add(int64(cap(nb)))
	return nb
}

// Free implements experimental.LinearMemory. It does nothing: wazero may
// call it while the guest's call is unwinding, so the owner releases the
// memory itself once the instance is closed (Release).
func (lm *LinearMemory) Free() {}

// Release returns the memory to the system. Call it only once the module
// that used it is closed.
func (lm *LinearMemory) Release() {
	if lm.mapping != nil {
		reservedBytes.Add(-int64(len(lm.mapping)))
		UnmapMemory(lm.mapping)
		lm.mapping = nil
	} else {
		reservedBytes.Add(-int64(cap(lm.buf)))
	}
	lm.buf = nil
}

func (lm *LinearMemory) pages() uint64 { return uint64(len(lm.buf)) / pageSize }

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
		if inst, ok := r.idle.Take(key); ok {
			r.mu.Unlock()
			if inst.mem.Size() > uint64(lim.MemoryPages)*pageSize {
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
	inst.st = Restorable{Mem: &inst.mem, Shift: m.writeShift}
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
		inst.st.Dirty, _ = mod.ExportedGlobal(meter.DirtyExportName).(api.MutableGlobal)
		ok = ok && inst.st.Dirty != nil
	}
	for _, g := range m.globals {
		mg, isMutable := mod.ExportedGlobal(g.Name).(api.MutableGlobal)
		ok = ok && isMutable
		inst.st.Globals = append(inst.st.Globals, mg)
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
	inst.st.ClearDirty()                  // the instance is as the snapshot

	if m.fresh == "" {
		m.snapMu.Lock()
		if m.snap == nil {
			m.snap = inst.st.Snapshot()
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
	return s != nil && inst.st.Restore(s)
}

// release returns an instance to its pool after a run that may be reused,
// restored to its snapshot; otherwise, or if the pool is full, it closes
// the instance.
func (r *Runtime) release(inst *instance, reusable bool) {
	if !reusable || r.cfg.PoolSize == 0 || !inst.restore() {
		r.discard(inst)
		return
	}
	r.mu.Lock()
	if r.closed || inst.mod.evicted {
		r.mu.Unlock()
		r.discard(inst)
		return
	}
	evicted, kept := r.idle.Put(inst.key, inst)
	r.mu.Unlock()
	if !kept {
		r.discard(inst)
	}
	for _, old := range evicted {
		r.discard(old)
	}
}

// close closes the wazero module and releases the memory.
func (inst *instance) close() {
	if inst.m != nil {
		_ = inst.m.Close(context.Background())
	}
	inst.mem.Release()
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

// IdlePool keeps idle instances by key (a module and a tenant): at most
// PerKey of one key, handed out most recently released first, and at most
// Total in all, beyond which the least recently released of any key goes.
// It is not safe for concurrent use: its owner holds a lock around it.
// Package extism pools its plugin instances in one too.
type IdlePool[K comparable, V any] struct {
	PerKey, Total int

	byKey      map[K][]*idleEntry[K, V] // most recently released last
	head, tail *idleEntry[K, V]         // of all keys, most recent first
	n          int
}

type idleEntry[K comparable, V any] struct {
	key        K
	v          V
	prev, next *idleEntry[K, V]
}

// Len is the number of idle instances.
func (p *IdlePool[K, V]) Len() int { return p.n }

// KeyLen is the number of idle instances of key.
func (p *IdlePool[K, V]) KeyLen(key K) int { return len(p.byKey[key]) }

// Take removes and returns the most recently released instance of key.
func (p *IdlePool[K, V]) Take(key K) (V, bool) {
	es := p.byKey[key]
	if len(es) == 0 {
		var zero V
		return zero, false
	}
	e := es[len(es)-1]
	p.dropKeyEntry(key, len(es)-1)
	return p.remove(e), true
}

// Put adds an instance of key. It reports false, keeping nothing, if key
// has PerKey instances already; otherwise it returns the instances evicted
// beyond Total, for the caller to close.
func (p *IdlePool[K, V]) Put(key K, v V) (evicted []V, kept bool) {
	if len(p.byKey[key]) >= p.PerKey {
		return nil, false
	}
	if p.byKey == nil {
		p.byKey = map[K][]*idleEntry[K, V]{}
	}
	e := &idleEntry[K, V]{key: key, v: v, next: p.head}
	if p.head != nil {
		p.head.prev = e
	} else {
		p.tail = e
	}
	p.head = e
	p.n++
	p.byKey[key] = append(p.byKey[key], e)
	for p.n > p.Total {
		old := p.tail
		es := p.byKey[old.key]
		for i, x := range es {
			if x == old {
				p.dropKeyEntry(old.key, i)
				break
			}
		}
		evicted = append(evicted, p.remove(old))
	}
	return evicted, true
}

// Remove takes out every instance whose key matches and returns them.
func (p *IdlePool[K, V]) Remove(match func(K) bool) []V {
	var out []V
	for key, es := range p.byKey {
		if !match(key) {
			continue
		}
		for _, e := range es {
			out = append(out, p.remove(e))
		}
		delete(p.byKey, key)
	}
	return out
}

// dropKeyEntry deletes entry i of key's list.
func (p *IdlePool[K, V]) dropKeyEntry(key K, i int) {
	es := p.byKey[key]
	es = append(es[:i], es[i+1:]...)
	if len(es) == 0 {
		delete(p.byKey, key)
		return
	}
	p.byKey[key] = es
}

// remove unlinks e from the list of all keys and returns its instance.
func (p *IdlePool[K, V]) remove(e *idleEntry[K, V]) V {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		p.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		p.tail = e.prev
	}
	p.n--
	return e.v
}
