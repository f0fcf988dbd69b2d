package quickjs_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/guests/quickjs"
)

// TestRebuildIsIdentical rebuilds the guest with its recipe
// (tools/quickjs/build.sh: pinned sources, checksums, patch, flags) and
// requires the committed module, byte for byte. It needs clang and wasi-libc,
// the toolchain of tools/quickjs/TOOLCHAIN, and the QuickJS source (cached
// by an earlier build, else fetched with npm); without them it skips, saying
// what is missing.
func TestRebuildIsIdentical(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: rebuilding QuickJS takes about half a minute")
	}
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed, so the recipe cannot be checked here (Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)")
	}
	want := toolchain(t)
	out, err := exec.Command(clang, "--version").Output()
	require.NoError(t, err)
	if have := strings.SplitN(string(out), "\n", 2)[0]; have != want["clang"] {
		t.Skipf("clang is %q, the module was built with %q: a rebuild here makes other bytes", have, want["clang"])
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "wasi-libc").Output(); err == nil && string(out) != want["wasi-libc"] {
		t.Skipf("wasi-libc is %q, the module was built with %q: a rebuild here makes other bytes", out, want["wasi-libc"])
	}

	built := filepath.Join(t.TempDir(), "quickjs.wasm")
	cmd := exec.Command("sh", filepath.Join("..", "..", "tools", "quickjs", "build.sh"), built)
	msg, err := cmd.CombinedOutput()
	if err != nil && (strings.Contains(string(msg), "npm not found") || strings.Contains(string(msg), "npm pack")) {
		t.Skipf("no QuickJS source here: %s", bytes.TrimSpace(msg))
	}
	require.NoError(t, err, "%s", msg)
	b, err := os.ReadFile(built)
	require.NoError(t, err)
	if !bytes.Equal(b, quickjs.Wasm) {
		t.Fatalf("tools/quickjs/build.sh made %s (%d bytes), the committed quickjs.wasm is %s (%d bytes): run `make quickjs` and commit the module",
			sum(b), len(b), sum(quickjs.Wasm), len(quickjs.Wasm))
	}
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// toolchain reads tools/quickjs/TOOLCHAIN: "name value" lines.
func toolchain(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "tools", "quickjs", "TOOLCHAIN"))
	require.NoError(t, err)
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, _ := strings.Cut(line, " ")
		m[name] = value
	}
	require.NoError(t, s.Err())
	require.NotEmpty(t, m["clang"], "TOOLCHAIN names no clang")
	return m
}
