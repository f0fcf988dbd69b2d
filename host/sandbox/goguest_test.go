package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

var goGuest struct {
	once sync.Once
	wasm []byte
	skip string
	err  error
}

// buildGoGuest compiles testdata/goguest with GOOS=wasip1 GOARCH=wasm
// -buildmode=c-shared, once per test binary.
func buildGoGuest(tb testing.TB) []byte {
	tb.Helper()
	goGuest.once.Do(func() {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				goGuest.skip = "no Go toolchain"
				return
			}
		}
		dir, err := os.MkdirTemp("", "sandbox-goguest-")
		if err != nil {
			goGuest.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "goguest.wasm")
		cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-o", out, "./testdata/goguest")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
		if msg, err := cmd.CombinedOutput(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				goGuest.err = errors.New("go build failed: " + err.Error() + "\n" + string(msg))
			} else {
				goGuest.skip = "cannot run the Go toolchain: " + err.Error()
			}
			return
		}
		goGuest.wasm, goGuest.err = os.ReadFile(out)
	})
	if goGuest.skip != "" {
		tb.Skip(goGuest.skip)
	}
	require.NoError(tb, goGuest.err)
	return goGuest.wasm
}
