//go:build unix

package localpg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// childDataDirEnv makes the test binary act as the child process of
// TestKilledParentLeavesNoServer: start a server on that data dir, print its
// pid, and wait to be killed.
const childDataDirEnv = "LOCALPG_TEST_CHILD_DATADIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDataDirEnv); dir != "" {
		runChild(dir)
	}
	os.Exit(m.Run())
}

func runChild(dir string) {
	s, err := Start(context.Background(), Config{DataDir: dir})
	if err != nil {
		fmt.Printf("CHILD_ERROR %s\n", strings.ReplaceAll(err.Error(), "\n", " | "))
		os.Exit(2)
	}
	fmt.Printf("POSTMASTER_PID=%d\n", s.PID())
	time.Sleep(2 * time.Minute) // the parent SIGKILLs us long before
	os.Exit(3)
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinDir(); err != nil {
		t.Skipf("skipping: no PostgreSQL server binaries: %v", err)
	}
}

func queryString(t *testing.T, url, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var s string
	require.NoError(t, conn.QueryRow(ctx, sql, args...).Scan(&s))
	return s
}

func exec1(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	require.NoError(t, err)
}

// requireGone waits until no live postgres process has this pid and no
// process is left in its process group.
func requireGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		groupGone := errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
		if !postgresAlive(pid) && (groupGone || onlyZombies(pid)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres pid %d (or its process group) still alive after %s", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onlyZombies reports whether every process in process group pgid is a
// zombie (an orphan reparented to an init that does not reap is harmless).
func onlyZombies(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		rp := strings.LastIndexByte(s, ')')
		if rp < 0 {
			continue
		}
		f := strings.Fields(s[rp+1:]) // state ppid pgrp ...
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		if f[0] != "Z" && f[0] != "X" {
			return false
		}
	}
	return true
}

func TestFindBinDir(t *testing.T) {
	requireBinaries(t)
	dir, err := FindBinDir()
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(dir, "initdb"))
	assert.FileExists(t, filepath.Join(dir, "postgres"))
}

func TestFindBinDirNotFound(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := debianRoot
	debianRoot = t.TempDir()
	defer func() { debianRoot = old }()
	_, err := FindBinDir()
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), "apt-get install postgresql")
	assert.Contains(t, err.Error(), "pg_config")
}

func TestStartStop(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := t.Context()

	t0 := time.Now()
	s, err := Start(ctx, Config{})
	require.NoError(t, err)
	t.Logf("temp server started in %s (port %d, pid %d)", time.Since(t0), s.Port(), s.PID())
	defer s.Stop()

	assert.Equal(t, Superuser, queryString(t, s.AdminURL(), "SELECT current_user"))
	assert.Equal(t, "off", queryString(t, s.AdminURL(), "SHOW fsync"))
	assert.Equal(t, "200", queryString(t, s.AdminURL(), "SHOW max_connections"))
	assert.Equal(t, "UTF8", queryString(t, s.URL("template1"), "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"))

	u, err := url.Parse(s.URL("x"))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:"+strconv.Itoa(s.Port()), u.Host)

	// The Unix socket works too.
	assert.Equal(t, "1", queryString(t, fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=postgres",
		s.SocketDir(), s.Port(), Superuser, s.Password()), "SELECT 1::text"))

	// Wrong password is refused (scram-sha-256 authentication is on).
	_, err = pgx.Connect(ctx, strings.Replace(s.AdminURL(), s.Password(), "wrong", 1))
	require.Error(t, err)

	dataDir, pid := s.DataDir(), s.PID()
	assert.FileExists(t, filepath.Join(dataDir, "PG_VERSION"))
	require.True(t, postgresAlive(pid))
	require.NoError(t, s.Stop())
	requireGone(t, pid, time.Second)
	assert.NoDirExists(t, dataDir)
	assert.NoError(t, s.Stop(), "Stop is idempotent")
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}

func TestRestartReusesData(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "nested", "pgdata")

	s1, err := Start(ctx, Config{DataDir: dir, Durable: true})
	require.NoError(t, err)
	defer s1.Stop()
	assert.Equal(t, "on", queryString(t, s1.AdminURL(), "SHOW fsync"))
	require.NoError(t, CreateDatabase(ctx, s1.AdminURL(), "app", ""))
	exec1(t, s1.URL("app"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")

	// A second server on the same data dir is refused, naming the pid.
	_, err = Start(ctx, Config{DataDir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("pid %d", s1.PID()))

	require.NoError(t, s1.Stop())
	requireGone(t, s1.PID(), time.Second)
	assert.DirExists(t, dir, "a given DataDir survives Stop")

	// A taken port is reported as such, with the server log.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	busy := l.Addr().(*net.TCPAddr).Port
	_, err = Start(ctx, Config{DataDir: dir, Port: busy})
	l.Close()
	require.ErrorIs(t, err, errAddrInUse)
	assert.Contains(t, err.Error(), "could not")

	s2, err := Start(ctx, Config{DataDir: dir})
	require.NoError(t, err)
	defer s2.Stop()
	assert.Equal(t, s1.Password(), s2.Password(), "password is reused")
	assert.Equal(t, "hello", queryString(t, s2.URL("app"), "SELECT v FROM kept"))
	assert.Equal(t, "off", queryString(t, s2.AdminURL(), "SHOW fsync"))
	assert.Equal(t, s1.Port(), s2.Port(), "a data directory keeps its port: DATABASE_URL stays right")
	require.NoError(t, s2.Stop())
	requireGone(t, s2.PID(), time.Second)

	// Its port taken by someone else meanwhile: another one, remembered.
	l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s2.Port()))
	require.NoError(t, err)
	defer l.Close()
	s3, err := Start(ctx, Config{DataDir: dir})
	require.NoError(t, err)
	assert.NotEqual(t, s2.Port(), s3.Port())
	require.NoError(t, s3.Stop())
	requireGone(t, s3.PID(), time.Second)
	l.Close()
	s4, err := Start(ctx, Config{DataDir: dir})
	require.NoError(t, err)
	defer s4.Stop()
	assert.Equal(t, s3.Port(), s4.Port())
}

func TestForTests(t *testing.T) {
	if os.Getenv(EnvTestDatabaseURL) == "" {
		requireBinaries(t)
	}
	t.Parallel()
	ts, err := ForTests(t.Context())
	require.NoError(t, err)
	defer ts.Close()
	checkTestServer(t, ts)
}

// TestForTestsExternal runs the TEST_DATABASE_URL mode against a server of
// its own.
func TestForTestsExternal(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	s, err := Start(t.Context(), Config{})
	require.NoError(t, err)
	defer s.Stop()
	ts, err := forTests(t.Context(), s.AdminURL())
	require.NoError(t, err)
	defer ts.Close()
	require.Nil(t, ts.Server())
	checkTestServer(t, ts)
	assert.Equal(t, "0", queryString(t, s.AdminURL(),
		`SELECT count(*)::text FROM pg_database WHERE datname ~ '^(two_dbs|tmpl|clone|broken)_'`),
		"Close drops every database the TestServer created")
	_, err = forTests(t.Context(), strings.Replace(s.AdminURL(), s.Password(), "wrong", 1))
	require.Error(t, err)
}

func checkTestServer(t *testing.T, ts *TestServer) {
	ctx := t.Context()

	url1, err := ts.NewDatabase(ctx, "Two Dbs!")
	require.NoError(t, err)
	url2, err := ts.NewDatabase(ctx, "Two Dbs!")
	require.NoError(t, err)
	require.NotEqual(t, url1, url2)
	db1 := queryString(t, url1, "SELECT current_database()")
	assert.True(t, strings.HasPrefix(db1, "two_dbs__"), db1)
	exec1(t, url1, "CREATE TABLE only_in_one (x int)")
	assert.Equal(t, "true", queryString(t, url1, "SELECT (to_regclass('only_in_one') IS NOT NULL)::text"))
	assert.Equal(t, "false", queryString(t, url2, "SELECT (to_regclass('only_in_one') IS NOT NULL)::text"))

	tmpl, err := ts.NewTemplate(ctx, "tmpl", func(ctx context.Context, url string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE migrated (v text); INSERT INTO migrated VALUES ('from template')")
		return err
	})
	require.NoError(t, err)

	// Clone in parallel, as tests of a package do.
	t.Run("clones", func(t *testing.T) {
		for i := range 4 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				u := ts.TestDatabase(t, "clone", WithTemplate(tmpl))
				assert.Equal(t, "from template", queryString(t, u, "SELECT v FROM migrated"))
				exec1(t, u, "INSERT INTO migrated VALUES ('local change')")
			})
		}
	})
	assert.Equal(t, "1", queryString(t, ts.URL(tmpl), "SELECT count(*)::text FROM migrated"), "clones are independent of the template")

	_, err = ts.NewTemplate(ctx, "broken", func(context.Context, string) error { return errors.New("boom") })
	require.ErrorContains(t, err, "boom")

	srv := ts.Server()
	if srv == nil {
		assert.Equal(t, "0", queryString(t, ts.AdminURL(),
			`SELECT count(*)::text FROM pg_database WHERE datname ~ '^clone_'`),
			"TestDatabase's clones are dropped when their test ends")
	}
	require.NoError(t, ts.Close())
	require.NoError(t, ts.Close())
	if srv != nil {
		requireGone(t, srv.PID(), time.Second)
		assert.NoDirExists(t, srv.DataDir())
	} else {
		// On a shared server, every database we made is gone.
		n := queryString(t, ts.AdminURL(), "SELECT count(*)::text FROM pg_database WHERE datname = ANY($1)",
			[]string{db1, tmpl})
		assert.Equal(t, "0", n)
	}
	_, err = ts.NewDatabase(ctx, "after_close")
	require.Error(t, err)
}

func TestKilledParentLeavesNoServer(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")

	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDataDirEnv+"="+dir)
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "POSTMASTER_PID="); ok {
			pid, err = strconv.Atoi(v)
			require.NoError(t, err)
			break
		}
		if strings.HasPrefix(line, "CHILD_ERROR") {
			t.Fatalf("child: %s", line)
		}
	}
	require.NotZero(t, pid, "child printed no pid; stderr:\n%s", stderr.String())
	require.True(t, postgresAlive(pid), "postmaster %d not running", pid)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	requireGone(t, pid, 10*time.Second)

	// The stale postmaster.pid does not prevent reuse of the data dir.
	s, err := Start(ctx, Config{DataDir: dir})
	require.NoError(t, err)
	assert.Equal(t, "1", queryString(t, s.AdminURL(), "SELECT 1::text"))
	require.NoError(t, s.Stop())
}

func TestUniqueName(t *testing.T) {
	a, b := UniqueName("My-Pkg"), UniqueName("My-Pkg")
	assert.NotEqual(t, a, b)
	assert.Regexp(t, `^my_pkg_[0-9a-f]{16}$`, a)
	assert.Regexp(t, `^db_1x_[0-9a-f]{16}$`, UniqueName("1x"))
	assert.LessOrEqual(t, len(UniqueName(strings.Repeat("a", 100))), 63)
}

func TestCompareVersions(t *testing.T) {
	assert.Positive(t, compareVersions("15", "9.6"))
	assert.Negative(t, compareVersions("9.6", "10"))
	assert.Zero(t, compareVersions("16", "16"))
	assert.Positive(t, compareVersions("17", "beta"))
}

func TestWithDatabase(t *testing.T) {
	u, err := withDatabase("postgres://u:p@h:5/old?sslmode=disable", "new db")
	require.NoError(t, err)
	assert.Equal(t, "postgres://u:p@h:5/new%20db?sslmode=disable", u)
	kv, err := withDatabase("host=h user=u dbname=old", "it's")
	require.NoError(t, err)
	cfg, err := pgx.ParseConfig(kv)
	require.NoError(t, err)
	assert.Equal(t, "it's", cfg.Database)
}

func TestPostmasterPidCheck(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	b, err := os.ReadFile(sleep)
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "postgres") // comm "postgres"
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	dataDir, otherDir := t.TempDir(), t.TempDir()
	pidPath := filepath.Join(dataDir, "postmaster.pid")

	run := func(dir string) int {
		cmd := exec.Command(bin, "30")
		cmd.Dir = dir
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd.Process.Pid
	}

	// A live "postgres" working in the data dir: in use.
	pid := run(dataDir)
	require.NoError(t, os.WriteFile(pidPath, []byte(fmt.Sprintf("%d\n%s\n", pid, dataDir)), 0o600))
	err = checkPostmasterPid(dataDir)
	require.ErrorContains(t, err, fmt.Sprintf("pid %d", pid))
	assert.FileExists(t, pidPath)

	// A live "postgres" of another directory (a reused pid): stale, removed.
	pid = run(otherDir)
	require.NoError(t, os.WriteFile(pidPath, []byte(fmt.Sprintf("%d\n%s\n", pid, dataDir)), 0o600))
	require.NoError(t, checkPostmasterPid(dataDir))
	assert.NoFileExists(t, pidPath)

	// A dead pid: stale.
	require.NoError(t, os.WriteFile(pidPath, []byte("999999999\n"), 0o600))
	require.NoError(t, checkPostmasterPid(dataDir))
}

func TestSweepStaleTempRoots(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	old := time.Now().Add(-time.Hour)
	mkRoot := func(name string, age time.Time) (string, *os.File) {
		root := filepath.Join(tmp, tempPrefix+name)
		require.NoError(t, os.MkdirAll(filepath.Join(root, "data"), 0o755))
		f, err := os.Create(filepath.Join(root, lockFileName))
		require.NoError(t, err)
		require.NoError(t, os.Chtimes(f.Name(), age, age))
		return root, f
	}
	stale, f := mkRoot("stale", old)
	f.Close()
	held, f := mkRoot("held", old)
	require.NoError(t, tryLock(f))
	defer f.Close()
	fresh, f := mkRoot("fresh", time.Now())
	f.Close()
	other := filepath.Join(tmp, "unrelated")
	require.NoError(t, os.Mkdir(other, 0o755))

	sweepStaleTempRoots()
	assert.NoDirExists(t, stale)
	assert.DirExists(t, held)
	assert.DirExists(t, fresh)
	assert.DirExists(t, other)
}
