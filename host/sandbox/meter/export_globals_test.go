package meter

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero/api"
)

// counterModule defines global 0 (immutable i32 = 7), global 1 (mutable i32
// = 5) and global 2 (mutable i64 = -1, already exported as "g2"); inc()
// increments global 1 and returns it. Its export section comes after a
// custom section, and it has no export of its own when noExports is set.
func counterModule(noExports bool) []byte {
	exports := sec(secExport, vec(export("inc", 0, 0), export("g2", 3, 2)))
	if noExports {
		exports = nil
	}
	return wasmModule(
		sec(secType, vec(functype(nil, []byte{tI32}))),
		sec(secFunction, vec(uleb(0))),
		sec(secGlobal, vec(
			cat([]byte{tI32, 0x00}, i32c(7), op(opEnd)),
			cat([]byte{tI32, 0x01}, i32c(5), op(opEnd)),
			cat([]byte{tI64, 0x01}, i64c(-1), op(opEnd)),
		)),
		sec(secCustom, str("between"), []byte{1}),
		exports,
		sec(secCode, vec(fbody(nil,
			op(opGlobalGet, 1), i32c(1), op(opI32Add), op(opGlobalSet, 1), op(opGlobalGet, 1)))),
	)
}

func TestExportGlobals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRuntime(ctx, false)
	defer r.Close(ctx)

	out, added, err := ExportGlobals(counterModule(false), "logline_global_")
	require.NoError(t, err)
	require.Equal(t, []GlobalExport{
		{Name: "logline_global_1", Index: 1, Type: ValI32},
		{Name: "logline_global_2", Index: 2, Type: ValI64},
	}, added)

	// Composes with Instrument; the fuel global is not among the exports.
	out = mustInstrument(t, out)
	in := instantiate(t, r, out)
	g1, ok := in.mod.ExportedGlobal("logline_global_1").(api.MutableGlobal)
	require.True(t, ok)
	require.EqualValues(t, 5, g1.Get())
	res, _, err := in.run(1000, "inc")
	require.NoError(t, err)
	require.EqualValues(t, 6, res[0])
	require.EqualValues(t, 6, g1.Get())
	g1.Set(41) // restore-like write, seen by the guest
	res, _, err = in.run(1000, "inc")
	require.NoError(t, err)
	require.EqualValues(t, 42, res[0])

	// Both names of global 2 are the same global.
	g2 := in.mod.ExportedGlobal("logline_global_2").(api.MutableGlobal)
	g2.Set(99)
	require.EqualValues(t, 99, in.mod.ExportedGlobal("g2").Get())
	require.Nil(t, in.mod.ExportedGlobal("logline_global_0"), "immutable globals are not exported")

	// A module with no export section gets one at the right place.
	out, added, err = ExportGlobals(counterModule(true), "logline_global_")
	require.NoError(t, err)
	require.Len(t, added, 2)
	in = instantiate(t, r, mustInstrument(t, out))
	require.NotNil(t, in.mod.ExportedGlobal("logline_global_1"))
}

func TestExportGlobalsUnchangedAndErrors(t *testing.T) {
	t.Parallel()
	// No mutable global: the input is returned as is.
	m := wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))),
		sec(secCode, vec(fbody(nil))))
	out, added, err := ExportGlobals(m, "p_")
	require.NoError(t, err)
	require.Empty(t, added)
	require.Equal(t, m, out)

	// Imported globals are left alone.
	out, added, err = ExportGlobals(importsModule(), "p_")
	require.NoError(t, err)
	require.Equal(t, []GlobalExport{{Name: "p_1", Index: 1, Type: ValI32}}, added)
	info, err := Inspect(out)
	require.NoError(t, err)
	e, ok := info.Export("p_1")
	require.True(t, ok)
	require.Equal(t, Export{Name: "p_1", Kind: KindGlobal, Index: 1}, e)

	// The prefix is reserved.
	_, _, err = ExportGlobals(counterModule(false), "g")
	require.True(t, errors.Is(err, ErrReservedExport), err)

	_, _, err = ExportGlobals([]byte("garbage!"), "p_")
	require.True(t, errors.Is(err, ErrMalformed), err)
	_, _, err = ExportGlobals(m, "")
	require.Error(t, err)
}

func TestInspect(t *testing.T) {
	t.Parallel()
	info, err := Inspect(importsModule())
	require.NoError(t, err)
	require.Equal(t, []Import{
		{Module: "env", Name: "double", Kind: KindFunc, Type: FuncType{Params: []byte{ValI32}, Results: []byte{ValI32}}},
		{Module: "genv", Name: "base", Kind: KindGlobal},
	}, info.Imports)
	require.Len(t, info.Funcs, 2)
	require.Equal(t, "() -> (i32)", info.Funcs[1].String())
	require.Equal(t, []Global{
		{Type: ValI32, Imported: true},
		{Type: ValI32, Mutable: true, ConstI32: 5, HasConstI32: true},
		{Type: ValI64},
	}, info.Globals)
	require.False(t, info.HasStart)
	require.Empty(t, info.StateOps)

	// testModule has a memory and grows its table.
	info, err = Inspect(testModule())
	require.NoError(t, err)
	require.Equal(t, []Memory{{Min: 1}}, info.Memories)
	require.Equal(t, []Opcode{OpTableGrow}, info.StateOps)

	info, err = Inspect(startLoopModule())
	require.NoError(t, err)
	require.True(t, info.HasStart)

	// State-changing instructions, each reported once.
	m := wasmModule(
		sec(secType, vec(functype(nil, nil))),
		sec(secFunction, vec(uleb(0), uleb(0))),
		sec(secTable, vec(cat([]byte{tFuncref, 0x00}, uleb(1)))),
		sec(secMemory, vec(cat([]byte{0x01}, uleb(1), uleb(2)))),
		sec(secDataCount, uleb(1)),
		sec(secCode, vec(
			fbody(nil, misc(9), uleb(0), i32c(0), op(opRefNull, tFuncref), op(0x26), uleb(0)),
			fbody(nil, misc(9), uleb(0)),
		)),
		sec(secData, vec(cat(uleb(1), str("x")))),
	)
	info, err = Inspect(m)
	require.NoError(t, err)
	require.Equal(t, []Opcode{OpDataDrop, OpTableSet}, info.StateOps)
	require.Equal(t, []Memory{{Min: 1, Max: 2, HasMax: true}}, info.Memories)
}

func TestInspectMalformed(t *testing.T) {
	t.Parallel()
	for name, m := range map[string][]byte{
		"empty":         nil,
		"magic":         []byte("\x00asn\x01\x00\x00\x00"),
		"version":       []byte("\x00asm\x02\x00\x00\x00"),
		"truncated":     wasmModule([]byte{secType, 5, 1}),
		"order":         wasmModule(sec(secFunction, vec()), sec(secType, vec())),
		"bad type":      wasmModule(sec(secType, vec([]byte{0x61}))),
		"lying count":   wasmModule(sec(secType, uleb(1<<30))),
		"unknown type":  wasmModule(sec(secType, vec()), sec(secFunction, vec(uleb(3)))),
		"import kind":   wasmModule(sec(secImport, vec(cat(str("a"), str("b"), []byte{0x09})))),
		"trailing":      wasmModule(sec(secType, vec(), []byte{0})),
		"code garbage":  wasmModule(sec(secType, vec(functype(nil, nil))), sec(secFunction, vec(uleb(0))), sec(secCode, vec(cat(uleb(2), []byte{0x00, 0xff})))),
		"mutability":    wasmModule(sec(secGlobal, vec(cat([]byte{tI32, 0x02}, i32c(1), op(opEnd))))),
		"custom name":   wasmModule(sec(secCustom, uleb(9))),
		"valtypes 2^30": wasmModule(sec(secType, vec(cat([]byte{0x60}, uleb(1<<30))))),
	} {
		_, err := Inspect(m)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported), "%s: %v", name, err)
	}
}

func FuzzInspect(f *testing.F) {
	f.Add(importsModule())
	f.Add(testModule())
	f.Add(counterModule(true))
	f.Add(startLoopModule())
	f.Fuzz(func(t *testing.T, wasm []byte) {
		_, _ = Inspect(wasm)
		// A module the rewrites accept stays decodable.
		if out, _, err := ExportGlobals(wasm, "p_"); err == nil {
			_, err = Inspect(out)
			require.NoError(t, err)
		}
		if out, _, err := ExportStart(wasm, "p_start"); err == nil {
			info, err := Inspect(out)
			require.NoError(t, err)
			require.False(t, info.HasStart)
		}
	})
}

func TestExportStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRuntime(ctx, false)
	defer r.Close(ctx)

	// startLoopModule loops forever in its start function: instantiating
	// it as is would not return (it runs out of the baked-in fuel).
	out, ok, err := ExportStart(startLoopModule(), "logline_start")
	require.NoError(t, err)
	require.True(t, ok)
	info, err := Inspect(out)
	require.NoError(t, err)
	require.False(t, info.HasStart)
	e, ok := info.Export("logline_start")
	require.True(t, ok)
	require.Equal(t, KindFunc, e.Kind)

	// Instantiation no longer runs it; the host calls it with fuel set.
	in := instantiate(t, r, mustInstrument(t, out))
	_, used, err := in.run(5000, "logline_start")
	require.Error(t, err)
	require.True(t, Exhausted(in.remaining()))
	require.GreaterOrEqual(t, used, int64(5000))

	// No start section: unchanged.
	m := counterModule(false)
	out, ok, err = ExportStart(m, "logline_start")
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, m, out)

	// The name is the host's.
	withName := wasmModule(
		sec(secType, vec(functype(nil, nil))),
		sec(secFunction, vec(uleb(0))),
		sec(secExport, vec(export("s", 0, 0))),
		sec(secStart, uleb(0)),
		sec(secCode, vec(fbody(nil))),
	)
	_, _, err = ExportStart(withName, "s")
	require.True(t, errors.Is(err, ErrReservedExport), err)
	out, ok, err = ExportStart(withName, "logline_start")
	require.NoError(t, err)
	require.True(t, ok)
	in = instantiate(t, r, out)
	require.NotNil(t, in.mod.ExportedFunction("logline_start"))
	require.NotNil(t, in.mod.ExportedFunction("s"))
}
