package main

import (
	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
)

func (a *app) migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ledger schema (idempotent)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := a.dbURL()
			if err != nil {
				return err
			}
			from, to, err := ledger.Migrate(cmd.Context(), u)
			if err != nil {
				return err
			}
			if a.json {
				return a.writeJSON(map[string]int32{"from": from, "to": to})
			}
			if from == to {
				a.printf("schema is up to date (version %d)\n", to)
			} else {
				a.printf("migrated schema from version %d to %d\n", from, to)
			}
			return nil
		},
	}
}

// noArgs is cobra.NoArgs with a usage error (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
