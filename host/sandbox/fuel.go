package sandbox

import (
	"context"
	"errors"

	"github.com/tetratelabs/wazero/api"
)

// FuelSlice is the most fuel the guest's counter holds at a time; the rest
// of a run's fuel waits in the host's budget (Fuel). When a check of the metering
// finds the counter overdrawn, the guest calls the refuel import
// (meter.Options.Refuel), which moves the next slice over. That call is the
// only way back to Go for a guest that computes without calling the host:
// there the Go runtime can stop the goroutine for a garbage collection
// (compiled wasm cannot be preempted), and the host looks at the run's wall
// clock and context. A slice of 2^20 is about a millisecond of guest code.
const FuelSlice = 1 << 20

// errOutOfFuel is the panic with which the refuel import ends a run whose
// fuel is gone; classify sees the overdrawn counter.
var errOutOfFuel = errors.New("sandbox: fuel exhausted")

// Fuel is the fuel of one call into a metered guest: the guest's counter
// (the meter's global), which holds at most FuelSlice, and the budget the
// host holds back. Package extism runs its plugins on it too.
type Fuel struct {
	Counter api.MutableGlobal // nil until Start
	budget  int64
}

// Start gives the call limit units of fuel: the first slice in counter, the
// rest in the budget.
func (f *Fuel) Start(counter api.MutableGlobal, limit int64) {
	first := min(limit, FuelSlice)
	f.Counter, f.budget = counter, limit-first
	counter.Set(uint64(first))
}

// Left is the fuel the call has not used: the counter plus the budget. It
// is negative if the guest ran out.
func (f *Fuel) Left() int64 {
	return int64(f.Counter.Get()) + f.budget
}

// Draw takes n units from the counter, topping it up from the budget to a
// slice when it goes below zero, and reports whether it is not overdrawn.
// Draw(0) is what the refuel import does.
func (f *Fuel) Draw(n int64) bool {
	v := int64(f.Counter.Get()) - n
	if v < 0 {
		add := min(f.budget, FuelSlice-v)
		f.budget -= add
		v += add
	}
	f.Counter.Set(uint64(v))
	return v >= 0
}

// hostRefuel is the refuel import: a safepoint, the wall clock check, and
// the next slice of fuel.
func hostRefuel(ctx context.Context, _ api.Module, _ []uint64) {
	rs := state(ctx)
	if cause := rs.expired(); cause != nil {
		rs.abortErr = rs.timeoutError(cause, "")
		panic(errAbort)
	}
	if rs.fuel.Counter == nil || !rs.fuel.Draw(0) {
		panic(errOutOfFuel)
	}
}

// runCtx is the context of a run's call into the guest: the embedder's,
// carrying the run's state for the host functions. It lives in the
// instance, so a run allocates none.
type runCtx struct {
	context.Context
	rs *runState
}

func (c *runCtx) Value(key any) any {
	if key == (runKey{}) {
		return c.rs
	}
	return c.Context.Value(key)
}
