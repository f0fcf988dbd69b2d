package extism

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	extism "github.com/extism/go-sdk"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/meter"
)

const (
	pageSize   = 65536
	maxMessage = 1024
)

type runKey struct{}

// errAbort is the panic value with which a host function ends a run; the
// reason is in runState.abortErr.
var errAbort = errors.New("extism: run aborted by the host")

// runState is everything the host functions of one run need.
type runState struct {
	ctx  context.Context // the wall deadline; capability calls derive from it
	lim  sandbox.Limits
	tier abi.Tier
	caps sandbox.Capabilities
	env  map[string]string

	fuel     sandbox.Fuel // on the plugin's counter, once `run` is entered
	depth    int          // nesting of `run`
	returned bool         // `run` returned (rather than trapped)

	inst      *instance // the run's
	logs      logSink
	hostCalls int
	spans     int
	locks     []string
	denied    string
	abortErr  *abi.Error

	start int64
	rng   *rand.ChaCha8
	rec   sandbox.Recording
}

func newRunState(req sandbox.Request, lim sandbox.Limits) *runState {
	clock := req.Clock
	if clock == nil {
		clock = time.Now
	}
	start := clock()
	tier := req.Tier
	if tier == "" {
		tier = abi.TierFunction
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:8], req.Seed)
	copy(seed[8:], "logline extism run")
	return &runState{
		lim:   lim,
		tier:  tier,
		caps:  req.Caps,
		env:   req.Env,
		logs:  logSink{limit: lim.LogBytes},
		start: start.UnixNano(),
		rng:   rand.NewChaCha8(seed),
		rec:   sandbox.Recording{Seed: req.Seed, Start: start},
	}
}

func (rs *runState) memRefused() bool {
	for _, m := range rs.inst.mems {
		if m.Refused() {
			return true
		}
	}
	return false
}

func (rs *runState) memAtLimit() bool {
	for _, m := range rs.inst.mems {
		if m.AtLimit() {
			return true
		}
	}
	return false
}

func (rs *runState) memoryError(what string) *abi.Error {
	pages := uint64(rs.lim.MemoryPages)
	return &abi.Error{Code: abi.CodeMemoryLimit,
		Message: clip(fmt.Sprintf("memory limit of %d pages (%d KiB): %s", pages, pages*64, what))}
}

// abort ends the run with the given error.
func (rs *runState) abort(code, format string, args ...any) {
	rs.abortErr = &abi.Error{Code: code, Message: clip(fmt.Sprintf(format, args...))}
	panic(errAbort)
}

// charge burns fuel for work the host does on the guest's behalf.
func (rs *runState) charge(n int64) {
	if rs.fuel.Counter == nil || n <= 0 { // a start function, before the host has the counter
		return
	}
	if !rs.fuel.Draw(n) {
		rs.abort(abi.CodeFuelExhausted, "fuel limit of %d exhausted (in a host call)", rs.lim.Fuel)
	}
}

// errOutOfFuel is the panic with which the refuel import ends a run whose
// fuel is gone; classify sees the overdrawn counter.
var errOutOfFuel = errors.New("extism: fuel exhausted")

// refuel is the meter's refuel import (meter.Options.Refuel): where the
// host checks the wall clock and hands out the next slice of fuel.
func refuel(ctx context.Context, _ *extism.CurrentPlugin, _ []uint64) {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil {
		panic(errors.New("extism: refuel called outside a run"))
	}
	if e := rs.timeoutError(); e != nil {
		rs.abortErr = e
		panic(errAbort)
	}
	if rs.fuel.Counter == nil || !rs.fuel.Draw(0) {
		// Without the counter engaged: a start function that used up the
		// initial fuel.
		panic(errOutOfFuel)
	}
}

// Run calls the plugin's `run` once, on a pristine instance (pooled, or
// new). It never panics and never fails the host: everything that goes
// wrong is in Result.Err.
func (r *Runtime) Run(ctx context.Context, p *Plugin, req sandbox.Request) sandbox.Result {
	start := time.Now()
	res := r.run(ctx, p, req)
	res.Duration = time.Since(start)
	return res
}

func (r *Runtime) run(ctx context.Context, p *Plugin, req sandbox.Request) (res sandbox.Result) {
	if p == nil || p.r != r {
		return sandbox.Result{Err: &abi.Error{Code: abi.CodeInvalidModule, Message: "plugin not loaded by this runtime"}}
	}
	lim := req.Limits.WithDefaults(r.cfg.MaxMemoryPages)
	rs := newRunState(req, lim)
	wallCtx, cancel := context.WithTimeout(ctx, lim.Wall)
	defer cancel()
	rs.ctx = wallCtx
	callCtx := context.WithValue(wallCtx, runKey{}, rs)
	reusable := false
	defer func() {
		// Whatever happened: release the locks, hand back the logs,
		// then pool the instance (restored) or close it.
		r.unlockAll(ctx, rs)
		res.Logs = rs.logs.finish()
		res.Recorded = rs.rec
		res.HostCalls = rs.hostCalls
		if rs.inst != nil {
			r.release(rs.inst, reusable)
		}
	}()

	inst, warm, e := r.acquire(callCtx, rs, p, req.Tenant)
	if e != nil {
		res.Err = e
		return res
	}
	res.Warm = warm
	inst.ext.SetLogger(func(level extism.LogLevel, msg string) {
		rs.logs.add(extismLevel(level), "extism", []byte(msg))
	})

	var rc uint32
	var out []byte
	var callErr error
	if warm {
		rc, out, callErr = inst.warmCall(callCtx, req.Input)
	} else {
		rc, out, callErr = inst.ext.CallWithContext(callCtx, abi.Entry, req.Input)
	}
	var remaining int64
	fuelKnown := rs.fuel.Counter != nil
	if fuelKnown {
		remaining = rs.fuel.Left()
		res.FuelUsed = min(max(lim.Fuel-remaining, 0), lim.Fuel)
	}
	pluginErr := ""
	if callErr != nil && !rs.returned && rs.abortErr == nil && wallCtx.Err() == nil {
		// A trap: the plugin may have set an error first (a PDK's
		// abort or panic handler).
		pluginErr = inst.ext.GetErrorWithContext(wallCtx)
	}
	res.Err = rs.classify(callErr, rc, remaining, fuelKnown, pluginErr)
	if res.Err == nil && len(out) > lim.OutputBytes {
		res.Err = &abi.Error{Code: abi.CodeOutputLimit,
			Message: fmt.Sprintf("output of %d bytes exceeds the limit of %d bytes", len(out), lim.OutputBytes)}
	}
	if rs.returned && res.Err != nil && res.Err.Code == abi.CodeGuestError && len(out) > lim.OutputBytes {
		// A limit that ends the run decides its code.
		res.Err = &abi.Error{Code: abi.CodeOutputLimit,
			Message: fmt.Sprintf("output of %d bytes exceeds the limit of %d bytes", len(out), lim.OutputBytes)}
	}
	if res.Err == nil {
		res.Output = out
		if res.Output == nil {
			res.Output = []byte{}
		}
	}
	// Only a run that returned from `run` within its limits leaves the
	// instance in a state a restore undoes: a trap or an abort may stop
	// the plugin or the kernel halfway through anything.
	reusable = rs.returned && rs.abortErr == nil && fuelKnown && !meter.Exhausted(remaining) &&
		!rs.memRefused() && wallCtx.Err() == nil
	return res
}

func extismLevel(l extism.LogLevel) int32 {
	switch l {
	case extism.LogLevelTrace, extism.LogLevelDebug:
		return abi.LogDebug
	case extism.LogLevelInfo:
		return abi.LogInfo
	case extism.LogLevelWarn:
		return abi.LogWarn
	}
	return abi.LogError
}

// instanceError classifies a failed instantiation (the Extism kernel, the
// plugin, its start function).
func (rs *runState) instanceError(err error) *abi.Error {
	if rs.abortErr != nil {
		return rs.abortErr
	}
	if e := rs.timeoutError(); e != nil {
		return e
	}
	what := "instantiating the plugin: " + firstLine(err.Error())
	if rs.memRefused() {
		return rs.memoryError(what)
	}
	return &abi.Error{Code: abi.CodeTrap, Message: clip(what)}
}

func (rs *runState) timeoutError() *abi.Error {
	switch {
	case rs.ctx.Err() == nil:
		return nil
	case errors.Is(rs.ctx.Err(), context.Canceled):
		return &abi.Error{Code: abi.CodeTimeout, Message: "run canceled by the host"}
	}
	return &abi.Error{Code: abi.CodeTimeout, Message: fmt.Sprintf("wall clock limit of %s passed", rs.lim.Wall)}
}

// classify maps how the call ended to a run error (nil: it completed),
// with the precedence of package sandbox.
func (rs *runState) classify(err error, rc uint32, remaining int64, fuelKnown bool, pluginErr string) *abi.Error {
	if rs.abortErr != nil {
		return rs.abortErr
	}
	if err != nil {
		if e := rs.timeoutError(); e != nil {
			return e
		}
	}
	exhausted := fuelKnown && meter.Exhausted(remaining)
	if err == nil && !fuelKnown {
		// Fail closed: the counter was never set, so the run was not
		// metered as it must be.
		return &abi.Error{Code: abi.CodeTrap, Message: "the plugin's fuel counter was not engaged"}
	}
	if err == nil && rc == 0 && !exhausted {
		return nil
	}
	// rs.returned: `run` returned, so err (if any) is the plugin's
	// error message, not a trap.
	guest := rs.returned || err == nil || pluginErr != ""
	var what string
	switch {
	case exhausted:
		what = fmt.Sprintf("fuel limit of %d exhausted", rs.lim.Fuel)
	case rs.returned && err != nil:
		what = fmt.Sprintf("run returned %d: %s", int32(rc), firstLine(err.Error()))
	case err == nil:
		what = fmt.Sprintf("run returned %d", int32(rc))
	case pluginErr != "":
		what = pluginErr + " (then: " + firstLine(err.Error()) + ")"
	default:
		what = firstLine(err.Error())
	}
	what = clip(what)
	if rs.memRefused() {
		return rs.memoryError("memory.grow refused, then " + what)
	}
	if exhausted {
		return &abi.Error{Code: abi.CodeFuelExhausted, Message: what}
	}
	if !guest && rs.memAtLimit() {
		return rs.memoryError("memory at the limit, then " + what)
	}
	if rs.denied != "" {
		return &abi.Error{Code: abi.CodeCapabilityDenied, Message: clip(rs.denied + "; then the guest failed: " + what)}
	}
	if guest {
		return &abi.Error{Code: abi.CodeGuestError, Message: what}
	}
	return &abi.Error{Code: abi.CodeTrap, Message: what}
}

// unlockAll releases the locks the run still holds, whatever happened.
func (r *Runtime) unlockAll(ctx context.Context, rs *runState) {
	if len(rs.locks) == 0 {
		return
	}
	for _, note := range sandbox.UnlockAll(ctx, rs.caps, rs.locks, rs.lim.HostCallTimeout) {
		rs.logs.add(abi.LogWarn, "host", []byte(note))
	}
	rs.locks = nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(strings.TrimSuffix(s, "(recovered by wazero)"))
}

func clip(s string) string {
	if len(s) > maxMessage {
		return s[:maxMessage] + "…"
	}
	return s
}

// logSink collects a run's log lines within the byte limit; every line
// costs its length plus one.
type logSink struct {
	limit   int
	used    int
	dropped int64
	lines   []sandbox.LogLine
}

func (s *logSink) add(level int32, source string, text []byte) {
	room := s.limit - s.used - 1
	if room < 0 {
		s.dropped += int64(len(text)) + 1
		return
	}
	if len(text) > room {
		s.dropped += int64(len(text) - room)
		text = text[:room]
	}
	s.used += len(text) + 1
	s.lines = append(s.lines, sandbox.LogLine{Level: level, Source: source, Text: string(text)})
}

func (s *logSink) finish() []sandbox.LogLine {
	if s.dropped > 0 {
		s.lines = append(s.lines, sandbox.LogLine{Level: abi.LogWarn, Source: "host",
			Text: fmt.Sprintf("log truncated: %d bytes beyond the limit of %d dropped", s.dropped, s.limit)})
		s.dropped = 0
	}
	return s.lines
}
