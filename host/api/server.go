// Package api is the HTTP room: the seed's REST and Server-Sent Events API
// (Bluebook §7, contract §7) on echo, for many tenants.
//
// Every request acts as the (tenant, user) of its bearer token, never as
// anything a body says, and reaches the database only through host/ledger
// under that principal, so row-level security decides what it reads and
// writes. The stream follows the ledger with one LISTEN per server and one
// cursor query per distinct principal among its subscribers.
//
// It imports host/ledger, host/span and host/stage0 (for the manifest's
// trusted keys); it never talks SQL and never runs code.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// Config configures a Server. Zero fields take the defaults documented on
// them; New checks the rest.
type Config struct {
	// Collectors are more Prometheus collectors /metrics serves (the
	// engine's: engine.Engine.Collectors).
	Collectors []prometheus.Collector
	// Ledger is the span store. Required.
	Ledger *ledger.Ledger
	// Key is the node key. Tokens it signed are accepted, besides tokens
	// signed by a key the manifest trusts. The ledger signs what it seals
	// with its own key (ledger.WithKey), normally the same one.
	Key *span.Key
	// MaxBodyBytes bounds a request body; larger ones get 413. Default
	// 64 MiB (a span may carry a 16 MiB module, base64).
	MaxBodyBytes int64
	// CORSOrigins lists the origins browsers may call the API from ("*" for
	// any). Empty: CORS is off, no CORS headers are sent.
	CORSOrigins []string
	// MaxWait caps ?wait on POST /api/execute. Default 30s.
	MaxWait time.Duration
	// Heartbeat is the interval of SSE comments that keep idle streams (and
	// proxies) alive. Default 15s.
	Heartbeat time.Duration
	// StreamBuffer is how many bytes of events an SSE client may leave
	// unread (queued for it, or being written, but not yet taken by its
	// connection): a client behind on earlier events that more events take
	// past it is disconnected (it can resume with Last-Event-ID); a burst
	// that finds it caught up is let through whole. Default 16 MiB.
	StreamBuffer int
	// StreamWriteTimeout bounds one write to an SSE client: a client that
	// takes nothing for that long (at least 3/4 of it: the deadline moves
	// once per quarter) is dropped as slow. Default 60s.
	StreamWriteTimeout time.Duration
	// ShutdownTimeout bounds how long Serve waits for requests in flight
	// once its context ends. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives errors and lifecycle events. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock tokens are checked against. Default time.Now.
	Now func() time.Time
	// Version is the server's version, as GET /api/status reports it.
	Version string
	// EngineStatus, when the process runs an engine, reports how its loops
	// last ran for a tenant (engine.Engine.Status): GET /api/status shows
	// it to that tenant's principals only.
	EngineStatus func(tenant string) any
}

// Server is the HTTP API. Make it with New and run it with Serve.
type Server struct {
	cfg  Config
	l    *ledger.Ledger
	log  *slog.Logger
	e    *echo.Echo
	auth *authenticator
	hub  *hub
	reg  *prometheus.Registry
	m    *metrics
	doc  []byte

	signins  signins           // open sign-in links (SigninLink)
	examples map[string]*asset // the HTML adapter's example page and its files (ssr.go)

	listening atomic.Bool // the notice listener is connected
	polling   atomic.Bool // ... and polls: ledger notifications are off or unavailable
	served    atomic.Bool
}

// New checks cfg and builds the server.
func New(cfg Config) (*Server, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("api: Config.Ledger is required")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 30 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.StreamBuffer == 0 {
		cfg.StreamBuffer = 16 << 20
	}
	if cfg.StreamWriteTimeout == 0 {
		cfg.StreamWriteTimeout = 60 * time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxWait < 0 || cfg.Heartbeat < 0 || cfg.StreamBuffer < 0 || cfg.StreamWriteTimeout < 0 || cfg.ShutdownTimeout < 0 {
		return nil, errors.New("api: Config limits must not be negative")
	}
	s := &Server{cfg: cfg, l: cfg.Ledger, log: cfg.Logger, reg: prometheus.NewRegistry()}
	s.m = newMetrics(s.reg)
	for _, c := range cfg.Collectors {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: registering a collector: %w", err)
		}
	}
	s.auth = newAuthenticator(cfg.Key, stage0.New(cfg.Ledger, nil, nil), cfg.Now, cfg.Logger)
	s.hub = newHub(cfg.Ledger, s.m, cfg.Logger)
	doc, err := OpenAPIDocument()
	if err != nil {
		return nil, fmt.Errorf("api: building the OpenAPI document: %w", err)
	}
	s.doc = doc

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.instrument) // outermost, so it counts what the others answer
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("panic serving request", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
			return err
		},
	}))
	if len(cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodOptions},
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, "Idempotency-Key", "Last-Event-ID"},
			ExposeHeaders: []string{echo.HeaderLocation, "Idempotent-Replayed"},
			MaxAge:        600,
		}))
	}
	if err := s.register(e, routes, s.authenticate); err != nil {
		return nil, err
	}
	if s.examples, err = loadAssets(examplesFS, examplesCSP); err != nil {
		return nil, fmt.Errorf("api: reading the examples: %w", err)
	}
	if err := s.register(e, ssrRoutes, s.ssrAuthenticate); err != nil { // the HTML adapter, outside the API's table (ssr.go)
		return nil, err
	}
	if err := s.registerConsole(e); err != nil {
		return nil, err
	}
	s.e = e
	return s, nil
}

// Serve serves the API on ln until ctx ends, then shuts down gracefully:
// it stops accepting, ends every stream and pending wait, lets requests in
// flight finish (up to ShutdownTimeout) and returns nil. It also runs the
// ledger listener that feeds the stream and keeps the trusted keys fresh.
// A Server serves once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("api: a Server serves only once")
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	s.auth.refresh(ctx)

	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.l.Listen(bg, func(n ledger.Notice) {
			if n.Gap {
				s.listening.Store(true)
				if s.polling.Swap(n.Poll) != n.Poll {
					switch {
					case !n.Poll:
						s.log.Info("stream: ledger notifications: listening again")
					case n.Err == nil:
						s.log.Info("stream: ledger notifications off; polling the ledger")
					default:
						s.log.Warn("stream: ledger notifications unavailable; polling the ledger", "err", n.Err)
					}
				}
			}
			if n.Gap || n.ID == stage0.ManifestID {
				// Off the listener goroutine: it reads the ledger.
				go s.auth.refresh(bg)
			}
			s.hub.poke()
		})
		if err != nil {
			s.log.Error("ledger listener stopped", "err", err)
		}
		s.listening.Store(false)
	})
	wg.Go(func() { s.hub.run(bg) })

	hs := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return bg },
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		// Streams and waits never end on their own: end them first, so
		// Shutdown only waits for ordinary requests.
		s.hub.close()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		err = hs.Shutdown(sctx)
		cancel()
		if err != nil {
			_ = hs.Close()
		}
		<-served
	}
	s.hub.close()
	stop()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// ListenAndServe listens on addr (":8080" when empty) and Serves.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if addr == "" {
		addr = ":8080"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.Serve(ctx, ln)
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/json", s.doc)
}

type health struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (s *Server) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, "application/json", health{Status: "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.l.Pool().Ping(ctx); err != nil {
		return writeJSON(c, http.StatusServiceUnavailable, "application/json", health{Status: "unavailable", Detail: "database: " + err.Error()})
	}
	if !s.listening.Load() {
		return writeJSON(c, http.StatusServiceUnavailable, "application/json", health{Status: "unavailable", Detail: "the ledger listener is not connected"})
	}
	if s.polling.Load() {
		// Ready: the stream and the waits work, a poll interval later.
		return writeJSON(c, http.StatusOK, "application/json", health{Status: "ok", Detail: "polling the ledger: notifications are off or unavailable"})
	}
	return writeJSON(c, http.StatusOK, "application/json", health{Status: "ok"})
}
