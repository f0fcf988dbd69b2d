package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ExecutionStats are the seed's execution metrics (Bluebook §7 GET
// /api/metrics) for one tenant: per UTC day, how many executions ended in
// each status, and their mean and 95th-percentile duration.
type ExecutionStats struct {
	Counts  []StatusCount
	Latency []DayLatency
}

// StatusCount is the number of executions of one day with one status.
type StatusCount struct {
	Day    string // YYYY-MM-DD, UTC
	Status string // "" when the execution span has none
	N      int64
}

// DayLatency summarises execution durations of one day; nil when no
// execution of that day recorded duration_ms.
type DayLatency struct {
	Day   string
	AvgMs *float64
	P95Ms *float64
}

// Stats windows are bounded: the seed returns at most 200 count rows and 30
// days of latency.
const (
	maxStatusCounts = 200
	maxLatencyDays  = 30
)

// ExecutionStats summarises the execution spans of p's tenant that p may
// read, at or after since, newest day first. It reads one tenant only (the
// hot query keys on tenant_id, like every other) and runs under p, so RLS
// decides what counts.
func (l *Ledger) ExecutionStats(ctx context.Context, p Principal, since time.Time) (ExecutionStats, error) {
	b, err := l.batch(p)
	if err != nil {
		return ExecutionStats{}, err
	}
	const from = ` FROM ledger.universal_registry
		WHERE tenant_id = $1 AND entity_type = 'execution' AND at >= $2 AND NOT is_deleted`
	const day = `to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`
	var st ExecutionStats
	b.Queue(`SELECT `+day+`, coalesce(status, ''), count(*)`+from+
		` GROUP BY 1, 2 ORDER BY 1 DESC, 2 LIMIT `+fmt.Sprint(maxStatusCounts), p.Tenant, since).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var c StatusCount
				if err := rows.Scan(&c.Day, &c.Status, &c.N); err != nil {
					return err
				}
				st.Counts = append(st.Counts, c)
			}
			return rows.Err()
		})
	b.Queue(`SELECT `+day+`, avg(duration_ms)::float8, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)`+from+
		` GROUP BY 1 ORDER BY 1 DESC LIMIT `+fmt.Sprint(maxLatencyDays), p.Tenant, since).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var d DayLatency
				if err := rows.Scan(&d.Day, &d.AvgMs, &d.P95Ms); err != nil {
					return err
				}
				st.Latency = append(st.Latency, d)
			}
			return rows.Err()
		})
	if err := l.send(ctx, b); err != nil {
		return ExecutionStats{}, fmt.Errorf("error reading execution stats: %w", err)
	}
	return st, nil
}
