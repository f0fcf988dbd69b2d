// Package client_test checks the TypeScript client (@logline/client, this
// directory) against the server: its OpenAPI snapshot and generated types
// against api.OpenAPIDocument, and its Node tests against a live `logline
// dev`. There is no Go code here besides these tests.
package client_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/localpg"
)

// The snapshot the client's types are generated from must be the document
// the server serves. Needs neither npm nor a database.
func TestOpenAPISnapshotIsCurrent(t *testing.T) {
	want, err := api.OpenAPIDocument()
	require.NoError(t, err)
	got, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	if !bytes.Equal(got, want) {
		t.Fatalf("host/api/client/openapi.json differs from api.OpenAPIDocument() (%d bytes vs %d): run `make client` and commit the result",
			len(got), len(want))
	}
}

// TestClient builds the client and runs its Node tests (test/*.test.mjs)
// against a real `logline dev` on a private database.
func TestClient(t *testing.T) {
	node := requireNode(t)
	npmCI(t)

	// The committed types are what openapi-typescript makes of the
	// document the server serves now.
	tmp := t.TempDir()
	doc, err := api.OpenAPIDocument()
	require.NoError(t, err)
	docFile, genFile := filepath.Join(tmp, "openapi.json"), filepath.Join(tmp, "schema.d.ts")
	require.NoError(t, os.WriteFile(docFile, doc, 0o644))
	run(t, node, filepath.Join("node_modules", "openapi-typescript", "bin", "cli.js"), docFile, "--output", genFile)
	gen, err := os.ReadFile(genFile)
	require.NoError(t, err)
	committed, err := os.ReadFile(filepath.Join("src", "schema.d.ts"))
	require.NoError(t, err)
	if !bytes.Equal(gen, committed) {
		t.Fatalf("host/api/client/src/schema.d.ts is not what openapi-typescript generates from the served document: run `make client` and commit the result")
	}
	npm(t, "run", "check") // tsc --noEmit: the client and test/*.ts
	npm(t, "run", "build") // dist/, which the Node tests import

	devStart := time.Now()
	dev := startDev(t)
	t.Logf("logline dev was up in %s", time.Since(devStart).Round(time.Millisecond))
	other := strings.TrimSpace(run(t, dev.bin, "token", "create", "--key", dev.KeyFile, "--tenant", "globex", "--user", "mallory"))
	start := time.Now()
	out := runEnv(t, []string{"LOGLINE_URL=" + dev.URL, "LOGLINE_TOKEN=" + dev.Token, "LOGLINE_OTHER_TOKEN=" + other},
		"npm", "test")
	t.Logf("node --test took %s", time.Since(start).Round(time.Millisecond))
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "not ok ") || strings.HasPrefix(line, "# ") && !strings.HasPrefix(line, "# Subtest") {
			t.Log(line)
		}
	}
	// A test file that skips everything (no LOGLINE_URL) would pass too:
	// the live tests must have run.
	require.Regexp(t, regexp.MustCompile(`(?m)^# pass [1-9]`), out)
	require.Regexp(t, regexp.MustCompile(`(?m)^# skipped 0$`), out, out)
	require.Regexp(t, regexp.MustCompile(`(?m)^# fail 0$`), out, out)
}

// requireNode is the node binary, or skips: the client's tests need Node 20
// or later and npm.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: skipping the TypeScript client's tests (they need Node 20+ and npm)")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm is not installed: skipping the TypeScript client's tests (they need Node 20+ and npm)")
	}
	v := strings.TrimSpace(run(t, node, "--version"))
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if major < 20 {
		t.Skipf("node %s is older than 20: skipping the TypeScript client's tests", v)
	}
	return node
}

var ciOnce sync.Mutex

// npmCI installs node_modules from package-lock.json, once per lock file:
// a stamp remembers the lock's hash, so repeated runs skip npm ci (which
// always starts from an empty node_modules).
func npmCI(t *testing.T) {
	t.Helper()
	ciOnce.Lock()
	defer ciOnce.Unlock()
	lock, err := os.ReadFile("package-lock.json")
	require.NoError(t, err)
	pkg, err := os.ReadFile("package.json")
	require.NoError(t, err)
	sum := sha256.Sum256(append(lock, pkg...))
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join("node_modules", ".logline-ci")
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		if _, err := os.Stat(filepath.Join("node_modules", ".bin", "tsc")); err == nil {
			return
		}
	}
	npm(t, "ci", "--no-audit", "--no-fund", "--prefer-offline")
	require.NoError(t, os.WriteFile(stamp, []byte(want), 0o644))
}

func npm(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "npm", args...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

// runEnv runs a command in this directory with the test's environment
// (less what would point it elsewhere) plus env, and returns its output;
// it fails the test, with the output, when the command fails.
func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// cleanEnv is the environment without what would send a command to
// another database, key or principal than the test's.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "DATABASE_URL" || strings.HasPrefix(k, "LOGLINE_") || strings.HasPrefix(k, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// dev is a running `logline dev`: the fields of its dev.json.
type dev struct {
	bin     string
	URL     string `json:"url"`
	Token   string `json:"token"`
	KeyFile string `json:"key_file"`
}

// startDev builds cmd/logline and runs `logline dev` on a fresh database
// (on the tests' PostgreSQL: a private one, or TEST_DATABASE_URL's) with
// a private data directory and a free loopback port, until the test ends.
func startDev(t *testing.T) dev {
	t.Helper()
	ts, err := localpg.ForTests(t.Context())
	require.NoError(t, err, "PostgreSQL for the client's tests")
	t.Cleanup(func() { _ = ts.Close() })
	dbURL := ts.TestDatabase(t, "client")

	bin := filepath.Join(t.TempDir(), "logline")
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/logline")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/logline: %v\n%s", err, out)
	}

	data := t.TempDir()
	cmd := exec.Command(bin, "dev", "--data", data, "--addr", "127.0.0.1:0", "--log-level", "warn")
	cmd.Env = append(cleanEnv(), "DATABASE_URL="+dbURL)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	ready := make(chan struct{})
	var outMu sync.Mutex
	var outBuf strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			outMu.Lock()
			outBuf.WriteString(sc.Text() + "\n")
			outMu.Unlock()
			if strings.HasSuffix(sc.Text(), "; Ctrl-C stops") {
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	output := func() string {
		outMu.Lock()
		defer outMu.Unlock()
		return outBuf.String() + stderr.String()
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Errorf("logline dev: %v", err)
			}
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("logline dev did not stop in 90s after SIGINT:\n%s", output())
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("logline dev exited (%v) before it was up:\n%s", err, output())
	case <-time.After(3 * time.Minute):
		t.Fatalf("logline dev was not up in 3 minutes:\n%s", output())
	}
	raw, err := os.ReadFile(filepath.Join(data, "dev.json"))
	require.NoError(t, err)
	d := dev{bin: bin}
	require.NoError(t, json.Unmarshal(raw, &d))
	require.NotEmpty(t, d.URL, "dev.json has the url")
	require.NotEmpty(t, d.Token, "dev.json has the token")
	return d
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
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
