package sandbox

import (
	"context"
	"math/bits"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// Restoring an instance to its snapshot after a run copies only the chunks
// of memory the run may have written: the metering records the guest's
// writes (meter.Options.TrackWrites) in a 64-bit mask, chunk c at bit c mod
// 64, and the host adds what it writes itself (markHost, from view and
// mem). A no-op run of a one-page module restores a few 4 KiB chunks
// instead of 64 KiB (2.5 µs here).
//
// wazero's own WASI functions write guest memory behind our back: a call
// to one that may write (fd_fdstat_get, args_get, ...) marks the whole
// memory (untrackedWASI, a function listener on those functions only).
// These are the WASI functions that need no listener: the sandbox's own
// implementations, which write through runState.mem, and wazero's that
// write nothing.
var trackedWASI = map[string]bool{
	// overrideWASI
	"clock_time_get": true, "random_get": true, "poll_oneoff": true, "fd_write": true,
	"fd_read": true, "fd_pread": true, "fd_pwrite": true, "fd_close": true,
	"fd_fdstat_set_flags": true, "fd_renumber": true,
	// no out-parameters
	"proc_exit": true, "proc_raise": true, "sched_yield": true, "fd_advise": true,
	"fd_allocate": true, "fd_datasync": true, "fd_sync": true, "fd_filestat_set_size": true,
	"fd_filestat_set_times": true, "path_create_directory": true, "path_remove_directory": true,
	"path_unlink_file": true, "path_rename": true, "path_link": true, "path_symlink": true,
	"path_filestat_set_times": true, "sock_shutdown": true,
}

// WriteShift picks the chunk size of write tracking for a memory that
// starts at minPages: 64 chunks cover it, and a chunk is at least 4 KiB.
func WriteShift(minPages uint64) uint8 {
	size := max(1, min(minPages, 65536)) * pageSize
	return uint8(min(32, max(12, bits.Len64(size/64-1))))
}

func writeShift(minPages uint64) uint8 { return WriteShift(minPages) }

// Restorable is what a restore resets in one instantiated module: its linear
// memory and the mutable globals the host reaches, with the record of what
// was written since they were last as their Snapshot. Package extism
// restores its plugins and Extism's kernel with it.
type Restorable struct {
	Mem     *LinearMemory // nil: the module has no memory
	Globals []api.MutableGlobal
	// Dirty is the guest's own record of its writes (the global of
	// meter.Options.TrackWrites), nil if it keeps none: then only what
	// the host marks (MarkHost) counts. Shift is log2 of the chunk size
	// (WriteShift); 0 means writes are not tracked at all and a restore
	// copies the whole memory.
	Dirty     api.MutableGlobal
	Shift     uint8
	hostDirty uint64
}

// Snapshot is the pristine state of a module's instances: memory and
// globals, taken once and restored after every run.
type Snapshot struct {
	mem     []byte
	globals []uint64
}

// Snapshot copies the memory and globals as they are now.
func (r *Restorable) Snapshot() *Snapshot {
	s := &Snapshot{}
	if r.Mem != nil {
		s.mem = append([]byte(nil), r.Mem.buf...)
	}
	for _, g := range r.Globals {
		s.globals = append(s.globals, g.Get())
	}
	return s
}

// Restore resets memory and globals to s and starts a new record of
// writes. It reports false, changing nothing, if it cannot: the memory is
// not the snapshot's size (it grew), or the globals are not the
// snapshot's.
func (r *Restorable) Restore(s *Snapshot) bool {
	var size int
	if r.Mem != nil {
		size = len(r.Mem.buf)
	}
	if size != len(s.mem) || len(r.Globals) != len(s.globals) {
		return false
	}
	if r.Mem != nil {
		r.restoreMemory(s.mem)
	}
	for i, g := range r.Globals {
		g.Set(s.globals[i])
	}
	r.ClearDirty()
	return true
}

// untrackedWASI is the function listener factory of the WASI host module:
// it listens to the functions that write guest memory behind the host's
// back, and marks all of it when one is called.
type untrackedWASI struct{}

func (untrackedWASI) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	if trackedWASI[def.Name()] {
		return nil
	}
	return untrackedWASI{}
}

func (untrackedWASI) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	if rs, ok := ctx.Value(runKey{}).(*runState); ok {
		rs.inst.st.MarkAll()
	}
}

func (untrackedWASI) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (untrackedWASI) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

// MarkHost records that the host wrote (or handed the guest a view of)
// memory [lo, hi).
func (r *Restorable) MarkHost(lo, hi uint64) {
	if hi <= lo || r.Shift == 0 {
		return
	}
	s := r.Shift
	c0, c1 := lo>>s, (hi-1)>>s
	if c1-c0 >= 63 {
		r.hostDirty = ^uint64(0)
		return
	}
	r.hostDirty |= bits.RotateLeft64(uint64(2)<<(c1-c0)-1, int(c0%64))
}

// MarkAll records that anything may have been written.
func (r *Restorable) MarkAll() { r.hostDirty = ^uint64(0) }

// restoreMemory copies the snapshot over the memory: only the chunks
// written since the last restore when writes are tracked, everything
// otherwise.
func (r *Restorable) restoreMemory(snap []byte) {
	mem := r.Mem.buf
	if r.Shift == 0 {
		copy(mem, snap)
		return
	}
	s := r.Shift
	mask := r.hostDirty
	if r.Dirty != nil {
		mask |= r.Dirty.Get()
	}
	for b := mask; b != 0; b &= b - 1 {
		for c := uint64(bits.TrailingZeros64(b)); c<<s < uint64(len(mem)); c += 64 {
			lo := c << s
			hi := min(lo+1<<s, uint64(len(mem)))
			copy(mem[lo:hi], snap[lo:hi])
		}
	}
}

// ClearDirty starts a new record of writes: the memory is as the snapshot.
func (r *Restorable) ClearDirty() {
	if r.Dirty != nil {
		r.Dirty.Set(0)
	}
	r.hostDirty = 0
}
