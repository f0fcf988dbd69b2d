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
	insStore             // record the chunk a store writes (TrackWrites)
)

// insertion is metering code to insert before body[pos].
type insertion struct {
	pos     uint32
	kind    uint8
	checked bool // trap right away if the charge overdraws the counter
	cost    uint64
	store   byte   // insStore: the value type stored
	offset  uint64 // insStore: the memarg offset
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
func (m *module) rewriteCode(s section, opts *Options, fuelIdx, refuelFunc uint32) ([]byte, error) {
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
	fi := &funcInstrumenter{m: m, cost: opts.Cost, checkAll: opts.CheckEveryBlock, fuelGlobal: fuelIdx, refuel: opts.Refuel, refuelFunc: refuelFunc,
		track: opts.TrackWrites, shift: opts.WriteShift, dirtyGlobal: fuelIdx + 1}
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
	refuel     bool   // call refuelFunc instead of trapping
	refuelFunc uint32 // index of the imported refuel function
	funcIdx    uint64
	params     uint32
	// TrackWrites.
	track       bool
	shift       uint8
	dirtyGlobal uint32

	// Per function.
	fuelLocal    uint32 // local caching the counter
	scratchLocal uint32 // i32 local holding a bulk operation's length
	// TrackWrites: the local collecting the function's dirty bits, one
	// holding the address written, and one per value type stored (the
	// i32 and i64 ones also serve bulk operations).
	dirtyLocal, addrLocal uint32
	tmpLocal              map[byte]uint32
	ins                   []insertion
	frames                []frame
	labels                []uint32
	buf                   []byte
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
	writes := map[byte]bool{} // TrackWrites: value types of the temporaries needed

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
		case flowPlain:
			if in.store != 0 && f.track && cur >= 0 {
				f.ins = append(f.ins, insertion{pos: uint32(start), kind: insStore, store: in.store, offset: in.offset})
				writes[in.store] = true
			}
		case flowBulkMemory, flowBulkTable:
			if in.flow == flowBulkMemory && f.track && cur >= 0 {
				writes[ValI32], writes[ValI64] = true, true
			}
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
	var extra []byte // groups of new locals after the counter and the scratch
	nExtra := uint64(0)
	if len(writes) > 0 {
		next := f.scratchLocal
		if usesScratch {
			next++
		}
		f.dirtyLocal, f.addrLocal = next, next+1
		extra = append(extra, 0x01, ValI64, 0x01, ValI32)
		next += 2
		f.tmpLocal = map[byte]uint32{}
		for _, t := range []byte{ValI32, ValI64, ValF32, ValF64, ValV128} {
			if writes[t] {
				f.tmpLocal[t] = next
				next++
				extra = append(extra, 0x01, t)
			}
		}
		nExtra = uint64(len(extra) / 2)
	}
	out := f.buf[:0]
	newGroups := uint64(groups) + 1 + nExtra
	if usesScratch {
		newGroups++
	}
	out = appendULEB(out, newGroups)
	out = append(out, body[skipULEB(body):localsEnd]...)
	out = append(out, 0x01, 0x7e) // 1 x i64: the counter
	if usesScratch {
		out = append(out, 0x01, 0x7f) // 1 x i32: the scratch
	}
	out = append(out, extra...)
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
			if len(writes) > 0 {
				out = f.appendDirtySpill(out)
			}
		case insBulkMemory, insBulkTable:
			if in.kind == insBulkMemory && len(writes) > 0 {
				out = f.appendRangeMark(out)
			}
			out = f.appendLengthCharge(out, in.kind == insBulkMemory)
		case insStore:
			out = f.appendStoreMark(out, in.store, in.offset)
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
//
// With Options.Refuel it calls the host instead of trapping, and reloads
// the counter the host refilled:
//
//	if; local.get $fuel; global.set $fuel; call $refuel
//	    global.get $fuel; local.set $fuel; end
func (f *funcInstrumenter) appendCheck(out []byte) []byte {
	out = append(out, 0x22) // local.tee
	out = appendULEB(out, uint64(f.fuelLocal))
	out = append(out, 0x42, 0x00, 0x53, 0x04, 0x40) // i64.const 0; i64.lt_s; if
	out = f.appendSpill(out)
	if !f.refuel {
		return append(out, 0x00, 0x0b) // unreachable; end
	}
	out = append(out, 0x10) // call
	out = appendULEB(out, uint64(f.refuelFunc))
	out = f.appendGlobalGet(out)
	out = f.appendLocalSet(out)
	return append(out, 0x0b) // end
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

func appendLocal(out []byte, op byte, idx uint32) []byte {
	return appendULEB(append(out, op), uint64(idx))
}

// appendDirtySpill merges the function's dirty bits into the global:
//
//	global.get $dirty; local.get $dirty; i64.or; global.set $dirty
func (f *funcInstrumenter) appendDirtySpill(out []byte) []byte {
	out = appendULEB(append(out, 0x23), uint64(f.dirtyGlobal))
	out = appendLocal(out, 0x20, f.dirtyLocal)
	out = append(out, 0x84) // i64.or
	return appendULEB(append(out, 0x24), uint64(f.dirtyGlobal))
}

// appendChunk pushes the chunk index of $addr + offset as an i64.
func (f *funcInstrumenter) appendChunk(out []byte, offset uint64) []byte {
	out = appendLocal(out, 0x20, f.addrLocal)
	out = append(out, 0xad) // i64.extend_i32_u
	if offset != 0 {
		out = append(out, 0x42) // i64.const offset; i64.add
		out = appendSLEB(out, int64(offset))
		out = append(out, 0x7c)
	}
	return append(out, 0x42, f.shift, 0x88) // i64.const shift; i64.shr_u
}

// appendStoreMark records the chunk of a store whose address and value are
// on the stack, leaving them there: the value goes to a temporary, the
// address to $addr, and the bits of the chunk and the next (an access of
// up to 16 bytes may cross into it) are or-ed into $dirty:
//
//	local.set $tmp; local.tee $addr; local.get $tmp
//	local.get $dirty; i64.const 3; <chunk>; i64.rotl; i64.or; local.set $dirty
func (f *funcInstrumenter) appendStoreMark(out []byte, t byte, offset uint64) []byte {
	tmp := f.tmpLocal[t]
	out = appendLocal(out, 0x21, tmp)
	out = appendLocal(out, 0x22, f.addrLocal)
	out = appendLocal(out, 0x20, tmp)
	out = appendLocal(out, 0x20, f.dirtyLocal)
	out = append(out, 0x42, 0x03)
	out = f.appendChunk(out, offset)
	out = append(out, 0x89, 0x84) // i64.rotl; i64.or
	return appendLocal(out, 0x21, f.dirtyLocal)
}

// appendRangeMark records the chunks [d, d+n) of a memory.fill, copy or
// init, whose operands d, x, n are on the stack, leaving them there:
//
//	local.set $scratch; local.set $tmp32; local.tee $addr
//	local.get $tmp32; local.get $scratch
//	local.get $dirty
//	;; k = last chunk - first chunk = ((d+n-1) >> shift) - (d >> shift)
//	local.get $addr; i64.extend_i32_u; local.get $scratch; i64.extend_i32_u
//	i64.add; i64.const 1; i64.sub; i64.const shift; i64.shr_u
//	<chunk of d>; i64.sub; local.tee $tmp64
//	i64.const 63; i64.ge_u
//	if (result i64) i64.const -1                  ;; 64 chunks or more
//	else i64.const 2; local.get $tmp64; i64.shl; i64.const 1; i64.sub
//	     <chunk of d>; i64.rotl                   ;; k+1 bits from d's
//	end
//	i64.or; local.set $dirty
//
// An empty range (n = 0) may set bits, up to all of them.
func (f *funcInstrumenter) appendRangeMark(out []byte) []byte {
	t32, t64 := f.tmpLocal[ValI32], f.tmpLocal[ValI64]
	out = appendLocal(out, 0x21, f.scratchLocal)
	out = appendLocal(out, 0x21, t32)
	out = appendLocal(out, 0x22, f.addrLocal)
	out = appendLocal(out, 0x20, t32)
	out = appendLocal(out, 0x20, f.scratchLocal)
	out = appendLocal(out, 0x20, f.dirtyLocal)
	out = appendLocal(out, 0x20, f.addrLocal)
	out = append(out, 0xad)
	out = appendLocal(out, 0x20, f.scratchLocal)
	out = append(out, 0xad, 0x7c, 0x42, 0x01, 0x7d, 0x42, f.shift, 0x88)
	out = f.appendChunk(out, 0)
	out = append(out, 0x7d) // i64.sub
	out = appendLocal(out, 0x22, t64)
	out = append(out, 0x42, 63, 0x5a)               // i64.const 63; i64.ge_u
	out = append(out, 0x04, 0x7e, 0x42, 0x7f, 0x05) // if (result i64) i64.const -1 else
	out = append(out, 0x42, 0x02)
	out = appendLocal(out, 0x20, t64)
	out = append(out, 0x86, 0x42, 0x01, 0x7d) // i64.shl; i64.const 1; i64.sub
	out = f.appendChunk(out, 0)
	out = append(out, 0x89, 0x0b) // i64.rotl; end
	out = append(out, 0x84)       // i64.or
	return appendLocal(out, 0x21, f.dirtyLocal)
}
