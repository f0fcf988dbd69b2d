package meter

import "fmt"

// insertion kinds.
const (
	insEntry      = iota // function entry: load the counter from the global, charge (>= 1)
	insCharge            // charge a metered block (skipped if 0)
	insLoop              // charge a loop body's first block (>= 1)
	insReload            // after a call: reload the counter, charge (may be 0)
	insSpill             // store the counter to the global
	insBulkMemory        // run-time length charge (bytes >> memoryShift)
	insBulkTable         // run-time length charge (elements)
)

// insertion is metering code to insert before body[pos].
type insertion struct {
	pos     uint32
	kind    uint8
	checked bool // trap right away if the charge overdraws the counter
	cost    uint64
}

type frameKind uint8

const (
	frameFunc frameKind = iota
	frameBlock
	frameLoop
	frameIf
)

type frame struct {
	kind     frameKind
	targeted bool // a branch to this label exists
	hasElse  bool
	thenSeg  int // metered block open at `else`, -1 if dead
}

// rewriteCode instruments every function body of the code section and
// returns the new section contents.
func (m *module) rewriteCode(s section, opts *Options, fuelIdx uint32) ([]byte, error) {
	r := &reader{b: s.content, base: s.start}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) != uint64(len(m.funcTypes)) {
		return nil, fmt.Errorf("%w: code section has %d bodies, function section declares %d", ErrMalformed, n, len(m.funcTypes))
	}
	out := make([]byte, 0, len(s.content)+len(s.content)/2+16)
	out = appendULEB(out, uint64(n))
	fi := &funcInstrumenter{m: m, cost: opts.Cost, checkAll: opts.CheckEveryBlock, fuelGlobal: fuelIdx}
	for i := uint32(0); i < n; i++ {
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		bodyStart := r.off()
		if size > maxBodySize {
			return nil, fmt.Errorf("%w: function %d body of %d bytes is too large", ErrUnsupported, uint64(m.importedFuncs)+uint64(i), size)
		}
		body, err := r.bytes(uint64(size))
		if err != nil {
			return nil, err
		}
		fi.funcIdx = uint64(m.importedFuncs) + uint64(i)
		fi.params = m.typeParams[m.funcTypes[i]]
		newBody, err := fi.instrument(body, bodyStart)
		if err != nil {
			return nil, err
		}
		out = appendULEB(out, uint64(len(newBody)))
		out = append(out, newBody...)
	}
	if !r.eof() {
		return nil, r.errf("code section has %d trailing bytes", len(r.b)-r.pos)
	}
	return out, nil
}

// funcInstrumenter holds the state reused across function bodies.
type funcInstrumenter struct {
	m          *module
	cost       func(Opcode) uint32
	checkAll   bool
	fuelGlobal uint32
	funcIdx    uint64
	params     uint32

	// Per function.
	fuelLocal    uint32 // local caching the counter
	scratchLocal uint32 // i32 local holding a bulk operation's length
	ins          []insertion
	frames       []frame
	labels       []uint32
	buf          []byte
}

// instrument returns the metered version of one function body (locals and
// expression). base is the body's offset in the module.
//
// Within a function the counter lives in a new i64 local: it is loaded from
// the global at entry and after every call, and stored back before every
// call and every exit (return, tail call, branch out of the function, end,
// unreachable, and before a fuel trap), so the global is current whenever
// another function or the host can observe it.
func (f *funcInstrumenter) instrument(body []byte, base int) ([]byte, error) {
	r := &reader{b: body, base: base}

	groups, err := r.u32()
	if err != nil {
		return nil, err
	}
	nLocals := uint64(f.params)
	for g := uint32(0); g < groups; g++ {
		cnt, err := r.u32()
		if err != nil {
			return nil, err
		}
		nLocals += uint64(cnt)
		if nLocals-uint64(f.params) > maxLocals {
			return nil, fmt.Errorf("%w: function %d declares more than %d locals", ErrUnsupported, f.funcIdx, maxLocals)
		}
		if err := skipValType(r); err != nil {
			return nil, err
		}
	}
	localsEnd := r.pos
	f.fuelLocal = uint32(nLocals)
	f.scratchLocal = uint32(nLocals) + 1
	usesScratch := false

	f.ins = append(f.ins[:0], insertion{pos: uint32(r.pos), kind: insEntry, checked: true})
	f.frames = append(f.frames[:0], frame{kind: frameFunc})
	cur := 0 // index in f.ins of the open metered block; -1 while dead
	newBlock := func(pos int, kind uint8) {
		f.ins = append(f.ins, insertion{pos: uint32(pos), kind: kind})
		cur = len(f.ins) - 1
	}
	spill := func(pos int) {
		if cur >= 0 {
			f.ins = append(f.ins, insertion{pos: uint32(pos), kind: insSpill})
		}
	}
	numGlobals := f.m.numGlobals()

	for len(f.frames) > 0 {
		start := r.pos
		f.labels = f.labels[:0]
		in, err := decodeInstr(r, &f.labels)
		if err != nil {
			return nil, err
		}
		if in.flow == flowUnsupported {
			return nil, fmt.Errorf("%w: unsupported opcode %s at function %d offset %d", ErrUnsupported, in.op, f.funcIdx, base+start)
		}
		if cur >= 0 {
			f.ins[cur].cost += uint64(f.cost(in.op))
			// The host must never run with an overdrawn counter: a
			// block that may call an import, or grows the memory,
			// checks its charge.
			if in.grow || (in.call && (!in.direct || in.idx < f.m.importedFuncs)) {
				f.ins[cur].checked = true
			}
		}
		// Mark branch targets; a branch to the function's label returns.
		exits := false
		for _, l := range f.labels {
			if uint64(l) >= uint64(len(f.frames)) {
				return nil, fmt.Errorf("%w: unknown label %d at function %d offset %d", ErrMalformed, l, f.funcIdx, base+start)
			}
			d := len(f.frames) - 1 - int(l)
			f.frames[d].targeted = true
			exits = exits || d == 0
		}
		if exits {
			spill(start)
		}

		switch in.flow {
		case flowBlock:
			// Entered only by falling through: the open block continues.
			f.frames = append(f.frames, frame{kind: frameBlock})
		case flowIf:
			f.frames = append(f.frames, frame{kind: frameIf})
			newBlock(r.pos, insCharge)
		case flowLoop:
			f.frames = append(f.frames, frame{kind: frameLoop})
			newBlock(r.pos, insLoop)
			f.ins[cur].checked = true
		case flowElse:
			top := &f.frames[len(f.frames)-1]
			if top.kind != frameIf || top.hasElse {
				return nil, fmt.Errorf("%w: else without if at function %d offset %d", ErrMalformed, f.funcIdx, base+start)
			}
			top.hasElse = true
			top.thenSeg = cur
			newBlock(r.pos, insCharge)
		case flowEnd:
			top := f.frames[len(f.frames)-1]
			f.frames = f.frames[:len(f.frames)-1]
			switch top.kind {
			case frameFunc:
				spill(start)
			case frameLoop:
				// Only the loop body's fall-through gets past the end.
			case frameBlock:
				if top.targeted {
					newBlock(r.pos, insCharge) // a join point
				}
			case frameIf:
				switch {
				case top.targeted || !top.hasElse || (top.thenSeg >= 0 && cur >= 0):
					newBlock(r.pos, insCharge) // a join point
				case top.thenSeg >= 0:
					// Only the then branch falls through.
					cur = top.thenSeg
				}
			}
		case flowCondBranch:
			newBlock(r.pos, insCharge)
		case flowCall:
			spill(start)
			newBlock(r.pos, insReload)
		case flowBranch:
			cur = -1
		case flowReturn, flowUnreachable:
			spill(start)
			cur = -1
		case flowBulkMemory, flowBulkTable:
			if cur >= 0 {
				kind := uint8(insBulkMemory)
				if in.flow == flowBulkTable {
					kind = insBulkTable
				}
				f.ins = append(f.ins, insertion{pos: uint32(start), kind: kind})
				usesScratch = true
			}
		case flowGlobal:
			// The fuel global must stay out of the guest's reach: an
			// index the appended global would make valid is an error,
			// as it was before.
			if uint64(in.idx) >= numGlobals {
				return nil, fmt.Errorf("%w: unknown global %d at function %d offset %d", ErrMalformed, in.idx, f.funcIdx, base+start)
			}
		case flowLocal:
			// Likewise for the appended locals.
			if uint64(in.idx) >= nLocals {
				return nil, fmt.Errorf("%w: unknown local %d at function %d offset %d", ErrMalformed, in.idx, f.funcIdx, base+start)
			}
		}
	}
	if !r.eof() {
		return nil, r.errf("function %d has %d bytes after its end", f.funcIdx, len(r.b)-r.pos)
	}

	// Emit: the locals plus the new ones, then the original expression with
	// the metering code spliced in.
	out := f.buf[:0]
	newGroups := uint64(groups) + 1
	if usesScratch {
		newGroups++
	}
	out = appendULEB(out, newGroups)
	out = append(out, body[skipULEB(body):localsEnd]...)
	out = append(out, 0x01, 0x7e) // 1 x i64: the counter
	if usesScratch {
		out = append(out, 0x01, 0x7f) // 1 x i32: the scratch
	}
	last := uint32(localsEnd)
	for _, in := range f.ins {
		if in.kind == insCharge && in.cost == 0 {
			continue
		}
		out = append(out, body[last:in.pos]...)
		last = in.pos
		switch in.kind {
		case insEntry:
			out = f.appendGlobalGet(out)
			out = f.appendCharge(out, max(in.cost, 1), true)
		case insCharge, insLoop:
			out = f.appendLocalGet(out)
			out = f.appendCharge(out, max(in.cost, 1), in.checked || f.checkAll)
		case insReload:
			out = f.appendGlobalGet(out)
			// Checked even at cost 0: the callee may have returned with
			// an overdrawn counter, which must not carry over to the
			// caller's unchecked charges.
			out = f.appendCharge(out, in.cost, true)
		case insSpill:
			out = f.appendSpill(out)
		case insBulkMemory, insBulkTable:
			out = f.appendLengthCharge(out, in.kind == insBulkMemory)
		}
	}
	out = append(out, body[last:]...)
	f.buf = out
	return out, nil
}

// skipULEB returns the length of the LEB128 number at the start of b
// (already validated).
func skipULEB(b []byte) int {
	n := 0
	for b[n]&0x80 != 0 {
		n++
	}
	return n + 1
}

func (f *funcInstrumenter) appendGlobalGet(out []byte) []byte {
	out = append(out, 0x23)
	return appendULEB(out, uint64(f.fuelGlobal))
}

func (f *funcInstrumenter) appendLocalGet(out []byte) []byte {
	out = append(out, 0x20)
	return appendULEB(out, uint64(f.fuelLocal))
}

func (f *funcInstrumenter) appendLocalSet(out []byte) []byte {
	out = append(out, 0x21)
	return appendULEB(out, uint64(f.fuelLocal))
}

// appendSpill stores the counter to the global.
func (f *funcInstrumenter) appendSpill(out []byte) []byte {
	out = f.appendLocalGet(out)
	out = append(out, 0x24)
	return appendULEB(out, uint64(f.fuelGlobal))
}

// appendCharge subtracts cost from the counter on the stack and stores the
// result in the local; if checked, it traps if the result is negative.
func (f *funcInstrumenter) appendCharge(out []byte, cost uint64, checked bool) []byte {
	out = append(out, 0x42) // i64.const cost
	out = appendSLEB(out, clampCost(cost))
	out = append(out, 0x7d) // i64.sub
	if !checked {
		return f.appendLocalSet(out)
	}
	return f.appendCheck(out)
}

// appendCheck stores the counter on the stack in the local and traps if it
// is negative, after storing it to the global for the host to see:
//
//	local.tee $fuel; i64.const 0; i64.lt_s
//	if; local.get $fuel; global.set $fuel; unreachable; end
func (f *funcInstrumenter) appendCheck(out []byte) []byte {
	out = append(out, 0x22) // local.tee
	out = appendULEB(out, uint64(f.fuelLocal))
	out = append(out, 0x42, 0x00, 0x53, 0x04, 0x40) // i64.const 0; i64.lt_s; if
	out = f.appendSpill(out)
	return append(out, 0x00, 0x0b) // unreachable; end
}

// appendLengthCharge appends the run-time charge of a bulk operation whose
// i32 length operand is on top of the stack; the stack is left unchanged.
func (f *funcInstrumenter) appendLengthCharge(out []byte, memory bool) []byte {
	out = append(out, 0x21) // local.set $scratch (pops the length)
	out = appendULEB(out, uint64(f.scratchLocal))
	out = f.appendLocalGet(out)
	out = append(out, 0x20) // local.get $scratch
	out = appendULEB(out, uint64(f.scratchLocal))
	out = append(out, 0xad) // i64.extend_i32_u
	if memory {
		out = append(out, 0x42, memoryShift, 0x88) // i64.const shift; i64.shr_u
	}
	out = append(out, 0x7d) // i64.sub
	out = f.appendCheck(out)
	out = append(out, 0x20) // local.get $scratch (pushes the length back)
	return appendULEB(out, uint64(f.scratchLocal))
}
