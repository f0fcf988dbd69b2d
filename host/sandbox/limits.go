package sandbox

import "time"

// Limits bound one run. A zero field takes its value from DefaultLimits.
type Limits struct {
	// Fuel is the instruction budget of the run (meter's cost table: about
	// one unit per wasm instruction; host calls cost a fixed amount plus
	// one unit per 16 bytes they move). An instance's initialization
	// (start function, `_initialize`, `logline_prepare`) gets a budget of
	// its own, once per instance: the larger of Fuel and Config.InitFuel.
	Fuel int64
	// MemoryPages caps linear memory, in 64 KiB pages. It is clamped to
	// Config.MaxMemoryPages.
	MemoryPages uint32
	// OutputBytes caps the output; a larger output() ends the run with
	// output_limit.
	OutputBytes int
	// LogBytes caps the log lines (log(), stdout, stderr); beyond it
	// lines are dropped and a note says so. The run goes on.
	LogBytes int
	// HostCalls caps the calls to the `logline` module; one more ends the
	// run with host_call_limit.
	HostCalls int
	// Spans caps insert_span calls that succeed; beyond it insert_span
	// returns abi.ErrLimit.
	Spans int
	// HostCallTimeout is the deadline of each capability call (sql,
	// insert_span, lock, unlock, http); past it the guest gets
	// abi.ErrTimeout. exec is bounded by the run's Wall instead: the code
	// it runs has limits of its own.
	HostCallTimeout time.Duration
	// Wall is the last-resort wall clock of the run, instantiation
	// included; past it the run ends with timeout. Fuel, not Wall, is what
	// bounds computation.
	Wall time.Duration
}

// Default limit values (contract §5).
const (
	DefaultFuel = 11_000_000
	// DefaultMemoryPages is 512 pages (32 MiB). A Go guest (GOOS=wasip1)
	// starts at about 2.6 MiB and its runtime grows the heap in 4 MiB
	// arenas, so 16 MiB leaves a Go guest only a few arenas to work in;
	// 32 MiB fits typical Go policies and functions while keeping 100
	// concurrent runs within about 3 GiB.
	DefaultMemoryPages = 512
	DefaultOutputBytes = 1 << 20
	DefaultLogBytes    = 64 << 10
	DefaultHostCalls   = 10_000
	DefaultSpans       = 100
	DefaultHostTimeout = 5 * time.Second
	DefaultWall        = 30 * time.Second
)

// DefaultLimits returns the limits of a run that asks for nothing else.
func DefaultLimits() Limits {
	return Limits{
		Fuel:            DefaultFuel,
		MemoryPages:     DefaultMemoryPages,
		OutputBytes:     DefaultOutputBytes,
		LogBytes:        DefaultLogBytes,
		HostCalls:       DefaultHostCalls,
		Spans:           DefaultSpans,
		HostCallTimeout: DefaultHostTimeout,
		Wall:            DefaultWall,
	}
}

// WithDefaults fills zero (or negative) fields from DefaultLimits and
// clamps MemoryPages to maxPages (the runtime's Config.MaxMemoryPages).
func (l Limits) WithDefaults(maxPages uint32) Limits {
	d := DefaultLimits()
	if l.Fuel <= 0 {
		l.Fuel = d.Fuel
	}
	if l.MemoryPages == 0 {
		l.MemoryPages = d.MemoryPages
	}
	l.MemoryPages = min(l.MemoryPages, maxPages)
	if l.OutputBytes <= 0 {
		l.OutputBytes = d.OutputBytes
	}
	if l.LogBytes <= 0 {
		l.LogBytes = d.LogBytes
	}
	if l.HostCalls <= 0 {
		l.HostCalls = d.HostCalls
	}
	if l.Spans <= 0 {
		l.Spans = d.Spans
	}
	if l.HostCallTimeout <= 0 {
		l.HostCallTimeout = d.HostCallTimeout
	}
	if l.Wall <= 0 {
		l.Wall = d.Wall
	}
	return l
}
