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
// views, and no set_config, advisory locks, transaction ids, NOTIFY or temp
// tables (migrations/002 and 005).
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
	// set_config or take advisory locks (migrate did not run as a
	// superuser), so guest SQL could change its own principal or hold the
	// host's leases; the host refuses to run it.
	ErrGuestSQLUnavailable = errors.New("guest SQL unavailable: a superuser must run migrations/002_guest_sql.sql and migrations/005_guest_sql_locks.sql")
	// ErrTimeout: the statement ran out of time.
	ErrTimeout = errors.New("statement timeout")
)

// The statement that sets up a guest query: read-only first, then the
// role, the principal and the timeout, all transaction-local. search_path
// is pg_catalog alone, so the unqualified functions and types the allowlist
// accepts are the built-in ones; standard_conforming_strings is on, so
// Postgres splits the text into tokens as the allowlist's parser did.
const guestSettings = `SELECT pg_catalog.set_config('transaction_read_only', 'on', true), pg_catalog.set_config('role', $1, true),
	pg_catalog.set_config('search_path', 'pg_catalog', true), pg_catalog.set_config('standard_conforming_strings', 'on', true),
	pg_catalog.set_config('app.tenant_id', $2, true), pg_catalog.set_config('app.user_id', $3, true),
	pg_catalog.set_config('app.kind', $4, true), pg_catalog.set_config('statement_timeout', $5, true)`

// The wrapper around the guest's query: each row as JSON text, at most
// rows+1 of them (one more tells that more exist), and NULL for every row
// past the row cap or whose JSON would take the running total past the byte
// cap, so Postgres never sends the host more than it keeps. The guest's
// text sits between "(\n" and "\n)" exactly as in checkGuestSQL's probe;
// the newline also keeps a trailing -- comment from swallowing the closing
// parenthesis. The head takes the row and byte caps, the tail rows+1.
const (
	guestWrapHead = `SELECT CASE WHEN pg_catalog.count(*) OVER w <= %d AND pg_catalog.sum(pg_catalog.octet_length(j)) OVER w <= %d THEN j END FROM (
SELECT pg_catalog.to_jsonb(q)::pg_catalog.text AS j FROM (
`
	guestWrapTail = `
) AS q LIMIT %d) AS a WINDOW w AS (ROWS UNBOUNDED PRECEDING)`
)

// GuestSQL runs one read-only SELECT written by a guest, under principal p,
// as GuestRole, in a read-only transaction that is rolled back afterwards.
// The query must pass the allowlist of checkGuestSQL (guestsql_allow.go):
// a single SELECT (or VALUES/WITH … SELECT), never a second statement,
// SELECT INTO, a locking clause or a data-modifying CTE, reading only the
// ledger's relations with built-in functions that touch nothing shared;
// params bind $1, $2, …. It cannot change the principal or any setting:
// set_config is neither allowed nor executable by GuestRole.
func (l *Ledger) GuestSQL(ctx context.Context, p Principal, query string, params []any, lim GuestLimits) (GuestRows, error) {
	return l.guestSQL(ctx, p, query, params, lim, true)
}

// guestSQL is GuestSQL; check false skips the allowlist, for tests of what
// Postgres itself refuses.
func (l *Ledger) guestSQL(ctx context.Context, p Principal, query string, params []any, lim GuestLimits, check bool) (GuestRows, error) {
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
	if check {
		if err := checkGuestSQL(query); err != nil {
			return out, err
		}
	}
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return out, mapError(err)
	}
	defer conn.Release()
	// One round trip: the settings and the query go in one pipeline with
	// one Sync, so they run as one implicit transaction, made read-only by
	// its first statement, whose transaction-local settings (role,
	// principal, timeout, search_path) end with it. A read-only transaction
	// that ends commits nothing, as a rollback would. The guest's query is
	// an unnamed statement with text parameters of unknown type (pgx's
	// QueryExecModeExec): nothing is left behind.
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(conn.Conn().TypeMap(), nil, params); err != nil {
		return out, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b := &pgconn.Batch{}
	b.ExecParams(guestSettings,
		[][]byte{[]byte(GuestRole), []byte(p.Tenant), []byte(p.User), []byte(p.Kind), []byte(strconv.FormatInt(lim.Timeout.Milliseconds(), 10))},
		nil, nil, nil)
	b.ExecParams(fmt.Sprintf(guestWrapHead, lim.Rows, lim.Bytes)+query+fmt.Sprintf(guestWrapTail, lim.Rows+1),
		eqb.ParamValues, nil, eqb.ParamFormats, eqb.ResultFormats)
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
		// NULL: Postgres cut the row (no row of to_jsonb is NULL). The
		// host's own count is a second guard.
		if raw == nil || len(out.Rows) >= lim.Rows || size+len(raw) > lim.Bytes {
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

// checkGuestRole refuses guest SQL while GuestRole can call set_config or
// take an advisory lock (the host's leases are advisory locks), and loads
// the names the allowlist needs from the catalog. A positive answer is
// remembered; a negative one is asked again next time, so a superuser can
// fix the database without a restart.
func (l *Ledger) checkGuestRole(ctx context.Context) error {
	if l.guestOK.Load() && catalogFieldFuncs.Load() != nil {
		return nil
	}
	var setConfig, advisory bool
	var funcs []string
	b, err := l.batch(System())
	if err == nil {
		b.Queue(`SELECT pg_catalog.has_function_privilege($1, 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE'),
			pg_catalog.has_function_privilege($1, 'pg_catalog.pg_advisory_xact_lock(bigint)', 'EXECUTE'),
			ARRAY(SELECT DISTINCT proname::text FROM pg_catalog.pg_proc
			      WHERE pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND pronargs >= 1)`, GuestRole).
			QueryRow(func(r pgx.Row) error { return r.Scan(&setConfig, &advisory, &funcs) })
		err = l.send(ctx, b)
	}
	if err != nil {
		return fmt.Errorf("error checking the guest role: %w", err)
	}
	addCatalogFieldFuncs(funcs)
	if setConfig || advisory {
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
