// Package sandbox is the room of host/ that runs untrusted WebAssembly
// guests: kernels, policies and user functions built against the ABI of
// package abi (abi/ABI.md). It loads a module (checks its imports against
// the ABI, injects fuel metering, compiles it once per hash), keeps pools of
// pristine instances per (module, tenant), and runs them under the limits
// of contract §5: fuel, memory pages, output and log bytes, host calls, spans
// and deadlines. Every failure ends only the run it happened in, with a
// stable abi.Code* in Result.Err; nothing a guest does panics the host.
//
// It imports wazero, package abi, package meter (host/sandbox/meter), blake3
// and the standard library only. It never talks to Postgres: the embedder
// hands in what a kernel may do (SQL, spans, locks, exec, HTTP) through the
// Capabilities interface, and the sandbox enforces tiers before calling it.
//
// # Modules
//
// A module imports functions only, from `logline` (abi/abi.go, with exactly
// those signatures) and `wasi_snapshot_preview1`; anything else is refused
// at Load with forbidden_import, naming the import. Its entry is the export
// `run` () -> i32 (0 = ok). A reactor (a Go guest built with
// -buildmode=c-shared) also exports `_initialize` () -> (), which runs once
// per instance, before the snapshot. A command module (one that exports
// `_start`) is refused with invalid_module: its exports may not be called
// before `_start`, and `_start` runs main to completion, so it cannot serve
// runs. Load rewrites the module before compiling it: mutable globals are
// exported as logline_global_<index> (meter.ExportGlobals), a start
// function is exported as logline_start and called by the sandbox with fuel
// set (meter.ExportStart), then the fuel counter is injected
// (meter.Instrument). Exports of those names by the module itself are
// invalid_module.
//
// An interpreter (the QuickJS guest) also exports `logline_prepare`
// () -> i32: Runtime.Prepare makes a module whose instances call it once,
// after `_initialize` and with the script as their input, so that the
// script is parsed and compiled in the snapshot every run starts from.
//
// # Determinism
//
// The same module on the same Request (input, env, seed, clock, answers of
// capabilities) burns the same fuel and produces the same output, on a
// fresh instance or on a pooled one. Everything a guest can observe is a
// function of the request: the guest's clock is frozen at Request.Clock()
// for the whole run and advanced only by the guest's own sleeps
// (poll_oneoff does not sleep, it moves the virtual clock); random bytes
// come from a ChaCha8 stream seeded by Request.Seed; the start function and
// `_initialize` see a fixed clock and seed. Host calls cost fuel (a fixed
// amount plus their bytes), so their work is bounded and deterministic too.
// Result.Recorded keeps the clock, the seed and the values handed out.
//
// # Instances
//
// After instantiation and initialization, the first instance of a module
// is snapshotted: its linear memory and every mutable global it defines.
// After a run that returned normally, the instance is restored from the
// snapshot (a copy of the chunks of memory the run may have written, which
// the metering records, plus what the host wrote; see dirty.go) and goes
// back to the idle pool of its (module hash,
// tenant); an instance whose memory grew (memory cannot shrink), that
// trapped, exited or hit any limit is discarded. Modules whose code mutates
// what a restore cannot undo (table.set/grow/fill/copy/init, elem.drop,
// data.drop) or that have v128 or reference mutable globals get a fresh
// instance for every run. Tenants never share an instance, and an idle
// instance keeps nothing of the run it served.
//
// On Linux a linear memory is a private anonymous mapping that reserves the
// run's memory limit: growing never copies, untouched pages cost nothing,
// and closing an instance returns its pages at once. Elsewhere it is a Go
// slice.
//
// # Classification
//
// A limit that ends the run from a host call decides its code
// (output_limit, host_call_limit, fuel_exhausted in a host call, trap for an
// out-of-bounds pointer, timeout). Otherwise: the wall deadline or the
// embedder's context → timeout; a failure (trap, exit ≠ 0, non-zero
// return, fuel) after a memory.grow the run's limit refused → memory_limit
// (a Go guest that runs out of memory prints every goroutine and may run out
// of fuel doing so); fuel → fuel_exhausted; a trap with the memory at the
// limit → memory_limit; a failure after a denied capability call →
// capability_denied; a non-zero return, exit code or a Go panic (a trap
// after "panic: " or "fatal error: " on stderr) → guest_error; any other
// trap (unreachable, stack overflow, out of bounds, division by zero) →
// trap. A guest that returns 0 after a denial completes; the denial is in
// Result.Logs.
//
// # WASI
//
// WASI is wazero's wasi_snapshot_preview1 with nothing mounted: no
// preopened directory, no socket, no environment, argv is ["guest"], stdin
// is empty. So path_open, sock_accept and the rest fail with an errno. A
// few functions are the sandbox's own, for determinism, so that their cost
// is charged to fuel, and so that no run changes what the next one sees:
// clock_time_get (the virtual clock), random_get (the seeded stream),
// poll_oneoff (virtual sleeps), fd_write (stdout and stderr become capped
// log lines), fd_read/fd_pread/fd_pwrite (stdio only), and
// fd_close/fd_renumber/fd_fdstat_set_flags, which leave stdio as it is.
//
// # Deadlines
//
// Fuel bounds computation. Limits.Wall is a last resort, for time spent in
// host calls. The guest's fuel counter holds one slice of fuel (about a
// millisecond of code) at a time; the metering calls the refuel import for
// the next (meter.Options.Refuel), and there the host checks the wall
// deadline and the embedder's context, and the Go runtime gets a
// safepoint, which compiled wasm otherwise never offers. wazero's
// WithCloseOnContextDone is off: it leaves compiled code for Go at every
// loop header and starts a goroutine per call. Each capability call has its
// own deadline (Limits.HostCallTimeout, capped by the wall deadline).
package sandbox
