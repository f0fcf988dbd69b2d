package ledger_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

// Listings follow the numeric order of transaction ids, also where their
// decimal form gains a digit (999 -> 1000): sorting them as text once put
// "1000" before "999", and a forward listing skipped rows at the boundary.
func TestListingOrderAcrossXidDigits(t *testing.T) {
	// Not parallel: the package's other tests would use up transaction
	// ids between the burn below and the appends, and the appends could
	// all land past the boundary.
	b := setup(t)
	ctx := context.Background()
	p := ledger.User("A", "alice")
	var xid string
	require.NoError(t, b.admin.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid))
	x, err := strconv.ParseUint(xid, 10, 64)
	require.NoError(t, err)
	// Burn xids up to just below the next power of ten, leaving room for
	// other tests of the package running against the same server.
	boundary := uint64(math.Pow(10, math.Ceil(math.Log10(float64(x+200)))))
	if n := int(boundary) - int(x) - 20; n > 0 {
		for n > 0 {
			k := min(n, 2000)
			_, err := b.admin.Exec(ctx, strings.Repeat("BEGIN; SELECT pg_current_xact_id(); COMMIT; ", k))
			require.NoError(t, err)
			n -= k
		}
	}
	var want []string
	for i := 0; i < 60; i++ {
		s, err := b.ledger.Append(ctx, p, fn(fmt.Sprint(i)))
		require.NoError(t, err)
		want = append(want, s[0].Name)
	}
	b.settle(t)

	var got []string
	var txs []uint64
	var cur ledger.Cursor
	for {
		pg, err := b.ledger.Query(ctx, p, ledger.Filter{After: cur, Limit: 7})
		require.NoError(t, err)
		for _, it := range pg.Items {
			got = append(got, it.Span.Name)
			txs = append(txs, it.Cursor.Tx)
		}
		cur = pg.Next
		if len(pg.Items) < 7 {
			break
		}
	}
	require.Equal(t, want, got)
	require.Less(t, txs[0], boundary, "the test must straddle the boundary")
	require.GreaterOrEqual(t, txs[len(txs)-1], boundary)

	pg, err := b.ledger.Query(ctx, p, ledger.Filter{Desc: true, Limit: 100})
	require.NoError(t, err)
	for i, it := range pg.Items {
		require.Equal(t, want[len(want)-1-i], it.Span.Name)
	}
}
