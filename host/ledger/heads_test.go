package ledger_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/migrations"
)

// ledger.heads keeps the ord of each id's latest version (the order in
// which the engine takes open requests), and migration 004 applies again
// without harm.
func TestHeadsKeepLatestOrd(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	first, err := b.ledger.Append(ctx, p, fn("f"))
	require.NoError(t, err)
	next := first[0]
	next.Seq, next.PrevHash, next.At, next.CurrHash, next.Signature, next.PublicKey = 1, first[0].CurrHash, "", "", "", ""
	_, err = b.ledger.Append(ctx, p, next)
	require.NoError(t, err)

	check := func() {
		var headOrd, latestOrd int64
		require.NoError(t, b.admin.QueryRow(ctx, `SELECT h.ord, ur.ord FROM ledger.heads h
			JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = 1 WHERE h.id = $1`, next.ID).Scan(&headOrd, &latestOrd))
		require.Equal(t, latestOrd, headOrd)
	}
	check()
	sql, err := migrations.FS.ReadFile("004_engine_hot_path.sql")
	require.NoError(t, err)
	_, err = b.admin.Exec(ctx, string(sql))
	require.NoError(t, err, "004 applies again")
	check()
}
