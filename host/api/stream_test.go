package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// sseEvent is one dispatched message of the stream: data is empty for the
// id-only message that opens a stream.
type sseEvent struct {
	id   string
	data []byte
}

func (e sseEvent) span(t testing.TB) span.Span {
	t.Helper()
	var s span.Span
	require.NoError(t, json.Unmarshal(e.data, &s), "%s", e.data)
	return s
}

// sseClient reads a stream on its own goroutine, like a browser would.
type sseClient struct {
	events   chan sseEvent
	comments chan string
	done     chan error // the stream ended (nil on EOF)
	cancel   func()
}

func (b *bundle) subscribe(t testing.TB, tok string, header map[string]string, query string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/api/timeline/stream"+query, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("stream: %d %s", resp.StatusCode, raw)
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	c := &sseClient{events: make(chan sseEvent, 100000), comments: make(chan string, 100), done: make(chan error, 1),
		cancel: func() { cancel(); resp.Body.Close() }}
	go func() { c.done <- readSSE(resp.Body, c.events, c.comments) }()
	t.Cleanup(c.cancel)
	return c
}

// readSSE parses the event-stream format: fields until a blank line, then
// dispatch; comments (":") reported apart.
func readSSE(body io.Reader, events chan<- sseEvent, comments chan<- string) error {
	r := bufio.NewReaderSize(body, 64<<10)
	var ev sseEvent
	hasID := false
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long data line: gather it whole (line is only valid until
			// the next read, so copy it first).
			head := append([]byte(nil), line...)
			rest, err2 := r.ReadBytes('\n')
			line, err = append(head, rest...), err2
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		switch {
		case len(line) == 0:
			if hasID || len(ev.data) > 0 {
				events <- ev
			}
			ev, hasID = sseEvent{}, false
		case line[0] == ':':
			select {
			case comments <- string(line):
			default:
			}
		case bytes.HasPrefix(line, []byte("id: ")):
			ev.id, hasID = string(line[4:]), true
		case bytes.HasPrefix(line, []byte("data: ")):
			ev.data = append([]byte(nil), line[6:]...)
		case bytes.HasPrefix(line, []byte("retry: ")):
		default:
			return fmt.Errorf("unexpected line %.100q", line)
		}
	}
}

func (c *sseClient) next(t testing.TB) sseEvent {
	t.Helper()
	return c.nextWithin(t, 15*time.Second)
}

func (c *sseClient) nextWithin(t testing.TB, d time.Duration) sseEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case err := <-c.done:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
		t.Fatalf("no event in %s", d)
	}
	return sseEvent{}
}

// start reads the id-only message that opens a stream without
// Last-Event-ID: the position the stream starts after.
func (c *sseClient) start(t testing.TB) string {
	t.Helper()
	ev := c.next(t)
	require.Empty(t, ev.data, "the first message carries only the start position")
	require.NotEmpty(t, ev.id)
	return ev.id
}

// names reads n span events and returns their names.
func (c *sseClient) names(t testing.TB, n int) (names []string, lastID string) {
	t.Helper()
	for range n {
		ev := c.next(t)
		s := ev.span(t)
		names = append(names, s.Name)
		lastID = ev.id
	}
	return names, lastID
}

// quiet checks that nothing more arrives for a while.
func (c *sseClient) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev := <-c.events:
		t.Fatalf("unexpected event %s %s", ev.id, ev.data)
	case <-time.After(d):
	}
}

// Each subscriber sees exactly what its principal may read, in commit
// order; nothing of another tenant's private spans, ever.
func TestStreamTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	subs := map[string]*sseClient{
		"alice":   b.subscribe(t, b.token(t, "acme", "alice"), nil, ""),
		"bob":     b.subscribe(t, b.token(t, "acme", "bob"), nil, ""),
		"mallory": b.subscribe(t, b.token(t, "globex", "mallory"), nil, ""),
	}
	for _, c := range subs {
		c.start(t)
	}
	alice, mallory := ledger.User("acme", "alice"), ledger.User("globex", "mallory")
	b.appendAs(t, alice, note("a-private", "private"))
	b.appendAs(t, alice, note("a-tenant", "tenant"))
	b.appendAs(t, mallory, note("m-private", "private"))
	b.appendAs(t, mallory, note("m-public", "public"))
	b.appendAs(t, alice, note("a-public", "public"))
	want := map[string][]string{
		"alice":   {"a-private", "a-tenant", "m-public", "a-public"},
		"bob":     {"a-tenant", "m-public", "a-public"},
		"mallory": {"m-private", "m-public", "a-public"},
	}
	for who, c := range subs {
		got, _ := c.names(t, len(want[who]))
		require.Equal(t, want[who], got, who)
	}
	for _, c := range subs {
		c.quiet(t, 300*time.Millisecond)
	}
	// Two principals, three subscribers: at most one fetch per principal
	// and round.
	require.LessOrEqual(t, counter(t, b.srv, "logline_stream_fetch_seconds"), 3*counter(t, b.srv, "logline_stream_rounds_total"))
}

// A client that disconnects and reconnects with Last-Event-ID (or ?cursor=)
// misses nothing and sees nothing twice.
func TestStreamResume(t *testing.T) {
	t.Parallel()
	b := setup(t)
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
	start := c.start(t)
	first := batch("a", 5)
	got, last := c.names(t, 3)
	require.Equal(t, first[:3], got)
	c.cancel()

	second := batch("b", 4)
	c = b.subscribe(t, tok, map[string]string{"Last-Event-ID": last}, "")
	got, _ = c.names(t, 6)
	require.Equal(t, append(first[3:], second...), got)
	third := batch("c", 2)
	got, last = c.names(t, 2)
	require.Equal(t, third, got, "then live")
	c.quiet(t, 200*time.Millisecond)
	c.cancel()

	// From the opening position: everything since.
	c = b.subscribe(t, tok, map[string]string{"Last-Event-ID": start}, "")
	got, _ = c.names(t, 11)
	require.Equal(t, append(append(append([]string{}, first...), second...), third...), got)
	c.cancel()

	// ?cursor= for clients that cannot set headers; the header wins, as a
	// browser reconnects to the same URL with Last-Event-ID.
	c = b.subscribe(t, tok, nil, "?cursor="+last)
	fourth := batch("d", 1)
	got, _ = c.names(t, 1)
	require.Equal(t, fourth, got)
	c.cancel()
	c = b.subscribe(t, tok, map[string]string{"Last-Event-ID": last}, "?cursor="+start)
	got, _ = c.names(t, 1)
	require.Equal(t, fourth, got)
	c.cancel()

	r := b.do(t, http.MethodGet, "/api/timeline/stream", tok, map[string]string{"Last-Event-ID": "junk"}, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "Last-Event-ID", r.problem(t).Field)
}

// A span whose transaction started before others but commits after them
// is neither skipped nor sent out of order: the stream holds the later ones
// back until it commits, and a replay agrees.
func TestStreamLateCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	c := b.subscribe(t, tok, nil, "")
	start := c.start(t)

	// The late span: inserted in a transaction that stays open.
	ctx := context.Background()
	late := note("late", "private")
	require.NoError(t, ledger.Fill(alice, &late, span.FormatTime(time.Now())))
	require.NoError(t, b.key.Seal(&late))
	at, err := span.ParseTime(late.At)
	require.NoError(t, err)
	tx, err := b.admin.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id,
		tenant_id, visibility, name, curr_hash, signature, public_key) VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		late.ID, late.EntityType, late.Who, late.Did, late.This, at, late.OwnerID, late.TenantID, late.Visibility, late.Name,
		late.CurrHash, late.Signature, late.PublicKey)
	require.NoError(t, err)

	b.appendAs(t, alice, note("early", "private"))
	c.quiet(t, 600*time.Millisecond) // held back: "late" could still commit before it
	require.NoError(t, tx.Commit(ctx))
	got, _ := c.names(t, 2)
	require.Equal(t, []string{"late", "early"}, got, "commit order of the transactions' start")

	r := b.subscribe(t, tok, map[string]string{"Last-Event-ID": start}, "")
	got, _ = r.names(t, 2)
	require.Equal(t, []string{"late", "early"}, got)
}

// NOTIFY carries ids only; the stream fetches rows, so a multi-megabyte
// span (a wasm module) streams like any other.
func TestStreamLargeSpan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	c := b.subscribe(t, tok, nil, "")
	c.start(t)
	big := note("big", "private")
	big.Code = strings.Repeat("A", 3<<20)
	stored := b.appendAs(t, ledger.User("acme", "alice"), big)[0]
	s := c.next(t).span(t)
	require.Equal(t, stored.CurrHash, s.CurrHash)
	require.Len(t, s.Code, 3<<20)
	require.NoError(t, span.Verify(&s))
}

func TestStreamHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Heartbeat = 50 * time.Millisecond })
	c := b.subscribe(t, b.token(t, "acme", "alice"), nil, "")
	c.start(t)
	select {
	case cm := <-c.comments:
		require.Equal(t, ": ping", cm)
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat")
	}
}

// slowWait bounds each step of the slow-client tests: they move tens of
// megabytes, which a loaded machine under the race detector can take a
// long while to do.
const slowWait = 2 * time.Minute

// slowClient opens a stream on a raw connection that sends its request and
// then reads nothing at all. Its receive buffer is fixed (no autotuning), so
// what the server can write before blocking is bounded on any machine; it
// stays above a few loopback segments (64 KiB each), or the window updates
// once the test drains it would stall.
func (b *bundle) slowClient(t *testing.T, tok string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(256<<10))
	_, err = fmt.Fprintf(conn, "GET /api/timeline/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	require.NoError(t, err)
	return conn
}

// A client that stops reading is dropped once its buffer fills; the others
// and the server carry on. The spans go in one at a time, each once the
// fast client has it: each is then a push of its own, the fast client is
// never behind by more than one, and the slow client falls behind by one
// more with every push, so the drop happens on the push that takes it past
// its buffer — on any machine, however loaded, whatever the timing.
func TestStreamDropsSlowClient(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.StreamBuffer = 8 << 20 })
	tok := b.token(t, "acme", "alice")
	fast := b.subscribe(t, tok, nil, "")
	fast.start(t)
	conn := b.slowClient(t, tok)
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 2 })

	// Far more than the send buffer and the stream buffer hold together.
	const n = 100
	payload := json.RawMessage(`{"blob":"` + strings.Repeat("x", 256<<10) + `"}`)
	for i := range n {
		s := note(fmt.Sprintf("n%d", i), "private")
		s.Metadata = payload
		b.appendAs(t, ledger.User("acme", "alice"), s)
		require.Equal(t, fmt.Sprintf("n%d", i), fast.nextWithin(t, slowWait).span(t).Name)
	}
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_dropped_total") == 1 })
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 1 })
	// The slow client's connection was closed: draining it ends in EOF.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(slowWait)))
	_, err := io.Copy(io.Discard, conn)
	require.NoError(t, err)
	// The fast one is still there, and the server still serves.
	b.appendAs(t, ledger.User("acme", "alice"), note("after", "private"))
	require.Equal(t, "after", fast.nextWithin(t, slowWait).span(t).Name)
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/api/spans?limit=1", tok, nil, nil).status)
	require.Equal(t, float64(1), counter(t, b.srv, "logline_stream_dropped_total"))
}

// observer is a sink of the hub, in the test's process: it sees each push
// of its group when the group's other sinks do.
type observer struct {
	mu    sync.Mutex
	names map[string]bool
}

func (o *observer) deliver(evs []*event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ev := range evs {
		o.names[ev.span.Name] = true
	}
}

func (o *observer) saw(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.names[name]
}

// A burst that lands on a slow client in one push, and then nothing more:
// the push that takes it past its buffer drops it, though no push follows.
// This is what a loaded machine produced: the writer had taken the queue
// and was blocked writing it to a client that read nothing, so the queue
// looked empty when the last burst came and nothing counted as behind.
func TestStreamDropsSlowClientOnItsLastBurst(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.StreamBuffer = 4 << 20 })
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	conn := b.slowClient(t, tok)
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 1 })
	// The observer joins alice's group, the slow client's: when it has
	// seen a push, so has the slow client (one fetch delivers to every
	// sink under the group's lock).
	obs := &observer{names: map[string]bool{}}
	g, _, err := b.srv.hub.joinAt(context.Background(), alice, obs)
	require.NoError(t, err)
	defer b.srv.hub.leave(g, obs)

	payload := json.RawMessage(`{"blob":"` + strings.Repeat("x", 256<<10) + `"}`)
	batch := func(prefix string, n int) []span.Span {
		out := make([]span.Span, n)
		for i := range out {
			out[i] = note(fmt.Sprintf("%s%d", prefix, i), "private")
			out[i].Metadata = payload
		}
		return out
	}
	// 10 MiB in one transaction: one push that finds the client caught up
	// (let through whole), more than the send buffer, so the writer blocks
	// on it.
	b.appendAs(t, alice, batch("a", 40)...)
	eventuallyFor(t, slowWait, func() bool { return obs.saw("a39") })
	// 5 MiB more, in one push, and the last.
	b.appendAs(t, alice, batch("b", 20)...)
	eventuallyFor(t, slowWait, func() bool { return obs.saw("b19") })
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_dropped_total") == 1 })
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 0 })
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(slowWait)))
	_, err = io.Copy(io.Discard, conn)
	require.NoError(t, err)
}

// The drop rule, push by push: a client is dropped by the push that takes
// it past its buffer while it is still behind on earlier events (queued, or
// taken and not yet written); a burst that finds it caught up is let
// through whole.
func TestSubscriberDropRule(t *testing.T) {
	t.Parallel()
	tx := uint64(0)
	ev := func(size int) []*event {
		tx++
		return []*event{{cur: ledger.Cursor{Tx: tx}, span: &span.Span{}, wire: make([]byte, size)}}
	}
	newSub := func() (*subscriber, *bool) {
		killed := false
		s := testSubscriber()
		s.limit = 1000
		s.kill = func() { killed = true }
		return s, &killed
	}

	s, killed := newSub()
	s.push(ev(3000), true)
	require.False(t, isDropped(s), "a burst into a caught-up client is let through")
	taken := s.take()
	require.Len(t, taken, 1)
	s.push(ev(1), true)
	require.True(t, isDropped(s), "taken but not written is still unread")
	require.True(t, *killed, "the write in progress is cut")
	select {
	case <-s.signal:
	default:
		t.Fatal("the writer is not woken to find it dropped")
	}

	s, _ = newSub()
	s.push(ev(500), true)
	s.wrote(len(s.take()[0].wire))
	s.push(ev(3000), true)
	require.False(t, isDropped(s), "written: caught up again")

	s, _ = newSub()
	s.push(ev(400), true)
	s.take()
	s.push(ev(400), true)
	require.False(t, isDropped(s), "800 of 1000")
	s.push(ev(400), true)
	require.True(t, isDropped(s), "the push that crosses the limit drops, with no next push needed")

	s, _ = newSub()
	s.push(ev(400), false)
	s.push(ev(4000), false)
	require.False(t, isDropped(s), "a catch-up is never enforced")
}

// A client that takes nothing for the write timeout is dropped as slow too,
// though its buffer never fills: the connection ends at the write deadline
// and counts as a dropped client.
func TestStreamWriteDeadlineDropsClient(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.StreamBuffer = 1 << 30 // never reached
		c.StreamWriteTimeout = time.Second
	})
	tok := b.token(t, "acme", "alice")
	conn := b.slowClient(t, tok)
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 1 })
	payload := json.RawMessage(`{"blob":"` + strings.Repeat("x", 256<<10) + `"}`)
	spans := make([]span.Span, 40) // 10 MiB: more than the send buffer
	for i := range spans {
		spans[i] = note(fmt.Sprintf("n%d", i), "private")
		spans[i].Metadata = payload
	}
	b.appendAs(t, ledger.User("acme", "alice"), spans...)
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_dropped_total") == 1 })
	eventuallyFor(t, slowWait, func() bool { return counter(t, b.srv, "logline_stream_subscribers") == 0 })
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(slowWait)))
	_, err := io.Copy(io.Discard, conn)
	require.NoError(t, err)
}

// The must-show: 500 concurrent subscribers each receive all of 10,000
// events, in order, while the spans are written by concurrent transactions
// (so commits interleave); some subscribers drop their connection midway
// and resume with Last-Event-ID, and miss nothing either.
func TestStream500SubscribersAll10000Events(t *testing.T) {
	if testing.Short() {
		t.Skip("heavy: 5,000,000 events")
	}
	t.Parallel()
	const (
		subscribers = 500
		users       = 5 // five principals: five fetches per round, not 500
		events      = 10000
		reconnects  = 50
		batch       = 50
		writers     = 4
	)
	ctx := context.Background()
	dbURL := testPG.Database(t, "api")
	l, err := ledger.Open(ctx, dbURL) // unsigned spans: smaller events, same path
	require.NoError(t, err)
	t.Cleanup(l.Close)
	b := serve(t, Config{Ledger: l, Key: mustKey(t)})
	b.key = b.srv.cfg.Key
	b.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: subscribers, MaxConnsPerHost: 0}}

	type result struct {
		ids []string
		err error
	}
	results := make([]result, subscribers)
	var ready, wg sync.WaitGroup
	ready.Add(subscribers)
	for i := range subscribers {
		tok := b.token(t, "acme", fmt.Sprintf("u%d", i%users))
		wg.Go(func() {
			results[i].ids, results[i].err = follow(b, tok, events, i < reconnects, ready.Done)
		})
	}
	ready.Wait()

	// Tenant-visible notes, so every user sees every span.
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Go(func() {
			for j := w * batch; j < events; j += writers * batch {
				spans := make([]span.Span, batch)
				for k := range spans {
					spans[k] = note(fmt.Sprintf("e%d", j+k), "tenant")
				}
				if _, err := l.Append(ctx, ledger.User("acme", fmt.Sprintf("u%d", j%users)), spans...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wwg.Wait()
	wg.Wait()

	// The order every subscriber must have seen: the ledger's commit order.
	require.NoError(t, l.Settle(ctx))
	var want []string
	var cur ledger.Cursor
	for {
		pg, err := l.Query(ctx, ledger.User("acme", "u0"), ledger.Filter{After: cur, Limit: ledger.MaxLimit})
		require.NoError(t, err)
		for _, it := range pg.Items {
			want = append(want, it.Cursor.String())
		}
		cur = pg.Next
		if len(pg.Items) < ledger.MaxLimit {
			break
		}
	}
	require.Len(t, want, events)
	for i, r := range results {
		require.NoError(t, r.err, "subscriber %d", i)
		require.Equal(t, len(want), len(r.ids), "subscriber %d", i)
		require.Equal(t, want, r.ids, "subscriber %d: every event, in commit order, once", i)
	}
	fetches, rounds := counter(t, b.srv, "logline_stream_fetch_seconds"), counter(t, b.srv, "logline_stream_rounds_total")
	t.Logf("%v rounds, %v fetches for %d subscribers of %d principals", rounds, fetches, subscribers, users)
	require.LessOrEqual(t, fetches, float64(users)*rounds+float64(users)*float64(events/fetchLimit+1))
	require.Zero(t, counter(t, b.srv, "logline_stream_dropped_total"))
}

func mustKey(t testing.TB) *span.Key {
	k, err := span.GenerateKey()
	require.NoError(t, err)
	return k
}

// follow reads a stream until it has n span events and returns their ids
// (cursors). With reconnect it drops the connection after a while and
// resumes with Last-Event-ID, as a browser would. It parses only what it
// must, so that 500 of them fit on a small machine.
func follow(b *bundle, tok string, n int, reconnect bool, ready func()) ([]string, error) {
	ids := make([]string, 0, n)
	last := ""
	dropAt := -1
	if reconnect {
		dropAt = n / 3
	}
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/api/timeline/stream", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := b.client.Do(req)
		if err != nil {
			cancel()
			return ids, err
		}
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		id, sawData := "", false
		err = func() error {
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("after %d events: %w", len(ids), err)
				}
				switch {
				case len(line) == 1: // dispatch
					if sawData {
						ids = append(ids, id)
						last = id
						if len(ids) == n {
							return nil
						}
						if len(ids) == dropAt {
							dropAt = -1
							return errReconnect
						}
					} else if id != "" && last == "" {
						last = id // the opening position
						if ready != nil {
							ready()
							ready = nil
						}
					}
					id, sawData = "", false
				case bytes.HasPrefix(line, []byte("id: ")):
					id = string(line[4 : len(line)-1])
				case bytes.HasPrefix(line, []byte("data: ")):
					sawData = true
				}
			}
		}()
		resp.Body.Close()
		cancel()
		if !errors.Is(err, errReconnect) {
			return ids, err
		}
	}
	return ids, errors.New("too many reconnects")
}

var errReconnect = errors.New("reconnect")

// The stream selects as the listings do: the engine's bookkeeping left out
// unless include=bookkeeping, exclude_type= and the field filters honoured,
// live and on a resume alike; a bad parameter is refused before the stream
// opens. Subscribers of one principal share a group, each with its own
// selection.
func TestStreamSelects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	add := func(entityType, name, status string) {
		b.appendAs(t, alice, span.Span{EntityType: entityType, Who: "alice", This: entityType, Name: name, Status: status, Visibility: "tenant"})
	}
	queries := map[string]string{
		"":                               "default",
		"?include=bookkeeping":           "all",
		"?exclude_type=metric,x":         "no metrics",
		"?entity_type=policy_cursor":     "cursors only",
		"?entity_type=metric&status=hot": "hot metrics",
	}
	want := map[string][]string{
		"default":      {"n1", "m1", "m2", "n2"},
		"all":          {"n1", "c1", "m1", "q1", "m2", "n2"},
		"no metrics":   {"n1", "n2"},
		"cursors only": {"c1"},
		"hot metrics":  {"m2"},
	}
	streams := map[string]*sseClient{}
	starts := map[string]string{}
	for q, name := range queries {
		streams[name] = b.subscribe(t, tok, nil, q)
		starts[name] = streams[name].start(t)
	}
	add("note", "n1", "")
	add("policy_cursor", "c1", "")
	add("metric", "m1", "cold")
	add("quota_counter", "q1", "")
	add("metric", "m2", "hot")
	add("note", "n2", "")
	for q, name := range queries {
		got, _ := streams[name].names(t, len(want[name]))
		require.Equal(t, want[name], got, "live %q", q)
		streams[name].quiet(t, 200*time.Millisecond)
		streams[name].cancel()
		// A resume from the opening position selects the same.
		c := b.subscribe(t, tok, map[string]string{"Last-Event-ID": starts[name]}, q)
		got, _ = c.names(t, len(want[name]))
		require.Equal(t, want[name], got, "resumed %q", q)
		c.quiet(t, 200*time.Millisecond)
		c.cancel()
	}
	for q, field := range map[string]string{"?include=all": "include", "?visibility=secret": "visibility", "?since=yesterday": "since"} {
		r := b.do(t, http.MethodGet, "/api/timeline/stream"+q, tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status, q)
		require.Equal(t, field, r.problem(t).Field, q)
	}
}
