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

// writeShift picks the chunk size for a module whose memory starts at
// minPages: 64 chunks cover it, and a chunk is at least 4 KiB.
func writeShift(minPages uint64) uint8 {
	size := max(1, min(minPages, 65536)) * pageSize
	return uint8(min(32, max(12, bits.Len64(size/64-1))))
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
		rs.inst.hostDirty = ^uint64(0)
	}
}

func (untrackedWASI) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (untrackedWASI) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

// markHost records that the host wrote (or handed the guest a view of)
// guest memory [lo, hi).
func (inst *instance) markHost(lo, hi uint64) {
	if hi <= lo || inst.mod.writeShift == 0 {
		return
	}
	s := inst.mod.writeShift
	c0, c1 := lo>>s, (hi-1)>>s
	if c1-c0 >= 63 {
		inst.hostDirty = ^uint64(0)
		return
	}
	inst.hostDirty |= bits.RotateLeft64(uint64(2)<<(c1-c0)-1, int(c0%64))
}

// restoreMemory copies the snapshot over the instance's memory: only the
// chunks written since the last restore when the module is tracked,
// everything otherwise.
func (inst *instance) restoreMemory(snap []byte) {
	mem := inst.mem.buf
	if inst.dirty == nil {
		copy(mem, snap)
		return
	}
	s := inst.mod.writeShift
	mask := inst.dirty.Get() | inst.hostDirty
	for b := mask; b != 0; b &= b - 1 {
		for c := uint64(bits.TrailingZeros64(b)); c<<s < uint64(len(mem)); c += 64 {
			lo := c << s
			hi := min(lo+1<<s, uint64(len(mem)))
			copy(mem[lo:hi], snap[lo:hi])
		}
	}
	inst.clearDirty()
}

// clearDirty starts a new record of writes: the instance is as its
// snapshot.
func (inst *instance) clearDirty() {
	if inst.dirty != nil {
		inst.dirty.Set(0)
	}
	inst.hostDirty = 0
}
