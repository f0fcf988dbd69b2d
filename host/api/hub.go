package api

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// The hub follows the ledger for every open stream and pending wait.
//
// One LISTEN per server (ledger.Listen) tells it that something committed;
// NOTIFY carries ids only, so it then reads the new rows with a forward
// cursor Query — once per distinct principal among its sinks (a group), not
// once per sink, and under that principal, so row-level security alone
// decides who sees what. A forward Query only returns rows no running
// transaction can still precede, so a group's position never passes a row
// that commits late; the hub settles first (ledger.Settle) so the rows just
// announced are listable, and retries while a long transaction holds the
// horizon back.

// event is one span as the stream sends it, encoded once per group.
type event struct {
	cur  ledger.Cursor
	span *span.Span
	wire []byte // "id: <cursor>\ndata: <json>\n\n" (a default "message" event, as the seed's clients expect)
}

// sink receives a group's events, in order, under the group's lock: it
// must not block.
type sink interface {
	deliver(evs []*event)
}

type hub struct {
	l   *ledger.Ledger
	m   *metrics
	log *slog.Logger

	wake chan struct{} // a notice arrived; buffered 1, so notices coalesce
	// ctx ends at shutdown (close): every stream and wait ends.
	ctx  context.Context
	stop context.CancelFunc

	mu     sync.Mutex
	groups map[ledger.Principal]*group
}

type group struct {
	p     ledger.Principal
	ready chan struct{} // closed once pos is set (or err)
	err   error

	mu    sync.Mutex
	pos   ledger.Cursor // every row up to here was delivered
	sinks map[sink]struct{}
	dead  bool // removed from the hub; joiners must get a new group
}

// fetchLimit is the page size of a group's fetch (spans can be megabytes
// each, so a page is kept small enough to hold in memory whatever it
// carries), and fetchWorkers how many groups are fetched at once.
const (
	fetchLimit   = 100
	fetchWorkers = 8
	// settleWait bounds how long one round waits for the horizon to pass
	// what was announced; a longer transaction makes the hub retry.
	settleWait = 250 * time.Millisecond
)

func newHub(l *ledger.Ledger, m *metrics, log *slog.Logger) *hub {
	ctx, stop := context.WithCancel(context.Background())
	return &hub{l: l, m: m, log: log, wake: make(chan struct{}, 1), ctx: ctx, stop: stop,
		groups: map[ledger.Principal]*group{}}
}

// poke asks for a round; it never blocks.
func (h *hub) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hub) close() { h.stop() }

// run fetches for every group after each notice until ctx ends.
func (h *hub) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.ctx.Done():
			return
		case <-h.wake:
		}
		groups := h.snapshot()
		if len(groups) == 0 {
			continue
		}
		h.m.rounds.Inc()
		sctx, cancel := context.WithTimeout(ctx, settleWait)
		err := h.l.Settle(sctx)
		cancel()
		retry := err != nil
		if retry && ctx.Err() == nil {
			h.log.Debug("stream: horizon held back by a long transaction; retrying", "err", err)
		}
		if h.fetchAll(ctx, groups) {
			retry = true
		}
		if retry && ctx.Err() == nil {
			time.AfterFunc(50*time.Millisecond, h.poke)
		}
	}
}

func (h *hub) snapshot() []*group {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*group, 0, len(h.groups))
	for _, g := range h.groups {
		out = append(out, g)
	}
	return out
}

// fetchAll fetches every group, a few at a time; it reports whether any
// fetch failed (the round is then retried).
func (h *hub) fetchAll(ctx context.Context, groups []*group) (failed bool) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, fetchWorkers)
	for _, g := range groups {
		select {
		case <-g.ready:
		default:
			continue // still starting; it will be fetched next round
		}
		if g.err != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := h.fetch(ctx, g); err != nil && ctx.Err() == nil {
				h.m.fetchErrors.Inc()
				h.log.Warn("stream: fetch failed; retrying", "principal", g.p.String(), "err", err)
				mu.Lock()
				failed = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}

// fetch reads what is new for one group and hands it to its sinks. Only the
// hub's round fetches a group, so pos only moves here.
func (h *hub) fetch(ctx context.Context, g *group) error {
	g.mu.Lock()
	pos := g.pos
	g.mu.Unlock()
	for {
		start := time.Now()
		pg, err := h.l.Query(ctx, g.p, ledger.Filter{After: pos, Limit: fetchLimit})
		h.m.fetches.Observe(time.Since(start).Seconds())
		if err != nil {
			return err
		}
		evs, err := encodeEvents(pg.Items)
		if err != nil {
			return err
		}
		g.mu.Lock()
		for s := range g.sinks {
			s.deliver(evs)
		}
		g.pos = pg.Next
		g.mu.Unlock()
		pos = pg.Next
		if len(pg.Items) < fetchLimit {
			return nil
		}
	}
}

func encodeEvents(items []ledger.Item) ([]*event, error) {
	evs := make([]*event, len(items))
	for i := range items {
		it := &items[i]
		data, err := marshal(&it.Span)
		if err != nil {
			return nil, err
		}
		cur := it.Cursor.String()
		wire := make([]byte, 0, len(data)+len(cur)+24)
		wire = append(wire, "id: "...)
		wire = append(wire, cur...)
		wire = append(wire, "\ndata: "...)
		wire = append(wire, data[:len(data)-1]...) // without marshal's newline
		wire = append(wire, "\n\n"...)
		evs[i] = &event{cur: it.Cursor, span: &it.Span, wire: wire}
	}
	return evs, nil
}

// group returns p's group, making it (positioned at the ledger's tail) if
// there is none. The group may die before the caller joins it; join
// reports that and the caller asks again.
func (h *hub) group(ctx context.Context, p ledger.Principal) (*group, error) {
	h.mu.Lock()
	g, ok := h.groups[p]
	if !ok {
		g = &group{p: p, ready: make(chan struct{}), sinks: map[sink]struct{}{}}
		h.groups[p] = g
	}
	h.mu.Unlock()
	if !ok {
		g.pos, g.err = h.l.Tail(ctx)
		if g.err != nil {
			h.mu.Lock()
			if h.groups[p] == g {
				delete(h.groups, p)
			}
			h.mu.Unlock()
		}
		close(g.ready)
		// Notices of rows committed while the tail was read may have
		// woken a round that did not know the group yet.
		h.poke()
	}
	select {
	case <-g.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if g.err != nil {
		return nil, g.err
	}
	return g, nil
}

// leave removes s from g, and g from the hub once it has no sinks.
func (h *hub) leave(g *group, s sink) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.sinks, s)
	if len(g.sinks) == 0 && !g.dead {
		g.dead = true
		if h.groups[g.p] == g {
			delete(h.groups, g.p)
		}
	}
}

// joinAt adds s to p's group from the group's current position, which it
// returns: s receives every row after it.
func (h *hub) joinAt(ctx context.Context, p ledger.Principal, s sink) (*group, ledger.Cursor, error) {
	for {
		g, err := h.group(ctx, p)
		if err != nil {
			return nil, ledger.Cursor{}, err
		}
		g.mu.Lock()
		if g.dead {
			g.mu.Unlock()
			continue
		}
		g.sinks[s] = struct{}{}
		pos := g.pos
		g.mu.Unlock()
		return g, pos, nil
	}
}

// joinAfter adds s to p's group so that, after the rows up to cur that the
// caller has already sent, s receives every row after cur that want
// selects exactly once and in order. The caller has replayed up to the horizon; rows between cur and
// the group's position are read here, under the group's lock (so the group
// cannot move meanwhile), and handed to catchUp before s joins. Rows after
// that which the group delivers again are dropped by s itself (it skips
// what is not after its last cursor).
func (h *hub) joinAfter(ctx context.Context, p ledger.Principal, s sink, want ledger.Filter, cur ledger.Cursor, catchUp func([]*event)) (*group, error) {
	for {
		g, err := h.group(ctx, p)
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		if g.dead {
			g.mu.Unlock()
			continue
		}
		for before(cur, g.pos) {
			f := want
			f.After, f.Limit = cur, fetchLimit
			pg, err := h.l.Query(ctx, p, f)
			if err != nil {
				g.mu.Unlock()
				return nil, err
			}
			evs, err := encodeEvents(pg.Items)
			if err != nil {
				g.mu.Unlock()
				return nil, err
			}
			catchUp(evs)
			cur = pg.Next
			if len(pg.Items) < fetchLimit {
				// Caught up with a horizon at least as late as the one
				// the group's position came from: nothing visible is left
				// at or before it.
				break
			}
		}
		g.sinks[s] = struct{}{}
		g.mu.Unlock()
		return g, nil
	}
}

// before reports whether a comes before b in commit order.
func before(a, b ledger.Cursor) bool {
	return a.Tx < b.Tx || a.Tx == b.Tx && a.Ord < b.Ord
}

func cursorID(c ledger.Cursor) string {
	if c.IsZero() {
		return "0.0"
	}
	return strconv.FormatUint(c.Tx, 10) + "." + strconv.FormatInt(c.Ord, 10)
}
