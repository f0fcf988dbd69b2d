package sandbox

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox/wasmtest"
)

// preparingModule keeps what logline_prepare got as input and outputs it on
// every run; an input of three bytes is refused with the output "nope".
func preparingModule() []byte {
	imports := []wasmtest.Import{
		{Name: abi.FnInput, Params: []byte{wasmtest.I32, wasmtest.I32}, Results: []byte{wasmtest.I32}},
		{Name: abi.FnOutput, Params: []byte{wasmtest.I32, wasmtest.I32}, Results: []byte{wasmtest.I32}},
	}
	const input, output = 0, 1
	i32Store := []byte{0x36, 0x02, 0x00}
	i32Load := []byte{0x28, 0x02, 0x00}
	prepare := wasmtest.Cat(
		wasmtest.I32Const(1024), wasmtest.I32Const(1024), wasmtest.Call(input), wasmtest.LocalSet(0),
		wasmtest.I32Const(0), wasmtest.LocalGet(0), i32Store,
		// if len == 3 { output("nop"-ish: the input itself); return 1 }
		wasmtest.LocalGet(0), wasmtest.I32Const(3), []byte{0x46, 0x04, 0x40},
		wasmtest.I32Const(2048), wasmtest.I32Const(4), wasmtest.Call(output), wasmtest.Drop,
		wasmtest.I32Const(1), []byte{0x0f, 0x0b},
		wasmtest.I32Const(0),
	)
	run := wasmtest.Cat(
		wasmtest.I32Const(1024), wasmtest.I32Const(0), i32Load, wasmtest.Call(output), wasmtest.Drop,
		// Scribble over the prepared bytes: the next run must not see it.
		wasmtest.I32Const(1024), wasmtest.I32Const(0x58585858), i32Store,
		wasmtest.I32Const(0),
	)
	data := make([]byte, 2052)
	copy(data[2048:], "nope")
	return wasmtest.Funcs(imports, data,
		wasmtest.Func{Name: "logline_prepare", Locals: 1, Body: prepare},
		wasmtest.Func{Name: abi.Entry, Body: run},
	)
}

func TestPrepare(t *testing.T) {
	ctx := context.Background()
	r := newTestRuntime(t, Config{})
	m := mustLoad(t, r, preparingModule())

	a, err := r.Prepare(ctx, m, []byte("script A"))
	require.NoError(t, err)
	require.Equal(t, m.Hash, a.Hash, "a prepared module keeps the hash of its code")
	again, err := r.Prepare(ctx, m, []byte("script A"))
	require.NoError(t, err)
	require.Same(t, a, again, "one prepared module per (module, init)")
	b, err := r.Prepare(ctx, m, []byte("script B, longer"))
	require.NoError(t, err)

	for i := 0; i < 5; i++ {
		for _, c := range []struct {
			m    *Module
			want string
		}{{a, "script A"}, {b, "script B, longer"}} {
			for _, tenant := range []string{"t1", "t2"} {
				res := r.Run(ctx, c.m, Request{Tenant: tenant})
				requireOK(t, res)
				require.Equal(t, c.want, string(res.Output), "run %d", i)
				require.Equal(t, i > 0, res.Warm, "run %d: pooled per (module, init, tenant)", i)
			}
		}
	}
	// The unprepared module runs from its own snapshot: nothing prepared.
	res := r.Run(ctx, m, Request{})
	requireOK(t, res)
	require.Empty(t, res.Output)

	_, err = r.Prepare(ctx, m, []byte("bad"))
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, abi.CodeGuestError, e.Code)
	require.Contains(t, e.Message, "nope", "the guest's own message")

	_, err = r.Prepare(ctx, a, []byte("x"))
	require.ErrorContains(t, err, "already prepared")
	plain := mustLoad(t, r, wasmtest.Outputs("hi"))
	_, err = r.Prepare(ctx, plain, []byte("x"))
	require.ErrorAs(t, err, &e)
	require.Equal(t, abi.CodeInvalidModule, e.Code)
	require.Contains(t, e.Message, "logline_prepare")
}
