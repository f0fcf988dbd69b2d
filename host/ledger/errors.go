package ledger

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes callers branch on. Errors returned by the ledger wrap one of these
// (test with errors.Is) and carry the database's detail in their message.
var (
	// ErrNotFound: no span with that id is visible to the principal.
	ErrNotFound = errors.New("span not found")
	// ErrSeqConflict: seq is not latest+1 for its id (someone else appended
	// first, or the id already exists).
	ErrSeqConflict = errors.New("seq conflict")
	// ErrChain: prev_hash does not match the previous version's curr_hash.
	ErrChain = errors.New("broken chain")
	// ErrForbidden: RLS or the tier rules refuse the write.
	ErrForbidden = errors.New("forbidden")
	// ErrAppendOnly: UPDATE, DELETE or TRUNCATE on the ledger.
	ErrAppendOnly = errors.New("ledger is append-only")
	// ErrBadPrincipal: the principal is incomplete or malformed.
	ErrBadPrincipal = errors.New("bad principal")
	// ErrInvalid: the span or the request is malformed; nothing was written.
	ErrInvalid = errors.New("invalid input")
)

// mapError turns Postgres errors into the ledger's typed errors.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case "LL001":
		return fmt.Errorf("%w: %s", ErrSeqConflict, pe.Message)
	case "LL002":
		return fmt.Errorf("%w: %s", ErrChain, pe.Message)
	case "LL003", "42501": // 42501: insufficient_privilege, RLS WITH CHECK
		return fmt.Errorf("%w: %s", ErrForbidden, pe.Message)
	case "LL004":
		return fmt.Errorf("%w: %s", ErrAppendOnly, pe.Message)
	case "23505": // unique_violation: (id, seq), (id, prev_hash) or curr_hash
		return fmt.Errorf("%w: %s (%s)", ErrSeqConflict, pe.Message, pe.ConstraintName)
	}
	return err
}
