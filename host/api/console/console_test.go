package console_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/api/console"
)

const recipe = "../../../tools/console"

// files reads every file under fsys.
func files(t *testing.T, fsys fs.FS) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	require.NoError(t, fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		out[p] = b
		return err
	}))
	return out
}

// The embedded build is the one the recipe's SHA256SUMS names, file for
// file: a hand edit of dist, or a build from sources not committed, fails
// here without npm.
func TestEmbeddedBuildMatchesItsSums(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(recipe, "SHA256SUMS"))
	require.NoError(t, err)
	want := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		require.True(t, ok, "SHA256SUMS line %q", sc.Text())
		want[name] = sum
	}
	got := map[string]string{}
	for name, b := range files(t, console.Assets()) {
		s := sha256.Sum256(b)
		got[name] = hex.EncodeToString(s[:])
	}
	require.Equal(t, want, got, "host/api/console/dist is not what tools/console/SHA256SUMS names: run make console")
	require.Contains(t, got, "index.html")
}

// The recipe rebuilds the committed assets byte for byte (needs npm and
// the registry once; skipped without them).
func TestRebuildIsIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not rebuilding the console")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("no npm on this machine: the console's rebuild is not checked (the embedded build is, by its SHA256SUMS)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node on this machine: the console's rebuild is not checked")
	}
	dir, err := filepath.Abs(recipe)
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "esbuild")); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Skipf("npm ci in tools/console failed (no registry?): the rebuild is not checked: %v\n%s", err, out)
		}
	}
	outDir := t.TempDir()
	cmd := exec.Command(node, "build.mjs", outDir)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	rebuilt := files(t, os.DirFS(outDir))
	committed := files(t, console.Assets())
	names := func(m map[string][]byte) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		return out
	}
	require.ElementsMatch(t, names(committed), names(rebuilt), "the rebuild makes other files: run make console and commit dist")
	for name, b := range committed {
		require.True(t, bytes.Equal(b, rebuilt[name]), "%s differs from its rebuild: run make console and commit dist", name)
	}
}
