package sandbox

// A small assembler for hand-written test modules: there is no text format
// here, so modules are built from their binary encoding.

const (
	tI32 = 0x7f
	tI64 = 0x7e

	opUnreachable = 0x00
	opBlock       = 0x02
	opLoop        = 0x03
	opIf          = 0x04
	opElse        = 0x05
	opEnd         = 0x0b
	opBr          = 0x0c
	opBrIf        = 0x0d
	opReturn      = 0x0f
	opCall        = 0x10
	opDrop        = 0x1a
	opLocalGet    = 0x20
	opLocalSet    = 0x21
	opLocalTee    = 0x22
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opI32Load     = 0x28
	opI32Load8U   = 0x2d
	opI32Store    = 0x36
	opI32Store8   = 0x3a
	opMemorySize  = 0x3f
	opMemoryGrow  = 0x40
	opI32Const    = 0x41
	opI64Const    = 0x42
	opI32Eqz      = 0x45
	opI32Eq       = 0x46
	opI32Ne       = 0x47
	opI32LtS      = 0x48
	opI32GeU      = 0x4f
	opI64LtS      = 0x53
	opI32Add      = 0x6a
	opI32Sub      = 0x6b
	opI32Mul      = 0x6c
	opI64Add      = 0x7c
	opI32WrapI64  = 0xa7
	bt0           = 0x40 // empty block type
)

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func uleb(v uint64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		out = append(out, c)
		if v == 0 {
			return out
		}
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

func vec(items ...[]byte) []byte { return cat(uleb(uint64(len(items))), cat(items...)) }
func str(s string) []byte        { return cat(uleb(uint64(len(s))), []byte(s)) }
func sec(id byte, content []byte) []byte {
	return cat([]byte{id}, uleb(uint64(len(content))), content)
}

func op(b ...byte) []byte           { return b }
func i32c(v int32) []byte           { return cat([]byte{opI32Const}, sleb(int64(v))) }
func i64c(v int64) []byte           { return cat([]byte{opI64Const}, sleb(v)) }
func lget(i uint32) []byte          { return cat([]byte{opLocalGet}, uleb(uint64(i))) }
func lset(i uint32) []byte          { return cat([]byte{opLocalSet}, uleb(uint64(i))) }
func ltee(i uint32) []byte          { return cat([]byte{opLocalTee}, uleb(uint64(i))) }
func gget(i uint32) []byte          { return cat([]byte{opGlobalGet}, uleb(uint64(i))) }
func gset(i uint32) []byte          { return cat([]byte{opGlobalSet}, uleb(uint64(i))) }
func call(i uint32) []byte          { return cat([]byte{opCall}, uleb(uint64(i))) }
func br(l uint32) []byte            { return cat([]byte{opBr}, uleb(uint64(l))) }
func brIf(l uint32) []byte          { return cat([]byte{opBrIf}, uleb(uint64(l))) }
func load(o uint32) []byte          { return cat([]byte{opI32Load, 2}, uleb(uint64(o))) }
func store(o uint32) []byte         { return cat([]byte{opI32Store, 2}, uleb(uint64(o))) }
func store8(o uint32) []byte        { return cat([]byte{opI32Store8, 0}, uleb(uint64(o))) }
func memGrow() []byte               { return []byte{opMemoryGrow, 0} }
func memSize() []byte               { return []byte{opMemorySize, 0} }
func local(n uint32, t byte) []byte { return cat(uleb(uint64(n)), []byte{t}) }

// builder assembles a module. Imports must be declared before functions.
type builder struct {
	types   [][]byte
	imports [][]byte
	nImport uint32
	funcs   []uint32
	codes   [][]byte
	exports [][]byte
	globals [][]byte
	data    [][]byte
	memory  []byte
	table   bool // one funcref table of one element
	start   *uint32
}

func newBuilder() *builder { return &builder{} }

func (b *builder) typeIdx(params, results []byte) uint32 {
	t := cat([]byte{0x60}, uleb(uint64(len(params))), params, uleb(uint64(len(results))), results)
	for i, x := range b.types {
		if string(x) == string(t) {
			return uint32(i)
		}
	}
	b.types = append(b.types, t)
	return uint32(len(b.types) - 1)
}

// importFunc imports a function and returns its index.
func (b *builder) importFunc(module, name string, params, results []byte) uint32 {
	if len(b.funcs) > 0 {
		panic("imports must come before functions")
	}
	t := b.typeIdx(params, results)
	b.imports = append(b.imports, cat(str(module), str(name), []byte{0x00}, uleb(uint64(t))))
	b.nImport++
	return b.nImport - 1
}

// importRaw adds an import entry as given (kind and description).
func (b *builder) importRaw(module, name string, desc ...byte) {
	b.imports = append(b.imports, cat(str(module), str(name), desc))
}

// fn defines a function and returns its index.
func (b *builder) fn(params, results []byte, locals [][]byte, code ...[]byte) uint32 {
	b.funcs = append(b.funcs, b.typeIdx(params, results))
	body := cat(vec(locals...), cat(code...), []byte{opEnd})
	b.codes = append(b.codes, cat(uleb(uint64(len(body))), body))
	return b.nImport + uint32(len(b.funcs)) - 1
}

func (b *builder) export(name string, kind byte, idx uint32) *builder {
	b.exports = append(b.exports, cat(str(name), []byte{kind}, uleb(uint64(idx))))
	return b
}

// run defines and exports run() -> i32.
func (b *builder) run(locals [][]byte, code ...[]byte) *builder {
	return b.export("run", 0, b.fn(nil, []byte{tI32}, locals, code...))
}

func (b *builder) mem(minPages uint32) *builder {
	b.memory = cat([]byte{0x00}, uleb(uint64(minPages)))
	return b
}

// global defines a global and returns its index.
func (b *builder) global(t byte, mutable bool, init []byte) uint32 {
	m := byte(0)
	if mutable {
		m = 1
	}
	b.globals = append(b.globals, cat([]byte{t, m}, init, []byte{opEnd}))
	return uint32(len(b.globals) - 1)
}

// dataAt places bytes in memory at offset.
func (b *builder) dataAt(offset int32, bytes []byte) *builder {
	b.data = append(b.data, cat([]byte{0x00}, i32c(offset), []byte{opEnd}, uleb(uint64(len(bytes))), bytes))
	return b
}

func (b *builder) bytes() []byte {
	out := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	out = append(out, sec(1, vec(b.types...))...)
	if len(b.imports) > 0 {
		out = append(out, sec(2, vec(b.imports...))...)
	}
	fs := make([][]byte, len(b.funcs))
	for i, t := range b.funcs {
		fs[i] = uleb(uint64(t))
	}
	out = append(out, sec(3, vec(fs...))...)
	if b.table {
		out = append(out, sec(4, vec([]byte{0x70, 0x00, 0x01}))...)
	}
	if b.memory != nil {
		out = append(out, sec(5, vec(b.memory))...)
	}
	if len(b.globals) > 0 {
		out = append(out, sec(6, vec(b.globals...))...)
	}
	if len(b.exports) > 0 {
		out = append(out, sec(7, vec(b.exports...))...)
	}
	if b.start != nil {
		out = append(out, sec(8, uleb(uint64(*b.start)))...)
	}
	out = append(out, sec(10, vec(b.codes...))...)
	if len(b.data) > 0 {
		out = append(out, sec(11, vec(b.data...))...)
	}
	return out
}

var (
	pI32x2 = []byte{tI32, tI32}
	pI32x3 = []byte{tI32, tI32, tI32}
	rI32   = []byte{tI32}
	rI64   = []byte{tI64}
)

// echoModule copies up to 64 KiB of input to the output: run() {
// output(0, input(0, 65536)) }.
func echoModule() []byte {
	b := newBuilder()
	input := b.importFunc("logline", "input", pI32x2, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	return b.mem(1).run(nil,
		i32c(0), i32c(0), i32c(65536), call(input), call(output)).bytes()
}

// constModule returns 0 and does nothing else.
func constModule() []byte {
	return newBuilder().run(nil, i32c(0)).bytes()
}
