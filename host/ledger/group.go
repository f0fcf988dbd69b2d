package ledger

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/logline/logline/host/span"
)

// Group commit: single-span Appends of one principal that arrive while
// others of that principal are in flight wait, and go together as one
// batch — one transaction, one INSERT, one run of the ledger's trigger, one
// NOTIFY, one commit — instead of one each. A caller alone never waits:
// while fewer than DefaultGroupInflight Appends of its principal are in
// flight, it goes at once. Each caller still gets its own span back, and
// its own verdict: when a batch is refused, nothing of it was written, and
// each of its spans is appended again on its own, so one bad span (a seq
// conflict, a span the ledger refuses) fails only its own caller. Only a
// definite refusal is retried that way; any other failure (the connection
// lost around the commit, when the batch may have committed) is every
// caller's, as it would be for an Append of its own.
//
// Grouping is per principal because row-level security checks a whole
// statement under one principal.

// DefaultGroupInflight is how many Appends of one principal run at once
// before the next ones wait to go together.
const DefaultGroupInflight = 2

// groupTimeout bounds a batch that carries other callers' spans: it runs
// on none of their contexts (one caller giving up must not fail the rest).
const groupTimeout = time.Minute

// WithGroupCommit sets how many Appends of one principal run at once before
// later single-span Appends wait and go together (0 turns grouping off:
// every Append is its own transaction).
func WithGroupCommit(inflight int) Option { return func(l *Ledger) { l.group.inflight = inflight } }

type grouper struct {
	inflight int // 0: off

	mu     sync.Mutex
	queues map[Principal]*groupQueue
}

type groupQueue struct {
	running int
	waiting []*pendingAppend
}

type pendingAppend struct {
	ctx  context.Context
	s    span.Span
	out  span.Span
	err  error
	done chan struct{}
}

// appendGrouped appends one span, with whatever else of p's is waiting.
func (l *Ledger) appendGrouped(ctx context.Context, p Principal, s span.Span) ([]span.Span, error) {
	g := &l.group
	g.mu.Lock()
	if g.queues == nil {
		g.queues = map[Principal]*groupQueue{}
	}
	q := g.queues[p]
	if q == nil {
		q = &groupQueue{}
		g.queues[p] = q
	}
	if q.running < g.inflight {
		q.running++
		g.mu.Unlock()
		out, err := l.appendBatch(ctx, p, s)
		l.next(p, q)
		return out, err
	}
	me := &pendingAppend{ctx: ctx, s: s, done: make(chan struct{})}
	q.waiting = append(q.waiting, me)
	g.mu.Unlock()
	select {
	case <-me.done:
	case <-ctx.Done():
		g.mu.Lock()
		for i, w := range q.waiting {
			if w == me { // not taken yet: never written
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				g.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		g.mu.Unlock()
		<-me.done // taken: its outcome is the batch's
	}
	if me.err != nil {
		return nil, me.err
	}
	return []span.Span{me.out}, nil
}

// next runs what waits on q, a batch of up to MaxBatch, or ends one of q's
// runs when nothing does.
func (l *Ledger) next(p Principal, q *groupQueue) {
	g := &l.group
	g.mu.Lock()
	if len(q.waiting) == 0 {
		q.running--
		if q.running == 0 {
			delete(g.queues, p)
		}
		g.mu.Unlock()
		return
	}
	n := min(len(q.waiting), MaxBatch)
	batch := append([]*pendingAppend(nil), q.waiting[:n]...)
	q.waiting = append(q.waiting[:0], q.waiting[n:]...)
	g.mu.Unlock()
	go func() {
		l.runGroup(p, batch)
		l.next(p, q)
	}()
}

// runGroup appends batch's spans together, or each on its own when the
// batch is refused.
func (l *Ledger) runGroup(p Principal, batch []*pendingAppend) {
	defer func() {
		for _, w := range batch {
			close(w.done)
		}
	}()
	if len(batch) == 1 {
		w := batch[0]
		out, err := l.appendBatch(w.ctx, p, w.s)
		w.err = err
		if err == nil {
			w.out = out[0]
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), groupTimeout)
	defer cancel()
	spans := make([]span.Span, len(batch))
	for i, w := range batch {
		spans[i] = w.s
	}
	out, err := l.appendBatch(ctx, p, spans...)
	if err == nil {
		for i, w := range batch {
			w.out = out[i]
		}
		return
	}
	if !refused(err) {
		for _, w := range batch {
			w.err = err
		}
		return
	}
	var wg sync.WaitGroup
	for _, w := range batch {
		wg.Go(func() {
			out, err := l.appendBatch(w.ctx, p, w.s)
			w.err = err
			if err == nil {
				w.out = out[0]
			}
		})
	}
	wg.Wait()
}

// refused tells whether err is a definite refusal of a batch — nothing of
// it was written — rather than a failure around its commit.
func refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrSeqConflict) ||
		errors.Is(err, ErrChain) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrBadPrincipal) ||
		errors.Is(err, ErrAppendOnly)
}
