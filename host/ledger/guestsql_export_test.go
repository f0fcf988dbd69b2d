package ledger

import "context"

// CheckGuestSQL is the allowlist check, for its table test.
var CheckGuestSQL = checkGuestSQL

// GuestSQLUnchecked is GuestSQL without the allowlist, to test what
// Postgres itself refuses to the guest role.
func (l *Ledger) GuestSQLUnchecked(ctx context.Context, p Principal, query string, params []any, lim GuestLimits) (GuestRows, error) {
	return l.guestSQL(ctx, p, query, params, lim, false)
}
