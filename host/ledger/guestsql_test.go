package ledger_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

func TestGuestSQLIsConfined(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	mk := func(p ledger.Principal, vis string) string {
		s := fn(vis)
		s.Visibility = vis
		out, err := b.ledger.Append(ctx, p, s)
		require.NoError(t, err)
		return out[0].ID
	}
	aPriv := mk(ledger.User("A", "alice"), "private")
	mk(ledger.User("B", "eve"), "private")
	mk(ledger.User("B", "eve"), "tenant")
	pub := mk(ledger.User("B", "eve"), "public")
	kernelA := ledger.Service("A", "kernel")
	q := func(p ledger.Principal, sql string, params ...any) (ledger.GuestRows, error) {
		return b.ledger.GuestSQL(ctx, p, sql, params, ledger.GuestLimits{Timeout: 500 * time.Millisecond})
	}

	// A's kernel sees A's spans and public ones, never B's others.
	res, err := q(kernelA, `SELECT id, tenant_id FROM ledger.visible_timeline ORDER BY tenant_id`)
	require.NoError(t, err)
	var ids []string
	for _, r := range res.Rows {
		var row struct{ ID, TenantID string }
		require.NoError(t, json.Unmarshal(r, &row))
		ids = append(ids, row.ID)
	}
	require.ElementsMatch(t, []string{aPriv, pub}, ids)

	// Heads (the engine's index of latest versions) and the views over
	// them show A's rows only; public spans of B are not A's open work.
	for _, view := range []string{"ledger.heads", "ledger.open_requests", "ledger.active_policies", "ledger.recurring_functions"} {
		res, err = q(kernelA, `SELECT tenant_id FROM `+view)
		require.NoError(t, err, view)
		for _, r := range res.Rows {
			require.JSONEq(t, `{"tenant_id":"A"}`, string(r), view)
		}
	}
	res, err = q(kernelA, `SELECT id FROM ledger.heads`)
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.Contains(t, string(res.Rows[0]), aPriv)

	// Parameters bind; they are never spliced into the text.
	res, err = q(kernelA, `SELECT name FROM ledger.universal_registry WHERE id = $1`, aPriv)
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.JSONEq(t, `{"name":"private"}`, string(res.Rows[0]))

	// It cannot change its principal or any setting, lock, notify, sleep,
	// write, or run a second statement.
	for _, bad := range []string{
		`SELECT set_config('app.tenant_id', 'B', true)`,
		`SELECT pg_catalog.set_config('role', 'logline_app', false)`,
		`SELECT set_config('statement_timeout', '0', false)`,
		`SELECT pg_advisory_lock(42)`,
		`SELECT pg_notify('logline_spans', 'x/0')`,
		`SELECT pg_sleep(5)`,
		`SELECT 1; SELECT 2`,
		`SELECT 1) AS q; SET app.tenant_id = 'B'; SELECT (1`,
		`DELETE FROM ledger.universal_registry`,
		`UPDATE ledger.universal_registry SET status = 'x'`,
		`SELECT * INTO stolen FROM ledger.universal_registry`,
		`WITH d AS (DELETE FROM ledger.universal_registry RETURNING 1) SELECT * FROM d`,
		`SELECT * FROM ledger.universal_registry FOR UPDATE`,
		`SET app.tenant_id = 'B'`,
	} {
		_, err := q(kernelA, bad)
		require.Error(t, err, bad)
	}
	// Nor take a lock in the host's lease space, hold back the listing
	// horizon, or count other tenants' rows (guestsql_allow_test.go has
	// the whole allowlist).
	for _, bad := range []string{
		`SELECT set_config('app.tenant_id', 'B', true)`,
		`SELECT pg_advisory_xact_lock(42)`,
		`SELECT pg_try_advisory_xact_lock_shared(1, 2)`,
		`SELECT pg_current_xact_id()`,
		`SELECT n_live_tup FROM pg_stat_user_tables`,
	} {
		_, err = q(kernelA, bad)
		require.ErrorIs(t, err, ledger.ErrForbidden, bad)
	}

	// The transaction is read-only, whatever the guest's SQL calls.
	res, err = q(kernelA, `SELECT current_setting('transaction_read_only') AS ro`)
	require.NoError(t, err)
	require.JSONEq(t, `{"ro":"on"}`, string(res.Rows[0]))

	// A trailing comment cannot swallow the wrapper.
	res, err = q(kernelA, `SELECT 1 AS one -- comment`)
	require.NoError(t, err)
	require.JSONEq(t, `{"one":1}`, string(res.Rows[0]))

	// Caps: rows, bytes and time.
	res, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT g FROM generate_series(1, 1000) g`, nil, ledger.GuestLimits{Rows: 10})
	require.NoError(t, err)
	require.Len(t, res.Rows, 10)
	require.True(t, res.Truncated)
	res, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT repeat('x', 1000) AS s FROM generate_series(1, 100)`, nil, ledger.GuestLimits{Bytes: 5000})
	require.NoError(t, err)
	require.Len(t, res.Rows, 4)
	require.True(t, res.Truncated)
	_, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT count(*) FROM generate_series(1, 1000000000)`, nil, ledger.GuestLimits{Timeout: 100 * time.Millisecond})
	require.ErrorIs(t, err, ledger.ErrTimeout)

	// And nothing of it stays on the connection.
	cfg, err := pgxpool.ParseConfig(b.url)
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	one := ledger.New(pool)
	_, err = one.GuestSQL(ctx, kernelA, `SELECT 1`, nil, ledger.GuestLimits{})
	require.NoError(t, err)
	var user, tenant, timeout string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_user, current_setting('app.tenant_id', true), current_setting('statement_timeout')`).Scan(&user, &tenant, &timeout))
	require.NotEqual(t, ledger.GuestRole, user)
	require.Empty(t, tenant)
	require.Equal(t, "0", timeout)
}

func TestGuestSQLRefusedWithoutRevokes(t *testing.T) {
	t.Parallel()
	// A database migrated by a non-superuser keeps set_config executable by
	// PUBLIC: guest SQL must refuse to run there.
	ownerURL := ownerDatabase(t)
	ctx := ctxT(t)
	_, _, err := ledger.Migrate(ctx, ownerURL)
	require.NoError(t, err)
	l, err := ledger.Open(ctx, ownerURL)
	require.NoError(t, err)
	defer l.Close()
	_, err = l.GuestSQL(ctx, ledger.Service("A", "k"), `SELECT 1`, nil, ledger.GuestLimits{})
	require.ErrorIs(t, err, ledger.ErrGuestSQLUnavailable)
}
