package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	urlLine   = regexp.MustCompile(`(?m)^DATABASE_URL=(\S+)$`)
	readyLine = regexp.MustCompile(`(?m)^wrote .*; Ctrl-C stops$`)
)

// startDev runs `logline dev` (on a free loopback port unless args name
// --addr) until the returned stop is called; it waits until dev is up and
// returns the DATABASE_URL it printed.
func startDev(t *testing.T, env map[string]string, args ...string) (dbURL string, stop func() int) {
	t.Helper()
	if !slices.Contains(args, "--addr") {
		args = append(args, "--addr", "127.0.0.1:0")
	}
	_, dbURL, stop = startCmd(t, env, readyLine, append([]string{"dev"}, args...)...)
	return dbURL, stop
}

// startCmd runs a long-lived command until stop is called; it waits for a
// line matching ready and returns the output so far and the DATABASE_URL
// line's value, if any.
func startCmd(t *testing.T, env map[string]string, ready *regexp.Regexp, args ...string) (out *syncBuffer, dbURL string, stop func() int) {
	t.Helper()
	out, _, dbURL, stop = startCmdErr(t, env, ready, args...)
	return out, dbURL, stop
}

// startCmdErr is startCmd that also returns what the command writes to
// stderr.
func startCmdErr(t testing.TB, env map[string]string, ready *regexp.Regexp, args ...string) (out, errb *syncBuffer, dbURL string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errb = &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, args, stdio{in: strings.NewReader(""), out: out, err: errb},
			func(k string) string { return env[k] })
	}()
	deadline := time.After(90 * time.Second)
	for {
		if ready.MatchString(out.String()) {
			if m := urlLine.FindStringSubmatch(out.String()); m != nil {
				dbURL = m[1]
			}
			break
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("logline %s exited %d: %s %s", args[0], code, out.String(), errb.String())
		case <-deadline:
			cancel()
			t.Fatalf("logline %s did not come up: %s %s", args[0], out.String(), errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			// Generous: on a loaded machine under -race, the engine may be
			// compiling a kernel when Ctrl-C comes, and Postgres checkpoints.
			case <-time.After(90 * time.Second):
				var stacks strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
				t.Errorf("logline %s did not stop in 90s; goroutines:\n%s", args[0], stacks.String())
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return out, errb, dbURL, stop
}

func TestDevWithPrivatePostgresReusesData(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dbURL, stop := startDev(t, nil, "--data", data)
	var info devInfo
	raw, err := os.ReadFile(filepath.Join(data, "dev.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &info))
	require.Equal(t, dbURL, info.DatabaseURL)
	key, err := span.LoadKey(info.KeyFile)
	require.NoError(t, err)
	require.Equal(t, key.PublicHex(), info.PublicKey)

	ctx := context.Background()
	l, err := ledger.Open(ctx, dbURL)
	require.NoError(t, err)
	out, err := l.Append(ctx, ledger.User("acme", "alice"), spanFrom(t, okSpan))
	l.Close()
	require.NoError(t, err)
	require.Equal(t, 0, stop())

	// A second start reuses the data (and keeps its port).
	dbURL2, stop := startDev(t, nil, "--data", data)
	defer stop()
	require.Equal(t, dbURL, dbURL2, "DATABASE_URL stays right from one start to the next")
	// A third, while the second runs, is refused naming the logline dev
	// process that holds the directory (not its postgres).
	r := cli(t, nil, "", "dev", "--data", data, "--addr", "127.0.0.1:0")
	require.NotEqual(t, 0, r.code)
	require.Contains(t, r.err, fmt.Sprintf("in use by logline dev (in use by pid %d)", os.Getpid()))
	l, err = ledger.Open(ctx, dbURL)
	require.NoError(t, err)
	defer l.Close()
	got, err := l.Latest(ctx, ledger.User("acme", "alice"), out[0].ID)
	require.NoError(t, err)
	require.Equal(t, out[0].CurrHash, got.CurrHash)
	// The new start's API and token see it too.
	restarted := readDevInfo(t, data)
	code, body := call(t, http.MethodGet, restarted.URL+"/api/spans/"+out[0].ID, restarted.Token, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, out[0].CurrHash)

	// The same keys; the seeded manifest is signed by the operator key and
	// trusts it, never the node key, once: a second start seeds nothing new.
	raw, err = os.ReadFile(filepath.Join(data, "dev.json"))
	require.NoError(t, err)
	var again devInfo
	require.NoError(t, json.Unmarshal(raw, &again))
	require.Equal(t, info.PublicKey, again.PublicKey)
	require.Equal(t, info.OperatorPublicKey, again.OperatorPublicKey)
	require.NotEqual(t, info.PublicKey, info.OperatorPublicKey, "node and operator keys are separate")
	opKey, err := span.LoadKey(info.OperatorKeyFile)
	require.NoError(t, err)
	require.Equal(t, opKey.PublicHex(), info.OperatorPublicKey)
	man, err := l.Get(ctx, ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	require.Len(t, man, 1)
	require.Equal(t, info.OperatorPublicKey, man[0].PublicKey)
	require.Contains(t, string(man[0].Metadata), info.OperatorPublicKey)
	require.NotContains(t, string(man[0].Metadata), info.PublicKey, "the node key confers no authority")
}

// A data directory from before the keys were split had one key, dev.key,
// which its manifest trusts: it becomes the operator key, and dev makes a
// new node key, so the host's seal stops conferring authority.
func TestDevSplitsALegacyKey(t *testing.T) {
	t.Parallel()
	url := testPG.TestDatabase(t, "devlegacy")
	data := t.TempDir()
	legacy, err := span.GenerateKey()
	require.NoError(t, err)
	require.NoError(t, span.WriteKeyFile(filepath.Join(data, "dev.key"), legacy))
	// The old dev: one key was node key, trusted key and token key.
	ctx := context.Background()
	_, _, err = ledger.Migrate(ctx, url)
	require.NoError(t, err)
	l, err := ledger.Open(ctx, url, ledger.WithKey(legacy))
	require.NoError(t, err)
	_, _, err = seed(ctx, l, ledger.User(operatorTenant, operatorUser), legacy)
	l.Close()
	require.NoError(t, err)

	_, stop := startDev(t, map[string]string{"DATABASE_URL": url}, "--data", data)
	defer stop()
	info := readDevInfo(t, data)
	require.Equal(t, legacy.PublicHex(), info.OperatorPublicKey)
	require.NotEqual(t, legacy.PublicHex(), info.PublicKey)
	require.NoFileExists(t, filepath.Join(data, "dev.key"))
	code, body := call(t, http.MethodGet, info.URL+"/api/spans", info.Token, "")
	require.Equal(t, http.StatusOK, code, body)
}

func TestDevWithDatabaseURL(t *testing.T) {
	t.Parallel()
	url := testPG.TestDatabase(t, "dev")
	data := t.TempDir()
	got, stop := startDev(t, map[string]string{"DATABASE_URL": url}, "--data", data)
	require.Equal(t, url, got)
	require.FileExists(t, filepath.Join(data, "dev.json"))
	require.NoDirExists(t, filepath.Join(data, "pg"), "no private server when DATABASE_URL is set")
	require.Equal(t, seedCount(), rowsAfterStop(t, url, stop), "migrated and seeded: the manifest, stock kernels and policies")
}

// rowsAfterStop stops dev and counts rows.
func rowsAfterStop(t *testing.T, url string, stop func() int) int {
	require.Equal(t, 0, stop())
	return rows(t, url)
}

// The CLI finds the node key as serve and dev do: pointed at the database of
// `logline dev`, it signs the runs it records with dev's node key.
func TestCLIUsesTheDevNodeKey(t *testing.T) {
	t.Parallel()
	url := testPG.TestDatabase(t, "devkey")
	data := t.TempDir()
	_, stop := startDev(t, map[string]string{"DATABASE_URL": url}, "--data", data)
	defer stop()
	info := readDevInfo(t, data)
	env := map[string]string{"DATABASE_URL": url, "LOGLINE_DATA": data, "LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}
	fn := writeFile(t, "one.js", []byte("return 1"))
	r := cli(t, env, "", "publish", fn, "--name", "one", "--kind", "function")
	require.Equal(t, 0, r.code, r.err)
	r = cli(t, env, "", "run", publishedID.FindStringSubmatch(r.out)[1], "--json")
	require.Equal(t, 0, r.code, r.err)
	var ex span.Span
	require.NoError(t, json.Unmarshal([]byte(r.out), &ex))
	require.Equal(t, info.PublicKey, ex.PublicKey, "signed by dev's node key")
	require.NoError(t, span.Verify(&ex))

	// Another database: not dev's, so not its key.
	other := map[string]string{"DATABASE_URL": testPG.Database(t, "devkey2"), "LOGLINE_DATA": data,
		"LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}
	r = cli(t, other, "", "publish", fn, "--name", "one", "--kind", "function", "--json")
	require.Equal(t, 0, r.code, r.err)
	require.NotContains(t, r.out, info.PublicKey)
}
