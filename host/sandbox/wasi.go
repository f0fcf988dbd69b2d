package sandbox

import (
	"context"
	"encoding/binary"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// WASI errno values (wasi_snapshot_preview1).
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNotsup  = 58
	errnoSpipe   = 70
)

// Fuel of the sandbox's WASI functions: a base per call plus their
// arguments' size, so that a guest cannot make the host loop over millions
// of iovecs or subscriptions for the price of one call.
const (
	wasiCallFuel = 50
	perIovecFuel = 4
	perSubFuel   = 16
)

var le = binary.LittleEndian

// overrideWASI replaces the WASI functions whose behaviour must be the
// sandbox's (see the package documentation). The rest stay wazero's.
func overrideWASI(b wazero.HostModuleBuilder) {
	def := func(name string, f api.GoModuleFunc, params ...api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(f, params, []api.ValueType{i32}).WithName(name).Export(name)
	}
	def("clock_time_get", wasiClockTimeGet, i32, i64, i32)
	def("random_get", wasiRandomGet, i32, i32)
	def("poll_oneoff", wasiPollOneoff, i32, i32, i32, i32)
	def("fd_write", wasiFdWrite, i32, i32, i32, i32)
	def("fd_read", wasiFdRead, i32, i32, i32, i32)
	def("fd_pread", wasiStdioSpipe, i32, i32, i32, i64, i32)
	def("fd_pwrite", wasiStdioSpipe, i32, i32, i32, i64, i32)
	def("fd_close", wasiStdioKeep, i32)
	def("fd_fdstat_set_flags", wasiStdioKeep, i32, i32)
	def("fd_renumber", wasiRenumber, i32, i32)
}

// wasiEnter charges a WASI call's base fuel.
func wasiEnter(ctx context.Context, extra int64) *runState {
	rs := state(ctx)
	rs.charge(wasiCallFuel + extra)
	return rs
}

// mem returns guest memory [ptr, ptr+n) or false: WASI reports a bad
// pointer with EFAULT rather than a trap.
func (rs *runState) mem(ptr uint32, n uint64) ([]byte, bool) {
	buf := rs.inst.mem.buf
	end := uint64(ptr) + n
	if end > uint64(len(buf)) {
		return nil, false
	}
	rs.inst.st.MarkHost(uint64(ptr), end)
	return buf[ptr:end:end], true
}

func errno(stack []uint64, e uint32) { stack[0] = uint64(e) }

func wasiClockTimeGet(ctx context.Context, _ api.Module, stack []uint64) {
	rs := wasiEnter(ctx, 0)
	var v int64
	switch uint32(stack[0]) {
	case 0: // realtime
		v = rs.wall()
	case 1: // monotonic
		v = rs.mono()
	default:
		errno(stack, errnoInval)
		return
	}
	out, ok := rs.mem(uint32(stack[2]), 8)
	if !ok {
		errno(stack, errnoFault)
		return
	}
	le.PutUint64(out, uint64(v))
	errno(stack, errnoSuccess)
}

func wasiRandomGet(ctx context.Context, _ api.Module, stack []uint64) {
	n := uint64(uint32(stack[1]))
	rs := wasiEnter(ctx, int64(n)>>hashShift)
	dst, ok := rs.mem(uint32(stack[0]), n)
	if !ok {
		errno(stack, errnoFault)
		return
	}
	rs.random(dst)
	rs.recordRandom(dst)
	errno(stack, errnoSuccess)
}

// wasiFdWrite sends stdout and stderr to the run's capped log; there is no
// other descriptor.
func wasiFdWrite(ctx context.Context, _ api.Module, stack []uint64) {
	fd := uint32(stack[0])
	iovsLen := uint64(uint32(stack[2]))
	rs := wasiEnter(ctx, int64(iovsLen)*perIovecFuel)
	if fd != 1 && fd != 2 {
		errno(stack, errnoBadf)
		return
	}
	iovs, ok := rs.mem(uint32(stack[1]), iovsLen*8)
	if !ok {
		errno(stack, errnoFault)
		return
	}
	var total uint64
	for i := uint64(0); i < iovsLen; i++ {
		ptr, n := le.Uint32(iovs[i*8:]), le.Uint32(iovs[i*8+4:])
		if _, ok := rs.mem(ptr, uint64(n)); !ok {
			errno(stack, errnoFault)
			return
		}
		total += uint64(n)
	}
	if total > 1<<31 {
		errno(stack, errnoInval)
		return
	}
	rs.charge(int64(total) >> copyShift)
	for i := uint64(0); i < iovsLen; i++ {
		ptr, n := le.Uint32(iovs[i*8:]), le.Uint32(iovs[i*8+4:])
		b, _ := rs.mem(ptr, uint64(n))
		rs.logs.stream(int(fd), b)
	}
	out, ok := rs.mem(uint32(stack[3]), 4)
	if !ok {
		errno(stack, errnoFault)
		return
	}
	le.PutUint32(out, uint32(total))
	errno(stack, errnoSuccess)
}

// wasiFdRead reads the empty stdin: end of file at once.
func wasiFdRead(ctx context.Context, _ api.Module, stack []uint64) {
	rs := wasiEnter(ctx, 0)
	if uint32(stack[0]) != 0 {
		errno(stack, errnoBadf)
		return
	}
	out, ok := rs.mem(uint32(stack[3]), 4)
	if !ok {
		errno(stack, errnoFault)
		return
	}
	le.PutUint32(out, 0)
	errno(stack, errnoSuccess)
}

// wasiStdioSpipe is fd_pread and fd_pwrite: stdio cannot seek, and there is
// no other descriptor.
func wasiStdioSpipe(ctx context.Context, _ api.Module, stack []uint64) {
	wasiEnter(ctx, 0)
	if uint32(stack[0]) <= 2 {
		errno(stack, errnoSpipe)
		return
	}
	errno(stack, errnoBadf)
}

// wasiStdioKeep is fd_close and fd_fdstat_set_flags: on stdio they succeed
// without effect, so that no run changes the descriptors of the next one.
func wasiStdioKeep(ctx context.Context, _ api.Module, stack []uint64) {
	wasiEnter(ctx, 0)
	if uint32(stack[0]) <= 2 {
		errno(stack, errnoSuccess)
		return
	}
	errno(stack, errnoBadf)
}

func wasiRenumber(ctx context.Context, _ api.Module, stack []uint64) {
	wasiEnter(ctx, 0)
	if uint32(stack[0]) <= 2 && uint32(stack[1]) <= 2 {
		errno(stack, errnoNotsup)
		return
	}
	errno(stack, errnoBadf)
}

// Subscription and event layout of poll_oneoff.
const (
	subSize   = 48
	eventSize = 32
	tagClock  = 0
	tagRead   = 1
	tagWrite  = 2
)

// wasiPollOneoff never blocks: stdin is at end of file, stdout and stderr
// are always writable, and clock subscriptions advance the run's virtual
// clock to the earliest timeout instead of sleeping.
func wasiPollOneoff(ctx context.Context, _ api.Module, stack []uint64) {
	nsubs := uint64(uint32(stack[2]))
	rs := wasiEnter(ctx, int64(nsubs)*perSubFuel)
	if nsubs == 0 {
		errno(stack, errnoInval)
		return
	}
	in, ok1 := rs.mem(uint32(stack[0]), nsubs*subSize)
	out, ok2 := rs.mem(uint32(stack[1]), nsubs*eventSize)
	nevents, ok3 := rs.mem(uint32(stack[3]), 4)
	if !ok1 || !ok2 || !ok3 {
		errno(stack, errnoFault)
		return
	}
	// First pass: are there fd events, and the earliest clock timeout.
	fdEvents := false
	var timeout uint64 = 1<<63 - 1
	for i := uint64(0); i < nsubs; i++ {
		sub := in[i*subSize : (i+1)*subSize]
		switch sub[8] {
		case tagClock:
			if t := rs.relTimeout(sub); t < timeout {
				timeout = t
			}
		case tagRead, tagWrite:
			fdEvents = true
		default:
			errno(stack, errnoInval)
			return
		}
	}
	n := uint64(0)
	emit := func(sub []byte, e uint16) {
		ev := out[n*eventSize : (n+1)*eventSize]
		clear(ev)
		copy(ev[0:8], sub[0:8]) // userdata
		le.PutUint16(ev[8:], e)
		ev[10] = sub[8]
		n++
	}
	if !fdEvents {
		rs.sleep(int64(timeout))
	}
	for i := uint64(0); i < nsubs; i++ {
		sub := in[i*subSize : (i+1)*subSize]
		fd := le.Uint32(sub[16:])
		switch sub[8] {
		case tagClock:
			// The earliest subscriptions fire: a relative one waits
			// from the call, an absolute one until its deadline, which
			// the virtual clock has now reached.
			relative := le.Uint16(sub[40:])&1 == 0
			if !fdEvents && (relative && le.Uint64(sub[24:]) <= timeout || !relative && rs.relTimeout(sub) == 0) {
				emit(sub, errnoSuccess)
			}
		case tagRead:
			if fd == 0 {
				emit(sub, errnoSuccess)
			} else {
				emit(sub, errnoBadf)
			}
		case tagWrite:
			if fd == 1 || fd == 2 {
				emit(sub, errnoSuccess)
			} else {
				emit(sub, errnoBadf)
			}
		}
	}
	le.PutUint32(nevents, uint32(n))
	errno(stack, errnoSuccess)
}

// relTimeout returns how long a clock subscription has left to wait, on
// the run's virtual clocks.
func (rs *runState) relTimeout(sub []byte) uint64 {
	id := le.Uint32(sub[16:])
	t := le.Uint64(sub[24:])
	if le.Uint16(sub[40:])&1 == 0 { // relative
		return t
	}
	now := uint64(rs.mono())
	if id == 0 {
		now = uint64(rs.wall())
	}
	if t <= now {
		return 0
	}
	return t - now
}
