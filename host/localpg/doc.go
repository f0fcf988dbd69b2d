// Package localpg runs a private PostgreSQL server from the PostgreSQL server
// binaries installed on the machine. It is used by tests (through ForTests)
// and by the `logline dev` command (through Start with a persistent DataDir).
//
// # Servers
//
// Start initialises a cluster with initdb if needed (superuser "logline",
// UTF8, C locale, scram-sha-256 authentication with a random password kept
// in the data directory) and runs `postgres -D dir` directly, listening on
// 127.0.0.1 at a free port. The server log is appended to
// DataDir/logline_server.log and its tail is included in errors.
//
// Postgres refuses to run as root. When the current process is root, initdb
// and postgres run as an unprivileged account (Config.User, default
// "nobody"); the data directory is chowned to that account, and every parent
// directory that the account could not traverse gets the "others may
// traverse" bit (o+x) added.
//
// A server never outlives the process that started it: on Linux it is
// started with a parent-death signal (SIGQUIT, immediate shutdown) from an OS
// thread that stays alive for the life of the server. It runs in its own
// process group, so a Ctrl-C in the terminal reaches only our process, which
// then stops the server cleanly with Server.Stop.
//
// # Tests
//
// Packages whose tests need PostgreSQL share one server per test binary. If
// the environment variable TEST_DATABASE_URL is set, that server is used (its
// user must be allowed to CREATE DATABASE) and databases created by the tests
// are dropped by Close; otherwise a private, non-durable server is started in
// a temporary directory and removed by Close. Every database gets a unique
// random name, so test binaries of several packages can run at the same time.
//
// The usual pattern is to migrate a template database once in TestMain and
// to clone it (CREATE DATABASE ... TEMPLATE, which is fast) for every test:
//
//	var (
//		testPG   *localpg.TestServer
//		template string
//	)
//
//	func TestMain(m *testing.M) {
//		ctx := context.Background()
//		ts, err := localpg.ForTests(ctx)
//		if err != nil {
//			fmt.Fprintln(os.Stderr, "postgres for tests:", err)
//			os.Exit(1) // or, if errors.Is(err, localpg.ErrNotFound), skip: os.Exit(0)
//		}
//		template, err = ts.NewTemplate(ctx, "ledger_tmpl", func(ctx context.Context, url string) error {
//			return migrate(ctx, url) // must close its connections before returning
//		})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			ts.Close()
//			os.Exit(1)
//		}
//		testPG = ts
//		code := m.Run()
//		ts.Close()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		url := testPG.TestDatabase(t, "something", localpg.WithTemplate(template))
//		conn, err := pgx.Connect(t.Context(), url)
//		...
//	}
//
// TestDatabase fails the test on error and, on a shared TEST_DATABASE_URL
// server, drops the database when the test ends. NewDatabase is the
// error-returning variant that leaves dropping to Close.
package localpg
