package ledger_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// seedSchema is the seed's table exactly as Bluebook §1 writes it (per-row
// row_to_json NOTIFY, per-row append-only trigger, GIN indexes), in a schema
// of its own: the baseline the concurrent batch benchmark is held to.
const seedSchema = `
CREATE SCHEMA seed;
CREATE TABLE seed.universal_registry (
  id uuid NOT NULL, seq integer NOT NULL, entity_type text NOT NULL, who text NOT NULL, did text, "this" text NOT NULL,
  at timestamptz NOT NULL DEFAULT now(), parent_id uuid, related_to uuid[], owner_id text, tenant_id text,
  visibility text NOT NULL DEFAULT 'private', status text, is_deleted boolean NOT NULL DEFAULT false,
  name text, description text, code text, language text, runtime text, input jsonb, output jsonb, error jsonb,
  duration_ms integer, trace_id text, prev_hash text, curr_hash text, signature text, public_key text, metadata jsonb,
  PRIMARY KEY (id, seq),
  CONSTRAINT ck_visibility CHECK (visibility IN ('private','tenant','public')),
  CONSTRAINT ck_append_only CHECK (seq >= 0));
CREATE FUNCTION seed.no_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'Append-only table: updates/deletes are not allowed.'; END; $$;
CREATE TRIGGER ur_no_update BEFORE UPDATE OR DELETE ON seed.universal_registry FOR EACH ROW EXECUTE FUNCTION seed.no_updates();
CREATE FUNCTION seed.notify_timeline() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('timeline_updates', row_to_json(NEW)::text); RETURN NEW; END; $$;
CREATE TRIGGER ur_notify_insert AFTER INSERT ON seed.universal_registry FOR EACH ROW EXECUTE FUNCTION seed.notify_timeline();
CREATE INDEX ON seed.universal_registry (at DESC);
CREATE INDEX ON seed.universal_registry (entity_type, at DESC);
CREATE INDEX ON seed.universal_registry (owner_id, tenant_id);
CREATE INDEX ON seed.universal_registry (trace_id);
CREATE INDEX ON seed.universal_registry (parent_id);
CREATE INDEX ON seed.universal_registry USING GIN (related_to);
CREATE INDEX ON seed.universal_registry USING GIN (metadata);
ALTER TABLE seed.universal_registry ENABLE ROW LEVEL SECURITY;`

// rawInsertMany is a raw n-row INSERT of sealedRow's values into table.
func rawInsertMany(table string, n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + table + ` (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
	visibility, status, name, code, language, runtime, input, metadata, curr_hash, signature, public_key) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("($" + strconv.Itoa(i*19+1) + ", 0")
		for c := 2; c <= 19; c++ {
			b.WriteString(", $" + strconv.Itoa(i*19+c))
		}
		b.WriteString(")")
	}
	return b.String()
}

// concurrently runs work(w, i) for i < per on each of workers goroutines
// and returns the wall time of the whole.
func concurrently(t testing.TB, workers, per int, work func(w, i int) error) time.Duration {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := 0; i < per; i++ {
				if err := work(w, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return d
}

// BenchmarkAppendConcurrent prints the 8-writer comparisons of issue 15 on
// the tests' non-durable server (fsync off, as the table was
// measured): 100-span Appends against the seed schema's raw 100-row INSERT,
// and single-span Appends against raw single-row INSERTs into our own
// table. Each compares in interleaved rounds, so drift hits both alike;
// the raw rows are sealed before their clock starts, ours are sealed by
// Append inside it (that is the host's work).
func BenchmarkAppendConcurrent(b *testing.B) {
	ctx := context.Background()
	bb := setup(b)
	_, err := bb.admin.Exec(ctx, seedSchema)
	require.NoError(b, err)
	cfg, err := pgxpool.ParseConfig(bb.url)
	require.NoError(b, err)
	cfg.MaxConns = 16
	raw, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	defer raw.Close()
	const workers, size = 8, 100
	p := ledger.User("A", "alice")
	for i := 0; i < b.N; i++ {
		rawMany := rawInsertMany("seed.universal_registry", size)
		var ours, seed time.Duration
		var n int
		for round := 0; round < 9; round++ {
			const per = 8 // batches per writer and round (rounds are short: 8 of them, after a warm-up, hold its noise)
			args := make([][]any, workers*per)
			for j := range args {
				for k := 0; k < size; k++ {
					args[j] = append(args[j], sealedRow(b, bb.key, benchSpan(k))...)
				}
			}
			d := concurrently(b, workers, per, func(w, i int) error {
				_, err := raw.Exec(ctx, rawMany, args[w*per+i]...)
				return err
			})
			ours1 := concurrently(b, workers, per, func(w, i int) error {
				spans := make([]span.Span, size)
				for k := range spans {
					spans[k] = benchSpan(k)
				}
				_, err := bb.ledger.Append(ctx, p, spans...)
				return err
			})
			if round > 0 { // the first round warms both up
				seed, ours, n = seed+d, ours+ours1, n+workers*per*size
			}
		}
		fmt.Printf("BENCH ledger_append_batch100_c8 ours=%.0f baseline=%.0f unit=spans/s better=higher\n",
			float64(n)/ours.Seconds(), float64(n)/seed.Seconds())

		ours, seed, n = 0, 0, 0
		for round := 0; round < 4; round++ {
			const per = 250
			args := make([][]any, workers*per)
			for j := range args {
				args[j] = sealedRow(b, bb.key, benchSpan(j))
			}
			d := concurrently(b, workers, per, func(w, i int) error {
				_, err := raw.Exec(ctx, rawInsert, args[w*per+i]...)
				return err
			})
			ours1 := concurrently(b, workers, per, func(w, i int) error {
				_, err := bb.ledger.Append(ctx, p, benchSpan(i))
				return err
			})
			if round > 0 {
				seed, ours, n = seed+d, ours+ours1, n+workers*per
			}
		}
		fmt.Printf("BENCH ledger_append_single_c8 ours=%.0f baseline=%.0f unit=rows/s better=higher\n",
			float64(n)/ours.Seconds(), float64(n)/seed.Seconds())
	}
}
