package meter

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// The WebAssembly spec test suite ships, compiled to binary, with the
// wazero module. TestSpecSuite instruments every module of it and checks
//
//   - that Instrument accepts every module the compiler accepts, and that
//     the result compiles;
//   - that it never turns a module the compiler rejects into one it accepts;
//   - differentially, that every invocation of the suite (assert_return,
//     assert_trap, ...) gives the same results, bit for bit, or the same
//     trap, on the instrumented module as on the original.

const specFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesTailCall |
	experimental.CoreFeaturesExtendedConst | experimental.CoreFeaturesTypedFunctionReferences

var specDirs = []string{"v1", "v2", "tail-call", "extended-const", "typed-function-references"}

type specScript struct {
	Commands []specCommand `json:"commands"`
}

type specCommand struct {
	Type       string     `json:"type"`
	Line       int        `json:"line"`
	Name       string     `json:"name"`
	Filename   string     `json:"filename"`
	As         string     `json:"as"`
	ModuleType string     `json:"module_type"`
	Action     specAction `json:"action"`
}

type specAction struct {
	Type   string      `json:"type"`
	Module string      `json:"module"`
	Field  string      `json:"field"`
	Args   []specValue `json:"args"`
}

type specValue struct {
	Type     string `json:"type"`
	LaneType string `json:"lane_type"`
	Value    any    `json:"value"`
}

// wazeroDir locates the wazero module's source.
func wazeroDir(t *testing.T) string {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", "github.com/tetratelabs/wazero").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Skipf("cannot locate the wazero module source: %v", err)
	}
	return dir
}

func TestSpecSuite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("long")
	}
	base := filepath.Join(wazeroDir(t), "internal", "integration_test", "spectest")
	spectestModule, err := os.ReadFile(filepath.Join(base, "testdata", "spectest.wasm"))
	if err != nil {
		t.Skipf("spec suite not found: %v", err)
	}
	for _, dir := range specDirs {
		dir := dir
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			files, _ := filepath.Glob(filepath.Join(base, dir, "testdata", "*.json"))
			if len(files) == 0 {
				t.Skip("no spec scripts")
			}
			var s specStats
			for i, f := range files {
				if raceEnabled && (i%8 != 0 || (dir != "v1" && dir != "v2")) {
					// A sample under the race detector: the tail call
					// scripts alone loop for minutes there.
					continue
				}
				// Every other script runs the metered side with
				// Refuel, which renumbers the functions, and
				// TrackWrites. Not the typed
				// function references: wazero, which the sandbox runs
				// with the 2.0 features only, misses a type mismatch
				// in a table initializer (table.wast:57) once the module
				// imports a function.
				refuel := i%2 == 0 && dir != "typed-function-references"
				runSpecScript(t, f, spectestModule, &s, refuel)
			}
			t.Logf("%s: %d modules (%d valid, %d invalid), %d invocations compared", dir, s.modules, s.valid, s.invalid, s.invocations)
			if !raceEnabled {
				require.Positive(t, s.valid)
			}
		})
	}
}

type specStats struct{ modules, valid, invalid, invocations int }

// specSide is one runtime: the original modules, or the instrumented ones.
type specSide struct {
	r         wazero.Runtime
	metered   bool
	current   api.Module
	named     map[string]api.Module
	unnamedID int
}

func runSpecScript(t *testing.T, file string, spectestModule []byte, stats *specStats, refuel bool) {
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var script specScript
	require.NoError(t, json.Unmarshal(raw, &script), file)
	dir := filepath.Dir(file)
	ctx := context.Background()

	// The engine matters little here and the interpreter compiles much
	// faster; the Go guest tests use the compiler.
	newSide := func(metered bool) *specSide {
		cfg := wazero.NewRuntimeConfigInterpreter().WithCoreFeatures(specFeatures)
		s := &specSide{r: wazero.NewRuntimeWithConfig(ctx, cfg), metered: metered, named: map[string]api.Module{}}
		_, err := s.r.InstantiateWithConfig(ctx, spectestModule, wazero.NewModuleConfig().WithName("spectest"))
		require.NoError(t, err)
		if metered && refuel {
			_, err = s.r.NewHostModuleBuilder(RefuelModule).NewFunctionBuilder().
				WithFunc(func(_ context.Context, m api.Module) { m.ExportedGlobal(ExportName).(api.MutableGlobal).Set(1 << 40) }).
				Export(RefuelName).Instantiate(ctx)
			require.NoError(t, err)
		}
		return s
	}
	orig, inst := newSide(false), newSide(true)
	defer orig.r.Close(ctx)
	defer inst.r.Close(ctx)

	for _, c := range script.Commands {
		where := filepath.Base(file) + ":" + strconv.Itoa(c.Line)
		switch c.Type {
		case "module", "assert_invalid", "assert_malformed", "assert_unlinkable", "assert_uninstantiable":
			if !strings.HasSuffix(c.Filename, ".wasm") {
				continue
			}
			wasm, err := os.ReadFile(filepath.Join(dir, c.Filename))
			require.NoError(t, err)
			stats.modules++
			metered, valid := checkSpecModule(t, where, orig.r, wasm, refuel)
			if valid {
				stats.valid++
			} else {
				stats.invalid++
			}
			if c.Type != "module" || !valid {
				continue
			}
			// Instantiate on both sides; both must agree.
			errA := orig.instantiate(ctx, wasm, c.Name)
			errB := inst.instantiate(ctx, metered, c.Name)
			require.Equal(t, errA == nil, errB == nil, "%s: instantiate: %v / %v", where, errA, errB)
		case "register":
			// Re-instantiating under the new name is not the spec's
			// semantics, but both sides do the same.
			for _, s := range []*specSide{orig, inst} {
				m := s.current
				if c.Name != "" {
					m = s.named[c.Name]
				}
				if m == nil {
					continue
				}
				s.named["register:"+c.As] = m
			}
		case "assert_return", "assert_trap", "assert_exhaustion", "action":
			if c.Action.Type != "invoke" {
				continue
			}
			args, ok := encodeSpecArgs(c.Action.Args)
			if !ok {
				continue
			}
			resA, errA, okA := orig.invoke(ctx, c.Action, args)
			resB, errB, okB := inst.invoke(ctx, c.Action, args)
			if !okA || !okB {
				require.Equal(t, okA, okB, where)
				continue
			}
			stats.invocations++
			require.Equal(t, errA == nil, errB == nil, "%s: %s: %v / %v", where, c.Action.Field, errA, errB)
			if errA != nil {
				require.Equal(t, firstLine(errA), firstLine(errB), where)
				continue
			}
			require.Equal(t, resA, resB, "%s: %s", where, c.Action.Field)
		}
	}
}

// checkSpecModule instruments one module and checks it against the
// compiler; it returns the instrumented module and whether the original
// compiles.
func checkSpecModule(t *testing.T, where string, r wazero.Runtime, wasm []byte, refuel bool) ([]byte, bool) {
	ctx := context.Background()
	compile := func(b []byte) error {
		cm, err := r.CompileModule(ctx, b)
		if err == nil {
			cm.Close(ctx)
		}
		return err
	}
	origErr := compile(wasm)
	out, err := Instrument(wasm, Options{Refuel: refuel, TrackWrites: refuel})
	if origErr == nil {
		require.NoError(t, err, "%s: Instrument rejects a valid module", where)
		require.NoError(t, compile(out), "%s: instrumented module does not compile", where)
		return out, true
	}
	if err == nil {
		require.Error(t, compile(out), "%s: instrumentation made an invalid module valid (%v)", where, origErr)
	}
	return nil, false
}

func (s *specSide) instantiate(ctx context.Context, wasm []byte, name string) error {
	s.unnamedID++
	mod, err := s.r.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName("m"+strconv.Itoa(s.unnamedID)))
	if err != nil {
		s.current = nil
		return err
	}
	s.current = mod
	if name != "" {
		s.named[name] = mod
	}
	return nil
}

func (s *specSide) invoke(ctx context.Context, a specAction, args []uint64) ([]uint64, error, bool) {
	m := s.current
	if a.Module != "" {
		m = s.named[a.Module]
	}
	if m == nil {
		return nil, nil, false
	}
	fn := m.ExportedFunction(a.Field)
	if fn == nil {
		return nil, nil, false
	}
	if s.metered {
		g := m.ExportedGlobal(ExportName)
		if g == nil {
			return nil, errors.New("no fuel global"), true
		}
		g.(api.MutableGlobal).Set(1 << 40)
	}
	res, err := fn.Call(ctx, args...)
	// References are addresses: only their null-ness is comparable.
	for i, rt := range fn.Definition().ResultTypes() {
		if i < len(res) && isRefType(rt) && res[i] != 0 {
			res[i] = 1
		}
	}
	return res, err, true
}

// isRefType reports whether a result type is a reference: funcref,
// externref, or a typed reference.
func isRefType(t api.ValueType) bool {
	switch t {
	case api.ValueTypeI32, api.ValueTypeI64, api.ValueTypeF32, api.ValueTypeF64, 0x7b:
		return false
	}
	return true
}

func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

// encodeSpecArgs converts the numeric and vector arguments of a spec
// command; references are not supported (ok false).
func encodeSpecArgs(vals []specValue) ([]uint64, bool) {
	var out []uint64
	for _, v := range vals {
		switch v.Type {
		case "i32", "i64", "f32", "f64":
			s, _ := v.Value.(string)
			n, ok := parseSpecInt(s)
			if !ok {
				return nil, false
			}
			if v.Type == "i32" || v.Type == "f32" {
				n = uint64(uint32(n))
			}
			out = append(out, n)
		case "v128":
			lanes, _ := v.Value.([]any)
			width := map[string]int{"i8": 1, "i16": 2, "i32": 4, "f32": 4, "i64": 8, "f64": 8}[v.LaneType]
			if width == 0 || len(lanes)*width != 16 {
				return nil, false
			}
			var b [16]byte
			for i, l := range lanes {
				s, _ := l.(string)
				n, ok := parseSpecInt(s)
				if !ok {
					return nil, false
				}
				var w [8]byte
				binary.LittleEndian.PutUint64(w[:], n)
				copy(b[i*width:(i+1)*width], w[:width])
			}
			out = append(out, binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:]))
		default:
			return nil, false
		}
	}
	return out, true
}

func parseSpecInt(s string) (uint64, bool) {
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, true
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return uint64(n), true
	}
	return 0, false
}

// TestWazeroCorpus instruments the other modules shipped with wazero
// (output of TinyGo, Zig, clang, Rust, AssemblyScript, emscripten, and
// wazero's own fuzz findings): whatever the compiler accepts, Instrument
// must accept, and the result must compile with the compiler engine.
// Modules using threads or exception handling must be rejected cleanly.
func TestWazeroCorpus(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("long")
	}
	root := wazeroDir(t)
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCoreFeatures(specFeatures))
	defer r.Close(ctx)
	var files []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".wasm") {
			files = append(files, path)
		}
		return nil
	})
	spec := filepath.Join(root, "internal", "integration_test", "spectest")
	valid := 0
	for _, f := range files {
		wasm, err := os.ReadFile(f)
		require.NoError(t, err)
		rel, _ := filepath.Rel(root, f)
		out, ierr := Instrument(wasm, Options{})
		if strings.HasPrefix(f, spec) {
			// Spec modules are covered by TestSpecSuite; here only the
			// threads and exception handling ones matter.
			if !strings.Contains(rel, "threads") && !strings.Contains(rel, "exception-handling") {
				continue
			}
			if ierr != nil {
				require.True(t, errors.Is(ierr, ErrUnsupported) || errors.Is(ierr, ErrMalformed), "%s: %v", rel, ierr)
			}
			continue
		}
		cm, err := r.CompileModule(ctx, wasm)
		if err != nil {
			continue
		}
		cm.Close(ctx)
		valid++
		require.NoError(t, ierr, rel)
		cm, err = r.CompileModule(ctx, out)
		require.NoError(t, err, rel)
		cm.Close(ctx)
		out, ierr = Instrument(wasm, Options{Refuel: true, TrackWrites: true})
		require.NoError(t, ierr, rel+" (refuel)")
		cm, err = r.CompileModule(ctx, out)
		require.NoError(t, err, rel+" (refuel)")
		cm.Close(ctx)
	}
	t.Logf("%d toolchain modules instrumented and compiled", valid)
	require.Positive(t, valid)
}
