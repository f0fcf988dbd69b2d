package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/host/telemetry"
)

// serveOptions are the server settings `serve` and `dev` share.
type serveOptions struct {
	addr     string
	cors     []string
	maxBody  int64
	noEngine bool
	// logLevel and logFormat shape the server's structured log (stderr).
	logLevel, logFormat string
	// notify is on or off (--notify, else $LOGLINE_NOTIFY); pollInterval
	// how often the ledger is polled when it is off or LISTEN unavailable.
	notify       string
	pollInterval time.Duration
	// signinToken, set by dev, is the token of the one-time console
	// sign-in link runServer prints (never a flag: it is a secret).
	signinToken string
}

func (o *serveOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.addr, "addr", "", "API listen address, HOST:PORT (default $LOGLINE_ADDR, else "+defaultAddr+")")
	fs.StringArrayVar(&o.cors, "cors-origin", nil, "allow browsers from this origin (repeatable; * for any); CORS is off without it")
	fs.Int64Var(&o.maxBody, "max-body-bytes", 0, "largest request body accepted (default 64 MiB)")
	fs.BoolVar(&o.noEngine, "no-engine", false, "serve the API only; run no kernels (another process runs the engine)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error (debug adds every idle engine pass)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json (one object a line)")
	fs.StringVar(&o.notify, "notify", "", "ledger notifications: on (LISTEN; polls while LISTEN is unavailable) or off (poll only, e.g. behind PgBouncer in transaction mode); default $LOGLINE_NOTIFY, else on")
	fs.DurationVar(&o.pollInterval, "poll-interval", ledger.DefaultPoll, "how often the ledger is polled when notifications are off or unavailable")
}

// ledgerNotify is how the server's ledger learns what committed, from
// --notify (else $LOGLINE_NOTIFY) and --poll-interval.
func (a *app) ledgerNotify(cmd *cobra.Command, o *serveOptions) (ledger.Option, error) {
	from := "--notify"
	if !cmd.Flags().Changed("notify") {
		o.notify, from = a.getenv("LOGLINE_NOTIFY"), "--notify (from LOGLINE_NOTIFY)"
	}
	n := ledger.Notify{Poll: o.pollInterval}
	switch o.notify {
	case "", "on":
	case "off":
		n.Off = true
	default:
		return nil, flagErrorf("notify", "%s %q: want on or off", from, o.notify)
	}
	if o.pollInterval < 10*time.Millisecond || o.pollInterval > time.Hour {
		return nil, flagErrorf("poll-interval", "--poll-interval %s: want 10ms to 1h", o.pollInterval)
	}
	return ledger.WithNotify(n), nil
}

// logger is the server's log as --log-level and --log-format say.
func (o *serveOptions) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, flagErrorf("log-level", "--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, flagErrorf("log-format", "--log-format %q: want text or json", o.logFormat)
}

const defaultAddr = ":8080"

// listen binds --addr, else $LOGLINE_ADDR, else defaultAddr; the flag wins.
func (a *app) listen(cmd *cobra.Command, o *serveOptions) (net.Listener, error) {
	from := "--addr"
	if !cmd.Flags().Changed("addr") {
		o.addr = defaultAddr
		if v := a.getenv("LOGLINE_ADDR"); v != "" {
			o.addr, from = v, "--addr (from LOGLINE_ADDR)"
		}
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, &fieldError{field: "--addr", err: usageError{fmt.Errorf("%s: %w", from, err)}}
	}
	return ln, nil
}

func (a *app) serveCmd() *cobra.Command {
	var o serveOptions
	var keyFile string
	cmd := &cobra.Command{
		Use:   "serve [--addr HOST:PORT]",
		Short: "Serve the HTTP API (REST + SSE) on an existing, migrated database",
		Long: `Serves the API on DATABASE_URL until interrupted (SIGINT or SIGTERM: requests in flight
finish, streams end). The node key (--key, default $LOGLINE_KEY_FILE) signs the spans the
server seals and verifies bearer tokens, together with the keys the manifest trusts.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if _, err := o.logger(io.Discard); err != nil {
				return err // before anything starts
			}
			notify, err := a.ledgerNotify(cmd, &o)
			if err != nil {
				return err
			}
			if keyFile == "" {
				keyFile = a.nodeKeyFile()
			}
			var key *span.Key
			if keyFile != "" {
				if key, err = span.LoadKey(keyFile); err != nil {
					return usageError{err}
				}
			}
			u, err := a.dbURL()
			if err != nil {
				return err
			}
			l, err := ledger.Open(ctx, u, append(ledgerOptions(key), notify)...)
			if err != nil {
				return err
			}
			defer l.Close()
			if err := checkNodeKey(ctx, l); err != nil {
				return err
			}
			ln, err := a.listen(cmd, &o)
			if err != nil {
				return err
			}
			a.printf("serving %s (OpenAPI at /api/openapi.json); Ctrl-C stops\n", baseURL(ln.Addr()))
			if key == nil {
				a.printf("no node key: only tokens signed by a key the manifest trusts are accepted\n")
			}
			return a.runServer(ctx, l, key, ln, o)
		},
	}
	o.flags(cmd.Flags())
	cmd.Flags().StringVar(&keyFile, "key", "", "node key file (default $LOGLINE_KEY_FILE)")
	return cmd
}

// checkNodeKey refuses to serve when the manifest names the node key as an
// authority (stage0.Manifest.CheckAuthority says why) or does not check
// (stage0.Manifest.Check names the field); no manifest yet is fine.
func checkNodeKey(ctx context.Context, l *ledger.Ledger) error {
	_, err := stage0.New(l, nil, nil).LoadManifest(ctx)
	var r *stage0.Refusal
	if errors.As(err, &r) && (r.Code == stage0.CodeNodeKeyIsAuthority || r.Code == stage0.CodeInvalidManifest) {
		return usageError{fmt.Errorf("refusing to start: %s", r.Message)}
	}
	return nil
}

func ledgerOptions(key *span.Key) []ledger.Option {
	if key == nil {
		return nil
	}
	return []ledger.Option{ledger.WithKey(key)}
}

// runServer runs what a serving process runs on l until ctx ends — the
// HTTP API on ln and the engine (observer, request_worker and policy_agent
// for every tenant) — then shuts both down gracefully. Several processes
// may serve one database: the engine coordinates through Postgres.
func (a *app) runServer(ctx context.Context, l *ledger.Ledger, key *span.Key, ln net.Listener, o serveOptions) error {
	log, err := o.logger(a.io.err)
	if err != nil {
		return err
	}
	// OpenTelemetry traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
	// set (the standard variable); nothing otherwise.
	stopTraces, err := telemetry.Start(ctx, "logline")
	if err != nil {
		return usageError{fmt.Errorf("OpenTelemetry: %w", err)}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTraces(sctx)
	}()
	cfg := api.Config{
		Ledger:       l,
		Key:          key,
		CORSOrigins:  o.cors,
		MaxBodyBytes: o.maxBody,
		Logger:       log,
		Version:      serverVersion(),
	}
	var eng *engine.Engine
	if !o.noEngine {
		h, closeRT, err := stage0Host(ctx, l)
		if err != nil {
			return err
		}
		defer closeRT()
		eng = engine.New(l, h, engine.Config{Log: log})
		cfg.Collectors = eng.Collectors() // /metrics shows the engine and its sandbox too
		cfg.EngineStatus = func(tenant string) any { return eng.Status(tenant) }
	}
	srv, err := api.New(cfg)
	if err != nil {
		return usageError{err}
	}
	if o.signinToken != "" {
		link, err := srv.SigninLink(o.signinToken)
		if err != nil {
			return err
		}
		a.printf("console %s%s\n  (a one-time sign-in link, good for 15 minutes; the code stays out of logs and history)\n", baseURL(ln.Addr()), link)
	} else {
		a.printf("console %s/\n", baseURL(ln.Addr()))
	}
	if eng == nil {
		return srv.Serve(ctx, ln)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	engineErr := make(chan error, 1)
	go func() {
		err := eng.Run(ctx)
		if err != nil {
			cancel() // a server without its engine stops rather than limps
		}
		engineErr <- err
	}()
	err = srv.Serve(ctx, ln)
	cancel()
	return errors.Join(err, <-engineErr)
}

// baseURL is how a client on this machine reaches addr: a wildcard
// address becomes localhost.
func baseURL(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
