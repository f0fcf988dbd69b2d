package sandbox

import (
	"context"
	"errors"

	"github.com/tetratelabs/wazero/api"
)

// FuelSlice is the most fuel the guest's counter holds at a time; the rest
// of a run's fuel waits in runState.budget. When a check of the metering
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

// setFuel gives a call into the guest limit units of fuel: the first slice
// in the counter, the rest in the budget.
func (rs *runState) setFuel(limit int64) {
	first := min(limit, FuelSlice)
	rs.budget = limit - first
	rs.inst.fuel.Set(uint64(first))
}

// fuelLeft is the fuel the call has not used: the counter plus the budget.
// It is negative if the guest ran out.
func (rs *runState) fuelLeft() int64 {
	return int64(rs.inst.fuel.Get()) + rs.budget
}

// draw takes n units from the counter, topping it up from the budget to a
// slice when it goes below zero, and reports whether it is not overdrawn.
func (rs *runState) draw(n int64) bool {
	f := rs.inst.fuel
	v := int64(f.Get()) - n
	if v < 0 {
		add := min(rs.budget, FuelSlice-v)
		rs.budget -= add
		v += add
	}
	f.Set(uint64(v))
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
	if !rs.draw(0) {
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
