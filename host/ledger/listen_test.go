package ledger_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// listenWait bounds a wait for a notice: generous, for a loaded machine
// under -race (polls here are 100 ms apart).
const listenWait = 30 * time.Second

// listener runs l.Listen until the test ends and hands out its notices.
type listener struct {
	notices chan ledger.Notice
	done    chan error
}

func listen(t *testing.T, l *ledger.Ledger) *listener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln := &listener{notices: make(chan ledger.Notice, 10000), done: make(chan error, 1)}
	go func() { ln.done <- l.Listen(ctx, func(n ledger.Notice) { ln.notices <- n }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ln.done:
			require.NoError(t, err, "Listen ends with nil when its context does")
		case <-time.After(listenWait):
			t.Error("Listen did not return after its context ended")
		}
	})
	return ln
}

func (ln *listener) next(t *testing.T) ledger.Notice {
	t.Helper()
	select {
	case n := <-ln.notices:
		return n
	case <-time.After(listenWait):
		t.Fatalf("no notice within %s", listenWait)
	}
	return ledger.Notice{}
}

// until skips notices until one satisfies ok, and returns it.
func (ln *listener) until(t *testing.T, what string, ok func(ledger.Notice) bool) ledger.Notice {
	t.Helper()
	deadline := time.After(listenWait)
	for {
		select {
		case n := <-ln.notices:
			if ok(n) {
				return n
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, listenWait)
		}
	}
}

// quiet checks nothing is announced for a while (several polls).
func (ln *listener) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case n := <-ln.notices:
		t.Fatalf("unexpected notice %+v", n)
	case <-time.After(d):
	}
}

// With notifications off, Listen polls: a Gap saying so, then one notice
// per new row in commit order, each marked as polled. A row whose
// transaction started earlier and commits later is announced before the
// rows behind it, never skipped.
func TestListenWithoutNotifyPolls(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	l := ledger.New(b.ledger.Pool(), ledger.WithKey(b.key), ledger.WithNotify(ledger.Notify{Off: true, Poll: 100 * time.Millisecond}))
	ln := listen(t, l)
	require.Equal(t, ledger.Notice{Gap: true, Poll: true}, ln.next(t), "polling from the start, and no error: it is configured")

	p := ledger.User("A", "alice")
	out, err := l.Append(ctx, p, fn("one"), fn("two"))
	require.NoError(t, err)
	require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0, Poll: true}, ln.next(t))
	require.Equal(t, ledger.Notice{ID: out[1].ID, Seq: 0, Poll: true}, ln.next(t))
	v := out[0]
	v.Seq, v.PrevHash, v.At, v.CurrHash, v.Signature, v.PublicKey = 1, v.CurrHash, "", "", "", ""
	_, err = l.Append(ctx, p, v)
	require.NoError(t, err)
	require.Equal(t, ledger.Notice{ID: v.ID, Seq: 1, Poll: true}, ln.next(t))

	// A late commit: a transaction holding an older xid inserts, another
	// row commits meanwhile; the poll holds that row back until the older
	// transaction ends, then announces both in commit order.
	late := fn("late")
	require.NoError(t, ledger.Fill(p, &late, span.FormatTime(time.Now())))
	require.NoError(t, b.key.Seal(&late))
	tx, err := b.admin.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	early, err := l.Append(ctx, p, fn("early"))
	require.NoError(t, err)
	ln.quiet(t, time.Second) // ten polls: "early" waits for the older transaction
	at, _ := span.ParseTime(late.At)
	_, err = tx.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
		visibility, status, name, code, language, runtime, curr_hash, signature, public_key)
		VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		late.ID, late.EntityType, late.Who, late.Did, late.This, at, late.OwnerID, late.TenantID, late.Visibility,
		late.Status, late.Name, late.Code, late.Language, late.Runtime, late.CurrHash, late.Signature, late.PublicKey)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, ledger.Notice{ID: late.ID, Seq: 0, Poll: true}, ln.until(t, "the late row", func(n ledger.Notice) bool { return !n.Gap }))
	require.Equal(t, ledger.Notice{ID: early[0].ID, Seq: 0, Poll: true}, ln.next(t))
}

// More rows than a poll names are announced as one Gap (consumers sweep),
// and polling goes on from the horizon: a poll's cost does not grow with
// how much was written since the last.
func TestListenPollOverflowIsAGap(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	l := ledger.New(b.ledger.Pool(), ledger.WithNotify(ledger.Notify{Off: true, Poll: 100 * time.Millisecond}))
	ln := listen(t, l)
	require.True(t, ln.next(t).Gap)
	bulkInsert(t, b, ledger.PollBatch+10)
	n := ln.next(t)
	require.Equal(t, ledger.Notice{Gap: true, Poll: true}, n, "a batch too many to name")
	out, err := l.Append(ctx, ledger.User("A", "alice"), fn("after"))
	require.NoError(t, err)
	require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0, Poll: true}, ln.next(t), "then row by row again")
}

// bulkInsert adds n note rows straight into the table as the superuser,
// without the triggers (no NOTIFY, no heads), fast.
func bulkInsert(t testing.TB, b *testBundle, n int) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.admin.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, "this", at, owner_id, tenant_id, visibility, curr_hash, tx_id)
		SELECT gen_random_uuid(), 0, 'note', 'bulk', 'note', now(), 'o', 't' || (g % 50), 'tenant',
		       encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'), pg_current_xact_id()
		FROM generate_series(1, $1) g`, n)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	b.settle(t)
}

// The poll is an index range of ur_idx_cursor from its position, under
// RLS as the system principal, with custom and generic plans alike: no
// sort, no scan of history.
func TestPollIsAnIndexRange(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	bulkInsert(t, b, 100000)
	_, err := b.admin.Exec(ctx, `ANALYZE ledger.universal_registry`)
	require.NoError(t, err)
	var tx string
	var first, last int64
	require.NoError(t, b.admin.QueryRow(ctx, `SELECT tx_id::text, min(ord), max(ord) FROM ledger.universal_registry GROUP BY 1`).Scan(&tx, &first, &last))

	type node struct {
		Type     string `json:"Node Type"`
		Index    string `json:"Index Name"`
		Cond     string `json:"Index Cond"`
		Hit      int    `json:"Shared Hit Blocks"`
		Read     int    `json:"Shared Read Blocks"`
		Rows     int    `json:"Actual Rows"`
		Children []node `json:"Plans"`
	}
	var walk func(n node, f func(node))
	walk = func(n node, f func(node)) {
		f(n)
		for _, c := range n.Children {
			walk(c, f)
		}
	}
	check := func(what string, plan []byte, wantRows int) {
		t.Helper()
		var doc []struct {
			Plan node `json:"Plan"`
		}
		require.NoError(t, json.Unmarshal(plan, &doc), "%s", plan)
		var scans []node
		walk(doc[0].Plan, func(n node) {
			require.NotContains(t, []string{"Sort", "Seq Scan", "Bitmap Heap Scan"}, n.Type, "%s: %s", what, plan)
			if n.Type == "Index Scan" {
				scans = append(scans, n)
			}
		})
		require.Len(t, scans, 1, "%s: %s", what, plan)
		s := scans[0]
		require.Equal(t, "ur_idx_cursor", s.Index, "%s: %s", what, plan)
		require.Contains(t, s.Cond, "ROW(tx_id, ord) >", "%s: the position is an index condition: %s", what, plan)
		require.Contains(t, s.Cond, "pg_snapshot_xmin", "%s: and so is the horizon: %s", what, plan)
		if wantRows >= 0 {
			require.Equal(t, wantRows, s.Rows, what)
			// 100,000 rows fill ~2,000 pages; a page of the poll touches
			// its own rows' pages and a few index pages.
			require.Less(t, s.Hit+s.Read, 200, "%s reads a few pages, not the table: %s", what, plan)
		}
	}
	err = b.asRole(ctx, ledger.System(), func(q pgx.Tx) error {
		for _, c := range []struct {
			what string
			ord  int64
			rows int
		}{
			{"near the end", last - 10, 10},
			{"at the end", last, 0},
			{"far behind", first, ledger.PollBatch},
		} {
			var plan []byte
			if err := q.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+ledger.PollSQL, tx, c.ord, ledger.PollBatch).Scan(&plan); err != nil {
				return err
			}
			check(c.what, plan, c.rows)
		}
		// A prepared statement's generic plan (pgx prepares statements;
		// Postgres may switch to the generic plan after five runs).
		if _, err := q.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `PREPARE poll(text, bigint, int) AS `+ledger.PollSQL); err != nil {
			return err
		}
		var plan []byte
		if err := q.QueryRow(ctx, `EXPLAIN (FORMAT JSON) EXECUTE poll('`+tx+`', `+strconv.FormatInt(last-10, 10)+`, `+strconv.Itoa(ledger.PollBatch)+`)`).Scan(&plan); err != nil {
			return err
		}
		check("generic plan", plan, -1)
		_, err := q.Exec(ctx, `DEALLOCATE poll`)
		return err
	})
	require.NoError(t, err)
}

// When the LISTEN connection cannot be had — the server refuses the
// connection, or refuses LISTEN on it — Listen polls, says why on the Gap
// that starts polling, keeps trying LISTEN, and goes back to it once it
// works.
func TestListenFallsBackToPolling(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, why string
		broken    func(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error)
	}{
		{"connection refused", "connecting", func(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
			return nil, errors.New("connection refused (simulated)")
		}},
		// A real refusal by the server: the connection is in an aborted
		// transaction, so LISTEN fails with SQLSTATE 25P02.
		{"LISTEN refused", "LISTEN", func(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return nil, err
			}
			_, _ = conn.Exec(ctx, `BEGIN`)
			_, _ = conn.Exec(ctx, `SELECT 1/0`)
			return conn, nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b, ctx := setup(t), ctxT(t)
			cfg := b.ledger.Pool().Config().ConnConfig
			var broken atomic.Bool
			var attempts atomic.Int32
			broken.Store(true)
			l := ledger.New(b.ledger.Pool(), ledger.WithNotify(ledger.Notify{Poll: 100 * time.Millisecond, Retry: 200 * time.Millisecond,
				Connect: func(ctx context.Context) (*pgx.Conn, error) {
					attempts.Add(1)
					if broken.Load() {
						return c.broken(ctx, cfg.Copy())
					}
					return pgx.ConnectConfig(ctx, cfg.Copy())
				}}))
			ln := listen(t, l)
			n := ln.next(t)
			require.True(t, n.Gap && n.Poll, "%+v", n)
			require.ErrorContains(t, n.Err, c.why)

			p := ledger.User("A", "alice")
			out, err := l.Append(ctx, p, fn("polled"))
			require.NoError(t, err)
			require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0, Poll: true}, ln.next(t))
			// It keeps trying, a while apart (not every poll), and says
			// nothing more meanwhile.
			for attempts.Load() < 3 {
				ln.quiet(t, 100*time.Millisecond)
			}

			broken.Store(false)
			require.Equal(t, ledger.Notice{Gap: true}, ln.until(t, "a Gap that says it listens", func(n ledger.Notice) bool { return n.Gap }))
			out, err = l.Append(ctx, p, fn("notified"))
			require.NoError(t, err)
			require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0}, ln.next(t), "from NOTIFY again")
		})
	}
}

// A connection through a transaction-mode pooler accepts LISTEN and never
// delivers a notification. Listen's probe finds that out and it polls.
// Simulated by a connection that drops every NotificationResponse the
// server sends it.
func TestListenProbeCatchesSwallowedNotifications(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	cfg := b.ledger.Pool().Config().ConnConfig.Copy()
	cfg.TLSConfig, cfg.Fallbacks = nil, nil // the filter reads plain protocol
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &dropNotifications{Conn: c}, nil
	}
	l := ledger.New(b.ledger.Pool(), ledger.WithNotify(ledger.Notify{Poll: 100 * time.Millisecond, Probe: time.Second,
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg) }}))
	ln := listen(t, l)
	n := ln.next(t)
	require.True(t, n.Gap && n.Poll, "%+v", n)
	require.ErrorContains(t, n.Err, "did not arrive")
	out, err := l.Append(ctx, ledger.User("A", "alice"), fn("polled"))
	require.NoError(t, err)
	require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0, Poll: true}, ln.next(t))
}

// dropNotifications passes the server's messages on, except
// NotificationResponse ('A').
type dropNotifications struct {
	net.Conn
	in, out []byte
	err     error
}

func (c *dropNotifications) Read(p []byte) (int, error) {
	buf := make([]byte, 32<<10)
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		n, err := c.Conn.Read(buf)
		c.in = append(c.in, buf[:n]...)
		c.err = err
		for len(c.in) >= 5 {
			size := 1 + int(binary.BigEndian.Uint32(c.in[1:5]))
			if len(c.in) < size {
				break
			}
			if c.in[0] != 'A' {
				c.out = append(c.out, c.in[:size]...)
			}
			c.in = c.in[size:]
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}
