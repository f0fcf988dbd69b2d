package ledger

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
)

// Channel is the NOTIFY channel the insert trigger signals on. Payloads are
// "<id>/<seq>": ids only, so rows of any size can be announced.
const Channel = "logline_spans"

// Notice is one NOTIFY from the ledger. Gap is set (and ID empty) when the
// listener (re)connected: notices may have been missed, so a consumer should
// re-read from its cursor instead of trusting notices alone.
type Notice struct {
	ID  string
	Seq int32
	Gap bool
}

// Listen delivers notices to fn until ctx ends, reconnecting on its own
// dedicated connection (LISTEN must not sit on a pooled one). fn runs on the
// listener's goroutine and should not block for long.
func (l *Ledger) Listen(ctx context.Context, fn func(Notice)) error {
	cfg := l.pool.Config().ConnConfig.Copy()
	ln := &pgxlisten.Listener{
		Connect:        func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg) },
		ReconnectDelay: time.Second,
	}
	ln.Handle(Channel, handler(fn))
	err := ln.Listen(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type handler func(Notice)

func (h handler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	id, seq, ok := strings.Cut(n.Payload, "/")
	s, err := strconv.ParseInt(seq, 10, 32)
	if !ok || err != nil {
		return nil // not ours; ignore rather than drop the connection
	}
	h(Notice{ID: id, Seq: int32(s)})
	return nil
}

// HandleBacklog runs after every (re)connect, before notices flow.
func (h handler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h(Notice{Gap: true})
	return nil
}
