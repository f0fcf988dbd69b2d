package ledger

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Lease is a held lock. Release it exactly once (later calls do nothing).
type Lease struct {
	once   sync.Once
	conn   *pgxpool.Conn
	tenant string
	key    string
}

// TryLock takes the lock named key within p's tenant, without waiting: ok
// is false when another holder has it. The lock is a session-level advisory
// lock on a connection the lease keeps to itself until Release, so it is
// exclusive across every host on the database and vanishes with the holder
// if the holder dies (the connection closes). Release unlocks before the
// connection goes back to the pool, and closes the connection instead if
// unlocking fails, so no lock ever leaks into another transaction (the
// seed's defect §8.6).
func (l *Ledger) TryLock(ctx context.Context, p Principal, key string) (*Lease, bool, error) {
	if err := p.Validate(); err != nil {
		return nil, false, err
	}
	if key == "" || len(key) > 1024 {
		return nil, false, fmt.Errorf("%w: lock key must be 1 to 1024 bytes", ErrInvalid)
	}
	leases, err := l.leasePool()
	if err != nil {
		return nil, false, fmt.Errorf("error taking lock %q: %w", key, err)
	}
	conn, err := leases.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("error taking lock %q: %w", key, err)
	}
	var ok bool
	// The tenant is part of the lock's name: tenants never contend.
	err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1 || '/' || $2, 0))`, p.Tenant, key).Scan(&ok)
	if err != nil || !ok {
		conn.Release()
		if err != nil {
			return nil, false, fmt.Errorf("error taking lock %q: %w", key, err)
		}
		return nil, false, nil
	}
	return &Lease{conn: conn, tenant: p.Tenant, key: key}, true, nil
}

// MaxLeases bounds the leases held at once through one Ledger (each holds a
// connection of its own).
const MaxLeases = 64

// leasePool makes, once, the pool leases hold their connections from: the
// same server and settings as the main pool, its own connections.
func (l *Ledger) leasePool() (*pgxpool.Pool, error) {
	l.leaseOnce.Do(func() {
		cfg := l.pool.Config()
		cfg.MaxConns, cfg.MinConns = MaxLeases, 0
		l.leases, l.leaseErr = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	if l.leases == nil && l.leaseErr == nil {
		return nil, fmt.Errorf("the ledger is closed")
	}
	return l.leases, l.leaseErr
}

// Release gives the lock back.
func (ls *Lease) Release(ctx context.Context) {
	ls.once.Do(func() {
		var ok bool
		err := ls.conn.QueryRow(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtextextended($1 || '/' || $2, 0))`, ls.tenant, ls.key).Scan(&ok)
		if err != nil || !ok {
			// Never hand a connection that may still hold the lock to
			// someone else.
			_ = ls.conn.Conn().Close(context.WithoutCancel(ctx))
		}
		ls.conn.Release()
	})
}
