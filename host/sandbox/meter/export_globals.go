package meter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file holds what a host needs, besides the fuel counter, to run a
// module from a pristine snapshot: Inspect describes a module's imports,
// exports, function types, globals and memories and the instructions whose
// effects a snapshot of linear memory and globals cannot undo; ExportGlobals
// exports every mutable global the module defines, because a runtime such
// as wazero only lets the host read and write exported globals.

// External kinds, as in import and export entries.
const (
	KindFunc   byte = 0x00
	KindTable  byte = 0x01
	KindMemory byte = 0x02
	KindGlobal byte = 0x03
	KindTag    byte = 0x04
)

// Value type encodings used in FuncType and Global. A typed reference
// (0x63, 0x64 followed by a heap type) is recorded by its prefix byte.
const (
	ValI32       byte = 0x7f
	ValI64       byte = 0x7e
	ValF32       byte = 0x7d
	ValF64       byte = 0x7c
	ValV128      byte = 0x7b
	ValFuncref   byte = 0x70
	ValExternref byte = 0x6f
)

// ErrReservedExport reports a module whose own exports use the name prefix
// that ExportGlobals reserves.
var ErrReservedExport = errors.New("export name uses a reserved prefix")

// FuncType is a function signature as value type encodings.
type FuncType struct {
	Params, Results []byte
}

// Equal reports whether two signatures are the same.
func (t FuncType) Equal(u FuncType) bool {
	return string(t.Params) == string(u.Params) && string(t.Results) == string(u.Results)
}

// String formats a signature as (i32, i32) -> (i64).
func (t FuncType) String() string {
	return "(" + valTypeList(t.Params) + ") -> (" + valTypeList(t.Results) + ")"
}

func valTypeList(ts []byte) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = ValTypeName(t)
	}
	return strings.Join(names, ", ")
}

// ValTypeName names a value type encoding: i32, i64, f32, f64, v128,
// funcref, externref, ref.
func ValTypeName(t byte) string {
	switch t {
	case ValI32:
		return "i32"
	case ValI64:
		return "i64"
	case ValF32:
		return "f32"
	case ValF64:
		return "f64"
	case ValV128:
		return "v128"
	case ValFuncref:
		return "funcref"
	case ValExternref:
		return "externref"
	}
	return fmt.Sprintf("ref(0x%02x)", t)
}

// Import is one import entry. Type is set for functions only.
type Import struct {
	Module, Name string
	Kind         byte
	Type         FuncType
}

// Export is one export entry.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// Global describes one global of the global index space.
type Global struct {
	Type     byte
	Mutable  bool
	Imported bool
	// ConstI32 is the initial value of a defined global whose
	// initializer is a single i32.const (HasConstI32).
	ConstI32    int32
	HasConstI32 bool
}

// Memory describes one memory, in pages of 64 KiB.
type Memory struct {
	Imported bool
	Min, Max uint64
	HasMax   bool
	Shared   bool
}

// Info is what Inspect reports about a module.
type Info struct {
	Imports  []Import
	Exports  []Export
	Funcs    []FuncType // the function index space: imported functions first
	Globals  []Global   // the global index space: imported globals first
	Memories []Memory   // the memory index space: imported memories first
	HasStart bool       // a start function runs at instantiation
	// StateOps lists, once each and in order of first appearance, the
	// instructions the code uses whose effects outlive a restore of linear
	// memory and globals: table.set, table.grow, table.fill, table.copy,
	// table.init, elem.drop and data.drop.
	StateOps []Opcode
}

// Export returns the export named name, if any.
func (in *Info) Export(name string) (Export, bool) {
	for _, e := range in.Exports {
		if e.Name == name {
			return e, true
		}
	}
	return Export{}, false
}

// Opcodes of the instructions reported in Info.StateOps.
const (
	OpTableSet Opcode = 0x26
	OpDataDrop        = PrefixMisc | 9
	OpElemDrop        = PrefixMisc | 13
)

// Inspect decodes what a host checks before running a module. It is meant
// for untrusted input like Instrument: it never panics, bounds allocations
// by the input length and reports malformed modules as errors wrapping
// ErrMalformed (or ErrUnsupported for constructs it does not decode, such as
// GC types). It does not validate the module.
func Inspect(wasm []byte) (*Info, error) {
	secs, err := splitSections(wasm)
	if err != nil {
		return nil, err
	}
	return inspectSections(secs)
}

func inspectSections(secs []section) (*Info, error) {
	info := &Info{}
	var types []FuncType
	seenOps := map[Opcode]bool{}
	for _, s := range secs {
		r := &reader{b: s.content, base: s.start}
		var err error
		switch s.id {
		case secType:
			types, err = readTypes(r)
		case secImport:
			err = readImports(r, types, info)
		case secFunction:
			err = forEach(r, func(r *reader) error {
				t, err := r.u32()
				if err != nil {
					return err
				}
				if uint64(t) >= uint64(len(types)) {
					return r.errf("function has unknown type %d", t)
				}
				info.Funcs = append(info.Funcs, types[t])
				return nil
			})
		case secMemory:
			err = forEach(r, func(r *reader) error {
				m, err := readMemory(r)
				info.Memories = append(info.Memories, m)
				return err
			})
		case secGlobal:
			err = forEach(r, func(r *reader) error {
				g, err := readGlobal(r)
				info.Globals = append(info.Globals, g)
				return err
			})
		case secExport:
			err = forEach(r, func(r *reader) error {
				name, err := r.name()
				if err != nil {
					return err
				}
				kind, err := r.byte()
				if err != nil {
					return err
				}
				idx, err := r.u32()
				info.Exports = append(info.Exports, Export{Name: string(name), Kind: kind, Index: idx})
				return err
			})
		case secStart:
			info.HasStart = true
			_, err = r.u32()
		case secCode:
			err = forEach(r, func(r *reader) error {
				return scanBody(r, seenOps, &info.StateOps)
			})
		case secTag:
			return nil, fmt.Errorf("%w: exception handling (tag section at offset %d)", ErrUnsupported, s.start)
		default:
			if s.id != secCustom {
				err = checkCopiedSection(s)
			}
			r.pos = len(r.b)
		}
		if err != nil {
			return nil, err
		}
		if !r.eof() {
			return nil, r.errf("section %d has %d trailing bytes", s.id, len(r.b)-r.pos)
		}
	}
	return info, nil
}

// splitSections splits a module into its sections and checks their order.
func splitSections(wasm []byte) ([]section, error) {
	if len(wasm) < len(wasmHeader) || string(wasm[:4]) != string(wasmHeader[:4]) {
		return nil, fmt.Errorf("%w: not a wasm binary (bad magic)", ErrMalformed)
	}
	if string(wasm[4:8]) != string(wasmHeader[4:]) {
		return nil, fmt.Errorf("%w: unsupported wasm binary version % x", ErrMalformed, wasm[4:8])
	}
	r := &reader{b: wasm, pos: len(wasmHeader)}
	var secs []section
	lastRank := 0
	for !r.eof() {
		id, _ := r.byte()
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		start := r.pos
		content, err := r.bytes(uint64(size))
		if err != nil {
			return nil, err
		}
		if id != secCustom {
			rank := sectionRank(id)
			if rank == 0 {
				return nil, fmt.Errorf("%w: unknown section id %d at offset %d", ErrMalformed, id, start)
			}
			if rank <= lastRank {
				return nil, fmt.Errorf("%w: section id %d out of order or duplicated at offset %d", ErrMalformed, id, start)
			}
			lastRank = rank
		} else if _, err := customSectionName(section{start: start, content: content}); err != nil {
			return nil, err
		}
		secs = append(secs, section{id: id, start: start, content: content})
	}
	return secs, nil
}

func readTypes(r *reader) ([]FuncType, error) {
	var types []FuncType
	err := forEach(r, func(r *reader) error {
		form, err := r.byte()
		if err != nil {
			return err
		}
		if form != 0x60 {
			if form == 0x4e || form == 0x4f || form == 0x50 || form == 0x5e || form == 0x5f {
				return fmt.Errorf("%w: GC type form 0x%02x at offset %d", ErrUnsupported, form, r.off()-1)
			}
			return r.errf("invalid type form 0x%02x", form)
		}
		params, err := readValTypes(r)
		if err != nil {
			return err
		}
		results, err := readValTypes(r)
		types = append(types, FuncType{Params: params, Results: results})
		return err
	})
	return types, err
}

func readValTypes(r *reader) ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(r.b)-r.pos) { // each takes at least one byte
		return nil, r.errf("%d value types exceed the remaining %d bytes", n, len(r.b)-r.pos)
	}
	ts := make([]byte, 0, n)
	for i := uint32(0); i < n; i++ {
		t, err := readValType(r)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// readValType reads a value type and returns its first byte.
func readValType(r *reader) (byte, error) {
	if r.eof() {
		return 0, r.errf("unexpected end")
	}
	t := r.b[r.pos]
	return t, skipValType(r)
}

func readImports(r *reader, types []FuncType, info *Info) error {
	return forEach(r, func(r *reader) error {
		mod, err := r.name()
		if err != nil {
			return err
		}
		name, err := r.name()
		if err != nil {
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		imp := Import{Module: string(mod), Name: string(name), Kind: kind}
		switch kind {
		case KindFunc:
			t, err := r.u32()
			if err != nil {
				return err
			}
			if uint64(t) >= uint64(len(types)) {
				return r.errf("import %q.%q has unknown type %d", mod, name, t)
			}
			imp.Type = types[t]
			info.Funcs = append(info.Funcs, imp.Type)
		case KindTable:
			if err := skipValType(r); err != nil {
				return err
			}
			if err := skipLimits(r); err != nil {
				return err
			}
		case KindMemory:
			m, err := readMemory(r)
			if err != nil {
				return err
			}
			m.Imported = true
			info.Memories = append(info.Memories, m)
		case KindGlobal:
			t, err := readValType(r)
			if err != nil {
				return err
			}
			mut, err := r.byte()
			if err != nil {
				return err
			}
			info.Globals = append(info.Globals, Global{Type: t, Mutable: mut == 1, Imported: true})
		case KindTag:
			return fmt.Errorf("%w: exception handling (tag import at offset %d)", ErrUnsupported, r.off())
		default:
			return r.errf("unknown import kind 0x%02x", kind)
		}
		info.Imports = append(info.Imports, imp)
		return nil
	})
}

func readMemory(r *reader) (Memory, error) {
	flags, err := r.byte()
	if err != nil {
		return Memory{}, err
	}
	if flags > 0x07 {
		return Memory{}, r.errf("invalid limits flags 0x%02x", flags)
	}
	m := Memory{HasMax: flags&0x01 != 0, Shared: flags&0x02 != 0}
	if m.Min, err = r.uleb(64); err != nil {
		return m, err
	}
	if m.HasMax {
		m.Max, err = r.uleb(64)
	}
	return m, err
}

func readGlobal(r *reader) (Global, error) {
	t, err := readValType(r)
	if err != nil {
		return Global{}, err
	}
	mut, err := r.byte()
	if err != nil {
		return Global{}, err
	}
	g := Global{Type: t, Mutable: mut == 1}
	if mut > 1 {
		return g, r.errf("invalid global mutability 0x%02x", mut)
	}
	// The common initializer i32.const v; end.
	if r.pos+1 < len(r.b) && r.b[r.pos] == 0x41 {
		save := r.pos
		r.pos++
		v, err := r.sleb(32)
		if err == nil && r.pos < len(r.b) && r.b[r.pos] == 0x0b {
			r.pos++
			g.ConstI32, g.HasConstI32 = int32(v), true
			return g, nil
		}
		r.pos = save
	}
	return g, skipConstExpr(r)
}

// scanBody decodes one code entry and records the state-changing
// instructions it uses.
func scanBody(r *reader, seen map[Opcode]bool, ops *[]Opcode) error {
	size, err := r.u32()
	if err != nil {
		return err
	}
	base := r.off()
	body, err := r.bytes(uint64(size))
	if err != nil {
		return err
	}
	br := &reader{b: body, base: base}
	if err := forEach(br, func(r *reader) error {
		if _, err := r.u32(); err != nil {
			return err
		}
		return skipValType(r)
	}); err != nil {
		return err
	}
	for !br.eof() {
		start := br.off()
		in, err := decodeInstr(br, nil)
		if err != nil {
			return err
		}
		if in.flow == flowUnsupported {
			return fmt.Errorf("%w: unsupported opcode %s at offset %d", ErrUnsupported, in.op, start)
		}
		switch in.op {
		case OpTableSet, OpTableGrow, OpTableFill, OpTableCopy, OpTableInit, OpElemDrop, OpDataDrop:
			if !seen[in.op] {
				seen[in.op] = true
				*ops = append(*ops, in.op)
			}
		}
	}
	return nil
}

// GlobalExport names one global exported by ExportGlobals.
type GlobalExport struct {
	Name  string
	Index uint32 // in the global index space
	Type  byte   // value type encoding
}

// ExportGlobals returns a copy of the module in which every mutable global
// the module defines is exported as prefix followed by its decimal index
// (say "logline_global_3"), and the list of those exports. A global the
// module exports already is exported a second time under the new name.
// Imported globals are not exported (the host that provides them owns
// them). A module that has no mutable global is returned as is.
//
// A module whose own exports start with prefix is refused with
// ErrReservedExport, so that the names stay the host's. Other errors wrap
// ErrMalformed or ErrUnsupported, as for Inspect. Index spaces do not
// change, so ExportGlobals composes with Instrument in either order; the
// fuel global of an instrumented module is not a global of the input, so
// running ExportGlobals first leaves it out.
func ExportGlobals(wasm []byte, prefix string) ([]byte, []GlobalExport, error) {
	if prefix == "" {
		return nil, nil, errors.New("meter: ExportGlobals needs a non-empty prefix")
	}
	secs, err := splitSections(wasm)
	if err != nil {
		return nil, nil, err
	}
	info, err := inspectSections(secs)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range info.Exports {
		if strings.HasPrefix(e.Name, prefix) {
			return nil, nil, fmt.Errorf("%w: %q starts with %q", ErrReservedExport, e.Name, prefix)
		}
		if e.Kind == KindGlobal && uint64(e.Index) >= uint64(len(info.Globals)) {
			return nil, nil, fmt.Errorf("%w: export %q of unknown global %d", ErrMalformed, e.Name, e.Index)
		}
	}
	var added []GlobalExport
	for i, g := range info.Globals {
		if g.Mutable && !g.Imported {
			added = append(added, GlobalExport{Name: prefix + strconv.Itoa(i), Index: uint32(i), Type: g.Type})
		}
	}
	if len(added) == 0 {
		return wasm, nil, nil
	}

	var entries []byte
	for _, a := range added {
		entries = appendULEB(entries, uint64(len(a.Name)))
		entries = append(entries, a.Name...)
		entries = append(entries, KindGlobal)
		entries = appendULEB(entries, uint64(a.Index))
	}
	out, err := addExports(wasm, secs, len(info.Exports), len(added), entries, false)
	if err != nil {
		return nil, nil, err
	}
	return out, added, nil
}

// ExportStart returns a copy of the module without its start section, in
// which the start function is exported as name instead, and reports
// whether there was one. A module without a start section is returned as
// is. The host then calls the start function itself, right after
// instantiation: in a metered module, with the fuel counter set, so that a
// start function that runs out of fuel can be told from one that traps.
// Errors are as for ExportGlobals (a module that already exports name is
// refused with ErrReservedExport).
func ExportStart(wasm []byte, name string) ([]byte, bool, error) {
	if name == "" {
		return nil, false, errors.New("meter: ExportStart needs a non-empty name")
	}
	secs, err := splitSections(wasm)
	if err != nil {
		return nil, false, err
	}
	info, err := inspectSections(secs)
	if err != nil {
		return nil, false, err
	}
	if !info.HasStart {
		return wasm, false, nil
	}
	if _, ok := info.Export(name); ok {
		return nil, false, fmt.Errorf("%w: %q", ErrReservedExport, name)
	}
	var start uint32
	for _, s := range secs {
		if s.id == secStart {
			r := &reader{b: s.content, base: s.start}
			start, _ = r.u32() // decoded by inspectSections
		}
	}
	if uint64(start) >= uint64(len(info.Funcs)) {
		return nil, false, fmt.Errorf("%w: start function %d does not exist", ErrMalformed, start)
	}
	entry := appendULEB(nil, uint64(len(name)))
	entry = append(entry, name...)
	entry = append(entry, KindFunc)
	entry = appendULEB(entry, uint64(start))
	out, err := addExports(wasm, secs, len(info.Exports), 1, entry, true)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// addExports rewrites a module with n encoded export entries appended to its
// export section (created if need be), which had old entries, and without
// its start section if dropStart is set.
func addExports(wasm []byte, secs []section, old, n int, entries []byte, dropStart bool) ([]byte, error) {
	count := uint64(old + n)
	if count > 0xffffffff {
		return nil, fmt.Errorf("%w: too many exports", ErrMalformed)
	}
	exportSection := func(content []byte) []byte {
		var body []byte
		if content != nil {
			r := &reader{b: content}
			_, _ = r.u32() // decoded by inspectSections
			body = content[r.pos:]
		}
		c := appendULEB(nil, count)
		c = append(c, body...)
		return append(c, entries...)
	}

	out := make([]byte, 0, len(wasm)+len(entries)+16)
	out = append(out, wasmHeader...)
	wrote := false
	rankExport := sectionRank(secExport)
	for _, s := range secs {
		switch {
		case s.id == secStart && dropStart:
			continue
		case s.id == secExport:
			out = appendSection(out, secExport, exportSection(s.content))
			wrote = true
			continue
		case !wrote && s.id != secCustom && sectionRank(s.id) > rankExport:
			out = appendSection(out, secExport, exportSection(nil))
			wrote = true
		}
		out = appendSection(out, s.id, s.content)
	}
	if !wrote {
		out = appendSection(out, secExport, exportSection(nil))
	}
	return out, nil
}
