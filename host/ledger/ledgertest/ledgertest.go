// Package ledgertest gives tests of packages built on the ledger a private
// PostgreSQL (or TEST_DATABASE_URL's server) with a migrated template, and a
// fresh clone of it per test. Test support only.
package ledgertest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
)

// Server is a test server holding a migrated template database.
type Server struct {
	*localpg.TestServer
	template string
}

// Start starts the server and migrates the template. prefix names the
// template (one per test binary).
func Start(ctx context.Context, prefix string) (*Server, error) {
	ts, err := localpg.ForTests(ctx)
	if err != nil {
		return nil, fmt.Errorf("private postgres: %w", err)
	}
	tmpl, err := ts.NewTemplate(ctx, prefix+"_tmpl", func(ctx context.Context, url string) error {
		_, _, err := ledger.Migrate(ctx, url)
		return err
	})
	if err != nil {
		_ = ts.Close()
		return nil, fmt.Errorf("migrate template: %w", err)
	}
	return &Server{TestServer: ts, template: tmpl}, nil
}

// Main is a TestMain body: it starts the server, runs the tests and stops
// it, and returns the exit code.
func Main(m *testing.M, prefix string, srv **Server) int {
	s, err := Start(context.Background(), prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	*srv = s
	return m.Run()
}

// Database is a fresh migrated database for one test, dropped when the test
// ends (on a shared server).
func (s *Server) Database(t localpg.TB, prefix string) string {
	return s.TestDatabase(t, prefix, localpg.WithTemplate(s.template))
}
