package meter

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero/api"
)

// writesModule has a memory of pages pages and exports one function per
// kind of write: stores of each width (one with an offset that crosses a
// chunk boundary), memory.fill and memory.copy, and a function that stores
// through a call to another (so the callee's bits reach the global too).
func writesModule(pages uint64) []byte {
	const tF32 = 0x7d
	memarg := func(align, offset uint64) []byte { return cat(uleb(align), uleb(offset)) }
	types := sec(secType, vec(
		functype([]byte{tI32, tI32}, nil),       // 0: (a, v i32)
		functype([]byte{tI32, tI64}, nil),       // 1: (a, v i64)
		functype([]byte{tI32, tF64}, nil),       // 2: (a, v f64)
		functype([]byte{tI32, tI32, tI32}, nil), // 3: (d, x, n)
		functype([]byte{tI32, tF32}, nil),       // 4: (a, v f32)
	))
	funcs := sec(secFunction, vec(uleb(0), uleb(1), uleb(2), uleb(0), uleb(3), uleb(3), uleb(0), uleb(4)))
	memory := sec(secMemory, vec(cat([]byte{0x00}, uleb(pages))))
	exports := sec(secExport, vec(
		export("st32", 0, 0), export("st64", 0, 1), export("stf64", 0, 2), export("st8", 0, 3),
		export("fill", 0, 4), export("copy", 0, 5), export("viacall", 0, 6), export("stf32", 0, 7),
		export("memory", 2, 0),
	))
	code := sec(secCode, vec(
		fbody(nil, lget(0), lget(1), op(0x36), memarg(2, 0)),      // i32.store
		fbody(nil, lget(0), lget(1), op(0x37), memarg(3, 4093)),   // i64.store offset=4093
		fbody(nil, lget(0), lget(1), op(0x39), memarg(3, 16)),     // f64.store offset=16
		fbody(nil, lget(0), lget(1), op(0x3a), memarg(0, 0)),      // i32.store8
		fbody(nil, lget(0), lget(1), lget(2), misc(11), op(0x00)), // memory.fill
		fbody(nil, lget(0), lget(1), lget(2), misc(10), op(0x00, 0x00)),
		fbody(nil, lget(0), i32c(1), op(opI32Add), lget(1), call(3)), // st8(a+1, v)
		fbody(nil, lget(0), lget(1), op(0x38), memarg(2, 0)),         // f32.store
	))
	return wasmModule(types, funcs, memory, exports, code)
}

// TestTrackWritesIsSound runs random writes and checks that every chunk of
// memory that changed has its bit set, and that a store sets no bit but
// its chunk's and the next's.
func TestTrackWritesIsSound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		pages uint64
		shift uint8
	}{{1, 12}, {4, 12}, {16, 12}, {16, 16}, {3, 13}} {
		r := newRuntime(ctx, false)
		out, err := Instrument(writesModule(tc.pages), Options{TrackWrites: true, WriteShift: tc.shift, Refuel: true})
		require.NoError(t, err)
		_, err = r.NewHostModuleBuilder(RefuelModule).NewFunctionBuilder().
			WithFunc(func(context.Context) {}).Export(RefuelName).Instantiate(ctx)
		require.NoError(t, err)
		in := instantiate(t, r, out)
		dirty := in.mod.ExportedGlobal(DirtyExportName).(api.MutableGlobal)
		mem := in.mod.ExportedMemory("memory")
		size := tc.pages << 16
		chunk := uint64(1) << tc.shift
		rng := rand.New(rand.NewPCG(uint64(tc.pages), uint64(tc.shift)))
		for i := 0; i < 2000; i++ {
			before, _ := mem.Read(0, uint32(size))
			before = bytes.Clone(before)
			dirty.Set(0)
			a := rng.Uint64N(size - 4200)
			v := rng.Uint64() | 1 // never all zero, so every write changes something
			var fn string
			var args []uint64
			var lo, hi uint64 // the bytes written
			switch k := rng.IntN(8); k {
			case 0:
				fn, args, lo, hi = "st32", []uint64{a, v}, a, a+4
			case 1:
				fn, args, lo, hi = "st64", []uint64{a, v}, a+4093, a+4101
			case 2:
				fn, args, lo, hi = "stf64", []uint64{a, v}, a+16, a+24
			case 3:
				fn, args, lo, hi = "st8", []uint64{a, v}, a, a+1
			case 4:
				n := rng.Uint64N(min(size-a, 3*chunk))
				fn, args, lo, hi = "fill", []uint64{a, v&0xff | 1, n}, a, a+n
			case 5:
				n := rng.Uint64N(min(size-a, 3*chunk))
				fn, args, lo, hi = "copy", []uint64{a, rng.Uint64N(size - n), n}, a, a+n
			case 6:
				fn, args, lo, hi = "viacall", []uint64{a, v}, a+1, a+2
			case 7:
				fn, args, lo, hi = "stf32", []uint64{a, v}, a, a+4
			}
			_, _, err := in.run(DefaultLimit, fn, args...)
			require.NoError(t, err)
			after, _ := mem.Read(0, uint32(size))
			bits := dirty.Get()
			for c := uint64(0); c*chunk < size; c++ {
				if !bytes.Equal(before[c*chunk:(c+1)*chunk], after[c*chunk:(c+1)*chunk]) {
					require.NotZero(t, bits&(1<<(c%64)), "%s%v: chunk %d changed, bits %064b", fn, args, c, bits)
				}
			}
			if fn != "fill" && fn != "copy" || hi > lo {
				// Only the chunks written, and for a store the next.
				var want uint64
				for c := lo >> tc.shift; c <= (hi-1)>>tc.shift; c++ {
					want |= 1 << (c % 64)
				}
				if fn != "fill" && fn != "copy" {
					want |= 1 << ((lo>>tc.shift + 1) % 64)
				}
				if hi-lo >= 64*chunk {
					want = ^uint64(0)
				}
				require.Equal(t, want, bits, "%s%v", fn, args)
			}
		}
	}
}
