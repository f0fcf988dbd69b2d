package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox/meter"
)

// Capabilities is what a kernel may do beyond computation, provided by the
// embedder (the kernels' host, backed by the ledger). The sandbox calls it
// only for runs of abi.TierKernel, after counting the call against
// Limits.HostCalls, with a context that expires after
// Limits.HostCallTimeout. Return a *CallError (see CallErrorf, Denied,
// NotFound, Invalid) to hand the guest a specific code, or an *Error to end
// the run with that Error's code (for what the guest handed over that no
// answer can make right, such as a span the ledger cannot store); any other
// error reaches it as abi.ErrFailed.
type Capabilities interface {
	// SQL runs one read-only SELECT; it returns the JSON of an
	// abi.SQLResult.
	SQL(ctx context.Context, req abi.SQLRequest) ([]byte, error)
	// InsertSpan validates, signs and appends a span given as JSON; it
	// returns the stored span as JSON.
	InsertSpan(ctx context.Context, span []byte) ([]byte, error)
	// CheckSpans tells, for a JSON array of spans, which InsertSpan would
	// refuse, appending nothing: a JSON array with null or an abi.Error per
	// span (abi.InsertRequest.Check).
	CheckSpans(ctx context.Context, spans []byte) ([]byte, error)
	// Lock takes key for ttl; false means another holder has it. Locks
	// still held when the run ends are released with Unlock.
	Lock(ctx context.Context, key string, ttl time.Duration) (bool, error)
	Unlock(ctx context.Context, key string) error
	Exec(ctx context.Context, req abi.ExecRequest) (abi.ExecResult, error)
	HTTP(ctx context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error)
}

// Request is one run of a module.
type Request struct {
	Tenant string   // pools are per tenant: tenants never share an instance
	Tier   abi.Tier // "" is abi.TierFunction
	Input  []byte
	Env    map[string]string // what env() returns; nothing else is visible
	Limits Limits            // zero fields take DefaultLimits
	// Caps may be nil: then every capability call is denied.
	Caps Capabilities
	// Seed seeds random() and WASI random_get.
	Seed uint64
	// Clock gives the run's time, read once when the run starts (nil:
	// time.Now). The guest's clock stands still during the run except for
	// the guest's own sleeps.
	Clock func() time.Time
}

// Result is the outcome of a run.
type Result struct {
	// Output is what the guest last passed to output(); nil unless the run
	// completed (Err == nil).
	Output []byte
	// Err is nil when the run completed: run returned 0. A guest that
	// returns 0 after a denied capability call completes; the denial is
	// in Logs. Its Code is one of abi.Code*.
	Err *abi.Error
	// FuelUsed is the fuel the run burnt (the limit when exhausted).
	FuelUsed  int64
	Duration  time.Duration
	Logs      []LogLine
	HostCalls int
	Recorded  Recording
	// Warm tells that the run used a pooled instance restored from its
	// snapshot rather than a new one.
	Warm bool
}

// LogLine is one line of a run's log.
type LogLine struct {
	Level  int32  // abi.Log*: stdout lines are LogInfo, stderr lines LogError
	Source string // "log" (the log host call), "stdout", "stderr" or "host" (the sandbox's notes)
	Text   string
}

// Recording holds what the guest was handed that does not come from the
// module or the input, so that the run can be replayed: rerun with Seed and
// a Clock that returns Start.
type Recording struct {
	Seed  uint64
	Start time.Time // the clock of the run; the guest saw Start + its own sleeps
	// Now holds the values now() returned, in unix nanoseconds.
	Now []int64
	// Random holds the bytes random() and random_get returned, in order.
	Random []byte
	// Truncated tells that Now or Random reached the recording caps (4096
	// values, 64 KiB); Seed and Start still replay the run.
	Truncated bool
}

// AddNow records a value now() returned, up to the cap of 4096 values;
// beyond it, it sets Truncated.
func (r *Recording) AddNow(v int64) {
	if len(r.Now) < maxRecordNow {
		r.Now = append(r.Now, v)
	} else {
		r.Truncated = true
	}
}

// AddRandom records random bytes handed to the guest, up to the cap of
// 64 KiB; what is beyond it is dropped and sets Truncated.
func (r *Recording) AddRandom(b []byte) {
	room := maxRecordRandom - len(r.Random)
	if len(b) > room {
		b = b[:room]
		r.Truncated = true
	}
	r.Random = append(r.Random, b...)
}

const (
	maxRecordNow    = 4096
	maxRecordRandom = 64 << 10
	maxMessage      = 1024
)

// initEpoch is the clock _initialize sees.
var initEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

type runKey struct{}

// errAbort is the panic value with which a host function ends a run; the
// reason is in runState.abortErr.
var errAbort = errors.New("sandbox: run aborted by the host")

// runState is everything the host functions of one call into a guest
// (a run, or an instance's initialization) need.
type runState struct {
	inst     *instance
	ctx      context.Context // the embedder's; capability calls derive from it
	deadline time.Time       // of the wall clock
	lim      Limits
	tier     abi.Tier
	caps     Capabilities
	init     bool

	input     []byte
	env       map[string]string
	output    []byte
	pending   []byte
	logs      logSink
	hostCalls int
	spans     int
	locks     []string
	fuel      Fuel   // of this call into the guest
	denied    string // the first capability denial, if any
	abortErr  *abi.Error

	start    int64 // unix ns
	slept    int64 // virtual ns slept
	monoBase int64
	seed     [32]byte
	seeded   bool // inst.rng is seeded with seed
	rec      Recording
}

// random fills b from the run's seeded stream.
func (rs *runState) random(b []byte) {
	if !rs.seeded {
		rs.inst.rng.Seed(rs.seed)
		rs.seeded = true
	}
	_, _ = rs.inst.rng.Read(b)
}

func seedBytes(seed uint64, domain string) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:8], seed)
	copy(s[8:], domain)
	return s
}

func newInitState(ctx context.Context, inst *instance, lim Limits) *runState {
	inst.rs = runState{
		inst:     inst,
		ctx:      ctx,
		lim:      lim,
		tier:     abi.TierFunction,
		init:     true,
		logs:     logSink{limit: lim.LogBytes},
		start:    initEpoch,
		monoBase: 1_000_000_000,
		seed:     seedBytes(0, "logline sandbox init"),
	}
	return &inst.rs
}

func newRunState(ctx context.Context, inst *instance, req Request, lim Limits) *runState {
	clock := req.Clock
	if clock == nil {
		clock = time.Now
	}
	start := clock()
	tier := req.Tier
	if tier == "" {
		tier = abi.TierFunction
	}
	inst.rs = runState{
		inst:     inst,
		ctx:      ctx,
		lim:      lim,
		tier:     tier,
		caps:     req.Caps,
		input:    req.Input,
		env:      req.Env,
		logs:     logSink{limit: lim.LogBytes},
		start:    start.UnixNano(),
		monoBase: inst.monoBase,
		seed:     seedBytes(req.Seed, "logline sandbox run"),
		rec:      Recording{Seed: req.Seed, Start: start},
	}
	return &inst.rs
}

// expired returns why the run must stop now: its wall deadline passed, or
// the embedder's context ended.
func (rs *runState) expired() error {
	if err := rs.ctx.Err(); err != nil {
		return err
	}
	if !time.Now().Before(rs.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// timeoutError describes an expired run.
func (rs *runState) timeoutError(cause error, during string) *abi.Error {
	if during != "" {
		during = " during " + during
	}
	if errors.Is(cause, context.Canceled) {
		return &abi.Error{Code: abi.CodeTimeout, Message: "run canceled by the host" + during}
	}
	return &abi.Error{Code: abi.CodeTimeout, Message: fmt.Sprintf("wall clock limit of %s passed%s", rs.lim.Wall, during)}
}

func (rs *runState) wall() int64 { return rs.start + rs.slept }
func (rs *runState) mono() int64 { return rs.monoBase + rs.slept }

func (rs *runState) sleep(ns int64) {
	if ns > 0 {
		rs.slept = min(rs.slept+min(ns, 1<<62), 1<<62)
	}
}

func (rs *runState) recordNow(v int64) {
	if rs.init {
		return
	}
	rs.rec.AddNow(v)
}

func (rs *runState) recordRandom(b []byte) {
	if rs.init {
		return
	}
	rs.rec.AddRandom(b)
}

// abort ends the run with the given error.
func (rs *runState) abort(code, format string, args ...any) {
	rs.abortErr = &abi.Error{Code: code, Message: fmt.Sprintf(format, args...)}
	panic(errAbort)
}

// charge burns fuel for work the host does on the guest's behalf; the
// guest's metering reloads the counter after every call.
func (rs *runState) charge(n int64) {
	if rs.fuel.Counter == nil || n <= 0 { // a start function, before the host has the counter
		return
	}
	if !rs.fuel.Draw(n) {
		rs.abort(abi.CodeFuelExhausted, "fuel limit of %d exhausted (in a host call)", rs.lim.Fuel)
	}
}

// checkMemory fails an instance whose memory exceeds the limit.
func (rs *runState) checkMemory() *abi.Error {
	if rs.inst.mem.Refused() || rs.inst.mem.pages() > uint64(rs.lim.MemoryPages) {
		return &abi.Error{Code: abi.CodeMemoryLimit, Message: memoryMessage(rs.lim, "memory.grow refused")}
	}
	return nil
}

func memoryMessage(lim Limits, what string) string {
	return fmt.Sprintf("memory limit of %s: %s", pagesString(uint64(lim.MemoryPages)), what)
}

func pagesString(pages uint64) string {
	return fmt.Sprintf("%d pages (%d KiB)", pages, pages*64)
}

// classify maps how a call into the guest ended to a run error (nil: the
// run completed). remaining is the fuel left after the call (Fuel.Left), if
// known.
func (rs *runState) classify(err error, ret uint32, remaining int64, fuelKnown bool) *abi.Error {
	if rs.abortErr != nil {
		return rs.abortErr
	}
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	if err != nil {
		cause := rs.expired()
		if cause == nil && isExit {
			switch exit.ExitCode() {
			case sys.ExitCodeDeadlineExceeded:
				cause = context.DeadlineExceeded
			case sys.ExitCodeContextCanceled:
				cause = context.Canceled
			}
		}
		if cause != nil {
			return rs.timeoutError(cause, "")
		}
	}
	exhausted := fuelKnown && meter.Exhausted(remaining)
	if !exhausted && (err == nil && ret == 0 || isExit && exit.ExitCode() == 0) {
		return nil
	}
	summary, panicked := rs.logs.summary()
	var what string
	switch {
	case exhausted:
		what = fmt.Sprintf("fuel limit of %d exhausted", rs.lim.Fuel)
	case err == nil:
		what = fmt.Sprintf("run returned %d", int32(ret))
	case isExit:
		what = fmt.Sprintf("exit code %d", exit.ExitCode())
	default:
		what = firstLine(err.Error())
	}
	if summary != "" && (panicked || err == nil || isExit) {
		what += ": " + summary
	}
	what = clip(what)
	// A failure after a refused memory.grow is the memory limit's doing,
	// even when the dying guest then runs out of fuel (a Go guest prints
	// every goroutine's stack when it runs out of memory).
	if rs.inst.mem.Refused() {
		return &abi.Error{Code: abi.CodeMemoryLimit, Message: memoryMessage(rs.lim, "memory.grow refused, then "+what)}
	}
	if exhausted {
		return &abi.Error{Code: abi.CodeFuelExhausted, Message: what}
	}
	// A trap with the memory at the limit: the grow was refused by
	// wazero's own cap (Config.MaxMemoryPages) rather than by the run's.
	if err != nil && !isExit && rs.inst.mem.pages() >= uint64(rs.lim.MemoryPages) {
		return &abi.Error{Code: abi.CodeMemoryLimit, Message: memoryMessage(rs.lim, "memory at the limit, then "+what)}
	}
	if rs.denied != "" {
		return &abi.Error{Code: abi.CodeCapabilityDenied, Message: clip(rs.denied + "; then the guest failed: " + what)}
	}
	if err == nil || isExit || panicked {
		return &abi.Error{Code: abi.CodeGuestError, Message: what}
	}
	return &abi.Error{Code: abi.CodeTrap, Message: what}
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

// Run runs the module's `run` export once. It never panics and never fails
// the host: everything that goes wrong is in Result.Err.
func (r *Runtime) Run(ctx context.Context, m *Module, req Request) Result {
	start := time.Now()
	res := r.run(ctx, m, req)
	res.Duration = time.Since(start)
	return res
}

func (r *Runtime) run(ctx context.Context, m *Module, req Request) Result {
	if m == nil || m.r != r {
		return Result{Err: &abi.Error{Code: abi.CodeInvalidModule, Message: "module not loaded by this runtime"}}
	}
	if err := ctx.Err(); err != nil {
		return Result{Err: &abi.Error{Code: abi.CodeTimeout, Message: "run canceled by the host before it started"}}
	}
	lim := req.Limits.WithDefaults(r.cfg.MaxMemoryPages)
	inst, warm, e, logs := r.acquire(ctx, m, req.Tenant, lim)
	if e != nil {
		return Result{Err: e, Logs: logs, Recorded: Recording{Seed: req.Seed}}
	}
	rs := newRunState(ctx, inst, req, lim)
	inst.mem.SetLimit(uint64(lim.MemoryPages) * pageSize)

	// The wall clock is checked in host calls and at every slice of fuel
	// (hostRefuel).
	rs.deadline = time.Now().Add(lim.Wall)
	inst.callCtx = runCtx{Context: ctx, rs: rs}
	rs.fuel.Start(inst.fuel, lim.Fuel)
	inst.stack[0] = 0
	err := inst.run.CallWithStack(&inst.callCtx, inst.stack[:])
	remaining := rs.fuel.Left()
	ret := uint32(inst.stack[0])
	res := Result{
		Err:       rs.classify(err, ret, remaining, true),
		FuelUsed:  min(max(lim.Fuel-remaining, 0), lim.Fuel),
		HostCalls: rs.hostCalls,
		Warm:      warm,
	}
	inst.callCtx = runCtx{}
	r.unlockAll(ctx, rs)
	if res.Err == nil {
		res.Output = rs.output
		if res.Output == nil {
			res.Output = []byte{}
		}
	}
	res.Logs = rs.logs.finish()
	res.Recorded = rs.rec
	reusable := err == nil && rs.abortErr == nil && !meter.Exhausted(remaining) && !inst.mem.Refused()
	// Drop the run's data: an idle instance keeps nothing of it.
	inst.rs = runState{}
	r.release(inst, reusable)
	return res
}

// unlockAll releases the locks the run still holds, whatever happened.
func (r *Runtime) unlockAll(ctx context.Context, rs *runState) {
	if len(rs.locks) == 0 {
		return
	}
	for _, note := range UnlockAll(ctx, rs.caps, rs.locks, rs.lim.HostCallTimeout) {
		rs.logs.add(abi.LogWarn, "host", []byte(note))
	}
	rs.locks = nil
}

// UnlockAll releases with caps.Unlock the locks a run still holds when it
// ends, whatever happened: each call gets its own deadline of timeout, and
// ctx's cancellation does not stop them. It returns a note for the run's
// log (a warning) for each lock it could not release.
func UnlockAll(ctx context.Context, caps Capabilities, keys []string, timeout time.Duration) (notes []string) {
	base := context.WithoutCancel(ctx)
	for _, key := range keys {
		c, cancel := context.WithTimeout(base, timeout)
		err := SafeCall(func() error { return caps.Unlock(c, key) })
		cancel()
		if err != nil {
			notes = append(notes, clip(fmt.Sprintf("releasing lock %q at the end of the run: %v", key, err)))
		}
	}
	return notes
}

// SafeCall runs an embedder's function (a Capabilities method), turning a
// panic into an error.
func SafeCall(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("capability panicked: %v", p)
		}
	}()
	return f()
}

// logSink collects a run's log lines within the byte limit. Every line
// costs its length plus one, so that empty lines are bounded too.
type logSink struct {
	limit   int
	used    int
	dropped int64
	lines   []LogLine
	partial [2][]byte // stdout, stderr: text after the last newline
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
	s.lines = append(s.lines, LogLine{Level: level, Source: source, Text: string(text)})
}

// stream takes bytes written to stdout (1) or stderr (2).
func (s *logSink) stream(fd int, b []byte) {
	i := fd - 1
	level := int32(abi.LogInfo)
	source := "stdout"
	if fd == 2 {
		level, source = abi.LogError, "stderr"
	}
	for len(b) > 0 {
		if s.used+len(s.partial[0])+len(s.partial[1]) >= s.limit {
			s.dropped += int64(len(b))
			return
		}
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			room := s.limit - s.used - len(s.partial[0]) - len(s.partial[1])
			take := min(room, len(b))
			s.partial[i] = append(s.partial[i], b[:take]...)
			s.dropped += int64(len(b) - take)
			return
		}
		line := append(s.partial[i], b[:nl]...)
		s.partial[i] = s.partial[i][:0]
		s.add(level, source, line)
		b = b[nl+1:]
	}
}

// finish flushes partial lines and notes what was dropped.
func (s *logSink) finish() []LogLine {
	for i := range s.partial {
		if len(s.partial[i]) > 0 {
			p := s.partial[i]
			s.partial[i] = nil
			s.stream(i+1, append(p, '\n'))
		}
	}
	if s.dropped > 0 {
		s.lines = append(s.lines, LogLine{Level: abi.LogWarn, Source: "host",
			Text: fmt.Sprintf("log truncated: %d bytes beyond the limit of %d dropped", s.dropped, s.limit)})
		s.dropped = 0
	}
	return s.lines
}

// summary picks what best explains a failure from the log: a Go panic or
// fatal error on stderr (panicked), else the last stderr or log line.
func (s *logSink) summary() (text string, panicked bool) {
	for i := range s.partial {
		if len(s.partial[i]) > 0 {
			p := s.partial[i]
			s.partial[i] = nil
			s.stream(i+1, append(p, '\n'))
		}
	}
	last := ""
	for _, l := range s.lines {
		if l.Source == "stderr" && (strings.HasPrefix(l.Text, "panic: ") || strings.HasPrefix(l.Text, "fatal error: ")) {
			return l.Text, true
		}
		if l.Source == "stderr" || l.Source == "log" {
			last = l.Text
		}
	}
	return last, false
}
