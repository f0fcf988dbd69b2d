package api

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

func testSubscriber() *subscriber {
	return &subscriber{limit: 1 << 20, signal: make(chan struct{}, 1), kill: func() {}}
}

func names(evs []*event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.span.Name)
	}
	return out
}

// The join protocol, step by step, with the hub's rounds driven by hand:
// a subscriber that resumes from a cursor gets every row after it exactly
// once, whether its group is behind its replay or ahead of it.
func TestHubJoinAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	h := newHub(b.ledger, newMetrics(prometheus.NewRegistry()), discard)
	p := ledger.User("acme", "alice")
	add := func(name string) ledger.Cursor {
		b.appendAs(t, p, span.Span{EntityType: "note", Who: "t", This: "n", Name: name})
		require.NoError(t, b.ledger.Settle(ctx))
		pg, err := b.ledger.Query(ctx, p, ledger.Filter{Desc: true, Limit: 1})
		require.NoError(t, err)
		return pg.Items[0].Cursor
	}

	// A keeps the group alive at its start.
	a := testSubscriber()
	g, start, err := h.joinAt(ctx, p, a)
	require.NoError(t, err)
	r1 := add("r1")
	add("r2")
	r3 := add("r3")

	// B replayed up to r3 itself while the group still sits at its start:
	// when the group catches up, B must not get r1..r3 again.
	bsub := testSubscriber()
	bsub.last = r3
	_, err = h.joinAfter(ctx, p, bsub, ledger.Filter{}, r3, func(evs []*event) { bsub.push(evs, false) })
	require.NoError(t, err)
	require.NoError(t, h.fetch(ctx, g))
	require.Equal(t, []string{"r1", "r2", "r3"}, names(a.take()))
	require.Empty(t, bsub.take(), "nothing twice")

	// C replayed only up to r1 and the group is ahead (at r3): C catches
	// up r2 and r3 under the group's lock, once.
	c := testSubscriber()
	c.last = r1
	_, err = h.joinAfter(ctx, p, c, ledger.Filter{}, r1, func(evs []*event) { c.push(evs, false) })
	require.NoError(t, err)
	require.Equal(t, []string{"r2", "r3"}, names(c.take()))

	// Then everyone gets what is new, once.
	add("r4")
	require.NoError(t, h.fetch(ctx, g))
	for _, s := range []*subscriber{a, bsub, c} {
		require.Equal(t, []string{"r4"}, names(s.take()))
	}

	// And from the very start: a new subscriber resuming at A's start
	// position catches up everything.
	d := testSubscriber()
	d.last = start
	_, err = h.joinAfter(ctx, p, d, ledger.Filter{}, start, func(evs []*event) { d.push(evs, false) })
	require.NoError(t, err)
	require.Equal(t, []string{"r1", "r2", "r3", "r4"}, names(d.take()))

	// The last to leave takes the group with it.
	for _, s := range []sink{a, bsub, c, d} {
		h.leave(g, s)
	}
	require.Empty(t, h.snapshot())
}
