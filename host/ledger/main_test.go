package ledger_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/ledger/ledgertest"
	"github.com/logline/logline/host/span"
)

var testServer *ledgertest.Server

func TestMain(m *testing.M) { os.Exit(ledgertest.Main(m, "ledger", &testServer)) }

// testBundle is one test's database: a fresh clone of the migrated template.
type testBundle struct {
	url    string
	ledger *ledger.Ledger
	key    *span.Key
	admin  *pgxpool.Pool // the login user (superuser in the harness), no principal
}

func setup(t testing.TB) *testBundle {
	t.Helper()
	return bundleFor(t, testServer.Database(t, "ledger"))
}

// bundleFor wraps a migrated database.
func bundleFor(t testing.TB, url string) *testBundle {
	t.Helper()
	ctx := context.Background()
	key, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, url, ledger.WithKey(key))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	return &testBundle{url: url, ledger: l, key: key, admin: admin}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// count returns how many rows the whole table holds (as the login user,
// bypassing nothing but the principal: the harness user is superuser).
func (b *testBundle) count(t *testing.T) int {
	var n int
	require.NoError(t, b.admin.QueryRow(context.Background(), `SELECT count(*) FROM ledger.universal_registry`).Scan(&n))
	return n
}

// asRole runs sql as the serving role under a principal, outside the ledger
// package, to test what the database itself enforces.
func (b *testBundle) asRole(ctx context.Context, p ledger.Principal, fn func(pgx.Tx) error) error {
	tx, err := b.admin.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT set_config('role', 'logline_app', true), set_config('app.tenant_id', $1, true),
		set_config('app.user_id', $2, true), set_config('app.kind', $3, true)`, p.Tenant, p.User, string(p.Kind)); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func fn(name string) span.Span {
	return span.Span{EntityType: "function", Who: "tester", Did: "defined", This: "function", Name: name,
		Code: "return 1", Language: "javascript", Runtime: "quickjs", Status: "active"}
}

func newUUID() (string, error) {
	u, err := uuid.NewRandom()
	return u.String(), err
}

// ownerDatabase makes an empty database owned by a fresh non-superuser role
// that may create roles, and returns a URL that logs in as that role.
func ownerDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dbURL, err := testServer.NewDatabase(ctx, "owner")
	require.NoError(t, err)
	suffix, err := newUUID()
	require.NoError(t, err)
	role := "owner_" + strings.ReplaceAll(suffix, "-", "")[:12]
	admin, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer admin.Close(ctx)
	dbName := admin.Config().Database
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'owner-pw'`, role),
		fmt.Sprintf(`ALTER DATABASE %s OWNER TO %s`, pgx.Identifier{dbName}.Sanitize(), role),
		fmt.Sprintf(`ALTER SCHEMA public OWNER TO %s`, role),
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %s CASCADE`, role))
		_, _ = c.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s OWNER TO CURRENT_USER`, pgx.Identifier{dbName}.Sanitize()))
		_, _ = c.Exec(ctx, fmt.Sprintf(`DROP ROLE %s`, role))
	})
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "owner-pw")
	return u.String()
}

// settle waits until every committed row is listable by a forward Query:
// forward listings hold back rows of transactions younger than the oldest
// one still running anywhere on the server (other tests' CREATE DATABASE
// included), so a test that lists right after writing waits for that.
func (b *testBundle) settle(t testing.TB) {
	t.Helper()
	require.NoError(t, b.ledger.Settle(context.Background()))
}
