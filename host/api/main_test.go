package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/ledger/ledgertest"
	"github.com/logline/logline/host/span"
)

var testPG *ledgertest.Server

func TestMain(m *testing.M) { os.Exit(ledgertest.Main(m, "api", &testPG)) }

// bundle is one test's server: a fresh migrated database, a ledger that
// signs with the node key, and the API serving on a loopback port.
type bundle struct {
	url    string // http://127.0.0.1:port
	dbURL  string
	key    *span.Key
	ledger *ledger.Ledger
	admin  *pgxpool.Pool // the login user (superuser in the harness), for checks
	srv    *Server
	client *http.Client
	stop   func() error // shuts the server down and returns what Serve returned
}

// setup starts a server; edit adjusts its Config.
func setup(t testing.TB, edit ...func(*Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	dbURL := testPG.Database(t, "api")
	key, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, dbURL, ledger.WithKey(key))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	admin, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	cfg := Config{Ledger: l, Key: key}
	for _, e := range edit {
		e(&cfg)
	}
	b := serve(t, cfg)
	b.dbURL, b.key, b.ledger, b.admin = dbURL, key, l, admin
	return b
}

// serve runs a server for cfg on 127.0.0.1:0 until the test ends, and
// waits until it is ready.
func serve(t testing.TB, cfg Config) *bundle {
	t.Helper()
	srv, err := New(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("server did not shut down")
			}
		})
		return serveErr
	}
	b := &bundle{url: "http://" + ln.Addr().String(), srv: srv, stop: stop,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	t.Cleanup(func() {
		require.NoError(t, stop())
		checkDocumented(t, srv)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := b.do(t, http.MethodGet, "/readyz", "", nil, nil)
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %d %s", r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return b
}

// token is a bearer token for user in tenant, signed by the node key.
func (b *bundle) token(t testing.TB, tenant, user string) string {
	t.Helper()
	tok, err := IssueToken(b.key, tenant, user, time.Hour, time.Now())
	require.NoError(t, err)
	return tok
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// problem decodes an error reply.
func (r reply) problem(t testing.TB) problem {
	t.Helper()
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"), "%s", r.body)
	var p problem
	require.NoError(t, json.Unmarshal(r.body, &p), "%s", r.body)
	require.Equal(t, r.status, p.Status)
	return p
}

func (r reply) json(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "%s", r.body)
}

// do sends one request. body may be nil, a string, []byte or anything JSON
// encodes; a string or []byte is sent as is.
func (b *bundle) do(t testing.TB, method, path, token string, header map[string]string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		require.NoError(t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: raw}
}

// rows counts every row of the ledger, bypassing RLS (the harness login is
// a superuser), to check that a refused request wrote nothing.
func (b *bundle) rows(t testing.TB) int {
	t.Helper()
	var n int
	require.NoError(t, b.admin.QueryRow(context.Background(), `SELECT count(*) FROM ledger.universal_registry`).Scan(&n))
	return n
}

// appendAs appends spans straight through the ledger as a user.
func (b *bundle) appendAs(t testing.TB, p ledger.Principal, spans ...span.Span) []span.Span {
	t.Helper()
	out, err := b.ledger.Append(context.Background(), p, spans...)
	require.NoError(t, err)
	return out
}

func note(name, visibility string) span.Span {
	return span.Span{EntityType: "note", Who: "tester", Did: "wrote", This: "note", Name: name, Visibility: visibility}
}

// checkDocumented fails t when s answered a status the OpenAPI document
// does not declare for that route and method: the document is generated
// from the route table, and this holds the handlers to it.
func checkDocumented(t testing.TB, s *Server) {
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Errorf("gather: %v", err)
		return
	}
	for _, mf := range mfs {
		if mf.GetName() != "logline_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := labels(m)
			route, method, code := l[0], l[1], l[2]
			if route == "unmatched" || code == "405" || method == http.MethodOptions || slices.Contains(consoleRoutes, route) {
				continue // no operation: unknown paths, wrong methods, CORS preflight, the console's files
			}
			if isSSRRoute(route) {
				continue // the HTML adapter (ssr.go), not part of the JSON API
			}
			var o *op
			for i := range routes {
				if routes[i].path == route && routes[i].method == method {
					o = &routes[i]
				}
			}
			if o == nil {
				t.Errorf("%s %s answered %s but is not in the route table", method, route, code)
				continue
			}
			documented := false
			for _, r := range allResponses(*o) {
				documented = documented || strconv.Itoa(r.status) == code
			}
			if !documented {
				t.Errorf("%s %s answered %s, which the OpenAPI document does not declare", method, route, code)
			}
		}
	}
}

func labels(m *dto.Metric) [3]string {
	var out [3]string
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "route":
			out[0] = l.GetValue()
		case "method":
			out[1] = l.GetValue()
		case "code":
			out[2] = l.GetValue()
		}
	}
	return out
}

// counter reads a counter or histogram count of s's registry.
func counter(t testing.TB, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
		return sum
	}
	return 0
}
