package localpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// EnvTestDatabaseURL names the environment variable that makes ForTests use
// an existing server instead of starting one.
const EnvTestDatabaseURL = "TEST_DATABASE_URL"

// TestServer is the PostgreSQL server of one test binary: either a private
// server started by ForTests, or the server of TEST_DATABASE_URL. It is safe
// for concurrent use.
type TestServer struct {
	server   *Server // nil when using TEST_DATABASE_URL
	adminURL string

	mu      sync.Mutex
	created []string // databases to drop on Close (external server only)
	closed  bool
}

// ForTests returns the server tests should use. If TEST_DATABASE_URL is set,
// it is used as is (its user must be allowed to CREATE DATABASE); otherwise
// a private non-durable server is started in a temporary directory. Call
// Close when done (typically at the end of TestMain).
func ForTests(ctx context.Context) (*TestServer, error) {
	return forTests(ctx, strings.TrimSpace(os.Getenv(EnvTestDatabaseURL)))
}

func forTests(ctx context.Context, u string) (*TestServer, error) {
	if u != "" {
		if err := execAdmin(ctx, u, "SELECT 1"); err != nil {
			return nil, fmt.Errorf("localpg: connect to %s: %w", EnvTestDatabaseURL, err)
		}
		return &TestServer{adminURL: u}, nil
	}
	s, err := Start(ctx, Config{})
	if err != nil {
		return nil, err
	}
	return &TestServer{server: s, adminURL: s.AdminURL()}, nil
}

// Server returns the private server, or nil when TEST_DATABASE_URL is used.
func (ts *TestServer) Server() *Server { return ts.server }

// AdminURL returns a URL of the server's administrative database (the
// TEST_DATABASE_URL itself when that is used).
func (ts *TestServer) AdminURL() string { return ts.adminURL }

// URL returns a connection URL for database name on this server.
func (ts *TestServer) URL(name string) string {
	if ts.server != nil {
		return ts.server.URL(name)
	}
	u, err := withDatabase(ts.adminURL, name)
	if err != nil {
		panic(err) // adminURL was parsed successfully by ForTests
	}
	return u
}

// DatabaseOption configures NewDatabase.
type DatabaseOption func(*dbOptions)

type dbOptions struct{ template string }

// WithTemplate makes NewDatabase clone the database template (as prepared
// by NewTemplate) instead of template1.
func WithTemplate(template string) DatabaseOption {
	return func(o *dbOptions) { o.template = template }
}

// NewDatabase creates a database with a unique name (prefix, made lowercase
// and safe, plus a random suffix) and returns its URL.
func (ts *TestServer) NewDatabase(ctx context.Context, prefix string, opts ...DatabaseOption) (string, error) {
	name, err := ts.newDatabase(ctx, prefix, opts...)
	if err != nil {
		return "", err
	}
	return ts.URL(name), nil
}

func (ts *TestServer) newDatabase(ctx context.Context, prefix string, opts ...DatabaseOption) (string, error) {
	var o dbOptions
	for _, opt := range opts {
		opt(&o)
	}
	ts.mu.Lock()
	closed := ts.closed
	ts.mu.Unlock()
	if closed {
		return "", errors.New("localpg: TestServer is closed")
	}
	name := UniqueName(prefix)
	if err := CreateDatabase(ctx, ts.adminURL, name, o.template); err != nil {
		return "", err
	}
	if ts.server == nil {
		ts.mu.Lock()
		ts.created = append(ts.created, name)
		ts.mu.Unlock()
	}
	return name, nil
}

// NewTemplate creates a uniquely named database (see NewDatabase), lets
// prepare fill it (e.g. run migrations) through url, and returns its name
// for WithTemplate. prepare must close its connections; any left open are
// terminated, since a template cannot be cloned while in use.
func (ts *TestServer) NewTemplate(ctx context.Context, prefix string, prepare func(ctx context.Context, url string) error) (string, error) {
	name, err := ts.newDatabase(ctx, prefix)
	if err != nil {
		return "", err
	}
	if prepare != nil {
		if err := prepare(ctx, ts.URL(name)); err != nil {
			_ = ts.drop(ctx, name)
			return "", fmt.Errorf("localpg: prepare template %s: %w", name, err)
		}
	}
	_ = execAdmin(ctx, ts.adminURL,
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
	return name, nil
}

// TB is the part of testing.TB that TestDatabase uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// TestDatabase is NewDatabase for a single test: it fails the test on error
// and, on a shared TEST_DATABASE_URL server, drops the database when the
// test ends (a private server is discarded whole by Close).
func (ts *TestServer) TestDatabase(t TB, prefix string, opts ...DatabaseOption) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := ts.newDatabase(ctx, prefix, opts...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if ts.server == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := ts.drop(ctx, name); err != nil {
				t.Errorf("%v", err)
			}
		})
	}
	return ts.URL(name)
}

// drop drops a database this TestServer created.
func (ts *TestServer) drop(ctx context.Context, name string) error {
	if err := DropDatabase(ctx, ts.adminURL, name); err != nil {
		return err
	}
	ts.mu.Lock()
	ts.created = slices.DeleteFunc(ts.created, func(n string) bool { return n == name })
	ts.mu.Unlock()
	return nil
}

// Close drops the databases created on a TEST_DATABASE_URL server, or stops
// (and deletes) the private server. It is safe to call more than once.
func (ts *TestServer) Close() error {
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return nil
	}
	ts.closed = true
	names := slices.Clone(ts.created)
	ts.created = nil
	ts.mu.Unlock()

	if ts.server != nil {
		return ts.server.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	// Clones first, then their templates.
	for _, name := range slices.Backward(names) {
		if err := DropDatabase(ctx, ts.adminURL, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UniqueName returns prefix, lowercased with characters other than [a-z0-9_]
// replaced by '_', followed by '_' and a random suffix; the result is a
// valid unquoted PostgreSQL identifier of at most 63 bytes.
func UniqueName(prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	p := b.String()
	if p == "" || (p[0] >= '0' && p[0] <= '9') {
		p = "db_" + p
	}
	const suffixLen = 1 + 16
	if len(p) > 63-suffixLen {
		p = p[:63-suffixLen]
	}
	return p + "_" + randomHex(8)
}
