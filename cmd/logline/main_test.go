package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
)

var (
	testPG   *localpg.TestServer
	template string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	ctx := context.Background()
	ts, err := localpg.ForTests(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "private postgres:", err)
		return 1
	}
	defer ts.Close()
	testPG = ts
	template, err = ts.NewTemplate(ctx, "cli_tmpl", func(ctx context.Context, url string) error {
		_, _, err := ledger.Migrate(ctx, url)
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "migrate template:", err)
		return 1
	}
	return m.Run()
}

// result is one CLI invocation's outcome.
type result struct {
	code     int
	out, err string
}

// cli runs logline in-process with the given environment (nothing from the
// real one) and stdin.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, stdio{in: strings.NewReader(stdin), out: &out, err: &errb}, func(k string) string { return env[k] })
	return result{code: code, out: out.String(), err: errb.String()}
}

// env is a fresh migrated database and a principal for the CLI.
func newEnv(t *testing.T) map[string]string {
	t.Helper()
	url := testPG.TestDatabase(t, "cli", localpg.WithTemplate(template))
	return map[string]string{"DATABASE_URL": url, "LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}
}
