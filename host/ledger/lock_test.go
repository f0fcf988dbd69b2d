package ledger_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

func TestLocksAreExclusivePerTenantAndNeverLeak(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	a1, b1 := ledger.Service("A", "k1"), ledger.Service("B", "k1")
	l1, ok, err := b.ledger.TryLock(ctx, a1, "span-1")
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = b.ledger.TryLock(ctx, ledger.Service("A", "k2"), "span-1")
	require.NoError(t, err)
	require.False(t, ok, "held by another run of the tenant")
	lb, ok, err := b.ledger.TryLock(ctx, b1, "span-1")
	require.NoError(t, err)
	require.True(t, ok, "another tenant's lock of the same name is a different lock")
	lb.Release(ctx)

	// A second ledger (another host) on the same database contends too.
	other, err := ledger.Open(ctx, b.url)
	require.NoError(t, err)
	defer other.Close()
	_, ok, err = other.TryLock(ctx, a1, "span-1")
	require.NoError(t, err)
	require.False(t, ok)

	l1.Release(ctx)
	l1.Release(ctx) // idempotent
	l2, ok, err := other.TryLock(ctx, a1, "span-1")
	require.NoError(t, err)
	require.True(t, ok)
	l2.Release(ctx)

	// After release, no pooled connection still holds an advisory lock.
	var held int
	admin, err := pgxpool.New(context.Background(), b.url)
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held))
	require.Zero(t, held)
}
