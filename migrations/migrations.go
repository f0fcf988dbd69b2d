// Package migrations embeds the SQL migrations of the ledger schema. They are
// numbered (NNN_name.sql) and applied in order by host/ledger.Migrate.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
