package engine_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/telemetry"
)

// otlpCollector stands in for an OpenTelemetry collector: it takes OTLP/HTTP
// protobuf trace exports and keeps each span's name and trace id.
type otlpCollector struct {
	mu    sync.Mutex
	spans map[string][]string // name → trace ids (hex)
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req collector.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans[s.Name] = append(c.spans[s.Name], hex.EncodeToString(s.TraceId))
			}
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (c *otlpCollector) traces(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans[name]...)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, an API request, the engine pass that
// runs its function and the execution are exported over OTLP, and the
// request and the execution share the ledger's trace_id (the caller's
// traceparent).
func TestOTLPTraces(t *testing.T) {
	// Not parallel: the tracer provider is process-wide, set from the environment.
	col := &otlpCollector{spans: map[string][]string{}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	shutdown, err := telemetry.Start(context.Background(), "logline-test")
	require.NoError(t, err)
	defer shutdown(context.Background())

	w := newWorld(t, nil)
	addr, node := serveWithEngine(t, w)
	fn := w.append(t, alice, jsFunction(`return 7`, "active", nil))[0]
	token, err := api.IssueToken(node, "acme", "alice", time.Hour, time.Now())
	require.NoError(t, err)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	body, _ := json.Marshal(map[string]any{"span_id": fn.ID, "input": nil})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/execute?wait=60s", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	// 200 with the outcome, or 202 when the wait ended first (the engine's
	// first pass compiles its kernels: under -race on a loaded machine that
	// can outlast the API's longest wait); the execution follows either way.
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, res.StatusCode)
	ex := w.execution(t, fn.ID, testTimeout)
	require.Equal(t, traceID, ex.TraceID, "the ledger records the caller's trace")

	eventually(t, testTimeout, "the exported spans", func() bool {
		return len(col.traces("POST /api/execute")) > 0 && len(col.traces("execution function")) > 0 &&
			len(col.traces("kernel pass request_worker")) > 0
	})
	require.Contains(t, col.traces("POST /api/execute"), traceID)
	require.Contains(t, col.traces("execution function"), traceID, "the execution joins the request's trace")
}
