package main

import (
	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
)

func (a *app) verifyCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "verify [ID ...] [--all]",
		Short: "Recompute hashes, check signatures and chains; names each failing span; exit 1 if any",
		Long: `Checks every version of the given span ids, or with --all every span. Without
--tenant/--user it reads as the system principal (every tenant); with them, only what
that principal may see.`,
		RunE: func(cmd *cobra.Command, ids []string) error {
			if all == (len(ids) > 0) {
				return usagef("verify: give span ids or --all (not both)")
			}
			p := ledger.System()
			if a.hasPrincipal() {
				var err error
				if p, err = a.principal(); err != nil {
					return err
				}
			}
			l, err := a.open(cmd.Context(), "")
			if err != nil {
				return err
			}
			defer l.Close()
			rep, err := l.Verify(cmd.Context(), p, ledger.Scope{IDs: ids})
			if err != nil {
				return err
			}
			// Ids nobody can see are a failed check, not a pass.
			none := len(ids) > 0 && rep.Checked == 0
			ok := rep.OK() && !none
			if a.json {
				out := struct {
					OK       bool             `json:"ok"`
					Checked  int              `json:"checked"`
					Signed   int              `json:"signed"`
					Failures []ledger.Failure `json:"failures"`
				}{OK: ok, Checked: rep.Checked, Signed: rep.Signed, Failures: append([]ledger.Failure{}, rep.Failures...)}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else {
				for _, f := range rep.Failures {
					a.printf("FAIL %s\n", f)
				}
				a.printf("%d spans checked (%d signed), %d failed\n", rep.Checked, rep.Signed, len(rep.Failures))
			}
			if none && !a.json { // the JSON report says checked: 0
				a.printf("no span with the given ids is visible\n")
			}
			if !ok {
				return errCheckFailed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "verify every span visible to the principal")
	return cmd
}
