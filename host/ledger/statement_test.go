package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// The insert trigger works once per statement (migrations/009): these pin
// the rules of 001 on the many-row path, which a batch Append takes.

// A batch with one row at fault anywhere writes nothing, moves no head, and
// the error names that row, whatever its position.
func TestBatchRowAtFaultNamesItAndWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	p := ledger.User("A", "alice")
	base, err := b.ledger.Append(ctx, p, fn("base"))
	require.NoError(t, err)
	before := b.count(t)
	for _, at := range []int{0, 49, 99} {
		spans := make([]span.Span, 100)
		for i := range spans {
			spans[i] = fn(fmt.Sprintf("s%d", i))
		}
		bad := base[0]
		bad.Seq, bad.At, bad.PrevHash, bad.CurrHash, bad.Signature, bad.PublicKey = 5, "", "", "", "", ""
		spans[at] = bad
		_, err := b.ledger.Append(ctx, p, spans...)
		require.ErrorIs(t, err, ledger.ErrSeqConflict, "row %d", at)
		require.ErrorContains(t, err, base[0].ID)
		require.Equal(t, before, b.count(t), "nothing written (row %d at fault)", at)
	}
	// The same id twice at seq 0 in one batch, or an id that exists.
	dup := fn("dup")
	dup.ID = base[0].ID
	_, err = b.ledger.Append(ctx, p, fn("x"), dup)
	require.ErrorIs(t, err, ledger.ErrSeqConflict)
	require.Equal(t, before, b.count(t))
	// The head is still seq 0: the next version appends.
	next := base[0]
	next.Seq, next.At, next.PrevHash, next.CurrHash, next.Signature, next.PublicKey = 1, "", "", "", "", ""
	_, err = b.ledger.Append(ctx, p, next, fn("y"))
	require.NoError(t, err)
}

// Versions chained inside one batch move the head to the last one; a later
// batch continues from it; the expiry comes from the latest version that
// carries ttl_minutes, and one without it keeps the earlier expiry.
func TestBatchVersionsMoveHeadsAndExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	p := ledger.User("A", "alice")
	id, err := newUUID()
	require.NoError(t, err)
	v := func(seq int32, meta string) span.Span {
		s := fn("v")
		s.ID, s.Seq = id, seq
		if meta != "" {
			s.Metadata = []byte(meta)
		}
		return s
	}
	out, err := b.ledger.Append(ctx, p, v(0, ""), v(1, `{"ttl_minutes": 10}`), v(2, ""), fn("other"))
	require.NoError(t, err)
	head := func() (int32, *time.Time) {
		var seq int32
		var exp *time.Time
		require.NoError(t, b.admin.QueryRow(ctx, `SELECT seq, expires_at FROM ledger.heads WHERE id = $1`, id).Scan(&seq, &exp))
		return seq, exp
	}
	seq, exp := head()
	require.Equal(t, int32(2), seq)
	require.NotNil(t, exp, "seq 1's expiry stays when seq 2 has no ttl")
	at1, err := span.ParseTime(out[1].At)
	require.NoError(t, err)
	require.WithinDuration(t, at1.Add(10*time.Minute), *exp, time.Millisecond)

	_, err = b.ledger.Append(ctx, p, v(3, `{"ttl_minutes": "soon"}`), v(4, ""))
	require.NoError(t, err)
	seq, exp = head()
	require.Equal(t, int32(4), seq)
	require.Nil(t, exp, "a ttl_minutes that is not a number clears the expiry")

	// A gap inside a batch is refused.
	_, err = b.ledger.Append(ctx, p, v(5, ""), v(7, ""))
	require.Error(t, err)
	seq, _ = head()
	require.Equal(t, int32(4), seq)
}

// tx_id is always the inserting transaction's: the serving role may not
// write the column at all, and a login that may is refused by the trigger.
func TestTxIDIsTheInsertingTransactions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	p := ledger.User("A", "alice")
	row := sealedRow(t, b.key, benchSpan(1))
	withTx := `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
		visibility, status, name, code, language, runtime, input, metadata, curr_hash, signature, public_key, tx_id)
		VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, '3'::xid8)`
	err := b.asRole(ctx, p, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, withTx, row...)
		return err
	})
	require.ErrorContains(t, err, "permission denied")
	_, err = b.admin.Exec(ctx, withTx, row...)
	require.ErrorContains(t, err, "tx_id must be the inserting transaction's")
	// Without the column, the serving role's insert gets its own.
	require.NoError(t, b.asRole(ctx, p, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, rawInsert, row...); err != nil {
			return err
		}
		var same bool
		if err := tx.QueryRow(ctx, `SELECT tx_id = pg_current_xact_id() FROM ledger.universal_registry WHERE id = $1`, row[0]).Scan(&same); err != nil {
			return err
		}
		require.True(t, same)
		return nil
	}))
}

// One NOTIFY per statement names every row, in order, however many: a
// 1,000-span batch arrives as notices of all of them.
func TestBatchNotifiesEveryRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make(chan ledger.Notice, 5000)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = b.ledger.Listen(lctx, func(n ledger.Notice) { got <- n }) }()
	require.True(t, (<-got).Gap, "listening")
	spans := make([]span.Span, ledger.MaxBatch)
	for i := range spans {
		spans[i] = fn(fmt.Sprintf("n%d", i))
	}
	out, err := b.ledger.Append(ctx, ledger.User("A", "alice"), spans...)
	require.NoError(t, err)
	for i := range out {
		select {
		case n := <-got:
			require.Equal(t, ledger.Notice{ID: out[i].ID, Seq: 0}, n, "notice %d", i)
		case <-ctx.Done():
			t.Fatalf("notice %d of %d did not arrive", i, len(out))
		}
	}
}

// Concurrent single-span Appends of one principal are committed together
// when they queue (group.go), yet each caller gets its own span, and a
// caller whose span is refused fails alone: the others are written.
func TestGroupCommitKeepsEachCallersVerdict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	p := ledger.User("A", "alice")
	base, err := b.ledger.Append(ctx, p, fn("base"))
	require.NoError(t, err)
	before := b.count(t)
	const n = 64
	var wg sync.WaitGroup
	outs := make([][]span.Span, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			s := fn(fmt.Sprintf("g%d", i))
			if i%16 == 5 { // refused: the id exists
				s.ID = base[0].ID
			}
			outs[i], errs[i] = b.ledger.Append(ctx, p, s)
		})
	}
	wg.Wait()
	ok := 0
	for i := range n {
		if i%16 == 5 {
			require.ErrorIs(t, errs[i], ledger.ErrSeqConflict, "caller %d", i)
			continue
		}
		require.NoError(t, errs[i], "caller %d", i)
		require.Len(t, outs[i], 1)
		require.Equal(t, fmt.Sprintf("g%d", i), outs[i][0].Name, "caller %d got its own span", i)
		ok++
	}
	require.Equal(t, before+ok, b.count(t))
	// A caller that gives up while queued writes nothing it did not get.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.ledger.Append(cctx, p, fn("late"))
	require.Error(t, err)
}
