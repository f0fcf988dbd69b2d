package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// The OpenAPI document and the routes echo serves agree, both ways: every
// registered route is documented and every documented operation is
// registered. (Which statuses each route answers is checked against the
// document after every test: checkDocumented.)
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/api/openapi.json", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
		Comps   struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	r.json(t, &doc)
	require.Equal(t, "3.1.0", doc.OpenAPI)

	undocumented, unserved := compareRoutes(t, b.srv.e, r.body)
	require.Empty(t, undocumented, "served but not documented")
	require.Empty(t, unserved, "documented but not served")

	// Every $ref resolves.
	for _, m := range regexp.MustCompile(`"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(string(r.body), -1) {
		require.Contains(t, doc.Comps.Schemas, m[1])
	}
	// Every path parameter is declared.
	for path, ops := range doc.Paths {
		for _, p := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
			for method, raw := range ops {
				var o struct {
					Parameters []struct{ Name, In string }
				}
				require.NoError(t, json.Unmarshal(raw, &o))
				require.Contains(t, o.Parameters, struct{ Name, In string }{p[1], "path"}, "%s %s does not declare {%s}", method, path, p[1])
			}
		}
	}
}

// The Span schema is the span type: every JSON field of span.Span, and
// nothing else.
func TestOpenAPISpanSchemaIsTheType(t *testing.T) {
	t.Parallel()
	s := spanSchema()
	props := s["properties"].(schema)
	var names []string
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"at", "code", "description", "did", "duration_ms", "entity_type", "error", "id", "input", "is_deleted",
		"language", "metadata", "name", "output", "owner_id", "parent_id", "prev_hash", "public_key", "related_to", "runtime",
		"seq", "signature", "status", "tenant_id", "this", "trace_id", "curr_hash", "visibility", "who"}
	slices.Sort(want)
	require.Equal(t, want, names)
}

// compareRoutes lists the echo routes missing from the document and the
// documented operations echo does not serve.
func compareRoutes(t *testing.T, e *echo.Echo, doc []byte) (undocumented, unserved []string) {
	t.Helper()
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(doc, &d))
	documented := map[string]bool{}
	for path, ops := range d.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, rt := range e.Routes() {
		if rt.Method == echo.RouteNotFound || slices.Contains(consoleRoutes, rt.Path) {
			continue // echo's own not-found catch-alls and the console's files, not operations
		}
		if isSSRRoute(rt.Path) {
			continue // the HTML adapter (ssr.go), not part of the JSON API
		}
		served[rt.Method+" "+openAPIPath(rt.Path)] = true
	}
	for k := range served {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !served[k] {
			unserved = append(unserved, k)
		}
	}
	return undocumented, unserved
}

// The comparison fails both ways: a route served outside the table, and an
// operation documented without a route.
func TestOpenAPICheckCanFail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	extra := append(append([]op(nil), routes...), op{method: http.MethodDelete, path: "/api/spans/:id", id: "deleteSpan", summary: "x"})
	doc, err := document(extra)
	require.NoError(t, err)
	_, unserved := compareRoutes(t, b.srv.e, doc)
	require.Equal(t, []string{"DELETE /api/spans/{id}"}, unserved)
	b.srv.e.GET("/api/secret", func(c echo.Context) error { return nil })
	undocumented, _ := compareRoutes(t, b.srv.e, b.srv.doc)
	require.Equal(t, []string{"GET /api/secret"}, undocumented)
}

func TestCORSOffByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/api/spans", b.token(t, "acme", "alice"), map[string]string{"Origin": "https://evil.example"}, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.header.Get("Access-Control-Allow-Origin"))
	r = b.do(t, http.MethodOptions, "/api/spans", "", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, nil)
	require.Empty(t, r.header.Get("Access-Control-Allow-Origin"), "no CORS headers: a browser refuses the cross-origin call")
	require.Empty(t, r.header.Get("Access-Control-Allow-Headers"))
}

func TestCORSConfigured(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	r := b.do(t, http.MethodOptions, "/api/spans", "", map[string]string{"Origin": "https://app.example",
		"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}, nil)
	require.Equal(t, http.StatusNoContent, r.status, "%s", r.body)
	require.Equal(t, "https://app.example", r.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, r.header.Get("Access-Control-Allow-Headers"), "Idempotency-Key")
	r = b.do(t, http.MethodGet, "/api/spans", b.token(t, "acme", "alice"), map[string]string{"Origin": "https://app.example"}, nil)
	require.Equal(t, "https://app.example", r.header.Get("Access-Control-Allow-Origin"))
	r = b.do(t, http.MethodGet, "/api/spans", b.token(t, "acme", "alice"), map[string]string{"Origin": "https://evil.example"}, nil)
	require.Empty(t, r.header.Get("Access-Control-Allow-Origin"))
}

func TestHealthReadyAndPrometheus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/healthz", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"status":"ok"}`, string(r.body))
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/readyz", "", nil, nil).status)
	b.do(t, http.MethodGet, "/api/spans/"+"0190a0a0-0000-7000-8000-000000000001", b.token(t, "acme", "alice"), nil, nil)
	b.do(t, http.MethodGet, "/nowhere", "", nil, nil)
	r = b.do(t, http.MethodGet, "/metrics", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	body := string(r.body)
	require.Contains(t, body, `logline_http_requests_total{code="404",method="GET",route="/api/spans/:id"} 1`)
	require.Contains(t, body, `logline_http_requests_total{code="404",method="GET",route="unmatched"} 1`)
	require.NotContains(t, body, "0190a0a0", "series are per route, never per id")
	require.Contains(t, body, "logline_stream_subscribers")
	require.Contains(t, body, "go_goroutines")

	// A database that does not answer: alive, not ready.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	down := serveUnready(t, Config{Ledger: ledger.New(pool), Logger: slog.New(slog.DiscardHandler)})
	r = down.do(t, http.MethodGet, "/readyz", "", nil, nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Contains(t, string(r.body), "database")
	require.Equal(t, http.StatusOK, down.do(t, http.MethodGet, "/healthz", "", nil, nil).status)
}

// serveUnready is serve without waiting for readiness.
func serveUnready(t *testing.T, cfg Config) *bundle {
	srv, err := New(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &bundle{url: "http://" + ln.Addr().String(), srv: srv, client: &http.Client{}}
}

// Shutdown ends streams and waits, lets a request in flight finish, and
// returns.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	c := b.subscribe(t, tok, nil, "")
	c.start(t)
	fn := b.appendAs(t, ledger.User("acme", "alice"), span.Span{EntityType: "function", Who: "alice", This: "f", Code: "1"})[0]
	c.next(t)
	waiting := make(chan reply, 1)
	go func() {
		waiting <- b.do(t, http.MethodPost, "/api/execute?wait=30s", tok, nil, map[string]any{"span_id": fn.ID})
	}()
	eventually(t, func() bool {
		return strings.Contains(string(b.do(t, http.MethodGet, "/api/spans?entity_type=request&limit=1", tok, nil, nil).body), `"request"`)
	})
	start := time.Now()
	require.NoError(t, b.stop())
	require.Less(t, time.Since(start), 5*time.Second)
	select {
	case err := <-c.done:
		require.NoError(t, err, "the stream ends cleanly")
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after shutdown")
	}
	r := <-waiting
	require.Equal(t, http.StatusAccepted, r.status, "a pending wait answers 202: %s", r.body)
	_, err := b.client.Get(b.url + "/healthz")
	require.Error(t, err, "no longer listening")
}

func TestConfigChecks(t *testing.T) {
	t.Parallel()
	_, err := New(Config{})
	require.Error(t, err)
	_, err = New(Config{Ledger: ledger.New(nil), MaxBodyBytes: -1})
	require.Error(t, err)
}
