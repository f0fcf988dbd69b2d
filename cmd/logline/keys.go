package main

import (
	"github.com/spf13/cobra"

	"github.com/logline/logline/host/span"
)

func (a *app) keysCmd() *cobra.Command {
	var out string
	gen := &cobra.Command{
		Use:   "gen --out FILE",
		Short: "Generate a key: the 32-byte seed as 64 hex chars in FILE (mode 0600); prints the public key",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			if out == "" {
				return usagef("keys gen: --out FILE is required")
			}
			k, err := span.GenerateKey()
			if err != nil {
				return err
			}
			if err := span.WriteKeyFile(out, k); err != nil {
				return usageError{err}
			}
			if a.json {
				return a.writeJSON(map[string]string{"file": out, "public_key": k.PublicHex()})
			}
			a.printf("%s\n", k.PublicHex())
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", "", "file to write the private key seed to (must not exist)")
	return group("keys", "Manage Ed25519 signing keys", gen)
}
