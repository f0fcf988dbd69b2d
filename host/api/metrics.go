package api

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/telemetry"
)

// metrics are the server's Prometheus series. Each Server has its own
// registry, so several servers in one process (tests) do not collide.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	subscribers prometheus.Gauge
	events      prometheus.Counter
	dropped     prometheus.Counter
	rounds      prometheus.Counter
	fetches     prometheus.Histogram
	fetchErrors prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logline_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "logline_http_request_duration_seconds", Help: "HTTP request latency by route template and method (streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logline_stream_subscribers", Help: "Open SSE streams.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_stream_events_total", Help: "Span events written to SSE clients.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_stream_dropped_total", Help: "SSE clients disconnected for falling too far behind.",
		}),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_stream_rounds_total", Help: "Stream rounds: each reads what is new once per principal with open streams.",
		}),
		fetches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "logline_stream_fetch_seconds", Help: "Time to fetch new spans for one principal of the stream.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_stream_fetch_errors_total", Help: "Failed stream fetches (retried).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.subscribers, m.events, m.dropped, m.rounds, m.fetches, m.fetchErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// instrument counts every request under its route template (never the raw
// path, which would make one series per span id).
func (s *Server) instrument(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		// A span per request, continuing the caller's W3C trace
		// (traceparent); execute and prompt runs record its trace id in the
		// ledger (traceID).
		req := c.Request()
		ctx := otel.GetTextMapPropagator().Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		ctx, sp := telemetry.Tracer().Start(ctx, req.Method+" "+c.Path(), oteltrace.WithSpanKind(oteltrace.SpanKindServer),
			oteltrace.WithAttributes(attribute.String("http.request.method", req.Method), attribute.String("http.route", c.Path())))
		defer sp.End()
		c.SetRequest(req.WithContext(ctx))
		err := next(c)
		if err != nil {
			c.Error(err) // render it now, so the status below is the real one
		}
		route := c.Path()
		if route == "" || c.Response().Status == http.StatusNotFound && !isRoute(route) {
			route = "unmatched"
		}
		method := c.Request().Method
		status := c.Response().Status
		took := time.Since(start)
		s.m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
		if route != "/api/timeline/stream" && route != "/ssr/timeline/stream" {
			s.m.duration.WithLabelValues(route, method).Observe(took.Seconds())
		}
		// The request log: the route template, never the raw path or
		// query (which may carry ids a log should not keep), and the
		// principal the token named — never the token.
		attrs := []slog.Attr{slog.String("method", method), slog.String("route", route), slog.Int("status", status),
			slog.Duration("duration", took), slog.Int64("bytes", c.Response().Size)}
		if p, ok := c.Get(principalKey).(ledger.Principal); ok {
			attrs = append(attrs, slog.String("tenant", p.Tenant), slog.String("user", p.User))
			sp.SetAttributes(attribute.String("logline.tenant", p.Tenant), attribute.String("logline.user", p.User))
		}
		sp.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			sp.SetStatus(codes.Error, http.StatusText(status))
		}
		level := slog.LevelInfo
		switch {
		case status == http.StatusServiceUnavailable:
			level = slog.LevelWarn // not ready yet, or shutting down
		case status >= 500:
			level = slog.LevelError
		}
		s.log.LogAttrs(c.Request().Context(), level, "http request", attrs...)
		return nil
	}
}

func isRoute(path string) bool {
	for _, o := range append(routes, ssrRoutes...) {
		if o.path == path {
			return true
		}
	}
	return false
}

func (s *Server) prometheus(c echo.Context) error {
	promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(c.Response(), c.Request())
	return nil
}

// execMetrics is the seed's GET /api/metrics answer.
type execMetrics struct {
	Counts  []dayCount   `json:"counts"`
	Latency []dayLatency `json:"latency"`
}

type dayCount struct {
	Day    string `json:"day"`
	Status string `json:"status"`
	N      int64  `json:"n"`
}

type dayLatency struct {
	Day   string   `json:"day"`
	AvgMs *float64 `json:"avg_ms"`
	P95Ms *float64 `json:"p95_ms"`
}

func (s *Server) metrics(c echo.Context) error {
	days := 30
	if v := c.QueryParam("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 366 {
			return fail(codeMalformed, "days", "days must be an integer from 1 to 366, got %q", v)
		}
		days = n
	}
	now := time.Now().UTC()
	since := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1-days)
	st, err := s.l.ExecutionStats(c.Request().Context(), principal(c), since)
	if err != nil {
		return err
	}
	out := execMetrics{Counts: []dayCount{}, Latency: []dayLatency{}}
	for _, x := range st.Counts {
		out.Counts = append(out.Counts, dayCount{Day: x.Day, Status: x.Status, N: x.N})
	}
	for _, x := range st.Latency {
		out.Latency = append(out.Latency, dayLatency{Day: x.Day, AvgMs: x.AvgMs, P95Ms: x.P95Ms})
	}
	return writeJSON(c, http.StatusOK, "application/json", out)
}
