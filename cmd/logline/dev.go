package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
	"github.com/logline/logline/host/span"
)

// devInfo is what `logline dev` writes to <data dir>/dev.json for scripts.
type devInfo struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	Tenant      string `json:"tenant"`
	User        string `json:"user"`
	DatabaseURL string `json:"database_url"`
	KeyFile     string `json:"key_file"`
	PublicKey   string `json:"public_key"`
}

// The dev token's principal unless --tenant/--user say otherwise (the
// README's tour acts as the same one), and how long it lasts: a new one is
// made at every start.
const (
	devTenant   = "acme"
	devUser     = "alice"
	devTokenTTL = 30 * 24 * time.Hour
)

func (a *app) devCmd() *cobra.Command {
	var dataDir string
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "dev [--data DIR] [--addr HOST:PORT]",
		Short: "Private PostgreSQL (unless DATABASE_URL is set) + migrate + seed + serve the API; stays up until Ctrl-C",
		Long: `Starts a private PostgreSQL from this machine's server binaries under DIR/pg
(as an unprivileged user when run as root), migrates it, makes a dev key (DIR/dev.key) once,
seeds the manifest trusting it, and serves the API on --addr (default :8080). It prints the
URL and a dev token (for --tenant/--user, default acme/alice) and writes them to DIR/dev.json
with database_url. Ctrl-C stops the server and the database. A second start reuses the data.
With DATABASE_URL (or --database-url) it uses that server instead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			p := ledger.User(devTenant, devUser)
			if a.hasPrincipal() {
				var err error
				if p, err = a.principal(); err != nil {
					return err
				}
			}
			dbURL := a.databaseURL
			if dbURL == "" {
				dbURL = a.getenv("DATABASE_URL")
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("error creating data directory: %w", err)
			}
			// Bind first: a busy port should fail before anything starts.
			ln, err := net.Listen("tcp", o.addr)
			if err != nil {
				return usageError{fmt.Errorf("--addr: %w", err)}
			}
			defer ln.Close()
			if dbURL == "" {
				srv, err := localpg.Start(ctx, localpg.Config{DataDir: filepath.Join(dataDir, "pg"), Durable: true})
				if err != nil {
					return fmt.Errorf("error starting private PostgreSQL: %w", err)
				}
				defer srv.Stop() //nolint:errcheck
				dbURL = srv.URL("postgres")
			}
			from, to, err := ledger.Migrate(ctx, dbURL)
			if err != nil {
				return err
			}
			// A dev key, made once: it signs what the host records and the
			// seeded manifest trusts it, so kernels signed with it may boot
			// and tokens signed with it are accepted.
			keyFile := filepath.Join(dataDir, "dev.key")
			key, err := span.LoadKey(keyFile)
			if errors.Is(err, fs.ErrNotExist) {
				if key, err = span.GenerateKey(); err == nil {
					err = span.WriteKeyFile(keyFile, key)
				}
			}
			if err != nil {
				return fmt.Errorf("dev key %s: %w", keyFile, err)
			}
			l, err := ledger.Open(ctx, dbURL, ledger.WithKey(key))
			if err != nil {
				return err
			}
			defer l.Close()
			added, _, err := seed(ctx, l, ledger.User(operatorTenant, operatorUser), key)
			if err != nil {
				return err
			}
			token, err := api.IssueToken(key, p.Tenant, p.User, devTokenTTL, time.Now())
			if err != nil {
				return err
			}
			url := baseURL(ln.Addr())
			info, err := json.MarshalIndent(devInfo{URL: url, Token: token, Tenant: p.Tenant, User: p.User,
				DatabaseURL: dbURL, KeyFile: keyFile, PublicKey: key.PublicHex()}, "", "  ")
			if err != nil {
				return err
			}
			infoPath := filepath.Join(dataDir, "dev.json")
			if err := os.WriteFile(infoPath, append(info, '\n'), 0o600); err != nil {
				return fmt.Errorf("error writing %s: %w", infoPath, err)
			}
			a.printf("schema version %d (was %d); seeded %d spans\n", to, from, added)
			a.printf("dev key %s (public %s), trusted by the manifest\n", keyFile, key.PublicHex())
			a.printf("DATABASE_URL=%s\n", dbURL)
			a.printf("API %s (OpenAPI at %s/api/openapi.json)\n", url, url)
			a.printf("TOKEN=%s\n", token)
			a.printf("  (acts as user %s in tenant %s for %d days)\n", p.User, p.Tenant, int(devTokenTTL/(24*time.Hour)))
			a.printf("wrote %s; Ctrl-C stops\n", infoPath)
			err = a.runServer(ctx, l, key, ln, o)
			a.printf("stopping\n")
			return err
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", ".logline", "directory for the private database, the dev key and dev.json")
	o.flags(cmd.Flags())
	return cmd
}
