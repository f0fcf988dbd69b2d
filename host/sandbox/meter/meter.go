// Package meter rewrites a WebAssembly binary before compilation to inject a
// deterministic fuel counter ("instruction metering"), so that the CPU time
// of an untrusted guest is bounded without wall-clock cancellation.
//
// # Contract with the host
//
// Instrument appends one mutable i64 global, after the existing globals so
// that no index shifts, and exports it as ExportName. The host sets it to the
// fuel limit before calling into the guest and reads it afterwards: the fuel
// used is the limit minus the value read. Its initial value (Options.Limit)
// is the fuel of the start function, which runs during instantiation.
//
// Two options extend the contract. With Options.Refuel the guest calls an
// imported host function instead of trapping when a check finds the counter
// overdrawn, so the host can hand the fuel out in slices and regain control
// between them (the module's own functions then move up one index). With
// Options.TrackWrites a second exported global (DirtyExportName) records
// which chunks of linear memory the guest wrote, so a host restoring a
// snapshot copies only those.
//
// The guest traps with `unreachable` when it runs out of fuel. After every
// run, whether it returned, trapped or exited, a negative counter means the
// guest ran out of fuel (Exhausted), and its results must be discarded: with
// the default checking (below) a guest may return with an overdrawn counter.
// Because the charges depend only on the module and the control flow taken,
// the same module run on the same input burns exactly the same fuel every
// time, independent of the machine or its load — as long as the host's
// imports (clocks, randomness) are deterministic too.
//
// # Metered blocks
//
// Every function body is cut into metered blocks, straight-line runs of
// instructions that are entered only at their first instruction. A block
// starts at the function entry, after every `loop` header, at the start of
// each branch of an `if` (after `if` and after `else`), after the `end` of a
// `block` or `if` that is a join point (a branch targets it, or both arms of
// an `if` fall through), after every conditional branch (`br_if`,
// `br_on_null`, `br_on_non_null`) and after every call (`call`,
// `call_indirect`, `call_ref`), so that the fuel burnt by the callee is
// accounted for before the caller goes on. A `block` header or the `end` of
// a block nobody branches to does not start a new block: the code after it
// runs exactly when the code before it does. Instructions after an
// unconditional transfer (`br`, `br_table`, `return`, `unreachable`,
// `return_call*`) are dead and cost nothing.
//
// Each block is charged its static cost, the sum of Options.Cost over its
// instructions, once, at its start. A block of cost 0 is not charged, except
// that the blocks at function entries and loop headers cost at least 1, so
// every loop iteration and every (tail) call burns fuel whatever the cost
// table says. The fuel used by a run is therefore exactly the sum of the
// costs of the instructions it executed.
//
// # Generated code
//
// Within a function the counter lives in a new i64 local, so that a charge
// is a register subtraction. The local is loaded from the global at entry
// and after each call, and stored to the global before each call and each
// exit (`return`, tail calls, branches out of the function, the final `end`,
// `unreachable`), so the global is current whenever another function or the
// host can look at it. A checked charge is
//
//	local.get  $fuel          ;; global.get $fuel at entry and after calls
//	i64.const  <cost>
//	i64.sub
//	local.tee  $fuel
//	i64.const  0
//	i64.lt_s
//	if
//	  local.get  $fuel
//	  global.set $fuel
//	  unreachable
//	end
//
// and an unchecked one ends with `local.set $fuel` instead of the test.
// Checked are the charges at function entries and loop headers (every cycle
// of execution passes through one) and after calls (a callee that returns
// with an overdrawn counter is stopped in its caller), so the overrun is
// bounded by the code of one function between two of them; checked are also
// those of blocks that call an imported function, call indirectly or
// execute `memory.grow` (so the host is never called, and memory never
// grown, with an overdrawn counter), and the run-time charges of the bulk
// operations. Options.CheckEveryBlock checks
// every charge, which makes the guest trap in the very block that overdraws
// the counter, at some run-time cost. The trap path stores the counter to
// the global first, so after a fuel trap the global is negative; after a
// trap of the guest's own (say a division by zero) it holds the value of
// the last store, and the fuel used since then is not reported. So a trap
// of the guest's own between an unchecked overdraft and the next check is
// reported as that trap rather than as exhaustion (deterministically, like
// everything else); CheckEveryBlock closes that window.
//
// # Bulk operations
//
// The bulk memory and table instructions do work proportional to an operand.
// Besides their flat cost from the cost table (DefaultBulkCost) they are
// charged that operand at run time, checked before the instruction runs:
// `memory.copy`, `memory.fill` and `memory.init` cost one more unit per
// MemoryBytesPerFuel bytes, `table.copy`, `table.fill`, `table.init` and
// `table.grow` one more unit per element (a table.grow of 2^31 elements is
// thus refused before it allocates). `memory.grow` is charged the flat
// DefaultGrowCost only: the total growth is bounded by the memory limit the
// host configures. The run-time charge uses a second new local (i32), added
// only to functions that need it.
//
// # Supported instruction set
//
// The WebAssembly 2.0 instruction set (MVP, sign extension, non-trapping
// float-to-int, bulk memory, reference types, multi-value, fixed-width SIMD),
// tail calls and the typed function reference calls and branches. Threads
// (0xFE), relaxed SIMD, exception handling and GC (0xFB) are rejected with
// an error wrapping ErrUnsupported that names the opcode, the function index
// and the byte offset in the module.
//
// Function (without Refuel), table, memory, type and existing global and
// local indices never change, so the `name` section and every other index
// space stay valid.
// Custom sections are copied unchanged except DWARF (`.debug_*`) sections,
// which are dropped because the code offsets they describe no longer hold,
// and a `name` section whose subsections do not parse.
//
// # Hostile input
//
// Instrument is meant for untrusted input, ahead of the compiler. It never
// panics and never allocates by a count or length read from the input: its
// memory is linear in the input size, and so is its output (typically 25%
// larger than the input; at worst, for a body of nothing but calls, about
// 12 times). It reports malformed modules as errors wrapping ErrMalformed.
// It does not fully validate modules (the compiler does) but checks
//
//   - that no instruction names a global or local index that only the
//     appended global or locals would make valid: the guest could otherwise
//     read or refill its own fuel;
//   - that no export names such a global index, or ExportName;
//   - the framing of every section, including those copied as they are:
//     wazero's decoder allocates by the counts a module claims before
//     reading them, so a few bytes claiming 2^32 data bytes or table
//     elements would otherwise make the compiler allocate gigabytes;
//   - that no function declares more than 50,000 locals nor has a body over
//     7,654,321 bytes (the limits of the web engines; wazero allocates per
//     declared local).
package meter

import (
	"errors"
	"fmt"
)

// ExportName is the export under which the fuel counter global is exposed.
const ExportName = "logline_fuel"

// DirtyExportName is the export of the i64 global in which Options.TrackWrites
// records the chunks of linear memory a run may have written.
const DirtyExportName = "logline_dirty"

// DefaultLimit is the default fuel limit of one run (the same order as
// Shopify Functions' instruction limit).
const DefaultLimit int64 = 11_000_000

// Flat default costs of the expensive instructions (see DefaultCost).
const (
	// DefaultGrowCost is charged for `memory.grow`, which leaves compiled
	// code, may reallocate the linear memory and zeroes the new pages.
	DefaultGrowCost = 1000
	// DefaultBulkCost is the flat part charged for `memory.copy`,
	// `memory.fill`, `memory.init`, `table.copy`, `table.fill`,
	// `table.init` and `table.grow`; the length-proportional part is
	// charged at run time (see MemoryBytesPerFuel).
	DefaultBulkCost = 100
)

// MemoryBytesPerFuel is the number of bytes that `memory.copy`, `memory.fill`
// and `memory.init` process per unit of fuel, on top of their flat cost.
// Table bulk operations are charged one unit per element.
const MemoryBytesPerFuel = 16

// memoryShift is log2(MemoryBytesPerFuel).
const memoryShift = 4

// Sentinel errors wrapped by Instrument's errors.
var (
	// ErrMalformed reports a module that is not a well-formed binary.
	ErrMalformed = errors.New("malformed wasm module")
	// ErrUnsupported reports an instruction or construct the metering does
	// not support (threads, exception handling, GC, unknown opcodes).
	ErrUnsupported = errors.New("unsupported wasm feature")
	// ErrExportConflict reports a module that already exports ExportName
	// (for instance one that was instrumented already).
	ErrExportConflict = errors.New("module already exports " + ExportName)
)

// Opcode identifies an instruction for a cost table. A single-byte opcode is
// its byte value (i32.add is 0x6a); a prefixed opcode is prefix<<16 | sub
// (memory.copy is 0xfc000a, i8x16.add is 0xfd006e).
type Opcode uint32

// Prefixes of multi-byte opcodes.
const (
	PrefixMisc Opcode = 0xfc << 16
	PrefixSIMD Opcode = 0xfd << 16
)

// Opcodes that the default cost table treats specially, and the structural
// ones that are free by default.
const (
	OpElse       Opcode = 0x05
	OpEnd        Opcode = 0x0b
	OpMemoryGrow Opcode = 0x40
	OpMemoryInit        = PrefixMisc | 8
	OpMemoryCopy        = PrefixMisc | 10
	OpMemoryFill        = PrefixMisc | 11
	OpTableInit         = PrefixMisc | 12
	OpTableCopy         = PrefixMisc | 14
	OpTableGrow         = PrefixMisc | 15
	OpTableFill         = PrefixMisc | 17
)

// DefaultCost is the default cost table: `else` and `end` are structural
// markers that compile to no work and cost 0, `memory.grow` costs
// DefaultGrowCost, the bulk memory and table operations cost DefaultBulkCost
// (plus their run-time length charge), and every other instruction costs 1.
func DefaultCost(op Opcode) uint32 {
	switch op {
	case OpElse, OpEnd:
		return 0
	case OpMemoryGrow:
		return DefaultGrowCost
	case OpMemoryInit, OpMemoryCopy, OpMemoryFill,
		OpTableInit, OpTableCopy, OpTableGrow, OpTableFill:
		return DefaultBulkCost
	}
	return 1
}

// Options configures Instrument.
type Options struct {
	// Cost returns the static fuel cost of one instruction. Nil means
	// DefaultCost. It must be deterministic. The charge of one metered
	// block saturates at 2^32.
	Cost func(op Opcode) uint32

	// Limit is the initial value of the fuel counter, i.e. the fuel
	// available to the module's start function, which runs during
	// instantiation before the host can set the counter. Zero means
	// DefaultLimit; a negative value is an error. The host still sets the
	// counter before each run of an exported function.
	Limit int64

	// CheckEveryBlock makes every charge check the counter, so that a guest
	// traps in the very block that overdraws it, and a run that returns
	// normally never has an overdrawn counter. By default only the charges
	// at function entries and loop headers, and those of blocks that call
	// an import, call indirectly or grow the memory, check it (see the
	// package documentation), which is markedly cheaper on compiled Go code
	// (about 10% of run time). Either way the fuel used by a run that does
	// not trap is the same, and so is whether it exceeds the limit.
	CheckEveryBlock bool

	// Refuel makes a check that finds the counter overdrawn call the
	// imported host function RefuelModule.RefuelName, of type () -> (),
	// instead of trapping, and reload the counter from the global
	// afterwards. The host can then hand the fuel out in slices: the call
	// is where it regains control from a computing guest (a point where
	// the Go runtime can stop the goroutine for a garbage collection, and
	// where the host can look at a wall clock), and it ends the run there
	// (by failing the call) when no fuel is left. The fuel used by a run
	// and whether it runs out are as without Refuel: the host counts
	// what it handed out.
	//
	// The import is appended to the module's imports, so every function
	// the module defines moves up one index; Instrument renumbers calls,
	// ref.func, exports, the start function, element segments and the
	// `name` section. Offsets in Instrument's errors are then offsets in
	// the module with the import added. A module that already imports
	// the function is refused with ErrReservedImport.
	Refuel bool

	// TrackWrites makes the guest record where it writes its linear
	// memory, so that a host restoring memory to a snapshot after a run
	// need only copy what may have changed. A new mutable i64 global,
	// exported as DirtyExportName, gets bit (a >> WriteShift) mod 64 set
	// for every address a that a store, memory.fill, memory.copy or
	// memory.init writes (a store may also set the bit of the chunk after
	// its own, and an empty fill or copy may set bits). So after a run
	// that started with the global at 0 and returned normally, a chunk
	// of 2^WriteShift bytes can differ from before only if the bit of its
	// index mod 64 is set. Each function keeps its bits in a local and
	// merges them into the global when it returns; a run that traps
	// leaves the global incomplete. Neither what the host writes into
	// guest memory nor memory.grow is recorded.
	TrackWrites bool
	// WriteShift is log2 of the chunk size for TrackWrites, from 12 (4
	// KiB) to 32; 0 means 12.
	WriteShift uint8
}

// Exhausted reports whether a fuel counter value read after a run means the
// guest ran out of fuel. A guest that traps with `unreachable` while the
// counter is negative was stopped by the metering.
func Exhausted(remaining int64) bool { return remaining < 0 }

// Instrument returns a copy of the wasm binary with fuel metering injected.
// The input is not modified. See the package documentation for what is
// rewritten and how.
func Instrument(wasm []byte, opts Options) ([]byte, error) {
	if opts.Cost == nil {
		opts.Cost = DefaultCost
	}
	if opts.Limit == 0 {
		opts.Limit = DefaultLimit
	}
	if opts.Limit < 0 {
		return nil, fmt.Errorf("meter: negative fuel limit %d", opts.Limit)
	}
	if opts.WriteShift == 0 {
		opts.WriteShift = 12
	}
	if opts.WriteShift < 12 || opts.WriteShift > 32 {
		return nil, fmt.Errorf("meter: WriteShift %d out of range [12, 32]", opts.WriteShift)
	}
	refuelFunc := uint32(0)
	if opts.Refuel {
		var err error
		if wasm, refuelFunc, err = addRefuelImport(wasm); err != nil {
			return nil, err
		}
	}
	return instrumentModule(wasm, &opts, refuelFunc)
}

// maxBlockCost caps the charge of one metered block. With function bodies
// below maxBodySize bytes, the unchecked charges of one function add up to
// less than 2^55, so the i64 counter can never wrap around to positive.
const maxBlockCost = 1 << 32

// maxBodySize is the largest function body accepted, in bytes: the limit of
// the web engines (V8, SpiderMonkey), so every module built to run in a
// browser stays below it. It also bounds the working memory of Instrument
// per function.
const maxBodySize = 7_654_321

// clampCost converts an accumulated cost to an i64.const immediate.
func clampCost(c uint64) int64 {
	return int64(min(c, maxBlockCost))
}
