package meter

import (
	"fmt"
	"strings"
)

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// sectionRank gives the position a non-custom section must have in a module;
// 0 means unknown.
func sectionRank(id byte) int {
	switch id {
	case secType:
		return 1
	case secImport:
		return 2
	case secFunction:
		return 3
	case secTable:
		return 4
	case secMemory:
		return 5
	case secTag:
		return 6
	case secGlobal:
		return 7
	case secExport:
		return 8
	case secStart:
		return 9
	case secElement:
		return 10
	case secDataCount:
		return 11
	case secCode:
		return 12
	case secData:
		return 13
	}
	return 0
}

var wasmHeader = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

type section struct {
	id      byte
	start   int // offset of the section's contents in the module
	content []byte
}

// module holds what the rewrite needs to know about the input.
type module struct {
	importedFuncs   uint32
	importedGlobals uint32
	definedGlobals  uint32
	typeParams      []uint32 // number of parameters of each function type
	funcTypes       []uint32 // type index of each defined function
	exportCount     uint32
	exports         []byte // export section contents after the count
}

// numGlobals is the size of the original global index space.
func (m *module) numGlobals() uint64 {
	return uint64(m.importedGlobals) + uint64(m.definedGlobals)
}

func instrumentModule(wasm []byte, opts *Options, refuelFunc uint32) ([]byte, error) {
	sections, err := splitSections(wasm)
	if err != nil {
		return nil, err
	}

	var m module
	for _, s := range sections {
		var err error
		switch s.id {
		case secType:
			err = m.parseTypes(s)
		case secImport:
			err = m.parseImports(s)
		case secFunction:
			err = m.parseFunctions(s)
		case secGlobal:
			err = m.parseGlobals(s)
		case secExport:
			m.exportCount, m.exports, err = m.checkExports(s, opts.TrackWrites)
		case secTag:
			return nil, fmt.Errorf("%w: exception handling (tag section at offset %d)", ErrUnsupported, s.start)
		case secCustom:
			_, err = customSectionName(s)
		default:
			err = checkCopiedSection(s)
		}
		if err != nil {
			return nil, err
		}
	}
	fuelIdx := m.numGlobals()
	if fuelIdx >= 0xfffffffe {
		return nil, fmt.Errorf("%w: too many globals", ErrMalformed)
	}

	var code []byte
	hasCode := false
	for _, s := range sections {
		if s.id != secCode {
			continue
		}
		hasCode = true
		var err error
		if code, err = m.rewriteCode(s, opts, uint32(fuelIdx), refuelFunc); err != nil {
			return nil, err
		}
	}
	if !hasCode && len(m.funcTypes) != 0 {
		return nil, fmt.Errorf("%w: function section declares %d functions but there is no code section", ErrMalformed, len(m.funcTypes))
	}

	// The fuel global, appended after the existing ones, and the dirty
	// global after it.
	newGlobals := []byte{0x7e, 0x01, 0x42} // mut i64 = i64.const limit
	newGlobals = appendSLEB(newGlobals, opts.Limit)
	newGlobals = append(newGlobals, 0x0b)
	nNew := 1
	if opts.TrackWrites {
		newGlobals = append(newGlobals, 0x7e, 0x01, 0x42, 0x00, 0x0b) // mut i64 = 0
		nNew++
	}

	out := make([]byte, 0, len(wasm)+len(wasm)/2+64)
	out = append(out, wasmHeader...)
	wroteGlobal, wroteExport := false, false

	emitGlobal := func(old []byte) error {
		var body []byte
		count := uint64(nNew)
		if old != nil {
			rr := &reader{b: old}
			n, err := rr.u32()
			if err != nil {
				return err
			}
			count += uint64(n)
			body = old[rr.pos:]
		}
		content := appendULEB(nil, count)
		content = append(content, body...)
		content = append(content, newGlobals...)
		out = appendSection(out, secGlobal, content)
		wroteGlobal = true
		return nil
	}
	emitExport := func() error {
		count := uint64(m.exportCount) + uint64(nNew)
		if count > 0xffffffff {
			return fmt.Errorf("%w: too many exports", ErrMalformed)
		}
		content := appendULEB(nil, count)
		content = append(content, m.exports...)
		for i, name := range []string{ExportName, DirtyExportName}[:nNew] {
			content = appendULEB(content, uint64(len(name)))
			content = append(content, name...)
			content = append(content, 0x03) // global
			content = appendULEB(content, fuelIdx+uint64(i))
		}
		out = appendSection(out, secExport, content)
		wroteExport = true
		return nil
	}
	rankGlobal, rankExport := sectionRank(secGlobal), sectionRank(secExport)

	for i := range sections {
		s := &sections[i]
		if s.id == secCustom {
			name, _ := customSectionName(*s) // checked above
			if strings.HasPrefix(name, ".debug_") || (name == "name" && !nameSectionOK(s.content)) {
				continue
			}
			out = appendSection(out, s.id, s.content)
			continue
		}
		rank := sectionRank(s.id)
		if !wroteGlobal && rank > rankGlobal {
			if err := emitGlobal(nil); err != nil {
				return nil, err
			}
		}
		if !wroteExport && rank > rankExport {
			if err := emitExport(); err != nil {
				return nil, err
			}
		}
		var err error
		switch s.id {
		case secGlobal:
			err = emitGlobal(s.content)
		case secExport:
			err = emitExport()
		case secCode:
			out = appendSection(out, secCode, code)
		default:
			out = appendSection(out, s.id, s.content)
		}
		if err != nil {
			return nil, err
		}
	}
	if !wroteGlobal {
		if err := emitGlobal(nil); err != nil {
			return nil, err
		}
	}
	if !wroteExport {
		if err := emitExport(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func appendSection(dst []byte, id byte, content []byte) []byte {
	dst = append(dst, id)
	dst = appendULEB(dst, uint64(len(content)))
	return append(dst, content...)
}

func (m *module) parseImports(s section) error {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if _, err := r.name(); err != nil { // module
			return err
		}
		if _, err := r.name(); err != nil { // name
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		switch kind {
		case 0x00: // func: typeidx
			if _, err := r.u32(); err != nil {
				return err
			}
			if m.importedFuncs == 0xffffffff {
				return r.errf("too many imported functions")
			}
			m.importedFuncs++
		case 0x01: // table: reftype limits
			if err := skipValType(r); err != nil {
				return err
			}
			if err := skipLimits(r); err != nil {
				return err
			}
		case 0x02: // memory: limits
			if err := skipLimits(r); err != nil {
				return err
			}
		case 0x03: // global: valtype mut
			if err := skipValType(r); err != nil {
				return err
			}
			if _, err := r.byte(); err != nil {
				return err
			}
			if m.importedGlobals == 0xffffffff {
				return r.errf("too many imported globals")
			}
			m.importedGlobals++
		case 0x04: // tag
			return fmt.Errorf("%w: exception handling (tag import at offset %d)", ErrUnsupported, r.off())
		default:
			return r.errf("unknown import kind 0x%02x", kind)
		}
	}
	if !r.eof() {
		return r.errf("import section has %d trailing bytes", len(r.b)-r.pos)
	}
	return nil
}

// parseTypes records the parameter count of every function type.
func (m *module) parseTypes(s section) error {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
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
		params, err := skipValTypes(r)
		if err != nil {
			return err
		}
		if _, err := skipValTypes(r); err != nil { // results
			return err
		}
		m.typeParams = append(m.typeParams, params)
	}
	if !r.eof() {
		return r.errf("type section has %d trailing bytes", len(r.b)-r.pos)
	}
	return nil
}

func skipValTypes(r *reader) (uint32, error) {
	n, err := r.u32()
	if err != nil {
		return 0, err
	}
	for i := uint32(0); i < n; i++ {
		if err := skipValType(r); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (m *module) parseFunctions(s section) error {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		t, err := r.u32()
		if err != nil {
			return err
		}
		if uint64(t) >= uint64(len(m.typeParams)) {
			return r.errf("function %d has unknown type %d", uint64(m.importedFuncs)+uint64(i), t)
		}
		m.funcTypes = append(m.funcTypes, t)
	}
	if !r.eof() {
		return r.errf("function section has %d trailing bytes", len(r.b)-r.pos)
	}
	return nil
}

// parseGlobals counts the defined globals and checks that the section is
// consumed exactly, so that the appended globals are decoded as such.
func (m *module) parseGlobals(s section) error {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if err := skipValType(r); err != nil {
			return err
		}
		if _, err := r.byte(); err != nil { // mutability
			return err
		}
		if err := skipConstExpr(r); err != nil {
			return err
		}
	}
	if !r.eof() {
		return r.errf("global section has %d trailing bytes", len(r.b)-r.pos)
	}
	m.definedGlobals = n
	return nil
}

// checkExports rejects a module that already exports ExportName or that
// exports a global index the appended globals would make valid. It returns
// the export count and the section's bytes after the count.
func (m *module) checkExports(s section, trackWrites bool) (uint32, []byte, error) {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return 0, nil, err
	}
	rest := r.pos
	for i := uint32(0); i < n; i++ {
		name, err := r.name()
		if err != nil {
			return 0, nil, err
		}
		if string(name) == ExportName || trackWrites && string(name) == DirtyExportName {
			return 0, nil, fmt.Errorf("%w (offset %d)", ErrExportConflict, r.off())
		}
		kind, err := r.byte()
		if err != nil {
			return 0, nil, err
		}
		idx, err := r.u32()
		if err != nil {
			return 0, nil, err
		}
		if kind == 0x03 && uint64(idx) >= m.numGlobals() {
			return 0, nil, r.errf("export of unknown global %d", idx)
		}
	}
	if !r.eof() {
		return 0, nil, r.errf("export section has %d trailing bytes", len(r.b)-r.pos)
	}
	return n, s.content[rest:], nil
}

// skipValType skips a value type: one byte, or a typed reference
// (0x63/0x64) followed by a heap type.
func skipValType(r *reader) error {
	_, err := valTypeRef(r)
	return err
}

// valTypeRef reads a value type and returns one more than the type index
// it names (a typed reference to a defined type), or 0.
func valTypeRef(r *reader) (uint64, error) {
	c, err := r.byte()
	if err != nil {
		return 0, err
	}
	if c == 0x63 || c == 0x64 {
		return readHeapType(r)
	}
	return 0, nil
}

func skipLimits(r *reader) error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags > 0x07 {
		return r.errf("invalid limits flags 0x%02x", flags)
	}
	if _, err := r.uleb(64); err != nil {
		return err
	}
	if flags&0x01 != 0 {
		if _, err := r.uleb(64); err != nil {
			return err
		}
	}
	return nil
}

// skipConstExpr skips a constant expression up to and including its end.
func skipConstExpr(r *reader) error {
	depth := 0
	for {
		start := r.off()
		in, err := decodeInstr(r, nil)
		if err != nil {
			return err
		}
		switch in.flow {
		case flowBlock, flowLoop:
			depth++
		case flowEnd:
			if depth == 0 {
				return nil
			}
			depth--
		case flowUnsupported:
			return fmt.Errorf("%w: opcode %s in constant expression at offset %d", ErrUnsupported, in.op, start)
		}
	}
}
