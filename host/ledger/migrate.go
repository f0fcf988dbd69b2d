package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"github.com/logline/logline/migrations"
)

// migrateLock serialises concurrent Migrate calls on one database.
const migrateLock = 0x6c6f676c696e65 // "logline"

// Migrate applies the embedded migrations to databaseURL, idempotently.
// It runs as the URL's user, which becomes the owner of the ledger and must
// be allowed to create roles (or the logline_app role must exist with that
// user as a member).
func Migrate(ctx context.Context, databaseURL string) (from, to int32, err error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return 0, 0, fmt.Errorf("error connecting to migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The version table lives in the ledger schema, which must exist first;
	// the lock keeps two migrators from racing to create it.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
		return 0, 0, fmt.Errorf("error locking for migration: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLock) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS ledger`); err != nil {
		return 0, 0, fmt.Errorf("error creating schema ledger: %w", err)
	}
	m, err := migrate.NewMigrator(ctx, conn, "ledger.schema_version")
	if err != nil {
		return 0, 0, fmt.Errorf("error preparing migrations: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return 0, 0, fmt.Errorf("error loading migrations: %w", err)
	}
	if from, err = m.GetCurrentVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("error reading schema version: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return from, 0, fmt.Errorf("error migrating from version %d: %w", from, err)
	}
	to, err = m.GetCurrentVersion(ctx)
	return from, to, err
}
