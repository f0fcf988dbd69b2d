package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	// KeyFile is the node key: it signs what the host records and seals,
	// and the dev token. It confers no authority.
	KeyFile   string `json:"key_file"`
	PublicKey string `json:"public_key"`
	// OperatorKeyFile is the authority: it signed the seed spans and the
	// seeded manifest trusts it (kernels it signs may boot).
	OperatorKeyFile   string `json:"operator_key_file"`
	OperatorPublicKey string `json:"operator_public_key"`
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
(as an unprivileged user when run as root), migrates it, makes two keys once — an operator key
(DIR/operator.key) that signs the seeds and that the seeded manifest trusts, and a node key
(DIR/node.key) that signs what the host records and confers no authority — and serves the API
on --addr (default $LOGLINE_ADDR, else :8080). It prints the
URL and a dev token (for --tenant/--user, default acme/alice) and writes them to DIR/dev.json
with database_url. Ctrl-C stops the server and the database. A second start reuses the data.
With DATABASE_URL (or --database-url) it uses that server instead.`,
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
			p := ledger.User(devTenant, devUser)
			if a.hasPrincipal() {
				if p, err = a.principal(); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("data") {
				dataDir = a.devDir()
			}
			dbURL := a.databaseURL
			if dbURL == "" {
				dbURL = a.getenv("DATABASE_URL")
			}
			_, statErr := os.Stat(dataDir)
			created := errors.Is(statErr, fs.ErrNotExist)
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("error creating data directory: %w", err)
			}
			serving := false
			defer func() {
				// A first start that failed leaves nothing behind: no empty
				// or half-made data directory to trip over next time.
				if created && !serving {
					_ = os.RemoveAll(dataDir)
				}
			}()
			// One logline dev per data directory: the message names that
			// process, not the postgres it started.
			release, err := localpg.Claim(filepath.Join(dataDir, "dev.pid"))
			if err != nil {
				return fmt.Errorf("data directory %s is in use by logline dev (%w); stop it first (Ctrl-C in its terminal)", dataDir, err)
			}
			defer release()
			// Bind first: a busy port should fail before anything starts.
			ln, err := a.listen(cmd, &o)
			if err != nil {
				return err
			}
			defer ln.Close()
			if dbURL == "" {
				pgDir := filepath.Join(dataDir, "pg")
				if _, err := os.Stat(filepath.Join(pgDir, "PG_VERSION")); err != nil {
					a.printf("creating a private PostgreSQL in %s (initdb: the first start only)...\n", pgDir)
				} else {
					a.printf("starting the private PostgreSQL in %s...\n", pgDir)
				}
				srv, err := localpg.Start(ctx, localpg.Config{DataDir: pgDir, Durable: true})
				if err != nil {
					return fmt.Errorf("error starting private PostgreSQL: %w", err)
				}
				defer srv.Stop() //nolint:errcheck
				dbURL = srv.URL("postgres")
			}
			a.printf("migrating...\n")
			from, to, err := ledger.Migrate(ctx, dbURL)
			if err != nil {
				return err
			}
			opKeyFile, keyFile, err := devKeyFiles(dataDir)
			if err != nil {
				return err
			}
			opKey, err := loadOrMakeKey(opKeyFile)
			if err != nil {
				return err
			}
			key, err := loadOrMakeKey(keyFile)
			if err != nil {
				return err
			}
			l, err := ledger.Open(ctx, dbURL, ledger.WithKey(key), notify)
			if err != nil {
				return err
			}
			defer l.Close()
			a.printf("seeding...\n")
			added, _, err := seed(ctx, l, ledger.User(operatorTenant, operatorUser), opKey)
			if err != nil {
				return err
			}
			if err := checkNodeKey(ctx, l); err != nil {
				return err
			}
			token, err := api.IssueToken(key, p.Tenant, p.User, devTokenTTL, time.Now())
			if err != nil {
				return err
			}
			url := baseURL(ln.Addr())
			info, err := json.MarshalIndent(devInfo{URL: url, Token: token, Tenant: p.Tenant, User: p.User,
				DatabaseURL: dbURL, KeyFile: keyFile, PublicKey: key.PublicHex(),
				OperatorKeyFile: opKeyFile, OperatorPublicKey: opKey.PublicHex()}, "", "  ")
			if err != nil {
				return err
			}
			infoPath := filepath.Join(dataDir, "dev.json")
			if err := os.WriteFile(infoPath, append(info, '\n'), 0o600); err != nil {
				return fmt.Errorf("error writing %s: %w", infoPath, err)
			}
			a.printf("schema version %d (was %d); seeded %d spans\n", to, from, added)
			a.printf("operator key %s (public %s), trusted by the manifest\n", opKeyFile, opKey.PublicHex())
			a.printf("node key %s (public %s): signs what the host records, confers no authority\n", keyFile, key.PublicHex())
			a.printf("DATABASE_URL=%s\n", dbURL)
			a.printf("API %s (OpenAPI at %s/api/openapi.json)\n", url, url)
			a.printf("TOKEN=%s\n", token)
			a.printf("  (acts as user %s in tenant %s for %d days)\n", p.User, p.Tenant, int(devTokenTTL/(24*time.Hour)))
			a.printf("wrote %s; Ctrl-C stops\n", infoPath)
			if !o.noEngine {
				a.printf("the engine loads its kernels in the background (a cold machine compiles the QuickJS guest into the cache first: up to a minute)\n")
			}
			serving = true
			o.signinToken = token
			err = a.runServer(ctx, l, key, ln, o)
			a.printf("stopping\n")
			return err
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", ".logline", "directory for the private database, the dev keys and dev.json (default $LOGLINE_DATA, else .logline)")
	o.flags(cmd.Flags())
	return cmd
}

// devKeyFiles are the absolute paths of the dev data directory's operator
// and node keys. A directory made before the two were split has one key,
// dev.key, which its manifest trusts: it becomes the operator key (and a
// new node key is made), so the host's seal stops conferring authority
// without re-seeding anything.
func devKeyFiles(dataDir string) (operator, node string, err error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", "", err
	}
	operator, node = filepath.Join(dir, "operator.key"), filepath.Join(dir, "node.key")
	legacy := filepath.Join(dir, "dev.key")
	if _, err := os.Stat(operator); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(legacy); err == nil {
			if err := os.Rename(legacy, operator); err != nil {
				return "", "", fmt.Errorf("error making %s the operator key: %w", legacy, err)
			}
		}
	}
	return operator, node, nil
}

// loadOrMakeKey loads the key in file, making it first if there is none.
func loadOrMakeKey(file string) (*span.Key, error) {
	key, err := span.LoadKey(file)
	if errors.Is(err, fs.ErrNotExist) {
		if key, err = span.GenerateKey(); err == nil {
			err = span.WriteKeyFile(file, key)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", file, err)
	}
	return key, nil
}
