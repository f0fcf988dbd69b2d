package meter

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// goGuestSource is a CPU-bound guest: each round sorts 10,000
// pseudo-random ints and hashes them. The number of rounds is argv[1].
const goGuestSource = `package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
)

func main() {
	rounds := 1
	if len(os.Args) > 1 {
		rounds, _ = strconv.Atoi(os.Args[1])
	}
	const n = 10000
	var sum [32]byte
	for r := 0; r < rounds; r++ {
		x := uint32(12345 + r)
		a := make([]int, n)
		for i := range a {
			x = x*1664525 + 1013904223
			a[i] = int(x >> 8)
		}
		sort.Ints(a)
		buf := make([]byte, 0, 8*n+32)
		for _, v := range a {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
		}
		sum = sha256.Sum256(append(buf, sum[:]...))
	}
	fmt.Printf("rounds=%d sha256=%x\n", rounds, sum)
}
`

var goGuest struct {
	once sync.Once
	wasm []byte
	skip string
	err  error
}

// buildGoGuest compiles goGuestSource with GOOS=wasip1 GOARCH=wasm (once
// per test binary) and returns the module.
func buildGoGuest(tb testing.TB) []byte {
	tb.Helper()
	buildGoGuestOnce()
	if goGuest.skip != "" {
		tb.Skip("skipping the Go toolchain guest: " + goGuest.skip)
	}
	require.NoError(tb, goGuest.err)
	return goGuest.wasm
}

func buildGoGuestOnce() {
	goGuest.once.Do(func() {
		dir, err := os.MkdirTemp("", "meter-goguest-")
		if err != nil {
			goGuest.skip = "cannot create a temporary directory: " + err.Error()
			return
		}
		defer os.RemoveAll(dir)
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				goGuest.skip = "no Go toolchain found (GOROOT/bin/go or go on PATH)"
				return
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(goGuestSource), 0o644); err != nil {
			goGuest.skip = err.Error()
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module guest\n\ngo 1.21\n"), 0o644); err != nil {
			goGuest.skip = err.Error()
			return
		}
		out := filepath.Join(dir, "guest.wasm")
		cmd := exec.Command(goBin, "build", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				// The toolchain ran and failed: that is a test failure.
				goGuest.err = errors.New("go build failed: " + err.Error() + "\n" + string(msg))
			} else {
				goGuest.skip = "cannot run the Go toolchain: " + err.Error()
			}
			return
		}
		goGuest.wasm, goGuest.err = os.ReadFile(out)
	})
}

// buildGoGuestOrNil is buildGoGuest without skipping: nil if the toolchain
// cannot be run here.
func buildGoGuestOrNil(tb testing.TB) []byte {
	tb.Helper()
	buildGoGuestOnce()
	if goGuest.skip != "" {
		return nil
	}
	require.NoError(tb, goGuest.err)
	return goGuest.wasm
}

type goRun struct {
	stdout    string
	exitCode  uint32
	err       error // a non-exit error (trap)
	remaining int64
	elapsed   time.Duration // of the _start call alone
}

// runGoGuest instantiates a wasip1 module, sets the fuel (if metered),
// calls _start and reports the outcome.
func runGoGuest(tb testing.TB, r wazero.Runtime, cm wazero.CompiledModule, fuel int64, args ...string) goRun {
	tb.Helper()
	ctx := context.Background()
	var stdout bytes.Buffer
	cfg := wazero.NewModuleConfig().WithName("").WithStdout(&stdout).WithStderr(&stdout).
		WithArgs(append([]string{"guest"}, args...)...).WithStartFunctions()
	mod, err := r.InstantiateModule(ctx, cm, cfg)
	require.NoError(tb, err)
	defer mod.Close(ctx)
	var g api.MutableGlobal
	if eg := mod.ExportedGlobal(ExportName); eg != nil {
		g = eg.(api.MutableGlobal)
		g.Set(uint64(fuel))
	}
	start := time.Now()
	_, err = mod.ExportedFunction("_start").Call(ctx)
	res := goRun{stdout: stdout.String(), elapsed: time.Since(start)}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		res.exitCode = exit.ExitCode()
	} else {
		res.err = err
	}
	if g != nil {
		res.remaining = int64(g.Get())
	}
	return res
}

func newWASIRuntime(tb testing.TB) wazero.Runtime {
	ctx := context.Background()
	r := newRuntime(ctx, false)
	tb.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	return r
}

func TestGoToolchainModule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	orig := buildGoGuest(t)
	metered := mustInstrument(t, orig)

	r := newWASIRuntime(t)
	cmOrig, err := r.CompileModule(ctx, orig)
	require.NoError(t, err)
	cmMetered, err := r.CompileModule(ctx, metered)
	require.NoError(t, err)

	base := runGoGuest(t, r, cmOrig, 0, "2")
	require.NoError(t, base.err)
	require.Zero(t, base.exitCode)
	require.Contains(t, base.stdout, "rounds=2 sha256=")

	const limit = 1 << 40
	first := runGoGuest(t, r, cmMetered, limit, "2")
	require.NoError(t, first.err)
	require.Zero(t, first.exitCode)
	require.Equal(t, base.stdout, first.stdout)
	used := limit - first.remaining
	require.Greater(t, used, int64(1_000_000), "a sort of 10,000 ints burns millions")
	t.Logf("Go guest, 2 rounds: %d fuel", used)

	second := runGoGuest(t, r, cmMetered, limit, "2")
	require.NoError(t, second.err)
	require.Zero(t, second.exitCode)
	require.Equal(t, base.stdout, second.stdout)
	require.Equal(t, used, limit-second.remaining, "fuel must be deterministic")

	// More work burns more fuel.
	third := runGoGuest(t, r, cmMetered, limit, "3")
	require.NoError(t, third.err)
	require.Greater(t, limit-third.remaining, used)

	// A tiny limit stops the guest with the counter negative.
	tiny := runGoGuest(t, r, cmMetered, 10_000, "2")
	require.Error(t, tiny.err)
	require.ErrorContains(t, tiny.err, "unreachable")
	require.True(t, Exhausted(tiny.remaining), "remaining %d", tiny.remaining)
	require.Empty(t, tiny.stdout)

	// Exactly the fuel used succeeds; one less is exhausted. (The guest
	// even traps: its last block calls proc_exit, an import, so its charge
	// is checked.)
	exact := runGoGuest(t, r, cmMetered, used, "2")
	require.NoError(t, exact.err)
	require.Zero(t, exact.exitCode)
	require.Zero(t, exact.remaining)
	short := runGoGuest(t, r, cmMetered, used-1, "2")
	require.Error(t, short.err)
	require.True(t, Exhausted(short.remaining))

	if raceEnabled {
		return // one more compilation of the Go guest is too slow there
	}
	// Checking every block changes nothing but where an overdraft traps.
	strict, err := Instrument(orig, Options{CheckEveryBlock: true})
	require.NoError(t, err)
	cmStrict, err := r.CompileModule(ctx, strict)
	require.NoError(t, err)
	s := runGoGuest(t, r, cmStrict, limit, "2")
	require.NoError(t, s.err)
	require.Zero(t, s.exitCode)
	require.Equal(t, base.stdout, s.stdout)
	require.Equal(t, used, limit-s.remaining)
	s = runGoGuest(t, r, cmStrict, used/2, "2")
	require.ErrorContains(t, s.err, "unreachable")
	require.True(t, Exhausted(s.remaining))
	require.Greater(t, s.remaining, int64(-DefaultGrowCost-1), "traps in the overdrawing block")
}
