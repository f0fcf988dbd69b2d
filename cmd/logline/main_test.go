package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/logline/logline/host/ledger/ledgertest"
)

var testPG *ledgertest.Server

func TestMain(m *testing.M) { os.Exit(ledgertest.Main(m, "cli", &testPG)) }

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
	url := testPG.Database(t, "cli")
	return map[string]string{"DATABASE_URL": url, "LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}
}
