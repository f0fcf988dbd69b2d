package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Channel is the NOTIFY channel the insert trigger signals on, once per
// statement. Payloads are "<id>/<seq>" of each row inserted, separated by
// spaces (at most 150 a payload): ids only, so rows of any size can be
// announced.
const Channel = "logline_spans"

// Notice is one NOTIFY from the ledger, or one row a poll found. Gap is set
// (and ID empty) when the listener (re)connected or changed how it learns of
// new rows: notices may have been missed, so a consumer should re-read from
// its cursor (or sweep) instead of trusting notices alone.
type Notice struct {
	ID  string
	Seq int32
	Gap bool
	// Poll says the notice comes from polling the ledger, not from NOTIFY:
	// notifications are off (WithoutNotify) or LISTEN is unavailable. A Gap
	// with Poll starts polling; a Gap without it, listening.
	Poll bool
	// Err, on the Gap that starts polling, is why LISTEN is not used (nil
	// when notifications are off by configuration).
	Err error
}

// Notify configures how Listen learns what committed. The zero value
// LISTENs, and polls while LISTEN is unavailable.
type Notify struct {
	// Off never LISTENs: Listen polls. For connections through a pooler
	// that does not carry LISTEN (PgBouncer in transaction mode).
	Off bool
	// Poll is the polling interval. Default DefaultPoll.
	Poll time.Duration
	// Retry is the longest wait between attempts to LISTEN again while
	// polling because LISTEN failed (attempts start a second apart and
	// double). Default DefaultListenRetry.
	Retry time.Duration
	// Probe bounds how long a new LISTEN connection may take to receive a
	// notification sent to it through the pool; one that does not is not
	// used (a transaction-mode pooler accepts LISTEN and delivers nothing).
	// Default DefaultProbe.
	Probe time.Duration
	// Connect opens the LISTEN connection. Default: a connection with the
	// pool's configuration. (A pool that goes through a pooler can LISTEN
	// on a direct connection to Postgres this way.)
	Connect func(context.Context) (*pgx.Conn, error)
}

// Defaults of Notify.
const (
	DefaultPoll        = time.Second
	DefaultListenRetry = 30 * time.Second
	DefaultProbe       = 5 * time.Second
)

// pollBatch is the most rows one poll announces one by one; more than that
// is announced as a Gap (consumers sweep), so a poll costs the same however
// far behind it is.
const pollBatch = 1000

// WithNotify sets how Listen learns what committed.
func WithNotify(n Notify) Option { return func(l *Ledger) { l.notify = n } }

// WithoutNotify makes Listen poll instead of LISTEN (Notify.Off).
func WithoutNotify() Option { return func(l *Ledger) { l.notify.Off = true } }

func (n Notify) withDefaults() Notify {
	if n.Poll <= 0 {
		n.Poll = DefaultPoll
	}
	if n.Retry <= 0 {
		n.Retry = DefaultListenRetry
	}
	if n.Probe <= 0 {
		n.Probe = DefaultProbe
	}
	return n
}

// Listen delivers notices to fn until ctx ends, then returns nil. It
// LISTENs on a dedicated connection (LISTEN must not sit on a pooled one)
// after checking that the connection really receives notifications; when it
// cannot (Notify.Off, a refused connection or LISTEN, a pooler that swallows
// notifications), it polls the ledger's commit order instead and announces
// what it finds the same way, trying LISTEN again now and then. fn runs on
// the listener's goroutine and should not block for long.
func (l *Ledger) Listen(ctx context.Context, fn func(Notice)) error {
	n := l.notify.withDefaults()
	var conn *pgx.Conn
	var why error
	if !n.Off {
		conn, why = l.listenConn(ctx, n)
	}
	for ctx.Err() == nil {
		if conn != nil {
			fn(Notice{Gap: true})
			err := pump(ctx, conn, fn)
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
			if !sleep(ctx, time.Second) {
				break
			}
			// One attempt at once; polling while it keeps failing.
			if conn, why = l.listenConn(ctx, n); conn != nil {
				continue
			}
			why = fmt.Errorf("lost the LISTEN connection (%v), then: %w", err, why)
		}
		conn = l.poll(ctx, n, why, fn)
	}
	if conn != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
	}
	return nil
}

// pump delivers the connection's notifications until it fails or ctx ends.
func pump(ctx context.Context, conn *pgx.Conn, fn func(Notice)) error {
	for {
		nf, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if nf.Channel != Channel {
			continue
		}
		// One NOTIFY per statement (migrations/009): the rows it inserted,
		// space-separated, in commit order.
		for item := range strings.FieldsSeq(nf.Payload) {
			id, seq, ok := strings.Cut(item, "/")
			s, err := strconv.ParseInt(seq, 10, 32)
			if !ok || err != nil {
				continue // not ours; ignore rather than drop the connection
			}
			fn(Notice{ID: id, Seq: int32(s)})
		}
	}
}

// listenConn opens a connection, LISTENs on Channel and proves it receives
// notifications: it listens on a probe channel of its own too and waits for
// a notification sent there through the pool. A transaction-mode pooler
// runs the LISTEN on some server connection and hands it back, so the probe
// (sent from another client, while this one is idle) never arrives.
func (l *Ledger) listenConn(ctx context.Context, n Notify) (*pgx.Conn, error) {
	connect := n.Connect
	if connect == nil {
		cfg := l.pool.Config().ConnConfig.Copy()
		connect = func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg) }
	}
	conn, err := connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var b [8]byte
	_, _ = rand.Read(b[:])
	probe, token := "logline_probe_"+hex.EncodeToString(b[:]), strconv.FormatInt(time.Now().UnixNano(), 10)
	for _, ch := range []string{Channel, probe} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return nil, fmt.Errorf("LISTEN %s: %w", ch, err)
		}
	}
	if _, err := l.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, probe, token); err != nil {
		return nil, fmt.Errorf("sending the probe notification: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, n.Probe)
	defer cancel()
	for {
		// Notices of Channel that arrive meanwhile are dropped: the Gap
		// that follows a connection covers them.
		nf, err := conn.WaitForNotification(pctx)
		if err != nil {
			if ctx.Err() == nil && pctx.Err() != nil {
				return nil, fmt.Errorf("LISTEN was accepted but a notification sent to it did not arrive within %s (a pooler in transaction mode?)", n.Probe)
			}
			return nil, fmt.Errorf("waiting for the probe notification: %w", err)
		}
		if nf.Channel == probe && nf.Payload == token {
			break
		}
	}
	if _, err := conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{probe}.Sanitize()); err != nil {
		return nil, fmt.Errorf("UNLISTEN %s: %w", probe, err)
	}
	ok = true
	return conn, nil
}

// pollSQL reads the rows after a position in commit order, below the
// horizon (as a forward Query does), so a row that commits late is never
// passed: an index range of ur_idx_cursor from the position, whatever the
// ledger's size.
const pollSQL = `SELECT id::text, seq, tx_id::text AS tx, ord FROM ledger.universal_registry
	WHERE (tx_id, ord) > ($1::text::xid8, $2) AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY tx_id, ord LIMIT $3`

// poll announces what commits, every n.Poll, until a new attempt to LISTEN
// succeeds (its connection is returned) or ctx ends (nil). why is the Err of
// the Gap that opens it.
func (l *Ledger) poll(ctx context.Context, n Notify, why error, fn func(Notice)) *pgx.Conn {
	tick := time.NewTicker(n.Poll)
	defer tick.Stop()
	type attempt struct {
		conn *pgx.Conn
		err  error
	}
	var trying chan attempt // an attempt to LISTEN in flight
	wait := min(time.Second, n.Retry)
	next := time.Now().Add(wait)
	started := false
	var pos Cursor
	for {
		if !started {
			// From the horizon: whatever committed before is the Gap's.
			if c, err := l.Tail(ctx); err == nil {
				pos, started = c, true
				fn(Notice{Gap: true, Poll: true, Err: why})
			}
		} else {
			pos = l.pollOnce(ctx, pos, fn)
		}
		if !n.Off && trying == nil && !time.Now().Before(next) {
			trying = make(chan attempt, 1)
			go func() {
				c, err := l.listenConn(ctx, n)
				trying <- attempt{c, err}
			}()
		}
		select {
		case <-ctx.Done():
			if trying != nil {
				if a := <-trying; a.conn != nil {
					_ = a.conn.Close(context.WithoutCancel(ctx))
				}
			}
			return nil
		case a := <-trying:
			trying = nil
			if a.err == nil {
				return a.conn
			}
			wait = min(2*wait, n.Retry)
			next = time.Now().Add(wait)
		case <-tick.C:
		}
	}
}

// pollOnce announces the rows after pos, or a Gap when there are more than
// a batch, and returns the new position. On an error it keeps pos: the next
// poll reads the same rows.
func (l *Ledger) pollOnce(ctx context.Context, pos Cursor, fn func(Notice)) Cursor {
	b, err := l.batch(System())
	if err != nil {
		return pos
	}
	var found []Notice
	next := pos
	b.Queue(pollSQL, strconv.FormatUint(pos.Tx, 10), pos.Ord, pollBatch).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id, tx string
			var seq int32
			var ord int64
			if err := rows.Scan(&id, &seq, &tx, &ord); err != nil {
				return err
			}
			t, err := strconv.ParseUint(tx, 10, 64)
			if err != nil {
				return err
			}
			found = append(found, Notice{ID: id, Seq: seq, Poll: true})
			next = Cursor{Tx: t, Ord: ord}
		}
		return rows.Err()
	})
	if err := l.send(ctx, b); err != nil {
		return pos
	}
	if len(found) == pollBatch {
		// Too many to name: say so, and go on from the horizon.
		tail, err := l.Tail(ctx)
		if err != nil {
			return pos
		}
		fn(Notice{Gap: true, Poll: true})
		return tail
	}
	for _, nt := range found {
		fn(nt)
	}
	return next
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
