package meter

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// slicer is a host that hands fuel out in slices through the refuel import,
// the way the sandbox does: it counts what it gave and fails the call when
// the budget is gone.
type slicer struct {
	slice, budget, given int64
	calls                int
}

var errOutOfFuel = errors.New("out of fuel")

func (s *slicer) refuel(_ context.Context, m api.Module) {
	s.calls++
	g := m.ExportedGlobal(ExportName).(api.MutableGlobal)
	v := int64(g.Get())
	add := min(s.budget, s.slice-v) // what tops the counter up to a slice
	s.budget -= add
	s.given += add
	if v+add < 0 {
		g.Set(uint64(v + add))
		panic(errOutOfFuel)
	}
	g.Set(uint64(v + add))
}

// start sets the counter to the first slice of limit.
func (s *slicer) start(g api.MutableGlobal, limit int64) {
	first := min(limit, s.slice)
	s.budget, s.given, s.calls = limit-first, first, 0
	g.Set(uint64(first))
}

// used is the fuel used after a run that left remaining in the counter.
func (s *slicer) used(remaining int64) int64 { return s.given - remaining }

func refuelInstance(t *testing.T, interp bool, s *slicer) *instance {
	t.Helper()
	ctx := context.Background()
	r := newRuntime(ctx, interp)
	t.Cleanup(func() { _ = r.Close(ctx) })
	_, err := r.NewHostModuleBuilder(RefuelModule).NewFunctionBuilder().
		WithFunc(s.refuel).Export(RefuelName).Instantiate(ctx)
	require.NoError(t, err)
	out, err := Instrument(testModule(), Options{Refuel: true})
	require.NoError(t, err)
	return instantiate(t, r, out)
}

// With Refuel, the fuel used and the point where a run runs out are what
// they are without it, however small the slices.
func TestRefuelSameFuel(t *testing.T) {
	t.Parallel()
	for _, interp := range []bool{false, true} {
		for _, slice := range []int64{1, 7, 1000, 1 << 40} {
			s := &slicer{slice: slice}
			in := refuelInstance(t, interp, s)
			call := func(limit int64, fn string, args ...uint64) ([]uint64, int64, error) {
				f := in.mod.ExportedFunction(fn)
				s.start(in.fuel, limit)
				res, err := f.Call(context.Background(), args...)
				return res, s.used(in.remaining()), err
			}
			for _, n := range []uint64{0, 1, 10, 1000} {
				res, used, err := call(DefaultLimit, "sum", n)
				require.NoError(t, err)
				require.Equal(t, n*(n+1)/2, res[0])
				require.EqualValues(t, 13*n+6, used, "sum(%d), slice %d", n, slice)
			}
			// Recursion: the callee's calls go through the renumbered
			// function index.
			res, used, err := call(DefaultLimit, "rec", 100)
			require.NoError(t, err)
			require.EqualValues(t, 100, res[0])
			require.EqualValues(t, 9*100+4, used)

			// An infinite loop ends in the refuel call that finds no
			// budget, having used exactly what it did without Refuel.
			_, used, err = call(100_000, "spin")
			require.ErrorIs(t, err, errOutOfFuel)
			require.EqualValues(t, 100_001, used)
			require.Zero(t, s.budget)
			if slice == 1000 {
				require.Equal(t, 100, s.calls, "one call per slice")
			}

			// A bulk operation larger than a slice is paid in one call.
			_, used, err = call(DefaultLimit, "fill", 65536)
			require.NoError(t, err)
			require.EqualValues(t, 103+65536/16, used)
		}
	}
}

func TestRefuelImportRenumbers(t *testing.T) {
	t.Parallel()
	out, err := Instrument(importsModule(), Options{Refuel: true})
	require.NoError(t, err)
	info, err := Inspect(out)
	require.NoError(t, err)
	orig, err := Inspect(importsModule())
	require.NoError(t, err)
	// The refuel function is the last import; exports of defined
	// functions moved up by one, those of imports did not.
	nImports := 0
	for _, imp := range orig.Imports {
		if imp.Kind == KindFunc {
			nImports++
		}
	}
	last := info.Imports[len(info.Imports)-1]
	require.Equal(t, RefuelModule, last.Module)
	require.Equal(t, RefuelName, last.Name)
	for _, e := range orig.Exports {
		got, ok := info.Export(e.Name)
		require.True(t, ok, e.Name)
		if e.Kind == KindFunc && int(e.Index) >= nImports {
			require.Equal(t, e.Index+1, got.Index, e.Name)
		} else {
			require.Equal(t, e.Index, got.Index, e.Name)
		}
	}

	// Instrumenting twice is refused.
	_, err = Instrument(out, Options{Refuel: true})
	require.ErrorIs(t, err, ErrReservedImport)
}

// A module naming a type index one past its types is invalid; the type the
// refuel import appends must not make it valid.
func TestRefuelKeepsUnknownTypesInvalid(t *testing.T) {
	t.Parallel()
	bad := map[string][]byte{
		"call_indirect": wasmModule(
			sec(secType, vec(functype(nil, nil))),
			sec(secFunction, vec(uleb(0))),
			sec(secTable, vec(cat([]byte{tFuncref, 0x00}, uleb(1)))),
			sec(secCode, vec(fbody(nil, i32c(0), op(0x11), uleb(1), uleb(0))))),
		"function": wasmModule(
			sec(secType, vec(functype(nil, nil))),
			sec(secFunction, vec(uleb(1))),
			sec(secCode, vec(fbody(nil)))),
		"block type": wasmModule(
			sec(secType, vec(functype(nil, nil))),
			sec(secFunction, vec(uleb(0))),
			sec(secCode, vec(fbody(nil, op(opBlock), sleb(1), op(opEnd))))),
		"import": wasmModule(
			sec(secType, vec(functype(nil, nil))),
			sec(secImport, vec(cat(str("m"), str("f"), []byte{KindFunc}, uleb(1))))),
	}
	r := wazero.NewRuntime(context.Background())
	for name, m := range bad {
		_, err := r.CompileModule(context.Background(), m)
		require.Error(t, err, "%s: the original must be invalid", name)
		_, err = Instrument(m, Options{Refuel: true})
		require.ErrorIs(t, err, ErrMalformed, name)
		require.ErrorContains(t, err, "unknown type 1", name)
	}
}
