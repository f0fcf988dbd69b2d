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

// HourStats is one UTC hour of a tenant's executions, for charts: counts
// by status, and the duration and fuel percentiles of the hour's runs.
type HourStats struct {
	Hour   time.Time        // the hour's start, UTC
	Counts map[string]int64 // by status ("" when the span has none)
	// Percentiles and the total are nil (0) when no execution of the hour
	// recorded duration_ms (metadata.fuel_used).
	P50Ms, P95Ms     *float64
	FuelP50, FuelP95 *float64
	Fuel             int64
}

// MaxSeriesHours bounds ExecutionSeries: a month of hours.
const MaxSeriesHours = 31 * 24

// ExecutionSeries is ExecutionStats per UTC hour, oldest first, from since
// (at most MaxSeriesHours back from now), with fuel besides duration: one
// pass over the tenant's executions of the window, under p.
func (l *Ledger) ExecutionSeries(ctx context.Context, p Principal, since time.Time) ([]HourStats, error) {
	if floor := time.Now().Add(-MaxSeriesHours * time.Hour); since.Before(floor) {
		since = floor
	}
	b, err := l.batch(p)
	if err != nil {
		return nil, err
	}
	var out []HourStats
	// The window's rows, grouped twice: by hour and status for the counts,
	// by hour (status NULL in the grouping set) for the percentiles.
	b.Queue(`WITH e AS (
			SELECT date_trunc('hour', at AT TIME ZONE 'UTC') AS h, coalesce(status, '') AS status, duration_ms,
				CASE WHEN jsonb_typeof(metadata->'fuel_used') = 'number' THEN (metadata->>'fuel_used')::float8 END AS fuel
			FROM ledger.universal_registry
			WHERE tenant_id = $1 AND entity_type = 'execution' AND at >= $2 AND NOT is_deleted)
		SELECT h, status, count(*),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY fuel), percentile_cont(0.95) WITHIN GROUP (ORDER BY fuel),
			coalesce(sum(fuel), 0)::bigint, GROUPING(status)
		FROM e GROUP BY GROUPING SETS ((h, status), (h)) ORDER BY h, GROUPING(status), status`, p.Tenant, since).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var (
					h                    time.Time
					status               *string
					n, fuel              int64
					p50, p95, fp50, fp95 *float64
					whole                int
				)
				if err := rows.Scan(&h, &status, &n, &p50, &p95, &fp50, &fp95, &fuel, &whole); err != nil {
					return err
				}
				h = h.UTC()
				if len(out) == 0 || !out[len(out)-1].Hour.Equal(h) {
					out = append(out, HourStats{Hour: h, Counts: map[string]int64{}})
				}
				cur := &out[len(out)-1]
				if whole == 1 {
					cur.P50Ms, cur.P95Ms, cur.FuelP50, cur.FuelP95, cur.Fuel = p50, p95, fp50, fp95, fuel
				} else if status != nil {
					cur.Counts[*status] = n
				}
			}
			return rows.Err()
		})
	if err := l.send(ctx, b); err != nil {
		return nil, fmt.Errorf("error reading execution series: %w", err)
	}
	return out, nil
}
