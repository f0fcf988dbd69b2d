package ledger_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Following from Tail returns what commits afterwards and nothing before,
// including a row whose transaction began before Tail was read.
func TestTail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	p := ledger.User("A", "alice")
	_, err := b.ledger.Append(ctx, p, fn("old"))
	require.NoError(t, err)
	b.settle(t)

	// A transaction that holds an xid from before the tail and writes
	// after it.
	late := fn("late")
	require.NoError(t, ledger.Fill(p, &late, span.FormatTime(time.Now())))
	require.NoError(t, b.key.Seal(&late))
	tx, err := b.admin.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)

	tail, err := b.ledger.Tail(ctx)
	require.NoError(t, err)
	_, err = b.ledger.Append(ctx, p, fn("new"))
	require.NoError(t, err)
	at, _ := span.ParseTime(late.At)
	_, err = tx.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
		visibility, status, name, code, language, runtime, curr_hash, signature, public_key)
		VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		late.ID, late.EntityType, late.Who, late.Did, late.This, at, late.OwnerID, late.TenantID, late.Visibility,
		late.Status, late.Name, late.Code, late.Language, late.Runtime, late.CurrHash, late.Signature, late.PublicKey)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	b.settle(t)

	pg, err := b.ledger.Query(ctx, p, ledger.Filter{After: tail})
	require.NoError(t, err)
	var names []string
	for _, it := range pg.Items {
		names = append(names, it.Span.Name)
	}
	require.Equal(t, []string{"late", "new"}, names)
}

func TestExecutionStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	dur := func(ms int32) *int32 { return &ms }
	ex := func(status string, ms *int32, vis string) span.Span {
		return span.Span{EntityType: "execution", Who: "t", This: "run", Status: status, DurationMs: ms, Visibility: vis}
	}
	_, err := b.ledger.Append(ctx, ledger.User("A", "alice"), ex("complete", dur(10), "private"), ex("complete", dur(30), "tenant"),
		ex("error", nil, "tenant"), fn("not an execution"))
	require.NoError(t, err)
	_, err = b.ledger.Append(ctx, ledger.User("B", "bob"), ex("complete", dur(1000), "public"))
	require.NoError(t, err)

	st, err := b.ledger.ExecutionStats(ctx, ledger.User("A", "alice"), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	today := time.Now().UTC().Format("2006-01-02")
	require.Equal(t, []ledger.StatusCount{{Day: today, Status: "complete", N: 2}, {Day: today, Status: "error", N: 1}}, st.Counts)
	require.Len(t, st.Latency, 1)
	require.InDelta(t, 20, *st.Latency[0].AvgMs, 1e-9)

	// RLS decides: another user of A does not count alice's private one;
	// B's public execution is B's tenant's, not A's.
	st, err = b.ledger.ExecutionStats(ctx, ledger.User("A", "carol"), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Equal(t, []ledger.StatusCount{{Day: today, Status: "complete", N: 1}, {Day: today, Status: "error", N: 1}}, st.Counts)
	st, err = b.ledger.ExecutionStats(ctx, ledger.User("A", "alice"), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, st.Counts)
}

func TestExecutionSeries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ex := func(status string, ms int32, fuel string, vis string) span.Span {
		return span.Span{EntityType: "execution", Who: "t", This: "run", Status: status, DurationMs: &ms, Visibility: vis,
			Metadata: json.RawMessage(`{"fuel_used":` + fuel + `}`)}
	}
	_, err := b.ledger.Append(ctx, ledger.User("A", "alice"), ex("complete", 10, "100", "private"), ex("complete", 30, "300", "tenant"),
		ex("error", 50, `"not a number"`, "tenant"), fn("not an execution"))
	require.NoError(t, err)
	_, err = b.ledger.Append(ctx, ledger.User("B", "bob"), ex("complete", 1000, "5", "public"))
	require.NoError(t, err)

	// The appends may straddle an hour: sum the hours.
	sum := func(hs []ledger.HourStats) (counts map[string]int64, fuel int64) {
		counts = map[string]int64{}
		for _, h := range hs {
			require.Zero(t, h.Hour.Minute(), "an hour starts on the hour")
			for k, n := range h.Counts {
				counts[k] += n
			}
			fuel += h.Fuel
		}
		return counts, fuel
	}
	hs, err := b.ledger.ExecutionSeries(ctx, ledger.User("A", "alice"), time.Now().Add(-2*time.Hour))
	require.NoError(t, err)
	counts, fuel := sum(hs)
	require.Equal(t, map[string]int64{"complete": 2, "error": 1}, counts)
	require.Equal(t, int64(400), fuel, "a fuel_used that is not a number is left out")
	if len(hs) == 1 {
		require.InDelta(t, 30, *hs[0].P50Ms, 1e-9)
		require.InDelta(t, 200, *hs[0].FuelP50, 1e-9)
	}

	// RLS decides, as for ExecutionStats.
	hs, err = b.ledger.ExecutionSeries(ctx, ledger.User("A", "carol"), time.Now().Add(-2*time.Hour))
	require.NoError(t, err)
	counts, fuel = sum(hs)
	require.Equal(t, map[string]int64{"complete": 1, "error": 1}, counts)
	require.Equal(t, int64(300), fuel)
	hs, err = b.ledger.ExecutionSeries(ctx, ledger.User("A", "alice"), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, hs)
}
