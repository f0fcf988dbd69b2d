package meter

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
)

func TestStraightLineFuel(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	res, used, err := in.run(DefaultLimit, "straight")
	require.NoError(t, err)
	require.Equal(t, []uint64{9}, res)
	require.EqualValues(t, 5, used)
}

func TestInfiniteLoopExhausts(t *testing.T) {
	t.Parallel()
	for _, interp := range []bool{false, true} {
		r := newRuntime(context.Background(), interp)
		in := instantiate(t, r, mustInstrument(t, testModule()))
		_, used, err := in.run(100_000, "spin")
		require.Error(t, err)
		require.Contains(t, err.Error(), "unreachable")
		require.True(t, Exhausted(in.remaining()), "remaining %d", in.remaining())
		// Entry (1) and one charge per iteration (1): the check that
		// fails is the one that takes the counter to -1.
		require.EqualValues(t, 100_001, used)
	}
}

func TestLoopFuel(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	for _, n := range []uint64{0, 1, 10, 1000} {
		res, used, err := in.run(DefaultLimit, "sum", n)
		require.NoError(t, err)
		require.Equal(t, n*(n+1)/2, res[0])
		require.EqualValues(t, 13*n+6, used, "sum(%d)", n)
	}
}

func TestRecursionFuel(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	for _, n := range []uint64{0, 1, 5, 100} {
		res, used, err := in.run(DefaultLimit, "rec", n)
		require.NoError(t, err)
		require.Equal(t, n, res[0])
		require.EqualValues(t, 9*n+4, used, "rec(%d)", n)
	}
	// Running out on the way down: a function entry check traps.
	_, _, err := in.run(9*50, "rec", 100)
	require.ErrorContains(t, err, "unreachable")
	require.True(t, Exhausted(in.remaining()))
	// Running out on the way back up: the check after a call traps.
	_, used, err := in.run(9*100, "rec", 100)
	require.ErrorContains(t, err, "unreachable")
	require.True(t, Exhausted(in.remaining()))
	require.EqualValues(t, 9*100+2, used) // the first post-call charge overdraws
	// Exactly enough fuel: the counter ends at 0, not exhausted.
	_, used, err = in.run(9*100+4, "rec", 100)
	require.NoError(t, err)
	require.EqualValues(t, 9*100+4, used)
	require.EqualValues(t, 0, in.remaining())
	require.False(t, Exhausted(in.remaining()))
}

func TestBranchPathsChargeTheirBlocks(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	for _, tc := range []struct {
		fn        string
		arg       uint64
		res, fuel uint64
	}{
		{"branch", 1, 14, 6},  // br_if taken: block, (const, get, br_if), (const, mul)
		{"branch", 0, 18, 10}, // falls through: + (drop, const, const, add)
		{"ifelse", 1, 15, 5},  // (get, if), (const), (const, add)
		{"ifelse", 0, 26, 7},  // (get, if), (const, const, add), (const, add)
	} {
		res, used, err := in.run(DefaultLimit, tc.fn, tc.arg)
		require.NoError(t, err)
		require.Equal(t, tc.res, res[0], "%s(%d)", tc.fn, tc.arg)
		require.EqualValues(t, tc.fuel, used, "%s(%d)", tc.fn, tc.arg)
	}
}

func TestOverdrawnReturn(t *testing.T) {
	t.Parallel()
	// branch(0) is charged 4 (entry, checked), 4 (after br_if) and 2
	// (after the join), the last two unchecked by default.
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	res, used, err := in.run(5, "branch", 0)
	require.NoError(t, err)
	require.EqualValues(t, 18, res[0])
	require.EqualValues(t, 10, used)
	require.EqualValues(t, -5, in.remaining())
	require.True(t, Exhausted(in.remaining()), "the host must discard this run")

	strict, err := Instrument(testModule(), Options{CheckEveryBlock: true})
	require.NoError(t, err)
	sin := instantiate(t, r, strict)
	_, used, err = sin.run(5, "branch", 0)
	require.ErrorContains(t, err, "unreachable")
	require.EqualValues(t, 8, used)
	require.True(t, Exhausted(sin.remaining()))
	// With enough fuel both modes charge the same.
	for _, x := range []*instance{in, sin} {
		for arg, want := range map[uint64]int64{0: 10, 1: 6} {
			_, used, err = x.run(10, "branch", arg)
			require.NoError(t, err)
			require.Equal(t, want, used)
			require.False(t, Exhausted(x.remaining()))
		}
	}
}

func TestBulkOpsChargeLength(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))

	_, used, err := in.run(DefaultLimit, "fill", 160)
	require.NoError(t, err)
	require.EqualValues(t, 103+160/16, used)
	mem, ok := in.mod.Memory().Read(0, 161)
	require.True(t, ok)
	require.Equal(t, byte(7), mem[159])
	require.Equal(t, byte(0), mem[160])

	_, used, err = in.run(DefaultLimit, "copy", 1000, 0, 100)
	require.NoError(t, err)
	require.EqualValues(t, 103+100/16, used)
	b, _ := in.mod.Memory().ReadByte(1099)
	require.Equal(t, byte(7), b)

	// A 64 KiB fill costs 4096 on top of the flat part: with less fuel the
	// check before memory.fill traps and the memory is untouched.
	_, _, err = in.run(103+4095, "fill", 1<<16)
	require.Error(t, err)
	require.True(t, Exhausted(in.remaining()))
	b, _ = in.mod.Memory().ReadByte(1 << 15)
	require.Equal(t, byte(0), b)

	res, used, err := in.run(DefaultLimit, "tablegrow", 10)
	require.NoError(t, err)
	require.EqualValues(t, 0, res[0]) // previous size
	require.EqualValues(t, 102+10, used)

	// A huge table.grow is stopped by the fuel before it allocates.
	_, _, err = in.run(DefaultLimit, "tablegrow", 1<<31)
	require.Error(t, err)
	require.True(t, Exhausted(in.remaining()))
}

func TestSameResultsAsOriginal(t *testing.T) {
	t.Parallel()
	orig := testModule()
	metered := mustInstrument(t, orig)
	for _, interp := range []bool{false, true} {
		r := newRuntime(context.Background(), interp)
		a := instantiate(t, r, orig)
		require.Nil(t, a.fuel)
		b := instantiate(t, r, metered)
		for _, tc := range []struct {
			fn   string
			args []uint64
		}{
			{"straight", nil},
			{"sum", []uint64{12345}},
			{"fib", []uint64{0}},
			{"fib", []uint64{1}},
			{"fib", []uint64{90}},
			{"rec", []uint64{500}},
			{"branch", []uint64{0}},
			{"branch", []uint64{3}},
			{"ifelse", []uint64{0}},
			{"ifelse", []uint64{3}},
		} {
			want, _, err := a.run(0, tc.fn, tc.args...)
			require.NoError(t, err)
			got, _, err := b.run(DefaultLimit, tc.fn, tc.args...)
			require.NoError(t, err)
			require.Equal(t, want, got, "%s%v", tc.fn, tc.args)
		}
		res, _, err := b.run(DefaultLimit, "fib", 90)
		require.NoError(t, err)
		require.EqualValues(t, uint64(2880067194370816120), res[0])
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, testModule()))
	var first int64
	for i := 0; i < 20; i++ {
		_, used, err := in.run(DefaultLimit, "fib", 5000)
		require.NoError(t, err)
		if i == 0 {
			first = used
			require.Positive(t, used)
		}
		require.Equal(t, first, used, "run %d", i)
	}
}

func TestCostHook(t *testing.T) {
	t.Parallel()
	out, err := Instrument(testModule(), Options{Cost: func(op Opcode) uint32 {
		if op == opI32Mul {
			return 10
		}
		return 0 // even with free instructions, loops and calls still burn fuel
	}})
	require.NoError(t, err)
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, out)
	_, used, err := in.run(DefaultLimit, "straight")
	require.NoError(t, err)
	require.EqualValues(t, 10, used)
	_, _, err = in.run(1000, "spin")
	require.Error(t, err)
	require.True(t, Exhausted(in.remaining()))
}

func TestTailCalls(t *testing.T) {
	t.Parallel()
	m := tailCallModule()
	r := newRuntime(context.Background(), false)
	in := instantiate(t, r, mustInstrument(t, m))
	// Entry (get, eqz, if) 3, then-branch (const, return) 2, after end
	// (get, const, sub, return_call) 4.
	res, used, err := in.run(DefaultLimit, "count", 1000)
	require.NoError(t, err)
	require.EqualValues(t, 0, res[0])
	require.EqualValues(t, 1000*7+5, used)
	_, used, err = in.run(50_000, "forever")
	require.Error(t, err)
	require.True(t, Exhausted(in.remaining()))
	require.EqualValues(t, 50_001, used)
}

func TestImportsAndExistingGlobals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRuntime(ctx, false)
	_, err := r.NewHostModuleBuilder("env").
		NewFunctionBuilder().WithFunc(func(x uint32) uint32 { return x * 2 }).Export("double").
		Instantiate(ctx)
	require.NoError(t, err)
	_, err = r.InstantiateWithConfig(ctx, wasmModule(
		sec(secGlobal, vec(cat([]byte{tI32, 0x00}, i32c(100), op(opEnd)))),
		sec(secExport, vec(export("base", 3, 0))),
	), wazero.NewModuleConfig().WithName("genv"))
	require.NoError(t, err)

	m := importsModule()
	out := mustInstrument(t, m)
	require.NotContains(t, string(out), ".debug_info")
	require.Contains(t, string(out), "producers")
	in := instantiate(t, r, out)
	// Entry (get, const, add, set, get, get, add, call) 8, after the call
	// (const, add) 2.
	res, used, err := in.run(DefaultLimit, "f")
	require.NoError(t, err)
	require.EqualValues(t, 213, res[0])
	require.EqualValues(t, 10, used)
	require.EqualValues(t, 6, in.mod.ExportedGlobal("g").Get())
	// The fuel global comes after the imported one and the two defined.
	fuelIdx, ok := findFuelExportIndex(t, out)
	require.True(t, ok)
	require.EqualValues(t, 3, fuelIdx)
	// The name section survived and names the same function.
	cm, err := r.CompileModule(ctx, out)
	require.NoError(t, err)
	require.Equal(t, ".f", cm.ExportedFunctions()["f"].DebugName())
}

// findFuelExportIndex returns the global index exported as ExportName.
func findFuelExportIndex(t *testing.T, wasm []byte) (uint32, bool) {
	r := &reader{b: wasm, pos: 8}
	for !r.eof() {
		id, _ := r.byte()
		size, err := r.u32()
		require.NoError(t, err)
		content, err := r.bytes(uint64(size))
		require.NoError(t, err)
		if id != secExport {
			continue
		}
		cr := &reader{b: content}
		n, _ := cr.u32()
		for i := uint32(0); i < n; i++ {
			name, _ := cr.name()
			kind, _ := cr.byte()
			idx, _ := cr.u32()
			if string(name) == ExportName && kind == 3 {
				return idx, true
			}
		}
	}
	return 0, false
}

func TestMinimalModules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRuntime(ctx, false)
	for name, m := range minimalModules() {
		out, err := Instrument(m, Options{})
		require.NoError(t, err, name)
		_, err = r.CompileModule(ctx, m)
		require.NoError(t, err, name)
		mod, err := r.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName(""))
		require.NoError(t, err, name)
		require.NotNil(t, mod.ExportedGlobal(ExportName), name)
		require.NoError(t, mod.Close(ctx))
	}
}

func TestStartFunctionIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := startLoopModule()
	out, err := Instrument(m, Options{Limit: 1000})
	require.NoError(t, err)
	r := newRuntime(ctx, false)
	_, err = r.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName(""))
	require.ErrorContains(t, err, "unreachable")
	_, err = Instrument(m, Options{Limit: -1})
	require.Error(t, err)
}

func TestRejects(t *testing.T) {
	t.Parallel()
	fn := func(code ...[]byte) []byte {
		return wasmModule(
			sec(secType, vec(functype(nil, nil))),
			sec(secFunction, vec(uleb(0))),
			sec(secCode, vec(fbody(nil, code...))),
		)
	}
	good := fn(i32c(1), op(opDrop))
	for name, tc := range map[string]struct {
		wasm []byte
		err  error
		msg  string
	}{
		"bad magic":       {[]byte("\x00asn\x01\x00\x00\x00"), ErrMalformed, "magic"},
		"short":           {[]byte{0, 'a'}, ErrMalformed, "magic"},
		"bad version":     {[]byte("\x00asm\x02\x00\x00\x00"), ErrMalformed, "version"},
		"truncated":       {good[:len(good)-2], ErrMalformed, ""},
		"lying size":      {cat(wasmHeader, []byte{secType, 0xff, 0xff, 0xff, 0xff, 0x0f}), ErrMalformed, "exceeds"},
		"out of order":    {wasmModule(sec(secFunction, vec()), sec(secType, vec())), ErrMalformed, "out of order"},
		"duplicate":       {wasmModule(sec(secType, vec()), sec(secType, vec())), ErrMalformed, "out of order"},
		"unknown sec":     {wasmModule(sec(14, nil)), ErrMalformed, "unknown section"},
		"threads":         {fn(i32c(0), op(0xfe, 0x10, 0x02, 0x00), op(opDrop)), ErrUnsupported, "unsupported opcode 0xfe 0x10 at function 0 offset"},
		"try":             {fn(op(0x06, bt0), op(opEnd)), ErrUnsupported, "unsupported opcode 0x06"},
		"gc":              {fn(op(0xfb, 0x00)), ErrUnsupported, "0xfb"},
		"relaxed simd":    {fn(op(0xfd, 0x80, 0x02)), ErrUnsupported, "0xfd 0x100"},
		"misc 18":         {fn(op(0xfc, 0x12)), ErrUnsupported, "0xfc 0x12"},
		"fuel global":     {fn(op(opGlobalGet, 0), op(opDrop)), ErrMalformed, "unknown global 0"},
		"fuel global set": {fn(i64c(1<<40), op(opGlobalSet, 0)), ErrMalformed, "unknown global 0"},
		"fuel local set":  {fn(i64c(1<<40), lset(0)), ErrMalformed, "unknown local 0"},
		"fuel local get":  {fn(lget(0), op(opDrop)), ErrMalformed, "unknown local 0"},
		"export conflict": {wasmModule(
			sec(secGlobal, vec(cat([]byte{tI64, 0}, i64c(0), op(opEnd)))),
			sec(secExport, vec(export(ExportName, 3, 0)))), ErrExportConflict, ""},
		"export unknown global": {wasmModule(sec(secExport, vec(export("g", 3, 0)))), ErrMalformed, "unknown global"},
		"trailing code":         {wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))), sec(secCode, vec(cat(uleb(3), []byte{0, opEnd, opEnd})))), ErrMalformed, "after its end"},
		"body too short":        {wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))), sec(secCode, vec(cat(uleb(2), []byte{0, opBlock})))), ErrMalformed, ""},
		"count mismatch":        {wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0), uleb(0))), sec(secCode, vec(fbody(nil)))), ErrMalformed, "bodies"},
		"no code":               {wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0)))), ErrMalformed, "no code section"},
		"else no if":            {fn(op(opBlock, bt0), op(opElse), op(opEnd)), ErrMalformed, "else without if"},
		"leb too long":          {fn(op(opI32Const, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00), op(opDrop)), ErrMalformed, "too long"},
		"leb overflow":          {fn(op(opI32Const, 0x80, 0x80, 0x80, 0x80, 0x10), op(opDrop)), ErrMalformed, "overflows"},
		"global trailing":       {wasmModule(sec(secGlobal, vec(cat([]byte{tI32, 0}, i32c(0), op(opEnd))), []byte{0x00})), ErrMalformed, "trailing"},
		"tag section":           {wasmModule(sec(secTag, vec())), ErrUnsupported, "exception"},
	} {
		_, err := Instrument(tc.wasm, Options{})
		require.Error(t, err, name)
		require.True(t, errors.Is(err, tc.err), "%s: %v", name, err)
		require.True(t, strings.Contains(err.Error(), tc.msg), "%s: %v", name, err)
	}
	_, err := Instrument(good, Options{})
	require.NoError(t, err)
}

func TestSIMDAndRefTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := simdModule()
	r := newRuntime(ctx, false)
	a := instantiate(t, r, m)
	want, _, err := a.run(0, "f")
	require.NoError(t, err)
	b := instantiate(t, r, mustInstrument(t, m))
	got, used, err := b.run(DefaultLimit, "f")
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.EqualValues(t, 28, used)
}
