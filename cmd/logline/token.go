package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/span"
)

// defaultTokenTTL is how long `token create` tokens last unless --ttl says.
const defaultTokenTTL = 24 * time.Hour

func (a *app) tokenCmd() *cobra.Command {
	var keyFile string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --tenant T --user U [--key FILE] [--ttl D]",
		Short: "Print a bearer token for the API, bound to (tenant, user)",
		Long: `Prints a bearer token (a JWT signed with --key, default $LOGLINE_KEY_FILE) that makes every
API request act as --user in --tenant until it expires (--ttl, default 24h). The server accepts
it when the key is its node key or one the manifest trusts. Needs no database.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			p, err := a.principal()
			if err != nil {
				return err
			}
			if keyFile == "" {
				keyFile = a.nodeKeyFile()
			}
			if keyFile == "" {
				return usagef("token create: --key FILE (or $LOGLINE_KEY_FILE) is required")
			}
			if ttl <= 0 {
				return usagef("token create: --ttl must be positive")
			}
			k, err := span.LoadKey(keyFile)
			if err != nil {
				return usageError{err}
			}
			now := time.Now().Truncate(time.Second)
			tok, err := api.IssueToken(k, p.Tenant, p.User, ttl, now)
			if err != nil {
				return usageError{err}
			}
			if a.json {
				return a.writeJSON(map[string]string{"token": tok, "tenant": p.Tenant, "user": p.User,
					"expires_at": now.Add(ttl).UTC().Format(time.RFC3339), "public_key": k.PublicHex()})
			}
			a.printf("%s\n", tok)
			return nil
		},
	}
	create.Flags().StringVar(&keyFile, "key", "", "signing key file (default $LOGLINE_KEY_FILE)")
	create.Flags().DurationVar(&ttl, "ttl", defaultTokenTTL, "how long the token is valid")
	return group("token", "Make API bearer tokens", create)
}
