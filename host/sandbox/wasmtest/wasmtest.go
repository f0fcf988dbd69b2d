// Package wasmtest builds tiny WebAssembly modules for tests: enough to write
// guests that call the logline ABI directly, hostile ones included (there is
// no wat2wasm here). Test support only; nothing in the product imports it.
package wasmtest

// Import is a function imported from the "logline" module.
type Import struct {
	Name    string
	Params  []byte // value types: I32, I64
	Results []byte
}

// Value types.
const (
	I32 = 0x7f
	I64 = 0x7e
)

// ULEB is unsigned LEB128.
func ULEB(v uint64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, b|0x80)
			continue
		}
		return append(out, b)
	}
}

// SLEB is signed LEB128.
func SLEB(v int64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

// Name is a length-prefixed UTF-8 name.
func Name(s string) []byte { return append(ULEB(uint64(len(s))), s...) }

// Vec is a length-prefixed vector.
func Vec(items ...[]byte) []byte {
	out := ULEB(uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

// Section frames a section body.
func Section(id byte, body []byte) []byte {
	return append(append([]byte{id}, ULEB(uint64(len(body)))...), body...)
}

// FuncType is a function type.
func FuncType(params, results []byte) []byte {
	out := append([]byte{0x60}, ULEB(uint64(len(params)))...)
	out = append(out, params...)
	out = append(out, ULEB(uint64(len(results)))...)
	return append(out, results...)
}

// Module builds a module importing `imports` from "logline" (function
// indices 0..n-1), with one page of memory holding data at offset 0, and one
// exported function `run` () -> i32 with `locals` i32 locals whose body
// (without the locals header and final end) is body.
func Module(imports []Import, data []byte, locals int, body []byte) []byte {
	return Funcs(imports, data, Func{Name: "run", Locals: locals, Body: body})
}

// Func is an exported function () -> i32 of a module built by Funcs.
type Func struct {
	Name   string
	Locals int    // i32 locals
	Body   []byte // without the locals header and the final end
}

// Funcs is Module with several exported functions, numbered after the
// imports in their order.
func Funcs(imports []Import, data []byte, funcs ...Func) []byte {
	var types, imps [][]byte
	for i, im := range imports {
		types = append(types, FuncType(im.Params, im.Results))
		imps = append(imps, append(append(Name("logline"), Name(im.Name)...), 0x00, byte(i)))
	}
	fnType := len(types)
	types = append(types, FuncType(nil, []byte{I32}))
	m := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	m = append(m, Section(1, Vec(types...))...)
	if len(imps) > 0 {
		m = append(m, Section(2, Vec(imps...))...)
	}
	var decls, exports, bodies [][]byte
	for i, f := range funcs {
		decls = append(decls, ULEB(uint64(fnType)))
		exports = append(exports, append(Name(f.Name), append([]byte{0x00}, ULEB(uint64(len(imports)+i))...)...))
		code := []byte{0x00}
		if f.Locals > 0 {
			code = append(append([]byte{0x01}, ULEB(uint64(f.Locals))...), I32)
		}
		code = append(code, f.Body...)
		code = append(code, 0x0b)
		bodies = append(bodies, append(ULEB(uint64(len(code))), code...))
	}
	exports = append(exports, append(Name("memory"), 0x02, 0x00))
	m = append(m, Section(3, Vec(decls...))...)
	m = append(m, Section(5, Vec([]byte{0x00, 0x01}))...)
	m = append(m, Section(7, Vec(exports...))...)
	m = append(m, Section(10, Vec(bodies...))...)
	if len(data) > 0 {
		seg := append([]byte{0x00, 0x41, 0x00, 0x0b}, ULEB(uint64(len(data)))...)
		m = append(m, Section(11, Vec(append(seg, data...)))...)
	}
	return m
}

// Instruction helpers.
// I32Const is i32.const v.
func I32Const(v int32) []byte { return append([]byte{0x41}, SLEB(int64(v))...) }

// Call is call idx.
func Call(idx int) []byte { return append([]byte{0x10}, ULEB(uint64(idx))...) }

// LocalGet is local.get i.
func LocalGet(i int) []byte { return []byte{0x20, byte(i)} }

// LocalSet is local.set i.
func LocalSet(i int) []byte { return []byte{0x21, byte(i)} }

// Instructions.
var (
	Drop        = []byte{0x1a}
	WrapI64     = []byte{0xa7}                         // i32.wrap_i64
	LoopForever = []byte{0x03, 0x40, 0x0c, 0x00, 0x0b} // loop br 0 end
)

// Cat concatenates instruction sequences.
func Cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Outputs is a module whose run outputs msg and returns 0.
func Outputs(msg string) []byte {
	return Module([]Import{{Name: "output", Params: []byte{I32, I32}, Results: []byte{I32}}},
		[]byte(msg), 0, Cat(I32Const(0), I32Const(int32(len(msg))), Call(0), Drop, I32Const(0)))
}

// Calls is a module whose run sends req to the i64-returning host function
// fn (sql, insert_span, exec, http, env), copies the pending result to offset
// 4096 and outputs it; when the call fails it returns the negative code.
func Calls(fn, req string) []byte {
	return Module([]Import{
		{Name: fn, Params: []byte{I32, I32}, Results: []byte{I64}},
		{Name: "result", Params: []byte{I32, I32}, Results: []byte{I32}},
		{Name: "output", Params: []byte{I32, I32}, Results: []byte{I32}},
	}, []byte(req), 1, Cat(
		I32Const(0), I32Const(int32(len(req))), Call(0), WrapI64, LocalSet(0),
		LocalGet(0), I32Const(0), []byte{0x48}, // i32.lt_s
		[]byte{0x04, 0x40}, LocalGet(0), []byte{0x0f}, []byte{0x0b}, // if (n < 0) return n
		I32Const(4096), LocalGet(0), Call(1), Drop,
		I32Const(4096), LocalGet(0), Call(2), Drop,
		I32Const(0),
	))
}

// Spins is a module whose run loops forever (until its fuel runs out).
func Spins() []byte { return Module(nil, nil, 0, Cat(LoopForever, I32Const(0))) }
