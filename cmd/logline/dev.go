package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
	"github.com/logline/logline/host/span"
)

// devInfo is what `logline dev` writes to <data dir>/dev.json for scripts.
type devInfo struct {
	DatabaseURL string `json:"database_url"`
	KeyFile     string `json:"key_file"`
	PublicKey   string `json:"public_key"`
}

func (a *app) devCmd() *cobra.Command {
	var dataDir, addr string
	cmd := &cobra.Command{
		Use:   "dev [--data DIR] [--addr HOST:PORT]",
		Short: "Private PostgreSQL (unless DATABASE_URL is set) + migrate + seed; stays up until Ctrl-C",
		Long: `Starts a private PostgreSQL from this machine's server binaries under DIR/pg
(as an unprivileged user when run as root), migrates it, makes a dev key (DIR/dev.key) once,
seeds the manifest trusting it, writes DIR/dev.json and stays
up until interrupted. A second start reuses the data. With DATABASE_URL (or
--database-url) it uses that server instead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			_ = addr // the API server comes with the HTTP API issue
			dbURL := a.databaseURL
			if dbURL == "" {
				dbURL = a.getenv("DATABASE_URL")
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("error creating data directory: %w", err)
			}
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
			// seeded manifest trusts it, so kernels signed with it may boot.
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
			added, _, err := seed(ctx, l, ledger.User(operatorTenant, operatorUser), key)
			l.Close()
			if err != nil {
				return err
			}
			info, err := json.MarshalIndent(devInfo{DatabaseURL: dbURL, KeyFile: keyFile, PublicKey: key.PublicHex()}, "", "  ")
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
			a.printf("wrote %s; Ctrl-C stops\n", infoPath)
			<-ctx.Done()
			a.printf("stopping\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", ".logline", "directory for the private database and dev.json")
	cmd.Flags().StringVar(&addr, "addr", ":8080", "API listen address (served once the HTTP API lands)")
	return cmd
}
