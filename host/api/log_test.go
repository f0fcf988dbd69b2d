package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

// syncBuffer is a log sink the server writes from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every request is logged with its method, route template, status,
// duration and the token's principal — never the token, never the raw
// path's ids.
func TestRequestLog(t *testing.T) {
	t.Parallel()
	var sink syncBuffer
	b := setup(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&sink, nil)) })
	token := b.token(t, "acme", "alice")
	s := b.appendAs(t, ledger.User("acme", "alice"), note("n", "private"))[0]
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/api/spans/"+s.ID, token, nil, nil).status)
	require.Equal(t, http.StatusUnauthorized, b.do(t, http.MethodGet, "/api/spans", "", nil, nil).status)

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(sink.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		if m["msg"] == "http request" {
			lines = append(lines, m)
		}
	}
	find := func(route string, status float64) map[string]any {
		for _, m := range lines {
			if m["route"] == route && m["status"] == status {
				return m
			}
		}
		t.Fatalf("no request log for %s %v in %v", route, status, lines)
		return nil
	}
	got := find("/api/spans/:id", 200)
	require.Equal(t, "GET", got["method"])
	require.Equal(t, "acme", got["tenant"])
	require.Equal(t, "alice", got["user"])
	require.Contains(t, got, "duration")
	require.NotContains(t, find("/api/spans", 401), "tenant", "no principal without a valid token")
	require.NotContains(t, sink.String(), token, "never the token")
	require.NotContains(t, sink.String(), s.ID, "the route template, not the path")
}
