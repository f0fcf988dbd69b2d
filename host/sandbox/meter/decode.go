package meter

import "fmt"

// flow classifies an instruction by its effect on metered blocks.
type flow uint8

const (
	flowPlain       flow = iota
	flowBlock            // block: opens a frame, new metered block after it
	flowIf               // if: opens a frame, new metered block after it
	flowLoop             // loop: opens a frame, new metered block (cost >= 1)
	flowElse             // else: new metered block after it
	flowEnd              // end: closes a frame
	flowBranch           // br, br_table: rest is dead
	flowCondBranch       // br_if & co: new metered block after it
	flowCall             // call & co: new metered block after it
	flowReturn           // return, return_call*: rest is dead
	flowUnreachable      // unreachable: rest is dead
	flowBulkMemory       // length-proportional memory op (length on top of stack)
	flowBulkTable        // length-proportional table op (length on top of stack)
	flowGlobal           // global.get / global.set: idx holds the index
	flowLocal            // local.get / local.set / local.tee: idx holds the index
	flowUnsupported      // recognised but unsupported, or unknown opcode
)

type instr struct {
	op   Opcode
	flow flow
	idx  uint32 // global or local index, or function index (direct calls)
	// call is set for every call instruction (flowCall and the tail calls
	// among flowReturn), direct for call and return_call.
	call, direct bool
	// grow is set for memory.grow.
	grow bool
	// store is the value type a store instruction writes to memory (0
	// for other instructions), offset its memarg offset.
	store  byte
	offset uint64
	// typeRef is one more than the largest type index the instruction
	// names (block types, call_indirect, call_ref, ref.null, select's
	// types), 0 if it names none.
	typeRef uint64
}

// String formats an opcode as in error messages: 0x6a, 0xfc 0x0a.
func (op Opcode) String() string {
	if op>>16 != 0 {
		return fmt.Sprintf("0x%02x 0x%02x", uint32(op>>16), uint32(op&0xffff))
	}
	return fmt.Sprintf("0x%02x", uint32(op))
}

// decodeInstr decodes one instruction and skips its immediates. If labels
// is not nil, the branch labels of br, br_if, br_table and br_on_* are
// appended to it.
func decodeInstr(r *reader, labels *[]uint32) (instr, error) {
	c, err := r.byte()
	if err != nil {
		return instr{}, err
	}
	in := instr{op: Opcode(c)}
	switch {
	case c == 0x00: // unreachable
		in.flow = flowUnreachable
	case c == 0x01: // nop
	case c == 0x02, c == 0x03, c == 0x04: // block, loop, if
		in.typeRef, err = readBlockType(r)
		in.flow = [...]flow{flowBlock, flowLoop, flowIf}[c-0x02]
	case c == 0x05:
		in.flow = flowElse
	case c == 0x0b:
		in.flow = flowEnd
	case c == 0x0c: // br
		err = readLabel(r, labels)
		in.flow = flowBranch
	case c == 0x0d: // br_if
		err = readLabel(r, labels)
		in.flow = flowCondBranch
	case c == 0x0e: // br_table
		err = readBrTable(r, labels)
		in.flow = flowBranch
	case c == 0x0f: // return
		in.flow = flowReturn
	case c == 0x10: // call
		in.idx, err = r.u32()
		in.flow, in.call, in.direct = flowCall, true, true
	case c == 0x11: // call_indirect typeidx tableidx
		in.typeRef, err = readTypeIdx(r)
		if err == nil {
			_, err = r.u32()
		}
		in.flow, in.call = flowCall, true
	case c == 0x12: // return_call
		in.idx, err = r.u32()
		in.flow, in.call, in.direct = flowReturn, true, true
	case c == 0x13: // return_call_indirect
		in.typeRef, err = readTypeIdx(r)
		if err == nil {
			_, err = r.u32()
		}
		in.flow, in.call = flowReturn, true
	case c == 0x14: // call_ref typeidx
		in.typeRef, err = readTypeIdx(r)
		in.flow, in.call = flowCall, true
	case c == 0x15: // return_call_ref typeidx
		in.typeRef, err = readTypeIdx(r)
		in.flow, in.call = flowReturn, true
	case c == 0x1a, c == 0x1b: // drop, select
	case c == 0x1c: // select t*
		var n uint32
		if n, err = r.u32(); err == nil {
			for i := uint32(0); i < n && err == nil; i++ {
				var ref uint64
				ref, err = valTypeRef(r)
				in.typeRef = max(in.typeRef, ref)
			}
		}
	case c >= 0x20 && c <= 0x22: // local.get/set/tee
		in.idx, err = r.u32()
		in.flow = flowLocal
	case c == 0x23, c == 0x24: // global.get/set
		in.idx, err = r.u32()
		in.flow = flowGlobal
	case c == 0x25, c == 0x26: // table.get/set
		_, err = r.u32()
	case c >= 0x28 && c <= 0x3e: // loads and stores
		in.offset, err = readMemArg(r)
		if c >= 0x36 {
			in.store = storeTypes[c-0x36]
		}
	case c == 0x3f, c == 0x40: // memory.size, memory.grow memidx
		_, err = r.u32()
		in.grow = c == 0x40
	case c == 0x41:
		_, err = r.sleb(32)
	case c == 0x42:
		_, err = r.sleb(64)
	case c == 0x43:
		_, err = r.bytes(4)
	case c == 0x44:
		_, err = r.bytes(8)
	case c >= 0x45 && c <= 0xc4: // numeric, sign extension
	case c == 0xd0: // ref.null heaptype
		in.typeRef, err = readHeapType(r)
	case c == 0xd1, c == 0xd3, c == 0xd4: // ref.is_null, ref.eq, ref.as_non_null
	case c == 0xd2: // ref.func
		_, err = r.u32()
	case c == 0xd5, c == 0xd6: // br_on_null, br_on_non_null
		err = readLabel(r, labels)
		in.flow = flowCondBranch
	case c == 0xfc:
		return decodeMisc(r)
	case c == 0xfd:
		return decodeSIMD(r)
	case c == 0xfe: // threads
		in.flow = flowUnsupported
		var sub uint32
		if sub, err = r.u32(); err == nil {
			in.op = Opcode(c)<<16 | Opcode(sub)
		}
	default:
		// Exception handling (0x06-0x0a, 0x18, 0x19, 0x1f), GC (0xfb) and
		// unassigned opcodes.
		in.flow = flowUnsupported
	}
	return in, err
}

func decodeMisc(r *reader) (instr, error) {
	sub, err := r.u32()
	if err != nil {
		return instr{}, err
	}
	in := instr{op: PrefixMisc | Opcode(sub)}
	switch sub {
	case 0, 1, 2, 3, 4, 5, 6, 7: // saturating truncation
	case 8: // memory.init dataidx memidx
		err = skipU32s(r, 2)
		in.flow = flowBulkMemory
	case 9: // data.drop
		_, err = r.u32()
	case 10: // memory.copy memidx memidx
		err = skipU32s(r, 2)
		in.flow = flowBulkMemory
	case 11: // memory.fill memidx
		_, err = r.u32()
		in.flow = flowBulkMemory
	case 12: // table.init elemidx tableidx
		err = skipU32s(r, 2)
		in.flow = flowBulkTable
	case 13: // elem.drop
		_, err = r.u32()
	case 14: // table.copy tableidx tableidx
		err = skipU32s(r, 2)
		in.flow = flowBulkTable
	case 15: // table.grow
		_, err = r.u32()
		in.flow = flowBulkTable
	case 16: // table.size
		_, err = r.u32()
	case 17: // table.fill
		_, err = r.u32()
		in.flow = flowBulkTable
	default:
		in.flow = flowUnsupported
	}
	return in, err
}

// unassignedSIMD lists the unused opcodes below 0x100 of the SIMD space.
var unassignedSIMD = [256]bool{
	0x9a: true, 0xa2: true, 0xa5: true, 0xa6: true, 0xaf: true, 0xb0: true,
	0xb2: true, 0xb3: true, 0xb4: true, 0xbb: true, 0xc2: true, 0xc5: true,
	0xc6: true, 0xcf: true, 0xd0: true, 0xd2: true, 0xd3: true, 0xd4: true,
	0xe2: true, 0xee: true,
}

func decodeSIMD(r *reader) (instr, error) {
	sub, err := r.u32()
	if err != nil {
		return instr{}, err
	}
	in := instr{op: PrefixSIMD | Opcode(sub)}
	switch {
	case sub <= 0x0b, sub == 0x5c, sub == 0x5d: // loads, store, load_zero
		in.offset, err = readMemArg(r)
		if sub == 0x0b { // v128.store
			in.store = ValV128
		}
	case sub == 0x0c, sub == 0x0d: // v128.const, i8x16.shuffle
		_, err = r.bytes(16)
	case sub >= 0x15 && sub <= 0x22: // extract/replace lane
		_, err = r.byte()
	case sub >= 0x54 && sub <= 0x5b: // load/store lane: memarg laneidx
		if in.offset, err = readMemArg(r); err == nil {
			_, err = r.byte()
		}
		if sub >= 0x58 {
			in.store = ValV128
		}
	case sub <= 0xff && !unassignedSIMD[sub]:
		// no immediates
	default:
		// Relaxed SIMD and unassigned opcodes.
		in.flow = flowUnsupported
	}
	return in, err
}

// skipBlockType skips a block type: 0x40, a value type, or an s33 type index.
func skipBlockType(r *reader) error {
	_, err := readBlockType(r)
	return err
}

// readBlockType reads a block type and returns one more than the type index
// it names, or 0.
func readBlockType(r *reader) (uint64, error) {
	v, err := r.sleb(33)
	if err != nil {
		return 0, err
	}
	if v == -0x1d || v == -0x1c { // 0x63, 0x64: typed reference + heap type
		return readHeapType(r)
	}
	if v >= 0 {
		return uint64(v) + 1, nil
	}
	return 0, nil
}

// readHeapType reads a heap type (s33: an abstract type if negative) and
// returns one more than the type index it names, or 0.
func readHeapType(r *reader) (uint64, error) {
	v, err := r.sleb(33)
	if err != nil || v < 0 {
		return 0, err
	}
	return uint64(v) + 1, nil
}

// readTypeIdx reads a type index and returns it plus one.
func readTypeIdx(r *reader) (uint64, error) {
	v, err := r.u32()
	return uint64(v) + 1, err
}

func readLabel(r *reader, labels *[]uint32) error {
	l, err := r.u32()
	if err == nil && labels != nil {
		*labels = append(*labels, l)
	}
	return err
}

func readBrTable(r *reader, labels *[]uint32) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint64(0); i <= uint64(n); i++ { // n labels + default
		if err := readLabel(r, labels); err != nil {
			return err
		}
	}
	return nil
}

func skipU32s(r *reader, n int) error {
	for i := 0; i < n; i++ {
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	return nil
}

// storeTypes are the value types of the stores 0x36 (i32.store) to 0x3e
// (i64.store32).
var storeTypes = [...]byte{ValI32, ValI64, ValF32, ValF64, ValI32, ValI32, ValI64, ValI64, ValI64}

// readMemArg reads align (with the multi-memory flag bit 6 selecting an
// explicit memory index) and returns the offset.
func readMemArg(r *reader) (uint64, error) {
	align, err := r.u32()
	if err != nil {
		return 0, err
	}
	if align&0x40 != 0 {
		if _, err := r.u32(); err != nil {
			return 0, err
		}
	}
	return r.uleb(64)
}
