package meter

import (
	"errors"
	"fmt"
)

// RefuelModule and RefuelName name the host function that Options.Refuel
// imports, of type () -> ().
const (
	RefuelModule = "logline_meter"
	RefuelName   = "refuel"
)

// ErrReservedImport reports a module that already imports
// RefuelModule.RefuelName (for instance one that was instrumented already).
var ErrReservedImport = errors.New("module already imports " + RefuelModule + "." + RefuelName)

// addRefuelImport returns a copy of the module that imports the refuel
// function after its other imports, and that function's index. Imports
// come first in the function index space, so every function the module
// defines moves up by one: the immediates of call, return_call and
// ref.func, function exports, the start function, element segments,
// constant expressions and the function-indexed subsections of the `name`
// section are renumbered. The new function type () -> () is appended to the
// type section, so no type index changes.
func addRefuelImport(wasm []byte) ([]byte, uint32, error) {
	secs, err := splitSections(wasm)
	if err != nil {
		return nil, 0, err
	}
	var nTypes, nFuncs uint32 // types, imported functions
	for _, s := range secs {
		r := &reader{b: s.content, base: s.start}
		switch s.id {
		case secType:
			if nTypes, err = r.u32(); err != nil {
				return nil, 0, err
			}
		case secImport:
			err = forEach(r, func(r *reader) error {
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
				if kind == KindFunc {
					if string(mod) == RefuelModule && string(name) == RefuelName {
						return fmt.Errorf("%w (offset %d)", ErrReservedImport, r.off())
					}
					nFuncs++
				}
				return skipImportDesc(r, kind)
			})
			if err != nil {
				return nil, 0, err
			}
		}
	}
	if nTypes == 0xffffffff || nFuncs == 0xffffffff {
		return nil, 0, fmt.Errorf("%w: too many types or imports", ErrMalformed)
	}
	rw := &renumberer{first: nFuncs, nTypes: nTypes}

	newType := []byte{0x60, 0x00, 0x00}
	newImport := appendULEB(nil, uint64(len(RefuelModule)))
	newImport = append(newImport, RefuelModule...)
	newImport = appendULEB(newImport, uint64(len(RefuelName)))
	newImport = append(newImport, RefuelName...)
	newImport = append(newImport, KindFunc)
	newImport = appendULEB(newImport, uint64(nTypes))

	out := make([]byte, 0, len(wasm)+len(wasm)/8+64)
	out = append(out, wasmHeader...)
	wroteType, wroteImport := false, false
	for _, s := range secs {
		if s.id != secCustom {
			rank := sectionRank(s.id)
			if !wroteType && rank > sectionRank(secType) {
				out = appendSection(out, secType, append(appendULEB(nil, 1), newType...))
				wroteType = true
			}
			if !wroteImport && rank > sectionRank(secImport) {
				out = appendSection(out, secImport, append(appendULEB(nil, 1), newImport...))
				wroteImport = true
			}
		}
		r := &reader{b: s.content, base: s.start}
		var content []byte
		switch s.id {
		case secCustom:
			name, _ := customSectionName(s) // checked by splitSections
			if name != "name" {
				content = s.content
				break
			}
			if content = rw.nameSection(s.content); content == nil {
				continue // malformed debug names are dropped, as Instrument does
			}
		case secType:
			if err = forEach(r, rw.funcType); err == nil {
				content = appendVector(s.content, nTypes, newType)
			}
			wroteType = true
		case secImport:
			var n uint32
			n, err = r.u32()
			for i := uint32(0); i < n && err == nil; i++ {
				err = rw.importEntry(r)
			}
			content = appendVector(s.content, n, newImport)
			wroteImport = true
		case secFunction:
			err = forEach(r, func(r *reader) error {
				idx, err := r.u32()
				if err == nil {
					err = rw.checkType(r, uint64(idx)+1)
				}
				return err
			})
			content = s.content
		case secTable:
			content, err = rw.vector(r, rw.table)
		case secGlobal:
			content, err = rw.vector(r, func(r *reader, out []byte) ([]byte, error) {
				start := r.pos
				if err := rw.valType(r); err != nil {
					return nil, err
				}
				if _, err := r.byte(); err != nil { // mutability
					return nil, err
				}
				out = append(out, r.b[start:r.pos]...)
				return rw.constExpr(r, out)
			})
		case secExport:
			content, err = rw.vector(r, func(r *reader, out []byte) ([]byte, error) {
				start := r.pos
				if _, err := r.name(); err != nil {
					return nil, err
				}
				kind, err := r.byte()
				if err != nil {
					return nil, err
				}
				out = append(out, r.b[start:r.pos]...)
				if kind == KindFunc {
					return rw.funcIdx(r, out)
				}
				idx, err := r.u32()
				return appendULEB(out, uint64(idx)), err
			})
		case secStart:
			content, err = rw.funcIdx(r, nil)
		case secElement:
			content, err = rw.vector(r, rw.element)
		case secCode:
			content, err = rw.vector(r, rw.body)
		default:
			content = s.content
			r.pos = len(r.b)
		}
		if err != nil {
			return nil, 0, err
		}
		if s.id != secCustom && !r.eof() {
			return nil, 0, r.errf("section %d has %d trailing bytes", s.id, len(r.b)-r.pos)
		}
		out = appendSection(out, s.id, content)
	}
	if !wroteType {
		out = appendSection(out, secType, append(appendULEB(nil, 1), newType...))
	}
	if !wroteImport {
		out = appendSection(out, secImport, append(appendULEB(nil, 1), newImport...))
	}
	return out, nFuncs, nil
}

// appendVector re-encodes a vector section of n entries with one more entry
// appended.
func appendVector(content []byte, n uint32, entry []byte) []byte {
	rest := content[skipULEB(content):]
	out := appendULEB(nil, uint64(n)+1)
	out = append(out, rest...)
	return append(out, entry...)
}

// skipImportDesc skips the description of an import.
func skipImportDesc(r *reader, kind byte) error {
	switch kind {
	case KindFunc:
		_, err := r.u32()
		return err
	case KindTable:
		if err := skipValType(r); err != nil {
			return err
		}
		return skipLimits(r)
	case KindMemory:
		return skipLimits(r)
	case KindGlobal:
		if err := skipValType(r); err != nil {
			return err
		}
		_, err := r.byte()
		return err
	case KindTag:
		return fmt.Errorf("%w: exception handling (tag import at offset %d)", ErrUnsupported, r.off())
	}
	return r.errf("unknown import kind 0x%02x", kind)
}

// renumberer rewrites function indices at or above first to one more. As
// it goes, it checks that no type index at or above nTypes is named: the
// appended type would make such a module, invalid as it was, valid.
type renumberer struct {
	first  uint32
	nTypes uint32
}

// checkType fails if ref (a type index plus one, 0 for none) names a type
// the module does not define.
func (rw *renumberer) checkType(r *reader, ref uint64) error {
	if ref > uint64(rw.nTypes) {
		return r.errf("unknown type %d", ref-1)
	}
	return nil
}

func (rw *renumberer) valType(r *reader) error {
	ref, err := valTypeRef(r)
	if err != nil {
		return err
	}
	return rw.checkType(r, ref)
}

func (rw *renumberer) valTypes(r *reader) error {
	return forEach(r, rw.valType)
}

// funcType checks a function type's value types.
func (rw *renumberer) funcType(r *reader) error {
	form, err := r.byte()
	if err != nil {
		return err
	}
	if form != 0x60 {
		return r.errf("invalid type form 0x%02x", form)
	}
	if err := rw.valTypes(r); err != nil {
		return err
	}
	return rw.valTypes(r)
}

// importEntry checks an import's type indices.
func (rw *renumberer) importEntry(r *reader) error {
	for i := 0; i < 2; i++ { // module, name
		if _, err := r.name(); err != nil {
			return err
		}
	}
	kind, err := r.byte()
	if err != nil {
		return err
	}
	switch kind {
	case KindFunc:
		idx, err := r.u32()
		if err != nil {
			return err
		}
		return rw.checkType(r, uint64(idx)+1)
	case KindTable:
		if err := rw.valType(r); err != nil {
			return err
		}
		return skipLimits(r)
	case KindGlobal:
		if err := rw.valType(r); err != nil {
			return err
		}
		_, err := r.byte()
		return err
	}
	return skipImportDesc(r, kind)
}

func (rw *renumberer) shift(idx uint32) (uint32, error) {
	if idx < rw.first {
		return idx, nil
	}
	if idx == 0xffffffff {
		return 0, fmt.Errorf("%w: function index %d out of range", ErrMalformed, idx)
	}
	return idx + 1, nil
}

// funcIdx copies a function index, renumbered.
func (rw *renumberer) funcIdx(r *reader, out []byte) ([]byte, error) {
	idx, err := r.u32()
	if err != nil {
		return nil, err
	}
	if idx, err = rw.shift(idx); err != nil {
		return nil, err
	}
	return appendULEB(out, uint64(idx)), nil
}

// vector copies a vector, rewriting each item with item.
func (rw *renumberer) vector(r *reader, item func(*reader, []byte) ([]byte, error)) ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(r.b)+len(r.b)/8+8)
	out = appendULEB(out, uint64(n))
	for i := uint32(0); i < n; i++ {
		if out, err = item(r, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// instrs copies instructions, renumbering the function indices of call,
// return_call and ref.func, up to the end of a constant expression (body
// false) or of r (a function body).
func (rw *renumberer) instrs(r *reader, out []byte, body bool) ([]byte, error) {
	depth := 0
	for !body || !r.eof() {
		start := r.pos
		in, err := decodeInstr(r, nil)
		if err != nil {
			return nil, err
		}
		if err := rw.checkType(r, in.typeRef); err != nil {
			return nil, err
		}
		switch op := r.b[start]; {
		case op == 0x10 || op == 0x12 || op == 0xd2: // call, return_call, ref.func
			ir := &reader{b: r.b, pos: start + 1, base: r.base}
			out = append(out, op)
			if out, err = rw.funcIdx(ir, out); err != nil {
				return nil, err
			}
		default:
			out = append(out, r.b[start:r.pos]...)
		}
		if body {
			if in.flow == flowUnsupported {
				// Instrument refuses it, naming the function.
				out = append(out, r.b[r.pos:]...)
				r.pos = len(r.b)
				return out, nil
			}
			continue
		}
		switch in.flow {
		case flowBlock, flowLoop, flowIf:
			depth++
		case flowEnd:
			if depth == 0 {
				return out, nil
			}
			depth--
		case flowUnsupported:
			return nil, fmt.Errorf("%w: opcode %s in constant expression at offset %d", ErrUnsupported, in.op, r.base+start)
		}
	}
	return out, nil
}

func (rw *renumberer) constExpr(r *reader, out []byte) ([]byte, error) {
	return rw.instrs(r, out, false)
}

// body copies one entry of the code section.
func (rw *renumberer) body(r *reader, out []byte) ([]byte, error) {
	size, err := r.u32()
	if err != nil {
		return nil, err
	}
	if size > maxBodySize {
		return nil, fmt.Errorf("%w: function body of %d bytes at offset %d is too large", ErrUnsupported, size, r.off())
	}
	b, err := r.bytes(uint64(size))
	if err != nil {
		return nil, err
	}
	br := &reader{b: b, base: r.base + r.pos - len(b)}
	var fn []byte
	err = forEach(br, func(r *reader) error { // local groups: count type
		if _, err := r.u32(); err != nil {
			return err
		}
		return rw.valType(r)
	})
	if err != nil {
		return nil, err
	}
	fn = append(fn, b[:br.pos]...)
	if fn, err = rw.instrs(br, fn, true); err != nil {
		return nil, err
	}
	out = appendULEB(out, uint64(len(fn)))
	return append(out, fn...), nil
}

// table copies a table entry: a table type, or 0x40 0x00, a table type and
// an initializer expression.
func (rw *renumberer) table(r *reader, out []byte) ([]byte, error) {
	start := r.pos
	withInit := r.pos < len(r.b) && r.b[r.pos] == 0x40
	if withInit {
		r.pos++
		if c, err := r.byte(); err != nil || c != 0x00 {
			return nil, r.errf("invalid table with initializer")
		}
	}
	if err := rw.valType(r); err != nil {
		return nil, err
	}
	if err := skipLimits(r); err != nil {
		return nil, err
	}
	out = append(out, r.b[start:r.pos]...)
	if withInit {
		return rw.constExpr(r, out)
	}
	return out, nil
}

// element copies an element segment (see checkElement for its forms).
func (rw *renumberer) element(r *reader, out []byte) ([]byte, error) {
	flags, err := r.u32()
	if err != nil {
		return nil, err
	}
	if flags > 7 {
		return nil, r.errf("invalid element segment flags %d", flags)
	}
	out = appendULEB(out, uint64(flags))
	if flags&0x02 != 0 && flags&0x01 == 0 { // explicit table index
		if out, err = rw.copyU32(r, out); err != nil {
			return nil, err
		}
	}
	if flags&0x01 == 0 { // active: offset expression
		if out, err = rw.constExpr(r, out); err != nil {
			return nil, err
		}
	}
	usesExprs := flags&0x04 != 0
	if flags&0x03 != 0 { // element kind or reference type
		start := r.pos
		if usesExprs {
			err = rw.valType(r)
		} else {
			_, err = r.byte()
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.b[start:r.pos]...)
	}
	item := rw.funcIdx
	if usesExprs {
		item = rw.constExpr
	}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	out = appendULEB(out, uint64(n))
	for i := uint32(0); i < n; i++ {
		if out, err = item(r, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (rw *renumberer) copyU32(r *reader, out []byte) ([]byte, error) {
	v, err := r.u32()
	return appendULEB(out, uint64(v)), err
}

// nameSection renumbers the function-indexed subsections of a `name`
// section (1: function names, 2: local names, 3: label names) and copies the
// others. It returns nil for a section that does not parse.
func (rw *renumberer) nameSection(content []byte) []byte {
	if !nameSectionOK(content) {
		return nil
	}
	r := &reader{b: content}
	name, _ := r.name()
	out := appendULEB(nil, uint64(len(name)))
	out = append(out, name...)
	assoc := func(r *reader, out []byte) ([]byte, error) { // index name
		out, err := rw.funcIdx(r, out)
		if err != nil {
			return nil, err
		}
		start := r.pos
		_, err = r.name()
		return append(out, r.b[start:r.pos]...), err
	}
	indirect := func(r *reader, out []byte) ([]byte, error) { // funcidx namemap
		out, err := rw.funcIdx(r, out)
		if err != nil {
			return nil, err
		}
		start := r.pos
		err = forEach(r, func(r *reader) error {
			if _, err := r.u32(); err != nil {
				return err
			}
			_, err := r.name()
			return err
		})
		return append(out, r.b[start:r.pos]...), err
	}
	for !r.eof() {
		id, _ := r.byte()
		size, err := r.u32()
		if err != nil {
			return nil
		}
		sub, err := r.bytes(uint64(size))
		if err != nil {
			return nil
		}
		sr := &reader{b: sub}
		switch id {
		case 1:
			sub, err = rw.vector(sr, assoc)
		case 2, 3:
			sub, err = rw.vector(sr, indirect)
		}
		if err != nil {
			return nil
		}
		out = append(out, id)
		out = appendULEB(out, uint64(len(sub)))
		out = append(out, sub...)
	}
	return out
}
