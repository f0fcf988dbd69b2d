package span

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeyFileRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "signing.key")
	k, err := GenerateKey()
	require.NoError(t, err)
	require.NoError(t, WriteKeyFile(path, k))

	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Regexp(t, `^[0-9a-f]{64}\n$`, string(b))

	back, err := LoadKey(path)
	require.NoError(t, err)
	require.Equal(t, k.PublicHex(), back.PublicHex())

	// Never overwrite.
	other, err := GenerateKey()
	require.NoError(t, err)
	err = WriteKeyFile(path, other)
	require.ErrorIs(t, err, fs.ErrExist)
	again, err := LoadKey(path)
	require.NoError(t, err)
	require.Equal(t, k.PublicHex(), again.PublicHex())

	require.Error(t, WriteKeyFile(filepath.Join(dir, "nokey"), &Key{}))
	require.Error(t, WriteKeyFile(filepath.Join(dir, "missing", "k"), k))
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode)) // whatever the umask
		return p
	}
	want := testKey(t).PublicHex()
	for name, content := range map[string]string{
		"bare":      testSeedHex,
		"newline":   testSeedHex + "\n",
		"crlf":      testSeedHex + "\r\n",
		"uppercase": strings.ToUpper(testSeedHex),
	} {
		k, err := LoadKey(write(name, content, 0o600))
		require.NoError(t, err, name)
		require.Equal(t, want, k.PublicHex(), name)
	}
	k, err := LoadKey(write("readonly", testSeedHex, 0o400))
	require.NoError(t, err)
	require.Equal(t, want, k.PublicHex())

	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		_, err := LoadKey(write(fmt.Sprintf("mode%o", mode), testSeedHex, mode))
		require.ErrorContains(t, err, "lets group or others read it", "mode %o", mode)
		require.ErrorContains(t, err, "chmod 600")
	}
	for name, content := range map[string]string{
		"short":           testSeedHex[:62],
		"two newlines":    testSeedHex + "\n\n",
		"not hex":         strings.Repeat("zz", 32),
		"leading space":   " " + testSeedHex,
		"empty":           "",
		"private key 128": testSeedHex + testSeedHex,
		"huge":            strings.Repeat("a", 4096),
	} {
		_, err := LoadKey(write("bad-"+name, content, 0o600))
		require.Error(t, err, name)
		// A rejected file's content is never echoed.
		if len(content) >= 16 {
			require.NotContains(t, err.Error(), content[:16], name)
		}
	}
	_, err = LoadKey(filepath.Join(dir, "absent"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = LoadKey(dir)
	require.Error(t, err, "a directory is not a key file")
}

func TestKeyNeverPrintsPrivateKey(t *testing.T) {
	t.Parallel()
	k := testKey(t)
	seedPrefix := testSeedHex[:16]
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		for _, v := range []any{k, *k} {
			out := fmt.Sprintf(format, v)
			require.NotContains(t, strings.ToLower(out), seedPrefix, format)
			require.NotContains(t, out, "[1 2 3 4", format)
		}
	}
	require.Contains(t, k.String(), k.PublicHex())
	err := fmt.Errorf("using %v", k)
	require.NotContains(t, err.Error(), seedPrefix)
	var zero Key
	require.Equal(t, "span.Key(<none>)", zero.String())
	require.Nil(t, zero.Public())
	var nilKey *Key
	require.Nil(t, nilKey.Public())
	require.NotPanics(t, func() { _ = fmt.Sprint(nilKey) })
}

func TestKeyFromSeedHex(t *testing.T) {
	t.Parallel()
	_, err := KeyFromSeedHex("zz")
	require.Error(t, err)
	_, err = KeyFromSeedHex(strings.Repeat("g", 64))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "g'", "the message does not quote the secret")
	a, err := GenerateKey()
	require.NoError(t, err)
	b, err := GenerateKey()
	require.NoError(t, err)
	require.NotEqual(t, a.PublicHex(), b.PublicHex())
	require.False(t, errors.Is(err, fs.ErrExist))
}
