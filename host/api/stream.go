package api

import (
	"bufio"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
)

// writeTimeout bounds one write to an SSE client; a client that reads
// nothing for that long is gone.
const writeTimeout = 60 * time.Second

// subscriber is one SSE client: a queue the hub fills (without ever
// blocking) and the client's handler drains onto the connection. A client
// that lets more than its buffer pile up is dropped; the server and the
// other clients carry on.
type subscriber struct {
	limit  int
	signal chan struct{} // something was queued; buffered 1
	gone   chan struct{} // closed when dropped
	kill   func()        // unblocks a write in progress

	mu      sync.Mutex
	queue   []*event
	queued  int           // bytes in queue
	last    ledger.Cursor // the last event queued or sent
	dropped bool
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
	// Slow means the client has not taken what came before; a burst that
	// arrives at once (one fetch) is never held against it. Events are
	// shared, so the burst costs one pointer per event here.
	if enforce && s.queued > s.limit {
		s.dropped = true
		s.queue = nil
		close(s.gone)
		s.kill() // under mu, so the writer cannot push the deadline back out
		return
	}
	n := 0
	for _, ev := range evs {
		if !before(s.last, ev.cur) {
			continue
		}
		s.queue = append(s.queue, ev)
		s.queued += len(ev.wire)
		s.last = ev.cur
		n++
	}
	if n > 0 {
		select {
		case s.signal <- struct{}{}:
		default:
		}
	}
}

func (s *subscriber) take() []*event {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue, s.queued = nil, 0
	return q
}

// arm sets the deadline for the next writes unless s was dropped.
func (s *subscriber) arm(rc *http.ResponseController) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropped {
		return false
	}
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return true
}

func (s *Server) stream(c echo.Context) error {
	p := principal(c)
	ctx := c.Request().Context()
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
	sub := &subscriber{limit: s.cfg.StreamBuffer, signal: make(chan struct{}, 1), gone: make(chan struct{}),
		kill: func() { _ = rc.SetWriteDeadline(time.Now()) }}
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	send := func(evs []*event) error {
		if !sub.arm(rc) {
			return http.ErrHandlerTimeout
		}
		for _, ev := range evs {
			if _, err := bw.Write(ev.wire); err != nil {
				return err
			}
		}
		s.m.events.Add(float64(len(evs)))
		return flush()
	}
	s.m.subscribers.Inc()
	defer s.m.subscribers.Dec()

	sub.arm(rc)
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
		if flush() != nil {
			s.hub.leave(g, sub)
			return nil
		}
	} else {
		// Replay up to the horizon straight onto the connection (a long
		// replay needs no buffer), then join the live group.
		cur := *from
		for {
			pg, err := s.l.Query(ctx, p, ledger.Filter{After: cur, Limit: fetchLimit})
			if err != nil {
				s.log.Warn("stream: replay failed", "principal", p.String(), "err", err)
				return nil
			}
			evs, err := encodeEvents(pg.Items)
			if err != nil || send(evs) != nil {
				return nil
			}
			cur = pg.Next
			if len(pg.Items) < fetchLimit {
				break
			}
		}
		if err := flush(); err != nil {
			return nil
		}
		sub.last = cur
		var err error
		if g, err = s.hub.joinAfter(ctx, p, sub, cur, func(evs []*event) { sub.push(evs, false) }); err != nil {
			return nil
		}
	}
	defer s.hub.leave(g, sub)

	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-sub.signal:
			if send(sub.take()) != nil {
				if isDropped(sub) {
					s.m.dropped.Inc()
				}
				return nil
			}
		case <-hb.C:
			if !sub.arm(rc) {
				continue // gone is closed; the next pass returns
			}
			if _, err := bw.WriteString(": ping\n\n"); err != nil || flush() != nil {
				return nil
			}
		case <-sub.gone:
			s.m.dropped.Inc()
			return nil
		case <-ctx.Done():
			return nil
		case <-s.hub.done:
			return nil
		}
	}
}

func isDropped(s *subscriber) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}
