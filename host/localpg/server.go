package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the superuser role initdb creates.
const Superuser = "logline"

const (
	passwordFileName = "logline_password"   // inside the data directory
	logFileName      = "logline_server.log" // inside the data directory
	tempPrefix       = "logline-pg-"        // temp roots under os.TempDir()
	lockFileName     = "lock"               // inside a temp root
	maxSocketPath    = 100                  // sun_path is 108 bytes incl. NUL; keep a margin
	socketFileLen    = len("/.s.PGSQL.65535")
)

// Config configures Start. The zero value starts a non-durable server in a
// fresh temporary directory on a free port.
type Config struct {
	// DataDir is the cluster directory. "" means a fresh temporary directory
	// that Stop removes. Otherwise the directory is created if needed and an
	// initialised cluster in it (PG_VERSION exists) is reused.
	DataDir string
	// Port to listen on at 127.0.0.1; 0 picks a free port.
	Port int
	// Durable keeps fsync, synchronous_commit and full_page_writes on (and
	// lets initdb sync). false turns them off: fast, but a machine crash can
	// corrupt the cluster. Fine for tests, not for `logline dev`.
	Durable bool
	// BinDir holds initdb and postgres; "" means FindBinDir.
	BinDir string
	// User is the OS account initdb and postgres run as when the current
	// process is root ("" means nobody, else postgres). Ignored when not root.
	User string
	// SharedBuffers is the shared_buffers setting; "" means 64MB.
	SharedBuffers string
	// MaxConnections is max_connections; 0 means 200.
	MaxConnections int
	// Settings are extra server settings passed as -c name=value; they
	// override the ones Start chooses.
	Settings map[string]string
	// StartTimeout bounds the wait for the server to accept connections;
	// 0 means 30s.
	StartTimeout time.Duration
}

// Server is a running PostgreSQL server started by Start.
type Server struct {
	cfg       Config
	binDir    string
	dataDir   string
	tempRoot  string // temp directory we created and remove on Stop
	socketDir string
	ownSocket bool // socketDir is ours to remove
	password  string
	port      int
	logPath   string
	logFile   *os.File
	logOffset int64
	lock      *os.File

	pid     int
	proc    *os.Process
	done    chan struct{} // closed when the postmaster has exited
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// runAs is the unprivileged account used when we are root.
type runAs struct {
	name     string
	uid, gid uint32
}

// Start starts a PostgreSQL server as described by cfg and waits until it
// accepts connections. ctx bounds only the start-up; the server runs until
// Stop is called or the calling process exits.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if !supported {
		return nil, fmt.Errorf("localpg: not supported on %s", runtime.GOOS)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	s := &Server{cfg: cfg, done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.cleanupFiles()
		}
	}()

	s.binDir = cfg.BinDir
	if s.binDir == "" {
		if s.binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	ra, err := lookupRunAs(cfg.User)
	if err != nil {
		return nil, err
	}
	if err := s.prepareDataDir(ra); err != nil {
		return nil, err
	}
	if err := checkPostmasterPid(s.dataDir); err != nil {
		return nil, err
	}
	if err := s.initOrReuse(ctx, ra); err != nil {
		return nil, err
	}
	if err := s.prepareSocketDir(ra); err != nil {
		return nil, err
	}
	s.logPath = filepath.Join(s.dataDir, logFileName)
	s.logFile, err = os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("localpg: open server log: %w", err)
	}

	// A data directory of its own keeps its port from one start to the
	// next (DATABASE_URL in another terminal stays right), unless someone
	// else took it meanwhile.
	portFile := ""
	last := 0
	if cfg.DataDir != "" && cfg.Port == 0 {
		portFile = filepath.Join(s.dataDir, portFileName)
		if b, err := os.ReadFile(portFile); err == nil {
			last, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	for attempt := 0; ; attempt++ {
		port := cfg.Port
		if port == 0 && attempt == 0 && last > 0 && last < 65536 {
			port = last
		}
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = s.launch(ctx, ra, port)
		if err == nil {
			if portFile != "" && port != last {
				_ = os.WriteFile(portFile, []byte(strconv.Itoa(port)+"\n"), 0o600)
			}
			return s, nil
		}
		if cfg.Port != 0 || attempt >= 4 || !errors.Is(err, errAddrInUse) {
			return nil, err
		}
		// Someone took the port between freePort and the bind: try another.
		s.done = make(chan struct{})
	}
}

var errAddrInUse = errors.New("address already in use")

// portFileName, in a data directory, is the port its server last listened
// on.
const portFileName = "logline.port"

// prepareDataDir creates (or adopts) the data directory and makes it usable
// by ra.
func (s *Server) prepareDataDir(ra *runAs) error {
	if s.cfg.DataDir == "" {
		sweepStaleTempRoots()
		root, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return fmt.Errorf("localpg: create temp dir: %w", err)
		}
		s.tempRoot = root
		// MkdirTemp makes the directory 0700; the server's account must be
		// able to traverse it.
		if err := os.Chmod(root, 0o755); err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		lock, err := os.OpenFile(filepath.Join(root, lockFileName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		s.lock = lock
		if err := tryLock(lock); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("localpg: lock temp dir: %w", err)
		}
		s.dataDir = filepath.Join(root, "data")
	} else {
		abs, err := filepath.Abs(s.cfg.DataDir)
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return fmt.Errorf("localpg: create parent of data dir: %w", err)
		}
		s.dataDir = abs
	}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("localpg: create data dir: %w", err)
	}
	// Work with the real path so that traversal checks cover what the
	// server will actually walk through.
	resolved, err := filepath.EvalSymlinks(s.dataDir)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	s.dataDir = resolved
	fi, err := os.Stat(s.dataDir)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("localpg: data dir %s is not a directory", s.dataDir)
	}
	if ra == nil {
		return nil
	}
	if uid, _, ok := fileOwner(fi); ok && uid != ra.uid {
		if err := chownTree(s.dataDir, ra); err != nil {
			return fmt.Errorf("localpg: hand data dir to user %s: %w", ra.name, err)
		}
	}
	if fi.Mode().Perm()&0o027 != 0 {
		if err := os.Chmod(s.dataDir, 0o700); err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
	}
	return ensureTraversable(s.dataDir, ra)
}

// initOrReuse runs initdb on an empty data dir, or reads the password of an
// initialised one.
func (s *Server) initOrReuse(ctx context.Context, ra *runAs) error {
	pwPath := filepath.Join(s.dataDir, passwordFileName)
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		b, err := os.ReadFile(pwPath)
		if err != nil {
			return fmt.Errorf("localpg: data dir %s holds a cluster but its password file is unreadable "+
				"(%w); remove the directory to start afresh", s.dataDir, err)
		}
		s.password = strings.TrimSpace(string(b))
		if s.password == "" {
			return fmt.Errorf("localpg: password file %s is empty", pwPath)
		}
		return nil
	}
	entries, err := os.ReadDir(s.dataDir)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("localpg: data dir %s is not empty and holds no PostgreSQL cluster (no PG_VERSION)", s.dataDir)
	}

	s.password = randomHex(18)
	// initdb wants an empty data dir, so the password goes through a
	// temporary file readable only by the server's account.
	tmp, err := os.CreateTemp("", "logline-pgpw-")
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(s.password + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && ra != nil {
		if err = os.Chown(tmp.Name(), int(ra.uid), int(ra.gid)); err == nil {
			err = ensureTraversable(tmp.Name(), ra)
		}
	}
	if err != nil {
		return fmt.Errorf("localpg: write initdb password file: %w", err)
	}

	args := []string{
		"-D", s.dataDir,
		"-U", Superuser,
		"--encoding=UTF8",
		"--locale=C",
		"--auth=scram-sha-256",
		"--pwfile=" + tmp.Name(),
	}
	if !s.cfg.Durable {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "initdb"), args...)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.SysProcAttr = procAttr(ra, false)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("localpg: initdb %s: %w\n%s", s.dataDir, err, tail(out, 40))
	}
	if err := os.WriteFile(pwPath, []byte(s.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("localpg: save password: %w", err)
	}
	return nil
}

// prepareSocketDir picks a directory for the Unix socket whose path fits in
// sun_path: the data dir if it is short enough, else a fresh temp dir.
func (s *Server) prepareSocketDir(ra *runAs) error {
	if len(s.dataDir)+socketFileLen <= maxSocketPath {
		s.socketDir = s.dataDir
		return nil
	}
	parent := os.TempDir()
	if len(parent)+len("/lpg-1234567890")+socketFileLen > maxSocketPath {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "lpg-")
	if err != nil {
		return fmt.Errorf("localpg: create socket dir: %w", err)
	}
	s.socketDir, s.ownSocket = dir, true
	if ra != nil {
		if err := os.Chown(dir, int(ra.uid), int(ra.gid)); err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		return ensureTraversable(dir, ra)
	}
	return nil
}

// serverArgs returns the postgres command line.
func (s *Server) serverArgs(port int) []string {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": quoteListElem(s.socketDir),
		"max_connections":         "200",
		"shared_buffers":          "64MB",
		"logging_collector":       "off",
		"log_destination":         "stderr",
		"ssl":                     "off",
	}
	if s.cfg.MaxConnections > 0 {
		settings["max_connections"] = strconv.Itoa(s.cfg.MaxConnections)
	}
	if s.cfg.SharedBuffers != "" {
		settings["shared_buffers"] = s.cfg.SharedBuffers
	}
	if !s.cfg.Durable {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	maps.Copy(settings, s.cfg.Settings)
	args := []string{"-D", s.dataDir}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// launch starts postgres on port and waits until it accepts connections.
func (s *Server) launch(ctx context.Context, ra *runAs, port int) error {
	s.port = port
	if off, err := s.logFile.Seek(0, io.SeekEnd); err == nil {
		s.logOffset = off
	}
	fmt.Fprintf(s.logFile, "---- localpg: starting postgres on port %d at %s ----\n", port, time.Now().Format(time.RFC3339))

	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), s.serverArgs(port)...)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.Stdout = s.logFile
	cmd.Stderr = s.logFile
	cmd.SysProcAttr = procAttr(ra, true)

	// The parent-death signal fires when the OS thread that forked the
	// child exits, not when the process does. So fork from a goroutine
	// locked to its thread, and keep that goroutine (and thus the thread)
	// alive in cmd.Wait for as long as the server runs.
	started := make(chan error, 1)
	done := s.done
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, after the
		// server has exited.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		s.waitErr = err
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("localpg: start postgres: %w", err)
	}
	s.proc = cmd.Process
	s.pid = cmd.Process.Pid

	err := s.waitReady(ctx)
	if err == nil {
		return nil
	}
	// Not ready: make sure it is gone before reporting.
	s.kill()
	logTail := s.LogTail()
	if strings.Contains(logTail, "Address already in use") {
		err = fmt.Errorf("%w (port %d): %w", errAddrInUse, port, err)
	}
	return fmt.Errorf("localpg: %w\nserver log (%s):\n%s", err, s.logPath, logTail)
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.StartTimeout)
	cfg, err := pgx.ParseConfig(s.AdminURL())
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = 2 * time.Second
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited during startup: %v", s.waitErr)
		default:
		}
		actx, cancel := context.WithDeadline(ctx, deadline)
		conn, err := pgx.ConnectConfig(actx, cfg)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for postgres: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %s: %w", s.cfg.StartTimeout, lastErr)
		}
		select {
		case <-s.done:
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// kill terminates the postmaster immediately and waits for it.
func (s *Server) kill() {
	if s.proc == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.proc.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		killGroup(s.pid)
		<-s.done
	}
}

// Stop shuts the server down (fast shutdown: SIGINT, escalating to SIGQUIT
// and SIGKILL after about 10 s), and removes the data directory if it was a
// temporary one. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	select {
	case <-s.done:
		errs = append(errs, fmt.Errorf("localpg: postgres (pid %d) had already exited: %v\n%s", s.pid, s.waitErr, s.LogTail()))
	default:
		_ = s.proc.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.proc.Signal(syscall.SIGQUIT)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				killGroup(s.pid)
				<-s.done
			}
			errs = append(errs, fmt.Errorf("localpg: postgres (pid %d) ignored fast shutdown and was killed\n%s", s.pid, s.LogTail()))
		}
	}
	if err := s.cleanupFiles(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanupFiles closes our files and removes temporary directories.
func (s *Server) cleanupFiles() error {
	var errs []error
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.ownSocket && s.socketDir != "" {
		if err := os.RemoveAll(s.socketDir); err != nil {
			errs = append(errs, err)
		}
	}
	if s.tempRoot != "" {
		if err := os.RemoveAll(s.tempRoot); err != nil {
			errs = append(errs, fmt.Errorf("localpg: remove temp dir: %w", err))
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return errors.Join(errs...)
}

// URL returns a postgres:// URL connecting as the superuser to database.
func (s *Server) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(Superuser, s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// AdminURL returns URL("postgres").
func (s *Server) AdminURL() string { return s.URL("postgres") }

// DataDir returns the (absolute) data directory.
func (s *Server) DataDir() string { return s.dataDir }

// Port returns the TCP port the server listens on at 127.0.0.1.
func (s *Server) Port() int { return s.port }

// SocketDir returns the directory of the server's Unix socket.
func (s *Server) SocketDir() string { return s.socketDir }

// PID returns the process id of the postmaster.
func (s *Server) PID() int { return s.pid }

// Password returns the superuser's password.
func (s *Server) Password() string { return s.password }

// LogPath returns the server log file.
func (s *Server) LogPath() string { return s.logPath }

// Done is closed when the server process has exited, whether through Stop
// or not.
func (s *Server) Done() <-chan struct{} { return s.done }

// LogTail returns the last lines the server logged since it was started.
func (s *Server) LogTail() string {
	if s.logPath == "" {
		return ""
	}
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 8 << 10
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	from := max(s.logOffset, fi.Size()-window)
	b := make([]byte, fi.Size()-from)
	n, _ := f.ReadAt(b, from)
	return tail(b[:n], 40)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
