package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Filter.Match keeps what Query's SQL selects, field by field: the stream
// filters rows it read once per principal with Match, the listings with
// SQL, and a subscriber must see what a listing of the same query shows.
func TestFilterMatchAgreesWithQuery(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	parent, err := b.ledger.Append(ctx, p, fn("parent"))
	require.NoError(t, err)
	mid := time.Now()
	time.Sleep(10 * time.Millisecond)
	var spans []span.Span
	for i, c := range []struct{ typ, status, vis, trace, parent string }{
		{"note", "", "", "t1", ""},
		{"note", "open", "tenant", "t2", parent[0].ID},
		{"metric", "hot", "public", "t1", parent[0].ID},
		{"policy_cursor", "", "tenant", "", ""},
		{"quota_counter", "open", "", "t2", ""},
	} {
		spans = append(spans, span.Span{EntityType: c.typ, Who: "alice", This: c.typ, Name: string(rune('a' + i)),
			Status: c.status, Visibility: c.vis, TraceID: c.trace, ParentID: c.parent})
	}
	_, err = b.ledger.Append(ctx, p, spans...)
	require.NoError(t, err)
	// Forward listings stop at the horizon of transactions still running
	// (other tests' on a loaded server): wait until ours are behind it.
	require.NoError(t, b.ledger.Settle(ctx))

	all, err := b.ledger.Query(ctx, p, ledger.Filter{Limit: ledger.MaxLimit})
	require.NoError(t, err)
	require.Len(t, all.Items, 6)
	sizes := map[int]bool{}
	for _, f := range []ledger.Filter{
		{},
		{ExcludeTypes: ledger.Excluded(false, "")},
		{ExcludeTypes: ledger.Excluded(false, "", "metric")},
		{ExcludeTypes: ledger.Excluded(false, "policy_cursor")},
		{EntityType: "note"},
		{EntityType: "note", Status: "open"},
		{Status: "open"},
		{Visibility: "private"},
		{Visibility: "tenant"},
		{Visibility: "public"},
		{TraceID: "t1"},
		{ParentID: parent[0].ID},
		{Tenant: "A", TraceID: "t2"},
		{Tenant: "B"},
		{Since: mid},
		{Since: mid, EntityType: "function"},
	} {
		sel := f
		sel.Limit = ledger.MaxLimit
		pg, err := b.ledger.Query(ctx, p, sel)
		require.NoError(t, err)
		var want, got []string
		for _, it := range pg.Items {
			want = append(want, it.Span.ID)
		}
		for _, it := range all.Items {
			if f.Match(&it.Span) {
				got = append(got, it.Span.ID)
			}
		}
		require.Equal(t, want, got, "%+v", f)
		sizes[len(want)] = true
	}
	require.GreaterOrEqual(t, len(sizes), 5, "the filters select different sets: %v", sizes)
}
