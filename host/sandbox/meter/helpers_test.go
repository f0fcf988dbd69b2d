package meter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// A tiny assembler for hand-written test modules: there is no text format
// here, so modules are built from sections.

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func uleb(v uint64) []byte { return appendULEB(nil, v) }
func sleb(v int64) []byte  { return appendSLEB(nil, v) }

// vec encodes a vector: count followed by the items.
func vec(items ...[]byte) []byte { return cat(uleb(uint64(len(items))), cat(items...)) }

func str(s string) []byte { return cat(uleb(uint64(len(s))), []byte(s)) }

func sec(id byte, content ...[]byte) []byte {
	c := cat(content...)
	return cat([]byte{id}, uleb(uint64(len(c))), c)
}

func wasmModule(sections ...[]byte) []byte { return cat(wasmHeader, cat(sections...)) }

// Value types.
const (
	tI32     = 0x7f
	tI64     = 0x7e
	tF64     = 0x7c
	tFuncref = 0x70
)

func functype(params, results []byte) []byte {
	return cat([]byte{0x60}, uleb(uint64(len(params))), params, uleb(uint64(len(results))), results)
}

// local declares n locals of type t.
func local(n uint64, t byte) []byte { return cat(uleb(n), []byte{t}) }

// fbody encodes a code entry: size, locals, expression (end not included).
func fbody(locals [][]byte, code ...[]byte) []byte {
	b := cat(vec(locals...), cat(code...), []byte{opEnd})
	return cat(uleb(uint64(len(b))), b)
}

func export(name string, kind byte, idx uint64) []byte {
	return cat(str(name), []byte{kind}, uleb(idx))
}

// Opcodes used by the tests.
const (
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
	opReturnCall  = 0x12
	opDrop        = 0x1a
	opLocalGet    = 0x20
	opLocalSet    = 0x21
	opLocalTee    = 0x22
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opI32Const    = 0x41
	opI64Const    = 0x42
	opI32Eqz      = 0x45
	opI32Add      = 0x6a
	opI32Sub      = 0x6b
	opI32Mul      = 0x6c
	opI64Add      = 0x7c
	opI64ExtendU  = 0xad
	opRefNull     = 0xd0
	bt0           = 0x40 // empty block type
)

func op(b ...byte) []byte        { return b }
func i32c(v int32) []byte        { return cat([]byte{opI32Const}, sleb(int64(v))) }
func i64c(v int64) []byte        { return cat([]byte{opI64Const}, sleb(v)) }
func lget(i uint64) []byte       { return cat([]byte{opLocalGet}, uleb(i)) }
func lset(i uint64) []byte       { return cat([]byte{opLocalSet}, uleb(i)) }
func ltee(i uint64) []byte       { return cat([]byte{opLocalTee}, uleb(i)) }
func call(i uint64) []byte       { return cat([]byte{opCall}, uleb(i)) }
func br(l uint64) []byte         { return cat([]byte{opBr}, uleb(l)) }
func brIf(l uint64) []byte       { return cat([]byte{opBrIf}, uleb(l)) }
func misc(sub uint64) []byte     { return cat([]byte{0xfc}, uleb(sub)) }
func returnCall(i uint64) []byte { return cat([]byte{opReturnCall}, uleb(i)) }

// Function indices of testModule.
const (
	fnStraight = iota
	fnSum
	fnFib
	fnSpin
	fnRec
	fnBranch
	fnIfElse
	fnFill
	fnTableGrow
	fnCopy
)

// testModule returns a module with one function of each kind the tests
// exercise. Its expected fuel figures are derived in the tests.
func testModule() []byte {
	types := sec(secType, vec(
		functype(nil, []byte{tI32}),             // 0: () -> i32
		functype([]byte{tI32}, []byte{tI64}),    // 1: (i32) -> i64
		functype(nil, nil),                      // 2: () -> ()
		functype([]byte{tI32}, []byte{tI32}),    // 3: (i32) -> i32
		functype([]byte{tI32}, nil),             // 4: (i32) -> ()
		functype([]byte{tI32, tI32, tI32}, nil), // 5: (i32,i32,i32) -> ()
	))
	funcs := sec(secFunction, vec(
		uleb(0), uleb(1), uleb(1), uleb(2), uleb(3), uleb(3), uleb(3), uleb(4), uleb(3), uleb(5),
	))
	table := sec(secTable, vec(cat([]byte{tFuncref, 0x00}, uleb(0))))
	memory := sec(secMemory, vec(cat([]byte{0x00}, uleb(1))))
	exports := sec(secExport, vec(
		export("straight", 0, fnStraight),
		export("sum", 0, fnSum),
		export("fib", 0, fnFib),
		export("spin", 0, fnSpin),
		export("rec", 0, fnRec),
		export("branch", 0, fnBranch),
		export("ifelse", 0, fnIfElse),
		export("fill", 0, fnFill),
		export("tablegrow", 0, fnTableGrow),
		export("copy", 0, fnCopy),
		export("memory", 2, 0),
	))
	code := sec(secCode, vec(
		// straight: (1+2)*3 = 9; cost 5.
		fbody(nil, i32c(1), i32c(2), op(opI32Add), i32c(3), op(opI32Mul)),
		// sum(n) = 1+..+n; cost 13n+6.
		fbody([][]byte{local(1, tI64)},
			op(opBlock, bt0),
			op(opLoop, bt0),
			lget(0), op(opI32Eqz), brIf(1),
			lget(1), lget(0), op(opI64ExtendU), op(opI64Add), lset(1),
			lget(0), i32c(1), op(opI32Sub), lset(0),
			br(0),
			op(opEnd),
			op(opEnd),
			lget(1)),
		// fib(n): a, b = 0, 1; n times: a, b = b, a+b; return a.
		fbody([][]byte{local(3, tI64)}, // 1: a, 2: b, 3: t
			i64c(1), lset(2),
			op(opBlock, bt0),
			op(opLoop, bt0),
			lget(0), op(opI32Eqz), brIf(1),
			lget(1), lget(2), op(opI64Add), lset(3),
			lget(2), lset(1),
			lget(3), lset(2),
			lget(0), i32c(1), op(opI32Sub), lset(0),
			br(0),
			op(opEnd),
			op(opEnd),
			lget(1)),
		// spin: loop br 0 end.
		fbody(nil, op(opLoop, bt0), br(0), op(opEnd)),
		// rec(n) = n == 0 ? 0 : 1 + rec(n-1); cost 9n+4.
		fbody(nil,
			lget(0), op(opI32Eqz), op(opIf, tI32),
			i32c(0),
			op(opElse),
			lget(0), i32c(1), op(opI32Sub), call(fnRec), i32c(1), op(opI32Add),
			op(opEnd)),
		// branch(x) = x != 0 ? 7*2 : (8+1)*2; cost 6 or 10.
		fbody(nil,
			op(opBlock, tI32),
			i32c(7), lget(0), brIf(0),
			op(opDrop), i32c(8), i32c(1), op(opI32Add),
			op(opEnd),
			i32c(2), op(opI32Mul)),
		// ifelse(x) = (x != 0 ? 10 : 20+1) + 5; cost 5 or 7.
		fbody(nil,
			lget(0), op(opIf, tI32),
			i32c(10),
			op(opElse),
			i32c(20), i32c(1), op(opI32Add),
			op(opEnd),
			i32c(5), op(opI32Add)),
		// fill(n): memory.fill(0, 7, n); cost 103 + n/16.
		fbody(nil, i32c(0), i32c(7), lget(0), misc(11), op(0x00)),
		// tablegrow(n) = table.grow(ref.null func, n); cost 102 + n.
		fbody(nil, op(opRefNull, tFuncref), lget(0), misc(15), op(0x00)),
		// copy(d, s, n): memory.copy; cost 103 + n/16.
		fbody(nil, lget(0), lget(1), lget(2), misc(10), op(0x00, 0x00)),
	))
	return wasmModule(types, funcs, table, memory, exports, code)
}

// testFeatures are the features the test runtimes enable.
const testFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesTailCall | experimental.CoreFeaturesExtendedConst

var compilationCache = wazero.NewCompilationCache()

func newRuntime(ctx context.Context, interpreter bool) wazero.Runtime {
	cfg := wazero.NewRuntimeConfigCompiler()
	if interpreter {
		cfg = wazero.NewRuntimeConfigInterpreter()
	}
	return wazero.NewRuntimeWithConfig(ctx, cfg.WithCoreFeatures(testFeatures).WithCompilationCache(compilationCache))
}

// instance is an instantiated module with a fuel counter.
type instance struct {
	t    testing.TB
	mod  api.Module
	fuel api.MutableGlobal
}

func instantiate(t testing.TB, r wazero.Runtime, wasm []byte) *instance {
	t.Helper()
	ctx := context.Background()
	mod, err := r.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
	require.NoError(t, err)
	in := &instance{t: t, mod: mod}
	if g := mod.ExportedGlobal(ExportName); g != nil {
		mg, ok := g.(api.MutableGlobal)
		require.True(t, ok, "fuel global must be mutable")
		require.Equal(t, api.ValueTypeI64, mg.Type())
		in.fuel = mg
	}
	return in
}

// run calls fn with the given fuel limit and returns its results, the fuel
// used and the call's error.
func (in *instance) run(limit int64, fn string, args ...uint64) ([]uint64, int64, error) {
	in.t.Helper()
	f := in.mod.ExportedFunction(fn)
	require.NotNil(in.t, f, fn)
	if in.fuel != nil {
		in.fuel.Set(uint64(limit))
	}
	res, err := f.Call(context.Background(), args...)
	used := int64(0)
	if in.fuel != nil {
		used = limit - int64(in.fuel.Get())
	}
	return res, used, err
}

func (in *instance) remaining() int64 { return int64(in.fuel.Get()) }

func mustInstrument(t testing.TB, wasm []byte) []byte {
	t.Helper()
	out, err := Instrument(wasm, Options{})
	require.NoError(t, err)
	return out
}

// tailCallModule exports count(n), which counts down with return_call, and
// forever(), which tail-calls itself.
func tailCallModule() []byte {
	// 0: count(n) = n == 0 ? 0 : return_call count(n-1)
	// 1: forever() = return_call forever()
	return wasmModule(
		sec(secType, vec(functype([]byte{tI32}, []byte{tI32}), functype(nil, nil))),
		sec(secFunction, vec(uleb(0), uleb(1))),
		sec(secExport, vec(export("count", 0, 0), export("forever", 0, 1))),
		sec(secCode, vec(
			fbody(nil,
				lget(0), op(opI32Eqz), op(opIf, bt0), i32c(0), op(opReturn), op(opEnd),
				lget(0), i32c(1), op(opI32Sub), returnCall(0)),
			fbody(nil, returnCall(1)),
		)),
	)
}

// importsModule imports a function (env.double) and a global (genv.base =
// 100, global 0), defines globals 1 (mutable i32 = 5) and 2, and exports
// f() = double(++g1 + base) + 1. It has a name section and other custom
// sections.
func importsModule() []byte {
	return wasmModule(
		sec(secType, vec(functype([]byte{tI32}, []byte{tI32}), functype(nil, []byte{tI32}))),
		sec(secImport, vec(
			cat(str("env"), str("double"), []byte{0x00}, uleb(0)),
			cat(str("genv"), str("base"), []byte{0x03, tI32, 0x00}),
		)),
		sec(secFunction, vec(uleb(1))),
		sec(secGlobal, vec(
			cat([]byte{tI32, 0x01}, i32c(5), op(opEnd)),
			cat([]byte{tI64, 0x00}, i64c(-1), op(opEnd)),
		)),
		sec(secExport, vec(export("f", 0, 1), export("g", 3, 1))),
		sec(secCode, vec(
			fbody(nil,
				op(opGlobalGet, 1), i32c(1), op(opI32Add), op(opGlobalSet, 1),
				op(opGlobalGet, 1), op(opGlobalGet, 0), op(opI32Add), call(0), i32c(1), op(opI32Add)),
		)),
		sec(secCustom, str("name"), sec(1, vec(cat(uleb(1), str("f"))))),
		sec(secCustom, str(".debug_info"), []byte{1, 2, 3}),
		sec(secCustom, str("producers"), []byte{0}),
	)
}

// simdModule exports f(), which uses instructions with every kind of
// immediate: SIMD, reference types, typed select, saturating truncation.
func simdModule() []byte {
	shuffle := make([]byte, 16)
	v128 := make([]byte, 16)
	for i := range shuffle {
		shuffle[i] = byte(15 - i)
		v128[i] = byte(i + 1)
	}
	return wasmModule(
		sec(secType, vec(functype(nil, []byte{tI32}))),
		sec(secFunction, vec(uleb(0), uleb(0))),
		sec(secTable, vec(cat([]byte{tFuncref, 0x00}, uleb(1)))),
		sec(secMemory, vec(cat([]byte{0x00}, uleb(1)))),
		sec(secExport, vec(export("f", 0, 0), export("g", 0, 1))),
		sec(secElement, vec(cat(uleb(3), []byte{0x00}, vec(uleb(1))))), // declarative: ref.func 1
		sec(secCode, vec(
			fbody([][]byte{local(1, 0x7b)},
				i32c(0),
				op(0xfd, 0x0c), v128, // v128.const
				op(0xfd, 0x0c), v128,
				op(0xfd, 0x0d), shuffle, // i8x16.shuffle
				ltee(0),
				op(0xfd, 0x0b, 0x04, 0x00),          // v128.store
				i32c(0), op(0xfd, 0x00, 0x04, 0x00), // v128.load
				op(0xfd, 0x15, 0x03),                               // i8x16.extract_lane_s 3
				i32c(0), lget(0), op(0xfd, 0x54, 0x00, 0x00, 0x03), // v128.load8_lane lane 3
				op(0xfd, 0x1b, 0x00), // i32x4.extract_lane 0
				op(opI32Add),
				op(opRefNull, tFuncref), op(0xd1), op(opI32Add), // ref.is_null
				op(0xd2, 0x01), op(0xd1), op(opI32Add), // ref.func 1
				i32c(1), i32c(2), i32c(0), op(0x1c, 0x01, tI32), op(opI32Add), // select i32
				op(0x44, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f), op(0xfc, 0x02), op(opI32Add), // i32.trunc_sat_f64_s 1.5
			),
			fbody(nil, i32c(1)),
		)),
	)
}

// startLoopModule has a start function that loops forever.
func startLoopModule() []byte {
	return wasmModule(
		sec(secType, vec(functype(nil, nil))),
		sec(secFunction, vec(uleb(0))),
		sec(secStart, uleb(0)),
		sec(secCode, vec(fbody(nil, op(opLoop, bt0), br(0), op(opEnd)))),
	)
}

// minimalModules are small modules around section handling.
func minimalModules() map[string][]byte {
	return map[string][]byte{
		"empty":        wasmModule(),
		"only types":   wasmModule(sec(secType, vec(functype(nil, nil)))),
		"empty func":   wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))), sec(secCode, vec(fbody(nil)))),
		"data count":   wasmModule(sec(secMemory, vec(cat([]byte{0}, uleb(1)))), sec(secDataCount, uleb(1)), sec(secData, vec(cat([]byte{1}, str("hi"))))),
		"start":        wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))), sec(secStart, uleb(0)), sec(secCode, vec(fbody(nil)))),
		"custom first": wasmModule(sec(secCustom, str("x")), sec(secType, vec(functype(nil, nil)))),
	}
}
