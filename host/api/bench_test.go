package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/seeds"
)

// rawInsert is what a client without the API would send: the same row,
// already sealed, straight into the table as the login user.
const rawInsert = `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
	visibility, status, name, code, language, runtime, input, metadata, curr_hash, signature, public_key)
	VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`

func benchSpan(i int) span.Span {
	return span.Span{EntityType: "function", Who: "alice", Did: "defined", This: "function", Name: fmt.Sprintf("bench-%d", i),
		Status: "active", Language: "javascript", Runtime: "quickjs", Visibility: "tenant",
		Code:     "export default function on(span) { return [] } // a typical small policy body of a few dozen bytes",
		Input:    []byte(`{"n":` + strconv.Itoa(i) + `,"tags":["a","b"],"nested":{"k":"v"}}`),
		Metadata: []byte(`{"schedule":"*/5 * * * *","owner":"alice"}`)}
}

// sealedRow seals s as the API would and returns the raw INSERT args.
func sealedRow(t testing.TB, key *span.Key, p ledger.Principal, s span.Span) []any {
	require.NoError(t, ledger.Fill(p, &s, span.FormatTime(time.Now())))
	require.NoError(t, key.Seal(&s))
	at, _ := span.ParseTime(s.At)
	return []any{s.ID, s.EntityType, s.Who, s.Did, s.This, at, s.OwnerID, s.TenantID, s.Visibility, s.Status,
		s.Name, s.Code, s.Language, s.Runtime, string(s.Input), string(s.Metadata), s.CurrHash, s.Signature, s.PublicKey}
}

var discard = slog.New(slog.DiscardHandler)

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkAppend prints POST /api/spans (one span per request, each its
// own transaction) against raw INSERTs of the same rows, sealed ahead, on
// the same database in the same run: requests per second and p99 latency,
// one client at a time and eight at once. It measures on a durable server
// (fsync on, as production runs: the lines without suffix) and on the
// tests' non-durable one (_nosync), where commits cost almost nothing and
// the API's own overhead shows most. Run with -benchtime=1x.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	srv, err := localpg.Start(ctx, localpg.Config{Durable: true})
	require.NoError(b, err)
	defer srv.Stop() //nolint:errcheck
	_, _, err = ledger.Migrate(ctx, srv.URL("postgres"))
	require.NoError(b, err)
	for range b.N {
		for _, target := range []struct{ suffix, url string }{
			{"", srv.URL("postgres")},
			{"_nosync", testPG.Database(b, "bench")},
		} {
			bb := benchBundle(b, target.url)
			for _, workers := range []int{1, 8} {
				measureAppend(b, bb, workers, 200) // warm connections and caches
				ours, raw, ourLat, rawLat := measureAppend(b, bb, workers, 3000)
				name := "api_append_single"
				if workers > 1 {
					name += fmt.Sprintf("_c%d", workers)
				}
				fmt.Printf("BENCH %s%s ours=%.0f baseline=%.0f unit=req/s better=higher\n", name, target.suffix, ours, raw)
				fmt.Printf("BENCH %s_p99%s ours=%.3f baseline=%.3f unit=ms better=lower\n", name, target.suffix,
					ms(percentile(ourLat, 0.99)), ms(percentile(rawLat, 0.99)))
			}
		}
	}
}

// BenchmarkAppendEngineOn prints the API's append rate (POST /api/spans,
// eight concurrent writers, one span per request, as BenchmarkAppend) with
// the engine running in the same process over the stock kernels and
// policies, against the same API and load on a database seeded alike that
// no engine runs on (logline serve --no-engine), in the same run: rounds of
// a few seconds of steady load, interleaved so drift hits both alike.
// After each round with the engine, it is let finish what the round gave
// it (every stock policy's cursor past the round's last span), so none of
// its work is charged to the other side. The tests' non-durable server:
// commits cost little, so what the engine takes from the API's CPU shows
// most. Both databases hold a history of 100,000 spans of another tenant
// (seededBundle). Run with -benchtime=1x.
func BenchmarkAppendEngineOn(b *testing.B) {
	const workers, rounds, length = 8, 6, 5 * time.Second
	for range b.N {
		on, off := seededBundle(b), seededBundle(b)
		runEngine(b, on.ledger)
		// round posts from every worker until d has passed, and returns
		// how many spans it appended and how long that took.
		round := func(bb *bundle, d time.Duration) (int, time.Duration) {
			tok := bb.token(b, "acme", "alice")
			bodies := make([][]byte, 1000)
			for i := range bodies {
				body, err := json.Marshal(benchSpan(i))
				require.NoError(b, err)
				bodies[i] = body
			}
			var sent atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for i := 0; time.Since(start) < d; i++ {
						status, err := postSpan(bb, tok, bodies[i%len(bodies)])
						if err != nil {
							b.Error(err)
							return
						}
						if status != http.StatusCreated {
							b.Errorf("status %d", status)
							return
						}
						sent.Add(1)
					}
				})
			}
			wg.Wait()
			return int(sent.Load()), time.Since(start)
		}
		// Warm both (and let the engine compile its kernels).
		round(on, time.Second)
		judgedAll(b, on)
		round(off, time.Second)
		var onN, offN int
		var onD, offD time.Duration
		for r := range rounds {
			for _, engine := range []bool{r%2 == 0, r%2 != 0} {
				if engine {
					n, d := round(on, length)
					onN, onD = onN+n, onD+d
					judgedAll(b, on)
				} else {
					n, d := round(off, length)
					offN, offD = offN+n, offD+d
				}
			}
		}
		fmt.Printf("BENCH api_append_engine_on ours=%.0f baseline=%.0f unit=req/s better=higher\n",
			float64(onN)/onD.Seconds(), float64(offN)/offD.Seconds())
	}
}

// seededBundle is a server on a database of its own, seeded as `logline
// dev` seeds (the stock kernels and policies signed by an operator key the
// manifest trusts; the server's node key is another).
func seededBundle(b *testing.B) *bundle {
	bb := setup(b, func(c *Config) { c.Logger = discard })
	operatorKey, err := span.GenerateKey()
	require.NoError(b, err)
	_, _, err = seeds.Load(context.Background(), bb.ledger, ledger.User("logline", "operator"), operatorKey)
	require.NoError(b, err)
	// A history of 100,000 spans of another tenant, analyzed, as a ledger
	// in service has: on an empty one the planner's statistics lag the
	// growing tables, and the engine's lookups in ledger.heads by id (one
	// per notification batch) turned into sequential scans.
	ctx := context.Background()
	_, err = bb.admin.Exec(ctx, `
		INSERT INTO ledger.universal_registry (id, seq, entity_type, who, "this", at, owner_id, tenant_id, visibility, status, curr_hash, input)
		SELECT gen_random_uuid(), 0, (ARRAY['execution','request','metric','note'])[1 + g % 4], 'filler', 'fill', now(),
		       'u' || (g % 100), 'archive', 'private', 'complete', encode(sha256(g::text::bytea), 'hex'), to_jsonb(g)
		FROM generate_series(1, 100000) g`)
	require.NoError(b, err)
	_, err = bb.admin.Exec(ctx, `ANALYZE ledger.universal_registry; ANALYZE ledger.heads`)
	require.NoError(b, err)
	bb.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return bb
}

// judgedAll waits until the cursor of every global policy in tenant acme
// is at or past acme's latest function span (the benchmark's).
func judgedAll(b *testing.B, bb *bundle) {
	ctx := context.Background()
	var globals int
	require.NoError(b, bb.admin.QueryRow(ctx, `SELECT jsonb_array_length(metadata->'global_policies')
		FROM ledger.universal_registry WHERE id = $1 ORDER BY seq DESC LIMIT 1`, stage0.ManifestID).Scan(&globals))
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var n int
		require.NoError(b, bb.admin.QueryRow(ctx, `SELECT count(*) FROM ledger.heads h
			JOIN ledger.universal_registry c ON c.id = h.id AND c.seq = h.seq
			WHERE h.tenant_id = 'acme' AND h.entity_type = 'policy_cursor'
			  AND (split_part(c.metadata->>'cursor', '.', 1)::xid8, split_part(c.metadata->>'cursor', '.', 2)::bigint) >=
			      (SELECT tx_id, ord FROM ledger.universal_registry WHERE tenant_id = 'acme' AND entity_type = 'function'
			       ORDER BY tx_id DESC, ord DESC LIMIT 1)`).Scan(&n))
		if n >= globals {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("after 5 minutes, %d of %d policy cursors past the last span", n, globals)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type appendBundle struct {
	*bundle
	admin *pgxpool.Pool
}

func benchBundle(b *testing.B, dbURL string) *appendBundle {
	ctx := context.Background()
	key, err := span.GenerateKey()
	require.NoError(b, err)
	l, err := ledger.Open(ctx, dbURL, ledger.WithKey(key))
	require.NoError(b, err)
	b.Cleanup(l.Close)
	// As many connections as the ledger's pool may use: the raw baseline
	// at 8 clients must not queue on a pool of 4.
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(b, err)
	cfg.MaxConns = ledger.DefaultMaxConns
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	b.Cleanup(admin.Close)
	bb := serve(b, Config{Ledger: l, Key: key, Logger: discard})
	bb.key, bb.ledger = key, l
	bb.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return &appendBundle{bundle: bb, admin: admin}
}

// measureAppend sends n spans with workers concurrent clients through the
// API and n through raw INSERTs, interleaved in rounds so drift hits both
// alike, and returns both rates and every latency.
func measureAppend(b *testing.B, bb *appendBundle, workers, n int) (ours, raw float64, ourLat, rawLat []time.Duration) {
	ctx := context.Background()
	p := ledger.User("acme", "alice")
	tok := bb.token(b, p.Tenant, p.User)
	const rounds = 5
	per := n / rounds / workers
	var oursD, rawD time.Duration
	var mu sync.Mutex
	run := func(work func(w, i int)) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for w := range workers {
			wg.Go(func() {
				for i := range per {
					work(w, i)
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	for range rounds {
		rows := make([][][]any, workers)
		bodies := make([][][]byte, workers)
		for w := range workers {
			for i := range per {
				rows[w] = append(rows[w], sealedRow(b, bb.key, p, benchSpan(i)))
				body, err := json.Marshal(benchSpan(i))
				require.NoError(b, err)
				bodies[w] = append(bodies[w], body)
			}
		}
		rawD += run(func(w, i int) {
			t0 := time.Now()
			_, err := bb.admin.Exec(ctx, rawInsert, rows[w][i]...)
			d := time.Since(t0)
			if err != nil {
				b.Error(err)
			}
			mu.Lock()
			rawLat = append(rawLat, d)
			mu.Unlock()
		})
		d, lat := postSpans(b, bb.bundle, tok, bodies)
		oursD += d
		ourLat = append(ourLat, lat...)
	}
	total := float64(per * workers * rounds)
	return total / oursD.Seconds(), total / rawD.Seconds(), ourLat, rawLat
}

// postSpans sends bodies[w] one by one from worker w, the workers at
// once, each body a POST /api/spans of its own, and returns how long all
// took and every request's latency.
func postSpans(b *testing.B, bb *bundle, tok string, bodies [][][]byte) (time.Duration, []time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for w := range bodies {
		wg.Go(func() {
			for _, body := range bodies[w] {
				t0 := time.Now()
				status, err := postSpan(bb, tok, body)
				if err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t0)
				if status != http.StatusCreated {
					b.Errorf("status %d", status)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return time.Since(start), lat
}

// postSpan sends body as one POST /api/spans with tok and returns the
// status, the answer read and discarded (so the connection is reused).
func postSpan(bb *bundle, tok string, body []byte) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, bb.url+"/api/spans", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := bb.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// BenchmarkStreamLatency prints the commit-to-client latency of the stream:
// spans committed at 200 per second for 10 seconds, each received by 500
// subscribers (of 5 principals), p50 and p99 over every delivery, against
// the floor in the same run — Postgres delivering the NOTIFY of the same
// commits to one bare LISTEN connection. The clock starts when Append
// returns (the commit is acknowledged).
func BenchmarkStreamLatency(b *testing.B) {
	const (
		subscribers = 500
		users       = 5
		rate        = 200
		duration    = 10 * time.Second
	)
	for range b.N {
		ctx := context.Background()
		dbURL := testPG.Database(b, "bench")
		key, err := span.GenerateKey()
		require.NoError(b, err)
		l, err := ledger.Open(ctx, dbURL, ledger.WithKey(key))
		require.NoError(b, err)
		bb := serve(b, Config{Ledger: l, Key: key, Logger: discard})
		bb.key = key
		bb.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: subscribers}}
		n := int(duration.Seconds()) * rate

		// Arrivals are matched with commits at the end: an event can reach a
		// client before Append has returned to the writer.
		type arrival struct {
			key string // span name (stream) or id (LISTEN)
			at  time.Time
		}
		var mu sync.Mutex
		committed := make(map[string]time.Time, n) // span name -> when Append returned
		names := make(map[string]string, n)        // id -> name
		var arrivals, notices []arrival

		// The floor: one bare LISTEN connection.
		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(b, err)
		_, err = conn.Exec(ctx, "LISTEN "+ledger.Channel)
		require.NoError(b, err)
		var lwg sync.WaitGroup
		lwg.Go(func() {
			for range n {
				nt, err := conn.WaitForNotification(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				id, _, _ := bytes.Cut([]byte(nt.Payload), []byte("/"))
				notices = append(notices, arrival{string(id), time.Now()})
			}
		})

		var wg, ready sync.WaitGroup
		ready.Add(subscribers)
		errs := make(chan error, subscribers)
		for i := range subscribers {
			tok := bb.token(b, "acme", fmt.Sprintf("u%d", i%users))
			wg.Go(func() {
				mine := make([]arrival, 0, n)
				if err := measureStream(bb, tok, n, ready.Done, func(name string, at time.Time) { mine = append(mine, arrival{name, at}) }); err != nil {
					errs <- err
				}
				mu.Lock()
				arrivals = append(arrivals, mine...)
				mu.Unlock()
			})
		}
		ready.Wait()

		tick := time.NewTicker(time.Second / rate)
		for i := range n {
			<-tick.C
			name := "e" + strconv.Itoa(i)
			out, err := l.Append(ctx, ledger.User("acme", fmt.Sprintf("u%d", i%users)), note(name, "tenant"))
			now := time.Now()
			require.NoError(b, err)
			mu.Lock()
			committed[name] = now
			names[out[0].ID] = name
			mu.Unlock()
		}
		tick.Stop()
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(b, err)
		}
		lwg.Wait()
		conn.Close(ctx)
		require.Len(b, arrivals, n*subscribers, "every subscriber received every span")
		var ours, floor []time.Duration
		for _, a := range arrivals {
			ours = append(ours, a.at.Sub(committed[a.key]))
		}
		for _, a := range notices {
			floor = append(floor, a.at.Sub(committed[names[a.key]]))
		}
		fmt.Printf("BENCH api_stream_latency_p50 ours=%.3f baseline=%.3f unit=ms better=lower\n", ms(percentile(ours, 0.5)), ms(percentile(floor, 0.5)))
		fmt.Printf("BENCH api_stream_latency_p99 ours=%.3f baseline=%.3f unit=ms better=lower\n", ms(percentile(ours, 0.99)), ms(percentile(floor, 0.99)))
		l.Close()
	}
}

// measureStream follows a stream until n span events arrived, reporting
// each span's name and arrival time.
func measureStream(bb *bundle, tok string, n int, ready func(), got func(name string, at time.Time)) error {
	req, _ := http.NewRequest(http.MethodGet, bb.url+"/api/timeline/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := bb.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	nameKey := []byte(`"name":"`)
	for count := 0; count < n; {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("after %d events: %w", count, err)
		}
		switch {
		case bytes.HasPrefix(line, []byte("id: ")) && ready != nil:
			ready()
			ready = nil
		case bytes.HasPrefix(line, []byte("data: ")):
			at := time.Now()
			i := bytes.Index(line, nameKey)
			if i < 0 {
				return fmt.Errorf("no name in %.80s", line)
			}
			rest := line[i+len(nameKey):]
			got(string(rest[:bytes.IndexByte(rest, '"')]), at)
			count++
		}
	}
	return nil
}
