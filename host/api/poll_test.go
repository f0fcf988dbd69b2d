package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

// pollWait bounds one event's arrival when the hub polls (every second by
// default): generous, for a loaded machine under -race.
const pollWait = 30 * time.Second

// withNotify serves from a ledger on the same pool whose Listen is
// configured by n.
func withNotify(n ledger.Notify) func(*Config) {
	return func(c *Config) {
		c.Ledger = ledger.New(c.Ledger.Pool(), ledger.WithKey(c.Key), ledger.WithNotify(n))
	}
}

// With the ledger's notifications off the stream polls: the server is
// ready (and says it polls), a span appended after a client connected
// reaches it within about the poll interval, and a client that reconnects
// with Last-Event-ID misses nothing and sees nothing twice.
func TestStreamPollsWithoutNotifications(t *testing.T) {
	t.Parallel()
	b := setup(t, withNotify(ledger.Notify{Off: true}))
	r := b.do(t, http.MethodGet, "/readyz", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), "polling")

	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	batch := func(prefix string, n int) []string {
		var names []string
		for i := range n {
			name := fmt.Sprintf("%s%d", prefix, i)
			b.appendAs(t, alice, note(name, "private"))
			names = append(names, name)
		}
		return names
	}
	c := b.subscribe(t, tok, nil, "")
	c.start(t)
	start := time.Now()
	b.appendAs(t, alice, note("first", "private"))
	require.Equal(t, "first", c.nextWithin(t, pollWait).span(t).Name)
	t.Logf("appended to streamed, polling every %s: %s", ledger.DefaultPoll, time.Since(start))

	first := batch("a", 5)
	var got []string
	var last string
	for range 3 {
		ev := c.nextWithin(t, pollWait)
		got, last = append(got, ev.span(t).Name), ev.id
	}
	require.Equal(t, first[:3], got)
	c.cancel()

	second := batch("b", 4)
	c = b.subscribe(t, tok, map[string]string{"Last-Event-ID": last}, "")
	got = nil
	for range 6 {
		got = append(got, c.nextWithin(t, pollWait).span(t).Name)
	}
	require.Equal(t, append(first[3:], second...), got, "replayed from Last-Event-ID")
	third := batch("c", 2)
	got = nil
	for range 2 {
		got = append(got, c.nextWithin(t, pollWait).span(t).Name)
	}
	require.Equal(t, third, got, "then live, by polling")
	c.quiet(t, 3*ledger.DefaultPoll)
}

// When LISTEN cannot be had the server neither fails nor waits: it polls,
// is ready, and streams.
func TestStreamFallsBackWhenListenFails(t *testing.T) {
	t.Parallel()
	b := setup(t, withNotify(ledger.Notify{Poll: 200 * time.Millisecond, Retry: time.Hour,
		Connect: func(context.Context) (*pgx.Conn, error) { return nil, errors.New("LISTEN unavailable (simulated)") }}))
	r := b.do(t, http.MethodGet, "/readyz", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), "polling")
	c := b.subscribe(t, b.token(t, "acme", "alice"), nil, "")
	c.start(t)
	b.appendAs(t, ledger.User("acme", "alice"), note("polled", "tenant"))
	require.Equal(t, "polled", c.nextWithin(t, pollWait).span(t).Name)
}
