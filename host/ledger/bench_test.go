package ledger_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
	"github.com/logline/logline/host/span"
)

// rawInsert is what a client without the ledger would send: the same row,
// already sealed, straight into the table as the login user.
const rawInsert = `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
	visibility, status, name, code, language, runtime, input, metadata, curr_hash, signature, public_key)
	VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`

func benchSpan(i int) span.Span {
	s := fn(fmt.Sprintf("bench-%d", i))
	s.Code = "export default function on(span) { return [] } // a typical small policy body of a few dozen bytes"
	s.Input = []byte(`{"n":` + fmt.Sprint(i) + `,"tags":["a","b"],"nested":{"k":"v"}}`)
	s.Metadata = []byte(`{"schedule":"*/5 * * * *","owner":"alice"}`)
	return s
}

// sealedRow seals s the way Append would and returns the raw INSERT args.
func sealedRow(t testing.TB, key *span.Key, s span.Span) []any {
	require.NoError(t, ledger.Fill(ledger.User("A", "alice"), &s, span.FormatTime(time.Now())))
	require.NoError(t, key.Seal(&s))
	at, _ := span.ParseTime(s.At)
	return []any{s.ID, s.EntityType, s.Who, s.Did, s.This, at, s.OwnerID, s.TenantID, s.Visibility, s.Status,
		s.Name, s.Code, s.Language, s.Runtime, string(s.Input), string(s.Metadata), s.CurrHash, s.Signature, s.PublicKey}
}

type rates struct{ ours, raw float64 }

// measureSingle appends n spans one per transaction through the ledger and
// n through raw INSERTs, interleaved in rounds so drift hits both alike.
func measureSingle(t testing.TB, bb *testBundle, n int) (r rates, ourLat, rawLat []time.Duration) {
	ctx := context.Background()
	p := ledger.User("A", "alice")
	const rounds = 5
	var oursD, rawD time.Duration
	for round := 0; round < rounds; round++ {
		rows := make([][]any, n/rounds)
		for i := range rows {
			rows[i] = sealedRow(t, bb.key, benchSpan(i))
		}
		start := time.Now()
		for _, args := range rows {
			t0 := time.Now()
			_, err := bb.admin.Exec(ctx, rawInsert, args...)
			require.NoError(t, err)
			rawLat = append(rawLat, time.Since(t0))
		}
		rawD += time.Since(start)

		start = time.Now()
		for i := 0; i < n/rounds; i++ {
			t0 := time.Now()
			_, err := bb.ledger.Append(ctx, p, benchSpan(i))
			require.NoError(t, err)
			ourLat = append(ourLat, time.Since(t0))
		}
		oursD += time.Since(start)
	}
	return rates{ours: float64(n) / oursD.Seconds(), raw: float64(n) / rawD.Seconds()}, ourLat, rawLat
}

func measureBatch(t testing.TB, bb *testBundle, batches int) rates {
	ctx := context.Background()
	p := ledger.User("A", "alice")
	const size = 100
	var oursD, rawD time.Duration
	for r := 0; r < batches; r++ {
		b := &pgx.Batch{}
		for i := 0; i < size; i++ {
			b.Queue(rawInsert, sealedRow(t, bb.key, benchSpan(i))...)
		}
		start := time.Now()
		require.NoError(t, bb.admin.SendBatch(ctx, b).Close())
		rawD += time.Since(start)

		spans := make([]span.Span, size)
		for i := range spans {
			spans[i] = benchSpan(i)
		}
		start = time.Now()
		_, err := bb.ledger.Append(ctx, p, spans...)
		require.NoError(t, err)
		oursD += time.Since(start)
	}
	n := float64(batches * size)
	return rates{ours: n / oursD.Seconds(), raw: n / rawD.Seconds()}
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

// fill grows the ledger to n rows quickly: generated rows inserted by the
// superuser with triggers off, and their heads, then fresh statistics.
func fill(t testing.TB, bb *testBundle, n int) {
	ctx := context.Background()
	conn, err := bb.admin.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, stmt := range []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
			visibility, status, name, code, input, curr_hash, tx_id)
		SELECT gen_random_uuid(), 0, (ARRAY['function','execution','request','metric'])[1 + g %% 4], 'filler', 'made', 'filler',
			now() - make_interval(secs => g), 'u' || (g %% 1000), 't' || (g %% 100), 'tenant', 'complete', 'f' || g,
			'return ' || g, jsonb_build_object('g', g), encode(sha256(int8send(g)), 'hex'), pg_current_xact_id()
		FROM generate_series(1, %d) g`, n),
		`INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id)
			SELECT id, seq, curr_hash, tenant_id, owner_id FROM ledger.universal_registry ON CONFLICT DO NOTHING`,
		`RESET session_replication_role`,
		`VACUUM ANALYZE ledger.universal_registry`,
		`VACUUM ANALYZE ledger.heads`,
	} {
		_, err := conn.Exec(ctx, stmt)
		require.NoError(t, err)
	}
}

// BenchmarkAppend prints the comparisons the ledger is held to (issue 2):
// single-span Append vs raw INSERT, 100-span batch Append vs a raw batch,
// and single-span Append at a 1,000,000-row ledger vs an empty one.
//
// It measures on two servers: a durable one (fsync and synchronous_commit
// on, as production runs) — the lines without suffix — and the tests'
// non-durable one (_nosync), where commits cost almost nothing and the
// host's own overhead shows most. Run with -benchtime=1x: it measures fixed
// amounts of work itself.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	srv, err := localpg.Start(ctx, localpg.Config{Durable: true})
	require.NoError(b, err)
	defer srv.Stop() //nolint:errcheck
	_, _, err = ledger.Migrate(ctx, srv.URL("postgres"))
	require.NoError(b, err)
	durable := bundleFor(b, srv.URL("postgres"))
	nosync := setup(b)
	for i := 0; i < b.N; i++ {
		empty := benchAppend(b, durable, "")
		benchAppend(b, nosync, "_nosync")

		fill(b, durable, 1_000_000)
		measureSingle(b, durable, 200)
		big, _, _ := measureSingle(b, durable, 3000)
		fmt.Printf("BENCH ledger_append_at_1m_rows ours=%.0f baseline=%.0f unit=rows/s better=higher\n", big.ours, empty)
	}
}

// benchAppend prints the single and batch comparisons and returns our
// single-span rate.
func benchAppend(b *testing.B, bb *testBundle, suffix string) float64 {
	measureSingle(b, bb, 200) // warm statement caches and connections
	single, ourLat, rawLat := measureSingle(b, bb, 3000)
	fmt.Printf("BENCH ledger_append_single%s ours=%.0f baseline=%.0f unit=rows/s better=higher\n", suffix, single.ours, single.raw)
	fmt.Printf("BENCH ledger_append_single_p99%s ours=%.3f baseline=%.3f unit=ms better=lower\n", suffix,
		ms(percentile(ourLat, 0.99)), ms(percentile(rawLat, 0.99)))
	batch := measureBatch(b, bb, 40)
	fmt.Printf("BENCH ledger_append_batch100%s ours=%.0f baseline=%.0f unit=rows/s better=higher\n", suffix, batch.ours, batch.raw)
	return single.ours
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
