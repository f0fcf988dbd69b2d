// Package ledger is the span store: the append-only ledger.universal_registry
// table on PostgreSQL, reached through a pgx pool.
//
// Every operation runs in one transaction under a Principal, as the serving
// role (logline_app), so row-level security applies whoever the pool's login
// user is. The role and the principal are set with transaction-local
// set_config at the start of each transaction and vanish at its end, so a
// pooled connection never carries a principal into the next transaction.
//
// It imports host/span and pgx; it knows nothing of HTTP or the sandbox.
package ledger

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/logline/logline/host/span"
)

// ServingRole is the Postgres role every statement of the host runs as. It is
// not superuser, not the table owner and not BYPASSRLS (migrations/001).
const ServingRole = "logline_app"

// Ledger is a handle on the span store. It is safe for concurrent use.
type Ledger struct {
	pool *pgxpool.Pool
	key  *span.Key
	now  func() time.Time
	own  bool // the pool was opened by Open and is closed by Close

	guestOK atomic.Bool // GuestRole was seen unable to call set_config

	notify Notify // how Listen learns what committed (listen.go)

	group grouper // single-span Appends committed together (group.go)

	// leases is the pool TryLock takes its connections from: a lease
	// keeps its connection for as long as it is held, so leases must not
	// starve the statements of the pool (a kernel holding a lease still
	// needs connections for its SQL).
	leaseOnce sync.Once
	leases    *pgxpool.Pool
	leaseErr  error
}

// Option configures a Ledger.
type Option func(*Ledger)

// WithKey makes Append sign the spans it seals with k (the node key).
// Without it, spans that arrive unsigned are stored with their hash only.
func WithKey(k *span.Key) Option { return func(l *Ledger) { l.key = k } }

// NodeKey is the public key (hex) Append seals with, or "" without one.
// What the host seals proves only that the host stored it, so the node key
// must never be one that confers authority (stage0 refuses a manifest that
// names it).
func (l *Ledger) NodeKey() string {
	if l.key == nil {
		return ""
	}
	return l.key.PublicHex()
}

// WithClock replaces the clock that stamps `at`, for deterministic tests.
func WithClock(now func() time.Time) Option { return func(l *Ledger) { l.now = now } }

// New wraps an existing pool. Close does not close it.
func New(pool *pgxpool.Pool, opts ...Option) *Ledger {
	l := &Ledger{pool: pool, now: time.Now, group: grouper{inflight: DefaultGroupInflight}}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Open connects a pool to databaseURL and wraps it.
func Open(ctx context.Context, databaseURL string, opts ...Option) (*Ledger, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("error parsing database URL: %w", err)
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		// pgxpool's default (the number of CPUs, at least 4) is too few
		// for a server: the API and the engine's kernels share the pool.
		cfg.MaxConns = max(cfg.MaxConns, DefaultMaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	l := New(pool, opts...)
	l.own = true
	return l, nil
}

// DefaultMaxConns is the pool size Open uses when the URL does not set
// pool_max_conns. Connections are opened on demand.
const DefaultMaxConns = 16

// Close releases the pool if Open made it, and the leases' pool.
func (l *Ledger) Close() {
	l.leaseOnce.Do(func() {}) // no lease pool may be made after Close
	if l.leases != nil {
		l.leases.Close()
	}
	if l.own {
		l.pool.Close()
	}
}

// Pool exposes the pool for packages that run their own principal-scoped
// statements through Exec (host internals only).
func (l *Ledger) Pool() *pgxpool.Pool { return l.pool }

// setPrincipal is the first statement of every transaction. The role comes
// first in the select list, so the remaining settings and every later
// statement run as the serving role. is_local=true scopes all four to the
// transaction.
const setPrincipal = `SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true),
	set_config('app.user_id', $3, true), set_config('app.kind', $4, true)`

// batch starts a pipelined batch whose first statement sets the principal.
// A batch is sent in one round trip and, having no explicit BEGIN, runs as a
// single implicit transaction: all of it commits or none of it does, and the
// local settings end with it.
func (l *Ledger) batch(p Principal) (*pgx.Batch, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	b.Queue(setPrincipal, ServingRole, p.Tenant, p.User, string(p.Kind))
	return b, nil
}

// send runs a batch built by batch and maps database errors to ours.
func (l *Ledger) send(ctx context.Context, b *pgx.Batch) error {
	return mapError(l.pool.SendBatch(ctx, b).Close())
}

// InTx runs fn in a transaction under p as the serving role, for callers that
// need several dependent statements (reads that must see one snapshot).
func (l *Ledger) InTx(ctx context.Context, p Principal, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	tx, err := l.pool.BeginTx(ctx, opts)
	if err != nil {
		return mapError(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, setPrincipal, ServingRole, p.Tenant, p.User, string(p.Kind)); err != nil {
		return mapError(err)
	}
	if err := fn(tx); err != nil {
		return mapError(err)
	}
	return mapError(tx.Commit(ctx))
}
