package api

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
)

// subscriber is one SSE client: a queue the hub fills (without ever
// blocking) and the client's handler drains onto the connection. A client
// that leaves more than its buffer unread is dropped; the server and the
// other clients carry on.
type subscriber struct {
	limit  int
	signal chan struct{} // something was queued, or s was dropped; buffered 1
	kill   func()        // unblocks a write in progress

	mu    sync.Mutex
	queue []*event
	// unread counts the bytes of queued events and of taken events not yet
	// written: a batch the handler took is not read by the client until
	// its write returns, and a write blocked on a client that reads
	// nothing must count, or the queue looks empty while the client is
	// megabytes behind.
	unread  int
	last    ledger.Cursor // the last event queued or sent, or passed over
	dropped bool
	armed   time.Time // when the write deadline was last set (arm)
	// want selects the events this client asked for (?entity_type=,
	// include=, …): a group's events are its principal's, and each
	// subscriber keeps its own.
	want ledger.Filter
}

func (s *subscriber) deliver(evs []*event) { s.push(evs, true) }

// push queues the events after s.last. Events are shared by every
// subscriber of the group, so a queue holds pointers, not copies.
func (s *subscriber) push(evs []*event, enforce bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropped {
		return
	}
	behind := s.unread > 0
	n := 0
	for _, ev := range evs {
		if !before(s.last, ev.cur) {
			continue
		}
		if !s.want.Match(ev.span) {
			s.last = ev.cur
			continue
		}
		s.queue = append(s.queue, ev)
		s.unread += len(ev.wire)
		s.last = ev.cur
		n++
	}
	// Decided after adding: the push that takes the client past its limit
	// is the one that drops it, as there may be no next push to notice.
	// Slow means behind on what came before: a burst that finds the client
	// caught up is never held against it (one fetch may exceed the buffer),
	// and a client that then never reads it ends at the write deadline.
	if enforce && behind && s.unread > s.limit {
		s.dropped = true
		s.queue = nil
		s.kill() // under mu, so the writer cannot push the deadline back out
		n = 1    // wake the writer: it finds the queue empty and s dropped
	}
	if n > 0 {
		select {
		case s.signal <- struct{}{}:
		default:
		}
	}
}

// take hands the queue to the writer; its bytes stay unread until wrote.
func (s *subscriber) take() []*event {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// wrote records that n bytes of taken events went onto the connection.
func (s *subscriber) wrote(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unread -= n
}

// arm sets the deadline for the next writes unless s was dropped. It
// moves the deadline only once a quarter of timeout has passed since it
// last did: every write then has at least 3/4 of timeout, and a busy
// stream does not reset a timer per event (4% of the fan-out's CPU with
// 500 subscribers, issue 15).
func (s *subscriber) arm(rc *http.ResponseController, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropped {
		return false
	}
	if now := time.Now(); now.Sub(s.armed) >= timeout/4 {
		_ = rc.SetWriteDeadline(now.Add(timeout))
		s.armed = now
	}
	return true
}

func (s *Server) stream(c echo.Context) error { return s.streamAs(c, nil) }

// streamAs serves a stream whose events render writes (nil: ev.wire, the
// span as JSON). render sees every event the client selected; an empty
// result sends nothing for it. Buffer accounting stays in ev.wire's bytes,
// a measure shared by every subscriber of the group.
func (s *Server) streamAs(c echo.Context, render func(*event) []byte) error {
	p := principal(c)
	// One context ends the stream, whether the client or the server
	// (hub.close) ends it: the writer's loop waits on three channels.
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	defer context.AfterFunc(s.hub.ctx, cancel)()
	want, err := selection(c)
	if err != nil {
		return err
	}
	var from *ledger.Cursor
	for _, src := range []struct{ field, v string }{
		// The header wins: a browser reconnects to the same URL (with the
		// cursor it first asked for) plus Last-Event-ID.
		{"cursor", c.QueryParam("cursor")}, {"Last-Event-ID", c.Request().Header.Get("Last-Event-ID")},
	} {
		if src.v == "" {
			continue
		}
		cur, err := ledger.ParseCursor(src.v)
		if err != nil {
			return fail(codeMalformed, src.field, "%q is not a cursor this API returned", src.v)
		}
		from = &cur
	}

	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 32<<10)
	sub := &subscriber{limit: s.cfg.StreamBuffer, signal: make(chan struct{}, 1),
		kill: func() { _ = rc.SetWriteDeadline(time.Now()) }, want: want}
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	// send writes evs; queued says they came through sub's queue, so
	// their bytes leave its unread count as they are written.
	send := func(evs []*event, queued bool) error {
		if !sub.arm(rc, s.cfg.StreamWriteTimeout) {
			return http.ErrHandlerTimeout
		}
		n := 0 // bytes of evs written, in ev.wire's measure
		if queued {
			defer func() { sub.wrote(n) }()
		}
		for _, ev := range evs {
			b := ev.wire
			if render != nil {
				b = render(ev)
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
			n += len(ev.wire)
		}
		s.m.events.Add(float64(len(evs)))
		return flush()
	}
	// ended counts a stream that ended on a failed write as a dropped slow
	// client when it was dropped for its buffer, or when the write ran
	// into its deadline (a client that took nothing for that long).
	ended := func(err error) error {
		if isDropped(sub) || errors.Is(err, os.ErrDeadlineExceeded) {
			s.m.dropped.Inc()
		}
		return nil
	}
	s.m.subscribers.Inc()
	defer s.m.subscribers.Dec()

	sub.arm(rc, s.cfg.StreamWriteTimeout)
	_, _ = bw.WriteString("retry: 2000\n\n")
	var g *group
	if from == nil {
		var pos ledger.Cursor
		var err error
		if g, pos, err = s.hub.joinAt(ctx, p, sub); err != nil {
			return nil
		}
		// An id without data: the client's Last-Event-ID becomes the start,
		// so a reconnect before any event still misses nothing.
		_, _ = bw.WriteString("id: " + cursorID(pos) + "\n\n")
		if err := flush(); err != nil {
			s.hub.leave(g, sub)
			return ended(err)
		}
	} else {
		// Replay up to the horizon straight onto the connection (a long
		// replay needs no buffer), then join the live group.
		cur := *from
		for {
			f := want
			f.After, f.Limit = cur, fetchLimit
			pg, err := s.l.Query(ctx, p, f)
			if err != nil {
				s.log.Warn("stream: replay failed", "principal", p.String(), "err", err)
				return nil
			}
			evs, err := encodeEvents(pg.Items)
			if err != nil {
				return nil
			}
			if err := send(evs, false); err != nil {
				return ended(err)
			}
			cur = pg.Next
			if len(pg.Items) < fetchLimit {
				break
			}
		}
		if err := flush(); err != nil {
			return ended(err)
		}
		sub.last = cur
		var err error
		if g, err = s.hub.joinAfter(ctx, p, sub, want, cur, func(evs []*event) { sub.push(evs, false) }); err != nil {
			return nil
		}
	}
	defer s.hub.leave(g, sub)

	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-sub.signal:
			evs := sub.take()
			if evs == nil && isDropped(sub) {
				s.m.dropped.Inc()
				return nil
			}
			if err := send(evs, true); err != nil {
				return ended(err)
			}
		case <-hb.C:
			if !sub.arm(rc, s.cfg.StreamWriteTimeout) {
				continue // gone is closed; the next pass returns
			}
			_, err := bw.WriteString(": ping\n\n")
			if err == nil {
				err = flush()
			}
			if err != nil {
				return ended(err)
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func isDropped(s *subscriber) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}
