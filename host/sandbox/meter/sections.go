package meter

import "fmt"

// The checks below cover the sections Instrument copies without rewriting.
// They do not validate the module (the compiler does); they make sure that
// no count or length in a module Instrument accepts claims more than the
// bytes present, because wazero's decoder allocates by such claims before
// reading: a module of a few bytes could otherwise make the compiler
// allocate gigabytes. The same goes for the number of locals of a function
// (see maxLocals).

// maxLocals bounds the locals a function may declare (parameters
// excluded). wazero allocates one byte per declared local; web engines
// share this limit, so real-world modules stay below it.
const maxLocals = 50_000

// checkCopiedSection checks the framing of a section that is copied as is.
func checkCopiedSection(s section) error {
	r := &reader{b: s.content, base: s.start}
	var err error
	switch s.id {
	case secTable:
		err = forEach(r, checkTable)
	case secMemory:
		err = forEach(r, skipLimits)
	case secElement:
		err = forEach(r, checkElement)
	case secData:
		err = forEach(r, checkData)
	case secStart, secDataCount:
		_, err = r.u32()
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if !r.eof() {
		return r.errf("section %d has %d trailing bytes", s.id, len(r.b)-r.pos)
	}
	return nil
}

// forEach reads a vector count and calls item that many times; each item
// consumes at least one byte, so a lying count fails at the end of input.
func forEach(r *reader, item func(*reader) error) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if err := item(r); err != nil {
			return err
		}
	}
	return nil
}

func checkTable(r *reader) error {
	if r.pos < len(r.b) && r.b[r.pos] == 0x40 { // 0x40 0x00 tabletype expr
		r.pos++
		if c, err := r.byte(); err != nil || c != 0x00 {
			return r.errf("invalid table with initializer")
		}
		if err := skipValType(r); err != nil {
			return err
		}
		if err := skipLimits(r); err != nil {
			return err
		}
		return skipConstExpr(r)
	}
	if err := skipValType(r); err != nil {
		return err
	}
	return skipLimits(r)
}

func checkElement(r *reader) error {
	flags, err := r.u32()
	if err != nil {
		return err
	}
	if flags > 7 {
		return r.errf("invalid element segment flags %d", flags)
	}
	if flags&0x02 != 0 && flags&0x01 == 0 { // explicit table index
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	if flags&0x01 == 0 { // active: offset expression
		if err := skipConstExpr(r); err != nil {
			return err
		}
	}
	usesExprs := flags&0x04 != 0
	if flags&0x03 != 0 { // element kind or reference type
		if usesExprs {
			err = skipValType(r)
		} else {
			_, err = r.byte()
		}
		if err != nil {
			return err
		}
	}
	if usesExprs {
		return forEach(r, skipConstExpr)
	}
	return forEach(r, func(r *reader) error { _, err := r.u32(); return err })
}

func checkData(r *reader) error {
	flags, err := r.u32()
	if err != nil {
		return err
	}
	switch flags {
	case 0:
		err = skipConstExpr(r)
	case 1:
	case 2:
		if _, err = r.u32(); err == nil {
			err = skipConstExpr(r)
		}
	default:
		return r.errf("invalid data segment flags %d", flags)
	}
	if err != nil {
		return err
	}
	_, err = r.name() // the bytes
	return err
}

// customSectionName returns a custom section's name.
func customSectionName(s section) (string, error) {
	r := &reader{b: s.content, base: s.start}
	name, err := r.name()
	if err != nil {
		return "", fmt.Errorf("custom section name: %w", err)
	}
	return string(name), nil
}

// nameSectionOK reports whether a `name` section's module, function and
// local name subsections are well-framed. One that is not is dropped: it is
// debug information, and wazero's decoder allocates by its counts.
func nameSectionOK(content []byte) bool {
	r := &reader{b: content}
	if _, err := r.name(); err != nil {
		return false
	}
	skipName := func(r *reader) error { _, err := r.name(); return err }
	skipAssoc := func(r *reader) error { // index name
		if _, err := r.u32(); err != nil {
			return err
		}
		return skipName(r)
	}
	for !r.eof() {
		id, _ := r.byte()
		size, err := r.u32()
		if err != nil {
			return false
		}
		sub, err := r.bytes(uint64(size))
		if err != nil {
			return false
		}
		sr := &reader{b: sub}
		switch id {
		case 0:
			err = skipName(sr)
		case 1:
			err = forEach(sr, skipAssoc)
		case 2:
			err = forEach(sr, func(r *reader) error {
				if _, err := r.u32(); err != nil {
					return err
				}
				return forEach(r, skipAssoc)
			})
		default:
			continue
		}
		if err != nil || !sr.eof() {
			return false
		}
	}
	return true
}
