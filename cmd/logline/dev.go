package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/localpg"
)

// devInfo is what `logline dev` writes to <data dir>/dev.json for scripts.
type devInfo struct {
	DatabaseURL string `json:"database_url"`
}

func (a *app) devCmd() *cobra.Command {
	var dataDir, addr string
	cmd := &cobra.Command{
		Use:   "dev [--data DIR] [--addr HOST:PORT]",
		Short: "Private PostgreSQL (unless DATABASE_URL is set) + migrate; stays up until Ctrl-C",
		Long: `Starts a private PostgreSQL from this machine's server binaries under DIR/pg
(as an unprivileged user when run as root), migrates it, writes DIR/dev.json and stays
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
			info, err := json.MarshalIndent(devInfo{DatabaseURL: dbURL}, "", "  ")
			if err != nil {
				return err
			}
			infoPath := filepath.Join(dataDir, "dev.json")
			if err := os.WriteFile(infoPath, append(info, '\n'), 0o600); err != nil {
				return fmt.Errorf("error writing %s: %w", infoPath, err)
			}
			a.printf("schema version %d (was %d)\n", to, from)
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
