package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// GuestRole is the role guest SQL runs as: SELECT on the ledger and its
// views, and no set_config, advisory locks, NOTIFY or temp tables
// (migrations/002).
const GuestRole = "logline_guest"

// GuestLimits caps one guest query.
type GuestLimits struct {
	Rows    int           // rows returned at most (more → Truncated)
	Bytes   int           // bytes of row JSON at most (more → Truncated)
	Timeout time.Duration // statement_timeout
}

// DefaultGuestLimits are used for zero fields.
var DefaultGuestLimits = GuestLimits{Rows: 1000, Bytes: 1 << 20, Timeout: 2 * time.Second}

// MaxGuestQuery bounds the text of one guest query.
const MaxGuestQuery = 64 << 10

// GuestRows is the answer to a guest query: each row as a JSON object keyed
// by column name.
type GuestRows struct {
	Rows      []json.RawMessage
	Truncated bool
}

var (
	// ErrGuestSQLUnavailable: the database still lets the guest role call
	// set_config (migrate did not run as a superuser), so guest SQL could
	// change its own principal; the host refuses to run it.
	ErrGuestSQLUnavailable = errors.New("guest SQL unavailable: a superuser must run migrations/002_guest_sql.sql")
	// ErrTimeout: the statement ran out of time.
	ErrTimeout = errors.New("statement timeout")
)

// GuestSQL runs one read-only SELECT written by a guest, under principal p,
// as GuestRole, in a read-only transaction that is rolled back afterwards.
// The host wraps the query as a subquery, so it can only be a single SELECT
// (or VALUES/WITH … SELECT), never a second statement, SELECT INTO or a
// data-modifying CTE; params bind $1, $2, …. It cannot change the principal
// or any setting: set_config is not executable by GuestRole.
func (l *Ledger) GuestSQL(ctx context.Context, p Principal, query string, params []any, lim GuestLimits) (GuestRows, error) {
	var out GuestRows
	if err := p.Validate(); err != nil {
		return out, err
	}
	if strings.TrimSpace(query) == "" {
		return out, fmt.Errorf("%w: empty query", ErrInvalid)
	}
	if len(query) > MaxGuestQuery {
		return out, fmt.Errorf("%w: query of %d bytes, at most %d", ErrInvalid, len(query), MaxGuestQuery)
	}
	lim = lim.withDefaults()
	if err := l.checkGuestRole(ctx); err != nil {
		return out, err
	}
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return out, mapError(err)
	}
	defer conn.Release()
	// One round trip: the settings and the query go in one pipeline with
	// one Sync, so they run as one implicit transaction, made read-only by
	// its first statement, whose transaction-local settings (role,
	// principal, timeout) end with it. A read-only transaction that ends
	// commits nothing, as a rollback would. The newline keeps a trailing --
	// comment in the guest's text from swallowing the closing parenthesis.
	// The guest's query is an unnamed statement with text parameters of
	// unknown type (pgx's QueryExecModeExec): nothing is left behind.
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(conn.Conn().TypeMap(), nil, params); err != nil {
		return out, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b := &pgconn.Batch{}
	b.ExecParams(`SELECT set_config('transaction_read_only', 'on', true), set_config('role', $1, true),
		set_config('app.tenant_id', $2, true), set_config('app.user_id', $3, true), set_config('app.kind', $4, true),
		set_config('statement_timeout', $5, true)`,
		[][]byte{[]byte(GuestRole), []byte(p.Tenant), []byte(p.User), []byte(p.Kind), []byte(strconv.FormatInt(lim.Timeout.Milliseconds(), 10))},
		nil, nil, nil)
	b.ExecParams("SELECT to_jsonb(q) FROM (\n"+query+"\n) AS q", eqb.ParamValues, nil, eqb.ParamFormats, eqb.ResultFormats)
	mrr := conn.Conn().PgConn().ExecBatch(ctx, b)
	defer mrr.Close()
	if !mrr.NextResult() {
		return out, mapError(mrr.Close())
	}
	if _, err := mrr.ResultReader().Close(); err != nil {
		_ = mrr.Close()
		return out, mapError(err)
	}
	if !mrr.NextResult() {
		return out, guestError(mrr.Close())
	}
	rr := mrr.ResultReader()
	size := 0
	for rr.NextRow() {
		raw := rr.Values()[0]
		if len(out.Rows) >= lim.Rows || size+len(raw) > lim.Bytes {
			out.Truncated = true
			break
		}
		size += len(raw)
		out.Rows = append(out.Rows, json.RawMessage(append([]byte(nil), raw...)))
	}
	if _, err := rr.Close(); err != nil {
		_ = mrr.Close()
		return GuestRows{}, guestError(err)
	}
	if err := mrr.Close(); err != nil {
		return GuestRows{}, guestError(err)
	}
	return out, nil
}

func (lim GuestLimits) withDefaults() GuestLimits {
	if lim.Rows <= 0 {
		lim.Rows = DefaultGuestLimits.Rows
	}
	if lim.Bytes <= 0 {
		lim.Bytes = DefaultGuestLimits.Bytes
	}
	if lim.Timeout <= 0 {
		lim.Timeout = DefaultGuestLimits.Timeout
	}
	return lim
}

// checkGuestRole refuses guest SQL while GuestRole can call set_config. A
// positive answer is remembered; a negative one is asked again next time, so
// a superuser can fix the database without a restart.
func (l *Ledger) checkGuestRole(ctx context.Context) error {
	if l.guestOK.Load() {
		return nil
	}
	var unsafe bool
	err := l.scalar(ctx, &unsafe, `SELECT has_function_privilege($1, 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE')`, GuestRole)
	if err != nil {
		return fmt.Errorf("error checking the guest role: %w", err)
	}
	if unsafe {
		return ErrGuestSQLUnavailable
	}
	l.guestOK.Store(true)
	return nil
}

// guestError maps a failed guest statement: timeouts and privilege errors
// are typed, the rest is the database's own message (syntax errors and the
// like are the guest's to read).
func guestError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57014": // query_canceled (statement_timeout)
			return fmt.Errorf("%w: %s", ErrTimeout, pe.Message)
		case "42501":
			return fmt.Errorf("%w: %s", ErrForbidden, pe.Message)
		}
		return fmt.Errorf("%w: %s", ErrInvalid, pe.Message)
	}
	return err
}
