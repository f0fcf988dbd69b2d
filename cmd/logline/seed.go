package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/seeds"
)

// Seed spans belong to the operator unless --tenant/--user say otherwise.
const (
	operatorTenant = "logline"
	operatorUser   = "operator"
)

func (a *app) seedCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "seed [--key FILE]",
		Short: "Load the seed spans (manifest, stock kernels and policies); idempotent",
		Long: `Loads seeds/*.ndjson. A seed span whose content already is the latest version of its id
is skipped; a changed one is appended as the next version. With --key the spans are signed
by that key and the manifest trusts it (trusted_keys), so kernels signed with it may boot.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			p := ledger.User(operatorTenant, operatorUser)
			if a.hasPrincipal() {
				var err error
				if p, err = a.principal(); err != nil {
					return err
				}
			}
			var key *span.Key
			if keyFile != "" {
				var err error
				if key, err = span.LoadKey(keyFile); err != nil {
					return usageError{err}
				}
			}
			l, err := a.open(ctx, a.nodeKeyFile())
			if err != nil {
				return err
			}
			defer l.Close()
			added, kept, err := seed(ctx, l, p, key)
			if err != nil {
				return err
			}
			if a.json {
				return a.writeJSON(map[string]int{"appended": added, "unchanged": kept})
			}
			a.printf("seeded: %d appended, %d unchanged\n", added, kept)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "sign the seed spans with this key and trust it in the manifest")
	return cmd
}

// seed loads the seed spans (seeds.Load).
func seed(ctx context.Context, l *ledger.Ledger, p ledger.Principal, key *span.Key) (added, kept int, err error) {
	return seeds.Load(ctx, l, p, key)
}
